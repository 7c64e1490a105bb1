"""Endpointing quality on the labelled real clips, on noise, and on speech mixed with noise.

    .venv/bin/python benchmarks/endpoint_eval.py [--json] [--set FIELD=VALUE ...]

Runs ``UtteranceSegmenter`` (webrtcvad + noise gate + neural VAD at onsets + endpointer, default
``VadConfig`` unless overridden with ``--set``, e.g. ``--set mode=2 --set neural=off``) over 30 ms
blocks and prints:
- frame precision / recall at 10 ms resolution of the utterances (pre-roll included: the audio the
  recogniser gets) against the labelled spans, inside the labelled region of each clip;
- start / end endpoint errors (ms, signed: negative = before the label) and the end latency (from
  the labelled end of speech to the SpeechEnd event);
- the per-frame decision of webrtcvad alone and of webrtcvad AND the gate (30 ms frames);
- utterances found on noise-only audio (the real koala noise, synthetic white / pink / brown noise),
  with webrtcvad alone for comparison, and on every speech clip (0 = missed);
- frame recall / precision with the koala noise mixed into the labelled clips at several SNRs;
- the cost of the per-frame decision on this machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from edgevoice.audio.format import PCM16_MONO_16K, AudioChunk  # noqa: E402
from edgevoice.audio.wavfile import iter_chunks, read_audio  # noqa: E402
from edgevoice.config import VadConfig  # noqa: E402
from edgevoice.devtools.speech_labels import (
    LabelledClip,
    frame_labels,
    labelled_clips,
    noise_clips,
    spoken_clips,
    synthetic_noise,
)
from edgevoice.ear.endpoint import (  # noqa: E402
    SpeechEnd,
    SpeechStart,
    UtteranceSegmenter,
)
from edgevoice.ear.gate import SpeechDetector  # noqa: E402
from edgevoice.evaluation import speech_dir, vad_config_with  # noqa: E402

BLOCK_MS = 30
STEP_S = 0.010
NOISE_LEVELS = (-50, -40, -30, -20, -10)
SNRS_DB = (20, 10, 5, 0)


@dataclasses.dataclass
class Utt:
    start_ms: float
    end_ms: float
    reason: str
    event_ms: float  # stream time at which SpeechEnd was emitted


def segment(cfg: VadConfig, samples: np.ndarray) -> list[Utt]:
    seg = UtteranceSegmenter(cfg)
    audio = AudioChunk(samples.astype("<i2").tobytes(), PCM16_MONO_16K)
    utts: list[Utt] = []
    start = None
    for chunk in iter_chunks(audio, BLOCK_MS):
        for ev in seg.feed(chunk):
            if isinstance(ev, SpeechStart):
                start = ev.start_ms
            elif isinstance(ev, SpeechEnd):
                utts.append(Utt(start, ev.end_ms, ev.reason, chunk.end_ms))
    for ev in seg.flush():
        if isinstance(ev, SpeechEnd):
            utts.append(Utt(start, ev.end_ms, ev.reason, audio.end_ms))
    return utts


def frame_scores(pred: np.ndarray, ref: np.ndarray) -> dict:
    tp = int(np.sum(pred & ref))
    return {"tp": tp, "fp": int(np.sum(pred & ~ref)), "fn": int(np.sum(~pred & ref))}


def pr(c: dict) -> tuple[float, float]:
    p = c["tp"] / max(c["tp"] + c["fp"], 1)
    r = c["tp"] / max(c["tp"] + c["fn"], 1)
    return p, r


def add(a: dict, b: dict) -> dict:
    return {k: a.get(k, 0) + b[k] for k in b}


def score_clip(lc: LabelledClip, samples: np.ndarray, utts: list[Utt], preroll_ms: float) -> dict:
    """Frame counts and endpoint errors of one clip inside its labelled region.

    Utterances whose first speech (start + pre-roll) lies past the labelled region are ignored.
    Labelled spans and the utterances overlapping them are grouped into connected pieces, so that
    a span cut in two (a pause longer than the hangover) counts as a split and two spans bridged by
    one utterance as a merge, not as endpoint errors; each piece gives one start and one end error.
    """
    r0, r1 = lc.region
    n = int(round(len(samples) / 16000 / STEP_S))
    ref = frame_labels(lc.spans, n, STEP_S)
    pred = frame_labels([(u.start_ms / 1000, u.end_ms / 1000) for u in utts], n, STEP_S)
    centres = (np.arange(n) + 0.5) * STEP_S
    inside = (centres >= r0) & (centres < r1)
    counts = frame_scores(pred[inside], ref[inside])
    utts = [u for u in utts if (u.start_ms + preroll_ms) / 1000 < r1]
    spans = list(lc.spans)
    links = [[i for i, (a, b) in enumerate(spans) if u.start_ms / 1000 < b and u.end_ms / 1000 > a]
             for u in utts]
    false = sum(1 for ln in links if not ln)
    pieces: list[tuple[set[int], set[int]]] = []  # (span indexes, utterance indexes)
    for ui, ln in enumerate(links):
        if not ln:
            continue
        joined = [p for p in pieces if p[0] & set(ln)]
        new = (set(ln).union(*(p[0] for p in joined)), {ui}.union(*(p[1] for p in joined)))
        pieces = [p for p in pieces if p not in joined] + [new]
    starts, ends, latencies = [], [], []
    for span_ix, utt_ix in pieces:
        first_span, last_span = spans[min(span_ix)], spans[max(span_ix)]
        first_utt, last_utt = utts[min(utt_ix)], utts[max(utt_ix)]
        starts.append(first_utt.start_ms - first_span[0] * 1000)
        ends.append(last_utt.end_ms - last_span[1] * 1000)
        if last_utt.reason == "silence":
            latencies.append(last_utt.event_ms - last_span[1] * 1000)
    covered = set().union(*(p[0] for p in pieces)) if pieces else set()
    return {
        "file": lc.path.name,
        "counts": counts,
        "utterances": len(utts),
        "spans": len(spans),
        "missed_spans": len(spans) - len(covered),
        "false_utterances": false,
        "splits": sum(len(u) - 1 for _, u in pieces),
        "merges": sum(len(s) - 1 for s, _ in pieces),
        "start_err_ms": starts,
        "end_err_ms": ends,
        "end_latency_ms": latencies,
    }


def detector_frames(cfg: VadConfig, samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame decisions of webrtcvad alone and of webrtcvad AND the gate (no neural VAD: it
    only judges onsets, see ``benchmarks/noise_eval.py``)."""
    gated = SpeechDetector(dataclasses.replace(cfg, neural="off"))
    alone = SpeechDetector(without_gate(cfg))
    n = gated.frame_samples
    frames = [samples[i * n:(i + 1) * n].tobytes() for i in range(len(samples) // n)]
    return (np.array([alone.is_speech(f) for f in frames], dtype=bool),
            np.array([gated.is_speech(f) for f in frames], dtype=bool))


def without_gate(cfg: VadConfig) -> VadConfig:
    """webrtcvad alone: no noise gate, no neural VAD."""
    return dataclasses.replace(cfg, gate_min_dbfs=-100.0, gate_max_flatness=1.0, neural="off")


def summary(values: list[float]) -> dict:
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "median": statistics.median(values),
        "mean": statistics.fmean(values),
        "min": min(values),
        "max": max(values),
        "mean_abs": statistics.fmean(abs(v) for v in values),
    }


def mix(speech: np.ndarray, noise: np.ndarray, spans, snr_db: float) -> np.ndarray:
    """Speech plus tiled noise scaled so that speech-span power / noise power = ``snr_db``."""
    s = speech.astype(np.float64)
    mask = frame_labels(spans, len(s), 1 / 16000)
    p_speech = np.mean(s[mask] ** 2)
    nz = np.resize(noise.astype(np.float64), len(s))
    nz *= np.sqrt(p_speech / np.mean(nz**2) / 10 ** (snr_db / 10))
    return np.clip(np.round(s + nz), -32768, 32767).astype(np.int16)


def run(cfg: VadConfig, folder: Path) -> dict:
    vad_only_cfg = without_gate(cfg)
    labelled = [(lc, read_audio(lc.path).samples()) for lc in labelled_clips(folder)]

    clips, total = [], {}
    starts, ends, lats = [], [], []
    det = {"vad": {}, "vad+gate": {}}
    for lc, x in labelled:
        s = score_clip(lc, x, segment(cfg, x), cfg.preroll_ms)
        clips.append(s)
        total = add(total, s["counts"])
        starts += s["start_err_ms"]
        ends += s["end_err_ms"]
        lats += s["end_latency_ms"]
        v, g = detector_frames(cfg, x)
        step = cfg.frame_ms / 1000
        ref = frame_labels(lc.spans, len(v), step)
        inside = ((np.arange(len(v)) + 0.5) * step) < lc.region[1]
        det["vad"] = add(det["vad"], frame_scores(v[inside], ref[inside]))
        det["vad+gate"] = add(det["vad+gate"], frame_scores(g[inside], ref[inside]))
    p, r = pr(total)

    noise = {}
    sources = {c.path.name: read_audio(c.path).samples() for c in noise_clips(folder)}
    for kind in ("white", "pink", "brown"):
        for level in NOISE_LEVELS:
            sources[f"{kind} {level} dBFS"] = synthetic_noise(kind, 10.0, level, seed=level + 100)
    for name, x in sources.items():
        v, g = detector_frames(cfg, x)
        noise[name] = {
            "seconds": round(len(x) / 16000, 2),
            "utterances": len(segment(cfg, x)),
            "utterances_vad_only": len(segment(vad_only_cfg, x)),
            "speech_frames_vad_only": round(float(v.mean()), 3),
            "speech_frames_gated": round(float(g.mean()), 3),
        }

    per_clip = {}
    for c in spoken_clips(folder):
        per_clip[c.path.name] = len(segment(cfg, read_audio(c.path).samples()))

    noisy = {}
    if sources:
        koala = next(iter(v for k, v in sources.items() if "koala" in k), None)
        if koala is not None:
            for snr in SNRS_DB:
                tot = {}
                for lc, x in labelled:
                    y = mix(x, koala, lc.spans, snr)
                    tot = add(tot, score_clip(lc, y, segment(cfg, y), cfg.preroll_ms)["counts"])
                np_, nr = pr(tot)
                noisy[f"{snr} dB"] = {"precision": round(np_, 3), "recall": round(nr, 3)}

    det_cost = SpeechDetector(dataclasses.replace(cfg, neural="off"))
    frames = [x[i:i + det_cost.frame_samples] for _, x in labelled[:2]
              for i in range(0, len(x) - det_cost.frame_samples, det_cost.frame_samples)]
    t0 = time.perf_counter()
    for f in frames:
        det_cost.gate.features(f)
    gate_us = (time.perf_counter() - t0) / len(frames) * 1e6
    t0 = time.perf_counter()
    for f in frames:
        det_cost.is_speech(f.tobytes())
    decide_us = (time.perf_counter() - t0) / len(frames) * 1e6
    neural = SpeechDetector(cfg).neural
    silero_us = None
    if neural is not None:
        x = np.concatenate(frames)
        chunks = [x[i:i + neural.chunk] for i in range(0, len(x) - neural.chunk, neural.chunk)]
        t0 = time.perf_counter()
        for c in chunks:
            neural.scorer.probability(c)
        silero_us = round((time.perf_counter() - t0) / len(chunks) * 1e6, 1)

    return {
        "config": dataclasses.asdict(cfg),
        "labelled": {
            "clips": len(labelled),
            "frame_precision": round(p, 3),
            "frame_recall": round(r, 3),
            "spans": sum(c["spans"] for c in clips),
            "missed_spans": sum(c["missed_spans"] for c in clips),
            "false_utterances": sum(c["false_utterances"] for c in clips),
            "splits": sum(c["splits"] for c in clips),
            "merges": sum(c["merges"] for c in clips),
            "start_err_ms": summary(starts),
            "end_err_ms": summary(ends),
            "end_latency_ms": summary(lats),
            "per_clip": clips,
        },
        "detector_frames": {
            k: {"precision": round(pr(c)[0], 3), "recall": round(pr(c)[1], 3)}
            for k, c in det.items()
        },
        "noise": noise,
        "utterances_per_speech_clip": per_clip,
        "speech_clips_missed": sorted(k for k, n in per_clip.items() if n == 0),
        "koala_mixed": noisy,
        "cost_us_per_frame": {"gate_fft": round(gate_us, 1), "vad+gate": round(decide_us, 1),
                              "silero_per_512_chunk": silero_us},
    }


def _fmt(s: dict) -> str:
    if not s.get("n"):
        return "n/a"
    return (f"median {s['median']:+.0f}  mean {s['mean']:+.0f}"
            f"  range {s['min']:+.0f}..{s['max']:+.0f}  (n={s['n']})")


def report(res: dict) -> None:
    lab = res["labelled"]
    print(f"labelled clips: {lab['clips']}  (10 ms frames, utterance = pre-roll..end of speech)")
    for c in lab["per_clip"]:
        p, r = pr(c["counts"])
        print(f"  {c['file']:55s} P {p:.3f} R {r:.3f}  utts {c['utterances']}"
              f"  spans {c['spans']} missed {c['missed_spans']} false {c['false_utterances']}"
              f" split {c['splits']} merged {c['merges']}")
    print(f"frame precision {lab['frame_precision']:.3f}  recall {lab['frame_recall']:.3f}"
          f"  missed spans {lab['missed_spans']}/{lab['spans']}"
          f"  false utterances {lab['false_utterances']}"
          f"  splits {lab['splits']}  merges {lab['merges']}")
    print(f"start error ms:  {_fmt(lab['start_err_ms'])}")
    print(f"end error ms:    {_fmt(lab['end_err_ms'])}")
    print(f"end latency ms:  {_fmt(lab['end_latency_ms'])}")
    d = res["detector_frames"]
    print("per-frame decision (P/R): "
          + "  ".join(f"{k} {v['precision']:.3f}/{v['recall']:.3f}" for k, v in d.items()))
    print("noise only: utterances (webrtcvad alone)  speech frames vad / vad+gate")
    for name, n in res["noise"].items():
        print(f"  {name:22s} {n['seconds']:5.1f} s  {n['utterances']:3d}"
              f" ({n['utterances_vad_only']:3d})"
              f"   {n['speech_frames_vad_only']:.3f} / {n['speech_frames_gated']:.3f}")
    counts = res["utterances_per_speech_clip"]
    hist: dict[int, int] = {}
    for n in counts.values():
        hist[n] = hist.get(n, 0) + 1
    print(f"speech clips: {len(counts)}, utterances per clip {dict(sorted(hist.items()))}"
          f", missed: {res['speech_clips_missed'] or 'none'}")
    print("koala noise mixed into the labelled clips (P/R): "
          + "  ".join(f"SNR {k} {v['precision']:.3f}/{v['recall']:.3f}"
                      for k, v in res["koala_mixed"].items()))
    c = res["cost_us_per_frame"]
    print(f"cost per {res['config']['frame_ms']} ms frame: gate FFT {c['gate_fft']} us,"
          f" webrtcvad+gate {c['vad+gate']} us; Silero (onsets only) "
          + (f"{c['silero_per_512_chunk']} us per 32 ms chunk" if c["silero_per_512_chunk"]
             else "off"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="override a VadConfig field, e.g. mode=2")
    args = ap.parse_args()
    folder = speech_dir()
    if folder is None:
        print("speech clips not found: set EDGEVOICE_SPEECH_DIR", file=sys.stderr)
        return 2
    try:
        cfg = vad_config_with(args.set)
    except ValueError as exc:
        ap.error(str(exc))
    res = run(cfg, folder)
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        report(res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
