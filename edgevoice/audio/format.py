"""``AudioFormat`` and ``AudioChunk``: audio always travels with its format and its start time."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class AudioFormat:
    """Interleaved signed little-endian PCM. ``width`` is bytes per sample (2 = int16)."""

    rate: int
    channels: int = 1
    width: int = 2

    @property
    def bytes_per_frame(self) -> int:
        return self.channels * self.width

    def bytes_for_ms(self, ms: float) -> int:
        """Byte count of ``ms`` milliseconds, rounded down to whole frames."""
        return int(self.rate * ms / 1000) * self.bytes_per_frame

    def ms_for_bytes(self, nbytes: int) -> float:
        return 1000.0 * nbytes / (self.rate * self.bytes_per_frame)


PCM16_MONO_16K = AudioFormat(rate=16000, channels=1, width=2)


@dataclass(frozen=True)
class AudioChunk:
    """A block of PCM audio. ``start_ms`` is its position on the stream's timeline."""

    data: bytes
    format: AudioFormat = PCM16_MONO_16K
    start_ms: float = 0.0

    @property
    def duration_ms(self) -> float:
        return self.format.ms_for_bytes(len(self.data))

    @property
    def end_ms(self) -> float:
        return self.start_ms + self.duration_ms

    def samples(self) -> np.ndarray:
        """int16 samples, shape (frames, channels) when multichannel, else (frames,)."""
        if self.format.width != 2:
            raise ValueError(f"samples() needs 16-bit audio, got width {self.format.width}")
        arr = np.frombuffer(self.data, dtype="<i2")
        return arr.reshape(-1, self.format.channels) if self.format.channels > 1 else arr

    @classmethod
    def from_samples(
        cls, samples: np.ndarray, rate: int, start_ms: float = 0.0
    ) -> AudioChunk:
        """Build a chunk from int16 samples (1-D mono or 2-D frames x channels)."""
        arr = np.asarray(samples)
        if arr.dtype != np.int16:
            raise TypeError(f"expected int16 samples, got {arr.dtype}")
        channels = 1 if arr.ndim == 1 else arr.shape[1]
        fmt = AudioFormat(rate=rate, channels=channels, width=2)
        return cls(arr.astype("<i2", copy=False).tobytes(), fmt, start_ms)
