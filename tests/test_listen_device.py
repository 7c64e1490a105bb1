"""`edgevoice listen` on real PortAudio devices: a private PulseAudio server, a real clip played
into the virtual microphone, the CLI transcribing it live."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from edgevoice.evaluation import speech_dir

SPEECH = speech_dir()
pytestmark = pytest.mark.skipif(SPEECH is None, reason="speech clips not found")


def _listen(pulse, *args: str) -> subprocess.Popen:
    # Ctrl+C as at a terminal, however the suite was started: a shell that runs it in the
    # background (`cmd &` without job control) leaves SIGINT ignored, and children inherit that.
    return subprocess.Popen(
        [sys.executable, "-m", "edgevoice", "listen", "--json", *args],
        env=pulse.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _wait_for_line(proc: subprocess.Popen, timeout: float = 20.0) -> dict:
    start = time.monotonic()
    line = proc.stdout.readline()
    assert line, f"listen ended early: {proc.stderr.read()}"
    assert time.monotonic() - start < timeout
    return json.loads(line)


def test_listen_transcribes_a_clip_played_into_the_virtual_mic(pulse):
    proc = _listen(pulse, "--duration", "14")
    try:
        assert _wait_for_line(proc)["event"] == "listening"
        time.sleep(2.5)  # null sinks start in 2 s blocks; let the stream settle
        pulse.play(SPEECH / "pocketsphinx__goforward.wav", sink="vmic")
        time.sleep(0.5)
        pulse.play(SPEECH / "speechbrain__spk1_snt1.wav", sink="vmic")
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    utterances = [e for e in events if e["event"] == "utterance"]
    assert len(utterances) == 2, events
    assert "forward" in utterances[0]["text"]
    assert "dog" in utterances[1]["text"] or "child" in utterances[1]["text"]
    assert utterances[0]["end"] < utterances[1]["start"]
    assert any(e["event"] == "partial" for e in events), "no partial results while speaking"
    assert "Traceback" not in err


def test_listen_stops_cleanly_on_sigint(pulse):
    import signal

    proc = _listen(pulse)
    try:
        assert _wait_for_line(proc)["event"] == "listening"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    finally:
        proc.kill()
    assert proc.returncode == 0 and "Traceback" not in err


def test_listen_on_a_missing_device_is_one_sentence(pulse):
    proc = subprocess.run(
        [sys.executable, "-m", "edgevoice", "listen", "--device", "no-such-microphone"],
        env=pulse.env, capture_output=True, text=True, timeout=30,
    )
    assert proc.returncode == 2
    assert "no-such-microphone" in proc.stderr and "edgevoice devices" in proc.stderr
    assert "Traceback" not in proc.stderr
