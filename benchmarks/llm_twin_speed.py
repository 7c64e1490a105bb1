"""How fast is a Gemma-2-2B-sized model under llama.cpp on this machine?

Times a random-weight twin of Gemma 2 2B (exact shapes, same quantization), which costs as
much compute as the real model: load, prefill at a few prompt lengths, and decode.

    python benchmarks/llm_twin_speed.py [--model PATH] [--threads 2] [--decode 32]

The twin is built on first use (minutes, 1.7 GB; needs ``gguf``) unless --model is given.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

DEFAULT_MODEL = Path("/tmp/gemma2-2b-twin-q4km.gguf")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prefill", type=int, nargs="+", default=[16, 128, 512])
    parser.add_argument("--decode", type=int, default=32, help="tokens to generate")
    parser.add_argument("--n-ctx", type=int, default=2048)
    args = parser.parse_args(argv)

    import llama_cpp

    if not args.model.exists():
        from edgevoice.devtools.gguf_model import write_gemma2_2b_twin

        print(f"building {args.model} ...", file=sys.stderr)
        write_gemma2_2b_twin(args.model, progress=lambda m: print("  " + m, file=sys.stderr))

    print(f"model   {args.model} ({args.model.stat().st_size / 1e9:.2f} GB)")
    start = time.perf_counter()
    llm = llama_cpp.Llama(
        model_path=str(args.model),
        n_ctx=args.n_ctx,
        n_batch=512,
        n_threads=args.threads,
        n_threads_batch=args.threads,
        verbose=False,
    )
    print(f"load    {time.perf_counter() - start:.2f} s  (threads {args.threads})")

    # Token ids from the word-piece range: real text-like ids, no control tokens.
    vocab_ids = llm.tokenize(b" the weather today is good for music", add_bos=False)
    llm.eval(vocab_ids)  # warm-up: first-call allocations are not throughput
    for n in args.prefill:
        tokens = [llm.token_bos()]
        tokens += (vocab_ids * (n // len(vocab_ids) + 1))[: n - 1]
        llm.reset()
        start = time.perf_counter()
        llm.eval(tokens)
        dt = time.perf_counter() - start
        print(f"prefill {n:4d} tokens  {dt:6.2f} s  {n / dt:6.1f} tok/s")

    llm.reset()
    llm.eval(vocab_ids)
    start = time.perf_counter()
    for _ in range(args.decode):
        token = llm.sample(temp=0.0)
        llm.eval([token])
    dt = time.perf_counter() - start
    print(f"decode  {args.decode:4d} tokens  {dt:6.2f} s  {args.decode / dt:6.1f} tok/s")
    llm.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
