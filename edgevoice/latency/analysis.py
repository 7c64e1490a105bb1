"""Pure functions on the one-clock stereo recording (L = what the microphone heard, R = what the
speaker played): where a clip lies on L, where its speech ends, when the reply becomes audible on
R, when R goes silent again. Everything works on int16/float numpy arrays and sample indices, so
it is tested on synthetic signals with known offsets (tests/test_bench_latency.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

RATE = 48000  # the bus's rate: every index in this module counts samples at the caller's rate

# "Audible" on the speaker channel: 2 ms frames whose RMS is at least this far over the noise
# floor, and never below an absolute floor (a null sink's silence is digital zero).
MIN_AUDIBLE_DBFS = -55.0
OVER_FLOOR_DB = 20.0
FRAME_MS = 2.0
HOLD_MS = 10.0  # an onset must stay audible for most of this long (a click is not a reply)
SILENCE_MS = 300.0  # "the speaker went silent": this long below the threshold


def dbfs_to_rms(dbfs: float) -> float:
    return 32768.0 * 10.0 ** (dbfs / 20.0)


def frame_rms(x: np.ndarray, frame: int) -> np.ndarray:
    """RMS of consecutive frames of ``frame`` samples (the tail shorter than a frame is dropped)."""
    n = len(x) // frame
    if n == 0:
        return np.zeros(0)
    f = np.asarray(x[: n * frame], dtype=np.float64).reshape(n, frame)
    return np.sqrt((f * f).mean(axis=1))


def noise_floor(x: np.ndarray, rate: int = RATE, frame_ms: float = FRAME_MS) -> float:
    """The channel's noise floor: the 10th percentile of its frame RMS (0 for digital silence)."""
    rms = frame_rms(x, max(1, int(rate * frame_ms / 1000)))
    return float(np.percentile(rms, 10)) if len(rms) else 0.0


def audible_threshold(floor_rms: float, min_dbfs: float = MIN_AUDIBLE_DBFS,
                      over_db: float = OVER_FLOOR_DB) -> float:
    """The RMS a frame needs to count as audible: ``over_db`` above the floor, at least
    ``min_dbfs``."""
    return max(dbfs_to_rms(min_dbfs), floor_rms * 10.0 ** (over_db / 20.0))


def _loud_frames(x: np.ndarray, rate: int, threshold: float, frame_ms: float
                 ) -> tuple[np.ndarray, int]:
    frame = max(1, int(round(rate * frame_ms / 1000)))
    return frame_rms(x, frame) >= threshold, frame


def first_audible(x: np.ndarray, threshold: float, start: int = 0, stop: Optional[int] = None,
                  rate: int = RATE, frame_ms: float = FRAME_MS, hold_ms: float = HOLD_MS
                  ) -> Optional[int]:
    """Index of the first audible sample in ``x[start:stop]``: the first frame over
    ``threshold`` that stays loud for at least half of the next ``hold_ms``, refined to its first
    sample whose magnitude reaches the threshold. None when nothing is audible there."""
    stop = len(x) if stop is None else min(stop, len(x))
    start = max(0, start)
    if stop <= start:
        return None
    seg = np.asarray(x[start:stop])
    loud, frame = _loud_frames(seg, rate, threshold, frame_ms)
    if not loud.any():
        return None
    hold = max(1, int(round(hold_ms / frame_ms)))
    # loud fraction of each window [i, i + hold)
    csum = np.concatenate([[0], np.cumsum(loud)])
    idx = np.arange(len(loud))
    ends = np.minimum(idx + hold, len(loud))
    frac = (csum[ends] - csum[idx]) / np.maximum(ends - idx, 1)
    candidates = np.flatnonzero(loud & (frac >= 0.5))
    if len(candidates) == 0:
        return None
    f = int(candidates[0])
    lo = max(0, (f - 1) * frame)  # the rise may begin in the frame before
    block = np.abs(seg[lo:(f + 1) * frame].astype(np.int32))
    over = np.flatnonzero(block >= threshold)
    return start + lo + (int(over[0]) if len(over) else frame)


def silent_from(x: np.ndarray, threshold: float, start: int = 0, stop: Optional[int] = None,
                rate: int = RATE, frame_ms: float = FRAME_MS, silence_ms: float = SILENCE_MS
                ) -> Optional[int]:
    """Index just after the last audible sample before ``x`` stays below ``threshold`` for
    ``silence_ms`` (searching from ``start``); ``start`` itself when it is already silent there.
    None when the channel never goes silent that long before ``stop``."""
    stop = len(x) if stop is None else min(stop, len(x))
    seg = np.asarray(x[max(0, start):stop])
    loud, frame = _loud_frames(seg, rate, threshold, frame_ms)
    need = max(1, int(round(silence_ms / frame_ms)))
    run = 0
    for i, is_loud in enumerate(loud):
        run = 0 if is_loud else run + 1
        if run >= need:
            first_quiet = i - need + 1
            if first_quiet == 0:
                return max(0, start)
            # refine: just after the last sample at or over the threshold in the loud frame
            lo = (first_quiet - 1) * frame
            block = np.abs(seg[lo:first_quiet * frame].astype(np.int32))
            over = np.flatnonzero(block >= threshold)
            return max(0, start) + lo + (int(over[-1]) + 1 if len(over) else 0)
    return None


def locate(reference: np.ndarray, signal: np.ndarray, lo: int = 0, hi: Optional[int] = None
           ) -> tuple[Optional[int], float]:
    """Where ``reference`` starts in ``signal``, searching start positions in [lo, hi): by
    normalized cross-correlation (FFT). Returns (index, peak correlation 0..1); (None, 0) when
    the window is too short or silent."""
    hi = len(signal) if hi is None else min(hi, len(signal))
    lo = max(0, lo)
    ref = np.asarray(reference, dtype=np.float64)
    seg = np.asarray(signal[lo:hi + len(ref)], dtype=np.float64)
    if len(ref) == 0 or len(seg) < len(ref):
        return None, 0.0
    n = 1 << int(np.ceil(np.log2(len(seg) + len(ref))))
    corr = np.fft.irfft(np.fft.rfft(seg, n) * np.conj(np.fft.rfft(ref, n)), n)
    lags = len(seg) - len(ref) + 1
    corr = corr[:lags]
    # energy of each window of the signal, for normalization
    c2 = np.concatenate([[0.0], np.cumsum(seg * seg)])
    win = c2[len(ref):len(ref) + lags] - c2[:lags]
    denom = np.sqrt(np.maximum(win, 1e-9) * float((ref * ref).sum()))
    score = corr / np.maximum(denom, 1e-9)
    best = int(np.argmax(score))
    peak = float(score[best])
    if not np.isfinite(peak) or peak <= 0:
        return None, 0.0
    return lo + best, min(peak, 1.0)


def xcorr_lag(a: np.ndarray, b: np.ndarray, max_lag: int) -> int:
    """The lag (samples, 0..max_lag) at which ``b`` best matches ``a`` delayed: b[t] ~ a[t - lag].
    An independent check of onset-based delays (validation)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    n = 1 << int(np.ceil(np.log2(len(a) + len(b))))
    corr = np.fft.irfft(np.fft.rfft(b, n) * np.conj(np.fft.rfft(a, n)), n)
    return int(np.argmax(corr[: max_lag + 1]))


# -- the clip's own speech span -----------------------------------------------------------------


@dataclass(frozen=True)
class SpeechSpan:
    start_s: float  # first speech sample, seconds into the clip
    end_s: float  # last speech sample
    source: str  # "labels" (the manifest's) or "energy+vad"


def speech_span(samples: np.ndarray, rate: int, use_vad: bool = True) -> Optional[SpeechSpan]:
    """First and last speech sample of a clip: 10 ms frames over an energy threshold (12 dB
    over the clip's noise floor and no more than 40 dB under its peak) that webrtcvad also calls
    speech, in runs of at least 50 ms; the ends refined to the first/last sample over the
    threshold; then each edge is followed outwards while it stays 6 dB over the floor and
    within 30 dB of the peak (the fading end of a word). None for a clip with no speech."""
    x = np.asarray(samples, dtype=np.float64)
    frame = rate // 100
    rms = frame_rms(x, frame)
    if len(rms) == 0 or rms.max() <= 0:
        return None
    e = 20 * np.log10(np.maximum(rms, 1e-3) / 32768.0)
    floor, peak = np.percentile(e, 10), np.percentile(e, 99)
    thr_db = max(floor + 12.0, peak - 40.0)
    voiced = e >= thr_db
    if use_vad:
        vad = _vad_frames(samples, rate, len(rms))
        if vad is not None:
            voiced &= vad
    voiced = _drop_short_runs(voiced, 5)
    idx = np.flatnonzero(voiced)
    if len(idx) == 0:
        return None
    # Hysteresis: from the voiced core, follow the fading edges (a final nasal, a fricative)
    # while they stay 6 dB over the floor and within 30 dB of the peak (a clip recorded with
    # almost no noise must not chain through breaths), looking 30 ms ahead, at most 400 ms.
    low_db = max(floor + 6.0, peak - 30.0)
    first = _extend(e, int(idx[0]), -1, low_db)
    last = _extend(e, int(idx[-1]), +1, low_db)
    amp = 32768.0 * 10 ** (low_db / 20)
    head = np.flatnonzero(np.abs(x[first * frame:(first + 1) * frame]) >= amp)
    tail = np.flatnonzero(np.abs(x[last * frame:(last + 1) * frame]) >= amp)
    start = first * frame + (int(head[0]) if len(head) else 0)
    end = last * frame + (int(tail[-1]) + 1 if len(tail) else frame)
    return SpeechSpan(start / rate, end / rate, "energy+vad" if use_vad else "energy")


def _extend(e: np.ndarray, i: int, step: int, low_db: float, ahead: int = 3,
            limit: int = 40) -> int:
    """Move from frame ``i`` in direction ``step`` while one of the next ``ahead`` frames is at
    or over ``low_db``; at most ``limit`` frames."""
    start = i
    while abs(i - start) < limit:
        nxt = [j for j in range(i + step, i + step * (ahead + 1), step) if 0 <= j < len(e)]
        over = [j for j in nxt if e[j] >= low_db]
        if not over:
            break
        i = over[-1]
    return i


def _drop_short_runs(mask: np.ndarray, min_len: int) -> np.ndarray:
    out = mask.copy()
    i = 0
    while i < len(mask):
        if mask[i]:
            j = i
            while j < len(mask) and mask[j]:
                j += 1
            if j - i < min_len:
                out[i:j] = False
            i = j
        else:
            i += 1
    return out


def _vad_frames(samples: np.ndarray, rate: int, n10: int) -> Optional[np.ndarray]:
    """webrtcvad (mode 2, 30 ms frames) as a per-10 ms mask; None without webrtcvad or at a
    rate it does not take."""
    try:
        import webrtcvad
    except ImportError:
        return None
    if rate not in (8000, 16000, 32000, 48000):
        return None
    vad = webrtcvad.Vad(2)
    f30 = rate * 3 // 100
    pcm = np.asarray(samples, dtype=np.int16)
    out = np.zeros(n10, dtype=bool)
    for k in range(len(pcm) // f30):
        if vad.is_speech(pcm[k * f30:(k + 1) * f30].tobytes(), rate):
            out[3 * k:min(3 * k + 3, n10)] = True
    # webrtcvad's 30 ms grid: let a voiced neighbour count (the energy test decides the edges)
    return out | np.roll(out, 1) | np.roll(out, -1)


# -- one turn -------------------------------------------------------------------------------


@dataclass(frozen=True)
class TurnTiming:
    clip_at: Optional[int]  # where the clip starts on L (index), None when not found
    speech_start: Optional[int]  # first speech sample on L
    speech_end: Optional[int]  # last speech sample on L
    reply_onset: Optional[int]  # first audible sample on R at or after the clip's start
    v2v_ms: Optional[float]  # reply_onset - speech_end; negative for a false cut-off
    cut_off: bool  # the reply began before the user finished
    match: float  # the clip's correlation peak on L (1.0 = exact copy)
    overlap: bool = False  # an earlier answer was still audible when the clip began


def measure_turn(left: np.ndarray, right: np.ndarray, clip: np.ndarray, span: SpeechSpan,
                 search_lo: int, search_hi: int, window_end: int, threshold: float,
                 rate: int = RATE) -> TurnTiming:
    """Find ``clip`` (at the bus rate) on ``left`` starting in [search_lo, search_hi), then the
    first audible sample on ``right`` from the clip's start up to ``window_end``."""
    at, peak = locate(clip, left, search_lo, search_hi)
    if at is None or peak < 0.5:
        return TurnTiming(None, None, None, None, None, False, peak)
    s0 = at + int(round(span.start_s * rate))
    s1 = speech_end_on(left, clip, at, span.end_s, rate)
    start = at
    overlap = first_audible(right, threshold, at - int(0.1 * rate), at + 1, rate=rate,
                            hold_ms=FRAME_MS) is not None
    if overlap:  # not this turn's reply: look from where that one ended
        start = silent_from(right, threshold, at, window_end, rate=rate)
        if start is None:
            return TurnTiming(at, s0, s1, None, None, False, peak, True)
    onset = first_audible(right, threshold, start, window_end, rate=rate)
    if onset is None:
        return TurnTiming(at, s0, s1, None, None, False, peak, overlap)
    v2v = (onset - s1) * 1000.0 / rate
    return TurnTiming(at, s0, s1, onset, round(v2v, 1), onset < s1, peak, overlap)


def speech_end_on(left: np.ndarray, clip: np.ndarray, at: int, end_s: float,
                  rate: int = RATE) -> int:
    """Where the clip's last speech sample lies on ``left``, given the clip found at ``at``:
    the last 0.8 s of speech is located again on its own, so a glitch earlier in the playback
    (an underrun that inserted silence) does not shift the end."""
    e = int(round(end_s * rate))
    lo, hi = max(0, e - int(0.8 * rate)), min(len(clip), e + int(0.1 * rate))
    if hi - lo < int(0.2 * rate):
        return at + e
    found, peak = locate(clip[lo:hi], left, at + lo - int(0.05 * rate), at + lo + int(2 * rate))
    if found is None or peak < 0.8:
        return at + e
    return found + (e - lo)


def barge_stop_ms(right: np.ndarray, barge_onset: int, threshold: float, window_end: int,
                  rate: int = RATE, lookback_ms: float = 150.0) -> tuple[Optional[float], str]:
    """Time from the barge-in speech onset on L to the speaker going silent on R, in ms, and
    a word on what was seen: "stopped", "reply ended first" (R was already silent),
    "kept playing" (never silent before ``window_end``)."""
    back = max(0, barge_onset - int(rate * lookback_ms / 1000))
    if first_audible(right, threshold, back, barge_onset + 1, rate=rate,
                     hold_ms=FRAME_MS) is None:
        return None, "reply ended first"
    quiet = silent_from(right, threshold, barge_onset, window_end, rate=rate)
    if quiet is None:
        return None, "kept playing"
    return round((quiet - barge_onset) * 1000.0 / rate, 1), "stopped"


# -- figures --------------------------------------------------------------------------------


def pct(values: list[float], q: float, digits: int = 1) -> Optional[float]:
    """Nearest-rank percentile (as `bench targets`): no interpolation on a handful of turns."""
    vals = sorted(v for v in values if v is not None)
    if not vals:
        return None
    return round(vals[min(len(vals) - 1, int(round(q * (len(vals) - 1))))], digits)


def summarize(values: list[Optional[float]], digits: int = 1) -> dict:
    vals = [v for v in values if v is not None]
    return {"n": len(vals), "p50": pct(vals, 0.5, digits), "p95": pct(vals, 0.95, digits),
            "max": round(max(vals), digits) if vals else None}
