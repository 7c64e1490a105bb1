"""Keep a model's thought channel out of what is spoken, shown and remembered.

Gemma 4 writes its reasoning between ``<|channel>`` and ``<channel|>`` (``<|channel>thought\\n
...<channel|>``), even with thinking off now and then (an empty or short block). Its GGUF marks
both markers USER_DEFINED, so llama.cpp renders them as text: left alone they would be read out
by the TTS, land in the turn event and be stored in the history. The filter works on token ids,
not text, so a marker can never be split across two deltas and slip through.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

OPEN_MARKER = "<|channel>"
CLOSE_MARKER = "<channel|>"


@dataclass(frozen=True)
class ThoughtMarkers:
    """The token ids of a vocabulary's thought-channel markers."""

    open_id: int
    close_id: int

    @classmethod
    def find(cls, single_token: Callable[[str], int | None]) -> ThoughtMarkers | None:
        """The markers if the vocabulary has both as single tokens (``single_token`` maps a
        marker's text to its id, or None), else None (models without a thought channel)."""
        opened, closed = single_token(OPEN_MARKER), single_token(CLOSE_MARKER)
        if opened is None or closed is None:
            return None
        return cls(opened, closed)


class ThoughtFilter:
    """Per reply: ``speak(token)`` is False for the markers and everything between them.

    A reply that ends inside a thought says nothing more; a stray closing marker is dropped.
    ``thought_tokens`` counts what was held back (for the log and the benchmark).
    """

    def __init__(self, markers: ThoughtMarkers | None) -> None:
        self._markers = markers
        self.inside = False
        self.thought_tokens = 0

    def speak(self, token: int) -> bool:
        markers = self._markers
        if markers is None:
            return True
        if token == markers.open_id:
            self.inside = True
        elif token == markers.close_id:
            self.inside = False
        elif not self.inside:
            return True
        self.thought_tokens += 1
        return False
