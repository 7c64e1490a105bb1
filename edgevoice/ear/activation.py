"""Activation modes: which speech becomes an utterance (and so a turn).

- ``always``: every endpointed utterance (open mic), as ``StreamingTranscriber``.
- ``push_to_talk``: exactly the audio between a press and a release (plus the VAD pre-roll from
  before the press); the release ends the utterance at once, with no hangover wait. No VAD runs.
- ``wake_word``: the endpointer's speech goes to a keyphrase spotter, not to the recognizer; once
  the phrase is heard, the rest of that utterance, or else the next one to begin within
  ``wake_timeout_s``, is recognized and becomes the turn.

Everything runs on the ear thread inside ``feed`` (never in the PortAudio callback). Presses,
releases and new settings come from other threads through a queue and take effect at the next
block, in stream order.
"""

from __future__ import annotations

import dataclasses
import itertools
import queue
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, Protocol

from edgevoice.asr.protocol import Recognizer
from edgevoice.audio.format import AudioChunk
from edgevoice.config import ActivationConfig, Config, VadConfig
from edgevoice.ear.endpoint import SpeechAudio, SpeechEnd, SpeechStart
from edgevoice.ear.transcriber import StreamingTranscriber, Utterance

if TYPE_CHECKING:
    from edgevoice.ear.turn_detector import TurnDetector


@dataclass(frozen=True)
class Activation:
    """The gate opened (``active``) or closed, at ``at_ms`` on the stream timeline."""

    mode: str
    active: bool
    reason: str
    at_ms: float


class Spotter(Protocol):
    phrase: str

    def start(self) -> None: ...

    def process(self, pcm: bytes) -> bool: ...

    def end(self) -> None: ...


def make_spotter(activation: ActivationConfig, sample_rate: int = 16000) -> Optional[Spotter]:
    """The wake-phrase spotter ``activation`` needs (None unless mode is wake_word). Raises
    ``ConfigError`` for a phrase the dictionary can't pronounce: call it before going live."""
    if activation.mode != "wake_word":
        return None
    from edgevoice.asr.keyphrase import PocketsphinxSpotter

    return PocketsphinxSpotter(activation.wake_phrase, activation.wake_threshold,
                               activation.wake_pronunciations, sample_rate)


def make_transcriber(cfg: Config, recognizer: Recognizer,
                     turn_detector: Optional[TurnDetector] = None) -> ActivatedTranscriber:
    """The agent's ear. With a turn detector, silence alone ends a turn only after
    ``turn.fallback_ms`` (the detector ends it at a pause when it hears the user is done)."""
    vad = cfg.vad
    if turn_detector is not None:
        vad = dataclasses.replace(vad, hangover_ms=cfg.turn.fallback_ms)
    return ActivatedTranscriber(vad, recognizer, cfg.asr.partial_interval_ms, cfg.activation,
                                make_spotter(cfg.activation, cfg.audio.sample_rate),
                                turn_detector=turn_detector, turn_threshold=cfg.turn.threshold,
                                turn_audio_s=cfg.turn.max_audio_s,
                                turn_min_silence_ms=cfg.turn.min_silence_ms)


class ActivatedTranscriber(StreamingTranscriber):
    """A ``StreamingTranscriber`` whose utterances pass through the activation mode."""

    def __init__(self, vad: VadConfig, recognizer: Recognizer, partial_interval_ms: int = 250,
                 activation: ActivationConfig | None = None,
                 spotter: Optional[Spotter] = None, **options) -> None:
        super().__init__(vad, recognizer, partial_interval_ms, **options)
        self.activation = activation or ActivationConfig()
        if self.activation.mode == "wake_word" and spotter is None:
            raise ValueError("wake_word mode needs a spotter (see make_spotter)")
        self._spotter = spotter
        self._vad = vad
        self._commands: queue.SimpleQueue = queue.SimpleQueue()
        self._preroll: deque[AudioChunk] = deque()
        self._ptt_open = False
        self._ptt_cut = False
        self._ptt_start_ms = 0.0
        self._last_end_ms = 0.0
        self._awake_until: Optional[float] = None  # wake_word: stream time the window closes
        self._awake_in_speech = False

    # -- any thread ---------------------------------------------------------------------------

    @property
    def mode(self) -> str:
        return self.activation.mode

    @property
    def active(self) -> bool:
        """The gate is open now: push-to-talk held, or awake after the wake phrase (or always)."""
        if self.mode == "push_to_talk":
            return self._ptt_open
        if self.mode == "wake_word":
            return self._awake_until is not None
        return True

    def press(self) -> None:
        self._commands.put(("press", None))

    def release(self) -> None:
        self._commands.put(("release", None))

    def reconfigure(self, activation: ActivationConfig, spotter: Optional[Spotter]) -> None:
        """Switch mode / phrase at the next block (build the spotter with ``make_spotter``)."""
        self._commands.put(("config", (activation, spotter)))

    # -- the ear thread -----------------------------------------------------------------------

    def feed(self, chunk: AudioChunk) -> Iterator:
        events = self._drain(chunk.start_ms)
        if self.mode == "push_to_talk":
            events += self._ptt_feed(chunk)
        elif self.mode == "wake_word":
            events += self._wake_events(self.segmenter.feed(chunk), chunk.end_ms)
        else:
            # lazily: a Pause reaches the agent (which starts the answer) before the turn
            # detector that follows it has run
            return itertools.chain(events, self.handle(self.segmenter.feed(chunk)))
        return iter(events)

    def flush(self) -> Iterator:
        events = self._drain(self._last_end_ms)
        if self.mode == "push_to_talk":
            events += self._ptt_release(self._last_end_ms)
        elif self.mode == "wake_word":
            events += self._wake_events(self.segmenter.flush(), self._last_end_ms)
        else:
            events += self.handle(self.segmenter.flush())
        return iter(events)

    def _drain(self, now_ms: float) -> list:
        events: list = []
        while True:
            try:
                name, arg = self._commands.get_nowait()
            except queue.Empty:
                return events
            if name == "press" and self.mode == "push_to_talk":
                events += self._ptt_press(now_ms)
            elif name == "release" and self.mode == "push_to_talk":
                events += self._ptt_release(now_ms)
            elif name == "config":
                events += self._switch(*arg, now_ms)

    def _switch(self, activation: ActivationConfig, spotter: Optional[Spotter],
                now_ms: float) -> list:
        """Drop whatever was open in the old mode (without a turn) and start the new one."""
        events = []
        if self.active and self.mode != "always":
            events.append(Activation(self.mode, False, "mode changed", now_ms))
        if self._spotter is not None:
            self._spotter.end()
        self.segmenter.reset()
        self.recognizer.reset()
        self._start_ms = None
        self._preroll.clear()
        self._ptt_open = self._ptt_cut = self._awake_in_speech = False
        self._awake_until = None
        self.activation, self._spotter = activation, spotter
        return events

    # -- push-to-talk ---------------------------------------------------------------------------

    def _ptt_feed(self, chunk: AudioChunk) -> list:
        self._last_end_ms = chunk.end_ms
        if not self._ptt_open:
            self._preroll.append(chunk)
            while self._preroll and chunk.end_ms - self._preroll[0].start_ms > max(
                    self._vad.preroll_ms, chunk.duration_ms):
                self._preroll.popleft()
            return []
        if self._ptt_cut:
            return []
        events = list(self.handle([SpeechAudio(chunk)]))
        if chunk.end_ms - self._ptt_start_ms >= self._vad.max_utterance_s * 1000:
            self._ptt_cut = True
            events += self.handle([SpeechEnd(chunk.end_ms, "max_length")])
        return events

    def _ptt_press(self, now_ms: float) -> list:
        if self._ptt_open:
            return []
        self._ptt_open, self._ptt_cut = True, False
        # The pre-roll keeps the syllable spoken while the button was going down.
        kept = [c for c in self._preroll if c.end_ms <= now_ms + 1e-6]
        self._preroll.clear()
        self._ptt_start_ms = kept[0].start_ms if kept else now_ms
        events: list = [Activation(self.mode, True, "push-to-talk pressed", now_ms)]
        events += self.handle([SpeechStart(self._ptt_start_ms), *(SpeechAudio(c) for c in kept)])
        return events

    def _ptt_release(self, now_ms: float) -> list:
        if not self._ptt_open:
            return []
        self._ptt_open = False
        events: list = [Activation(self.mode, False, "push-to-talk released", now_ms)]
        if not self._ptt_cut:
            end = max(self._last_end_ms, self._ptt_start_ms)
            events += self.handle([SpeechEnd(end, "push_to_talk")])
        return events

    # -- wake word ------------------------------------------------------------------------------

    def _wake_events(self, segments: Iterator, now_ms: float) -> list:
        self._last_end_ms = now_ms
        events: list = []
        for event in segments:
            if self._awake_until is None:
                events += self._asleep(event)
            elif isinstance(event, SpeechStart) and not self._awake_in_speech:
                self._awake_in_speech = True
                events += self.handle([event])
            elif self._awake_in_speech:
                out = list(self.handle([event]))
                events += out
                if isinstance(event, SpeechEnd):
                    self._awake_in_speech = False
                    if any(isinstance(e, Utterance) for e in out):
                        self._awake_until = None
                        events.append(Activation(self.mode, False, "request heard", event.end_ms))
        if (self._awake_until is not None and not self._awake_in_speech
                and now_ms > self._awake_until):
            self._awake_until = None
            events.append(Activation(self.mode, False, "no request after the wake phrase",
                                     now_ms))
        return events

    def _asleep(self, event) -> list:
        spotter = self._spotter
        if isinstance(event, SpeechStart):
            spotter.start()
        elif isinstance(event, SpeechEnd):
            spotter.end()
        elif isinstance(event, SpeechAudio) and spotter.process(event.chunk.data):
            spotter.end()
            at = event.chunk.end_ms
            self._awake_until = at + self.activation.wake_timeout_s * 1000
            self._awake_in_speech = True
            # What follows the phrase in this utterance is the request ("hey computer, what
            # time is it"); the SpeechStart also lets the phrase barge in on a reply.
            return [Activation(self.mode, True, f"wake phrase '{spotter.phrase}'", at),
                    *self.handle([SpeechStart(at)])]
        return []
