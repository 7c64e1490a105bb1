"""Gemma 2 2B vs Gemma 4 E2B on this machine: their random-weight twins, side by side.

    nice .venv/bin/python benchmarks/gemma_twins.py [--dir /tmp/edgevoice-twins]
        [--threads 1 2] [--decode 32] [--json]

Each twin has its model's exact shapes and quantization (Q4_K_M), so it costs what the real
model costs (compute depends on shapes, not weight values). Per twin and thread count, in a
fresh process (so the load and the resident memory are that model's alone): load time, RSS
after loading and after a voice-sized conversation (VmHWM: the peak), prefill tokens/s on the
first prompt (system prompt + a question, through the model's own chat template) and on a
follow-up turn, decode tokens/s, and the time to the first clause, measured through the agent's
own path (``LlamaCppTarget.stream`` after ``warm_up``, then ``ClauseSplitter`` with the first
clause cut after at most 8 words, since a random model writes no punctuation).

The twins are built on first use (needs ``gguf`` and about 10 GB of temporary disk; Gemma 2 2B:
1.7 GB, Gemma 4 E2B: 3.4 GB; on two busy cores 10 and 25 minutes) unless they are in --dir.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

SHAPES = ("gemma-2-2b", "gemma-4-e2b")
SYSTEM = ("You are a helpful voice assistant. Answer in one to three short spoken sentences, "
          "without lists or markdown.")
QUESTIONS = ("What's a good way to fall asleep faster?", "And if I wake up at three at night?")
FIRST_CLAUSE_WORDS = 8


def _rss_mb() -> tuple[float, float]:
    """(VmRSS, VmHWM) of this process in MB."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields.get("VmRSS", 0.0), fields.get("VmHWM", 0.0)


def measure(model: Path, threads: int, decode: int) -> dict:
    """One model, one thread count, in this process (run it in a fresh one)."""
    import logging

    logging.disable(logging.WARNING)
    from edgevoice.config import LlmConfig
    from edgevoice.llm.history import Conversation
    from edgevoice.llm.llama_target import LlamaCppTarget
    from edgevoice.tts.clauses import ClauseSplitter

    cfg = LlmConfig(model=str(model), n_ctx=4096, threads=threads, max_tokens=decode,
                    system_prompt=SYSTEM, temperature=0.7)
    start = time.perf_counter()
    target = LlamaCppTarget(cfg, seed=1)
    load_s = time.perf_counter() - start
    rss_loaded, _ = _rss_mb()
    target.warm_up()
    conv = Conversation(SYSTEM, target.max_prompt_tokens, target.count_tokens)
    turns = []
    for question in QUESTIONS:
        messages = conv.messages_for(question)
        splitter = ClauseSplitter(first_max_words=FIRST_CLAUSE_WORDS)
        t0 = time.perf_counter()
        first_clause_ms = None
        parts = []
        for delta in target.stream(messages, threading.Event()):
            parts.append(delta)
            if first_clause_ms is None and splitter.push(delta):
                first_clause_ms = (time.perf_counter() - t0) * 1000
        stats = target.last_stats
        decode_s = (stats.total_ms - stats.first_token_ms) / 1000
        turns.append({
            "evaluated_tokens": stats.evaluated_tokens, "cached_tokens": stats.cached_tokens,
            "first_token_ms": round(stats.first_token_ms, 1),
            "prefill_tps": round(stats.evaluated_tokens / (stats.first_token_ms / 1000), 1),
            "decode_tps": round((stats.completion_tokens - 1) / max(decode_s, 1e-6), 2),
            "first_clause_ms": None if first_clause_ms is None else round(first_clause_ms, 1),
        })
        conv.commit(question, "".join(parts))
    rss_now, rss_peak = _rss_mb()
    target.close()
    return {"model": str(model), "size_gb": round(model.stat().st_size / 1e9, 2),
            "threads": threads, "load_s": round(load_s, 2),
            "rss_loaded_mb": round(rss_loaded), "rss_mb": round(rss_now),
            "rss_peak_mb": round(rss_peak), "turns": turns}


def ensure_twin(folder: Path, shape: str) -> Path:
    path = folder / f"{shape}-twin-q4km.gguf"
    if not path.exists():
        from edgevoice.devtools.gguf_model import write_twin

        folder.mkdir(parents=True, exist_ok=True)
        print(f"building {path} (minutes) ...", file=sys.stderr, flush=True)
        write_twin(path, shape, progress=lambda m: print("  " + m, file=sys.stderr, flush=True))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path("/tmp/edgevoice-twins"))
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--decode", type=int, default=24, help="tokens per reply")
    parser.add_argument("--json", action="store_true", help="one JSON document")
    parser.add_argument("--one", nargs=2, metavar=("MODEL", "THREADS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:  # the child: one measurement, JSON on stdout
        print(json.dumps(measure(Path(args.one[0]), int(args.one[1]), args.decode)))
        return 0

    results = []
    for shape in SHAPES:
        model = ensure_twin(args.dir, shape)
        for threads in args.threads:
            out = subprocess.run(
                [sys.executable, __file__, "--one", str(model), str(threads),
                 "--decode", str(args.decode)], capture_output=True, text=True, check=False)
            if out.returncode != 0:
                print(f"{shape} threads {threads} failed:\n{out.stderr[-2000:]}", file=sys.stderr)
                return 1
            row = json.loads(out.stdout.strip().splitlines()[-1])
            row["shape"] = shape
            results.append(row)
    if args.json:
        print(json.dumps({"results": results}))
        return 0
    print(f"{'twin':<12} {'thr':>3} {'GB':>5} {'load s':>6} {'RSS MB':>7} {'peak MB':>7} "
          f"{'prefill1':>8} {'prefill2':>8} {'decode':>6} {'clause1':>7} {'1st tok':>7} "
          f"{'clause2':>7}")

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.0f}"

    for r in results:
        first, second = r["turns"]
        print(f"{r['shape']:<12} {r['threads']:>3} {r['size_gb']:>5.2f} {r['load_s']:>6.2f} "
              f"{r['rss_mb']:>7} {r['rss_peak_mb']:>7} {first['prefill_tps']:>8.1f} "
              f"{second['prefill_tps']:>8.1f} {second['decode_tps']:>6.2f} "
              f"{ms(first['first_clause_ms']):>7} {second['first_token_ms']:>7.0f} "
              f"{ms(second['first_clause_ms']):>7}")
    print("prefill1, clause1: the first prompt after warm-up (tok/s; ms to the first clause of "
          f"<= {FIRST_CLAUSE_WORDS} words); prefill2, decode, 1st tok, clause2: the follow-up "
          "turn, KV prefix reused")
    return 0


if __name__ == "__main__":
    sys.exit(main())
