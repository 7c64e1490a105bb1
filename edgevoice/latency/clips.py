"""The speech clips a run plays: the shared set (MANIFEST.tsv, with its speech-span labels) or
any folder of WAV files, each resampled to the bus rate with its speech span known."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Optional

from edgevoice.errors import UserError
from edgevoice.latency.analysis import speech_span
from edgevoice.latency.capture import BusClip, read_mono, to_bus_rate, write_wav

MAX_CLIP_S = 8.0  # a question, not a monologue: longer shared clips hold long pauses


def default_folder() -> Optional[Path]:
    """The shared clips (``$EDGEVOICE_SPEECH_DIR`` or ``shared/speech`` beside the checkout)."""
    from edgevoice.evaluation import speech_dir

    return speech_dir()


def _manifest_entries(folder: Path) -> list[tuple[Path, Optional[float], Optional[float]]]:
    from edgevoice.devtools.speech_labels import parse_spans
    from edgevoice.evaluation import read_manifest

    out = []
    for clip in read_manifest(folder):
        if not clip.category.startswith("asr") or clip.duration_s > MAX_CLIP_S:
            continue
        spans = parse_spans(clip.notes)
        out.append((clip.path, spans[0][0] if spans else None, spans[-1][1] if spans else None))
    return out


def find_clips(folder: Optional[Path]) -> list[tuple[Path, Optional[float], Optional[float]]]:
    """(path, labelled speech start, labelled end) for each clip to use."""
    if folder is None:
        folder = default_folder()
        if folder is None:
            raise UserError("no speech clips: the shared clips (shared/speech) are not here; "
                            "give a folder of WAV files with --clips DIR")
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"--clips {folder}: not a folder")
    if (folder / "MANIFEST.tsv").is_file():
        entries = _manifest_entries(folder)
    else:
        entries = [(p, None, None) for p in sorted(folder.iterdir())
                   if p.suffix.lower() in (".wav", ".flac", ".ogg")]
    if not entries:
        raise UserError(f"{folder}: no WAV (or FLAC/OGG) speech clips found")
    return entries


def prepare(entries, workdir: Path, count: int, seed: int = 0,
            progress=None) -> list[BusClip]:
    """Up to ``count`` distinct clips (fewer when the folder has fewer; a run then cycles
    them), in a shuffled but repeatable order, as 48 kHz WAVs in ``workdir``."""
    order = list(entries)
    random.Random(seed).shuffle(order)
    out: list[BusClip] = []
    for path, lab_start, lab_end in order:
        if len(out) >= count:
            break
        try:
            samples, rate = read_mono(path)
        except Exception as exc:  # soundfile's errors are many: one line, and go on
            if progress:
                progress(f"skipping {path.name}: cannot read it ({exc})")
            continue
        if lab_end is not None:
            start_s, end_s, source = lab_start or 0.0, lab_end, "labels"
        else:
            span = speech_span(samples, rate)
            if span is None:
                if progress:
                    progress(f"skipping {path.name}: no speech found in it")
                continue
            start_s, end_s, source = span.start_s, span.end_s, span.source
        bus = to_bus_rate(samples, rate)
        wav = workdir / f"clip{len(out):02d}-{path.stem[:40]}.wav"
        write_wav(wav, bus)
        out.append(BusClip(path.name, path, wav, bus, round(start_s, 4), round(end_s, 4),
                           source))
    if not out:
        raise UserError("none of the clips could be used (unreadable, or no speech in them)")
    return out
