"""Speech-span labels of the shared clips, and synthetic noise, for endpointing tests and
``benchmarks/endpoint_eval.py``.

The labels live in free text in MANIFEST.tsv (``transcript_source`` and ``notes``), e.g.
"speech 0.24-1.80, 2.88-12.12 s", "speech span 0.236-6.762s" and "labels cover only 0-8 s".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgevoice.evaluation import Clip, read_manifest

Span = tuple[float, float]

_NUM = r"\d+(?:\.\d+)?"
_SPANS = re.compile(rf"\bspeech(?: span)?\s+((?:{_NUM}-{_NUM}(?:,\s*)?)+)\s*s\b")
_REGION = re.compile(rf"labels cover only\s+({_NUM})-({_NUM})\s*s\b")


def parse_spans(text: str) -> list[Span]:
    """Labelled speech spans (seconds), sorted, with touching or overlapping spans merged."""
    m = _SPANS.search(text)
    if m is None:
        return []
    spans = sorted(
        (float(a), float(b))
        for a, b in (p.split("-") for p in re.split(r",\s*", m.group(1).strip(", ")))
    )
    merged: list[Span] = []
    for a, b in spans:
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(b, merged[-1][1]))
        else:
            merged.append((a, b))
    return merged


def parse_region(text: str, duration_s: float) -> Span:
    """The part of the clip the labels cover: the whole clip unless the notes say otherwise."""
    m = _REGION.search(text)
    return (float(m.group(1)), float(m.group(2))) if m else (0.0, duration_s)


@dataclass(frozen=True)
class LabelledClip:
    clip: Clip
    spans: tuple[Span, ...]
    region: Span

    @property
    def path(self) -> Path:
        return self.clip.path


def labelled_clips(folder: Path) -> list[LabelledClip]:
    """Clips with speech-span labels."""
    out = []
    for clip in read_manifest(folder):
        spans = parse_spans(clip.notes)
        if spans:
            region = parse_region(clip.notes, clip.duration_s)
            out.append(LabelledClip(clip, tuple(spans), region))
    return out


def noise_clips(folder: Path) -> list[Clip]:
    return [c for c in read_manifest(folder) if c.category == "noise"]


def spoken_clips(folder: Path) -> list[Clip]:
    """Every clip that contains speech (all but the noise-only ones)."""
    return [c for c in read_manifest(folder) if c.category != "noise"]


def _to_int16(x: np.ndarray, dbfs: float) -> np.ndarray:
    x = x / np.sqrt(np.mean(x * x))
    return np.clip(np.round(x * 32768.0 * 10.0 ** (dbfs / 20.0)), -32768, 32767).astype(np.int16)


def synthetic_noise(kind: str, seconds: float, dbfs: float, rate: int = 16000,
                    seed: int = 0) -> np.ndarray:
    """White (flat), pink (-3 dB/octave) or brown (-6 dB/octave) noise at an RMS of ``dbfs``."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    white = rng.standard_normal(n)
    if kind == "white":
        return _to_int16(white, dbfs)
    exponent = {"pink": 0.5, "brown": 1.0}[kind]
    spectrum = np.fft.rfft(white)
    f = np.fft.rfftfreq(n, 1.0 / rate)
    f[0] = f[1]
    shaped = np.fft.irfft(spectrum / np.maximum(f, 20.0) ** exponent, n)  # no sub-20 Hz drift
    return _to_int16(shaped, dbfs)


def frame_labels(spans: list[Span] | tuple[Span, ...], n: int, step_s: float) -> np.ndarray:
    """Boolean speech label of each of ``n`` steps of ``step_s`` (a step is speech when its
    centre lies in a span)."""
    centres = (np.arange(n) + 0.5) * step_s
    out = np.zeros(n, dtype=bool)
    for a, b in spans:
        out |= (centres >= a) & (centres < b)
    return out
