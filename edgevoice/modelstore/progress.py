"""What a pull tells the person at the terminal: status lines and, on a TTY, a progress bar.

Everything goes to stderr (stdout stays clean for `list --json` and `path`). The bar is tqdm's,
shown only when stderr is a terminal, so logs and CI output get a few plain lines instead of
thousands of carriage returns.
"""

from __future__ import annotations

import sys
from typing import Optional


def say(message: str) -> None:
    print(f"edgevoice: {message}", file=sys.stderr, flush=True)


def warn_loudly(lines: list[str]) -> None:
    """A warning nobody scrolls past: every line prefixed, framed by blank lines."""
    print(file=sys.stderr)
    for line in lines:
        print(f"edgevoice: WARNING: {line}", file=sys.stderr)
    print(file=sys.stderr, flush=True)


class Progress:
    """A byte counter for one download; a tqdm bar when stderr is a TTY, silent otherwise."""

    def __init__(self, label: str, enabled: Optional[bool] = None) -> None:
        self.label = label
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self._bar = None

    def start(self, total: Optional[int], done: int) -> None:
        if not self.enabled:
            return
        if self._bar is None:
            try:
                from tqdm import tqdm
            except ImportError:  # a declared dependency; without it, the status lines only
                self.enabled = False
                return
            self._bar = tqdm(total=total, initial=done, desc=self.label, unit="B",
                             unit_scale=True, unit_divisor=1024, file=sys.stderr,
                             dynamic_ncols=True, leave=True)
        else:  # a resume or a restart: same bar, new position
            self._bar.total = total
            self._bar.n = done
            self._bar.refresh()

    def update(self, n: int) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
