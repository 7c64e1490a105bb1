#!/usr/bin/env python3
"""`pip install` with a progress line for what takes long: compiling llama.cpp.

pip shows only "Building wheel for llama-cpp-python ... still running..." for the 5-20 minutes
llama.cpp compiles on a small machine, and people stop it, thinking it hung. This runs pip
verbosely, hides its chatter, and prints what is being built, how far it got (ninja's [n/N]
steps) and roughly how long is left. pip's own summary lines pass through; when pip fails, the
last lines of its output are shown. Stdlib only: it runs before anything is installed.

    python3 packaging/pip-install-progress.py VENV_PYTHON -e '.[test]'
"""

from __future__ import annotations

import collections
import re
import subprocess
import sys
import time

STEP = re.compile(r"^\s*\[(\d+)/(\d+)\]\s")
BUILDING = re.compile(r"Building wheel for (\S+)")
PASS_THROUGH = ("Successfully installed", "Successfully built", "ERROR:", "Using cached",
                "Processing ")
REPORT_EVERY_S = 20.0
TAIL_LINES = 80


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}:{secs:02d}"


class Progress:
    """Turns pip -v's lines into a few lines a person reads."""

    def __init__(self, out=sys.stdout) -> None:
        self.out = out
        self.started = time.monotonic()
        self.build_started: float | None = None
        self.first_step_at: float | None = None
        self.last_report = 0.0
        self.building: str | None = None
        self.tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def line(self, text: str) -> None:
        self.tail.append(text)
        now = time.monotonic()
        if m := BUILDING.search(text):
            name = m.group(1)
            if name != self.building:
                self.building = name
                self.build_started = now
                self.first_step_at = None
                if name.startswith("llama"):
                    self.say(f"compiling {name} (llama.cpp) from source: about 5 min on 2 "
                             "cores, more on a busy or smaller machine (progress follows)")
                else:
                    self.say(f"building {name}")
            return
        if m := STEP.match(text):
            done, total = int(m.group(1)), int(m.group(2))
            if self.first_step_at is None:
                self.first_step_at = now
            if now - self.last_report >= REPORT_EVERY_S or done == total:
                self.last_report = now
                self.say(self._step_text(done, total, now))
            return
        if text.lstrip().startswith(PASS_THROUGH):
            self.say(text.strip())

    def _step_text(self, done: int, total: int, now: float) -> str:
        elapsed = now - (self.build_started or self.started)
        text = f"  {self.building or 'build'}: step {done}/{total}, {_clock(elapsed)} elapsed"
        if self.first_step_at is not None and 3 <= done < total:
            rate = (now - self.first_step_at) / done
            text += f", about {_clock(rate * (total - done))} left"
        return text


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    python, args = argv[0], argv[1:]
    cmd = [python, "-m", "pip", "install", "-v", "--progress-bar", "off", *args]
    progress = Progress()
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          errors="replace", bufsize=1) as proc:
        assert proc.stdout is not None
        for text in proc.stdout:
            progress.line(text.rstrip("\n"))
        code = proc.wait()
    if code != 0:
        progress.say(f"pip failed (exit code {code}); its last lines:")
        for text in progress.tail:
            progress.say(f"  | {text}")
    else:
        progress.say(f"installed in {_clock(time.monotonic() - progress.started)}")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
