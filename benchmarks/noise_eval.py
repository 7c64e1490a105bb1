"""Noise never becomes an utterance: generated non-speech of many kinds, tuning vs held-out.

    .venv/bin/python benchmarks/noise_eval.py [--json] [--set FIELD=VALUE ...]
        [--sets tuning,held-out] [--seconds-scale 1.0] [--no-speech]

Runs ``UtteranceSegmenter`` (default ``VadConfig``; ``--set neural=off``: the cheap stages alone)
over the two sets of ``edgevoice.devtools.noise`` (disjoint seeds, kinds and parameters: that
module's docstring says which) at -45..-10 dBFS, and prints:
- utterances per noise kind and level, with the neural stage and without it (webrtcvad + gate);
- minutes evaluated per set, and the share of frames on which the neural VAD ran;
- frame recall / precision on the labelled clips (as ``endpoint_eval.py``), speech clips that gave
  no utterance, and recall with the tuning set's music mixed into the labelled clips at 10 dB SNR;
- the cost per 30 ms frame: the cheap stages, and one Silero chunk.
Thresholds are chosen on the tuning set only; the held-out figures are the result.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from endpoint_eval import add, mix, pr, score_clip, segment  # noqa: E402

from edgevoice.audio.format import PCM16_MONO_16K, AudioChunk  # noqa: E402
from edgevoice.audio.wavfile import iter_chunks, read_audio  # noqa: E402
from edgevoice.config import VadConfig  # noqa: E402
from edgevoice.devtools import noise  # noqa: E402
from edgevoice.devtools.speech_labels import labelled_clips, spoken_clips  # noqa: E402
from edgevoice.ear.endpoint import SpeechStart, UtteranceSegmenter  # noqa: E402
from edgevoice.ear.gate import SpeechDetector  # noqa: E402
from edgevoice.evaluation import speech_dir, vad_config_with  # noqa: E402

SETS = {
    "tuning": noise.tuning_set,
    "held-out": noise.held_out_set,
    # the first held-out draw, seen once before the onset rule changed (see held_out_set)
    "held-out-first": lambda: noise.held_out_set(seed0=2000),
}


def label(spec: noise.NoiseSpec) -> str:
    extra = ",".join(f"{v}" for _, v in spec.params)
    return f"{spec.kind}({extra})" if extra else spec.kind


def utterances_and_cost(cfg: VadConfig, x: np.ndarray) -> tuple[int, float]:
    """Utterances the segmenter finds in ``x`` (30 ms blocks), and the share of the audio the
    neural VAD heard."""
    seg = UtteranceSegmenter(cfg)
    audio = AudioChunk(x.astype("<i2").tobytes(), PCM16_MONO_16K)
    events = [ev for chunk in iter_chunks(audio, 30) for ev in seg.feed(chunk)]
    events += seg.flush()
    neural = seg._detector.neural
    heard = neural.chunks_scored * neural.chunk / max(len(x), 1) if neural else 0.0
    return sum(isinstance(ev, SpeechStart) for ev in events), heard


def run_set(name: str, cfg: VadConfig, scale: float) -> dict:
    cheap = dataclasses.replace(cfg, neural="off")
    specs = SETS[name]()
    kinds: dict[str, dict] = defaultdict(lambda: {"levels": [], "utterances": [],
                                                  "utterances_cheap": [], "seconds": 0.0,
                                                  "awake": []})
    for spec in specs:
        spec = dataclasses.replace(spec, seconds=spec.seconds * scale)
        x = noise.generate(spec)
        k = kinds[label(spec)]
        k["levels"].append(spec.dbfs)
        utts, heard = utterances_and_cost(cfg, x)
        k["utterances"].append(utts)
        k["utterances_cheap"].append(utterances_and_cost(cheap, x)[0])
        k["seconds"] += len(x) / noise.RATE
        k["awake"].append(heard)
    seconds = sum(k["seconds"] for k in kinds.values())
    return {
        "minutes": round(seconds / 60, 2),
        "utterances": sum(sum(k["utterances"]) for k in kinds.values()),
        "utterances_cheap": sum(sum(k["utterances_cheap"]) for k in kinds.values()),
        "neural_awake_share": round(float(np.mean([a for k in kinds.values()
                                                   for a in k["awake"]])), 4),
        "kinds": {n: {**k, "seconds": round(k["seconds"], 1),
                      "awake": [round(a, 3) for a in k["awake"]]} for n, k in kinds.items()},
    }


def speech_figures(cfg: VadConfig, folder: Path) -> dict:
    labelled = [(lc, read_audio(lc.path).samples()) for lc in labelled_clips(folder)]
    total, clips = {}, {}
    for lc, x in labelled:
        s = score_clip(lc, x, segment(cfg, x), cfg.preroll_ms)
        total = add(total, s["counts"])
        clips[lc.path.name] = round(pr(s["counts"])[1], 3)
    missed = [c.path.name for c in spoken_clips(folder)
              if not segment(cfg, read_audio(c.path).samples())]
    in_music = {}
    for spec in noise.tuning_set():
        if spec.kind != "music" or spec.dbfs != -25.0:
            continue
        m = noise.generate(dataclasses.replace(spec, seconds=30.0))
        tot = {}
        for lc, x in labelled:
            y = mix(x, m, lc.spans, 10.0)
            tot = add(tot, score_clip(lc, y, segment(cfg, y), cfg.preroll_ms)["counts"])
        in_music[label(spec)] = [round(v, 3) for v in pr(tot)]
    p, r = pr(total)
    return {"frame_precision": round(p, 3), "frame_recall": round(r, 3), "per_clip_recall": clips,
            "speech_clips_missed": missed, "music_10dB_precision_recall": in_music}


def cost(cfg: VadConfig, folder: Path | None) -> dict:
    """Microseconds per 30 ms frame of the cheap stages, and per Silero chunk, on speech."""
    det = SpeechDetector(dataclasses.replace(cfg, neural="off"))
    if folder is not None:
        x = np.concatenate([read_audio(lc.path).samples() for lc in labelled_clips(folder)[:3]])
    else:
        x = noise.generate(noise.NoiseSpec("music", 20.0, -20.0, 1))
    n = det.frame_samples
    frames = [x[i * n:(i + 1) * n].tobytes() for i in range(len(x) // n)]
    t0 = time.process_time()
    for f in frames:
        det.is_speech(f)
    cheap_us = (time.process_time() - t0) / len(frames) * 1e6
    out = {"cheap_us_per_frame": round(cheap_us, 1)}
    neural = SpeechDetector(cfg).neural
    if neural is not None:
        chunks = [x[i * 512:(i + 1) * 512] for i in range(len(x) // 512)]
        t0 = time.process_time()
        for c in chunks:
            neural.scorer.probability(c)
        out["silero_us_per_chunk"] = round((time.process_time() - t0) / len(chunks) * 1e6, 1)
    return out


def report(res: dict) -> None:
    print(f"config: neural={res['config']['neural']}"
          f" threshold={res['config']['neural_threshold']}")
    for name, s in res["sets"].items():
        print(f"\n{name}: {s['minutes']:.1f} min, utterances {s['utterances']}"
              f" (webrtcvad + gate alone: {s['utterances_cheap']}),"
              f" neural VAD awake on {100 * s['neural_awake_share']:.1f}% of the audio")
        for kind, k in s["kinds"].items():
            levels = " ".join(f"{lv:g}:{u}({c})" for lv, u, c in
                              zip(k["levels"], k["utterances"], k["utterances_cheap"],
                                  strict=True))
            print(f"  {kind:30s} {k['seconds']:5.0f} s  utterances by dBFS: {levels}")
    sp = res.get("speech")
    if sp:
        print(f"\nlabelled clips: frame precision {sp['frame_precision']:.3f}"
              f"  recall {sp['frame_recall']:.3f}  speech clips missed:"
              f" {sp['speech_clips_missed'] or 'none'}")
        print("  recall per clip: " + "  ".join(f"{k[:24]} {v:.3f}"
                                               for k, v in sp["per_clip_recall"].items()))
        print("  tuning music mixed in at 10 dB SNR (P/R): " + "  ".join(
            f"{k} {p:.3f}/{r:.3f}" for k, (p, r) in sp["music_10dB_precision_recall"].items()))
    c = res["cost"]
    print(f"\ncost: webrtcvad + gate {c['cheap_us_per_frame']} us per 30 ms frame (CPU time)"
          + (f", Silero {c['silero_us_per_chunk']} us per 32 ms chunk when awake"
             if "silero_us_per_chunk" in c else ", no neural stage"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="override a VadConfig field, e.g. neural=off")
    ap.add_argument("--sets", default="tuning,held-out", help="which noise sets, comma-separated")
    ap.add_argument("--seconds-scale", type=float, default=1.0,
                    help="scale every noise clip's length (1.0: 6 min tuning, 12 min held out)")
    ap.add_argument("--no-speech", action="store_true", help="skip the labelled-clip figures")
    args = ap.parse_args()
    try:
        cfg = vad_config_with(args.set)
    except ValueError as exc:
        ap.error(str(exc))
    folder = speech_dir()
    res = {"config": dataclasses.asdict(cfg), "sets": {}}
    for name in args.sets.split(","):
        if name not in SETS:
            ap.error(f"unknown set {name!r}; one of {', '.join(SETS)}")
        res["sets"][name] = run_set(name, cfg, args.seconds_scale)
    if folder is not None and not args.no_speech:
        res["speech"] = speech_figures(cfg, folder)
    elif not args.no_speech:
        print("speech clips not found (EDGEVOICE_SPEECH_DIR): no recall figures", file=sys.stderr)
    res["cost"] = cost(cfg, folder)
    print(json.dumps(res, indent=2) if args.json else "", end="\n" if args.json else "")
    if not args.json:
        report(res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
