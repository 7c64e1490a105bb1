"""pyttsx3 synthesizer: eSpeak NG on Linux, SAPI5 on Windows, NSSpeechSynthesizer on macOS.

Why it looks like this:

* pyttsx3's ``say()`` plays through the engine (``aplay`` on Linux) and cannot be stopped once
  started, so every clause is rendered with ``save_to_file`` + ``runAndWait`` to a private temp
  file and read back into an ``AudioChunk``; playback (and stopping it) is ours.
* SAPI5 and NSSpeech want one thread, and pyttsx3 engines are not thread-safe: one engine lives
  its whole life on one dedicated worker thread; ``synthesize`` hands the job over and waits.
* pyttsx3 has one engine per driver per process (and eSpeak NG is process-global), so only one
  ``Pyttsx3Synthesizer`` may be open at a time.
* eSpeak specifics (pyttsx3 2.99): a property set while eSpeak's command queue is still busy can
  be dropped by the ``espeak_Cancel`` that ``runAndWait`` issues, so properties are applied once,
  after an empty run loop, and eSpeak is synchronised before each render. The driver prints
  "Audio saved to ..." for every file; that module's ``print`` is routed to ``logging`` instead
  of redirecting the process's stdout.
"""

from __future__ import annotations

import io
import logging
import queue
import shutil
import struct
import sys
import tempfile
import threading
import time
import wave
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from edgevoice.audio.format import AudioChunk, AudioFormat
from edgevoice.audio.resample import to_mono
from edgevoice.config import TtsConfig
from edgevoice.errors import UserError

log = logging.getLogger(__name__)

T = TypeVar("T")

WARM_UP_TEXT = "Hello."

_default_voices: dict[str, str] = {}  # driver -> voice of a fresh engine
_open_lock = threading.Lock()
_open_instance: Pyttsx3Synthesizer | None = None


class _EngineThread:
    """A daemon thread that runs submitted calls one at a time, in order, for its whole life."""

    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[tuple[Future[Any], Callable[[], Any]] | None] = (
            queue.SimpleQueue()
        )
        self._lock = threading.Lock()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[[], T]) -> Future[T]:
        future: Future[T] = Future()
        with self._lock:
            if self._stopped:
                raise RuntimeError("the synthesizer is closed")
            self._jobs.put((future, fn))
        return future

    def stop(self, timeout: float) -> None:
        """Finish queued jobs, then end the thread (waits at most ``timeout`` seconds)."""
        with self._lock:
            self._stopped = True
            self._jobs.put(None)
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            future, fn = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn())
            except BaseException as exc:  # handed to the caller, who re-raises it
                future.set_exception(exc)


class Pyttsx3Synthesizer:
    """Renders clauses with pyttsx3 on its own engine thread. See the module docstring."""

    name = "pyttsx3"

    def __init__(self, cfg: TtsConfig, *, timeout_s: float = 10.0) -> None:
        """Start the engine, apply ``cfg`` (voice, rate, volume) and warm it up.

        Raises ``UserError`` when the speech engine or the configured voice is missing.
        """
        global _open_instance
        with _open_lock:
            if _open_instance is not None:
                raise RuntimeError(
                    "only one Pyttsx3Synthesizer can be open at a time (pyttsx3 keeps one engine "
                    "per process); close the other one first"
                )
            _open_instance = self
        self._cfg = cfg
        self._timeout_s = timeout_s
        self._closed = False
        self._broken: str | None = None
        self._engine: Any = None  # only touched on the worker thread
        self._tmpdir = Path(tempfile.mkdtemp(prefix="edgevoice-tts-"))
        self._wav_path = self._tmpdir / "clause.wav"
        self._worker = _EngineThread("edgevoice-tts")
        self.driver = ""
        self.voice_id: str | None = None
        self.format = AudioFormat(rate=22050)  # replaced by what the warm-up render returns
        self.warm_up_ms = 0.0
        self.last_synthesis_ms = 0.0
        try:
            self._call(self._open_engine)
            self.warm_up()
        except BaseException:
            self.close()
            raise

    # -- public API --

    def synthesize(self, text: str) -> AudioChunk:
        """Render one clause to a mono int16 buffer; blocks until done (~10-20 ms on eSpeak)."""
        if not text.strip():
            self._check_usable()
            return AudioChunk(b"", self.format)
        chunk, ms = self._call(lambda: self._render(text))
        self.last_synthesis_ms = ms
        log.debug("synthesized %d chars -> %.0f ms of audio in %.1f ms",
                  len(text), chunk.duration_ms, ms)
        return chunk

    def warm_up(self) -> float:
        """Render a short phrase so the first real clause is fast; returns the milliseconds taken.

        Also learns the engine's output format (22,050 Hz mono int16 on eSpeak NG).
        """
        chunk, ms = self._call(lambda: self._render(WARM_UP_TEXT))
        self.format = chunk.format
        self.warm_up_ms = ms
        log.debug("pyttsx3 (%s, voice %s) warmed up in %.1f ms", self.driver, self.voice_id, ms)
        return ms

    def list_voices(self) -> list[tuple[str, str]]:
        """(id, name) of every voice the engine offers."""
        voices = self._call(lambda: self._engine.getProperty("voices"))
        return [(str(v.id), str(v.name)) for v in voices]

    def close(self) -> None:
        """Drop the engine (on its own thread), stop the thread, delete the temp folder."""
        global _open_instance
        if self._closed:
            return
        self._closed = True
        if self._broken is None:
            self._worker.submit(self._close_engine)
            self._worker.stop(timeout=self._timeout_s)
        shutil.rmtree(self._tmpdir, ignore_errors=True)
        with _open_lock:
            if _open_instance is self:
                _open_instance = None

    def __enter__(self) -> Pyttsx3Synthesizer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- caller side --

    def _check_usable(self) -> None:
        if self._closed:
            raise RuntimeError("the synthesizer is closed")
        if self._broken is not None:
            raise RuntimeError(self._broken)

    def _call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the engine thread and wait for it, at most ``timeout_s``."""
        self._check_usable()
        future = self._worker.submit(fn)
        try:
            return future.result(timeout=self._timeout_s)
        except FutureTimeout:
            self._broken = (
                f"the {self.driver or 'pyttsx3'} speech engine stopped responding "
                f"(no result within {self._timeout_s:g} s); restart edgevoice"
            )
            raise TimeoutError(self._broken) from None

    # -- engine thread side --

    def _open_engine(self) -> None:
        try:
            import pyttsx3
        except ImportError as exc:
            raise UserError(
                f"text-to-speech needs pyttsx3, which is not installed ({exc}): "
                "install it with `pip install pyttsx3`"
            ) from exc
        try:
            self._engine = pyttsx3.init()  # the cached engine when one is still alive
        except Exception as exc:
            raise UserError(_engine_failed_message(exc)) from exc
        try:
            self._configure()
        except BaseException:
            self._engine = None  # no local holds it: a kept traceback must not keep the engine
            raise

    def _configure(self) -> None:
        # Only self._engine refers to the engine, never a local: see _open_engine.
        self.driver = self._engine.driver_name
        _quiet_driver_prints(self.driver)
        _settle(self.driver)
        if self._engine.isBusy():
            # A fresh engine queues commands until its first run loop; an empty loop makes
            # property changes apply at once, so eSpeak can finish them before the first render.
            # (On an engine that already ran, an empty loop would never end.)
            self._engine.runAndWait()
            _default_voices.setdefault(self.driver, self._engine.getProperty("voice"))
        if self._cfg.voice:
            self.voice_id = _pick_voice(self._engine.getProperty("voices"), self._cfg.voice)
        else:  # a reused engine may still carry an earlier instance's voice
            self.voice_id = _default_voices.get(self.driver) or self._engine.getProperty("voice")
        if self.voice_id:
            self._engine.setProperty("voice", self.voice_id)
        self._engine.setProperty("rate", int(self._cfg.rate_wpm))
        self._engine.setProperty("volume", float(self._cfg.volume))
        _settle(self.driver)

    def _render(self, text: str) -> tuple[AudioChunk, float]:
        start = time.perf_counter()
        for _attempt in range(2):  # a render eSpeak cancelled leaves no file: try once more
            self._wav_path.unlink(missing_ok=True)
            _settle(self.driver)
            self._engine.save_to_file(text, str(self._wav_path))
            self._engine.runAndWait()
            if self._wav_path.exists():
                chunk = read_audio_file(self._wav_path)
                return chunk, (time.perf_counter() - start) * 1000
        raise RuntimeError(f"the {self.driver} speech engine wrote no audio for {text[:40]!r}")

    def _close_engine(self) -> None:
        # The driver unhooks its native callback when the last reference goes: do it here.
        self._engine = None


# --- helpers --------------------------------------------------------------------------------------


def _engine_failed_message(exc: Exception) -> str:
    log.debug("pyttsx3.init() failed", exc_info=exc)
    if sys.platform.startswith("linux"):
        return (
            "text-to-speech needs the eSpeak NG speech engine, which could not be loaded: "
            "install it with `sudo apt-get install espeak-ng`"
        )
    return (
        f"the pyttsx3 speech engine failed to start ({exc}): "
        "reinstall it with `pip install --force-reinstall pyttsx3`"
    )


def _settle(driver: str) -> None:
    """Wait until eSpeak's internal command queue is idle (instant when it already is)."""
    if driver == "espeak":
        from pyttsx3.drivers import _espeak

        _espeak.Synchronize()


def _quiet_driver_prints(driver: str) -> None:
    """Send the eSpeak driver's "Audio saved to ..." prints to logging, not to our stdout."""
    if driver != "espeak":
        return
    from pyttsx3.drivers import espeak

    def driver_print(*args: object, **_kwargs: object) -> None:
        message = " ".join(str(a) for a in args)
        level = logging.DEBUG if message.startswith("Audio saved") else logging.WARNING
        log.log(level, "pyttsx3 espeak driver: %s", message)

    espeak.print = driver_print  # type: ignore[attr-defined]  # shadows the builtin there only


def _pick_voice(voices: list[Any], wanted: str) -> str:
    """Voice id for ``wanted``: an exact id or name, else an id ending in it, else a substring."""
    key = wanted.strip().lower()
    tiers: list[Callable[[str, str], bool]] = [
        lambda vid, name: key in (vid, name),
        lambda vid, name: vid.endswith("/" + key) or vid.endswith("\\" + key),
        lambda vid, name: key in name,
        lambda vid, name: key in vid,
    ]
    for matches in tiers:
        for voice in voices:
            if matches(str(voice.id).lower(), str(voice.name).lower()):
                return str(voice.id)
    names = ", ".join(str(v.name) for v in voices[:8])
    more = f" and {len(voices) - 8} more" if len(voices) > 8 else ""
    raise UserError(
        f"tts.voice {wanted!r} matches no installed voice: set it to a voice id or name such as "
        f"{names}{more}, or to null for the default voice"
    )


def read_audio_file(path: Path) -> AudioChunk:
    """Read a 16-bit PCM WAV or AIFF file (NSSpeech writes AIFF) as a mono ``AudioChunk``."""
    data = path.read_bytes()
    if data[:4] == b"RIFF":
        with wave.open(io.BytesIO(data)) as w:
            channels, width, rate = w.getnchannels(), w.getsampwidth(), w.getframerate()
            raw, dtype = w.readframes(w.getnframes()), "<i2"
    elif data[:4] == b"FORM":
        channels, width, rate, raw, dtype = _parse_aiff(data)
    else:
        raise RuntimeError(f"{path} is neither WAV nor AIFF audio")
    if width != 2:
        raise RuntimeError(f"{path} has {8 * width}-bit samples; expected 16-bit")
    samples = np.frombuffer(raw, dtype=dtype).astype(np.int16)
    if channels > 1:
        samples = to_mono(samples[: len(samples) // channels * channels].reshape(-1, channels))
    return AudioChunk.from_samples(samples, rate)


def _parse_aiff(data: bytes) -> tuple[int, int, int, bytes, str]:
    """(channels, width, rate, sample bytes, numpy dtype) of an uncompressed AIFF/AIFC file."""
    kind = data[8:12]
    if kind not in (b"AIFF", b"AIFC"):
        raise RuntimeError("not an AIFF file")
    channels = bits = rate = 0
    compression = b"NONE"
    sound = b""
    pos = 12
    while pos + 8 <= len(data):
        chunk_id, size = struct.unpack(">4sI", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + size]
        if chunk_id == b"COMM":
            channels, _frames, bits = struct.unpack(">hIh", body[:8])
            exponent = int.from_bytes(body[8:10], "big") & 0x7FFF
            mantissa = int.from_bytes(body[10:18], "big")
            rate = round(mantissa * 2.0 ** (exponent - 16383 - 63))
            if kind == b"AIFC":
                compression = body[18:22]
        elif chunk_id == b"SSND":
            offset = struct.unpack(">I", body[:4])[0]
            sound = body[8 + offset :]
        pos += 8 + size + (size & 1)
    if compression not in (b"NONE", b"twos", b"sowt"):
        raise RuntimeError(f"compressed AIFF ({compression!r}) is not supported")
    dtype = "<i2" if compression == b"sowt" else ">i2"
    return channels, (bits + 7) // 8, rate, sound, dtype
