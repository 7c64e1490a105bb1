"""The ear: endpointed audio -> streaming recognizer -> partial and final transcripts.

Synchronous and clock-free: feed it chunks (from a file or a microphone queue) and it returns
events. The caller decides which thread runs it; the recognizer must stay on that thread.

Finals at pauses: at each pause inside an utterance (``vad.pause_ms`` of silence) the ``Pause``
carries the very text the ``Utterance`` will have if the user says no more (the answer can start
on it, and the final costs nothing at the endpoint). A recognizer with a ``checkpoint`` (the words
so far as its final would have them, without ending the utterance: pocketsphinx) decodes the
whole utterance in one go, pauses included, as a batch decode does: when the user stops there,
the checkpoint is the final. Any other (vosk) finishes the words so far at the pause; when the
user goes on (``Resume``) it continues the same utterance in a new segment (``resume_utterance``,
where it has one) and the final joins the segments -- which loses words at the cuts (the new
segment starts without the old one's context), hence the checkpoint where there is one.

The turn detector (``edgevoice.ear.turn_detector``, optional): at each pause it hears the last
seconds of the utterance and, when it says the turn is complete, the utterance ends (reason
``turn_complete``) long before the silence fallback (the segmenter's hangover): right there, or,
when the pause came sooner than ``turn_min_silence_ms`` of silence, on the frame that reaches
it, unless speech comes back first (then the verdict is void and the utterance goes on). Asking
at a short pause lets the detector's work overlap that wait.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Optional, Union

import numpy as np

from edgevoice.asr.protocol import Recognizer, Transcript, Word
from edgevoice.audio.format import AudioChunk
from edgevoice.config import VadConfig
from edgevoice.ear.endpoint import (
    SpeechAudio,
    SpeechEnd,
    SpeechPause,
    SpeechResume,
    SpeechStart,
    UtteranceSegmenter,
)

if TYPE_CHECKING:
    from edgevoice.ear.turn_detector import TurnDetector

# Silence kept from before the speaker resumes, fed to the recognizer ahead of the new words
# (its first frames need some context, like the endpointer's pre-roll).
RESUME_LEAD_MS = 150


@dataclass(frozen=True)
class Partial:
    """The hypothesis so far for the utterance that started at ``start_ms``."""

    text: str
    start_ms: float


@dataclass(frozen=True)
class Pause:
    """The user went quiet (``vad.pause_ms``) after saying ``text``; they may still go on.
    ``final``: ``text`` is exactly the ``Utterance``'s if they do not (finals at pauses)."""

    text: str
    start_ms: float
    at_ms: float
    final: bool = False
    speech_end_ms: float = 0.0


@dataclass(frozen=True)
class Resume:
    """The user went on after a ``Pause`` of the utterance that started at ``start_ms``: what
    was started on the pause's text is premature."""

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


@dataclass(frozen=True)
class NoWords:
    """An utterance ended without a word (a cough, a door): nothing to answer."""

    start_ms: float
    end_ms: float


TranscriberEvent = Union[SpeechStart, Partial, Pause, Resume, Utterance, NoWords]


def join_segments(segments: list[tuple[float, Transcript]], start_ms: float) -> Transcript:
    """One final from the segments of an utterance: ``(audio start ms, transcript)`` each, word
    times moved onto the utterance's own (seconds from ``start_ms``)."""
    words: list[Word] = []
    for seg_start, transcript in segments:
        shift = (seg_start - start_ms) / 1000.0
        words += [replace(w, start=round(w.start + shift, 3), end=round(w.end + shift, 3))
                  for w in transcript.words]
    text = " ".join(t.text.strip() for _, t in segments if t.text.strip())
    return Transcript(text, is_final=True, words=tuple(words))


class StreamingTranscriber:
    """Runs the segmenter and recognizer together; utterances with no words are dropped.

    ``finals_at_pauses`` (default on): see the module docstring; off, a pause only asks for a
    partial and the recognizer finishes once, at the end. ``turn_detector``: asked at each pause
    (with finals at pauses) whether the turn is complete (``turn_threshold``), on the last
    ``turn_audio_s`` of the utterance; ``decisions`` keeps its last answers for reports.
    """

    def __init__(self, vad: VadConfig, recognizer: Recognizer, partial_interval_ms: int = 250,
                 *, finals_at_pauses: bool = True,
                 turn_detector: Optional[TurnDetector] = None, turn_threshold: float = 0.5,
                 turn_audio_s: float = 8.0, turn_min_silence_ms: float = 0.0):
        self.recognizer = recognizer
        self.segmenter = UtteranceSegmenter(vad)
        self.turn_detector = turn_detector
        self.turn_threshold = turn_threshold
        self._turn_audio_ms = turn_audio_s * 1000
        self.turn_min_silence_ms = turn_min_silence_ms
        self._verdict: tuple[float, float] | None = None  # (silence floor, speech end) of a
        # "complete" said before ``turn_min_silence_ms`` of silence: the turn ends at the floor
        self._heard: deque[AudioChunk] = deque()  # the utterance's end, for the detector
        self._closed = False  # ended early by the detector: drop its leftover events
        self.decisions: deque[tuple[float, float]] = deque(maxlen=32)  # (probability, ms)
        self.partial_interval_ms = partial_interval_ms
        self.finals_at_pauses = finals_at_pauses
        self._start_ms: float | None = None
        self._last_partial = ""
        self._last_partial_at = float("-inf")
        self._segments: list[tuple[float, Transcript]] = []  # finished at pauses
        self._segment_start: float | None = None  # audio start of the segment being decoded
        self._held: deque[AudioChunk] = deque()  # silence after a pause's final, not yet fed
        self._finished = False  # the recognizer finished at a pause; no speech since
        self._checkpoint: Transcript | None = None  # taken at a pause; no speech since
        self.words_audio: Optional[Callable[[AudioChunk, bool], AudioChunk]] = None
        """Where the input has a view of its own for the recognizer (echo cancellation:
        ``edgevoice.ear.barge_in_words``): each chunk of an utterance goes through it, ``True``
        for the utterance's first, which may come back reaching further back."""
        self._first_chunk = False  # the next chunk is the utterance's first

    def _said_so_far(self, partial: str = "") -> str:
        return " ".join(t for t in [*(s.text.strip() for _, s in self._segments), partial.strip()]
                        if t)

    def feed(self, chunk: AudioChunk) -> Iterator[TranscriberEvent]:
        return self.handle(self.segmenter.feed(chunk))

    def flush(self) -> Iterator[TranscriberEvent]:
        """End of stream: finish an utterance still open."""
        return self.handle(self.segmenter.flush())

    def handle(self, events: Iterable) -> Iterator[TranscriberEvent]:
        """Segmenter events in, transcriber events out (activation modes feed it their own)."""
        for event in events:
            if self._closed and not isinstance(event, SpeechStart):
                continue  # the rest of a block the endpointer had already framed
            if isinstance(event, SpeechStart):
                self._closed = False
                self._verdict = None
                self._heard.clear()
                self._start_ms = event.start_ms
                self._last_partial = ""
                self._last_partial_at = float("-inf")
                self._segments, self._segment_start = [], None
                self._held.clear()
                self._finished = False
                self._checkpoint = None
                self._first_chunk = True
                yield event
            elif isinstance(event, SpeechAudio):
                if self.turn_detector is not None:
                    self._keep_heard(event.chunk)
                    if self._verdict is not None and event.chunk.end_ms >= self._verdict[0]:
                        yield from self._end_complete(self._verdict[1])
                        continue
                if self._finished:  # silence after a pause's final: kept for a resume
                    self._hold(event.chunk)
                    continue
                chunk = self._words(event.chunk)
                if self._segment_start is None:
                    self._segment_start = chunk.start_ms
                self.recognizer.accept(chunk)
                now = event.chunk.end_ms
                if now - self._last_partial_at >= self.partial_interval_ms:
                    self._last_partial_at = now
                    text = self._said_so_far(self.recognizer.partial())
                    if text and text != self._last_partial:
                        self._last_partial = text
                        yield Partial(text, self._start_ms or 0.0)
            elif isinstance(event, SpeechPause):
                yield from self._pause(event)
            elif isinstance(event, SpeechResume):
                self._verdict = None  # "complete", but they went on within the floor
                if self._checkpoint is not None:
                    self._checkpoint = None
                    yield Resume(self._start_ms or 0.0, event.at_ms)
                elif self._finished:
                    yield from self._resume(event)
            elif isinstance(event, SpeechEnd):
                self._verdict = None
                start = self._start_ms if self._start_ms is not None else event.end_ms
                transcript = self._final(start)
                self._start_ms = None
                if transcript.text.strip():
                    yield Utterance(start, event.end_ms, transcript, event.reason)
                else:
                    yield NoWords(start, event.end_ms)

    def _pause(self, event: SpeechPause) -> Iterator[TranscriberEvent]:
        start = self._start_ms or 0.0
        if not self.finals_at_pauses:
            paused = getattr(self.recognizer, "speech_paused", None)
            if paused is not None:  # a recognizer holding audio back decodes it now
                paused()
            text = self._said_so_far(self.recognizer.partial())
            if text:
                yield Pause(text, start, event.at_ms, False, event.speech_end_ms)
            return
        checkpoint = getattr(self.recognizer, "checkpoint", None)
        if checkpoint is not None:  # the utterance goes on being decoded, through the pause
            self._checkpoint = checkpoint()
            text = self._checkpoint.text.strip()
        else:
            if self._segment_start is not None:
                self._segments.append((self._segment_start, self.recognizer.finish()))
                self._segment_start = None
            self._finished = True
            text = self._said_so_far()
        if text:
            yield Pause(text, start, event.at_ms, True, event.speech_end_ms)
            if self.turn_detector is not None and self._turn_complete(text):
                floor = event.speech_end_ms + self.turn_min_silence_ms
                if event.at_ms >= floor:
                    yield from self._end_complete(event.speech_end_ms)
                else:  # the silence must still reach the floor: end then, unless they go on
                    self._verdict = (floor, event.speech_end_ms)

    def _end_complete(self, speech_end_ms: float) -> Iterator[TranscriberEvent]:
        """The detector's "complete" stands: end the utterance at its last speech."""
        self._verdict = None
        list(self.segmenter.end_turn("turn_complete"))  # the endpointer starts afresh
        yield from self.handle([SpeechEnd(speech_end_ms, "turn_complete")])
        self._closed = True

    def _turn_complete(self, text: str) -> bool:
        audio = np.concatenate([c.samples() for c in self._heard]) if self._heard else \
            np.zeros(0, np.int16)
        t0 = time.perf_counter()
        p = float(self.turn_detector.probability(audio, text))
        self.decisions.append((round(p, 3), round((time.perf_counter() - t0) * 1000, 1)))
        return p >= self.turn_threshold

    def _keep_heard(self, chunk: AudioChunk) -> None:
        self._heard.append(chunk)
        while self._heard and chunk.end_ms - self._heard[0].end_ms >= self._turn_audio_ms:
            self._heard.popleft()

    def _resume(self, event: SpeechResume) -> Iterator[TranscriberEvent]:
        self._finished = False
        resume = getattr(self.recognizer, "resume_utterance", None)
        if resume is not None:
            resume()
        held, self._held = list(self._held), deque()
        for chunk in map(self._words, held):
            if self._segment_start is None:
                self._segment_start = chunk.start_ms
            self.recognizer.accept(chunk)
        yield Resume(self._start_ms or 0.0, event.at_ms)

    def _words(self, chunk: AudioChunk) -> AudioChunk:
        """The chunk as the recognizer hears it (``words_audio``)."""
        first, self._first_chunk = self._first_chunk, False
        return chunk if self.words_audio is None else self.words_audio(chunk, first)

    def _hold(self, chunk: AudioChunk) -> None:
        self._held.append(chunk)
        while self._held and chunk.end_ms - self._held[0].end_ms >= RESUME_LEAD_MS:
            self._held.popleft()

    def _final(self, start: float) -> Transcript:
        """The utterance's final: the checkpoint of the pause it ended in (the decoder's own
        end is left to the recognizer's ``reset``), else its segments, the last one finished
        now unless a pause did."""
        if self._checkpoint is not None:
            transcript, self._checkpoint = self._checkpoint, None
            self.recognizer.reset()
            self._segments, self._segment_start = [], None
            return transcript
        if self._segment_start is not None or not self._segments:
            seg_start = self._segment_start if self._segment_start is not None else start
            self._segments.append((seg_start, self.recognizer.finish()))
        segments, self._segments, self._segment_start = self._segments, [], None
        self._held.clear()
        self._finished = False
        if len(segments) == 1:
            return segments[0][1]
        return join_segments(segments, start)

    def end_turn(self, reason: str) -> Iterator[TranscriberEvent]:
        """End the open utterance now (a turn detector, or the agent, decided it is complete)."""
        return self.handle(self.segmenter.end_turn(reason))


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
