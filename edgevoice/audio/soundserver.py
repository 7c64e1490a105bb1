"""The sound server's own sources and sinks (PulseAudio, or PipeWire's pulse server), by name.

Under a sound server PortAudio sees only ALSA's ``pulse`` and ``default`` plugins (plus, on
desktops, the raw ``hw:`` cards the server already holds), so a USB headset cannot be picked from
PortAudio's list. The server's devices are listed with ``pactl`` (``--format=json`` where pactl
has it, PulseAudio 16 and later; else ``pactl info`` and ``pactl list short``), and a stream is
sent to one of them by opening it on the ``pulse`` device with ``PULSE_SOURCE`` / ``PULSE_SINK``
set: the pulse plugin makes a new libpulse context for each PCM it opens, and libpulse reads those
variables then, so the variable is needed only while the stream opens (``routed``).

Nothing here imports sounddevice; ``devices`` decides when to ask (only when a name matches no
PortAudio device, or when listing).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal, Optional

Kind = Literal["input", "output"]

PACTL_TIMEOUT_S = 2.0
ENV = {"input": "PULSE_SOURCE", "output": "PULSE_SINK"}
ROLE = {"input": "source", "output": "sink"}
_env_lock = threading.Lock()  # the environment is process-wide: one stream opens at a time
_SPEC = re.compile(r"(\d+)ch\s+(\d+)Hz")


@dataclass(frozen=True)
class ServerDevice:
    """One source (``kind`` input) or sink (output) of the sound server.

    ``monitor`` marks a source that records what a sink plays (``<sink>.monitor``);
    ``is_default`` the one a stream with no target goes to (``$PULSE_SOURCE``/``$PULSE_SINK``
    when set, as libpulse reads them, else the server's default).
    """

    kind: Kind
    name: str
    description: str
    channels: int
    rate: int
    monitor: bool = False
    is_default: bool = False

    def label(self) -> str:
        """``'name' (description)``, as error messages list it."""
        if self.description and self.description != self.name:
            return f"{self.name!r} ({self.description})"
        return repr(self.name)


@dataclass(frozen=True)
class ServerInfo:
    """The server that answered and its devices, defaults marked."""

    name: str
    version: str
    default_source: str
    default_sink: str
    sources: tuple[ServerDevice, ...]
    sinks: tuple[ServerDevice, ...]

    def devices(self, kind: Kind) -> tuple[ServerDevice, ...]:
        return self.sources if kind == "input" else self.sinks

    def default(self, kind: Kind) -> str:
        """Where the server sends a stream with no target: ``$PULSE_SOURCE``/``$PULSE_SINK`` if
        set (libpulse reads it), else the server's default source/sink."""
        return os.environ.get(ENV[kind]) or (
            self.default_source if kind == "input" else self.default_sink)

    def describe(self) -> str:
        return f"{self.name} {self.version}".strip()


def pactl_found() -> bool:
    return shutil.which("pactl") is not None


def _pactl(*args: str) -> Optional[str]:
    """pactl's stdout, or None when pactl is missing, fails or hangs (no server answers)."""
    env = dict(os.environ, LC_ALL="C")  # the text fallback parses English field names
    try:
        out = subprocess.run(["pactl", *args], env=env, stdin=subprocess.DEVNULL,
                             capture_output=True, text=True, timeout=PACTL_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 else None


def _spec(text: str) -> tuple[int, int]:
    """(channels, rate) from a sample specification such as ``s16le 2ch 44100Hz``."""
    found = _SPEC.search(text or "")
    return (int(found.group(1)), int(found.group(2))) if found else (0, 0)


def _is_monitor(entry: dict[str, Any]) -> bool:
    props = entry.get("properties") or {}
    # pactl 16 writes a source's "monitor of sink" under the key monitor_source
    of = entry.get("monitor_of_sink") or entry.get("monitor_source") or ""
    return (props.get("device.class") == "monitor" or of not in ("", "n/a")
            or str(entry.get("name", "")).endswith(".monitor"))


def _from_json(kind: Kind, entries: list[dict[str, Any]], default: str) -> list[ServerDevice]:
    default = os.environ.get(ENV[kind]) or default
    found = []
    for e in (e for e in entries if isinstance(e, dict)):
        channels, rate = _spec(str(e.get("sample_specification", "")))
        name = str(e.get("name", ""))
        found.append(ServerDevice(
            kind, name, str(e.get("description") or ""), channels, rate,
            monitor=kind == "input" and _is_monitor(e), is_default=name == default,
        ))
    return found


def _from_short(kind: Kind, text: str, default: str) -> list[ServerDevice]:
    """``pactl list short``: index, name, driver, sample spec, state (tab-separated)."""
    default = os.environ.get(ENV[kind]) or default
    found = []
    for line in text.splitlines():
        cols = line.split("\t")
        if len(cols) < 4:
            continue
        channels, rate = _spec(cols[3])
        found.append(ServerDevice(kind, cols[1], "", channels, rate,
                                  monitor=kind == "input" and cols[1].endswith(".monitor"),
                                  is_default=cols[1] == default))
    return found


def _query_json() -> Optional[ServerInfo]:
    try:
        info = json.loads(_pactl("--format=json", "info") or "")
        lists = [json.loads(_pactl("--format=json", "list", what) or "")
                 for what in ("sources", "sinks")]
    except ValueError:  # no server, a pactl without --format, or output that is not JSON
        return None
    if not isinstance(info, dict) or not all(isinstance(x, list) for x in lists):
        return None
    dsource = str(info.get("default_source_name", ""))
    dsink = str(info.get("default_sink_name", ""))
    return ServerInfo(str(info.get("server_name", "")), str(info.get("server_version", "")),
                      dsource, dsink, tuple(_from_json("input", lists[0], dsource)),
                      tuple(_from_json("output", lists[1], dsink)))


def _query_text() -> Optional[ServerInfo]:
    text = _pactl("info")
    if text is None:
        return None
    fields = dict(line.split(": ", 1) for line in text.splitlines() if ": " in line)
    dsource, dsink = fields.get("Default Source", ""), fields.get("Default Sink", "")
    lists = [_pactl("list", "short", what) or "" for what in ("sources", "sinks")]
    return ServerInfo(fields.get("Server Name", ""), fields.get("Server Version", ""),
                      dsource, dsink, tuple(_from_short("input", lists[0], dsource)),
                      tuple(_from_short("output", lists[1], dsink)))


def query_server() -> Optional[ServerInfo]:
    """The running sound server's sources and sinks; None without pactl or a server."""
    if not pactl_found():
        return None
    return _query_json() or _query_text()


def match(spec: str, devices: tuple[ServerDevice, ...]) -> list[ServerDevice]:
    """Devices ``spec`` names: its exact name, else a case-insensitive part of its name or
    description; monitors only when no real source matches (or by their exact name)."""
    exact = [d for d in devices if d.name == spec]
    if exact:
        return exact
    want = spec.lower()
    found = [d for d in devices if want in d.name.lower() or want in d.description.lower()]
    real = [d for d in found if not d.monitor]
    return real or found


@contextmanager
def routed(kind: Kind, name: Optional[str]) -> Iterator[None]:
    """Send the streams opened inside this block to the server's source/sink ``name``; with
    None, open them where the environment says, but never while another block changed it."""
    var = ENV[kind]
    with _env_lock:
        before = os.environ.get(var)
        if name is not None:
            os.environ[var] = name
        try:
            yield
        finally:
            if name is not None:
                if before is None:
                    os.environ.pop(var, None)
                else:
                    os.environ[var] = before


# -- where our own streams are, and the server's events (devices that come and go) -------------
# When a source or sink goes away, the server moves its streams elsewhere (often to a sink's
# monitor: the agent would hear itself) instead of ending them, so PortAudio sees nothing wrong.
# ``edgevoice.audio.watch`` asks here which device a stream of this process is on and whether the
# one it should be on still exists, and follows ``pactl subscribe`` to ask again when it changes.

STREAMS = {"input": "source-outputs", "output": "sink-inputs"}
_STREAM_HEAD = re.compile(r"^(?:Source Output|Sink Input) #(\d+)")
_STREAM_DEVICE = re.compile(r"^\s+(?:Source|Sink): (\d+)\s*$")
_STREAM_PID = re.compile(r'^\s+application\.process\.id = "(\d+)"')
_EVENT = re.compile(r"^Event '(\w+)' on ([\w-]+) #(\d+)")


def parse_short_names(text: str) -> dict[int, str]:
    """``pactl list short sources|sinks``: index -> name."""
    names = {}
    for line in text.splitlines():
        cols = line.split("\t")
        if len(cols) >= 2 and cols[0].strip().isdigit():
            names[int(cols[0])] = cols[1]
    return names


def parse_streams(text: str) -> list[tuple[int, int, Optional[int]]]:
    """``pactl list source-outputs|sink-inputs``: (stream index, device index, client pid)."""
    found: list[list[Optional[int]]] = []
    for line in text.splitlines():
        if (head := _STREAM_HEAD.match(line)) is not None:
            found.append([int(head.group(1)), None, None])
        elif found and (dev := _STREAM_DEVICE.match(line)) is not None:
            found[-1][1] = int(dev.group(1))
        elif found and (pid := _STREAM_PID.match(line)) is not None:
            found[-1][2] = int(pid.group(1))
    return [(s[0], s[1], s[2]) for s in found if s[0] is not None and s[1] is not None]


def device_names(kind: Kind) -> Optional[set[str]]:
    """The names of the server's sources (input) or sinks (output); None when no server answers."""
    text = _pactl("list", "short", ROLE[kind] + "s")
    return None if text is None else set(parse_short_names(text).values())


def stream_place(kind: Kind, pid: int) -> Optional[tuple[int, str]]:
    """(stream index, source or sink name) of process ``pid``'s newest recording (input) or
    playback (output) stream on the server; None when it has none there (a stream that does not
    go through the server) or no server answers."""
    streams = _pactl("list", STREAMS[kind])
    names = _pactl("list", "short", ROLE[kind] + "s")
    if streams is None or names is None:
        return None
    ours = [(index, device) for index, device, owner in parse_streams(streams) if owner == pid]
    if not ours:
        return None
    index, device = max(ours)
    name = parse_short_names(names).get(device)
    return None if name is None else (index, name)


def is_monitor_name(name: str) -> bool:
    """A source that records what a sink plays (PulseAudio and PipeWire name them so)."""
    return name.endswith(".monitor")


def parse_event(line: str) -> Optional[tuple[str, str, int]]:
    """One ``pactl subscribe`` line as (what happened, facility, index), e.g.
    ``('remove', 'source', 3)``; None for anything else."""
    found = _EVENT.match(line.strip())
    return None if found is None else (found.group(1), found.group(2), int(found.group(3)))


class Subscription:
    """``pactl subscribe`` on its own thread: ``on_event(what, facility, index)`` for each event
    the server reports. Restarted (every ``retry_s``) when pactl exits, e.g. after the server
    restarted; ``close()`` ends it. Idle costs nothing: pactl blocks until something changes."""

    def __init__(self, on_event, retry_s: float = 2.0) -> None:
        self.on_event = on_event
        self.retry_s = retry_s
        self._proc: Optional[subprocess.Popen[str]] = None
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="edgevoice-pactl", daemon=True)

    def start(self) -> Subscription:
        self._thread.start()
        return self

    def _run(self) -> None:
        env = dict(os.environ, LC_ALL="C")
        while not self._closed.is_set():
            try:
                with self._lock:
                    if self._closed.is_set():
                        return
                    self._proc = subprocess.Popen(
                        ["pactl", "subscribe"], env=env, stdin=subprocess.DEVNULL,
                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
                assert self._proc.stdout is not None
                for line in self._proc.stdout:
                    event = parse_event(line)
                    if event is not None:
                        self.on_event(*event)
                self._proc.wait()
            except OSError:
                pass
            self.on_event("lost", "server", -1)  # pactl ended: the server may have gone
            self._closed.wait(self.retry_s)

    def close(self) -> None:
        with self._lock:
            self._closed.set()
            proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(2)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(2)
