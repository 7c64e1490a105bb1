"""The ear's clock: the audio timeline against ``time.monotonic()``, and how far behind real
time the ear reads.

The timeline counts samples (``AudioChunk.start_ms``); a block is captured when its last sample
is, so ``origin + end_ms / 1000`` is when it was captured and ``now`` minus that is how long it
waited for the ear: how far the ear is behind. The origin is learned from the reads themselves
(clock-free: the caller passes ``now``), which works for a microphone and for a file played in
real time alike:

- a read that had to wait for its block got one just captured: the ear is caught up there, so
  that read anchors the origin. That keeps the mapping right when the source lost audio (blocks
  dropped from a full queue shift the sample count against the clock) or skipped some (a
  reopened device);
- a read that came out earlier than the mapping says (a late first read, a file played faster
  than real time) moves the origin back: the ear is never "ahead".

Reports are rate-limited: the first time the ear is ``warn_s`` behind, then at most once every
``every_s`` while it stays behind (the worst figure since the last report) unless it has fallen
twice as far behind as last said, and once when it has caught up again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class Behind:
    """A report: the ear was ``behind_s`` behind real time at worst (``caught_up``: no more)."""

    behind_s: float
    caught_up: bool = False


class EarClock:
    def __init__(self, warn_s: float = 1.0, every_s: float = 10.0) -> None:
        self.warn_s = warn_s
        self.every_s = every_s
        self.origin: Optional[float] = None  # monotonic time of the timeline's 0 ms
        self.behind_s = 0.0  # at the last read
        self._worst = 0.0  # since the last report
        self._reported_at: Optional[float] = None  # while behind: the last report's time
        self._reported = 0.0  # and its figure

    def at(self, stream_ms: float) -> Optional[float]:
        """The monotonic time a point of the timeline was captured (None before any read)."""
        return None if self.origin is None else self.origin + stream_ms / 1000

    def read(self, end_ms: float, now: float, waited_s: float,
             block_ms: float) -> Optional[Behind]:
        """A block ending at ``end_ms`` was read at ``now`` after waiting ``waited_s`` for it.
        Returns a report when one is due."""
        captured_origin = now - end_ms / 1000
        # Waiting half a block or more means the block was not there yet: it was just captured.
        if (self.origin is None or captured_origin < self.origin
                or waited_s * 1000 >= block_ms / 2):
            self.origin = captured_origin
        self.behind_s = captured_origin - self.origin
        self._worst = max(self._worst, self.behind_s)
        if self._reported_at is None:
            if self.behind_s < self.warn_s:
                return None
        elif self.behind_s < self.warn_s / 2:
            self._reported_at, self._worst = None, 0.0
            return Behind(0.0, caught_up=True)
        elif now - self._reported_at < self.every_s and self.behind_s < 2 * self._reported:
            return None
        report, self._reported_at, self._worst = Behind(self._worst), now, 0.0
        self._reported = report.behind_s
        return report
