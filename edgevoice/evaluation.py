"""Scoring helpers shared by tests and benchmarks: word error rate and the speech-clip manifest."""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass
from pathlib import Path

_NON_WORD = re.compile(r"[^a-z0-9' ]+")


def normalize_text(text: str) -> list[str]:
    """Lower-case words without punctuation, for comparing transcripts."""
    return _NON_WORD.sub(" ", text.lower().replace("-", " ")).split()


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(substitutions + deletions + insertions, reference word count) by edit distance."""
    ref, hyp = normalize_text(reference), normalize_text(hypothesis)
    previous = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        current = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (r != h))
        previous = current
    return previous[-1], len(ref)


def corpus_wer(pairs: list[tuple[str, str]]) -> float:
    """Word error rate over (reference, hypothesis) pairs: total errors / total reference words."""
    errors = words = 0
    for ref, hyp in pairs:
        e, n = word_errors(ref, hyp)
        errors, words = errors + e, words + n
    return errors / max(words, 1)


@dataclass(frozen=True)
class Clip:
    path: Path
    category: str
    duration_s: float
    reference: str
    notes: str


def speech_dir() -> Path | None:
    """``$EDGEVOICE_SPEECH_DIR`` or ``shared/speech`` beside the checkout, if present."""
    env = os.environ.get("EDGEVOICE_SPEECH_DIR")
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parents[2] / "shared" / "speech")
    for c in candidates:
        if (c / "MANIFEST.tsv").is_file():
            return c
    return None


def read_manifest(folder: Path) -> list[Clip]:
    with open(folder / "MANIFEST.tsv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    return [
        Clip(
            path=folder / row["file"],
            category=row["category"],
            duration_s=float(row["duration_s"]),
            reference=row["reference_transcript"],
            notes=" ".join(filter(None, (row.get("transcript_source"), row.get("notes")))),
        )
        for row in rows
    ]


def asr_clips(folder: Path) -> list[Clip]:
    """Clips with a spoken-form reference transcript (the ITN clip's reference is written form)."""
    return [c for c in read_manifest(folder)
            if c.category.startswith("asr") and "itn" not in c.category and c.reference]


def vad_config_with(overrides: list[str]):
    """A VadConfig with the benchmarks' ``--set key=value`` overrides applied.

    Raises ValueError naming the unknown field (the caller turns it into a usage error).
    """
    import dataclasses

    from edgevoice.config import VadConfig

    cfg = VadConfig()
    types = {f.name: type(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    for item in overrides:
        key, _, value = item.partition("=")
        if key not in types:
            raise ValueError(f"unknown VadConfig field {key!r}; one of {', '.join(types)}")
        cfg = dataclasses.replace(cfg, **{key: types[key](value)})
    return cfg
