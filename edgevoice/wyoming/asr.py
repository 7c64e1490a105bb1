"""The `asr` service: any PCM a client streams -> our ear (endpointer + recognizer) -> text.

A client's audio is down-mixed and resampled to the ear's 16 kHz and cut into the blocks
`edgevoice transcribe` uses, so a clip sent over Wyoming is heard exactly as that command hears the
file. Recognizers are not thread-safe and take ~0.6 s to load, so each lives on its own thread in
a pool: a connection borrows one for its lifetime (HA opens one connection per request).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Optional

import numpy as np

from edgevoice.asr.protocol import Recognizer
from edgevoice.audio.format import PCM16_MONO_16K, AudioChunk
from edgevoice.audio.resample import StreamResampler, to_mono
from edgevoice.config import Config
from edgevoice.ear.transcriber import Pause, StreamingTranscriber, Utterance

log = logging.getLogger(__name__)

RATES = (8000, 192000)  # the sample rates we accept from a client
WIDTHS = (1, 2, 4)  # unsigned 8-bit, signed 16-bit, signed 32-bit little-endian
MAX_CHANNELS = 8
NO_PARTIALS_MS = 10**9


class AudioFormatError(ValueError):
    """A client's audio format we cannot read; the message says which field and what we take."""


def check_format(rate: object, width: object, channels: object) -> tuple[int, int, int]:
    """The (rate, width, channels) of an audio event, or ``AudioFormatError``."""
    for name, value in (("rate", rate), ("width", width), ("channels", channels)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise AudioFormatError(f"audio `{name}` must be an integer, got {value!r}")
    if not RATES[0] <= rate <= RATES[1]:
        raise AudioFormatError(f"audio rate {rate} Hz is outside {RATES[0]}-{RATES[1]} Hz")
    if width not in WIDTHS:
        raise AudioFormatError(f"audio width {width} is not 1, 2 or 4 bytes per sample")
    if not 1 <= channels <= MAX_CHANNELS:
        raise AudioFormatError(f"audio channels {channels} is outside 1-{MAX_CHANNELS}")
    return rate, width, channels


def to_int16(data: bytes, width: int) -> np.ndarray:
    """Little-endian PCM of ``width`` bytes per sample as int16 (the ear's sample type)."""
    if width == 2:
        return np.frombuffer(data, dtype="<i2")
    if width == 4:
        return (np.frombuffer(data, dtype="<i4") >> 16).astype(np.int16)
    return ((np.frombuffer(data, dtype=np.uint8).astype(np.int16) - 128) << 8).astype(np.int16)


class Transcription:
    """One transcribe request: audio in, fixed words out as they become final, text at the end.

    Synchronous: runs on its recognizer's thread. Audio past ``max_audio_s`` is not heard."""

    def __init__(self, cfg: Config, recognizer: Recognizer, max_audio_s: float) -> None:
        # No partials: they cost a backtrace each and are never sent (only fixed words are).
        self.transcriber = StreamingTranscriber(cfg.vad, recognizer, NO_PARTIALS_MS)
        self._block = PCM16_MONO_16K.bytes_for_ms(cfg.audio.block_ms)
        self._max_bytes = PCM16_MONO_16K.bytes_for_ms(max_audio_s * 1000)
        self._format: Optional[tuple[int, int, int]] = None
        self._resampler: Optional[StreamResampler] = None
        self._carry = b""  # the part of a frame a chunk split
        self._pending = bytearray()  # 16 kHz audio short of a whole block
        self._fed = 0  # bytes of 16 kHz audio given to the ear
        self.truncated = False
        self._texts: list[str] = []  # finished utterances
        self._sent = ""  # the fixed words already reported

    @property
    def heard_s(self) -> float:
        return PCM16_MONO_16K.ms_for_bytes(self._fed) / 1000

    def feed(self, data: bytes, fmt: tuple[int, int, int]) -> list[str]:
        """Add a chunk of ``fmt`` (rate, width, channels) audio; return new fixed text."""
        fixed: list[str] = []
        if fmt != self._format:
            fixed = self._flush_resampler()
            self._format, self._carry = fmt, b""
            self._resampler = StreamResampler(fmt[0], PCM16_MONO_16K.rate)
        rate, width, channels = fmt
        data = self._carry + data
        frame = width * channels
        whole = len(data) - len(data) % frame
        data, self._carry = data[:whole], data[whole:]
        if not data:
            return fixed
        samples = to_int16(data, width)
        if channels > 1:
            samples = to_mono(samples.reshape(-1, channels))
        return fixed + self._push(self._resampler.process(samples))

    def finish(self) -> tuple[str, list[str]]:
        """End of audio: decode what is left; the whole transcript and the new fixed text."""
        fixed = self._flush_resampler()
        events = []
        if self._pending:
            events += list(self.transcriber.feed(self._chunk(bytes(self._pending))))
            self._pending.clear()
        events += list(self.transcriber.flush())
        fixed += self._take(events)
        return " ".join(self._texts), fixed

    def _flush_resampler(self) -> list[str]:
        if self._resampler is None:
            return []
        tail = self._resampler.process(np.zeros(0, np.int16), last=True)
        self._resampler = None
        return self._push(tail)

    def _push(self, samples: np.ndarray) -> list[str]:
        room = self._max_bytes - self._fed - len(self._pending)
        data = samples.astype("<i2", copy=False).tobytes()
        if len(data) > room:
            if not self.truncated:
                log.warning("a Wyoming client sent more than %.0f s of audio: the rest is not "
                            "transcribed (wyoming.max_audio_s)", self._max_bytes / 32000)
            self.truncated = True
            data = data[:max(room, 0)]
        self._pending += data
        events = []
        while len(self._pending) >= self._block:
            block, self._pending = bytes(self._pending[:self._block]), self._pending[self._block:]
            events += list(self.transcriber.feed(self._chunk(block)))
        return self._take(events)

    def _chunk(self, data: bytes) -> AudioChunk:
        chunk = AudioChunk(data, PCM16_MONO_16K, PCM16_MONO_16K.ms_for_bytes(self._fed))
        self._fed += len(data)
        return chunk

    def _take(self, events: list) -> list[str]:
        """Finished utterances are kept; text fixed at a pause or an end is reported once."""
        fixed = None
        for event in events:
            if isinstance(event, Utterance):
                self._texts.append(event.text.strip())
                fixed = " ".join(self._texts)
            elif isinstance(event, Pause) and event.final:
                fixed = " ".join([*self._texts, event.text.strip()])
        if fixed is None or not fixed.startswith(self._sent) or fixed == self._sent:
            return []
        new, self._sent = fixed[len(self._sent):], fixed
        return [new] if new.strip() else []


@dataclass
class PooledRecognizer:
    """A recognizer and the one thread it runs on."""

    recognizer: Recognizer
    thread: ThreadPoolExecutor


class RecognizerPool:
    """Recognizers to lend to connections, made on demand and kept for the next one."""

    def __init__(self, make: Callable[[], Recognizer]) -> None:
        self._make = make
        self._idle: list[PooledRecognizer] = []
        self._all: list[PooledRecognizer] = []
        self.name = ""

    @property
    def size(self) -> int:
        return len(self._all)

    async def acquire(self) -> PooledRecognizer:
        if self._idle:
            return self._idle.pop()
        thread = ThreadPoolExecutor(1, thread_name_prefix="edgevoice-wyoming-asr")
        try:
            recognizer = await asyncio.get_running_loop().run_in_executor(thread, self._make)
        except BaseException:
            thread.shutdown(wait=False)
            raise
        item = PooledRecognizer(recognizer, thread)
        self.name = recognizer.name
        self._all.append(item)
        return item

    async def release(self, item: PooledRecognizer) -> None:
        """Take a recognizer back (its utterance abandoned) for the next connection."""
        await asyncio.get_running_loop().run_in_executor(item.thread, item.recognizer.reset)
        self._idle.append(item)

    def close(self) -> None:
        for item in self._all:
            item.thread.submit(item.recognizer.close)
            item.thread.shutdown(wait=True)
        self._all.clear()
        self._idle.clear()
