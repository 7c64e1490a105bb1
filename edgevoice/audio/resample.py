"""Sample-rate conversion and down-mixing with libsoxr (band-limited, streaming-capable)."""

from __future__ import annotations

import numpy as np
import soxr


def to_mono(samples: np.ndarray) -> np.ndarray:
    """Average the channels of (frames, channels) audio; 1-D input is returned as is."""
    if samples.ndim == 1:
        return samples
    if samples.dtype == np.int16:
        return np.round(samples.astype(np.float32).mean(axis=1)).astype(np.int16)
    return samples.mean(axis=1).astype(samples.dtype)


def resample(samples: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Resample a whole 1-D or (frames, channels) signal, keeping its dtype."""
    if from_rate == to_rate:
        return samples
    return soxr.resample(samples, from_rate, to_rate, quality="HQ")


class StreamResampler:
    """Resamples a stream block by block; state is kept so block edges leave no clicks."""

    def __init__(self, from_rate: int, to_rate: int, channels: int = 1) -> None:
        self.from_rate = from_rate
        self.to_rate = to_rate
        self._stream = (
            None
            if from_rate == to_rate
            else soxr.ResampleStream(from_rate, to_rate, channels, dtype="int16", quality="HQ")
        )

    def process(self, samples: np.ndarray, last: bool = False) -> np.ndarray:
        """Resample the next int16 block; ``last=True`` flushes the filter's tail."""
        if self._stream is None:
            return samples
        return self._stream.resample_chunk(samples, last=last)
