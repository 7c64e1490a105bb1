"""The device watch's decisions on a scripted timeline (fake streams, a fake clock and a fake
sound server), the pactl parsers, the microphone's timeline across a reopen, and what the turn
manager makes of a lost device: states, error events and the systemd watchdog. The same on real
devices: tests/test_device_loss.py."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import numpy as np
import pytest

from edgevoice.audio import soundserver
from edgevoice.audio.devices import Microphone, Route
from edgevoice.audio.watch import DeviceChange, DeviceWatch
from edgevoice.errors import AudioDeviceError


class FakeStream:
    """What the watch uses of a Microphone/Speaker, scripted by the test."""

    def __init__(self, spec=None, name: str = "default", server=None) -> None:
        self.spec = spec
        self.route = Route(0, name, server)
        self.trouble: str | None = None
        self.delivering = True
        self.hold = False
        self.fail_opens = 0
        self.calls: list[str] = []

    def problem(self, stall_s: float, first_s: float):
        return self.trouble

    def suspend(self) -> None:
        self.calls.append("suspend")

    def reopen(self, reinit: bool = False) -> None:
        self.calls.append(f"reopen(reinit={reinit})")
        if self.fail_opens:
            self.fail_opens -= 1
            raise AudioDeviceError("No audio input device matches 'x'.")
        self.trouble, self.delivering = None, False


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def no_server(monkeypatch):
    monkeypatch.setattr(soundserver, "pactl_found", lambda: False)


def make(stream, kind="input", **kw):
    clock = Clock()
    changes: list[DeviceChange] = []
    w = DeviceWatch(clock=clock, **kw).add(stream, kind)
    w._on_change = changes.append
    return w, clock, changes


def test_a_dead_stream_is_reported_once_reopened_with_backoff_and_welcomed_back(no_server):
    mic = FakeStream(spec="USB Mic", name="USB Mic: Audio (hw:1,0)")
    w, clock, changes = make(mic)
    w.check()
    assert not changes and w.lost == []  # delivering, no problem: up
    mic.trouble = "the input stream stopped"
    w.check()
    assert [c.ok for c in changes] == [False] and mic.calls == ["suspend"]
    assert changes[0].message == ("The microphone was lost (device 'USB Mic': the input stream "
                                  "stopped); edgevoice reopens it when it is back.")
    assert w.lost == ["input"]
    mic.fail_opens = 3
    tries = []
    for _ in range(48):  # 6 s in ticks of 0.125 s
        clock.t += 0.125
        before = len(mic.calls)
        w.check()
        if len(mic.calls) > before:
            tries.append(clock.t - 100.0)
    # 0.25, then 0.5, 1 and 2 s apart; a hardware device is looked up after a PortAudio restart
    assert tries[:4] == [0.25, 0.75, 1.75, 3.75]
    assert mic.calls[1:5] == ["reopen(reinit=True)"] * 4
    assert len(changes) == 1  # failed attempts say nothing more
    mic.delivering = True
    w.check()
    assert [c.ok for c in changes] == [False, True] and w.lost == []
    assert changes[1].message == "The microphone is back: device 'USB Mic'."


def test_a_sound_server_route_is_reopened_without_restarting_portaudio(no_server):
    spk = FakeStream(name="pulse")
    w, clock, changes = make(spk, "output")
    spk.trouble = "it pulled no audio for 1.3 s"
    w.check()
    clock.t += 0.3
    w.check()
    assert spk.calls == ["suspend", "reopen(reinit=False)"]
    assert "The speaker was lost (the default device: it pulled no audio" in changes[0].message


class FakeServer:
    """pactl's answers: device names per kind and where this process's stream is."""

    def __init__(self, monkeypatch, sources=("vmic.monitor", "vspk.monitor"), on="vmic.monitor"):
        self.names = {"input": set(sources), "output": {"vmic", "vspk"}}
        self.on = {"input": on, "output": "vspk"}
        self.lookups = 0
        monkeypatch.setattr(soundserver, "pactl_found", lambda: True)
        monkeypatch.setattr(soundserver, "device_names", lambda kind: set(self.names[kind]))
        monkeypatch.setattr(soundserver, "stream_place", self._place)
        monkeypatch.setattr(soundserver, "Subscription", _NoSubscription)

    def _place(self, kind, pid):
        self.lookups += 1
        on = self.on[kind]
        return None if on is None else (7, on)


class _NoSubscription:
    def __init__(self, on_event) -> None:
        pass

    def start(self):
        return self

    def close(self) -> None:
        pass


def test_a_source_that_goes_away_is_lost_and_the_same_name_coming_back_is_reopened(
        monkeypatch):
    monkeypatch.setenv("PULSE_SOURCE", "vmic.monitor")
    server = FakeServer(monkeypatch)
    mic = FakeStream()
    w, clock, changes = make(mic)
    w.check()  # learns where it is: vmic.monitor, asked for by name: a monitor is fine
    assert w._entries[0].on == "vmic.monitor" and not changes
    server.names["input"].discard("vmic.monitor")  # the module is unloaded...
    server.on["input"] = "vspk.monitor"  # ...and the server moved the stream
    w._on_server_event("remove", "source", 0)
    w.check()
    assert "the sound server's source 'vmic.monitor' went away" in changes[0].message
    for _ in range(30):  # while it is gone, nothing is opened (PortAudio would only complain)
        clock.t += 0.1
        w.check()
    assert mic.calls == ["suspend"]
    server.names["input"].add("vmic.monitor")
    server.on["input"] = "vmic.monitor"
    w._on_server_event("new", "source", 2)
    w.check()  # at once, not at the next backoff step
    assert mic.calls == ["suspend", "reopen(reinit=False)"] and mic.hold is False
    mic.delivering = True
    w.check()
    assert changes[-1].ok and "on the sound server's source 'vmic.monitor'" in changes[-1].message


def test_the_default_device_landing_on_a_monitor_is_no_microphone(monkeypatch):
    monkeypatch.delenv("PULSE_SOURCE", raising=False)
    FakeServer(monkeypatch, on="vspk.monitor")  # no real source left: the default is a monitor
    mic = FakeStream()
    w, clock, changes = make(mic)
    w.check()
    assert not changes[0].ok and "a monitor of a sink" in changes[0].message
    # A device that was asked for (an ALSA PCM that records a monitor) is trusted.
    asked = FakeStream(spec="evmic", name="evmic")
    w2, _, changes2 = make(asked)
    w2.check()
    assert not changes2


def test_a_quiet_server_stream_on_a_device_that_is_there_is_given_time(monkeypatch):
    monkeypatch.setenv("PULSE_SOURCE", "vmic.monitor")
    server = FakeServer(monkeypatch)
    mic = FakeStream()
    w, clock, changes = make(mic)
    w.check()
    mic.trouble = "no audio for 1.2 s"  # a null sink rendering a 2 s block, say
    mic.problem = lambda stall_s, first_s: "no audio for 1.2 s" if stall_s < 5 else None
    for _ in range(10):
        clock.t += 0.2
        w.check()
    assert not changes and server.lookups <= 4  # asked about once a second, not every tick
    mic.problem = lambda stall_s, first_s: "no audio for 5.1 s" if stall_s < 9 else None
    w.check()
    assert not changes[0].ok and "no audio for 5.1 s" in changes[0].message


def test_server_events_about_other_streams_and_clients_are_ignored(monkeypatch):
    FakeServer(monkeypatch)
    w, _, _ = make(FakeStream())
    w.check()
    for event in [("new", "client", 4), ("change", "sink", 1), ("change", "source-output", 3)]:
        w._on_server_event(*event)
        assert not w._server_dirty, event
    for event in [("remove", "source", 0), ("new", "sink", 2), ("change", "source-output", 7),
                  ("lost", "server", -1)]:
        w._server_dirty = False
        w._on_server_event(*event)
        assert w._server_dirty, event


# -- pactl's words -----------------------------------------------------------------------------

SOURCE_OUTPUTS = """Source Output #2
\tDriver: protocol-native.c
\tOwner Module: 0
\tClient: 9
\tSource: 1
\tSample Specification: s16le 1ch 16000Hz
\tProperties:
\t\tmedia.name = "ALSA Capture"
\t\tapplication.name = "ALSA plug-in [python3.11]"
\t\tapplication.process.id = "5341"

Source Output #5
\tDriver: protocol-native.c
\tSource: 0
\tProperties:
\t\tapplication.process.id = "77"
"""


def test_pactl_listings_and_events_are_parsed():
    assert soundserver.parse_streams(SOURCE_OUTPUTS) == [(2, 1, 5341), (5, 0, 77)]
    short = "0\tvmic.monitor\tmodule-null-sink.c\ts16le 2ch 44100Hz\tIDLE\n1\tvspk.monitor\tx\n"
    assert soundserver.parse_short_names(short) == {0: "vmic.monitor", 1: "vspk.monitor"}
    assert soundserver.parse_event("Event 'remove' on source #0\n") == ("remove", "source", 0)
    assert soundserver.parse_event("Event 'change' on source-output #12") == (
        "change", "source-output", 12)
    assert soundserver.parse_event("Got SIGINT, exiting.") is None
    assert soundserver.is_monitor_name("vspk.monitor") and not soundserver.is_monitor_name("vmic")


# -- the microphone's timeline across a reopen ------------------------------------------------

class _Status:
    input_overflow = False


def test_the_timeline_skips_the_time_the_microphone_was_away(monkeypatch):
    """Chunk times stay on the clock across a reopen, so an utterance after the device came back
    is not taken for one that ended long ago."""
    from edgevoice.audio import devices
    from edgevoice.audio.resample import StreamResampler

    now = [10.0]
    monkeypatch.setattr(devices.time, "monotonic", lambda: now[0])
    mic = Microphone(rate=16000, block_ms=30)
    mic.route = Route(0, "default")  # as if open() had run
    block = np.zeros((480, 1), np.int16)
    for _ in range(10):
        mic._callback(block, 480, None, _Status())
        now[0] += 0.03
    starts = [mic.read(timeout=0).start_ms for _ in range(10)]
    assert starts == pytest.approx([30.0 * i for i in range(10)])
    now[0] += 4.0  # the device was away for 4 s, then reopened
    mic._stream_t0 = None
    mic._queue.put(devices._Restart(StreamResampler(16000, 16000)))
    mic.hold = True
    mic._callback(block, 480, None, _Status())  # held back until the checks pass: dropped
    mic.hold = False
    t_new = now[0]
    mic._callback(block, 480, None, _Status())
    chunk = mic.read(timeout=0)
    assert mic.restarts == 1
    assert chunk.start_ms == pytest.approx((t_new - 10.0) * 1000, abs=1)
    assert mic.read(timeout=0) is None  # the held block never reached the reader


# -- the turn manager ---------------------------------------------------------------------------

class QuietSource:
    overflows = 0

    def read(self, timeout=None):
        time.sleep(min(timeout or 0.05, 0.05))
        return None


class ScriptedWatch:
    """A watch whose changes the test sends: ``start`` keeps the callback."""

    def __init__(self) -> None:
        self.send = None
        self.closed = False

    def start(self, on_change) -> None:
        self.send = on_change

    def close(self) -> None:
        self.closed = True


def test_a_lost_device_shows_as_a_state_an_error_and_a_silent_watchdog(tmp_path, monkeypatch):
    from edgevoice.agent.brain import Brain
    from edgevoice.agent.manager import TurnManager
    from edgevoice.agent.outputs import FileOutput
    from edgevoice.config import AgentConfig, LlmConfig
    from edgevoice.llm.router import Router

    addr = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(addr)
    sock.settimeout(0.05)
    monkeypatch.setenv("NOTIFY_SOCKET", addr)
    monkeypatch.setenv("WATCHDOG_USEC", "100000")  # a keep-alive every 50 ms
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    messages: list[tuple[float, str]] = []
    done = threading.Event()

    def drain() -> None:
        while not done.is_set():
            try:
                messages.append((time.monotonic(), sock.recv(4096).decode()))
            except TimeoutError:
                continue

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    events: list[dict] = []
    devices = ScriptedWatch()

    class Synth:
        name, format = "none", None

    manager = TurnManager(source=QuietSource(), transcriber=None, brain=Brain(Router({}),
                          LlmConfig()), synthesizer=Synth(), output=FileOutput(tmp_path / "o.wav"),
                          agent=AgentConfig(), emit=events.append, devices=devices)
    marks: dict[str, float] = {}

    async def script() -> None:
        task = asyncio.get_running_loop().create_task(manager.run())
        await asyncio.sleep(0.3)
        lost = "The microphone was lost (the default device: the input stream stopped)."
        devices.send(DeviceChange("input", False, lost))
        await asyncio.sleep(0.05)
        marks["lost"] = time.monotonic()
        assert manager.status()["state"] == "no-microphone"
        assert manager.status()["lost_devices"] == {"input": lost}
        devices.send(DeviceChange("output", False, "The speaker was lost (...)."))
        await asyncio.sleep(0.05)
        devices.send(DeviceChange("input", True, "The microphone is back: the default device."))
        await asyncio.sleep(0.05)
        assert manager.status()["state"] == "no-speaker"
        await asyncio.sleep(0.3)
        marks["deaf_end"] = time.monotonic()
        devices.send(DeviceChange("output", True, "The speaker is back: the default device."))
        await asyncio.sleep(0.3)
        manager.stop()
        await task

    asyncio.run(asyncio.wait_for(script(), timeout=20))
    done.set()
    reader.join(5)
    sock.close()
    states = [e["state"] for e in events if e["event"] == "state"]
    assert states == ["listening", "no-microphone", "no-speaker", "listening"]
    errors = [e for e in events if e["event"] == "error"]
    assert [e["device"] for e in errors] == ["input", "output"]
    assert [e["device"] for e in events if e["event"] == "device"] == ["input", "output"]
    keepalives = [t for t, m in messages if "WATCHDOG=1" in m]
    assert any(t < marks["lost"] for t in keepalives)
    assert not [t for t in keepalives if marks["lost"] + 0.06 < t < marks["deaf_end"]]
    assert any(t > marks["deaf_end"] for t in keepalives)
    assert any("STATUS=no-microphone" in m for _, m in messages)
    assert devices.closed
