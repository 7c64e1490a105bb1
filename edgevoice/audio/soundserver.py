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
