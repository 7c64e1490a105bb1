"""Per-frame speech decisions: webrtcvad AND a noise gate (the ear's second stage).

- ``NoiseGate``: a cheap numpy check that rejects frames too quiet or too noise-like to be speech.
  webrtcvad alone calls stationary noise speech (white, pink, a fan), and the ASR then hears words.
- ``SpeechDetector``: webrtcvad AND the gate, one decision per frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

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
