"""End of turn on speech with real pauses: false cut-offs and decision delay, per split.

    .venv/bin/python benchmarks/turn_eval.py [--json] [--set FIELD=VALUE ...] [--seed 0]
        [--model PATH] [--infer-ms MS] [--reopen-ms 1000] [--bench N] [--no-asr]

The set is ``edgevoice.devtools.pause_set`` (real clips cut at word boundaries with 250-900 ms
of room tone inserted, clips without a pause, and same-speaker pairs; labelled with where the
turn really ends; split by source clip into ``tuning`` and ``heldout``). Every example is fed
in VAD frames through the ear's real pure stages (``UtteranceSegmenter``: webrtcvad + noise gate
+ neural VAD at onsets + ``Endpointer``; ``VadConfig`` defaults unless ``--set``), under:

(a) ``hangover600``: the turn ends after 600 ms of silence (``SpeechEnd``), today's default;
(b) ``hangover200``: the same after 200 ms;
(c) ``learned``: at each ``SpeechPause`` (``vad.pause_ms`` of silence) Smart Turn hears the
    utterance's last <= 8 s; ``p >= threshold`` ends the turn then (plus the inference time,
    ``--infer-ms``, default the median measured in this run); else keep listening; after
    ``fallback_ms`` of silence it ends anyway (the segmenter's hangover); a verdict said
    before ``--min-silence-ms`` of silence (``turn.min_silence_ms``) waits for it and speech
    before then cancels it. ``learned+asr``
    caps p at 0.2 when pocketsphinx's partial at the pause ends in "and", "the", "to"...
    (``edgevoice.ear.turn_detector.ends_incomplete``); ``learned+oracle`` does the same with the
    reference words (the most a text hint could give);
(d) speculation + reopen (the agent's): not simulated; the ``reopenable`` column counts the
    false cut-offs after which speech resumed within ``--reopen-ms``, i.e. the ones a reopen
    could turn back into one turn.

Per policy and split: false cut-off rate (examples with a decision before the turn's real end),
median and p90 decision delay (real end -> the decision that ends it), mean detector calls.
``threshold`` and ``fallback_ms`` of each learned variant are chosen on TUNING only: the
smallest median delay whose cut-off rate is no higher than (a)'s on tuning (searched on a replay
of each tuning example's pauses, ``decide``), then both splits are run for real with those
values and reported (held-out was never looked at while choosing); text hints are also run
at the plain detector's values (do they help at equal settings?). ``--bench N`` also times N
calls on a real clip: features alone (2 s and 8 s of audio), the ONNX run alone, and whole calls,
at 1 and 2 threads.
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

from edgevoice.audio.format import PCM16_MONO_16K, AudioChunk
from edgevoice.config import TurnConfig, VadConfig
from edgevoice.devtools.pause_set import PauseExample, build_pause_set, smart_turn_model
from edgevoice.ear.endpoint import (
    SpeechAudio,
    SpeechEnd,
    SpeechPause,
    SpeechResume,
    SpeechStart,
    UtteranceSegmenter,
)
from edgevoice.ear.turn_detector import SmartTurn, ends_incomplete
from edgevoice.evaluation import speech_dir, vad_config_with

THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
FALLBACKS_MS = (600, 800, 1000, 1200, 1500, 2000, 2500)
HINT_CAP = 0.2
RATE = 16000


@dataclasses.dataclass
class Outcome:
    decisions: list[float]  # stream ms at which the turn was declared over
    calls: int = 0
    by_fallback: bool = False  # the decision after the real end came from silence alone


class Oracle:
    """Model calls, text at pauses and their timings, cached by (example, utterance, pause)."""

    def __init__(self, detector: SmartTurn | None, asr: bool) -> None:
        self.detector = detector
        self.asr = asr
        self._p: dict = {}
        self._text: dict = {}
        self.call_ms: list[float] = []
        self._recognizer = None

    def probability(self, ex: PauseExample, start_ms: float, at_ms: float,
                    audio: np.ndarray) -> float:
        key = (ex.id, start_ms, at_ms)
        if key not in self._p:
            t = time.perf_counter()
            self._p[key] = self.detector.probability(audio)
            self.call_ms.append((time.perf_counter() - t) * 1000)
        return self._p[key]

    def asr_text(self, ex: PauseExample, start_ms: float, at_ms: float,
                 audio: np.ndarray) -> str:
        key = (ex.id, start_ms, at_ms)
        if key not in self._text:
            if self._recognizer is None:
                from edgevoice.asr.pocketsphinx_backend import PocketsphinxRecognizer

                self._recognizer = PocketsphinxRecognizer()
            rec = self._recognizer
            rec.reset()
            rec.accept(AudioChunk(audio.astype("<i2").tobytes(), PCM16_MONO_16K, start_ms))
            rec.speech_paused()
            self._text[key] = rec.partial()
            rec.reset()
        return self._text[key]


def oracle_text(ex: PauseExample, at_ms: float) -> str:
    """The reference words said before a pause event at ``at_ms`` ("" when unknown)."""
    for (a, b), words in zip(ex.pauses, ex.words_before_pauses, strict=True):
        if a <= at_ms <= b + 100:
            return words
    return ex.text if at_ms >= ex.turn_end_ms else ""


def simulate(ex: PauseExample, cfg: VadConfig, oracle: Oracle | None = None,
             threshold: float | None = None, infer_ms: float = 0.0,
             hint: str = "none", min_silence_ms: float = 0.0) -> Outcome:
    """Feed the example in VAD frames; with ``threshold`` the learned policy, else the
    hangover of ``cfg`` alone. A "complete" verdict ends the turn once the silence has lasted
    ``min_silence_ms`` (the ear's ``turn.min_silence_ms``; speech before then cancels it) and
    the inference is done, whichever is later."""
    seg = UtteranceSegmenter(cfg)
    frame = int(cfg.frame_ms * RATE / 1000)
    out = Outcome([])
    utt: list[np.ndarray] = []
    start_ms = 0.0
    keep = int(TurnConfig().max_audio_s * RATE)
    samples = ex.samples
    verdict: tuple[float, float] | None = None  # (silence floor, decision ms) of a "complete"

    def end_now(at_ms: float) -> None:
        out.decisions.append(at_ms)
        end_turn = getattr(seg, "end_turn", None)  # the ear's "end it now"
        if end_turn is not None:
            list(end_turn("turn_detector"))
        else:  # an older endpoint.py: the same, by hand
            seg._endpointer.reset()

    for i in range(0, len(samples) - frame + 1, frame):
        chunk = AudioChunk(samples[i:i + frame].astype("<i2").tobytes(), PCM16_MONO_16K,
                           i * 1000.0 / RATE)
        ended_now = False
        for ev in seg.feed(chunk):
            if isinstance(ev, SpeechStart):
                utt, start_ms, verdict = [], ev.start_ms, None
            elif isinstance(ev, SpeechResume):
                verdict = None
            elif isinstance(ev, SpeechAudio):
                utt.append(np.frombuffer(ev.chunk.data, dtype="<i2"))
                if verdict is not None and not ended_now and ev.chunk.end_ms >= verdict[0]:
                    end_now(max(verdict[1], ev.chunk.end_ms))
                    ended_now, verdict = True, None
            elif isinstance(ev, SpeechPause) and threshold is not None and not ended_now:
                audio = np.concatenate(utt)[-keep:]
                p = oracle.probability(ex, start_ms, ev.at_ms, audio)
                out.calls += 1
                if hint != "none":
                    text = (oracle.asr_text(ex, start_ms, ev.at_ms, audio) if hint == "asr"
                            else oracle_text(ex, ev.at_ms))
                    if ends_incomplete(text):
                        p = min(p, HINT_CAP)
                if p >= threshold:
                    floor = ev.speech_end_ms + min_silence_ms
                    if ev.at_ms >= floor:
                        end_now(ev.at_ms + infer_ms)
                        ended_now = True
                    else:
                        verdict = (floor, ev.at_ms + infer_ms)
            elif isinstance(ev, SpeechEnd) and not ended_now:
                verdict = None
                out.decisions.append(chunk.end_ms)
                out.by_fallback = threshold is not None and chunk.end_ms >= ex.turn_end_ms
    for ev in seg.flush():
        if isinstance(ev, SpeechEnd):
            out.decisions.append(len(samples) * 1000.0 / RATE)
    return out


def score(examples: list[PauseExample], outcomes: list[Outcome], reopen_ms: float) -> dict:
    cut, delays, reopenable, calls, fallback = [], [], 0, [], 0
    by_kind: dict[str, list[bool]] = {}
    for ex, o in zip(examples, outcomes, strict=True):
        early = [d for d in o.decisions if d < ex.turn_end_ms]
        late = [d for d in o.decisions if d >= ex.turn_end_ms]
        cut.append(bool(early))
        by_kind.setdefault(ex.kind, []).append(bool(early))
        if late:
            delays.append(late[0] - ex.turn_end_ms)
        for d in early:
            resume = [b for a, b in ex.pauses if b > d]
            if resume and resume[0] - d <= reopen_ms:
                reopenable += 1
        calls.append(o.calls)
        fallback += o.by_fallback
    n = max(len(examples), 1)
    return {
        "examples": len(examples),
        "false_cutoff_rate": round(sum(cut) / n, 3),
        "false_cutoffs": sum(cut),
        "cutoff_rate_by_kind": {k: round(sum(v) / len(v), 3) for k, v in sorted(by_kind.items())},
        "median_delay_ms": round(statistics.median(delays)) if delays else None,
        "p90_delay_ms": round(float(np.percentile(delays, 90))) if delays else None,
        "no_decision": len(examples) - len(delays),
        "mean_calls": round(sum(calls) / n, 2),
        "ended_by_fallback": fallback,
        "reopenable_cutoffs": reopenable,
    }


def run_policy(examples, cfg, oracle=None, threshold=None, infer_ms=0.0, hint="none",
               min_silence_ms=0.0):
    return [simulate(e, cfg, oracle, threshold, infer_ms, hint, min_silence_ms)
            for e in examples]


def trace(ex: PauseExample, cfg: VadConfig, oracle: Oracle, with_asr: bool) -> list[tuple]:
    """The example under ``cfg`` with the detector asked at every pause but never obeyed:
    ("pause", at_ms, speech_end_ms, p, asr_text, oracle_text) and ("end", event_ms,
    speech_end_ms) in stream order."""
    seg = UtteranceSegmenter(cfg)
    frame = int(cfg.frame_ms * RATE / 1000)
    keep = int(TurnConfig().max_audio_s * RATE)
    events: list[tuple] = []
    utt: list[np.ndarray] = []
    start_ms = 0.0
    samples = ex.samples
    for i in range(0, len(samples) - frame + 1, frame):
        chunk = AudioChunk(samples[i:i + frame].astype("<i2").tobytes(), PCM16_MONO_16K,
                           i * 1000.0 / RATE)
        for ev in seg.feed(chunk):
            if isinstance(ev, SpeechStart):
                utt, start_ms = [], ev.start_ms
            elif isinstance(ev, SpeechAudio):
                utt.append(np.frombuffer(ev.chunk.data, dtype="<i2"))
            elif isinstance(ev, SpeechPause):
                audio = np.concatenate(utt)[-keep:]
                p = oracle.probability(ex, start_ms, ev.at_ms, audio)
                text = oracle.asr_text(ex, start_ms, ev.at_ms, audio) if with_asr else ""
                events.append(("pause", ev.at_ms, ev.speech_end_ms, p, text,
                               oracle_text(ex, ev.at_ms)))
            elif isinstance(ev, SpeechResume):
                events.append(("resume", ev.at_ms))
            elif isinstance(ev, SpeechEnd):
                events.append(("end", chunk.end_ms, ev.end_ms))
    for ev in seg.flush():
        if isinstance(ev, SpeechEnd):
            events.append(("end", len(samples) * 1000.0 / RATE, ev.end_ms))
    return events


def decide(ex: PauseExample, events: list[tuple], threshold: float, infer_ms: float,
           hint: str, min_silence_ms: float = 0.0, frame_ms: int = 30) -> Outcome:
    """The learned policy replayed on a trace (for the tuning grid). Exact up to the first
    decision; after an early one (a cut-off) the speech that follows is, in the ear, a new
    utterance whose detector calls hear only it, here the whole trace's audio: so it is used
    to choose parameters, and the chosen ones are run for real (``simulate``)."""
    out = Outcome([])
    decided_in = None  # speech_end_ms of the silence in which the detector ended the turn
    verdict: tuple[float, float, float] | None = None  # floor, decision, speech_end

    def settle(until_ms: float) -> None:
        nonlocal verdict, decided_in
        if verdict is not None and verdict[0] <= until_ms:
            out.decisions.append(verdict[1])
            decided_in, verdict = verdict[2], None

    for e in events:
        if e[0] == "pause":
            _, at_ms, speech_end, p, asr, ref = e
            out.calls += 1
            text = {"asr": asr, "oracle": ref}.get(hint, "")
            if hint != "none" and ends_incomplete(text):
                p = min(p, HINT_CAP)
            if p >= threshold:
                floor = speech_end + -(-min_silence_ms // frame_ms) * frame_ms  # a frame's end
                verdict = (floor, max(at_ms + infer_ms, floor), speech_end)
                settle(at_ms)
        elif e[0] == "resume":
            settle(e[1])  # the frame before the resume ended at the floor: it was in time
            verdict = None
        else:
            settle(e[1])
            if decided_in == e[2]:
                continue
            out.decisions.append(e[1])
            out.by_fallback = e[1] >= ex.turn_end_ms
    return out


def tune(tuning, traces: dict, infer_ms: float, hint: str, max_cutoff: float,
         reopen_ms: float, min_silence_ms: float = 0.0, frame_ms: int = 30
         ) -> tuple[dict, list]:
    grid = []
    for fb in FALLBACKS_MS:
        for thr in THRESHOLDS:
            outs = [decide(e, traces[fb][e.id], thr, infer_ms, hint, min_silence_ms, frame_ms)
                    for e in tuning]
            grid.append({"threshold": thr, "fallback_ms": fb, **score(tuning, outs, reopen_ms)})
    ok = [g for g in grid if g["false_cutoff_rate"] <= max_cutoff + 1e-9]
    pool = ok or grid
    best = min(pool, key=lambda g: (g["median_delay_ms"] if ok else 0, g["false_cutoff_rate"],
                                    g["median_delay_ms"], g["p90_delay_ms"], -g["fallback_ms"]))
    return best, grid


def _timed(fn, n: int) -> dict:
    """Median wall and CPU ms of ``n`` calls of ``fn`` (after one warm-up call)."""
    fn()
    wall, cpu = [], []
    for _ in range(n):
        t, c = time.perf_counter(), time.process_time()
        fn()
        wall.append((time.perf_counter() - t) * 1000)
        cpu.append((time.process_time() - c) * 1000)
    return {"wall_ms_median": round(statistics.median(wall), 1),
            "wall_ms_p90": round(float(np.percentile(wall, 90)), 1),
            "cpu_ms_median": round(statistics.median(cpu), 1)}


def bench(model: Path, n: int) -> dict:
    """Where a detector call's time goes: the features (a 2 s utterance, whose window is mostly
    padding, and a full 8 s one), the ONNX run alone, and a whole call, at 1 and 2 threads."""
    from edgevoice.audio.wavfile import read_audio
    from edgevoice.ear.turn_detector import INPUT_NAME
    from edgevoice.ear.whisper_features import smart_turn_features

    folder = speech_dir()
    clip = folder / "pocketsphinx__librivox_sense_and_sensibility_0870.wav"
    audio = np.frombuffer(read_audio(clip).data, dtype="<i2")
    long = np.resize(audio, 8 * RATE)
    out = {"clip_s": round(len(audio) / RATE, 2),
           "features_2s": _timed(lambda: smart_turn_features(audio[-2 * RATE:]), n),
           "features_8s": _timed(lambda: smart_turn_features(long), n)}
    feats = smart_turn_features(audio)
    for threads in (1, 2):
        det = SmartTurn(model, threads=threads)
        session = det._session
        out[f"model_only_threads{threads}"] = _timed(
            lambda s=session: s.run(None, {INPUT_NAME: feats}), n)
        out[f"threads{threads}"] = _timed(lambda d=det: d.probability(audio), n)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="override a VadConfig field (repeatable)")
    ap.add_argument("--seed", type=int, default=0, help="pause set seed")
    ap.add_argument("--model", type=Path, help="Smart Turn ONNX (default: the pipecat-ai "
                    "wheel's copy, cached)")
    ap.add_argument("--threads", type=int, default=TurnConfig().threads)
    ap.add_argument("--infer-ms", type=float, default=None,
                    help="inference time added to a learned decision (default: measured median)")
    ap.add_argument("--reopen-ms", type=float, default=1000.0)
    ap.add_argument("--min-silence-ms", type=float, default=None,
                    help="silence floor of a learned decision (default turn.min_silence_ms)")
    ap.add_argument("--bench", type=int, default=0, metavar="N",
                    help="also time N detector calls at 1 and 2 threads")
    ap.add_argument("--no-asr", action="store_true", help="skip the pocketsphinx text hint")
    args = ap.parse_args()
    folder = speech_dir()
    if folder is None:
        print("no shared/speech folder (set EDGEVOICE_SPEECH_DIR)", file=sys.stderr)
        return 2
    try:
        base = vad_config_with(args.set)
    except ValueError as exc:
        ap.error(str(exc))
    model = args.model or smart_turn_model()
    examples = build_pause_set(folder, args.seed)
    splits = {s: [e for e in examples if e.split == s] for s in ("tuning", "heldout")}
    oracle = Oracle(SmartTurn(model, threads=args.threads), asr=not args.no_asr)
    result: dict = {"vad": dataclasses.asdict(base), "seed": args.seed, "model": str(model),
                    "policies": {}, "chosen": {}}

    def both(name, cfg, **kw):
        result["policies"][name] = {
            s: score(ex, run_policy(ex, cfg, oracle, **kw), args.reopen_ms)
            for s, ex in splits.items()}

    both("hangover600", dataclasses.replace(base, hangover_ms=600))
    both("hangover200", dataclasses.replace(base, hangover_ms=200))
    # Every pause of every example under every fallback, the detector asked (and timed) once.
    tuning = splits["tuning"]
    traces = {fb: {e.id: trace(e, dataclasses.replace(base, hangover_ms=fb), oracle,
                               not args.no_asr) for e in tuning} for fb in FALLBACKS_MS}
    infer_ms = args.infer_ms if args.infer_ms is not None else round(
        statistics.median(oracle.call_ms))
    result["infer_ms"] = infer_ms
    d = TurnConfig()
    floor = args.min_silence_ms if args.min_silence_ms is not None else d.min_silence_ms
    result["min_silence_ms"] = floor
    max_cut = result["policies"]["hangover600"]["tuning"]["false_cutoff_rate"]
    hints = ["none", "oracle"] + ([] if args.no_asr else ["asr"])
    grids = {}
    for hint in hints:
        name = "learned" if hint == "none" else f"learned+{hint}"
        best, grids[name] = tune(tuning, traces, infer_ms, hint, max_cut, args.reopen_ms,
                                 floor, base.frame_ms)
        thr, fb = best["threshold"], best["fallback_ms"]
        result["chosen"][name] = {"threshold": thr, "fallback_ms": fb,
                                  "tuning_replayed": {k: best[k] for k in (
                                      "false_cutoff_rate", "median_delay_ms")}}
        both(f"{name}(t={thr:g},fb={fb})", dataclasses.replace(base, hangover_ms=fb),
             threshold=thr, infer_ms=infer_ms, hint=hint, min_silence_ms=floor)
    # Do text hints help? The same threshold and fallback as the plain detector's, hint on.
    plain = result["chosen"]["learned"]
    for hint in hints[1:]:
        both(f"learned+{hint}(t={plain['threshold']:g},fb={plain['fallback_ms']})",
             dataclasses.replace(base, hangover_ms=plain["fallback_ms"]),
             threshold=plain["threshold"], infer_ms=infer_ms, hint=hint, min_silence_ms=floor)
    for hint in ["none"] + ([] if args.no_asr else ["asr"]):  # +asr is what the agent runs
        name = "learned" if hint == "none" else f"learned+{hint}"
        both(f"{name}@defaults(t={d.threshold:g},fb={d.fallback_ms})",
             dataclasses.replace(base, hangover_ms=d.fallback_ms), threshold=d.threshold,
             infer_ms=infer_ms, hint=hint, min_silence_ms=floor)
    result["calls_timed"] = {"n": len(oracle.call_ms),
                             "median_ms": round(statistics.median(oracle.call_ms), 1),
                             "p90_ms": round(float(np.percentile(oracle.call_ms, 90)), 1)}
    result["tuning_grid"] = {k: [{x: g[x] for x in ("threshold", "fallback_ms",
                                                   "false_cutoff_rate", "median_delay_ms",
                                                   "p90_delay_ms")} for g in v]
                             for k, v in grids.items()}
    if args.bench:
        result["bench"] = bench(model, args.bench)
    if args.json:
        print(json.dumps(result))
        return 0
    print_table(result)
    return 0


def print_table(result: dict) -> None:
    n = {s: r["examples"] for s, r in result["policies"]["hangover600"].items()}
    calls = result["calls_timed"]
    print(f"pause set: {n['tuning']} tuning / {n['heldout']} held-out examples; detector call "
          f"{calls['median_ms']} ms median (p90 {calls['p90_ms']}), {calls['n']} calls; "
          f"learned decisions add {result['infer_ms']:g} ms, no sooner than "
          f"{result['min_silence_ms']:g} ms of silence")
    print(f"{'policy':<34} {'split':<8} {'cut-off':>7} {'med ms':>7} {'p90 ms':>7} "
          f"{'calls':>5} {'fallbk':>6} {'reopen':>6}  cut-off rate by kind")
    for name, per in result["policies"].items():
        for s, r in per.items():
            kinds = " ".join(f"{k}={v:.2f}" for k, v in r["cutoff_rate_by_kind"].items())
            med = r["median_delay_ms"] if r["median_delay_ms"] is not None else "-"
            p90 = r["p90_delay_ms"] if r["p90_delay_ms"] is not None else "-"
            print(f"{name:<34} {s:<8} {r['false_cutoff_rate']:>7.3f} {med:>7} {p90:>7} "
                  f"{r['mean_calls']:>5} {r['ended_by_fallback']:>6} "
                  f"{r['reopenable_cutoffs']:>6}  {kinds}")
    if "bench" in result:
        print("bench:", json.dumps(result["bench"]))


if __name__ == "__main__":
    raise SystemExit(main())
