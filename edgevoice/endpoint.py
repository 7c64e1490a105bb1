"""Voice-activity detection and endpointing for mono int16 audio.

Three layers, so that the timing logic can be tested without any engine:

- ``NoiseGate``: a cheap numpy check that rejects frames too quiet or too noise-like to be speech.
  webrtcvad alone calls stationary noise speech (white, pink, a fan), and the ASR then hears words.
- ``SpeechDetector``: webrtcvad AND the gate, one decision per frame.
- ``Endpointer``: a pure, clock-free state machine over (frame, is_speech) that turns frame
  decisions into utterances (onset, hangover, pre-roll, maximum length). Times come from the
  frames' own ``start_ms``, never from a clock, so a replayed file gives what the microphone would.

``UtteranceSegmenter`` glues them together and re-chunks arbitrary chunk sizes into VAD frames.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from edgevoice.audio.format import PCM16_MONO_16K, AudioChunk, AudioFormat
from edgevoice.config import VadConfig

WEBRTC_RATES = (8000, 16000, 32000, 48000)
_FULL_SCALE_POWER = 32768.0**2
_GATE_BAND_HZ = (100.0, 7000.0)
# A fresh webrtcvad instance calls the first 100-180 ms of almost anything speech (hum, tones,
# noise at any level) while its noise model settles; those frames are never speech. Speech that
# really starts at once is not lost: the pre-roll reaches back over this time.
WARMUP_MS = 210


def _ceil_frames(ms: float, frame_ms: int) -> int:
    return math.ceil(ms / frame_ms - 1e-9)


@dataclass(frozen=True)
class GateFeatures:
    """What the noise gate measured on one frame."""

    dbfs: float
    """RMS level relative to int16 full scale."""
    flatness: float
    """Tilt-compensated spectral flatness, 0..1: about 0.56 for any power-law noise, lower for
    speech (harmonics and formants)."""


class NoiseGate:
    """Energy floor + tilt-compensated spectral flatness on one frame.

    Plain spectral flatness separates white noise from speech but not pink or brown noise, whose
    sloped spectra look "structured". So the log power spectrum (100-7000 Hz, Hann window) is first
    detrended by a straight line against log-frequency (a power law, i.e. any noise colour), and
    the flatness of what remains is ``1 / mean(exp(residual))`` (the residual has zero mean). For
    noise the residual is just periodogram scatter, whatever the colour, and the figure stays near
    ``exp(-0.577) = 0.56``; speech's harmonics and formants pull it well below. One FFT and a few
    vector operations per frame: cheap enough for a Raspberry Pi at 30 ms frames.
    """

    def __init__(self, min_dbfs: float, max_flatness: float, frame_samples: int, rate: int) -> None:
        self.min_dbfs = min_dbfs
        self.max_flatness = max_flatness
        self._min_power = _FULL_SCALE_POWER * 10.0 ** (min_dbfs / 10.0)
        self._nfft = 1 << max(frame_samples - 1, 1).bit_length()
        self._window = np.hanning(frame_samples).astype(np.float32)
        freqs = np.fft.rfftfreq(self._nfft, 1.0 / rate)
        hi = min(_GATE_BAND_HZ[1], 0.45 * rate)
        self._band = np.flatnonzero((freqs >= _GATE_BAND_HZ[0]) & (freqs <= hi))
        logf = np.log(freqs[self._band])
        logf -= logf.mean()
        self._logf = (logf / np.sqrt(np.dot(logf, logf))).astype(np.float32)

    def _power(self, samples: np.ndarray) -> float:
        return float(np.dot(samples, samples)) / max(len(samples), 1)

    def _flatness(self, samples: np.ndarray) -> float:
        spectrum = np.fft.rfft(samples * self._window, self._nfft)[self._band]
        # +1.0: a floor far below int16 quantisation noise, so exact zeros cannot give log(0).
        logp = np.log(spectrum.real**2 + spectrum.imag**2 + 1.0)
        logp -= logp.mean()
        residual = logp - np.dot(self._logf, logp) * self._logf
        return float(1.0 / np.mean(np.exp(residual)))

    def features(self, samples: np.ndarray) -> GateFeatures:
        """Level and flatness of int16 ``samples`` (the flatness is computed even when quiet)."""
        x = samples.astype(np.float32)
        power = self._power(x)
        dbfs = 10.0 * math.log10(power / _FULL_SCALE_POWER) if power > 0 else -math.inf
        return GateFeatures(dbfs, self._flatness(x))

    def passes(self, samples: np.ndarray) -> bool:
        """True when the frame is loud enough and structured enough to be speech."""
        x = samples.astype(np.float32)
        if self._power(x) < self._min_power:
            return False
        return self._flatness(x) <= self.max_flatness


class SpeechDetector:
    """Per-frame decision: webrtcvad says speech AND the noise gate lets the frame through."""

    def __init__(self, cfg: VadConfig, rate: int = 16000) -> None:
        import webrtcvad  # the only webrtcvad import; the pure parts of this module need none

        if rate not in WEBRTC_RATES:
            raise ValueError(f"webrtcvad needs a rate of {WEBRTC_RATES} Hz, got {rate}")
        if cfg.frame_ms not in (10, 20, 30):
            raise ValueError(f"vad.frame_ms must be 10, 20 or 30, got {cfg.frame_ms}")
        self.cfg = cfg
        self.rate = rate
        self.frame_samples = rate * cfg.frame_ms // 1000
        self._vad_factory = webrtcvad.Vad
        self._vad = webrtcvad.Vad(cfg.mode)
        self._warmup_frames = _ceil_frames(WARMUP_MS, cfg.frame_ms)
        self._seen = 0
        self.gate = NoiseGate(cfg.gate_min_dbfs, cfg.gate_max_flatness, self.frame_samples, rate)

    def is_speech(self, frame: bytes) -> bool:
        """``frame`` is exactly ``cfg.frame_ms`` of int16 little-endian mono bytes."""
        if len(frame) != 2 * self.frame_samples:
            raise ValueError(
                f"expected a {self.cfg.frame_ms} ms frame ({2 * self.frame_samples} bytes), "
                f"got {len(frame)} bytes"
            )
        # webrtcvad sees every frame (it adapts its noise model); the gate's FFT runs only when
        # webrtcvad says speech, which keeps silence nearly free.
        vad_says = self._vad.is_speech(frame, self.rate)
        if self._seen < self._warmup_frames:
            self._seen += 1
            return False
        return vad_says and self.gate.passes(np.frombuffer(frame, dtype="<i2"))

    def reset(self) -> None:
        """Forget webrtcvad's adapted state (a new stream); the warm-up starts again."""
        self._vad = self._vad_factory(self.cfg.mode)
        self._seen = 0


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


SegmentEvent = SpeechStart | SpeechAudio | SpeechPause | SpeechEnd


class Endpointer:
    """Pure state machine from per-frame speech flags to utterance events.

    - onset: ``onset_ms`` of consecutive speech frames start an utterance (at least one frame);
    - pre-roll: up to ``preroll_ms`` of audio before the onset run is sent first, so the first
      (often unvoiced, hence rejected) syllable is not cut off;
    - hangover: ``hangover_ms`` of consecutive non-speech ends it; those frames are still sent,
      since the recogniser needs the trailing silence to finish its last word;
    - pause: after ``pause_ms`` of that silence (if shorter than the hangover) a ``SpeechPause``
      comes first, once per silence run, so work can start before the end is certain;
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
        self._last_speech_end = 0.0

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
        self._last_speech_end = frame.end_ms
        if self._frames >= self._max:
            events.extend(self._end("max_length"))
        return events

    def _continue(self, frame: AudioChunk, is_speech: bool) -> list[SegmentEvent]:
        events: list[SegmentEvent] = [SpeechAudio(frame)]
        self._frames += 1
        if is_speech:
            self._silence = 0
            self._last_speech_end = frame.end_ms
        else:
            self._silence += 1
            if self._silence == self._pause:
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
            events.extend(self._endpointer.process(frame, self._detector.is_speech(data)))
        del self._pending[: n_frames * fb]
        return iter(events)

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
