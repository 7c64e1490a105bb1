"""What a user reads: plain words instead of internal states, a sentence for every command,
and mistakes caught before anything slow loads (issue 10, item 8)."""

from __future__ import annotations

import json
import socket
import wave

import numpy as np
import pytest
import soundfile

from edgevoice.cli import main
from edgevoice.errors import UserError


@pytest.fixture
def home(tmp_path, monkeypatch):
    """No config file and an empty models dir: a first-time user."""
    for var in ("EDGEVOICE_CONFIG", "EDGEVOICE_MODELS_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    return tmp_path


# -- targets ------------------------------------------------------------------------------------


def _row(circuit="closed", last_error=None, **figures):
    estimates = {"overhead_ms": None, "prefill_tps": None, "decode_tps": None, "rtt_ms": None,
                 "error_rate": None, "requests": 0, "failures": 0, **figures}
    return {"name": "cs3", "kind": "openai", "model": "llama3.1-8b", "device": "remote",
            "used_by_policy": True, "circuit": circuit, "last_error": last_error,
            "estimates": estimates}


def test_targets_rows_say_health_and_figures_in_words():
    from edgevoice.cli import _target_line

    line = _target_line(_row())
    assert "healthy" in line and "speed not measured yet" in line
    assert "None" not in line and "closed" not in line
    line = _target_line(_row(prefill_tps=812.5, decode_tps=14.0))
    assert "prefill 812.5 tok/s, decode 14 tok/s" in line
    assert "overhead, round trip not measured yet" in line and "None" not in line
    line = _target_line(_row("open", "connection refused", rtt_ms=3.0))
    assert "down, skipped for now" in line and "last error: connection refused" in line
    assert "open" not in line.split(None, 2)[2]  # past the name and kind ("openai")
    assert "retried on the next turn" in _target_line(_row("half-open", "stalled"))
    assert "last request failed" in _target_line(_row("closed", "stalled"))


def test_targets_command_with_a_dead_remote_prints_no_python_values(home, capsys):
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = ["targets", "--remote", f"http://127.0.0.1:{port}/v1", "--remote-model", "m",
            "--policy", "remote"]
    assert main(args) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("remote"))
    assert "None" not in row and "closed" not in row and "not measured yet" in row
    assert "last error" in row
    assert main([*args, "--json"]) == 0  # --json keeps the machine-readable states
    shown = json.loads(capsys.readouterr().out.splitlines()[-1])
    remote = next(t for t in shown["targets"] if t["name"] == "remote")
    assert remote["circuit"] in ("closed", "open", "half-open")
    assert remote["estimates"]["prefill_tps"] is None


# -- ctl ---------------------------------------------------------------------------------------


class FakeClient:
    """Stands in for the daemon: answers each command as the control API does."""

    answers = {"cancel": {"cancelled": False}}

    def __init__(self, path):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def request(self, cmd, timeout=None, **args):
        return self.answers[cmd]


@pytest.mark.parametrize("argv, answer, words", [
    (["cancel"], {"cancelled": True}, "Cancelled the current reply."),
    (["cancel"], {"cancelled": False}, "Nothing to cancel"),
    (["mute"], {"muted": True}, "Muted"),
    (["unmute"], {"muted": False}, "Unmuted"),
    (["ptt-start"], {"pressed": True}, "Push-to-talk pressed"),
    (["ptt-stop"], {"pressed": False}, "Push-to-talk released"),
    (["policy", "auto"], {"policy": "auto"}, "policy is now auto"),
    (["quit"], {"stopping": True}, "stopping"),
])
def test_every_ctl_command_says_what_it_did(home, monkeypatch, capsys, argv, answer, words):
    import edgevoice.control.client as client

    cmd = {"ptt-start": "ptt_start", "ptt-stop": "ptt_stop", "policy": "set_policy"}.get(
        argv[0], argv[0])
    monkeypatch.setattr(FakeClient, "answers", {cmd: answer})
    monkeypatch.setattr(client, "ControlClient", FakeClient)
    assert main(["ctl", "--socket", str(home / "s.sock"), *argv]) == 0
    out = capsys.readouterr().out
    assert words in out and out.count("\n") == 1
    assert main(["ctl", "--socket", str(home / "s.sock"), *argv, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == answer


# -- audio files -------------------------------------------------------------------------------


def _header_only_wav(path):
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
    return path


@pytest.mark.parametrize("make, words", [
    (lambda p: p.write_bytes(b""), "is empty (0 bytes)"),
    (_header_only_wav, "is empty (it holds no samples)"),
    (lambda p: p.write_text("hello, this is a text file\n" * 20), "is not an audio file"),
    (lambda p: p.write_bytes(bytes(range(256)) * 4), "is not an audio file"),
])
def test_empty_and_non_audio_files_are_named_as_such_without_sox_advice(tmp_path, make, words):
    from edgevoice.audio.wavfile import read_audio

    path = tmp_path / "in.wav"
    make(path)
    with pytest.raises(UserError) as info:
        read_audio(path)
    assert words in str(info.value) and "sox" not in str(info.value)


def test_real_audio_in_an_unreadable_format_still_gets_the_sox_advice(tmp_path):
    from edgevoice.audio.wavfile import read_audio

    mp4 = tmp_path / "talk.m4a"  # starts like an MP4 container, which libsndfile cannot read
    mp4.write_bytes(b"\x00\x00\x00\x20ftypM4A \x00\x00\x02\x00" + bytes(512))
    with pytest.raises(UserError) as info:
        read_audio(mp4)
    assert "sox talk.m4a" in str(info.value)
    wav = tmp_path / "ok.wav"
    soundfile.write(wav, np.zeros(1600, dtype=np.int16), 16000)
    assert read_audio(wav).duration_ms == pytest.approx(100.0)


# -- fail fast ---------------------------------------------------------------------------------


def _no_loading(monkeypatch):
    """Make every slow part explode if it is reached."""
    import edgevoice.agent.assemble as assemble
    import edgevoice.asr.select as select
    import edgevoice.tts.pyttsx3_backend as tts

    def boom(*args, **kwargs):
        raise AssertionError("a model was loaded before the input was checked")

    monkeypatch.setattr(assemble, "prepare_targets", boom)
    monkeypatch.setattr(select, "make_recognizer", boom)
    monkeypatch.setattr(tts, "Pyttsx3Synthesizer", boom)


@pytest.mark.parametrize("command", ["run", "transcribe"])
def test_a_bad_input_file_fails_before_any_model_loads(home, monkeypatch, capsys, command):
    _no_loading(monkeypatch)
    empty = home / "empty.wav"
    empty.write_bytes(b"")
    argv = ["run", "--input", str(empty)] if command == "run" else ["transcribe", str(empty)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "empty.wav is empty" in err and "Traceback" not in err


# -- ask without a model -----------------------------------------------------------------------


def _ask(home, *args: str, config: str | None = None):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items()
           if k not in ("EDGEVOICE_CONFIG", "EDGEVOICE_MODELS_DIR")}
    env.update(XDG_CONFIG_HOME=str(home / "config"), XDG_DATA_HOME=str(home / "data"),
               XDG_CACHE_HOME=str(home / "cache"))
    if config is not None:
        (home / "c.yaml").write_text(config)
        env["EDGEVOICE_CONFIG"] = str(home / "c.yaml")
    return subprocess.run([sys.executable, "-m", "edgevoice", "ask", *args],
                          capture_output=True, text=True, timeout=120, env=env)


def test_ask_without_a_model_gives_one_piece_of_advice(home):
    from edgevoice.agent.assemble import GET_MODEL_HINT
    from edgevoice.agent.intents import GET_MODEL_COMMAND, NO_MODEL_REPLY

    assert GET_MODEL_COMMAND in GET_MODEL_HINT and GET_MODEL_COMMAND in NO_MODEL_REPLY
    out = _ask(home, "why is the sky blue")
    said = out.stdout + out.stderr
    assert said.count("edgevoice models pull") == 1 and said.count("llm.model") == 1, said
    assert GET_MODEL_COMMAND in said and "GGUF file" not in said and "Traceback" not in said
    # A model named in the config but not downloaded: its own pull command, and nothing else.
    out = _ask(home, "why is the sky blue", config="llm:\n  model: gemma-3-1b-it\n")
    said = out.stdout + out.stderr
    assert out.returncode == 2, said
    assert said.count("edgevoice models pull") == 1 and "pull gemma-3-1b-it" in said, said
    out = _ask(home, "what time is it", config="llm:\n  model: gemma-3-1b-it\n")
    assert out.returncode == 0 and "It's" in out.stdout and not out.stderr  # no model needed
