"""Turn-taking on real PortAudio devices (private PulseAudio): real speech into the virtual
microphone, the agent's answer from the virtual speaker. The learned detector ends a turn at the
pause; a false cut-off is reopened into one reply."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile
from test_run_device import SPEECH, Agent, _voiced

pytestmark = pytest.mark.skipif(SPEECH is None, reason="speech clips not found")


def _trimmed(path, tmp_path, name: str):
    """The clip without its leading and trailing quiet, as a WAV to play."""
    x, rate = soundfile.read(path, dtype="int16")
    frames = x[: len(x) // 160 * 160].reshape(-1, 160).astype(np.float64)
    rms = np.sqrt((frames ** 2).mean(axis=1))
    loud = np.flatnonzero(rms > rms.max() * 0.1)
    out = tmp_path / name
    soundfile.write(out, x[loud[0] * 160:(loud[-1] + 1) * 160], rate)
    return out, (loud[-1] + 1 - loud[0]) * 160 / rate


def test_the_learned_detector_ends_the_turn_at_the_pause(pulse, tiny_gguf, tmp_path):
    pytest.importorskip("onnxruntime")
    from edgevoice.devtools.pause_set import smart_turn_model

    cfg = tmp_path / "agent.yaml"
    cfg.write_text("llm:\n  max_tokens: 8\n  temperature: 0.0\n"
                   f"turn:\n  detector: 'on'\n  model: '{smart_turn_model()}'\n"
                   "  fallback_ms: 2000\n")
    clip, _ = _trimmed(SPEECH / "speechbrain__example1.wav", tmp_path, "canoe.wav")
    agent = Agent(pulse, "--config", str(cfg), "run", "--llm-model", str(tiny_gguf))
    try:
        agent.wait_for(lambda e: e.get("state") == "listening", timeout=60)
        time.sleep(2.5)  # null sinks start in 2 s blocks
        with pulse.recorder("vspk.monitor", rate=16000) as rec:
            pulse.play(clip, sink="vmic")
            turn = agent.wait_for(lambda e: e["event"] == "turn", timeout=60)
            time.sleep(0.3)
            out = rec.stop()
        code, err = agent.stop()
    finally:
        agent.proc.kill()
    assert code == 0 and "Traceback" not in err, err
    assert "canoe" in turn["transcript"] or "planks" in turn["transcript"], turn
    lat = turn["latency_ms"]
    # ended by the detector at the ~210 ms pause (where the answer started: asr_final), not by
    # the 2000 ms silence fallback 1.8 s later (counted between the two, so an ear that a busy
    # machine keeps behind real time does not matter)
    assert lat["end_of_turn"] - lat["asr_final"] < 1000, lat
    assert _voiced(out, 16000).any(), "nothing reached the speaker"


def test_a_false_cut_off_on_devices_is_reopened_into_one_reply(pulse, tiny_gguf, tmp_path):
    first, _ = _trimmed(SPEECH / "pocketsphinx__goforward.wav", tmp_path, "a.wav")
    second, _ = _trimmed(SPEECH / "speechbrain__spk1_snt1.wav", tmp_path, "b.wav")
    cfg = tmp_path / "agent.yaml"
    # an impatient 300 ms hangover and no detector: the pause inside the sentence ends the turn
    socket = tmp_path / "control.sock"
    cfg.write_text("llm:\n  max_tokens: 40\n  temperature: 0.0\nvad:\n  hangover_ms: 300\n"
                   "turn:\n  detector: 'off'\nagent:\n  reopen_ms: 2000\n  stale_s: 30\n"
                   f"control:\n  socket: '{socket}'\n")
    agent = Agent(pulse, "-v", "--config", str(cfg), "run", "--llm-model", str(tiny_gguf))
    try:
        agent.wait_for(lambda e: e.get("state") == "listening", timeout=60)
        time.sleep(2.5)
        # Nothing of the speaker reaches this microphone (a headset): while the agent's first
        # words play, the ear learns that no echo comes back, so the person talking over the
        # answer is heard (echo cancellation alone would take them for echo).
        said = subprocess.run([sys.executable, "-m", "edgevoice", "ctl", "--socket", str(socket),
                               "say", "Hello. I am ready when you are."], env=pulse.env,
                              capture_output=True, text=True, timeout=60)
        assert said.returncode == 0, said.stderr
        agent.wait_for(lambda e: e["event"] == "turn", timeout=30)
        pulse.play(first, sink="vmic")
        agent.wait_for(lambda e: e.get("state") in ("thinking", "speaking"), timeout=30)
        time.sleep(0.3)
        pulse.play(second, sink="vmic")
        turns = [agent.wait_for(lambda e: e["event"] == "turn", timeout=60)]
        if turns[0].get("reopened"):
            turns.append(agent.wait_for(lambda e: e["event"] == "turn", timeout=60))
        code, err = agent.stop()
    finally:
        agent.proc.kill()
    assert code == 0 and "Traceback" not in err, err
    assert "no echo reaches the microphone" in err, err
    assert len(turns) == 2, (agent.seen, err[-4000:])
    cut, whole = turns
    assert cut["reopened"] and "forward" in cut["transcript"], turns
    assert "forward" in whole["transcript"] and whole["transcript"].startswith(cut["transcript"])
    assert len(whole["transcript"].split()) > len(cut["transcript"].split())
    assert not whole.get("reopened")
