"""`edgevoice run` in a virtual room: on a private PulseAudio server the agent's speaker is looped
back into its microphone (module-loopback: 60 ms, -9 dB), as open speakers do. With echo
cancellation (``audio.echo_cancel: auto``) and barge-in on, its own answers never interrupt it
nor reach the recognizer; a real person speaking over an answer should still stop it (not
reliable yet: marked xfail)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from _daemon import EventStream

from edgevoice.control.client import ControlClient, NoDaemon
from edgevoice.devtools.room import LiveRoom, RoomSetting
from edgevoice.evaluation import speech_dir

pytest.importorskip("pywebrtc_audio", reason="pywebrtc-audio is not installed")
SPEECH = speech_dir()
pytestmark = pytest.mark.skipif(SPEECH is None, reason="speech clips not found")

ANSWERS = [
    "Here is the weather for today. It will be sunny in the morning and cloudy later on.",
    "Your meeting with the design team starts at three o'clock in the small room.",
    "I have set a timer for ten minutes. I will tell you when it is done.",
]
LONG = ("Once upon a time there was a little village by the sea, where the fishermen went out "
        "every morning before the sun came up, and came back every evening with their boats "
        "full of silver fish, singing songs that their fathers had taught them long ago.")


class Agent(EventStream):
    def __init__(self, pulse, config: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edgevoice", "-v", "--config", config, "run", "--json"],
            env=pulse.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self._start_pump()


def _client(path, agent, timeout=30.0) -> ControlClient:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return ControlClient(path, timeout=120)
        except NoDaemon:
            assert agent.proc.poll() is None, agent.proc.stderr.read()
            assert time.monotonic() < deadline, "the control socket never appeared"
            time.sleep(0.1)


def _voiced(samples: np.ndarray, rate: int = 16000, hop_s: float = 0.02) -> np.ndarray:
    hop = int(rate * hop_s)
    frames = samples[: len(samples) // hop * hop].reshape(-1, hop).astype(np.float64)
    return np.sqrt((frames**2).mean(axis=1)) > 300


def _room_agent(pulse, tmp_path):
    sock = tmp_path / "c.sock"
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(f"control:\n  socket: {sock}\n")
    agent = Agent(pulse, str(cfg))
    agent.wait_for(lambda e: e.get("state") == "listening")
    time.sleep(2.5)  # null sinks start in 2 s blocks
    return agent, sock


@pytest.mark.parametrize("gain_db", [-3.0, -9.0, -20.0])
def test_the_virtual_room_attenuates_the_speaker_as_set(pulse, tmp_path, gain_db):
    # Every room figure depends on it: the loopback's volume was once never set (looked up in
    # a listing without an owner column), so every "room" ran at 0 dB.
    import soundfile

    t = np.arange(16000 * 2) / 16000
    tone = tmp_path / "tone.wav"
    soundfile.write(tone, (6000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16), 16000)
    with LiveRoom(pulse.pactl, RoomSetting(60, gain_db)):
        time.sleep(0.5)
        with pulse.recorder("vspk.monitor") as spk, pulse.recorder("vmic.monitor") as mic:
            time.sleep(2.5)  # null sinks start in 2 s blocks
            pulse.play(tone, sink="vspk")
            time.sleep(0.5)
            played, heard = spk.stop(), mic.stop()

    def level(x: np.ndarray) -> float:
        loud = x[np.abs(x) > 0.5 * np.abs(x).max()].astype(np.float64)
        return 10 * np.log10(np.mean(loud**2))

    assert abs(level(heard) - level(played) - gain_db) < 1.5, (level(heard), level(played))


def test_in_a_room_its_own_answers_never_interrupt_it_nor_get_transcribed(pulse, tmp_path):
    with LiveRoom(pulse.pactl, RoomSetting(60, -9)):
        agent, sock = _room_agent(pulse, tmp_path)
        try:
            with _client(sock, agent) as client:
                turns = [client.request("say", text=text, timeout=120) for text in ANSWERS]
            time.sleep(1.5)  # the last echo's utterance, if any, would end by now
            heard = [e for e in _drain(agent) if e["event"] == "transcript"]
            code, err = agent.stop()
        finally:
            agent.proc.kill()
    assert code == 0 and "Traceback" not in err
    assert "echo cancellation on" in err
    cut = [t for t in turns if t.get("interrupted")]
    assert not cut, (cut, [line for line in err.splitlines() if "echo" in line or "barge" in line
                           or "interrupted" in line or "resumed" in line][-20:])
    assert heard == [], heard


@pytest.mark.xfail(strict=False, reason="issue 13 not done: AEC3's double-talk suppression takes "
                   "5-30 dB off a person talking over the answer (benchmarks/echo_eval.py --agent, "
                   "60 ms -9 dB: stop ~0.5 s after onset on one clock, WER 0.64 vs 0.25 alone)")
def test_in_a_room_a_person_talking_over_the_answer_stops_it(pulse, tmp_path):
    with LiveRoom(pulse.pactl, RoomSetting(60, -9)):
        agent, sock = _room_agent(pulse, tmp_path)
        try:
            with pulse.recorder("vspk.monitor", rate=16000) as rec:
                t_rec = time.monotonic()
                result: dict = {}
                speaking = threading.Thread(target=lambda: result.update(
                    _say(sock, LONG)), daemon=True)
                speaking.start()
                agent.wait_for(lambda e: e.get("state") == "speaking")
                time.sleep(1.5)
                t_barge = time.monotonic() - t_rec
                pulse.play(SPEECH / "speechbrain__spk1_snt1.wav", sink="vmic")
                heard = agent.wait_for(lambda e: e["event"] == "transcript", timeout=30)
                speaking.join(60)
                out = rec.stop()
            code, err = agent.stop()
        finally:
            agent.proc.kill()
    assert code == 0 and "Traceback" not in err
    assert result.get("interrupted") is True, result
    assert {"child", "dog", "riding", "boy"} & set(heard["text"].split()), heard
    voiced = _voiced(out)
    t = np.arange(len(voiced)) * 0.02
    assert voiced[(t > t_barge - 1.0) & (t < t_barge)].any(), "the answer was not playing"
    assert not voiced[(t > t_barge + 1.0) & (t < t_barge + 2.5)].any(), \
        "the answer kept playing over the person"


def _say(sock, text: str) -> dict:
    with ControlClient(sock, timeout=120) as client:
        return client.request("say", text=text, timeout=120)


def _drain(agent: Agent) -> list[dict]:
    """Events that came so far (all of them, also those wait_for already saw)."""
    import queue

    while True:
        try:
            event = agent.events.get_nowait()
        except queue.Empty:
            return list(agent.seen)
        if event is None:
            return list(agent.seen)
        agent.seen.append(event)
