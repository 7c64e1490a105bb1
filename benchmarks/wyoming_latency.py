"""Latency of the Wyoming services as Home Assistant sees them: a real `edgevoice wyoming`
process driven by the `wyoming` package's async client.

    .venv/bin/python benchmarks/wyoming_latency.py [-n 5] [--llm-model PATH] [--json]

Figures (p50 / p95 over ``-n`` rounds, milliseconds):
- first transcript: audio streamed in real time (64 ms chunks, as a satellite's microphone
  would), from `audio-stop` to the `transcript` (the speech clips of shared/speech);
- first audio: `synthesize` of a two-sentence answer sent -> its first `audio-chunk`; and
  streaming (`synthesize-start` + the first clause as a chunk) -> the first `audio-chunk`;
- reply: `transcript` sent -> `handled`, for a built-in intent and for the language model
  (default: the tiny random test GGUF, which measures our overhead, not a real model's speed;
  pass ``--llm-model`` for a real one).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from wyoming.client import AsyncTcpClient
from wyoming.tts import SynthesizeChunk, SynthesizeStart, SynthesizeStop

from edgevoice.devtools import wyoming_peer as peer
from edgevoice.evaluation import speech_dir

CLIPS = ("pocketsphinx__goforward.wav", "pocketsphinx__cards_002.wav",
         "speechbrain__spk1_snt1.wav")
ANSWER = "The kitchen light is on now. Anything else I can do for you?"


async def streamed_first_audio(host: str, port: int) -> float:
    async with AsyncTcpClient(host, port) as client:
        await client.write_event(SynthesizeStart().event())
        sent = time.monotonic()
        await client.write_event(SynthesizeChunk("The kitchen light is on now. ").event())
        while True:
            event = await asyncio.wait_for(client.read_event(), 30)
            if event.type == "audio-chunk":
                first = (time.monotonic() - sent) * 1000
                break
        await client.write_event(SynthesizeStop().event())
        while event.type != "synthesize-stopped":
            event = await asyncio.wait_for(client.read_event(), 30)
        return first


def summary(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return statistics.median(ordered), p95


async def measure(host: str, port: int, folder: Path, rounds: int) -> dict[str, list[float]]:
    rows: dict[str, list[float]] = {"first transcript": [], "first audio (synthesize)": [],
                                    "first audio (streaming)": [], "reply (intent)": [],
                                    "reply (model)": []}
    pcm = [peer.read_pcm16(folder / name) for name in CLIPS]
    for i in range(rounds):
        print(f"round {i + 1}/{rounds}", file=sys.stderr, flush=True)
        for audio in pcm:
            result = await peer.transcribe(host, port, audio, realtime=True)
            rows["first transcript"].append(result.first_transcript_ms)
        rows["first audio (synthesize)"].append(
            (await peer.synthesize(host, port, ANSWER)).first_audio_ms)
        rows["first audio (streaming)"].append(await streamed_first_audio(host, port))
        _, ms = await peer.handle(host, port, "what time is it", f"bench-{i}")
        rows["reply (intent)"].append(ms)
        _, ms = await peer.handle(host, port, "tell me about the moon", f"bench-{i}")
        rows["reply (model)"].append(ms)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--rounds", type=int, default=5)
    parser.add_argument("--llm-model", help="GGUF for the reply figures (default: tiny test GGUF)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    folder = speech_dir()
    if folder is None:
        print("benchmarks/wyoming_latency.py: the speech clips are missing: set "
              "EDGEVOICE_SPEECH_DIR (see shared/speech/README.md)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        model = args.llm_model
        if model is None:
            from edgevoice.devtools.gguf_model import write_tiny_gemma2

            model = str(write_tiny_gemma2(Path(tmp) / "tiny-gemma2.gguf"))
        cfg = Path(tmp) / "c.yaml"
        cfg.write_text("llm:\n  max_tokens: 32\n")
        with peer.wyoming_server(["--config", str(cfg), "--uri", "tcp://127.0.0.1:0",
                                  "--llm-model", model]) as server:
            rows = asyncio.run(measure(server.host, server.port, folder, args.rounds))
    if args.json:
        print(json.dumps({k: dict(zip(("p50_ms", "p95_ms"), summary(v), strict=True))
                          for k, v in rows.items()}))
        return 0
    print(f"| Wyoming request ({args.rounds} rounds) | p50 ms | p95 ms |")
    print("|---|---:|---:|")
    for name, values in rows.items():
        p50, p95 = summary(values)
        print(f"| {name} | {p50:.0f} | {p95:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
