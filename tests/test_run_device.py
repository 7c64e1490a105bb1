"""`edgevoice run` on real PortAudio devices (private PulseAudio, null sinks): a real clip
played into the virtual microphone, the spoken answer captured from the virtual speaker, and
barge-in — speech injected during playback stops the output."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest
from _daemon import EventStream

from edgevoice.evaluation import speech_dir

SPEECH = speech_dir()
pytestmark = pytest.mark.skipif(SPEECH is None, reason="speech clips not found")


class Agent(EventStream):
    """`edgevoice run --json` in a subprocess, its events readable with a timeout."""

    def __init__(self, pulse, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edgevoice", *args, "--json"],
            env=pulse.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self._start_pump()



def _voiced(samples: np.ndarray, rate: int, hop_s: float = 0.02) -> np.ndarray:
    hop = int(rate * hop_s)
    frames = samples[: len(samples) // hop * hop].reshape(-1, hop).astype(np.float64)
    return np.sqrt((frames**2).mean(axis=1)) > 300


def _config(tmp_path, max_tokens: int):
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(f"llm:\n  max_tokens: {max_tokens}\n  temperature: 0.0\n")
    return str(cfg)


def test_spoken_answer_reaches_the_virtual_speaker(pulse, tiny_gguf, tmp_path):
    agent = Agent(pulse, "--config", _config(tmp_path, 8), "run", "--llm-model", str(tiny_gguf))
    try:
        agent.wait_for(lambda e: e.get("state") == "listening")
        time.sleep(2.5)  # null sinks start in 2 s blocks
        with pulse.recorder("vspk.monitor", rate=16000) as rec:
            t0 = time.monotonic()
            pulse.play(SPEECH / "pocketsphinx__goforward.wav", sink="vmic")
            clip_end = time.monotonic() - t0
            turn = agent.wait_for(lambda e: e["event"] == "turn")
            agent.wait_for(lambda e: e.get("state") == "listening")
            time.sleep(0.5)
            out = rec.stop()
        code, err = agent.stop()
    finally:
        agent.proc.kill()
    assert code == 0 and "Traceback" not in err
    assert "forward" in turn["transcript"] and turn["target"] == "local"
    assert turn["latency_ms"]["first_audio"] > 0
    voiced = _voiced(out, 16000)
    first = np.argmax(voiced) * 0.02
    assert voiced.any(), "nothing reached the speaker"
    assert first > clip_end - 1.0, "the speaker played before the question was over"


def test_barge_in_stops_the_output(pulse, tiny_gguf, tmp_path):
    agent = Agent(pulse, "--config", _config(tmp_path, 200), "run", "--llm-model",
                  str(tiny_gguf))
    try:
        agent.wait_for(lambda e: e.get("state") == "listening")
        time.sleep(2.5)
        with pulse.recorder("vspk.monitor", rate=16000) as rec:
            t_rec = time.monotonic()
            pulse.play(SPEECH / "pocketsphinx__goforward.wav", sink="vmic")
            agent.wait_for(lambda e: e.get("state") == "speaking")
            time.sleep(1.0)  # the long gibberish answer is playing
            t_barge = time.monotonic() - t_rec
            pulse.play(SPEECH / "speechbrain__spk1_snt1.wav", sink="vmic")
            first = agent.wait_for(lambda e: e["event"] == "turn")
            second = agent.wait_for(lambda e: e["event"] == "transcript")
            time.sleep(0.5)
            out = rec.stop()
        agent.stop()
    finally:
        agent.proc.kill()
    assert first["interrupted"] is True
    assert len(first["spoken"]) < len(first["reply"])
    assert "child" in second["text"] or "dog" in second["text"]
    voiced = _voiced(out, 16000)
    t = np.arange(len(voiced)) * 0.02
    assert voiced[(t > t_barge - 0.8) & (t < t_barge)].any(), "answer was not playing"
    # Silence from shortly after the interruption until the next answer could begin: the
    # endpointer needs ~0.1-0.3 s of speech to call it speech, playback stops at once.
    window = (t > t_barge + 0.9) & (t < t_barge + 2.5)
    assert not voiced[window].any(), "the answer kept playing over the user"


def test_sigterm_stops_cleanly(pulse, tmp_path):
    agent = Agent(pulse, "run")
    agent.wait_for(lambda e: e.get("state") == "listening")
    code, err = agent.stop()
    assert code == 0 and "Traceback" not in err
