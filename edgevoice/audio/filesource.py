"""A recording played in real time as if it were the microphone (file mode: tests, demos,
benchmarks).

Same reading interface as ``devices.Microphone``: ``read(timeout)`` returns the next block once the
wall clock says it has been "captured", so everything downstream runs at real speed. The file is
read from disk as it plays (``filestream.stream_audio``): an hour of input costs a few MB, not
the whole recording decoded in memory (~550 MB for 90 minutes, which a soak run held).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

from edgevoice.audio.filestream import stream_audio
from edgevoice.audio.format import AudioChunk


def _duration_ms(path: Path) -> float:
    import soundfile

    info = soundfile.info(str(path))
    return 1000.0 * info.frames / info.samplerate


class RealtimeFileSource:
    def __init__(self, path: str | Path, rate: int = 16000, block_ms: int = 30,
                 speed: float = 1.0) -> None:
        self._blocks = stream_audio(path, rate, block_ms)  # checks the file; raises UserError
        self._next: Optional[AudioChunk] = next(self._blocks, None)  # one ahead: ``finished``
        self._duration_ms = _duration_ms(Path(path))
        self._t0: float | None = None
        self.speed = speed
        self.overflows = 0

    @property
    def finished(self) -> bool:
        """True once every block has been handed out."""
        return self._next is None

    @property
    def duration_ms(self) -> float:
        return self._duration_ms

    def read(self, timeout: float | None = None) -> AudioChunk | None:
        chunk = self._next
        if chunk is None:
            if timeout:
                time.sleep(min(timeout, 0.05))
            return None
        now = time.monotonic()
        if self._t0 is None:
            self._t0 = now
        due = self._t0 + chunk.end_ms / 1000 / self.speed
        wait = due - now
        if wait > 0:
            if timeout is not None and wait > timeout:
                time.sleep(timeout)
                return None
            time.sleep(wait)
        self._next = next(self._blocks, None)
        return chunk

    def close(self) -> None:
        self._next = None
        self._blocks.close()

    def __enter__(self) -> RealtimeFileSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
