"""What a misbehaving remote adds to the time to the first clause (issue 14), with hedging.

    .venv/bin/python benchmarks/offload_faults.py [--model GGUF] [--runs N] [--turns N] [--json]

For each remote fault — dead (refused), silent (accepts, then nothing), headers then silence,
stalled after 3 tokens, trickling (1 byte/s, its /v1/models too), HTTP 503 — and for a healthy
remote and local-only as references: ``--runs`` fresh starts (new targets and router, remote
warm-up in the background exactly as `edgevoice ask` and the daemon do), each followed by
``--turns`` turns through the real Brain under ``policy: remote``. The remotes are the fault
server on loopback; the local model is real llama.cpp (the tiny test GGUF unless ``--model``).
Time to the first clause is measured from the turn's start to the first clause the TTS clause
splitter releases. Printed per fault: p50/p95 of the first turn after start-up and of the later
turns, and p95 minus local-only p95 (the target: <= 300 ms). Every reply is checked for
repeated words (a fault server token twice, or any after the local model won): any is counted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

from edgevoice.agent.brain import Brain
from edgevoice.agent.turn import Turn
from edgevoice.config import LlmConfig, RemoteConfig
from edgevoice.devtools.fault_server import FaultServer, Reply, free_port, silent_listener
from edgevoice.llm.openai_target import OpenAITarget
from edgevoice.llm.router import Router
from edgevoice.tts.clauses import ClauseSplitter

REMOTE_WORD = re.compile(r"\bw(\d+)\b")
QUESTIONS = ["hello there", "what is the weather like", "tell me something short"]


@contextlib.contextmanager
def remote_url(case: str):
    """The base URL of a remote showing ``case``."""
    if case == "dead":
        yield f"http://127.0.0.1:{free_port()}/v1"
        return
    if case == "silent":
        with silent_listener() as url:
            yield url
        return
    replies = {
        "healthy": Reply(tokens=12, interval_s=0.005),
        "headers then silence": Reply(first_token_delay_s=60.0),
        "stalled after 3 tokens": Reply(tokens=12, stall_after=3, interval_s=0.01),
        "trickling 1 B/s": Reply(tokens=12, trickle_bytes_s=1.0),
        "HTTP 503": Reply(status=503),
    }
    with FaultServer(default=replies[case], max_hang_s=60.0, max_lifetime_s=3600.0) as server:
        if case == "trickling 1 B/s":
            server.models_trickle_s = 1.0
        yield server.url


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def repeated(reply: str, winner: str) -> bool:
    """Whether a word was said twice: a remote token twice, or remote tokens in a reply whose
    first words came from the local model."""
    numbers = REMOTE_WORD.findall(reply)
    if len(numbers) != len(set(numbers)):
        return True
    return bool(numbers) and not reply.startswith("w0 ")


def run_case(case: str, model: Path, runs: int, turns: int) -> dict:
    from edgevoice.llm.llama_target import LlamaCppTarget

    llm = LlmConfig(model=str(model), n_ctx=2048, max_tokens=24, threads=1, temperature=0.0)
    first: list[float] = []
    later: list[float] = []
    winners: dict[str, int] = {}
    repeats = 0
    with remote_url(case) if case != "local only" else contextlib.nullcontext("") as url:
        for _ in range(runs):
            local = LlamaCppTarget(llm, seed=7)
            local.warm_up()
            targets = {"local": local}
            policy = "local"
            if url:
                targets["remote"] = OpenAITarget(RemoteConfig(
                    base_url=url, model="fault-model", max_completion_tokens=24), "remote")
                policy = "remote"
            router = Router(targets, policy, llm.first_audio_budget_ms)
            router.warm_up_remotes(warn=False)  # as at start-up: in the background
            brain = Brain(router, llm, apology=None)
            try:
                for i in range(turns):
                    text = QUESTIONS[i % len(QUESTIONS)]
                    decision = brain.decide(text)
                    turn = Turn(text)
                    splitter = ClauseSplitter()
                    start = time.monotonic()
                    clause_at = None
                    for delta in brain.llm_stream(turn):
                        turn.reply += delta
                        if clause_at is None and splitter.push(delta):
                            clause_at = time.monotonic()
                    if clause_at is None and splitter.flush():
                        clause_at = time.monotonic()
                    turn.spoken = turn.reply
                    brain.finish(turn, decision)
                    ms = ((clause_at or time.monotonic()) - start) * 1000
                    (first if i == 0 else later).append(ms)
                    winners[turn.metrics.target] = winners.get(turn.metrics.target, 0) + 1
                    repeats += repeated(turn.reply, turn.metrics.target)
            finally:
                router.close()
    return {"case": case, "first_turn_ms": first, "later_turns_ms": later,
            "answered_by": winners, "repeats": repeats}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="local GGUF (default: the tiny test model)")
    parser.add_argument("--runs", type=int, default=10, help="fresh starts per fault")
    parser.add_argument("--turns", type=int, default=3, help="turns per start")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    model = args.model
    if model is None:
        from edgevoice.devtools.gguf_model import write_tiny_gemma2

        model = write_tiny_gemma2(Path(tempfile.mkdtemp(prefix="offload-bench-")) / "tiny.gguf")
    cases = ["local only", "healthy", "dead", "silent", "headers then silence",
             "stalled after 3 tokens", "trickling 1 B/s", "HTTP 503"]
    results = []
    for case in cases:
        print(f"... {case}", file=sys.stderr, flush=True)
        results.append(run_case(case, model, args.runs, args.turns))
    base = results[0]
    base_first = percentile(base["first_turn_ms"], 0.95)
    base_later = percentile(base["later_turns_ms"], 0.95) if base["later_turns_ms"] else 0.0
    for r in results:
        for key in ("first_turn_ms", "later_turns_ms"):
            values = r[key]
            r[key.replace("_ms", "")] = {
                "p50": round(statistics.median(values), 1) if values else None,
                "p95": round(percentile(values, 0.95), 1) if values else None}
        r["added_p95_ms"] = {
            "first": round(r["first_turn"]["p95"] - base_first, 1),
            "later": (round(r["later_turns"]["p95"] - base_later, 1)
                      if r["later_turns"]["p95"] is not None else None)}
    if args.json:
        print(json.dumps(results, indent=1))
        return 0
    print(f"time to the first clause, ms ({args.runs} starts x {args.turns} turns; local: "
          f"{model.name})")
    print(f"{'remote':<24} {'first p50':>9} {'first p95':>9} {'later p50':>9} {'later p95':>9}"
          f" {'+p95 first':>10} {'+p95 later':>10}  repeats  answered by")
    for r in results:
        f, later, added = r["first_turn"], r["later_turns"], r["added_p95_ms"]
        print(f"{r['case']:<24} {f['p50']:>9} {f['p95']:>9} {later['p50']!s:>9} "
              f"{later['p95']!s:>9} {added['first']:>10} {added['later']!s:>10}  "
              f"{r['repeats']:>7}  {r['answered_by']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
