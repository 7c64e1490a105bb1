"""Per-frame speech decisions: webrtcvad AND a noise gate AND Silero (the ear's second stage).

- ``NoiseGate``: a cheap numpy check that rejects frames too quiet or too noise-like to be speech.
  webrtcvad alone calls stationary noise speech (white, pink, a fan), and the ASR then hears words.
- ``NeuralOpinion``: a neural VAD's (Silero's, ``edgevoice.ear.silero``) say on the frames the
  cheap stages call speech. Music, tones and clicks have the harmonics and onsets that fool both
  cheap stages; Silero was trained to tell them from speech. It costs ~0.2 ms per 32 ms chunk, so
  it only runs while the cheap stages hear speech, on 512-sample chunks cut from the VAD frames.
- ``SpeechDetector``: webrtcvad AND the gate, AND (when enabled) Silero while no utterance is open,
  one decision per frame: Silero decides whether speech *starts*, the cheap stages how long it
  goes on. Inside an utterance a frame the gate passes also counts when it stands clearly above
  the noise floor, shortly after confirmed speech (``CONTINUE_MS``): webrtcvad, its noise model
  adapted to the room, drops the unvoiced ends of words in noise (the "ts" of "hearts" at 20 dB
  SNR), and the recognizer lost the word when the pause or the end came in the middle of it.
  Silero misses quiet speech (on the shared chan3 clip, 6 s of speech at -40..-55 dBFS
  after loud speech: p < 0.15), so letting it end utterances would cut people off mid-sentence.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from edgevoice.config import VadConfig

log = logging.getLogger(__name__)

WEBRTC_RATES = (8000, 16000, 32000, 48000)
_FULL_SCALE_POWER = 32768.0**2
_GATE_BAND_HZ = (100.0, 7000.0)
# A fresh webrtcvad instance calls the first 100-180 ms of almost anything speech (hum, tones,
# noise at any level) while its noise model settles; those frames are never speech. Speech that
# really starts at once is not lost: the pre-roll reaches back over this time.
WARMUP_MS = 210
CONTINUE_MS = 300
"""Inside an utterance, how long after the last frame webrtcvad and the gate both called speech
a frame the gate alone passes still counts, when it is ``CONTINUE_DB`` above the noise floor (a
word's unvoiced tail; about a syllable). Bridged frames do not extend it: anything loud and
structured after speech (music, typing) lengthens an utterance by this much at most."""
CONTINUE_DB = 6.0
"""How far above the noise floor (``FLOOR_PERCENTILE`` of the last ``FLOOR_S`` of frame levels) a
bridged frame must be: steady noise frames vary by well under 1 dB at 30 ms."""
FLOOR_S = 3.0
FLOOR_PERCENTILE = 10.0


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


class ChunkScorer(Protocol):
    """A neural VAD on fixed chunks: ``probability`` of consecutive chunks, ``reset`` between
    streams (``edgevoice.ear.silero.SileroVad``; tests pass fakes)."""

    def probability(self, chunk: np.ndarray) -> float: ...

    def reset(self) -> None: ...


NEURAL_CHUNK = 512
"""Samples per neural VAD call (Silero: 32 ms at 16 kHz)."""
NEURAL_PRIME_MS = 192
"""Audio from before the frame that wakes the neural VAD, replayed into it from a fresh state, so
its recurrent state has context (e.g. the noise floor) when it judges the onset."""
NEURAL_RUN = 2
"""Chunks in a row at or above the threshold before a frame's verdict is speech. One chunk is not
to be trusted: Silero's probability on the same music moves by +-0.25 with the chunk phase
(``edgevoice.ear.silero.SileroVad``), and a one-chunk rule let a synthesized band start two
utterances. With the endpointer's 3-frame onset, 2 means ~4 chunks (130 ms) of agreement. Chosen
on speech alone: the longest run that keeps every utterance start >= 100 ms before the labelled
start of speech (the pre-roll still covers a soft first syllable): 1 -> 156 ms, 2 -> 126 ms,
3 -> 96 ms; each chunk adds ~30 ms to the onset (SpeechStart ~175 ms after the speech starts)."""
NEURAL_HOLD_MS = 600
"""Once awake, the neural VAD keeps hearing every chunk until the cheap stages have heard no
speech for this long (like the endpointer's hangover): its state stays continuous through
unvoiced sounds and short gaps, and a wake costs its priming only once per burst of sound."""


class NeuralOpinion:
    """A neural VAD's verdict on each VAD frame, awake only where the cheap stages hear speech.

    Pure apart from the scorer: frames of any length in (int16), one bool out per frame, no clock.
    Frames and the scorer's chunks do not line up (30 ms = 480 samples, Silero's chunk is 512), so
    audio is buffered: while awake every sample goes to the scorer exactly once, in order, and a
    frame's verdict is whether the last ``run`` chunks scored by its end all reached ``threshold``
    (the last one ends at most 32 ms before the frame does). The last ``prime_ms`` are kept;
    the first frame the cheap stages call speech wakes it: the scorer is reset and fed those kept
    chunks, ending exactly at that frame's end, so even that frame gets a verdict on the audio up
    to it. It falls asleep after ``hold_ms`` without cheap speech, and its state is dropped.

    No hysteresis: the verdict only decides onsets, and on the tuning noise a hysteresis (release
    0.15 below the threshold) let one short peak of 0.52 on an organ chord become an utterance,
    with no gain in speech coverage.
    """

    def __init__(self, scorer: ChunkScorer, threshold: float, *, chunk: int = NEURAL_CHUNK,
                 rate: int = 16000, prime_ms: float = NEURAL_PRIME_MS,
                 hold_ms: float = NEURAL_HOLD_MS, run: int = NEURAL_RUN) -> None:
        self.scorer = scorer
        self.threshold = threshold
        self.run = run
        self.chunk = chunk
        self._prime = max(1, int(prime_ms * rate / 1000) // chunk) * chunk
        self._hold_samples = int(hold_ms * rate / 1000)
        self._recent: deque[np.ndarray] = deque()
        self.chunks_scored = 0
        """How many chunks the scorer has been given (its cost)."""
        self.reset()

    @property
    def awake(self) -> bool:
        return self._awake

    def reset(self) -> None:
        """A new stream: asleep, nothing kept."""
        self._recent.clear()
        self._recent_len = 0
        self._pending = np.zeros(0, np.int16)
        self._awake = False
        self._quiet = 0  # samples since the cheap stages last heard speech
        self._above = 0  # consecutive chunks at or above the threshold
        self.last_probability: float | None = None
        """The latest chunk's probability while awake (None asleep)."""

    def observe(self, samples: np.ndarray, cheap_says_speech: bool) -> bool:
        """The neural verdict on this frame (False while asleep and for non-speech frames)."""
        self._keep(samples)
        if self._awake:
            self._pending = np.concatenate([self._pending, samples])
            self._score_pending()
            self._quiet = 0 if cheap_says_speech else self._quiet + len(samples)
            if self._quiet >= self._hold_samples:
                self._sleep()
        elif cheap_says_speech:
            self._wake()
        return cheap_says_speech and self._above >= self.run

    def skip(self, samples: np.ndarray) -> None:
        """A frame whose verdict nobody needs (an utterance is open): asleep, it is only kept
        for the next wake's priming."""
        if self._awake:
            self._sleep()
        self._keep(samples)

    def _keep(self, samples: np.ndarray) -> None:
        self._recent.append(samples)
        self._recent_len += len(samples)
        while self._recent_len - len(self._recent[0]) >= self._prime:
            self._recent_len -= len(self._recent.popleft())

    def _wake(self) -> None:
        kept = np.concatenate(self._recent)
        # whole chunks, at most the prime: the oldest kept frame may reach further back
        usable = min(len(kept) // self.chunk * self.chunk, self._prime)
        self.scorer.reset()
        self._awake = True
        self._quiet = 0
        self._above = 0
        self._pending = kept[len(kept) - usable:]
        self._score_pending()

    def _sleep(self) -> None:
        self._awake = False
        self._pending = np.zeros(0, np.int16)
        self._above = 0
        self.last_probability = None

    def _score_pending(self) -> None:
        c, n = self.chunk, len(self._pending) // self.chunk
        for i in range(n):
            p = self.scorer.probability(self._pending[i * c:(i + 1) * c])
            self.last_probability = p
            self._above = self._above + 1 if p >= self.threshold else 0
            self.chunks_scored += 1
        if n:
            self._pending = self._pending[n * c:]


_NEURAL_FALLBACK_LOGGED = False


def neural_opinion(cfg: VadConfig, rate: int) -> NeuralOpinion | None:
    """The neural stage ``cfg.neural`` asks for: ``off`` -> None; ``on`` -> Silero or an error
    naming what is missing; ``auto`` -> Silero when it can run, else None and one log line (per
    process)."""
    global _NEURAL_FALLBACK_LOGGED
    if cfg.neural == "off":
        return None
    from edgevoice.ear.silero import SileroUnavailable, SileroVad, cached_weights

    try:
        if rate != 16000:
            raise SileroUnavailable(f"the neural VAD needs 16000 Hz audio, not {rate} Hz")
        scorer = SileroVad(cached_weights())
    except SileroUnavailable as exc:
        if cfg.neural == "on":
            raise
        if not _NEURAL_FALLBACK_LOGGED:
            _NEURAL_FALLBACK_LOGGED = True
            log.warning("vad.neural auto: %s; speech is webrtcvad + noise gate only", exc)
        return None
    return NeuralOpinion(scorer, cfg.neural_threshold, rate=rate)


class SpeechDetector:
    """Per-frame decision: webrtcvad says speech AND the noise gate lets the frame through AND,
    for a frame that may start an utterance, the neural VAD agrees (``vad.neural``). Each stage
    runs only where the ones before it said speech (webrtcvad sees every frame; its noise model
    adapts)."""

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
        self._continue_frames = _ceil_frames(CONTINUE_MS, cfg.frame_ms)
        self._levels: deque[float] = deque(maxlen=max(1, int(FLOOR_S * 1000 // cfg.frame_ms)))
        self._since_speech = self._continue_frames + 1  # frames since cheap speech
        self.neural = neural_opinion(cfg, rate)
        """The neural stage, or None (``vad.neural: off``, or ``auto`` without Silero)."""

    def is_speech(self, frame: bytes, may_start: bool = True) -> bool:
        """``frame`` is exactly ``cfg.frame_ms`` of int16 little-endian mono bytes.

        ``may_start``: no utterance is open, so this frame may be part of an onset; only then is
        the neural VAD asked (inside an utterance the cheap stages decide alone)."""
        if len(frame) != 2 * self.frame_samples:
            raise ValueError(
                f"expected a {self.cfg.frame_ms} ms frame ({2 * self.frame_samples} bytes), "
                f"got {len(frame)} bytes"
            )
        # webrtcvad sees every frame (it adapts its noise model); the gate's FFT runs only when
        # webrtcvad says speech, which keeps silence nearly free.
        vad_says = self._vad.is_speech(frame, self.rate)
        samples = np.frombuffer(frame, dtype="<i2")
        if self._seen < self._warmup_frames:
            self._seen += 1
            if self.neural is not None:
                self.neural.observe(samples, False)  # kept for its priming, never scored
            return False
        level = self._level(samples)
        cheap = vad_says and self.gate.passes(samples)
        self._since_speech = 0 if cheap else self._since_speech + 1
        if not may_start:
            if self.neural is not None:
                self.neural.skip(samples)
            return cheap or self._continues(samples, level)
        if self.neural is None:
            return cheap
        return self.neural.observe(samples, cheap)

    def _level(self, samples: np.ndarray) -> float:
        """The frame's level in dB (full scale 0), kept for the noise floor."""
        x = samples.astype(np.float32)
        level = 10.0 * math.log10(float(np.dot(x, x)) / len(x) / _FULL_SCALE_POWER + 1e-12)
        self._levels.append(level)
        return level

    def _continues(self, samples: np.ndarray, level: float) -> bool:
        """An utterance goes on through a frame webrtcvad rejected (see ``CONTINUE_MS``)."""
        if self._since_speech > self._continue_frames or len(self._levels) < 2:
            return False
        floor = float(np.percentile(np.fromiter(self._levels, np.float64), FLOOR_PERCENTILE))
        return level >= floor + CONTINUE_DB and self.gate.passes(samples)

    def reset(self) -> None:
        """Forget webrtcvad's adapted state (a new stream); the warm-up starts again."""
        self._vad = self._vad_factory(self.cfg.mode)
        self._seen = 0
        self._levels.clear()
        self._since_speech = self._continue_frames + 1
        if self.neural is not None:
            self.neural.reset()
