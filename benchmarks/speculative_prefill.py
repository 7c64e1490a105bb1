"""What speculative prefill buys: the same recording, with and without it.

    .venv/bin/python benchmarks/speculative_prefill.py MODEL.gguf [--clips N] [--max-tokens 24]
                                                                  [--json]

Composes N real clips from ../shared/speech (each followed by 6 s of silence, so every turn
finishes before the next question), runs ``edgevoice run --input ... --json`` on it twice in one
go — ``agent.speculate`` on, then off — and prints per turn the time from the end of speech to
the first token and to the first audio, the prompt tokens the turn still had to evaluate, and
the words the model had read ahead. Both runs see identical audio, so the difference is the
speculation. Use a Gemma 2 2B-sized twin for honest prefill times:
``python -m edgevoice.devtools.gguf_model twin /tmp/gemma2-2b-twin-q4km.gguf``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from edgevoice.audio.wavfile import read_audio, write_wav_atomic
from edgevoice.evaluation import speech_dir

CLIPS = ["pocketsphinx__goforward.wav", "speechbrain__spk1_snt1.wav",
         "speechbrain__spk1_snt3.wav", "pocketsphinx__librivox_sense_and_sensibility_0880.wav",
         "speechbrain__spk1_snt4.wav", "speechbrain__spk2_snt2.wav"]


def compose(paths: list[Path], out: Path, gap_s: float = 6.0) -> None:
    """The clips at 16 kHz, each followed by ``gap_s`` of silence."""
    silence = np.zeros(int(gap_s * 16000), dtype=np.int16).tobytes()
    pcm = b"".join(read_audio(path, 16000).data + silence for path in paths)
    write_wav_atomic(out, pcm, 16000)


def run_agent(model: Path, wav: Path, speculate: bool, max_tokens: int, work: Path) -> list[dict]:
    flag = str(speculate).lower()
    cfg = work / f"speculate-{flag}.yaml"
    cfg.write_text(f"llm:\n  max_tokens: {max_tokens}\n  temperature: 0.0\n"
                   f"agent:\n  speculate: {flag}\n")
    print(f"running with agent.speculate: {flag} ...", file=sys.stderr, flush=True)
    out = subprocess.run([sys.executable, "-m", "edgevoice", "--config", str(cfg), "run",
                          "--input", str(wav), "--output", str(work / f"out-{flag}.wav"),
                          "--llm-model", str(model), "--json"],
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        sys.exit(f"edgevoice run failed ({out.returncode}):\n{out.stderr}")
    events = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    return [e for e in events if e.get("event") == "turn"]


def row(turn: dict) -> dict:
    lat, spec = turn["latency_ms"], turn.get("speculation") or {}
    return {"transcript": turn["transcript"], "asr_final": lat.get("asr_final"),
            "llm_first_token": lat.get("llm_first_token"),
            "first_audio": lat.get("first_audio"),
            "evaluated": (turn.get("tokens") or {}).get("evaluated_tokens"),
            "heard": spec.get("heard"), "matched": spec.get("matched"),
            "prefills": spec.get("prefills"), "prefilled": spec.get("tokens"),
            "prefill_ms": spec.get("prefill_ms"), "ahead_ms": spec.get("ahead_ms")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--clips", type=int, default=4, help=f"1..{len(CLIPS)}")
    parser.add_argument("--max-tokens", type=int, default=24)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    speech = speech_dir()
    if speech is None:
        sys.exit("speech clips not found: set EDGEVOICE_SPEECH_DIR")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        wav = work / "questions.wav"
        compose([speech / name for name in CLIPS[: args.clips]], wav)
        with_spec = [row(t) for t in run_agent(args.model, wav, True, args.max_tokens, work)]
        without = [row(t) for t in run_agent(args.model, wav, False, args.max_tokens, work)]
    if args.json:
        print(json.dumps({"with": with_spec, "without": without}))
        return 0
    print(f"{'turn':<38} {'first token ms':>16} {'first audio ms':>16} {'evaluated':>10}"
          "  prefills (tokens, ms, started before the final), read ahead")
    print(f"{'':<38} {'off → on':>16} {'off → on':>16} {'off → on':>10}")
    for on, off in zip(with_spec, without, strict=False):
        heard = "" if on["heard"] is None else ("= final" if on["matched"] else repr(on["heard"]))
        print(f"{on['transcript'][:37]:<38} {off['llm_first_token']!s:>7} → "
              f"{on['llm_first_token']!s:<6} {off['first_audio']!s:>7} → {on['first_audio']!s:<6}"
              f" {off['evaluated']!s:>4} → {on['evaluated']!s:<3}  {on['prefills']} "
              f"({on['prefilled']}, {on['prefill_ms']}, {on['ahead_ms']}) {heard}")
    pairs = [(off["first_audio"], on["first_audio"]) for on, off in zip(with_spec, without,
                                                                       strict=False)
             if on["first_audio"] is not None and off["first_audio"] is not None]
    finals = [(off["asr_final"], on["asr_final"]) for on, off in zip(with_spec, without,
                                                                      strict=False)
              if on["asr_final"] is not None and off["asr_final"] is not None]
    if finals:  # the ear shares the machine with the prefills: does it finish later?
        print(f"median final transcript: {statistics.median(p[0] for p in finals):.0f} ms off, "
              f"{statistics.median(p[1] for p in finals):.0f} ms on")
    if pairs:
        print(f"median first audio: {statistics.median(p[0] for p in pairs):.0f} ms off, "
              f"{statistics.median(p[1] for p in pairs):.0f} ms on "
              f"({statistics.median(p[0] - p[1] for p in pairs):.0f} ms saved per turn)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
