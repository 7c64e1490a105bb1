"""A conversation with a Gemma-2-2B-shaped twin: what each turn re-reads, and its first token.

    nice .venv/bin/python benchmarks/conversation_twin.py [--model PATH] [--turns 8]
        [--max-tokens 48] [--threads 2] [--json]

One process, one model file, two targets side by side (the weights are mmapped once): "text"
puts each history reply into the prompt as its re-tokenized text (``keep_reply_tokens=False``,
the behaviour before ``edgevoice.llm.reply_tokens``), "ids" puts the ids the model generated.
Turns alternate between the two, so both see the same machine load. Each runs the same questions
through its own ``Conversation`` exactly as the agent does and prints, per turn: prompt, cached
and evaluated tokens, the new user turn's own tokens (template framing included), what was
re-read beyond them, time to first token and decode speed; then medians over turns 2.. (turn 1
is the same for both). The twin has random weights: its answers are gibberish of full length.

The twin is built on first use (minutes, 1.7 GB; needs ``gguf``) unless --model is given:
``python -m edgevoice.devtools.gguf_model twin /tmp/gemma2-2b-twin-q4km.gguf``.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import threading
from pathlib import Path

from edgevoice.config import LlmConfig
from edgevoice.llm.history import Conversation
from edgevoice.llm.llama_target import LlamaCppTarget

DEFAULT_MODEL = Path("/tmp/gemma2-2b-twin-q4km.gguf")
SYSTEM = "You are a helpful voice assistant. Answer in one or two short sentences."
QUESTIONS = [
    "What's a good way to fall asleep faster?",
    "And if I wake up at three in the morning?",
    "Thanks. Can you remind me what the first tip was?",
    "How long should a short nap be?",
    "Is coffee after lunch a bad idea?",
    "What about green tea?",
    "Okay. Set a timer for twenty minutes.",
    "What should I cook tonight?",
    "Something without meat, please.",
    "How long does that take?",
]
MODES = (("text", False), ("ids", True))


def new_turn_tokens(target: LlamaCppTarget, messages: list[dict]) -> int | None:
    """Tokens of the new user turn with its template framing: the text after the last reply."""
    segments = target._template.segments(messages)
    if segments is None:
        return None
    return len(target._llm.tokenize(segments.texts[-1].encode(), add_bos=False, special=True))


def run_turn(target: LlamaCppTarget, conv: Conversation, question: str) -> dict:
    messages = conv.messages_for(question)
    reply = "".join(target.stream(messages, threading.Event()))
    stats = target.last_stats
    assert stats is not None
    conv.commit(question, reply)
    user_turn = new_turn_tokens(target, messages)
    return {
        "prompt": stats.prompt_tokens, "cached": stats.cached_tokens,
        "evaluated": stats.evaluated_tokens, "user_turn": user_turn,
        "re_read": None if user_turn is None else stats.evaluated_tokens - user_turn,
        "first_token_ms": stats.first_token_ms, "completion": stats.completion_tokens,
        "tok_s": stats.tokens_per_s, "finish": stats.finish_reason,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--turns", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--n-ctx", type=int, default=2048)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    if not args.model.exists():
        from edgevoice.devtools.gguf_model import write_gemma2_2b_twin

        print(f"building {args.model} ...", file=sys.stderr)
        write_gemma2_2b_twin(args.model, progress=lambda m: print("  " + m, file=sys.stderr))

    cfg = LlmConfig(model=str(args.model), n_ctx=args.n_ctx, max_tokens=args.max_tokens,
                    threads=args.threads, system_prompt=SYSTEM)
    questions = (QUESTIONS * (args.turns // len(QUESTIONS) + 1))[: args.turns]
    targets = {name: LlamaCppTarget(cfg, name, seed=1, keep_reply_tokens=keep)
               for name, keep in MODES}
    rows: dict[str, list[dict]] = {name: [] for name in targets}
    try:
        convs = {}
        for name, target in targets.items():
            target.warm_up()
            convs[name] = Conversation(SYSTEM, target.max_prompt_tokens, target.count_tokens)
        print(f"model {args.model.name}, {args.threads} threads, {args.turns} turns, "
              f"{args.max_tokens}-token answers; columns: text (re-tokenized replies) | ids "
              "(generated ids kept)")
        print(f"{'turn':>4}  {'prompt':>11}  {'cached':>11}  {'evaluated':>11}  {'user turn':>9}"
              f"  {'re-read':>9}  {'first token ms':>15}  {'decode tok/s':>12}")
        for i, question in enumerate(questions, 1):
            for name, target in targets.items():
                rows[name].append(run_turn(target, convs[name], question))
            a, b = rows["text"][-1], rows["ids"][-1]

            def pair(key: str, fmt: str = "{:.0f}", a=a, b=b) -> str:
                def one(v):
                    return "-" if v is None else fmt.format(v)
                return f"{one(a[key])}|{one(b[key])}"

            print(f"{i:>4}  {pair('prompt'):>11}  {pair('cached'):>11}  {pair('evaluated'):>11}  "
                  f"{pair('user_turn'):>9}  {pair('re_read'):>9}  {pair('first_token_ms'):>15}  "
                  f"{pair('tok_s', '{:.1f}'):>12}", flush=True)
    finally:
        for target in targets.values():
            target.close()

    summary = {}
    for name, turns in rows.items():
        later = turns[1:]

        def median(key: str, later=later):
            values = [t[key] for t in later if t[key] is not None]
            return statistics.median(values) if values else None

        summary[name] = {k: median(k) for k in ("evaluated", "re_read", "first_token_ms")}
    print("medians over turns 2..: " + "; ".join(
        f"{name}: evaluated {s['evaluated']:.0f}, re-read {s['re_read']:.0f}, first token "
        f"{s['first_token_ms']:.0f} ms"
        for name, s in summary.items() if s["evaluated"] is not None))
    if args.json:
        print(json.dumps({"turns": rows, "medians": summary}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
