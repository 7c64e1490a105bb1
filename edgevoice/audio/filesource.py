"""A recording played in real time as if it were the microphone (file mode: tests, demos,
benchmarks).

Same reading interface as ``devices.Microphone``: ``read(timeout)`` returns the next block once the
wall clock says it has been "captured", so everything downstream runs at real speed.
"""

from __future__ import annotations

import time
from pathlib import Path

from edgevoice.audio.format import AudioChunk
from edgevoice.audio.wavfile import iter_chunks, read_audio


class RealtimeFileSource:
    def __init__(self, path: str | Path, rate: int = 16000, block_ms: int = 30,
                 speed: float = 1.0) -> None:
        self.audio = read_audio(path, rate)
        self._chunks = list(iter_chunks(self.audio, block_ms))
        self._next = 0
        self._t0: float | None = None
        self.speed = speed
        self.overflows = 0

    @property
    def finished(self) -> bool:
        """True once every block has been handed out."""
        return self._next >= len(self._chunks)

    @property
    def duration_ms(self) -> float:
        return self.audio.duration_ms

    def read(self, timeout: float | None = None) -> AudioChunk | None:
        if self.finished:
            if timeout:
                time.sleep(min(timeout, 0.05))
            return None
        now = time.monotonic()
        if self._t0 is None:
            self._t0 = now
        chunk = self._chunks[self._next]
        due = self._t0 + chunk.end_ms / 1000 / self.speed
        wait = due - now
        if wait > 0:
            if timeout is not None and wait > timeout:
                time.sleep(timeout)
                return None
            time.sleep(wait)
        self._next += 1
        return chunk

    def close(self) -> None:
        self._next = len(self._chunks)

    def __enter__(self) -> RealtimeFileSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
