"""Devices that come and go, on real PortAudio devices (a private PulseAudio with null sinks).

`edgevoice run --json` listens on ``vmic.monitor`` and speaks into ``vspk``. A device goes away
the way a USB headset does: its module is unloaded (the server then moves our stream elsewhere —
the microphone onto ``vspk.monitor``, where it would hear the agent's own voice, the speaker
into ``vmic``, where the agent would hear itself). The agent must say so (an ``error`` event and
a ``no-microphone`` / ``no-speaker`` state, also in ``ctl events`` and ``ctl status``), stop
feeding the systemd watchdog, hear and play nothing on the wrong device, and work again soon
after the device is loaded again under the same name.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from _daemon import EventStream

from edgevoice.evaluation import speech_dir

SPEECH = speech_dir()
pytestmark = pytest.mark.skipif(SPEECH is None, reason="speech clips not found")
CLIP = SPEECH / "pocketsphinx__goforward.wav" if SPEECH else None
SHORT = SPEECH / "pocketsphinx__cards_001.wav" if SPEECH else None  # 1.1 s: "ten of clubs"


class Notify:
    """A systemd notify socket that keeps each message with the time it came."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.1)
        self.messages: list[tuple[float, str]] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        while not self._done.is_set():
            try:
                self.messages.append((time.monotonic(), self.sock.recv(4096).decode()))
            except TimeoutError:
                continue

    def keepalives(self, start: float, end: float) -> int:
        return sum("WATCHDOG=1" in m for t, m in list(self.messages) if start <= t <= end)

    def close(self) -> None:
        self._done.set()
        self._thread.join(5)
        self.sock.close()


class Agent(EventStream):
    """`edgevoice run --json` on the private server; no language model (intents only)."""

    def __init__(self, pulse, tmp_path: Path, *args: str, env: dict | None = None) -> None:
        self.socket = tmp_path / "control.sock"
        config = tmp_path / "agent.yaml"
        config.write_text(f"control:\n  socket: {self.socket}\n")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edgevoice", "--config", str(config), "run", *args, "--json"],
            env={**pulse.env, "XDG_DATA_HOME": str(tmp_path / "data"), **(env or {})},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self._start_pump()

    def ctl(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "edgevoice", "ctl", "--socket",
                               str(self.socket), *args], capture_output=True, text=True,
                              timeout=30)

    def quiet_for(self, seconds: float, pred) -> None:
        """Assert that no event matching ``pred`` arrives within ``seconds``."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                event = self.events.get(timeout=left)
            except Exception:  # queue.Empty: nothing came
                return
            assert event is not None, f"agent exited: {self.proc.stderr.read()}"
            self.seen.append(event)
            assert not pred(event), f"unexpected event {event}; so far: {self.seen}"



class Events(EventStream):
    """`edgevoice ctl events` (the control API's event stream) in a subprocess."""

    def __init__(self, agent: Agent, env: dict) -> None:
        deadline = time.monotonic() + 30
        while not agent.socket.exists():
            assert time.monotonic() < deadline, "the control socket never appeared"
            time.sleep(0.05)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edgevoice", "ctl", "--socket", str(agent.socket), "events"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self._start_pump()


def _module(pulse, sink: str) -> str:
    for line in pulse.pactl("list", "short", "modules").splitlines():
        index, name, *args = line.split("\t")
        if name == "module-null-sink" and f"sink_name={sink}" in args[0].split():
            return index
    raise AssertionError(f"no module for sink {sink}")


def unload(pulse, sink: str) -> float:
    pulse.pactl("unload-module", _module(pulse, sink))
    return time.monotonic()


def load(pulse, sink: str) -> float:
    pulse.pactl("load-module", "module-null-sink", f"sink_name={sink}")
    return time.monotonic()


def play(pulse, clip: Path, sink: str) -> None:
    """Play a clip into a sink at a low latency: with paplay's default (2 s) a null sink renders,
    and its monitor delivers, in bursts up to 2 s late."""
    subprocess.run(["paplay", "--latency-msec=30", "-d", sink, str(clip)], env=pulse.env,
                   check=True, timeout=60)


def voiced(samples: np.ndarray, rate: int = 16000, hop_s: float = 0.02) -> np.ndarray:
    hop = int(rate * hop_s)
    frames = samples[: len(samples) // hop * hop].reshape(-1, hop).astype(np.float64)
    return np.sqrt((frames**2).mean(axis=1)) > 300


def is_state(state: str):
    return lambda e: e.get("event") == "state" and e.get("state") == state


def test_the_microphone_goes_away_and_comes_back(pulse, tmp_path):
    notify = Notify(tmp_path / "notify")
    agent = Agent(pulse, tmp_path, env={"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "400000"})
    events = None
    try:
        agent.wait_for(is_state("listening"))
        events = Events(agent, pulse.env)
        time.sleep(2.5)  # null sinks start in 2 s blocks
        t_gone = unload(pulse, "vmic")
        lost = agent.wait_for(lambda e: e["event"] == "error", timeout=10)
        t_lost = time.monotonic()
        agent.wait_for(is_state("no-microphone"), timeout=5)
        status = json.loads(agent.ctl("status", "--json").stdout)
        assert status["state"] == "no-microphone" and "input" in status["lost_devices"]
        shown = agent.ctl("status").stdout
        assert "no-microphone" in shown and "devices:     The microphone was lost" in shown
        # The server moved the stream to vspk.monitor: what the speaker plays is not heard.
        play(pulse, CLIP, "vspk")
        agent.quiet_for(1.5, lambda e: e["event"] in ("transcript", "partial"))
        t_quiet = time.monotonic()
        t_back = load(pulse, "vmic")
        time.sleep(0.5)  # reopened on the server's event within ~0.1 s (the "device" event
        play(pulse, SHORT, "vmic")  # waits for the first block: a null sink's take 2 s)
        t_played = time.monotonic()
        back = agent.wait_for(lambda e: e["event"] == "device", timeout=10)
        agent.wait_for(is_state("listening"), timeout=5)
        heard = agent.wait_for(lambda e: e["event"] == "transcript", timeout=15)
        t_heard = time.monotonic()
        ctl_seen = [events.wait_for(is_state(s), timeout=10)["state"]
                    for s in ("no-microphone", "listening")]
        time.sleep(0.6)
        code, err = agent.stop()
    finally:
        agent.proc.kill()
        if events is not None:
            events.proc.kill()
        notify.close()
    print(f"lost after {t_lost - t_gone:.2f} s; transcript {t_heard - t_back:.2f} s after the "
          f"device came back ({t_heard - t_played:.2f} s after the clip ended)")
    assert code == 0 and "Traceback" not in err, err[-2000:]
    assert lost["device"] == "input" and "microphone" in lost["message"]
    assert "vmic.monitor" in lost["message"] and "went away" in lost["message"]
    assert "microphone was lost" in err  # the log line (stderr, the journal under systemd)
    assert back["ok"] is True and back["device"] == "input"
    assert t_lost - t_gone < 2.0
    assert "clubs" in heard["text"]
    assert t_heard - t_back < 5.0  # the device came back, then it listened, heard, transcribed
    assert ctl_seen == ["no-microphone", "listening"]
    # A deaf daemon does not look healthy: no keep-alive while the microphone was lost.
    assert notify.keepalives(t_lost + 0.1, t_quiet) == 0
    assert notify.keepalives(t_played, time.monotonic()) >= 1  # and again once it is back
    statuses = [m for _, m in notify.messages if "STATUS=" in m]
    assert any("STATUS=no-microphone" in m for m in statuses)


def test_the_speaker_goes_away_and_the_next_answer_is_heard(pulse, tmp_path):
    agent = Agent(pulse, tmp_path)
    try:
        agent.wait_for(is_state("listening"))
        time.sleep(2.5)
        t_gone = unload(pulse, "vspk")
        lost = agent.wait_for(lambda e: e["event"] == "error", timeout=10)
        t_lost = time.monotonic()
        agent.wait_for(is_state("no-speaker"), timeout=5)
        # The server moved the stream into vmic; an answer now must not land there (the
        # microphone would hear it).
        with pulse.recorder("vmic.monitor") as rec:
            said = agent.ctl("say", "one two three four five six")
            time.sleep(0.5)
            leaked = rec.stop()
        assert said.returncode == 0, said.stderr
        t_back = load(pulse, "vspk")
        back = agent.wait_for(lambda e: e["event"] == "device", timeout=10)
        agent.wait_for(is_state("listening"), timeout=5)
        t_listening = time.monotonic()
        time.sleep(2.0)  # the reopened microphone: null sinks start in 2 s blocks
        with pulse.recorder("vspk.monitor") as rec:
            play(pulse, CLIP, "vmic")
            turn = agent.wait_for(lambda e: e["event"] == "turn", timeout=20)
            time.sleep(0.5)
            out = rec.stop()
        code, err = agent.stop()
    finally:
        agent.proc.kill()
    print(f"lost after {t_lost - t_gone:.2f} s; listening {t_listening - t_back:.2f} s after "
          "the device came back")
    assert code == 0 and "Traceback" not in err, err[-2000:]
    assert lost["device"] == "output" and "speaker" in lost["message"]
    assert back["device"] == "output" and back["ok"]
    assert t_lost - t_gone < 2.0 and t_listening - t_back < 5.0
    assert not voiced(leaked).any(), "the answer went into the microphone's sink"
    assert turn["reply"] and voiced(out).any(), "the next answer was not heard"


def test_a_device_that_vanishes_from_portaudio_is_found_again_by_name(pulse, tmp_path):
    """An ALSA device PortAudio lists (``pcm.evmic`` in ~/.asoundrc) vanishes from the list and
    comes back at another index: only a PortAudio restart finds it, by its name."""
    home = tmp_path / "home"
    home.mkdir()
    rc = home / ".asoundrc"
    evmic = 'pcm.evmic {\n type pulse\n device "vmic.monitor"\n}\n'
    rc.write_text(evmic)
    agent = Agent(pulse, tmp_path, "--device", "evmic", env={"HOME": str(home)})
    try:
        agent.wait_for(is_state("listening"))
        time.sleep(2.5)
        rc.write_text("")  # the device leaves ALSA's list...
        unload(pulse, "vmic")  # ...and its audio goes away
        lost = agent.wait_for(lambda e: e["event"] == "error", timeout=10)
        agent.wait_for(is_state("no-microphone"), timeout=5)
        time.sleep(1.0)
        # Back, listed after a new device: its PortAudio index is not the old one.
        rc.write_text('pcm.aaa {\n type pulse\n device "vspk.monitor"\n}\n' + evmic)
        t_back = load(pulse, "vmic")
        agent.wait_for(lambda e: e["event"] == "device", timeout=10)
        agent.wait_for(is_state("listening"), timeout=5)
        t_listening = time.monotonic()
        time.sleep(0.3)
        play(pulse, CLIP, "vmic")
        heard = agent.wait_for(lambda e: e["event"] == "transcript", timeout=15)
        code, err = agent.stop()
    finally:
        agent.proc.kill()
    assert code == 0 and "Traceback" not in err, err[-2000:]
    assert "'evmic'" in lost["message"]
    assert t_listening - t_back < 5.0
    assert "forward" in heard["text"]
