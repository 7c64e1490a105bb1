"""Audio devices: listing, resolving, a microphone and a speaker over PortAudio.

This is the only module that imports ``sounddevice``, and only lazily, so that the rest of the
project (and ``import edgevoice.audio.devices``) works on machines without PortAudio.

PortAudio callbacks here only copy: the input callback hands each block to a queue and the
consumer (``Microphone.read``) down-mixes and resamples; the output callback copies from a bounded
ring buffer filled by ``Speaker.write`` and plays silence on underrun. Note that PortAudio
enumerates devices once, when it starts: a device plugged in later is seen only after
``reinitialize()``, which closes and reopens our streams around a PortAudio restart.

Both streams report their health (``problem()``: the stream ended, or no callback for a while)
and can be reopened on the spec they were configured with (``reopen()``);
``edgevoice.audio.watch`` decides when.

A name no PortAudio device has may name one of the sound server's sources or sinks (PulseAudio or
PipeWire, listed with pactl): the stream then opens on PortAudio's ``pulse`` device, sent there
by ``soundserver.routed`` (see ``resolve_route``).
"""

from __future__ import annotations

import queue
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType, TracebackType
from typing import Any, Literal

import numpy as np

from edgevoice.audio import soundserver
from edgevoice.audio.format import AudioChunk
from edgevoice.audio.resample import StreamResampler, to_mono
from edgevoice.errors import AudioDeviceError

Kind = Literal["input", "output"]

_LIST_HINT = "list them with `edgevoice devices`"
_sd_module: ModuleType | None = None
# Opening, closing and reopening streams, and restarting PortAudio, happen one at a time.
_pa_lock = threading.RLock()
_open_streams: weakref.WeakSet[Microphone | Speaker] = weakref.WeakSet()
# ALSA plugin devices that look their target up each time a stream opens (the sound server's
# own source or sink, ALSA's default): restarting PortAudio cannot change what they reach.
PLUGIN_DEVICES = ("pulse", "pipewire", "default")


def _sd() -> ModuleType:
    """Import sounddevice on first use, turning a missing library into a fixable error."""
    global _sd_module
    if _sd_module is None:
        from edgevoice.audio.native_log import alsa_messages_held

        try:
            with alsa_messages_held():  # ALSA's chatter goes to logging, from PortAudio's start
                import sounddevice
        except OSError as exc:  # sounddevice raises OSError when libportaudio is absent
            raise AudioDeviceError(
                "PortAudio library not found: install it with `sudo apt-get install libportaudio2`"
                " (or your system's PortAudio package)."
            ) from exc
        except ImportError as exc:
            raise AudioDeviceError(
                "The Python package sounddevice is missing: install it with "
                "`pip install sounddevice`."
            ) from exc
        _sd_module = sounddevice
    return _sd_module


@dataclass(frozen=True)
class DeviceInfo:
    """One PortAudio device, as ``edgevoice devices`` shows it."""

    index: int
    name: str
    hostapi: str
    max_input_channels: int
    max_output_channels: int
    default_samplerate: float
    is_default_input: bool
    is_default_output: bool


def _default_indices(sd: ModuleType) -> tuple[int, int]:
    """PortAudio's default (input, output) indices; -1 where there is none."""
    try:
        pair = sd.default.device
        return int(pair[0]), int(pair[1])
    except (sd.PortAudioError, TypeError, ValueError):
        return -1, -1


def list_devices() -> list[DeviceInfo]:
    """All devices PortAudio found (at process start), with the defaults marked."""
    sd = _sd()
    hostapis = [h["name"] for h in sd.query_hostapis()]
    din, dout = _default_indices(sd)
    return [
        DeviceInfo(
            index=int(d["index"]),
            name=str(d["name"]),
            hostapi=hostapis[d["hostapi"]] if 0 <= d["hostapi"] < len(hostapis) else "?",
            max_input_channels=int(d["max_input_channels"]),
            max_output_channels=int(d["max_output_channels"]),
            default_samplerate=float(d["default_samplerate"]),
            is_default_input=int(d["index"]) == din,
            is_default_output=int(d["index"]) == dout,
        )
        for d in sd.query_devices()
    ]


def _channels(d: DeviceInfo, kind: Kind) -> int:
    return d.max_input_channels if kind == "input" else d.max_output_channels


def _describe(devices: list[DeviceInfo]) -> str:
    return ", ".join(f"#{d.index} {d.name!r}" for d in devices) or "none"


@dataclass(frozen=True)
class Route:
    """Where a stream opens: a PortAudio device and, through ALSA's pulse plugin, maybe one of
    the sound server's sources or sinks (``server``; None: wherever the device itself goes)."""

    index: int
    name: str
    server: soundserver.ServerDevice | None = None

    @property
    def server_name(self) -> str | None:
        return None if self.server is None else self.server.name

    @property
    def resolves_at_open(self) -> bool:
        """True when the device finds its target anew at each open (a sound-server route, ALSA's
        ``default``): a PortAudio restart would not change what it reaches."""
        return self.server is not None or self.name in PLUGIN_DEVICES


def _pulse_device(usable: list[DeviceInfo]) -> DeviceInfo | None:
    return next((d for d in usable if d.name == "pulse"), None)


def server_devices(devices: list[DeviceInfo] | None = None) -> soundserver.ServerInfo | None:
    """The sound server's sources and sinks, when PortAudio can reach them (it has ALSA's
    ``pulse`` device) and a PulseAudio-compatible server answers ``pactl``; else None."""
    devices = list_devices() if devices is None else devices
    if not any(d.name == "pulse" for d in devices):
        return None
    return soundserver.query_server()


def resolve_device(spec: int | str | None, kind: Kind) -> int:
    """The PortAudio index a stream for ``spec`` opens on (see ``resolve_route``)."""
    return resolve_route(spec, kind).index


def resolve_route(spec: int | str | None, kind: Kind) -> Route:
    """Turn a device index, exact name or name substring into a ``Route``.

    PortAudio's devices are matched first; a name none of them has is then looked up among the
    sound server's sources (input) or sinks (output), reached through PortAudio's ``pulse``
    device. ``None`` means the system default. Errors name the candidates so the user can pick.
    """
    devices = list_devices()
    usable = [d for d in devices if _channels(d, kind) > 0]
    no_device = AudioDeviceError(
        f"No audio {kind} device found: check that PulseAudio or PipeWire is running "
        "(`pactl info`) or that ALSA sees a sound card (`aplay -l`, `arecord -l`), "
        f"then {_LIST_HINT}."
    )
    if not usable:  # asked for by index or name, but there is nothing to choose from
        raise no_device
    if spec is None:
        default = next((d for d in usable if getattr(d, f"is_default_{kind}")), None)
        if default is None:
            raise no_device
        return Route(default.index, default.name)
    if isinstance(spec, str) and spec.strip().isdigit():
        spec = int(spec.strip())
    if isinstance(spec, int):
        found = next((d for d in usable if d.index == spec), None)
        if found is not None:
            return Route(found.index, found.name)
        raise AudioDeviceError(
            f"Audio device #{spec} is not an available {kind} device: choose one of "
            f"{_describe(usable)} ({_LIST_HINT})."
        )
    matches = [d for d in usable if d.name == spec]
    if not matches:
        matches = [d for d in usable if spec.lower() in d.name.lower()]
    if len(matches) > 1:  # the same device often appears once per host API: prefer the default's
        default_api = next((d.hostapi for d in usable if getattr(d, f"is_default_{kind}")), None)
        preferred = [d for d in matches if d.hostapi == default_api]
        if len(preferred) == 1:
            matches = preferred
    if len(matches) == 1:
        return Route(matches[0].index, matches[0].name)
    if matches:
        raise AudioDeviceError(
            f"Audio {kind} device name {spec!r} is ambiguous: it matches {_describe(matches)}; "
            f"use the index or a longer name ({_LIST_HINT})."
        )
    return _server_route(spec, kind, usable)


def _server_route(spec: str, kind: Kind, usable: list[DeviceInfo]) -> Route:
    """``spec`` among the sound server's devices, or the error that lists every candidate."""
    role = soundserver.ROLE[kind]
    pulse = _pulse_device(usable)
    info = soundserver.query_server() if pulse is not None else None
    candidates = info.devices(kind) if info is not None else ()
    found = soundserver.match(spec, candidates)
    if pulse is not None and len(found) == 1:
        return Route(pulse.index, pulse.name, found[0])
    if found:
        names = ", ".join(d.label() for d in found)
        raise AudioDeviceError(
            f"Audio {kind} device name {spec!r} is ambiguous: it matches the sound server's "
            f"{role}s {names}; use a longer name ({_LIST_HINT})."
        )
    also = ""
    if candidates:
        also = f", or the sound server's {role}s " + ", ".join(d.label() for d in candidates)
    elif pulse is not None and info is None and not soundserver.pactl_found():
        also = (f"; to pick the sound server's own {role}s (e.g. a USB headset) by name, "
                "install pactl (`sudo apt-get install pulseaudio-utils`)")
    raise AudioDeviceError(
        f"No audio {kind} device matches {spec!r}: choose one of {_describe(usable)}{also} "
        f"({_LIST_HINT})."
    )


def reinitialize() -> None:
    """Restart PortAudio so that it enumerates the devices again (it does so only when it starts).

    ``Pa_Terminate`` closes every open stream, so ours are closed first and reopened after, each
    on the spec it was configured with (a device's index may differ now); one that cannot reopen
    says why through its ``problem()``. Relies on sounddevice's ``_terminate``/``_initialize``.
    """
    from edgevoice.audio.native_log import alsa_messages_held

    sd = _sd()
    with _pa_lock:
        reopen = [s for s in list(_open_streams) if s._stream is not None]
        for stream in reopen:
            stream._close_stream()
        try:
            with alsa_messages_held():  # the devices PortAudio probes make ALSA talk
                while getattr(sd, "_initialized", 0) > 0:
                    sd._terminate()
                sd._initialize()
        except sd.PortAudioError as exc:
            raise AudioDeviceError(f"Cannot restart PortAudio to look for devices again ({exc}): "
                                   "restart edgevoice.") from exc
        for stream in reopen:
            try:
                stream._open_stream()
            except AudioDeviceError as exc:
                stream._failure = str(exc)


def _open_error(kind: Kind, index: int, name: str, exc: Exception) -> AudioDeviceError:
    return AudioDeviceError(
        f"Cannot open audio {kind} device #{index} {name!r} ({exc}): close other programs that "
        f"use it or choose another device ({_LIST_HINT})."
    )


def _start_stream(sd: ModuleType, kind: Kind, index: int, name: str, **settings: Any) -> Any:
    """Open and start an int16 PortAudio stream; failures name the device and the fix."""
    cls = sd.InputStream if kind == "input" else sd.OutputStream
    try:
        stream = cls(device=index, dtype="int16", **settings)
        stream.start()
    except (sd.PortAudioError, ValueError) as exc:
        raise _open_error(kind, index, name, exc) from exc
    return stream


def _pick_settings(sd: ModuleType, kind: Kind, index: int, rate: int) -> tuple[int, int, str]:
    """Find (device rate, channels) the device accepts, preferring ``rate`` and mono."""
    info = sd.query_devices(index)
    native = int(info["default_samplerate"])
    maxch = int(info[f"max_{kind}_channels"])
    check = sd.check_input_settings if kind == "input" else sd.check_output_settings
    last: Exception | None = None
    for channels in dict.fromkeys((1, min(2, maxch))):
        for dev_rate in dict.fromkeys((rate, native)):
            try:
                check(device=index, channels=channels, dtype="int16", samplerate=dev_rate)
            except (sd.PortAudioError, ValueError) as exc:
                last = exc
                continue
            return dev_rate, channels, str(info["name"])
    raise _open_error(kind, index, str(info["name"]), last or ValueError("no usable settings"))


def _mono_time(time_info: Any, attr: str, now: float) -> float:
    """Map a PortAudio stream timestamp onto ``time.monotonic()``; ``now`` if it is missing."""
    stamp = getattr(time_info, attr, 0.0)
    current = getattr(time_info, "currentTime", 0.0)
    return now + (stamp - current) if stamp and current else now


def _has_time(time_info: Any, attr: str) -> bool:
    """Whether PortAudio filled in this timestamp (some backends leave them all zero)."""
    return bool(getattr(time_info, attr, 0.0) and getattr(time_info, "currentTime", 0.0))


def _shut(stream: Any) -> None:
    """Abort and close a stream that may have died already (PortAudio then reports errors)."""
    sd = _sd()
    for step in (stream.abort, stream.close):
        try:
            step()
        except sd.PortAudioError:
            pass


class _Restart:
    """Queued ahead of a reopened stream's first block: the reader switches to its resampler and
    moves the timeline past the gap."""

    __slots__ = ("resampler",)

    def __init__(self, resampler: StreamResampler) -> None:
        self.resampler = resampler



def _stalled(opened_at: float, last: float | None, first_s: float, stall_s: float,
             what: str) -> str | None:
    """Why a stream that should be flowing is not (``what``: "no audio"), or None while fine.

    A device may take a while to start (PulseAudio's null sinks: 2 s), hence ``first_s``.
    """
    now = time.monotonic()
    if now - opened_at < first_s:
        return None
    if last is None:
        return f"{what} within {now - opened_at:.1f} s of opening it"
    return f"{what} for {now - last:.1f} s" if now - last > stall_s else None

CLOCK_JUMP_S = 0.015  # ADC times jitter by ~7 ms through ALSA's pulse plugin; a lost block is 30
CLOCK_NUDGE = 0.01


class Microphone:
    """Mono 16-bit capture at ``rate`` in ``block_ms`` chunks, whatever the device's own rate.

    ``start_ms`` of each chunk counts delivered samples, so the timeline has no gaps while the
    stream runs; ``start_time`` is the ``time.monotonic()`` at which sample 0 was captured, to
    relate the two. After ``reopen()`` the timeline skips the time the device was away (it stays
    on the clock) and ``restarts`` counts up, so a reader can drop an utterance cut in two.
    """

    def __init__(
        self,
        device: int | str | None = None,
        rate: int = 16000,
        block_ms: int = 30,
        max_queue_ms: int = 2000,
        latency: float | str = "low",
    ) -> None:
        self.spec = device
        self.rate = rate
        self.block_ms = block_ms
        self.latency = latency
        self.block_frames = rate * block_ms // 1000
        self._max_blocks = max(2, max_queue_ms // block_ms)
        # (block, ADC time of its first sample) from the callback; a _Restart; None at close
        self._queue: queue.SimpleQueue[tuple[np.ndarray, float] | _Restart | None] = \
            queue.SimpleQueue()
        self._stream: Any = None
        self._closed = False
        self._overflows = 0
        self._pending = np.zeros(0, dtype=np.int16)
        self._emitted = 0
        self.route: Route | None = None  # set by open(): the device and sound-server source
        self.device: int | None = None
        self.device_name = ""
        self.device_rate = rate
        self.channels = 1
        self.start_time: float | None = None
        self.restarts = 0  # streams reopened so far
        self.hold = False  # True: blocks are counted but not queued (a stream not trusted yet)
        self._resampler = StreamResampler(rate, rate)
        self._gen = 0  # which stream the finished callback belongs to
        self._ended = False  # the current stream stopped by itself (PortAudio's finished callback)
        self._failure: str | None = None  # why reinitialize() could not reopen it
        self._opened_at = 0.0
        self._last_block: float | None = None  # time.monotonic() of the latest callback
        self._stream_t0: float | None = None  # capture time of the current stream's first sample
        self._resync = False
        # Whether PortAudio gives the input ADC time (None until the first block): echo
        # cancellation lines the speaker's audio up with the microphone's by it.
        self.timed: bool | None = None
        # Capture time (monotonic) of the first sample of the chunk read() returned last: unlike
        # start_ms it stays true when blocks were lost (overflows). A straight line through the
        # blocks' ADC times (which jitter by several ms): sample i was captured at
        # _clock + i / rate; a block that lands over CLOCK_JUMP_S off it (blocks were lost)
        # moves the line to it, smaller differences nudge it (clock drift).
        self.chunk_time: float | None = None
        self._clock: float | None = None
        self._produced = 0  # resampled samples appended to _pending since the last restart
        self._taken = 0  # of those, handed out

    def open(self) -> Microphone:
        """Open and start the input stream; errors say which device failed and what to do."""
        if self._stream is None:
            with _pa_lock:
                self._open_stream()
        return self

    def _open_stream(self) -> None:
        """Resolve the spec again and start a stream on it (``_pa_lock`` held)."""
        sd = _sd()
        route = resolve_route(self.spec, "input")
        with soundserver.routed("input", route.server_name):
            rate, channels, name = _pick_settings(sd, "input", route.index, self.rate)
            resampler = StreamResampler(rate, self.rate)
            if self.route is None:
                self._resampler = resampler
            else:  # a reopened stream: the reader switches over at this mark
                self._queue.put(_Restart(resampler))
            self._gen += 1
            gen = self._gen
            self._ended, self._failure, self._last_block, self._stream_t0 = False, None, None, None
            self._opened_at = time.monotonic()
            self._stream = _start_stream(
                sd, "input", route.index, name, samplerate=rate, channels=channels,
                blocksize=rate * self.block_ms // 1000, latency=self.latency,
                callback=self._callback, finished_callback=lambda: self._finished(gen),
            )
        self.route, self.device, self.device_name = route, route.index, name
        self.device_rate, self.channels = rate, channels
        _open_streams.add(self)

    def _finished(self, gen: int) -> None:
        if gen == self._gen:  # not one we closed ourselves
            self._ended = True

    def _close_stream(self) -> None:
        stream, self._stream = self._stream, None
        self._gen += 1
        if stream is not None:
            _shut(stream)

    def suspend(self) -> None:
        """Stop capturing (the device is gone, or the server moved the stream elsewhere) until
        ``reopen()``; reads return None meanwhile."""
        with _pa_lock:
            self._close_stream()

    def reopen(self, reinit: bool = False) -> None:
        """Close the stream and open the configured device again, by the same name or index;
        ``reinit`` restarts PortAudio first, so a device that appeared since is found. Raises
        ``AudioDeviceError`` while it cannot be opened."""
        with _pa_lock:
            if self._closed:
                return
            self._close_stream()
            if reinit:
                reinitialize()
            self._open_stream()

    def problem(self, stall_s: float = 1.0, first_s: float = 5.0) -> str | None:
        """Why the stream is not delivering (a few words), or None while it is: it stopped, or
        no block came for ``stall_s`` (counted from ``first_s`` after opening). None once closed."""
        if self._closed:
            return None
        if self._failure is not None:
            return self._failure
        stream = self._stream
        if stream is None:
            return "the input stream is closed"
        if self._ended or not stream.active:
            return "the input stream stopped"
        return _stalled(self._opened_at, self._last_block, first_s, stall_s, "no audio")

    @property
    def delivering(self) -> bool:
        """A block arrived since the stream was (re)opened."""
        return self._stream is not None and self._last_block is not None

    def _callback(self, indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        # Runs on PortAudio's thread: copy and count, nothing else.
        now = time.monotonic()
        self._last_block = now
        if self.hold:
            return
        if self._stream_t0 is None:
            self.timed = _has_time(time_info, "inputBufferAdcTime")
            self._stream_t0 = _mono_time(time_info, "inputBufferAdcTime", now)
            if self.start_time is None:
                self.start_time = self._stream_t0
        if status.input_overflow:
            self._overflows += 1
        if self._queue.qsize() >= self._max_blocks:
            self._overflows += 1  # the reader is too slow: drop rather than grow without bound
            return
        self._queue.put_nowait((indata.copy(), _mono_time(time_info, "inputBufferAdcTime", now)))

    @property
    def overflows(self) -> int:
        """Blocks lost or damaged: PortAudio input overflows plus blocks dropped (slow reader)."""
        return self._overflows

    @property
    def active(self) -> bool:
        """False once closed or when the device stopped delivering (e.g. it vanished)."""
        return self._stream is not None and bool(self._stream.active)

    def read(self, timeout: float | None = None) -> AudioChunk | None:
        """The next ``block_ms`` chunk, or None on timeout or after ``close()``."""
        if self._stream is None and not self._closed and self.route is None:
            raise RuntimeError("Microphone.read() before open()")
        deadline = None if timeout is None else time.monotonic() + timeout
        while len(self._pending) < self.block_frames:
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                block = self._queue.get(timeout=wait)
            except queue.Empty:
                return None
            if block is None:
                self._queue.put(None)  # keep later reads returning at once
                return None
            if isinstance(block, _Restart):
                self._pending = np.zeros(0, dtype=np.int16)
                self._clock, self._produced, self._taken = None, 0, 0
                self._resampler = block.resampler
                self._resync = True
                self.restarts += 1
                continue
            if self._resync:  # the first block since reopening: skip the time the device was away
                self._resync = False
                t0, origin = self._stream_t0, self.start_time
                if t0 is not None and origin is not None:
                    self._emitted = max(self._emitted, round((t0 - origin) * self.rate))
            block, adc = block
            mono = to_mono(block) if block.shape[1] > 1 else block[:, 0]
            fresh = self._resampler.process(mono)
            self._track_clock(adc)
            self._produced += len(fresh)
            self._pending = np.concatenate((self._pending, fresh))
        out = self._pending[: self.block_frames]
        self._pending = self._pending[self.block_frames :]
        self.chunk_time = None if self._clock is None else self._clock + self._taken / self.rate
        self._taken += self.block_frames
        start_ms = 1000.0 * self._emitted / self.rate
        self._emitted += self.block_frames
        return AudioChunk.from_samples(out, self.rate, start_ms)

    def _track_clock(self, adc: float) -> None:
        """Fit the capture clock to a block whose first sample was captured at ``adc``."""
        base = adc - self._produced / self.rate
        if self._clock is None or abs(base - self._clock) > CLOCK_JUMP_S:
            self._clock = base
        else:
            self._clock += CLOCK_NUDGE * (base - self._clock)

    def close(self) -> None:
        """Stop the stream; safe to call twice. Blocked readers get None."""
        if self._closed:
            return
        with _pa_lock:
            self._closed = True
            _open_streams.discard(self)
            self._close_stream()
        self._queue.put(None)

    def __enter__(self) -> Microphone:
        return self.open()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


@dataclass(frozen=True)
class PlayedBlock:
    """Audio the speaker sent out (silence included): the far-end reference for echo cancelling.

    ``time`` is the ``time.monotonic()`` estimate of when its first sample reached the DAC.
    """

    time: float
    samples: np.ndarray
    rate: int


class Speaker:
    """Plays ``AudioChunk``s through a bounded buffer; ``clear()`` silences it at once.

    One thread writes (``write``/``drain``); any thread may ``clear()``. Incoming chunks are
    down-mixed and resampled to the device rate in ``write``, never in the callback. The last
    ``history_s`` seconds of what was played are kept with timestamps (see ``played``).
    ``on_play_start(t)`` runs on the audio thread (keep it trivial) each time real audio starts
    after the buffer ran dry; ``t`` is the estimated ``time.monotonic()`` at the DAC.

    ``latency`` defaults to 100 ms because ALSA's pulse plugin (how PortAudio reaches PulseAudio
    and PipeWire) underruns continuously at PortAudio's "low" (~40 ms) on a busy 2-core machine;
    ``clear()`` flushes the device buffer, so barge-in does not pay for it.
    """

    def __init__(
        self,
        device: int | str | None = None,
        rate: int = 22050,
        buffer_ms: int = 2000,
        block_ms: int = 20,
        history_s: float = 10.0,
        on_play_start: Callable[[float], None] | None = None,
        latency: float | str = 0.1,
    ) -> None:
        self.spec = device
        self.rate = rate
        self.buffer_ms = buffer_ms
        self.block_ms = block_ms
        self.history_s = history_s
        self.on_play_start = on_play_start
        self.latency = latency
        self.route: Route | None = None  # set by open(): the device and sound-server sink
        self.device: int | None = None
        self.device_name = ""
        self.device_rate = rate
        self.channels = 1
        self.last_play_start: float | None = None
        self._stream: Any = None
        self._closed = False
        self._cond = threading.Condition(threading.Lock())  # guards ring + history; short holds
        self._stream_lock = threading.Lock()  # start/abort/close, never taken by the callback
        self._error: AudioDeviceError | None = None
        self._ring = np.zeros(0, dtype=np.int16)
        self._rpos = 0
        self._avail = 0
        self._gen = 0
        self._idle = True
        self._audio_end = 0.0  # monotonic time the last real sample handed out leaves the DAC
        self._underflows = 0
        self._resampler: tuple[int, int, StreamResampler] | None = None  # (gen, from_rate, rs)
        self._hist = np.zeros(0, dtype=np.int16)
        self._hist_total = 0
        self._meta = np.zeros((0, 3), dtype=np.float64)  # per block: time, first sample, frames
        self._meta_total = 0
        self.restarts = 0  # streams reopened so far
        self._down = False  # suspended: writes are dropped until reopen()
        self._failure: str | None = None  # why reinitialize() could not reopen it
        self._opened_at = 0.0
        self._last_callback: float | None = None  # time.monotonic() of the latest callback
        self.timed: bool | None = None  # PortAudio gives the DAC time (None: no callback yet)

    def open(self) -> Speaker:
        """Open and start the output stream (it plays silence until something is written)."""
        if self._stream is None:
            with _pa_lock:
                self._open_stream()
        return self

    def _open_stream(self) -> None:
        """Resolve the spec again and start a stream on it (``_pa_lock`` held)."""
        sd = _sd()
        route = resolve_route(self.spec, "output")
        index = route.index
        # The sink is read once, when the stream opens: clear()'s abort/start keeps it.
        with soundserver.routed("output", route.server_name):
            rate, channels, name = _pick_settings(sd, "output", index, self.rate)
            block = max(1, rate * self.block_ms // 1000)
            with self._cond:
                if rate != self.device_rate or not len(self._ring):
                    self._ring = np.zeros(max(block, rate * self.buffer_ms // 1000), np.int16)
                    self._hist = np.zeros(max(block, int(rate * self.history_s)), np.int16)
                    self._meta = np.zeros((len(self._hist) // block + 1, 3), dtype=np.float64)
                    self._rpos = self._avail = self._hist_total = self._meta_total = 0
                self.device_rate, self.channels, self.device_name = rate, channels, name
                self.device = index
            self._failure, self._error, self._last_callback = None, None, None
            self._opened_at = time.monotonic()
            with self._stream_lock:
                self._stream = _start_stream(
                    sd, "output", index, name, samplerate=rate, channels=channels,
                    blocksize=block, latency=self.latency, callback=self._callback,
                )
        if self.route is not None:
            self.restarts += 1
        self.route = route
        self._down = False
        _open_streams.add(self)

    def _close_stream(self) -> None:
        with self._stream_lock:
            stream, self._stream = self._stream, None
            if stream is not None:
                _shut(stream)
        self._idle = True
        self._audio_end = 0.0

    def suspend(self) -> None:
        """Stop playing (the device is gone, or the server moved the stream to another sink):
        what is queued is dropped, and so is what is written until ``reopen()``."""
        with _pa_lock:
            self._down = True
            with self._cond:
                self._avail = 0
                self._gen += 1
                self._cond.notify_all()
            self._close_stream()

    def reopen(self, reinit: bool = False) -> None:
        """Open the configured device again, by the same name or index (``reinit``: restart
        PortAudio first, so a device that appeared since is found); queued audio is dropped.
        Raises ``AudioDeviceError`` while it cannot be opened."""
        with _pa_lock:
            if self._closed:
                return
            self.suspend()
            if reinit:
                reinitialize()
            self._open_stream()

    def problem(self, stall_s: float = 1.0, first_s: float = 5.0) -> str | None:
        """Why the stream is not playing (a few words), or None while it is: it stopped or
        failed, or no callback came for ``stall_s`` (counted from ``first_s`` after opening)."""
        if self._closed:
            return None
        if self._failure is not None:
            return self._failure
        if self._error is not None:
            return str(self._error)
        with self._stream_lock:  # clear() aborts and restarts it: not a failure
            stream = self._stream
            if stream is None:
                return "the output stream is closed"
            if not stream.active:
                return "the output stream stopped"
        return _stalled(self._opened_at, self._last_callback, first_s, stall_s,
                        "it pulled no audio")

    @property
    def delivering(self) -> bool:
        """The device asked for audio since the stream was (re)opened."""
        return self._stream is not None and self._last_callback is not None

    # -- audio thread -------------------------------------------------------------------------

    def _callback(self, outdata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        now = self._last_callback = time.monotonic()
        dac = _mono_time(time_info, "outputBufferDacTime", now)
        if self.timed is None:
            self.timed = _has_time(time_info, "outputBufferDacTime")
        out = outdata[:, 0]
        with self._cond:
            n = min(frames, self._avail)
            if n:
                first = min(n, len(self._ring) - self._rpos)
                out[:first] = self._ring[self._rpos : self._rpos + first]
                out[first:n] = self._ring[: n - first]
                self._rpos = (self._rpos + n) % len(self._ring)
                self._avail -= n
                self._cond.notify_all()
            out[n:] = 0
            self._keep(out, dac)
        if status.output_underflow:
            self._underflows += 1
        if self.channels > 1:
            outdata[:, 1:] = outdata[:, :1]
        if n:
            self._audio_end = dac + n / self.device_rate
            if self._idle:
                self._idle = False
                self.last_play_start = dac
                if self.on_play_start is not None:
                    self.on_play_start(dac)
        if n < frames:
            self._idle = True

    def _keep(self, out: np.ndarray, dac: float) -> None:
        """Append a played block to the history rings (called with the lock held)."""
        size, frames = len(self._hist), len(out)
        pos = self._hist_total % size
        first = min(frames, size - pos)
        self._hist[pos : pos + first] = out[:first]
        self._hist[: frames - first] = out[first:]
        self._meta[self._meta_total % len(self._meta)] = (dac, self._hist_total, frames)
        self._hist_total += frames
        self._meta_total += 1

    # -- writer side ----------------------------------------------------------------------------

    def _convert(self, chunk: AudioChunk, gen: int, last: bool = False) -> np.ndarray:
        """Down-mix and resample to the device rate; a new generation starts a fresh filter."""
        samples = to_mono(chunk.samples())
        rate = chunk.format.rate
        if rate == self.device_rate:
            return samples
        rs = self._resampler
        if rs is None or rs[0] != gen or rs[1] != rate:
            rs = (gen, rate, StreamResampler(rate, self.device_rate))
            self._resampler = rs
        return rs[2].process(samples, last=last)

    def write(self, chunk: AudioChunk, timeout: float | None = None) -> bool:
        """Queue a chunk, blocking while the buffer is full.

        Returns False when ``clear()``, ``close()`` or ``suspend()`` dropped it (also while
        suspended); raises TimeoutError when no space freed up within ``timeout`` (the device
        stopped pulling audio).
        """
        if self._down:
            return False
        if self._error is not None:
            raise self._error
        if self._stream is None:
            if self.route is None:
                raise RuntimeError("Speaker.write() on a speaker that is not open")
            return False  # closed for a moment while PortAudio restarts
        gen = self._gen
        samples = self._convert(chunk, gen)
        return self._enqueue(samples, gen, timeout)

    def _enqueue(self, samples: np.ndarray, gen: int, timeout: float | None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        pos, size = 0, len(self._ring)
        with self._cond:
            while pos < len(samples):
                if self._gen != gen or self._closed or self._down:
                    return False
                space = size - self._avail
                if space == 0:
                    wait = None if deadline is None else deadline - time.monotonic()
                    if wait is not None and wait <= 0:
                        raise TimeoutError("speaker buffer stayed full: the device stopped playing")
                    self._cond.wait(wait)
                    continue
                n = min(space, len(samples) - pos)
                w = (self._rpos + self._avail) % size
                first = min(n, size - w)
                self._ring[w : w + first] = samples[pos : pos + first]
                self._ring[: n - first] = samples[pos + first : pos + n]
                self._avail += n
                pos += n
        return True

    def clear(self) -> float:
        """Drop everything queued, now (barge-in). Returns the milliseconds of audio dropped.

        Audio already handed to the device (about one output latency) is discarded too, by
        aborting and restarting the stream: playback stops within milliseconds.
        """
        with self._cond:
            dropped = self._avail
            self._avail = 0
            self._gen += 1
            self._cond.notify_all()
        now = time.monotonic()
        in_device = max(0.0, self._audio_end - now)
        if in_device > 0:
            self._flush_device(now)
        return 1000.0 * dropped / self.device_rate + 1000.0 * in_device

    def _flush_device(self, now: float) -> None:
        sd = _sd()
        with self._stream_lock:
            stream = self._stream
            if stream is None:
                return
            try:
                stream.abort()
                with self._cond:
                    self._forget_after(now)
                    self._audio_end = now
                    self._idle = True
                stream.start()
            except sd.PortAudioError as exc:
                self._error = _open_error("output", self.device or 0, self.device_name, exc)

    def _forget_after(self, now: float) -> None:
        """Zero the history of blocks that were aborted before reaching the DAC (lock held)."""
        size = len(self._meta)
        for i in range(self._meta_total - 1, max(-1, self._meta_total - size - 1), -1):
            t, start, frames = self._meta[i % size]
            if t <= now:
                break
            idx = np.arange(int(start), int(start + frames)) % len(self._hist)
            self._hist[idx] = 0

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until everything written has left the speaker; False on timeout or clear()."""
        gen = self._gen
        rs = self._resampler
        if rs is not None and rs[0] == gen:  # flush the resampler's tail
            self._resampler = None
            tail = rs[2].process(np.zeros(0, dtype=np.int16), last=True)
            if not self._enqueue(tail, gen, timeout):
                return False
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._avail and self._gen == gen and not self._closed:
                wait = None if deadline is None else deadline - time.monotonic()
                if wait is not None and wait <= 0:
                    return False
                self._cond.wait(wait)
            if self._gen != gen or self._closed:
                return False
        rest = self._audio_end - time.monotonic()
        if deadline is not None and time.monotonic() + max(rest, 0.0) > deadline:
            return False
        if rest > 0:
            time.sleep(rest)
        return True

    @property
    def playing(self) -> bool:
        """True while audio is queued or still on its way out of the device."""
        return self._avail > 0 or time.monotonic() < self._audio_end

    @property
    def queued_ms(self) -> float:
        return 1000.0 * self._avail / self.device_rate

    @property
    def underflows(self) -> int:
        """Output underflows PortAudio reported (the device ran dry below us)."""
        return self._underflows

    def played(self, since: float | None = None) -> list[PlayedBlock]:
        """Blocks played (silence included) still in the history, oldest first.

        ``since`` keeps blocks that end after that ``time.monotonic()`` value.
        """
        with self._cond:
            total, count = self._hist_total, self._meta_total
            order = np.arange(max(0, count - len(self._meta)), count) % max(1, len(self._meta))
            rows = self._meta[order]
            hist = self._hist.copy()
        blocks = []
        for t, start, frames in rows:
            start, frames = int(start), int(frames)
            if start < total - len(hist):
                continue  # overwritten
            if since is not None and t + frames / self.device_rate <= since:
                continue
            idx = np.arange(start, start + frames) % len(hist)
            blocks.append(PlayedBlock(float(t), hist[idx], self.device_rate))
        return blocks

    def played_after(self, cursor: int) -> tuple[int, list[PlayedBlock]]:
        """Blocks played since ``cursor`` (0 at first; pass back the cursor returned), oldest
        first: the echo canceller's far end, read without copying the whole history. Blocks
        already overwritten are skipped; one whose audio was aborted before the DAC (``clear``)
        comes back as the silence it was."""
        with self._cond:
            count, total, hist = self._meta_total, self._hist_total, self._hist
            size = len(self._meta)
            if cursor > count:  # the stream reopened at another rate: the history restarted
                cursor = 0
            blocks = []
            for i in range(max(cursor, count - size), count):
                t, start, frames = self._meta[i % size]
                start, frames = int(start), int(frames)
                if start < total - len(hist):
                    continue
                idx = np.arange(start, start + frames) % len(hist)
                blocks.append(PlayedBlock(float(t), hist[idx], self.device_rate))
        return count, blocks

    def close(self) -> None:
        """Stop playback (queued audio is dropped) and release the device; safe to call twice."""
        if self._closed:
            return
        with self._cond:
            self._closed = True
            self._avail = 0
            self._gen += 1
            self._cond.notify_all()
        with _pa_lock:
            _open_streams.discard(self)
            self._close_stream()

    def __enter__(self) -> Speaker:
        return self.open()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
