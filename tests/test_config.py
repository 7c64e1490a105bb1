"""Config loading and validation: every error names the key, the file and the line."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from edgevoice.cli import main
from edgevoice.config import (
    Config,
    ConfigError,
    Paths,
    iter_fields,
    load_config,
    parse_config,
    render_example,
)

ROOT = Path(__file__).resolve().parents[1]


def test_example_file_is_current_and_loads_to_the_defaults():
    text = (ROOT / "config.example.yaml").read_text()
    assert text == render_example(), "regenerate: python -m edgevoice.config > config.example.yaml"
    assert parse_config(text) == Config()


def test_example_documents_every_key_with_help():
    text = render_example()
    for path, f, _ in iter_fields():
        assert f.metadata.get("help"), f"{path} has no help text"
        assert f"  {path.split('.')[-1]}:" in text


def test_values_override_defaults_and_ints_are_accepted_as_floats():
    cfg = parse_config(
        "vad:\n  hangover_ms: 800\n  max_utterance_s: 10\naudio:\n  input_device: 3\n"
    )
    assert cfg.vad.hangover_ms == 800
    assert cfg.vad.max_utterance_s == 10.0 and isinstance(cfg.vad.max_utterance_s, float)
    assert cfg.audio.input_device == 3
    assert cfg.asr == Config().asr
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.vad.hangover_ms = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("vad:\n  onset_ms: 100\n  hangovr_ms: 3\n",
         ["line 3", "vad.hangovr_ms", "vad.hangover_ms"]),
        ("audo:\n  block_ms: 20\n", ["line 1", "`audo`", "did you mean `audio`"]),
        ("audio:\n  sample_rate: fast\n", ["line 2", "audio.sample_rate", "integer", "'fast'"]),
        ("vad:\n  mode: 7\n", ["line 2", "vad.mode", "out of range", "0 to 3"]),
        ("vad:\n  hangover_ms: 10\n", ["vad.hangover_ms", "90 to 5000 ms"]),
        ("asr:\n  backend: whisper\n", ["asr.backend", "'vosk'", "'whisper'"]),
        ("agent:\n  barge_in: 1\n", ["agent.barge_in", "true or false"]),
        ("llm:\n  gpu_layers: some\n", ["llm.gpu_layers", "'auto'"]),
        ("vad: 3\n", ["`vad` must be a mapping"]),
        ("vad: [1\n", ["invalid YAML", "line 2"]),
    ],
)
def test_errors_name_key_and_line(text, expected):
    with pytest.raises(ConfigError) as info:
        parse_config(text, "my.yaml")
    message = str(info.value)
    assert message.startswith("my.yaml, ")
    for part in expected:
        assert part in message


def test_empty_file_means_defaults():
    assert parse_config("") == Config()
    assert parse_config("vad:\n") == Config()


def test_load_order_flag_then_env_then_user_file(tmp_path, monkeypatch):
    a = tmp_path / "a.yaml"
    a.write_text("vad:\n  hangover_ms: 700\n")
    b = tmp_path / "b.yaml"
    b.write_text("vad:\n  hangover_ms: 900\n")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("EDGEVOICE_CONFIG", raising=False)
    assert load_config() == (Config(), None)
    monkeypatch.setenv("EDGEVOICE_CONFIG", str(b))
    assert load_config()[0].vad.hangover_ms == 900
    assert load_config(a)[0].vad.hangover_ms == 700
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_paths_follow_config_and_platformdirs(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.delenv("EDGEVOICE_MODELS_DIR", raising=False)
    assert Paths.from_config(Config()).models == tmp_path / "data" / "edgevoice" / "models"
    cfg = parse_config(f"paths:\n  models_dir: {tmp_path / 'm'}\n")
    assert Paths.from_config(cfg).models == tmp_path / "m"


def test_cli_config_check_reports_error_without_traceback(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("asr:\n  backend: auto\n  vosk_modle: x\n")
    assert main(["config", "check", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert f"{bad}, line 3" in err and "asr.vosk_model" in err
    good = tmp_path / "good.yaml"
    good.write_text("asr:\n  backend: pocketsphinx\n")
    assert main(["config", "check", str(good)]) == 0
    assert "OK" in capsys.readouterr().out


def test_cli_config_show_json_reflects_file(tmp_path, capsys):
    import json

    f = tmp_path / "c.yaml"
    f.write_text("tts:\n  rate_wpm: 150\n")
    assert main(["--config", str(f), "config", "show", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["source"] == str(f)
    assert shown["config"]["tts"]["rate_wpm"] == 150
    assert shown["config"]["vad"]["hangover_ms"] == Config().vad.hangover_ms
