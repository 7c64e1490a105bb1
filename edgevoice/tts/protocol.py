"""The ``Synthesizer`` protocol: one clause of text in, one buffer of PCM audio out.

A whole clause is rendered to a buffer rather than played by the engine, because we play audio
ourselves: playback can then be stopped at once (barge-in) and what was played is known.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from edgevoice.audio.format import AudioChunk, AudioFormat


@runtime_checkable
class Synthesizer(Protocol):
    """A text-to-speech engine. Calls may block; callers run them off the event loop."""

    name: str
    format: AudioFormat  # format of the chunks ``synthesize`` returns

    def synthesize(self, text: str) -> AudioChunk:
        """Render ``text`` (one clause, already cleaned) to audio; empty text gives no samples."""
        ...

    def close(self) -> None:
        """Release the engine; further calls fail. Safe to call twice."""
        ...
