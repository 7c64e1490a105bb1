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
Pure functions; the filter bank and framing indexes are computed once and cached. Speed (the
features are computed at every pause, on the ear's thread): the frames that lie wholly in the
front padding are equal and computed once, and the mel filters are applied as the sparse bank
they are, without a BLAS call: 3 ms of CPU for 2 s of speech, 17 ms for 8 s, where it took
27-36 ms (and up to 3x that in wall time, waiting on OpenBLAS's threads), bit-identical.
Computing them incrementally while the user speaks would not pay: the normalisation and the
8-log10-unit clamp depend on the whole window, so every frame changes with each new chunk.
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


@lru_cache(maxsize=4)
def _sparse_filters(n_mels: int = N_MELS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The filter bank's non-zero entries, grouped by filter: (bins, weights, starts) such that
    filter ``m`` is ``sum(power[bins[i]] * weights[i])`` for ``i`` in ``starts[m]:starts[m+1]``.

    About 2 entries per FFT bin instead of 201 x 80: the product needs no BLAS call, whose
    thread pool (OpenBLAS starts one per core) cost ~8x the work in waiting on busy cores."""
    bank = mel_filters(n_mels)
    mels, bins = np.nonzero(bank.T)  # row-major: by filter, then bin
    weights = bank.T[mels, bins]
    starts = np.searchsorted(mels, np.arange(n_mels))
    for a in (bins, weights, starts):
        a.setflags(write=False)
    return bins, weights, starts


def _log_mel(x: np.ndarray, same_first: int = 0) -> np.ndarray:
    """``log_mel`` of float64 ``x``, knowing its first ``same_first`` STFT frames are equal
    (they lie in constant front padding): those are computed once and repeated."""
    half = N_FFT // 2
    if x.size <= half:
        raise ValueError(f"need more than {half} samples for reflect padding, got {x.size}")
    padded = np.pad(x, half, mode="reflect")
    frames = _frames(padded, N_FFT, HOP)[:-1]  # the last frame is dropped, as Whisper's is
    first = max(0, min(same_first, len(frames)) - 1)  # one of the equal frames is computed
    spectrum = np.fft.rfft(frames[first:] * _hann(N_FFT), axis=1)
    power = spectrum.real ** 2 + spectrum.imag ** 2  # (frames, bins)
    bins, weights, starts = _sparse_filters()
    mel = np.add.reduceat(power[:, bins] * weights, starts, axis=1)
    logged = np.log10(np.maximum(mel, MEL_FLOOR))
    logged = np.maximum(logged, logged.max() - DYNAMIC_RANGE)
    scaled = ((logged + 4.0) / 4.0).T.astype(np.float32)
    if first == 0:
        return scaled
    out = np.empty((scaled.shape[0], len(frames)), dtype=np.float32)
    out[:, first:] = scaled
    out[:, :first] = scaled[:, :1]
    return out


def log_mel(audio: np.ndarray) -> np.ndarray:
    """Log-mel spectrogram of 16 kHz float audio, float32 ``(N_MELS, len(audio) // HOP)``,
    scaled like Whisper's (clamped 8 below its maximum, then ``(x + 4) / 4``)."""
    x = np.asarray(audio, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"expected non-empty 1-D audio, got shape {x.shape}")
    return _log_mel(x)


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
    float32 ``(1, N_MELS, round(seconds * 100))``.

    Frames that lie wholly in the front padding (a constant after normalisation) are computed
    once: a 2 s utterance needs a quarter of the 8 s window's FFTs."""
    a = np.asarray(audio)
    x = fit_window(a, seconds)
    # Normalised in float32 over the whole window, front padding included, like the reference.
    x = (x - x.mean()) / np.sqrt(x.var() + np.float32(NORM_EPS))
    pad = x.size - min(a.size, x.size)
    # Frame k covers x[k * HOP - N_FFT // 2 : k * HOP + N_FFT // 2] (reflected at the start):
    # constant when it ends inside the padding, and frame 0's reflection too (pad > N_FFT // 2).
    same = (pad - N_FFT // 2 - 1) // HOP + 1 if pad > N_FFT // 2 else 0
    return _log_mel(x.astype(np.float64), same)[None, :, :]
