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


def test_check_finds_every_problem_with_its_key_and_line():
    from edgevoice.config import check_config

    text = ("audio:\n  sample_rate: fast\n  block_ms: 20\nvad:\n  mode: 7\n  hangovr_ms: 3\n"
            "asr: 3\n")
    checked = check_config(text, "my.yaml")
    messages = [str(p) for p in checked.problems]
    assert len(messages) == 4, messages
    for message, (line, key) in zip(messages, [(2, "audio.sample_rate"), (5, "vad.mode"),
                                               (6, "vad.hangovr_ms"), (7, "`asr`")], strict=True):
        assert message.startswith(f"my.yaml, line {line}: ") and key in message
    assert [p.line for p in checked.problems] == [2, 5, 6, 7]
    assert checked.config.audio.block_ms == 20  # the good keys still count
    assert checked.lines["audio.block_ms"] == 3
    with pytest.raises(ConfigError) as info:  # loading stops at the first, and says so
        parse_config(text, "my.yaml")
    assert "line 2" in str(info.value) and "3 more problems" in str(info.value)
    assert "config check" in str(info.value)


def test_cli_config_check_lists_all_errors(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("vad:\n  mode: 7\ntts:\n  rate_wpm: fast\n  volum: 1\n")
    assert main(["config", "check", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    for line, key in [(2, "vad.mode"), (4, "tts.rate_wpm"), (5, "tts.volum")]:
        assert f"{bad}, line {line}: " in err and key in err
    assert "3 problems" in err


def _models_config(tmp_path, body: str) -> Path:
    models = tmp_path / "models"
    models.mkdir(exist_ok=True)
    f = tmp_path / "c.yaml"
    f.write_text(f"paths:\n  models_dir: {models}\n{body}")
    return f


def test_cli_config_check_refuses_a_model_that_names_nothing(tmp_path, capsys):
    f = _models_config(tmp_path, "llm:\n  n_ctx: 2048\n  model: foo\n")
    assert main(["config", "check", str(f)]) == 2
    err = capsys.readouterr().err
    assert f"{f}, line 5: " in err and "`llm.model` = 'foo'" in err
    assert "edgevoice models list" in err and "edgevoice models pull" in err
    f = _models_config(tmp_path, "llm:\n  model: gemma-3-1b\n")  # a near miss gets a suggestion
    assert main(["config", "check", str(f)]) == 2
    assert "did you mean `gemma-3-1b-it`" in capsys.readouterr().err
    f = _models_config(tmp_path, f"llm:\n  model: {tmp_path}/nowhere/x.gguf\n")
    assert main(["config", "check", str(f)]) == 2
    assert "x.gguf does not exist" in capsys.readouterr().err
    f = _models_config(tmp_path, "asr:\n  vosk_model: gemma-3-1b-it\n")  # the wrong kind
    assert main(["config", "check", str(f)]) == 2
    err = capsys.readouterr().err
    assert "line 4" in err and "`asr.vosk_model`" in err and "not a speech recognition" in err


def test_cli_config_check_warns_about_a_catalog_model_not_downloaded_yet(tmp_path, capsys):
    f = _models_config(tmp_path, "llm:\n  model: gemma-3-1b-it\n")
    assert main(["config", "check", str(f)]) == 0  # valid: `run` starts and says what to pull
    out, err = capsys.readouterr()
    assert "OK" in out and "1 warning" in out
    assert "warning" in err and "line 4" in err and "edgevoice models pull gemma-3-1b-it" in err
    gguf = tmp_path / "models" / "gemma-3-1b-it-Q4_K_M.gguf"
    gguf.write_bytes(b"GGUF")
    mine = tmp_path / "mine.gguf"
    mine.write_bytes(b"GGUF")
    for value in ("gemma-3-1b-it", str(mine)):
        f = _models_config(tmp_path, f"llm:\n  model: {value}\n")
        assert main(["config", "check", str(f)]) == 0
        out, err = capsys.readouterr()
        assert out.strip() == f"{f}: OK" and not err


def test_a_bare_on_or_off_in_yaml_is_taken_as_the_word(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("turn:\n  detector: on\nvad:\n  neural: off\n")
    cfg, _ = load_config(path)
    assert cfg.turn.detector == "on" and cfg.vad.neural == "off"
