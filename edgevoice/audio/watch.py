"""Devices that come and go: notice a microphone or speaker that died, went quiet or was moved by
the sound server, and reopen it with backoff until it is back.

What is noticed, for each stream (a ``devices.Microphone`` or ``devices.Speaker``):

- the stream ended (PortAudio's finished callback, a stream that is no longer active, an error);
- no callback for ``stall_s`` (1 s), counted from ``first_s`` (5 s) after opening: a device
  may take that long to start (PulseAudio's null sinks deliver their first block after 2 s).
  A stream of the sound server's that only went quiet gets up to ``server_stall_s`` (5 s) while
  the server says its device is there and the stream on it (null sinks deliver in 2 s bursts
  while a client asks for a long latency);
- through a sound server (PulseAudio, or PipeWire's pulse server, asked with ``pactl``): the
  source or sink the stream is on went away, or the server moved the stream to a monitor of a
  sink. When a device disappears the server moves its streams elsewhere instead of ending them,
  so PortAudio sees nothing wrong: the microphone would record the speaker's monitor and the
  agent would answer its own voice. Which device a stream is on is read when it opens or first
  delivers (``pactl list source-outputs``, by process id); ``pactl subscribe`` then says when to
  look again, so watching costs nothing while nothing changes. A stream sent nowhere in
  particular (ALSA's ``default`` or ``pulse``, no ``$PULSE_SOURCE``) follows the server's
  default, but a microphone the server put on a monitor is refused.

A lost stream is closed at once (nothing it records or plays reaches the wrong device), reported
with one ``DeviceChange(ok=False)``, and reopened on the spec it was configured with — the same
name or index — after 0.25, 0.5, 1, then every 2 s, or as soon as the server reports a new
source or sink. A device that resolves at each open (the server's own source or sink, ALSA's
``default``) is only reopened; any other is looked up again after restarting PortAudio
(``devices.reinitialize``: PortAudio lists devices only when it starts), which closes and reopens
the other stream for a moment. A reopened microphone holds its blocks back while the server is
asked where it landed. When the stream delivers again, one ``DeviceChange(ok=True)``.

Everything runs on one thread (``edgevoice-devices``), which wakes every ``tick_s`` (0.2 s) to
read a few attributes; the callbacks themselves only record the time of each block.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Optional

from edgevoice.audio import soundserver
from edgevoice.audio.devices import PLUGIN_DEVICES
from edgevoice.errors import AudioDeviceError

log = logging.getLogger(__name__)

Kind = Literal["input", "output"]
NOUN = {"input": "microphone", "output": "speaker"}
STALL_S = 1.0
SERVER_STALL_S = 5.0
FIRST_S = 5.0
TICK_S = 0.2
BACKOFF_S = (0.25, 0.5, 1.0, 2.0)


@dataclass(frozen=True)
class DeviceChange:
    """A stream was lost (``ok`` False) or is back; ``message`` is one sentence."""

    kind: Kind
    ok: bool
    message: str


class _Entry:
    def __init__(self, stream: Any, kind: Kind) -> None:
        self.stream = stream
        self.kind: Kind = kind
        self.state = "opening"  # opening (not delivering yet) | up | down (waiting to retry)
        self.reported = False  # a loss was reported and the matching "back" is owed
        self.attempt = 0
        self.next_try = 0.0
        self.server = False  # pactl sees this stream: the server checks apply
        self.learned = False  # where the current stream is was looked up (and found)
        self.on: Optional[str] = None  # the server source/sink it is on
        self.index: Optional[int] = None  # its source-output / sink-input index
        self.confirmed_at = float("-inf")  # when the server last said a silent stream is fine

    def where(self) -> str:
        spec = self.stream.spec
        return "the default device" if spec is None else f"device {spec!r}"


class DeviceWatch:
    """Keeps the agent's microphone and speaker open (see the module docstring)."""

    def __init__(self, *, stall_s: float = STALL_S, server_stall_s: float = SERVER_STALL_S,
                 first_s: float = FIRST_S, tick_s: float = TICK_S,
                 backoff_s: tuple[float, ...] = BACKOFF_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.stall_s, self.server_stall_s, self.first_s = stall_s, server_stall_s, first_s
        self.tick_s, self.backoff_s = tick_s, backoff_s
        self.pid = os.getpid()
        self._clock = clock
        self._entries: list[_Entry] = []
        self._on_change: Callable[[DeviceChange], None] = lambda change: None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._server_dirty = False
        self._subscription: Optional[soundserver.Subscription] = None
        self._thread: Optional[threading.Thread] = None

    def add(self, stream: Any, kind: Kind) -> DeviceWatch:
        """Watch an open ``Microphone`` (``input``) or ``Speaker`` (``output``)."""
        self._entries.append(_Entry(stream, kind))
        return self

    def start(self, on_change: Callable[[DeviceChange], None]) -> None:
        """Start watching; ``on_change`` runs on the watch's thread."""
        self._on_change = on_change
        if self._thread is None and self._entries:
            self._thread = threading.Thread(target=self._run, name="edgevoice-devices",
                                            daemon=True)
            self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5)
        if self._subscription is not None:
            self._subscription.close()

    @property
    def lost(self) -> list[Kind]:
        """The kinds whose device is lost right now (reported and not back yet)."""
        return [e.kind for e in self._entries if e.reported]

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.tick_s)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.check()
            except Exception:  # the watch must outlive one bad pass
                log.exception("checking the audio devices failed")

    # -- one pass ---------------------------------------------------------------------------

    def check(self) -> None:
        """Look at every stream once: lose, retry or welcome back (the thread's body)."""
        now = self._clock()
        dirty, self._server_dirty = self._server_dirty, False
        for e in self._entries:
            if e.state == "down":
                if dirty:
                    e.next_try = min(e.next_try, now)  # a device appeared: try at once
                if now >= e.next_try:
                    self._try_reopen(e, now)
                continue
            why = e.stream.problem(self.stall_s, self.first_s)
            if why is not None and e.server and e.state == "up":
                why = self._confirm_stall(e, why, now)
            if why is None and e.state == "up" and e.server and not e.learned:
                why = self._learn(e)  # reopened by a PortAudio restart: a new stream index
            if why is None and dirty and e.state == "up" and e.server:
                why = self._server_problem(e)
            if why is not None:
                self._lose(e, why, now)
            elif e.state == "opening" and e.stream.delivering:
                why = None if e.learned else self._learn(e)
                if why is not None:
                    self._lose(e, why, now)
                else:
                    self._up(e)

    def _up(self, e: _Entry) -> None:
        e.state, e.attempt = "up", 0
        if e.reported:
            e.reported = False
            on = f" (on the sound server's {soundserver.ROLE[e.kind]} {e.on!r})" if e.on else ""
            self._on_change(DeviceChange(e.kind, True,
                                         f"The {NOUN[e.kind]} is back: {e.where()}{on}."))

    def _lose(self, e: _Entry, why: str, now: float) -> None:
        e.stream.suspend()
        e.state = "down"
        e.next_try = now + self.backoff_s[min(e.attempt, len(self.backoff_s) - 1)]
        e.attempt += 1
        if not e.reported:
            e.reported = True
            self._on_change(DeviceChange(
                e.kind, False, f"The {NOUN[e.kind]} was lost ({e.where()}: {why}); edgevoice "
                "reopens it when it is back."))
        else:
            log.debug("%s still unusable: %s", NOUN[e.kind], why)

    def _try_reopen(self, e: _Entry, now: float) -> None:
        wanted = self._wanted(e)
        if e.server and wanted is not None:
            names = soundserver.device_names(e.kind)
            if names is not None and wanted not in names:  # still gone: opening would only fail
                e.next_try = now + self.backoff_s[min(e.attempt, len(self.backoff_s) - 1)]
                e.attempt += 1
                return
        route = e.stream.route
        reinit = route is None or not route.resolves_at_open
        if hasattr(e.stream, "hold"):
            e.stream.hold = True  # nothing reaches the ear until the checks pass
        try:
            e.stream.reopen(reinit=reinit)
        except AudioDeviceError as exc:
            e.next_try = now + self.backoff_s[min(e.attempt, len(self.backoff_s) - 1)]
            e.attempt += 1
            log.debug("reopening the %s failed: %s", NOUN[e.kind], exc)
            return
        log.debug("reopened the %s%s", NOUN[e.kind], " after restarting PortAudio" * reinit)
        if reinit:  # the restart reopened the other streams too
            for other in self._entries:
                if other is not e:
                    other.learned = False
        e.state, e.learned = "opening", False
        why = self._learn(e)  # at once: the server shows a stream as soon as it is connected
        if why is not None:
            self._lose(e, why, now)
        elif hasattr(e.stream, "hold"):
            e.stream.hold = False

    # -- the sound server -------------------------------------------------------------------

    def _confirm_stall(self, e: _Entry, why: str, now: float) -> Optional[str]:
        """A server stream that only went quiet: while the server says its device is there and
        the stream on it, a gap up to ``server_stall_s`` is the server's (a PulseAudio null
        sink renders in 2 s blocks while a client asks for a long latency), not a lost device."""
        if e.stream.problem(float("inf"), self.first_s) is not None:
            return why  # it ended or failed: no question
        if e.stream.problem(self.server_stall_s, self.first_s) is not None:
            return why  # silent for too long, whatever the server says
        if now - e.confirmed_at < 1.0:
            return None
        gone = self._server_problem(e)
        if gone is None:
            e.confirmed_at = now
            log.debug("%s quiet (%s) but still on %r: waiting", NOUN[e.kind], why, e.on)
        return gone

    def _wanted(self, e: _Entry) -> Optional[str]:
        """The server device this stream was sent to by name, if any: a server route, or
        ``$PULSE_SOURCE``/``$PULSE_SINK`` for the ``pulse``/``default`` devices."""
        route = e.stream.route
        if route is None:
            return None
        if route.server_name:
            return route.server_name
        if route.name in PLUGIN_DEVICES:
            return os.environ.get(soundserver.ENV[e.kind]) or None
        return None

    def _learn(self, e: _Entry) -> Optional[str]:
        """Find where the server put the stream that just started delivering; the reason to
        reject it (a monitor that only the server's choice of default led to), else None."""
        found = soundserver.stream_place(e.kind, self.pid) if soundserver.pactl_found() else None
        e.server = e.learned = found is not None
        if found is None:
            e.on = e.index = None
            return None
        e.index, e.on = found
        self._subscribe()
        route = e.stream.route
        chosen_by_server = route.name in PLUGIN_DEVICES and self._wanted(e) is None
        return self._monitor_problem(e, e.on) if chosen_by_server else None

    def _monitor_problem(self, e: _Entry, on: str) -> Optional[str]:
        if e.kind == "input" and soundserver.is_monitor_name(on):
            return (f"the sound server put it on {on!r}, a monitor of a sink, which would record "
                    "the agent's own voice")
        return None

    def _server_problem(self, e: _Entry) -> Optional[str]:
        names = soundserver.device_names(e.kind)
        if names is None:
            return None  # no answer: if the server is gone, the stream itself ends
        role = soundserver.ROLE[e.kind]
        if e.on is not None and e.on not in names:
            return f"the sound server's {role} {e.on!r} went away"
        found = soundserver.stream_place(e.kind, self.pid)
        if found is not None and found[1] != e.on:
            was_monitor = e.on is not None and soundserver.is_monitor_name(e.on)
            why = None if was_monitor else self._monitor_problem(e, found[1])
            if why is not None:
                return why
            log.info("the sound server moved the %s to %r", NOUN[e.kind], found[1])
            e.index, e.on = found  # moved by hand (pavucontrol): follow
        return None

    def _subscribe(self) -> None:
        if self._subscription is None and not self._stop.is_set():
            self._subscription = soundserver.Subscription(self._on_server_event).start()

    def _on_server_event(self, what: str, facility: str, index: int) -> None:
        """On pactl's thread: mark the server checks due when a device or one of ours changed."""
        ours = {e.index for e in self._entries if e.index is not None}
        if ((facility in ("source", "sink") and what in ("new", "remove"))
                or (facility in ("source-output", "sink-input") and index in ours)
                or facility == "server"):
            self._server_dirty = True
            self._wake.set()
