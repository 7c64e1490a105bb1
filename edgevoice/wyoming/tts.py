"""The `tts` service: text (whole or streamed) -> clauses -> our synthesizer -> audio events.

Text is split the way the agent splits an answer (``ClauseSplitter``), so the first audio goes
out as soon as the first clause is rendered, not when the whole text is.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from concurrent.futures import Executor

from wyoming.audio import AudioChunk as WyChunk
from wyoming.audio import AudioStart, AudioStop

from edgevoice.tts.clauses import ClauseSplitter
from edgevoice.tts.protocol import Synthesizer

CHUNK_MS = 100  # audio per audio-chunk event


def splitter(first_clause_max_words: int) -> ClauseSplitter:
    return ClauseSplitter(first_max_words=first_clause_max_words)


def clauses_of(text: str, first_clause_max_words: int) -> list[str]:
    """Every clause of a whole text, in order."""
    split = splitter(first_clause_max_words)
    return [*split.push(text), *split.flush()]


async def render(synth: Synthesizer, clauses: Iterable[str], thread: Executor
                 ) -> AsyncIterator[bytes]:
    """PCM of each clause as soon as it is rendered (the synthesizer blocks: off the loop)."""
    loop = asyncio.get_running_loop()
    for clause in clauses:
        audio = await loop.run_in_executor(thread, synth.synthesize, clause)
        if audio.data:
            yield audio.data


class AudioEvents:
    """Wyoming audio events for one stream of PCM in the synthesizer's format."""

    def __init__(self, synth: Synthesizer) -> None:
        fmt = synth.format
        self.rate, self.width, self.channels = fmt.rate, fmt.width, fmt.channels
        self._bytes = fmt.bytes_for_ms(CHUNK_MS)
        self.sent_ms = 0.0

    def start(self):
        return AudioStart(self.rate, self.width, self.channels, timestamp=0).event()

    def chunks(self, pcm: bytes) -> list:
        out = []
        for i in range(0, len(pcm), self._bytes):
            piece = pcm[i:i + self._bytes]
            out.append(WyChunk(self.rate, self.width, self.channels, piece,
                               timestamp=int(self.sent_ms)).event())
            self.sent_ms += 1000 * len(piece) / (self.rate * self.width * self.channels)
        return out

    def stop(self):
        return AudioStop(timestamp=int(self.sent_ms)).event()
