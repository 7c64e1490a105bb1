"""Endpointing: per-frame speech flags -> utterances (the ear's third stage).

- ``Endpointer``: a pure, clock-free state machine over (frame, is_speech) that turns frame
  decisions into utterances (onset, hangover, pre-roll, maximum length). Times come from the
  frames' own ``start_ms``, never from a clock, so a replayed file gives what the microphone would.
- ``UtteranceSegmenter`` glues the gate (``edgevoice.ear.gate``) and the endpointer together and
  re-chunks arbitrary chunk sizes into VAD frames. It tells the detector whether an utterance is
  open: the neural VAD judges only frames that may start one.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

from edgevoice.audio.format import PCM16_MONO_16K, AudioChunk, AudioFormat
from edgevoice.config import VadConfig
from edgevoice.ear.gate import SpeechDetector, _ceil_frames


@dataclass(frozen=True)
class SpeechStart:
    """An utterance began. ``start_ms`` includes the pre-roll."""

    start_ms: float


@dataclass(frozen=True)
class SpeechAudio:
    """Audio of the current utterance, in order, pre-roll first."""

    chunk: AudioChunk


@dataclass(frozen=True)
class SpeechEnd:
    """The utterance ended. ``end_ms`` is the end of its last speech frame; ``reason`` is
    ``"silence"`` (hangover elapsed), ``"max_length"`` or ``"end_of_stream"``."""

    end_ms: float
    reason: str


@dataclass(frozen=True)
class SpeechPause:
    """``pause_ms`` of silence inside an utterance, which may still go on: the moment to start
    work on the words so far. ``speech_end_ms`` is the end of the last speech frame."""

    speech_end_ms: float
    at_ms: float


@dataclass(frozen=True)
class SpeechResume:
    """Speech came back after a ``SpeechPause``, inside the same utterance: the words said at
    the pause were not the end. Comes before the audio of the frame that resumed (``at_ms`` is
    its start)."""

    at_ms: float


SegmentEvent = SpeechStart | SpeechAudio | SpeechPause | SpeechResume | SpeechEnd


class Endpointer:
    """Pure state machine from per-frame speech flags to utterance events.

    - onset: ``onset_ms`` of consecutive speech frames start an utterance (at least one frame);
    - pre-roll: up to ``preroll_ms`` of audio before the onset run is sent first, so the first
      (often unvoiced, hence rejected) syllable is not cut off;
    - hangover: ``hangover_ms`` of consecutive non-speech ends it; those frames are still sent,
      since the recogniser needs the trailing silence to finish its last word;
    - pause: after ``pause_ms`` of that silence (if shorter than the hangover) a ``SpeechPause``
      comes first, once per silence run, so work can start before the end is certain; when
      speech comes back before the hangover, a ``SpeechResume`` says that work was premature;
    - ending early: ``end_turn`` closes the utterance now (a turn detector decided it is done);
    - maximum length: after ``max_utterance_s`` (pre-roll included) it is cut, and a new utterance
      may start after a fresh onset.
    Every sample belongs to at most one utterance: the pre-roll never reaches back into audio
    already sent. Frames are expected back to back; a frame that does not follow the previous one
    drops the pre-roll collected so far (it would not be contiguous audio).
    """

    def __init__(self, cfg: VadConfig, frame_ms: int) -> None:
        if frame_ms <= 0:
            raise ValueError(f"frame_ms must be positive, got {frame_ms}")
        self.frame_ms = frame_ms
        self._onset = max(1, _ceil_frames(cfg.onset_ms, frame_ms))
        self._hangover = max(1, _ceil_frames(cfg.hangover_ms, frame_ms))
        pause = max(1, _ceil_frames(cfg.pause_ms, frame_ms)) if cfg.pause_ms > 0 else 0
        self._pause = pause if pause < self._hangover else 0
        self._max = max(1, int(cfg.max_utterance_s * 1000.0 // frame_ms))
        preroll = _ceil_frames(cfg.preroll_ms, frame_ms)
        self._preroll = max(0, min(preroll, self._max - self._onset))
        self._recent: deque[AudioChunk] = deque(maxlen=self._preroll + self._onset)
        self.reset()

    @property
    def in_speech(self) -> bool:
        return self._in_speech

    def reset(self) -> None:
        """Back to idle, dropping any open utterance without an event."""
        self._recent.clear()
        self._run = 0
        self._in_speech = False
        self._frames = 0
        self._silence = 0
        self._paused = False  # a SpeechPause was sent for the current silence run
        self._last_speech_end = 0.0

    def end_turn(self, reason: str) -> list[SegmentEvent]:
        """Close the open utterance now, at the end of its last speech frame (nothing if none
        is open)."""
        return self._end(reason) if self._in_speech else []

    def process(self, frame: AudioChunk, is_speech: bool) -> list[SegmentEvent]:
        """Advance by one frame of exactly ``frame_ms``."""
        if abs(frame.duration_ms - self.frame_ms) > 1e-6:
            raise ValueError(f"expected a {self.frame_ms} ms frame, got {frame.duration_ms:g} ms")
        if self._in_speech:
            return self._continue(frame, is_speech)
        if self._recent and abs(self._recent[-1].end_ms - frame.start_ms) > 1e-6:
            self._recent.clear()
            self._run = 0
        self._recent.append(frame)
        self._run = self._run + 1 if is_speech else 0
        if self._run < self._onset:
            return []
        return self._start(frame)

    def flush(self) -> list[SegmentEvent]:
        """End of stream: close an open utterance; an unfinished onset is dropped."""
        events: list[SegmentEvent] = []
        if self._in_speech:
            events.append(SpeechEnd(self._last_speech_end, "end_of_stream"))
        self.reset()
        return events

    def _start(self, frame: AudioChunk) -> list[SegmentEvent]:
        chunk = AudioChunk(
            b"".join(f.data for f in self._recent), frame.format, self._recent[0].start_ms
        )
        events: list[SegmentEvent] = [SpeechStart(chunk.start_ms), SpeechAudio(chunk)]
        self._frames = len(self._recent)
        self._recent.clear()
        self._run = 0
        self._in_speech = True
        self._silence = 0
        self._paused = False
        self._last_speech_end = frame.end_ms
        if self._frames >= self._max:
            events.extend(self._end("max_length"))
        return events

    def _continue(self, frame: AudioChunk, is_speech: bool) -> list[SegmentEvent]:
        events: list[SegmentEvent] = []
        if is_speech and self._paused:
            events.append(SpeechResume(frame.start_ms))
        events.append(SpeechAudio(frame))
        self._frames += 1
        if is_speech:
            self._silence = 0
            self._paused = False
            self._last_speech_end = frame.end_ms
        else:
            self._silence += 1
            if self._silence == self._pause:
                self._paused = True
                events.append(SpeechPause(self._last_speech_end, frame.end_ms))
        if self._silence >= self._hangover:
            events.extend(self._end("silence"))
        elif self._frames >= self._max:
            events.extend(self._end("max_length"))
        return events

    def _end(self, reason: str) -> list[SegmentEvent]:
        end = SpeechEnd(self._last_speech_end, reason)
        self.reset()
        return [end]


class UtteranceSegmenter:
    """Chunks of any size in, utterance events out.

    The timeline starts at the first chunk's ``start_ms`` (after construction, ``reset`` or
    ``flush``) and advances by the bytes received, so chunk sizes never change the result. A chunk
    that starts more than half a frame later than expected means audio was lost: the partial frame
    is dropped and the timeline jumps to the chunk's ``start_ms``. Earlier or missing (0)
    ``start_ms`` values on later chunks are ignored.
    """

    def __init__(self, cfg: VadConfig, fmt: AudioFormat = PCM16_MONO_16K) -> None:
        if fmt.channels != 1 or fmt.width != 2:
            raise ValueError(f"the segmenter needs mono int16 audio, got {fmt}")
        self.cfg = cfg
        self.format = fmt
        self._detector = SpeechDetector(cfg, fmt.rate)
        self._endpointer = Endpointer(cfg, cfg.frame_ms)
        self._frame_bytes = fmt.bytes_for_ms(cfg.frame_ms)
        self._pending = bytearray()
        self._anchor_ms: float | None = None
        self._consumed = 0  # bytes framed since the anchor

    @property
    def in_speech(self) -> bool:
        return self._endpointer.in_speech

    def feed(self, chunk: AudioChunk) -> Iterator[SegmentEvent]:
        """Process ``chunk`` now (eagerly, even if the result is not iterated) and return its
        events."""
        if chunk.format != self.format:
            raise ValueError(f"chunk format {chunk.format} != segmenter format {self.format}")
        if self._anchor_ms is None:
            self._anchor_ms = chunk.start_ms
        else:
            expected = self._anchor_ms + self.format.ms_for_bytes(
                self._consumed + len(self._pending)
            )
            if chunk.start_ms - expected > self.cfg.frame_ms / 2:
                self._pending.clear()
                self._anchor_ms = chunk.start_ms
                self._consumed = 0
        self._pending += chunk.data
        events: list[SegmentEvent] = []
        fb = self._frame_bytes
        n_frames = len(self._pending) // fb
        for i in range(n_frames):
            data = bytes(self._pending[i * fb : (i + 1) * fb])
            start = self._anchor_ms + self.format.ms_for_bytes(self._consumed)
            self._consumed += fb
            frame = AudioChunk(data, self.format, start)
            speech = self._detector.is_speech(data, may_start=not self._endpointer.in_speech)
            events.extend(self._endpointer.process(frame, speech))
        del self._pending[: n_frames * fb]
        return iter(events)

    def end_turn(self, reason: str) -> Iterator[SegmentEvent]:
        """Close the open utterance now (the turn detector says the user is done); the audio
        that follows starts afresh, with a new onset."""
        return iter(self._endpointer.end_turn(reason))

    def flush(self) -> Iterator[SegmentEvent]:
        """End of stream: close an open utterance (a trailing partial frame is dropped) and get
        ready for a new stream."""
        events = self._endpointer.flush()
        self.reset()
        return iter(events)

    def reset(self) -> None:
        """Drop all state without events (e.g. after the input device was reopened)."""
        self._pending.clear()
        self._anchor_ms = None
        self._consumed = 0
        self._endpointer.reset()
        self._detector.reset()
