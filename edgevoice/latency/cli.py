"""The `edgevoice bench latency` sub-command: options -> ``run.Options`` -> tables / JSON / PNG."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

from edgevoice.errors import UserError


def _delays(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError("a comma-separated list of milliseconds") from None
    if not values or min(values) < 0:
        raise argparse.ArgumentTypeError("a comma-separated list of milliseconds >= 0")
    return values


def _terminate(signum, frame) -> None:
    raise KeyboardInterrupt


def add_parser(bsub, common: argparse.ArgumentParser) -> None:
    b = bsub.add_parser(
        "latency", parents=[common],
        help="voice-to-voice latency measured at the speaker (PulseAudio, one clock)",
        description="Runs the agent on a private PulseAudio server (one stereo null sink: left "
        "= what its microphone hears, right = what its speaker plays), plays speech clips with "
        "quiet gaps and measures, per turn and as p50/p95/max, the time from the last speech "
        "sample to the first audible reply sample, beside the agent's own stage figures.")
    b.add_argument("--turns", type=int, default=10, help="turns per configuration (default 10)")
    b.add_argument("--gap-s", type=float, default=1.5,
                   help="quiet after each answer before the next clip (default 1.5 s)")
    b.add_argument("--clips", type=Path, metavar="DIR",
                   help="folder of WAV speech clips (default: the shared clips, shared/speech)")
    b.add_argument("--compare", nargs=2, type=Path, metavar=("A.yaml", "B.yaml"),
                   help="two agent configs, spoken to in turn in one run; prints both and "
                   "the ratio of p50s")
    b.add_argument("--llm-model", type=Path, metavar="PATH",
                   help="GGUF model for the agent (default: the config's, else a generated "
                   "tiny test model)")
    b.add_argument("--remote-server", nargs="?", const="tiny", metavar="MODEL.gguf",
                   help="start llama.cpp's OpenAI-compatible server on loopback with this "
                   "model (default: the tiny test model) and make it the agent's remote target")
    b.add_argument("--use-running-server", action="store_true",
                   help="put the bus on the running PulseAudio / pipewire-pulse server instead "
                   "of a private one (the modules are unloaded at the end)")
    b.add_argument("--barge-in", type=int, default=0, metavar="N",
                   help="then N barge-in trials per configuration: speech over the answer, "
                   "time until the speaker is silent (default 0)")
    b.add_argument("--idle-s", type=float, default=10.0,
                   help="seconds of silence to measure idle CPU over (default 10; 0 = skip)")
    b.add_argument("--validate", action="store_true",
                   help="prove the method: an echo program with known added delays instead of "
                   "the agent; each must be measured within ±10 ms")
    b.add_argument("--delays", type=_delays, default=(0, 250, 500, 1000), metavar="MS,MS",
                   help="--validate: the added delays (default 0,250,500,1000)")
    b.add_argument("--plot", type=Path, default=Path("edgevoice-latency.png"), metavar="PNG",
                   help="where to write the plot (default edgevoice-latency.png)")
    b.add_argument("--no-plot", action="store_true", help="write no PNG")
    b.add_argument("--save-recording", type=Path, metavar="WAV",
                   help="keep the stereo bus recording (L microphone, R speaker)")
    b.add_argument("--json", action="store_true",
                   help="print one JSON object (every turn and the summaries) instead of tables")
    b.add_argument("--save-json", type=Path, metavar="FILE",
                   help="also write that JSON object to FILE")
    b.set_defaults(func=cmd_bench_latency)


def cmd_bench_latency(args) -> int:
    from edgevoice.latency import report
    from edgevoice.latency.run import Options, run_agents
    from edgevoice.latency.validate import run_validation

    if args.turns < 1:
        raise UserError("--turns must be at least 1")
    if args.compare and args.config:
        raise UserError("give either --config or --compare A.yaml B.yaml, not both")
    for path in args.compare or []:
        if not path.is_file():
            raise UserError(f"--compare: no such config file: {path}")
    configs = list(args.compare) if args.compare else [Path(args.config) if args.config
                                                        else None]
    opts = Options(configs=configs, turns=args.turns, gap_s=args.gap_s, clips=args.clips,
                   llm_model=args.llm_model, remote_server=args.remote_server,
                   use_running_server=args.use_running_server, barge_in=args.barge_in,
                   idle_s=args.idle_s, validate=args.validate, delays_ms=args.delays,
                   recording=args.save_recording)
    if args.llm_model is not None and not args.llm_model.is_file():
        raise UserError(f"--llm-model {args.llm_model}: no such file")
    if not args.validate and not args.no_plot:
        from edgevoice.latency.plot import check_matplotlib

        check_matplotlib()  # before minutes of measuring, not after
    previous = signal.signal(signal.SIGTERM, _terminate)  # a clean stop: servers, agents
    try:
        if args.validate:
            result = run_validation(opts)
        else:
            result = run_agents(opts)
            if not args.no_plot:
                from edgevoice.latency.plot import write_png

                result["plot"] = str(write_png(result, args.plot))
    finally:
        signal.signal(signal.SIGTERM, previous)
    if args.save_json:
        args.save_json.write_text(json.dumps(result, ensure_ascii=False, indent=1),
                                  encoding="utf-8")
    if args.json:
        print(json.dumps(result, ensure_ascii=False), flush=True)
    elif args.validate:
        report.print_validation(result)
    else:
        report.print_turns(result)
        report.print_summary(result)
        if result.get("plot"):
            print(f"\nplot: {result['plot']}")
    if result.get("plot"):
        print(f"plot written to {result['plot']}", file=sys.stderr)
    return 0 if result.get("ok", True) else 1
