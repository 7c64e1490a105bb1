"""A timed microphone and speaker over arrays, in step on a made-up clock: what
``edgevoice.ear.echo.EchoCancelledSource`` reads from, without devices (tests/test_echo.py,
tests/test_barge_in_words.py)."""

from __future__ import annotations

import numpy as np

from edgevoice.audio.devices import PlayedBlock
from edgevoice.audio.format import AudioChunk

RATE = 16000
BLOCK = 480


class ArrayMic:
    """A timed capture stream that hears ``samples``, 30 ms per read, on a made-up clock."""

    rate, timed = RATE, True

    def __init__(self, samples: np.ndarray) -> None:
        self.samples, self.pos, self.chunk_time = samples, 0, 100.0

    def read(self, timeout=None) -> AudioChunk:
        block = self.samples[self.pos:self.pos + BLOCK]
        start_ms = self.pos * 1000 / RATE
        self.pos += BLOCK
        self.chunk_time += BLOCK / RATE
        return AudioChunk.from_samples(block, RATE, start_ms)


class ArraySpeaker:
    """Plays ``samples`` in step with the microphone (its DAC times on the mic's clock)."""

    timed = True

    def __init__(self, mic: ArrayMic, samples: np.ndarray) -> None:
        self.mic, self.samples = mic, samples

    def played_after(self, cursor):
        block = self.samples[cursor * BLOCK:(cursor + 1) * BLOCK]
        if len(block) < BLOCK:
            block = np.zeros(BLOCK, dtype=np.int16)
        return cursor + 1, [PlayedBlock(self.mic.chunk_time + BLOCK / RATE, block, RATE)]
