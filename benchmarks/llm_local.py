"""Turn latency of the local llama.cpp target: load, warm-up, and KV-cache reuse over turns.

    .venv/bin/python benchmarks/llm_local.py MODEL.gguf [--threads N] [--max-tokens 32]
                                                        [--turns 3] [--no-warm-up] [--json]

Runs the target exactly as the agent does (one Conversation, prompts that only append) and
prints, per turn, prompt / cached / evaluated tokens, time to first token and decode speed,
then how fast a cancel interrupts a long prefill (barge-in while the model is still reading).
A Gemma 2 2B-sized random twin times the real model honestly:
``python -m edgevoice.devtools.gguf_model twin /tmp/gemma2-2b-twin-q4km.gguf``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import time
from pathlib import Path

from edgevoice.config import LlmConfig
from edgevoice.errors import UserError
from edgevoice.llm.history import Conversation
from edgevoice.llm.llama_target import LlamaCppTarget

QUESTIONS = [
    "What's a good way to fall asleep faster?",
    "And if I wake up at three in the morning?",
    "Thanks. Can you remind me what the first tip was?",
    "How long should a short nap be?",
    "Is coffee after lunch a bad idea?",
]


def measure_cancel(target: LlamaCppTarget, system_prompt: str, after_s: float) -> dict:
    """Cancel a long cold prefill from another thread; how long until stream() returns?"""
    long_text = " ".join(["Please listen carefully to this long story about my day."] * 40)
    messages = [{"role": "system", "content": system_prompt},
                {"role": "user", "content": long_text}]
    cancel = threading.Event()
    set_at: list[float] = []

    def canceller() -> None:
        time.sleep(after_s)
        set_at.append(time.perf_counter())
        cancel.set()

    thread = threading.Thread(target=canceller)
    thread.start()
    for _ in target.stream(messages, cancel):
        pass
    returned = time.perf_counter()
    thread.join()
    stats = target.last_stats
    assert stats is not None
    if returned < set_at[0]:
        return {"prompt_tokens": stats.prompt_tokens, "finish_reason": stats.finish_reason,
                "prefill_done_before_cancel": True}
    return {
        "prompt_tokens": stats.prompt_tokens,
        "evaluated_before_cancel": stats.evaluated_tokens,
        "finish_reason": stats.finish_reason,
        "cancel_latency_ms": round((returned - set_at[0]) * 1000.0, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--threads", type=int, default=0,
                        help="0 = the agent's default (all cores but one; both of two)")
    parser.add_argument("--n-ctx", type=int, default=4096)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--turns", type=int, default=3, choices=range(1, len(QUESTIONS) + 1))
    parser.add_argument("--no-warm-up", action="store_true")
    parser.add_argument("--cancel-after", type=float, default=0.3, metavar="S",
                        help="when to cancel the long prefill (0 = skip that measurement)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("-v", "--verbose", action="store_true", help="log each turn")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(name)s: %(message)s")

    cfg = LlmConfig(model=str(args.model), n_ctx=args.n_ctx, threads=args.threads,
                    max_tokens=args.max_tokens)
    try:
        target = LlamaCppTarget(cfg)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    report: dict = {"model": args.model.name, "load_ms": round(target.load_ms, 1),
                    "threads": target.describe().details["threads"], "turns": []}
    if not args.no_warm_up:
        target.warm_up()
        report["warm_up_ms"] = target.describe().details["warm_up_ms"]
        report["warm_up_tokens"] = len(target.kv_tokens)

    conv = Conversation(cfg.system_prompt, target.max_prompt_tokens, target.count_tokens)
    for question in QUESTIONS[: args.turns]:
        messages = conv.messages_for(question)
        reply = "".join(target.stream(messages, threading.Event()))
        conv.commit(question, reply)
        s = target.last_stats
        assert s is not None
        report["turns"].append({
            "prompt": s.prompt_tokens, "cached": s.cached_tokens,
            "evaluated": s.evaluated_tokens, "completion": s.completion_tokens,
            "first_token_ms": round(s.first_token_ms or 0.0, 1),
            "tokens_per_s": round(s.tokens_per_s or 0.0, 2), "total_ms": round(s.total_ms, 1),
            "finish": s.finish_reason,
        })
    if args.cancel_after > 0:
        report["cancel_prefill"] = measure_cancel(target, cfg.system_prompt, args.cancel_after)
    target.close()

    if args.json:
        print(json.dumps(report))
        return 0
    print(f"model      {report['model']}  ({report['threads']} threads)")
    print(f"load       {report['load_ms']:8.0f} ms")
    if "warm_up_ms" in report:
        print(f"warm-up    {report['warm_up_ms']:8.0f} ms  ({report['warm_up_tokens']} tokens: "
              "BOS, system prompt, user header)")
    print("turn  prompt  cached  evaluated  first token   tokens   tok/s   total")
    for n, t in enumerate(report["turns"], 1):
        print(f"{n:4d}  {t['prompt']:6d}  {t['cached']:6d}  {t['evaluated']:9d}  "
              f"{t['first_token_ms']:8.0f} ms  {t['completion']:7d}  {t['tokens_per_s']:6.1f}  "
              f"{t['total_ms']:6.0f} ms")
    if "cancel_prefill" in report:
        c = report["cancel_prefill"]
        if c.get("prefill_done_before_cancel"):
            print(f"cancel: the {c['prompt_tokens']}-token prompt was answered before "
                  f"{args.cancel_after} s; lower --cancel-after to catch the prefill")
            return 0
        print(f"cancel during a {c['prompt_tokens']}-token prefill after {args.cancel_after} s: "
              f"returned in {c['cancel_latency_ms']:.0f} ms ({c['finish_reason']}, "
              f"{c['evaluated_before_cancel']} tokens kept in the cache)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
