"""CPU used by `edgevoice listen` (or `run`) while the microphone hears only silence.

    .venv/bin/python benchmarks/idle_cpu.py [--seconds 20] [--command listen|run] [--json]

Runs the CLI on a private PulseAudio server (null sinks, see edgevoice/devtools/pulse.py), waits
for it to settle, then reads the process's CPU time from /proc over the measuring window.
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
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--command", choices=["listen", "run"], default="listen")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    check_installed()
    root = Path(tempfile.mkdtemp(prefix="evpa-"))
    try:
        with PulseServer(root) as pulse:
            proc = subprocess.Popen(
                [sys.executable, "-m", "edgevoice", args.command, "--json"],
                env=pulse.env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            try:
                proc.stdout.readline()  # first event: the microphone is open
                print("settling 3 s…", file=sys.stderr)
                time.sleep(3)
                c0, t0 = cpu_seconds(proc.pid), time.monotonic()
                print(f"measuring {args.seconds:.0f} s of silence…", file=sys.stderr)
                time.sleep(args.seconds)
                c1, t1 = cpu_seconds(proc.pid), time.monotonic()
            finally:
                proc.terminate()
                proc.wait(10)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    share = (c1 - c0) / (t1 - t0)
    result = {"command": args.command, "seconds": round(t1 - t0, 1),
              "cpu_percent_of_one_core": round(100 * share, 2)}
    print(json.dumps(result) if args.json else
          f"{args.command}: {100 * share:.2f}% of one core over {t1 - t0:.1f} s of silence")
    return 0


if __name__ == "__main__":
    sys.exit(main())
