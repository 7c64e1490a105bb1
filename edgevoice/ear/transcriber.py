"""The ear: endpointed audio -> streaming recognizer -> partial and final transcripts.

Synchronous and clock-free: feed it chunks (from a file or a microphone queue) and it returns
events. The caller decides which thread runs it; the recognizer must stay on that thread.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Union

from edgevoice.asr.protocol import Recognizer, Transcript
from edgevoice.audio.format import AudioChunk
from edgevoice.config import VadConfig
from edgevoice.ear.endpoint import (
    SpeechAudio,
    SpeechEnd,
    SpeechPause,
    SpeechStart,
    UtteranceSegmenter,
)


@dataclass(frozen=True)
class Partial:
    """The hypothesis so far for the utterance that started at ``start_ms``."""

    text: str
    start_ms: float


@dataclass(frozen=True)
class Pause:
    """The user went quiet (``vad.pause_ms``) after saying ``text``; they may still go on."""

    text: str
    start_ms: float
    at_ms: float


@dataclass(frozen=True)
class Utterance:
    """A finished utterance on the stream timeline; ``end_ms`` is the end of the last speech."""

    start_ms: float
    end_ms: float
    transcript: Transcript
    reason: str

    @property
    def text(self) -> str:
        return self.transcript.text


TranscriberEvent = Union[SpeechStart, Partial, Pause, Utterance]


class StreamingTranscriber:
    """Runs the segmenter and recognizer together; utterances with no words are dropped."""

    def __init__(self, vad: VadConfig, recognizer: Recognizer, partial_interval_ms: int = 250):
        self.recognizer = recognizer
        self.segmenter = UtteranceSegmenter(vad)
        self.partial_interval_ms = partial_interval_ms
        self._start_ms: float | None = None
        self._last_partial = ""
        self._last_partial_at = float("-inf")

    def feed(self, chunk: AudioChunk) -> Iterator[TranscriberEvent]:
        return self.handle(self.segmenter.feed(chunk))

    def flush(self) -> Iterator[TranscriberEvent]:
        """End of stream: finish an utterance still open."""
        return self.handle(self.segmenter.flush())

    def handle(self, events: Iterable) -> Iterator[TranscriberEvent]:
        """Segmenter events in, transcriber events out (activation modes feed it their own)."""
        for event in events:
            if isinstance(event, SpeechStart):
                self._start_ms = event.start_ms
                self._last_partial = ""
                self._last_partial_at = float("-inf")
                yield event
            elif isinstance(event, SpeechAudio):
                self.recognizer.accept(event.chunk)
                now = event.chunk.end_ms
                if now - self._last_partial_at >= self.partial_interval_ms:
                    self._last_partial_at = now
                    text = self.recognizer.partial()
                    if text and text != self._last_partial:
                        self._last_partial = text
                        yield Partial(text, self._start_ms or 0.0)
            elif isinstance(event, SpeechPause):
                paused = getattr(self.recognizer, "speech_paused", None)
                if paused is not None:  # a recognizer holding audio back decodes it now
                    paused()
                text = self.recognizer.partial()
                if text.strip():
                    yield Pause(text, self._start_ms or 0.0, event.at_ms)
            elif isinstance(event, SpeechEnd):
                transcript = self.recognizer.finish()
                start = self._start_ms if self._start_ms is not None else event.end_ms
                self._start_ms = None
                if transcript.text.strip():
                    yield Utterance(start, event.end_ms, transcript, event.reason)


def transcribe_chunks(
    chunks: Iterable[AudioChunk], transcriber: StreamingTranscriber
) -> Iterator[Utterance]:
    """Final utterances of a finite stream (partials and starts are skipped)."""
    for chunk in chunks:
        for event in transcriber.feed(chunk):
            if isinstance(event, Utterance):
                yield event
    for event in transcriber.flush():
        if isinstance(event, Utterance):
            yield event
