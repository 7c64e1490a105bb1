"""Speech recognition on the evaluation set: streaming vs batch WER, speed, time to the final.

    .venv/bin/python benchmarks/asr_eval.py [--manifest PATH] [--split tuning|heldout]
        [--kind KIND ...] [--every N] [--limit N] [--jobs N] [--lookahead-ms MS] [--no-batch]
        [--set VADKEY=VALUE ...] [--decoder KEY=VALUE ...] [--no-finals-at-pauses]
        [--json] [--backend pocketsphinx|vosk] [--vosk-model DIR]

The set: ``python -m edgevoice.devtools.asr_eval_set DIR`` (built into
``$EDGEVOICE_ASR_EVAL_SET`` or ``~/.cache/edgevoice/asr-eval-set`` when --manifest is not given
and it is not there yet); its MANIFEST.tsv has file, split, source, kind, reference, duration_s.

Every file gets a fresh recognizer (the same as one fresh process per file: nothing else is
shared). Per file:
- streaming: edgevoice's StreamingTranscriber exactly as ``edgevoice transcribe`` drives it
  (default config: VAD, endpointer, ``audio.block_ms`` blocks, partials every
  ``asr.partial_interval_ms``);
- batch: pocketsphinx's own whole-file decoding, a fresh ``Decoder(samprate=16000)`` with its
  default config and ``process_raw(data, full_utt=True)``;
- real-time factor of each (wall time / audio time; the decoder load is not counted);
- finish(): the time each ``finish()`` call takes (CPU time of the decoding thread: wall time
  under CPU contention measures the contention; wall time in the JSON). With finals at pauses
  (the transcriber's default) it is called at every pause, for the segment since the last one,
  or, for a recognizer with a ``checkpoint`` (pocketsphinx), that is called instead and timed
  here the same way (the utterance's audio so far; the decoder's own end is left to the next
  utterance's start, inside the streaming real-time factor);
- final after the endpoint: how long after the endpoint (end of speech + ``vad.hangover_ms``)
  the utterance's final transcript is ready, in CPU time: the ``finish()`` run at the endpoint,
  or, when a pause already finished the last segment, what that finish took beyond the
  ``hangover_ms - pause_ms`` of silence still to come (usually 0).
Prints corpus WER per split and per split x condition (``kind``); progress goes to stderr.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import sys
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from edgevoice.evaluation import vad_config_with, word_errors

LONG_UTTERANCE_S = 8.0  # "10 s utterances": finish latency is also reported over these


def default_set_dir() -> Path:
    env = os.environ.get("EDGEVOICE_ASR_EVAL_SET")
    return Path(env) if env else Path.home() / ".cache" / "edgevoice" / "asr-eval-set"


def _make(backend: str, vosk_model: str | None, lookahead_ms: int | None,
          decoder: dict | None = None):
    if backend == "vosk":
        from edgevoice.asr.vosk_backend import VoskRecognizer

        return VoskRecognizer(Path(vosk_model))
    from edgevoice.asr.pocketsphinx_backend import PocketsphinxRecognizer

    kwargs = dict(decoder or {})
    if lookahead_ms is not None:
        kwargs["lookahead_ms"] = lookahead_ms
    return PocketsphinxRecognizer(**kwargs)


def _decoder_value(text: str):
    """A pocketsphinx config value from the command line: bool, int, float or string."""
    if text.lower() in ("true", "false", "yes", "no"):
        return text.lower() in ("true", "yes")
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


class _Timed:
    """Wraps a recognizer: times ``finish()`` and counts each utterance's audio."""

    def __init__(self, rec) -> None:
        self.rec, self.name, self.sample_rate = rec, rec.name, rec.sample_rate
        self.utterances: list[tuple[float, float, float]] = []  # audio s, finish CPU s, wall s
        self._audio_ms = 0.0
        for optional in ("speech_paused", "resume_utterance"):  # looked up with getattr
            if hasattr(rec, optional):
                setattr(self, optional, getattr(rec, optional))
        if hasattr(rec, "checkpoint"):
            self.checkpoint = self._checkpoint

    def accept(self, chunk) -> None:
        self._audio_ms += chunk.duration_ms
        self.rec.accept(chunk)

    def partial(self) -> str:
        return self.rec.partial()

    def finish(self):
        t0, c0 = time.perf_counter(), time.thread_time()
        transcript = self.rec.finish()
        if self._audio_ms:
            self.utterances.append((self._audio_ms / 1000, time.thread_time() - c0,
                                    time.perf_counter() - t0))
        self._audio_ms = 0.0
        return transcript

    def _checkpoint(self):
        """Timed like ``finish`` (it stands in for it at a pause); the utterance goes on."""
        t0, c0 = time.perf_counter(), time.thread_time()
        transcript = self.rec.checkpoint()
        self.utterances.append((self._audio_ms / 1000, time.thread_time() - c0,
                                time.perf_counter() - t0))
        return transcript

    def spent_since(self, n: int) -> float:
        """CPU seconds of the finish() calls after the first ``n``."""
        return sum(c for _, c, _ in self.utterances[n:])

    def reset(self) -> None:
        self._audio_ms = 0.0
        self.rec.reset()

    def close(self) -> None:
        self.rec.close()


def _batch_text(data: bytes) -> tuple[str, float]:
    from pocketsphinx import Decoder

    from edgevoice.asr.pocketsphinx_backend import _ALT_PRONUNCIATION, _is_filler

    decoder = Decoder(samprate=16000, loglevel="FATAL")
    t0 = time.perf_counter()
    decoder.start_utt()
    decoder.process_raw(data, False, True)
    decoder.end_utt()
    text = " ".join(_ALT_PRONUNCIATION.sub("", s.word) for s in decoder.seg()
                    if not _is_filler(s.word))
    return text, time.perf_counter() - t0


def evaluate_file(job: dict) -> dict:
    from edgevoice.audio.wavfile import iter_chunks, read_audio
    from edgevoice.config import Config
    from edgevoice.ear.transcriber import Pause, Resume, StreamingTranscriber, Utterance
    from edgevoice.evaluation import vad_config_with

    row = job["row"]
    cfg = Config()
    vad = vad_config_with(job.get("vad_set", []))
    audio = read_audio(job["path"], cfg.audio.sample_rate)
    rec = _Timed(_make(job["backend"], job["vosk_model"], job["lookahead_ms"],
                       job.get("decoder")))
    transcriber = StreamingTranscriber(vad, rec, cfg.asr.partial_interval_ms,
                                       finals_at_pauses=job.get("finals_at_pauses", True))
    slack = max(0.0, (vad.hangover_ms - vad.pause_ms) / 1000) if vad.pause_ms else 0.0
    finals: list[Utterance] = []
    after_endpoint: list[tuple[float, float]] = []  # utterance s, final after the endpoint s
    pause_cost = 0.0
    t0 = time.perf_counter()
    for chunk in [*iter_chunks(audio, cfg.audio.block_ms), None]:
        n = len(rec.utterances)
        events = list(transcriber.feed(chunk) if chunk is not None else transcriber.flush())
        for event in events:
            if isinstance(event, Pause) and event.final:
                pause_cost = rec.spent_since(n)
            elif isinstance(event, Resume):
                pause_cost = 0.0
            elif isinstance(event, Utterance):
                finals.append(event)
                at_end = rec.spent_since(n)
                late = at_end if at_end else max(0.0, pause_cost - slack)
                after_endpoint.append(((event.end_ms - event.start_ms) / 1000, late))
                pause_cost = 0.0
    stream = " ".join(u.text for u in finals)
    stream_s = time.perf_counter() - t0
    rec.close()
    out = dict(file=row["file"], split=row["split"], kind=row["kind"],
               audio_s=audio.duration_ms / 1000, stream=stream, stream_s=stream_s,
               utterances=rec.utterances, after_endpoint=after_endpoint)
    errors, words = word_errors(row["reference"], stream)
    out.update(words=words, stream_errors=errors)
    if job["batch"]:
        batch, batch_s = _batch_text(audio.data)
        out.update(batch=batch, batch_s=batch_s,
                   batch_errors=word_errors(row["reference"], batch)[0])
    return out


def _ms(values: list[float]) -> dict:
    if not values:
        return {"n": 0}
    values = sorted(values)
    p90 = values[min(len(values) - 1, int(round(0.9 * (len(values) - 1))))]
    return {"n": len(values), "median_ms": round(1000 * statistics.median(values), 1),
            "p90_ms": round(1000 * p90, 1), "max_ms": round(1000 * values[-1], 1)}


def summarize(rows: list[dict]) -> dict:
    def group(items):
        words = sum(r["words"] for r in items)
        audio = sum(r["audio_s"] for r in items)
        g = {"files": len(items), "words": words, "audio_s": round(audio, 1),
             "wer_streaming": round(sum(r["stream_errors"] for r in items) / max(words, 1), 4),
             "rtf_streaming": round(sum(r["stream_s"] for r in items) / max(audio, 1e-9), 4)}
        if all("batch_errors" in r for r in items):
            g["wer_batch"] = round(sum(r["batch_errors"] for r in items) / max(words, 1), 4)
            g["gap"] = round(g["wer_streaming"] - g["wer_batch"], 4)
            g["rtf_batch"] = round(sum(r["batch_s"] for r in items) / max(audio, 1e-9), 4)
        utts = [u for r in items for u in r["utterances"]]
        g["finish"] = _ms([c for _, c, _ in utts])
        g["finish_long"] = _ms([c for a, c, _ in utts if a >= LONG_UTTERANCE_S])
        g["finish_long_wall"] = _ms([w for a, _, w in utts if a >= LONG_UTTERANCE_S])
        ends = [e for r in items for e in r.get("after_endpoint", [])]
        g["after_endpoint"] = _ms([late for _, late in ends])
        g["after_endpoint_long"] = _ms([late for d, late in ends if d >= LONG_UTTERANCE_S])
        return g

    by_split, by_kind = defaultdict(list), defaultdict(list)
    for r in rows:
        by_split[r["split"]].append(r)
        by_kind[(r["split"], r["kind"])].append(r)
    return {"all": group(rows),
            "splits": {s: group(v) for s, v in sorted(by_split.items())},
            "conditions": {f"{s}/{k}": group(v) for (s, k), v in sorted(by_kind.items())}}


def _print_table(summary: dict) -> None:
    cols = "files words  wer_str  wer_bat    gap  rtf_str  rtf_bat  finish CPU p50/max ms"
    print(f"{'split/condition':28s} {cols}")

    def line(name, g):
        f = g["finish"]
        fin = f"{f.get('median_ms', 0):6.1f}/{f.get('max_ms', 0):6.1f}" if f["n"] else "-"
        bat = (f"{g['wer_batch']:8.3f} {g['gap']:+6.3f}" if "wer_batch" in g
               else f"{'-':>8s} {'-':>6s}")
        rtfb = f"{g['rtf_batch']:8.3f}" if "rtf_batch" in g else f"{'-':>8s}"
        print(f"{name:28s} {g['files']:5d} {g['words']:5d} {g['wer_streaming']:8.3f} {bat} "
              f"{g['rtf_streaming']:8.3f} {rtfb}  {fin}")

    for split, g in summary["splits"].items():
        line(split, g)
        for name, c in summary["conditions"].items():
            if name.startswith(split + "/"):
                line("  " + name.split("/", 1)[1], c)
    line("all", summary["all"])
    for split, g in list(summary["splits"].items()) + [("all", summary["all"])]:
        fl = g["finish_long"]
        if fl["n"]:
            print(f"finish() on segments >= {LONG_UTTERANCE_S:g} s ({split}): n={fl['n']} "
                  f"median {fl['median_ms']} ms, p90 {fl['p90_ms']} ms, max {fl['max_ms']} ms")
        for key, what in (("after_endpoint", "all utterances"),
                          ("after_endpoint_long", f"utterances >= {LONG_UTTERANCE_S:g} s")):
            e = g[key]
            if e["n"]:
                print(f"final after the endpoint, {what} ({split}): n={e['n']} median "
                      f"{e['median_ms']} ms, p90 {e['p90_ms']} ms, max {e['max_ms']} ms")


def _manifest(path: Path | None) -> Path:
    if path is not None:
        return path
    folder = default_set_dir()
    if not (folder / "MANIFEST.tsv").is_file():
        from edgevoice.devtools import asr_eval_set

        print(f"building the evaluation set in {folder}", file=sys.stderr)
        if asr_eval_set.main([str(folder)]):
            raise SystemExit(2)
    return folder / "MANIFEST.tsv"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--manifest", type=Path, help="MANIFEST.tsv of an evaluation set")
    ap.add_argument("--split", choices=["tuning", "heldout"], help="only this half")
    ap.add_argument("--kind", action="append", help="only these conditions (repeatable)")
    ap.add_argument("--limit", type=int, default=0, help="first N files of the selection")
    ap.add_argument("--every", type=int, default=1, help="every Nth file of each condition "
                    "(a subset that keeps all conditions)")
    ap.add_argument("--jobs", type=int, default=1, help="worker processes")
    ap.add_argument("--lookahead-ms", type=int, help="pocketsphinx CMN lookahead (tuning)")
    ap.add_argument("--no-batch", action="store_true", help="skip the batch decode")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a VadConfig field for the streaming side, e.g. pause_ms=0 (repeatable)")
    ap.add_argument("--decoder", action="append", default=[], metavar="KEY=VALUE",
                    help="a pocketsphinx config key for the streaming recognizer, e.g. "
                    "bestpath=false (tuning; repeatable)")
    ap.add_argument("--no-finals-at-pauses", action="store_true",
                    help="the transcriber finishes once per utterance, not at each pause")
    ap.add_argument("--backend", choices=["pocketsphinx", "vosk"], default="pocketsphinx")
    ap.add_argument("--vosk-model")
    ap.add_argument("--json", action="store_true", help="one JSON object: summary and files")
    args = ap.parse_args(argv)
    try:
        vad_config_with(args.set)
    except ValueError as exc:
        ap.error(str(exc))
    decoder = {}
    for item in args.decoder:
        key, sep, value = item.partition("=")
        if not sep:
            ap.error(f"--decoder wants KEY=VALUE, got {item!r}")
        decoder[key] = _decoder_value(value)
    manifest = _manifest(args.manifest)
    with open(manifest, newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh, delimiter="\t")
                if (args.split is None or r["split"] == args.split)
                and (not args.kind or r["kind"] in args.kind)]
    if args.every > 1:  # every Nth file of each split x condition, so all conditions stay
        seen: dict[tuple[str, str], int] = defaultdict(int)
        keep = []
        for r in rows:
            key = (r["split"], r["kind"])
            if seen[key] % args.every == 0:
                keep.append(r)
            seen[key] += 1
        rows = keep
    if args.limit:
        rows = rows[: args.limit]
    if not rows:
        print(f"no files selected from {manifest}", file=sys.stderr)
        return 2
    jobs = [{"row": r, "path": str(manifest.parent / r["file"]), "backend": args.backend,
             "vosk_model": args.vosk_model, "lookahead_ms": args.lookahead_ms,
             "batch": not args.no_batch, "vad_set": args.set, "decoder": decoder,
             "finals_at_pauses": not args.no_finals_at_pauses} for r in rows]
    results = []
    with ProcessPoolExecutor(max(1, args.jobs)) as pool:
        for n, r in enumerate(pool.map(evaluate_file, jobs), 1):
            extra = f" batch {r['batch_errors']}" if "batch_errors" in r else ""
            print(f"[{n}/{len(jobs)}] {r['file']}: errors streaming {r['stream_errors']}"
                  f"{extra} / {r['words']} words", file=sys.stderr, flush=True)
            results.append(r)
    summary = summarize(results)
    summary["manifest"] = str(manifest)
    summary["backend"] = args.backend
    summary["settings"] = {"vad": args.set, "decoder": decoder,
                           "finals_at_pauses": not args.no_finals_at_pauses,
                           "lookahead_ms": args.lookahead_ms}
    if args.json:
        print(json.dumps({"summary": summary, "files": results}))
    else:
        _print_table(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
