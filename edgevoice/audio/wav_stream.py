"""A WAV written as it goes: a crash loses at most the last flush, never the whole file.

A recording of a long run held in memory until ``close()`` is lost entirely to a kill -9 (and
costs memory all along). This writer puts samples on disk as they are known and rewrites the
header's two sizes at every ``flush()``, so the file is a valid WAV of everything flushed at
any moment; ``close()`` pads, fixes the header for the last time and fsyncs. The file is
created with the user's umask like any file a program writes for its user.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np

from edgevoice.audio.format import AudioChunk, AudioFormat
from edgevoice.audio.resample import resample, to_mono

_HEADER = 44


def _header(rate: int, data_bytes: int) -> bytes:
    return (b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVE"
            + b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16)
            + b"data" + struct.pack("<I", data_bytes))


class StreamingWavWriter:
    """16-bit mono PCM placed on a timeline (``write(chunk, at_ms)``), gaps silent, overlaps
    mixed; on disk from the first write."""

    def __init__(self, path: str | os.PathLike, rate: int) -> None:
        self.path = Path(path)
        self.format = AudioFormat(rate=rate, channels=1, width=2)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o666)
        self._size = 0  # data bytes written
        os.pwrite(self._fd, _header(rate, 0), 0)

    @property
    def duration_ms(self) -> float:
        return self.format.ms_for_bytes(self._size)

    def _pcm(self, chunk: AudioChunk) -> bytes:
        if chunk.format == self.format:
            return chunk.data
        return resample(to_mono(chunk.samples()), chunk.format.rate, self.format.rate).tobytes()

    def write(self, chunk: AudioChunk, at_ms: float | None = None) -> None:
        data = self._pcm(chunk)
        offset = self._size if at_ms is None else self.format.bytes_for_ms(max(at_ms, 0.0))
        offset -= offset % 2
        overlap = min(len(data), max(self._size - offset, 0))
        if overlap:  # mix with what is already there
            old = np.frombuffer(os.pread(self._fd, overlap, _HEADER + offset), "<i2")
            new = np.frombuffer(data[:overlap], "<i2")
            mixed = np.clip(old.astype(np.int32) + new, -32768, 32767).astype("<i2")
            os.pwrite(self._fd, mixed.tobytes(), _HEADER + offset)
        if offset > self._size:
            self._zeros(offset - self._size)
        rest = data[overlap:]
        if rest:
            os.pwrite(self._fd, rest, _HEADER + max(offset, self._size))
            self._size = max(self._size, offset + len(data))

    def _zeros(self, n: int) -> None:
        block = bytes(min(n, 1 << 20))
        while n > 0:
            step = min(n, len(block))
            os.pwrite(self._fd, block[:step], _HEADER + self._size)
            self._size += step
            n -= step

    def pad_to(self, ms: float) -> None:
        want = self.format.bytes_for_ms(ms)
        want -= want % 2
        if want > self._size:
            self._zeros(want - self._size)

    def flush(self) -> None:
        """Make the header describe everything written so far (readable after a crash)."""
        os.pwrite(self._fd, _header(self.format.rate, self._size), 0)

    def close(self) -> None:
        if self._fd < 0:
            return
        try:
            self.flush()
            os.fsync(self._fd)
        finally:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> StreamingWavWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
