"""CPU used by `edgevoice listen` (or `run`) while the microphone hears only silence.

    .venv/bin/python benchmarks/idle_cpu.py [--seconds 20] [--command listen|run]
        [--config PATH] [--json]

Runs the CLI on a private PulseAudio server (null sinks, see edgevoice/devtools/pulse.py), waits
for it to settle, then reads the process's CPU time from /proc over the measuring window, and
each thread's (the busiest first) so a regression can be pinned to a stage: e.g. with
``--config`` a file holding ``audio: {echo_cancel: "off"}`` against the defaults, which is how
the echo canceller's share of idle ``run`` was measured (2026-12: ~3 % of one core of ~6 %).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from edgevoice.devtools.pulse import PulseServer, check_installed


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process and its threads, in seconds."""
    return cpu_seconds_of(Path(f"/proc/{pid}/stat"))


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds per thread of ``pid``: ``{"tid name": seconds}`` (threads that ended are
    missing)."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            name = Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
            out[f"{tid} {name}"] = cpu_seconds_of(Path(f"/proc/{pid}/task/{tid}/stat"))
        except FileNotFoundError:
            continue
    return out


def cpu_seconds_of(stat: Path) -> float:
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--command", choices=["listen", "run"], default="listen")
    ap.add_argument("--config", type=Path, help="agent config file (default: the defaults)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    check_installed()
    root = Path(tempfile.mkdtemp(prefix="evpa-"))
    try:
        with PulseServer(root) as pulse:
            env = dict(pulse.env)
            if args.config is not None:
                env["EDGEVOICE_CONFIG"] = str(args.config.resolve())
            proc = subprocess.Popen(
                [sys.executable, "-m", "edgevoice", args.command, "--json"],
                env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            try:
                proc.stdout.readline()  # first event: the microphone is open
                print("settling 3 s…", file=sys.stderr)
                time.sleep(3)
                c0, t0 = cpu_seconds(proc.pid), time.monotonic()
                th0 = thread_cpu(proc.pid)
                print(f"measuring {args.seconds:.0f} s of silence…", file=sys.stderr)
                time.sleep(args.seconds)
                c1, t1 = cpu_seconds(proc.pid), time.monotonic()
                th1 = thread_cpu(proc.pid)
            finally:
                proc.terminate()
                proc.wait(10)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    share = (c1 - c0) / (t1 - t0)
    threads = {k: round(100 * (v - th0.get(k, 0.0)) / (t1 - t0), 2) for k, v in th1.items()}
    threads = dict(sorted(((k, v) for k, v in threads.items() if v > 0),
                          key=lambda kv: -kv[1]))
    result = {"command": args.command, "seconds": round(t1 - t0, 1),
              "config": str(args.config) if args.config else None,
              "cpu_percent_of_one_core": round(100 * share, 2),
              "threads_percent_of_one_core": threads}
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{args.command}: {100 * share:.2f}% of one core over {t1 - t0:.1f} s of silence")
    for name, pct in threads.items():
        print(f"  thread {name}: {pct:.2f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
