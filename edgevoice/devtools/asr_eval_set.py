"""Build the speech-recognition evaluation set that benchmarks/asr_eval.py reads.

    python -m edgevoice.devtools.asr_eval_set OUT_DIR [--speech DIR]

From the real clips in ../shared/speech (``$EDGEVOICE_SPEECH_DIR``) and espeak-ng sentences it
writes 16 kHz int16 WAVs and ``OUT_DIR/MANIFEST.tsv`` (file, split, source, kind, reference,
duration_s). The split is by *source*: every file derived from a clip or sentence inherits its
split, so the held-out half shares no speaker recording and no sentence with the tuning half.

Conditions (the ``kind`` column): clean (-26 dBFS), level-40 / level-6 (dBFS of the active
speech), reverb (sox room reverb), phone (300-3400 Hz band through 8 kHz), noise5/10/20 (white,
pink or brown noise at that SNR), tts_* (espeak-ng voices at several rates and pitches, clean and
degraded), long / long_noise15 (3-4 sources joined by 0.5-2 s pauses), long_run (real
clips trimmed to their speech, inner gaps cut to 150 ms, joined by 120-180 ms: one utterance of
10-18 s, for the time from the endpoint to the final on long utterances).

Deterministic: fixed seeds, noise generated here with numpy (seeded per file name), sox used only
for its deterministic effects. Needs Debian's ``espeak-ng`` and ``sox`` (the Makefile's test
dependencies).
"""

from __future__ import annotations

import argparse
import csv
import random
import shutil
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np

RATE = 16000
SEED = 11

TUNE_REAL = [
    "pocketsphinx__librivox_sense_and_sensibility_0870.wav",
    "pocketsphinx__librivox_sense_and_sensibility_0920.wav",
    "pocketsphinx__cards_001.wav", "pocketsphinx__cards_003.wav", "pocketsphinx__cards_005.wav",
    "pocketsphinx__goforward.wav", "speechbrain__spk1_snt1.wav", "speechbrain__spk1_snt4.wav",
    "speechbrain__example2.wav",
]
HELD_REAL = [
    "pocketsphinx__librivox_sense_and_sensibility_0880.wav",
    "pocketsphinx__librivox_sense_and_sensibility_0930.wav",
    "pocketsphinx__cards_002.wav", "pocketsphinx__cards_004.wav", "pocketsphinx__dhd_2934z.wav",
    "deepspeech__arctic_a0024.wav", "leopard__diarization_test.wav",
    "fasterwhisper__stereo_diarization_left.wav", "speechbrain__spk1_snt3.wav",
    "speechbrain__spk2_snt2.wav", "speechbrain__example1.wav",
]
TUNE_TEXT = [
    "turn on the kitchen lights and set the timer for ten minutes",
    "what is the weather going to be like tomorrow morning",
    "please remind me to call my sister at five o'clock",
    "the quick brown fox jumps over the lazy dog",
    "play some music in the living room",
]
HELD_TEXT = [
    "how long does it take to drive from boston to new york",
    "add milk eggs and bread to my shopping list",
    "can you tell me a short story about a dragon",
    "open the garage door and turn off the heating",
    "what time is it in london right now",
]
VOICES = [("en-us", 140, 50), ("en-gb", 175, 35), ("en-us+f3", 210, 70),
          ("en-gb-scotland", 160, 60), ("en-us+m3", 190, 40), ("en-029", 150, 55)]
FIELDS = ["file", "split", "source", "kind", "reference", "duration_s"]


def _rng(name: str) -> np.random.Generator:
    return np.random.default_rng([SEED, zlib.crc32(name.encode())])


def _read(path: Path) -> np.ndarray:
    from edgevoice.audio.wavfile import read_audio

    return read_audio(path, RATE).samples().astype(np.float32) / 32768.0


def _sox(x: np.ndarray, *effects: str) -> np.ndarray:
    import soundfile

    with tempfile.TemporaryDirectory() as d:
        a, b = f"{d}/a.wav", f"{d}/b.wav"
        soundfile.write(a, x, RATE, subtype="FLOAT")
        subprocess.run(["sox", "-R", "-D", a, "-e", "floating-point", b, *effects], check=True,
                       stderr=subprocess.DEVNULL)
        y, _ = soundfile.read(b, dtype="float32")
    return y


def _espeak(text: str, voice: str, rate: int, pitch: int) -> np.ndarray:
    with tempfile.TemporaryDirectory() as d:
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(rate), "-p", str(pitch), "-w",
                        f"{d}/e.wav", text], check=True)
        return _read(Path(d) / "e.wav")


def _active_frames(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``x``'s 30 ms frames, their mean power, and which are within 35 dB of the loudest (the
    speech, not the pauses)."""
    f = x[: len(x) // 480 * 480].reshape(-1, 480)
    e = (f.astype(np.float64) ** 2).mean(axis=1)
    return f, e, e > e.max() * 10 ** -3.5


def active_rms(x: np.ndarray) -> float:
    """RMS of the active frames (``_active_frames``)."""
    _, e, active = _active_frames(x)
    return float(np.sqrt(e[active].mean()))


def set_level(x: np.ndarray, dbfs: float) -> np.ndarray:
    return (x * (10 ** (dbfs / 20) / max(active_rms(x), 1e-9))).astype(np.float32)


def _pad(x: np.ndarray, lead: float = 0.5, tail: float = 0.8) -> np.ndarray:
    return np.concatenate([np.zeros(int(lead * RATE), np.float32), x,
                           np.zeros(int(tail * RATE), np.float32)])


def noise(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS white, pink (1/f power) or brown (1/f^2 power) noise."""
    white = rng.standard_normal(n)
    if kind != "white":
        spec = np.fft.rfft(white)
        f = np.fft.rfftfreq(n, 1 / RATE)
        f[0] = f[1]
        spec /= np.sqrt(f) if kind == "pink" else f
        white = np.fft.irfft(spec, n)
    white -= white.mean()
    return (white / np.sqrt((white ** 2).mean())).astype(np.float32)


def _add_noise(x, snr, kind, speech_rms, rng):
    return x + noise(kind, len(x), rng) * speech_rms * 10 ** (-snr / 20)


def _floor(x, rng, dbfs=-70):
    """A faint noise floor, as every real microphone has (digital silence is not realistic)."""
    return x + rng.normal(0, 10 ** (dbfs / 20), len(x)).astype(np.float32)


class _Writer:
    def __init__(self, out: Path) -> None:
        self.out, self.rows = out, []

    def save(self, name, x, split, source, kind, ref):
        import soundfile

        pcm = np.round(np.clip(x, -1, 32767 / 32768) * 32768).astype(np.int16)
        soundfile.write(str(self.out / f"{name}.wav"), pcm, RATE, subtype="PCM_16")
        self.rows.append(dict(file=f"{name}.wav", split=split, source=source, kind=kind,
                              reference=ref, duration_s=f"{len(x) / RATE:.3f}"))


def _derive(w, rnd, base, x, split, source, ref):
    s = _pad(x)
    w.save(f"{base}__clean", _floor(set_level(s, -26), _rng(base + "c")), split, source,
           "clean", ref)
    for lv in (-40, -6):
        w.save(f"{base}__lvl{-lv}", _floor(set_level(s, lv), _rng(base + str(lv))), split, source,
               f"level{lv}", ref)
    rv = _sox(s, "reverb", "60", "50", "80", "100", "20")[: len(s) + RATE // 2]
    w.save(f"{base}__reverb", _floor(set_level(rv, -26), _rng(base + "r")), split, source,
           "reverb", ref)
    ph = _sox(s, "sinc", "300-3400", "rate", "8000", "rate", "16000")
    w.save(f"{base}__phone", _floor(set_level(ph, -20), _rng(base + "p")), split, source,
           "phone", ref)
    snr, kind = rnd.choice([5, 10, 20]), rnd.choice(["white", "pink", "brown"])
    lvl = set_level(s, -26)
    w.save(f"{base}__noise{kind}{snr}",
           _add_noise(lvl, snr, kind, active_rms(lvl), _rng(base + "n")), split, source,
           f"noise{snr}", ref)


def trim_to_speech(x: np.ndarray, max_gap_s: float = 0.15) -> np.ndarray:
    """``x`` from its first to its last active frame (``_active_frames``), its quieter
    stretches inside cut to ``max_gap_s`` each (a speaker who goes on without pausing)."""
    f, _, active = _active_frames(x)
    idx = np.flatnonzero(active)
    keep, gap, max_gap = [], 0, max(1, int(max_gap_s * RATE / 480))
    for i in range(idx[0], idx[-1] + 1):
        gap = 0 if active[i] else gap + 1
        if gap <= max_gap:
            keep.append(f[i])
    return np.concatenate(keep)


LONG_RUN_S = (10.0, 18.0)  # one utterance's speech: at least 10 s, under vad.max_utterance_s


def _long_runs(w: _Writer, pools: dict[str, list]) -> None:
    """Two ``long_run`` files per split: real clips of that split (not espeak-ng's), trimmed
    and joined by gaps shorter than ``vad.pause_ms`` until the speech lasts 10-18 s."""
    rnd = random.Random(SEED + 1)  # its own stream: the files above do not change
    for split, pool in pools.items():
        real = [p for p in pool if not p[2].startswith("text:")]
        for k in range(2):
            order = rnd.sample(real, len(real))
            sig, refs, names, speech_s = [np.zeros(int(0.7 * RATE), np.float32)], [], [], 0.0
            for x, ref, name in order:
                part = trim_to_speech(x)
                if speech_s + len(part) / RATE > LONG_RUN_S[1]:
                    continue
                if refs:
                    sig.append(np.zeros(int(rnd.uniform(0.12, 0.18) * RATE), np.float32))
                sig.append(set_level(part, -26 + rnd.uniform(-3, 3)))
                refs.append(ref)
                names.append(name)
                speech_s += len(part) / RATE
                if speech_s >= LONG_RUN_S[0]:
                    break
            sig.append(np.zeros(int(0.8 * RATE), np.float32))
            name = f"longrun_{split[:4]}{k}"
            w.save(name, _floor(np.concatenate(sig), _rng(name)), split, "+".join(names),
                   "long_run", " ".join(refs))


def build(out: Path, speech: Path) -> Path:
    """Write the set into ``out``; returns the manifest path."""
    from edgevoice.evaluation import read_manifest

    for tool in ("sox", "espeak-ng"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found: apt install {tool} (see the Makefile's test deps)")
    out.mkdir(parents=True, exist_ok=True)
    refs = {c.path.name: c.reference for c in read_manifest(speech)}
    rnd = random.Random(SEED)
    w = _Writer(out)
    pools: dict[str, list] = {"tuning": [], "heldout": []}
    for split, names in (("tuning", TUNE_REAL), ("heldout", HELD_REAL)):
        for n in names:
            print(f"{split}: {n}", file=sys.stderr, flush=True)
            x = _read(speech / n)
            _derive(w, rnd, n[:-4], x, split, n, refs[n])
            pools[split].append((x, refs[n], n))
    for split, texts in (("tuning", TUNE_TEXT), ("heldout", HELD_TEXT)):
        for i, t in enumerate(texts):
            for j in range(2):
                v, r, p = VOICES[(2 * i + j + (0 if split == "tuning" else 1)) % len(VOICES)]
                x = _espeak(t, v, r, p)
                base = f"espeak_{split[:4]}{i}_{v.replace('+', '_')}_{r}_{p}"
                s = _pad(x)
                w.save(f"{base}__clean", _floor(set_level(s, -26), _rng(base + "c")), split,
                       f"text:{t}", "tts_clean", t)
                kind = ["reverb", "phone", "noise", "lvl"][(i + j) % 4]
                g = _rng(base + kind)
                if kind == "reverb":
                    y = _sox(s, "reverb", "60", "50", "80", "100", "20")[: len(s)]
                    y = _floor(set_level(y, -26), g)
                elif kind == "phone":
                    y = _floor(set_level(_sox(s, "sinc", "300-3400"), -20), g)
                elif kind == "noise":
                    lvl = set_level(s, -26)
                    y = _add_noise(lvl, 10, "pink", active_rms(lvl), g)
                else:
                    y = _floor(set_level(s, -38), g)
                w.save(f"{base}__{kind}", y, split, f"text:{t}", f"tts_{kind}", t)
                pools[split].append((x, t, f"text:{t}"))
    for split in pools:  # long clips with pauses: 4 per split, the last one noisy
        for k in range(4):
            parts = rnd.sample(pools[split], rnd.choice([3, 4]))
            sig = [np.zeros(int(0.7 * RATE), np.float32)]
            for x, _, _ in parts:
                sig.append(set_level(x, -26 + rnd.uniform(-4, 4)))
                sig.append(np.zeros(int(rnd.uniform(0.5, 2.0) * RATE), np.float32))
            name = f"long_{split[:4]}{k}"
            y, kind = _floor(np.concatenate(sig), _rng(name)), "long"
            if k == 3:
                y, kind = _add_noise(y, 15, "pink", 10 ** (-26 / 20), _rng(name + "n")), \
                    "long_noise15"
            w.save(name, y, split, "+".join(p[2] for p in parts), kind,
                   " ".join(p[1] for p in parts))
    _long_runs(w, pools)
    manifest = out / "MANIFEST.tsv"
    with open(manifest, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=FIELDS, delimiter="\t")
        writer.writeheader()
        writer.writerows(w.rows)
    return manifest


def main(argv: list[str] | None = None) -> int:
    from edgevoice.evaluation import speech_dir

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="folder to write the WAVs and MANIFEST.tsv into")
    ap.add_argument("--speech", type=Path, help="the shared real clips (default: "
                    "$EDGEVOICE_SPEECH_DIR or ../shared/speech)")
    args = ap.parse_args(argv)
    speech = args.speech or speech_dir()
    if speech is None:
        print("speech clips not found: set EDGEVOICE_SPEECH_DIR or pass --speech",
              file=sys.stderr)
        return 2
    manifest = build(args.out, speech)
    with open(manifest, encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    total = sum(float(r["duration_s"]) for r in rows)
    print(f"{manifest}: {len(rows)} files, {total:.0f} s of audio")
    return 0


if __name__ == "__main__":
    sys.exit(main())
