"""The ``Recognizer`` protocol and the ``Transcript`` it produces."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Protocol

from edgevoice.audio.format import AudioChunk


@dataclass(frozen=True)
class Word:
    """A recognized word; times in seconds from the start of the utterance audio."""

    text: str
    start: float
    end: float
    confidence: Optional[float] = None


@dataclass(frozen=True)
class Transcript:
    text: str
    is_final: bool
    words: tuple[Word, ...] = ()

    @property
    def confidence(self) -> Optional[float]:
        """Mean word confidence, when the engine reports one."""
        confs = [w.confidence for w in self.words if w.confidence is not None]
        return sum(confs) / len(confs) if confs else None


class Recognizer(Protocol):
    """One utterance at a time: ``accept`` audio, then ``finish`` for the final transcript.

    Not thread-safe: an instance lives on one worker thread. Audio is 16-bit mono at
    ``sample_rate``.
    """

    name: str
    sample_rate: int

    def accept(self, chunk: AudioChunk) -> None:
        """Feed audio of the current utterance."""
        ...

    def partial(self) -> str:
        """The hypothesis so far. Separate from ``accept`` because its cost grows with the
        utterance (a backtrace): the caller asks a few times a second, not every block."""
        ...

    def finish(self) -> Transcript:
        """End the utterance and return its final transcript; the next ``accept`` starts anew."""
        ...

    def reset(self) -> None:
        """Abandon the current utterance without decoding it to the end."""
        ...

    def close(self) -> None: ...
