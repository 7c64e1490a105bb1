"""Whisper-style log-mel features, in numpy: the input of the Smart Turn end-of-turn model.

Smart Turn v3.x (``edgevoice.ear.turn_detector``) was trained on the features of Hugging Face
``WhisperFeatureExtractor(chunk_length=8)`` called with ``padding="max_length"``,
``max_length=128000``, ``truncation=True``, ``do_normalize=True`` on the last 8 s of the audio,
zero-padded at the *front* when shorter. This module computes the same thing from the
definitions, without ``transformers`` or ``torch``:

1. the window: the last ``seconds`` of the audio, zeros before it when shorter (``fit_window``);
2. zero mean, unit variance over the whole window, padding included (variance + 1e-7);
3. a centred STFT: reflect padding of ``N_FFT // 2`` at both ends, a periodic Hann window of
   ``N_FFT`` = 400 samples (25 ms), hop ``HOP`` = 160 (10 ms), power spectrum ``|X|^2``;
4. ``N_MELS`` = 80 triangular mel filters on the Slaney mel scale (linear below 1 kHz,
   logarithmic above), 0-8000 Hz, each scaled to unit area (Slaney normalisation);
5. ``log10(max(mel, 1e-10))``, the last STFT frame dropped (801 -> 800 frames for 8 s), values
   clamped to at most 8 (log10 units) below the window's maximum, then ``(x + 4) / 4``.

API:
- ``log_mel(audio: np.ndarray) -> np.ndarray``: float audio (any length >= 1 sample, 16 kHz)
  -> float32 ``(N_MELS, len(audio) // HOP)``, steps 3-5 (no normalisation, no windowing).
- ``fit_window(audio, seconds=8.0) -> np.ndarray``: float32 of exactly ``seconds * 16000``
  samples (int16 input is scaled to [-1, 1)).
- ``smart_turn_features(audio, seconds=8.0) -> np.ndarray``: all five steps, float32
  ``(1, N_MELS, seconds * 100)``, ready for the model's ``input_features``.
- ``mel_filters() -> np.ndarray``: the ``(N_FFT // 2 + 1, N_MELS)`` filter bank.
Pure functions; the filter bank and framing indexes are computed once and cached.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

SAMPLE_RATE = 16000
N_FFT = 400
HOP = 160
N_MELS = 80
MAX_SECONDS = 8.0
MEL_FLOOR = 1e-10
NORM_EPS = 1e-7
DYNAMIC_RANGE = 8.0  # log10 units kept below the maximum (80 dB)

# Slaney's mel scale: 3 mel per 200 Hz up to 1 kHz (= 15 mel), then log-spaced with 27 mel per
# factor 6.4 in frequency.
_LINEAR_HZ_PER_MEL = 200.0 / 3.0
_BREAK_HZ = 1000.0
_BREAK_MEL = _BREAK_HZ / _LINEAR_HZ_PER_MEL
_MEL_PER_LOG_HZ = 27.0 / np.log(6.4)


def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    hz = np.asarray(hz, dtype=np.float64)
    linear = hz / _LINEAR_HZ_PER_MEL
    logged = _BREAK_MEL + np.log(np.maximum(hz, _BREAK_HZ) / _BREAK_HZ) * _MEL_PER_LOG_HZ
    return np.where(hz < _BREAK_HZ, linear, logged)


def mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    linear = mel * _LINEAR_HZ_PER_MEL
    logged = _BREAK_HZ * np.exp((np.maximum(mel, _BREAK_MEL) - _BREAK_MEL) / _MEL_PER_LOG_HZ)
    return np.where(mel < _BREAK_MEL, linear, logged)


@lru_cache(maxsize=4)
def mel_filters(n_mels: int = N_MELS, n_fft: int = N_FFT, rate: int = SAMPLE_RATE,
                fmin: float = 0.0, fmax: float | None = None) -> np.ndarray:
    """Triangular filters, ``(n_fft // 2 + 1, n_mels)``: filter ``m`` rises from edge ``m`` to
    edge ``m + 1`` and falls to edge ``m + 2`` of ``n_mels + 2`` edges equally spaced in mel,
    and is scaled by ``2 / (edge[m + 2] - edge[m])`` (unit area in Hz)."""
    fmax = rate / 2.0 if fmax is None else fmax
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    bins = np.linspace(0.0, rate / 2.0, n_fft // 2 + 1)
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (bins[:, None] - lower[None, :]) / (centre - lower)[None, :]
    falling = (upper[None, :] - bins[:, None]) / (upper - centre)[None, :]
    bank = np.clip(np.minimum(rising, falling), 0.0, None)
    bank *= (2.0 / (upper - lower))[None, :]
    bank.setflags(write=False)
    return bank


@lru_cache(maxsize=4)
def _hann(n: int) -> np.ndarray:
    """Periodic Hann window (the DFT-even one): ``0.5 - 0.5 cos(2 pi k / n)``, k < n."""
    w = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)
    w.setflags(write=False)
    return w


def _frames(x: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """``(1 + (len(x) - n_fft) // hop, n_fft)`` overlapping frames of ``x`` (a read-only view)."""
    count = 1 + (len(x) - n_fft) // hop
    stride = x.strides[0]
    return np.lib.stride_tricks.as_strided(x, shape=(count, n_fft), strides=(hop * stride, stride),
                                           writeable=False)


def log_mel(audio: np.ndarray) -> np.ndarray:
    """Log-mel spectrogram of 16 kHz float audio, float32 ``(N_MELS, len(audio) // HOP)``,
    scaled like Whisper's (clamped 8 below its maximum, then ``(x + 4) / 4``)."""
    x = np.asarray(audio, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"expected non-empty 1-D audio, got shape {x.shape}")
    half = N_FFT // 2
    if x.size <= half:
        raise ValueError(f"need more than {half} samples for reflect padding, got {x.size}")
    padded = np.pad(x, half, mode="reflect")
    spectrum = np.fft.rfft(_frames(padded, N_FFT, HOP) * _hann(N_FFT), axis=1)
    power = spectrum.real ** 2 + spectrum.imag ** 2  # (frames, bins)
    mel = power[:-1] @ mel_filters()  # the last frame is dropped, as Whisper's extractor does
    logged = np.log10(np.maximum(mel, MEL_FLOOR))
    logged = np.maximum(logged, logged.max() - DYNAMIC_RANGE)
    return ((logged + 4.0) / 4.0).T.astype(np.float32)


def fit_window(audio: np.ndarray, seconds: float = MAX_SECONDS) -> np.ndarray:
    """The last ``seconds`` of ``audio`` as float32, zeros in front when it is shorter.

    int16 audio is scaled by 1/32768; float audio is taken as it is."""
    n = int(round(seconds * SAMPLE_RATE))
    a = np.asarray(audio)
    if a.ndim != 1:
        raise ValueError(f"expected mono 1-D audio, got shape {a.shape}")
    a = a[-n:] if a.size > n else a
    a = a.astype(np.float32) / 32768.0 if a.dtype == np.int16 else a.astype(np.float32)
    out = np.zeros(n, dtype=np.float32)
    if a.size:
        out[n - a.size:] = a
    return out


def smart_turn_features(audio: np.ndarray, seconds: float = MAX_SECONDS) -> np.ndarray:
    """Smart Turn's ``input_features`` for the end of ``audio`` (16 kHz mono, int16 or float):
    float32 ``(1, N_MELS, round(seconds * 100))``."""
    x = fit_window(audio, seconds)
    # Normalised in float32 over the whole window, front padding included, like the reference.
    x = (x - x.mean()) / np.sqrt(x.var() + np.float32(NORM_EPS))
    return log_mel(x)[None, :, :]
