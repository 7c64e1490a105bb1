"""The CLI as a user runs it: a real subprocess, real files, exit codes and output formats."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile

from edgevoice import __version__
from edgevoice.evaluation import speech_dir

SPEECH = speech_dir()
needs_speech = pytest.mark.skipif(SPEECH is None, reason="speech clips not found")


def run_cli(*args: str, env: dict | None = None, timeout: float = 120):
    return subprocess.run(
        [sys.executable, "-m", "edgevoice", *args],
        capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def test_version():
    out = run_cli("--version")
    assert out.returncode == 0 and __version__ in out.stdout


@needs_speech
def test_transcribe_json_multi_utterance_and_multi_file(tmp_path):
    clip = SPEECH / "pocketsphinx__chan3_vad.wav"
    # The same speech as 44.1 kHz stereo float WAV: any format is resampled and down-mixed.
    samples, rate = soundfile.read(SPEECH / "pocketsphinx__goforward.wav", dtype="float32")
    other = tmp_path / "goforward_44k_stereo.wav"
    import soxr

    up = soxr.resample(samples, rate, 44100)
    soundfile.write(other, np.stack([up, up], axis=1), 44100, subtype="FLOAT")
    out = run_cli("transcribe", str(clip), str(other), "--json",
                  env={"XDG_DATA_HOME": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert all(set(r) == {"file", "start", "end", "text"} for r in rows)
    first = [r for r in rows if r["file"] == str(clip)]
    assert len(first) >= 3, first  # four labelled speech regions in this recording
    starts = [r["start"] for r in first]
    assert starts == sorted(starts) and all(r["end"] > r["start"] for r in first)
    assert all(r["text"] for r in rows)
    second = [r for r in rows if r["file"] == str(other)]
    assert len(second) == 1 and "forward" in second[0]["text"]


@needs_speech
def test_transcribe_plain_prints_one_line_per_utterance():
    clip = SPEECH / "pocketsphinx__goforward.wav"
    out = run_cli("transcribe", str(clip))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 1
    name, start, end, text = lines[0].split("\t")
    assert name == str(clip) and float(start) < float(end) and "forward" in text


def test_transcribe_bad_inputs_are_one_sentence_and_exit_2(tmp_path):
    out = run_cli("transcribe", str(tmp_path / "missing.wav"))
    assert out.returncode == 2
    assert "missing.wav does not exist" in out.stderr and "Traceback" not in out.stderr
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"this is not audio at all" * 10)
    out = run_cli("transcribe", str(junk))
    assert out.returncode == 2 and "not an audio file" in out.stderr
    assert "sox" not in out.stderr and "Traceback" not in out.stderr


def test_bad_config_is_reported_with_line(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("vad:\n  mode: 9\n")
    out = run_cli("--config", str(cfg), "transcribe", "x.wav")
    assert out.returncode == 2
    assert f"{cfg}, line 2" in out.stderr and "vad.mode" in out.stderr
