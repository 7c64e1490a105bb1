"""Rate-limited logging: a flood of one failure is a few lines and a count, not 49 MB of log.

A hostile or broken peer can make the same thing fail thousands of times a second (a client
that never reads, a burst of connections); each failure is worth one line, the thousandth is
worth a number.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


class RateLimitedLog:
    """At most ``burst`` records per ``key`` in each ``period`` seconds; the rest are counted
    and reported with the next record let through."""

    def __init__(self, logger: logging.Logger, *, burst: int = 5, period: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger, self.burst, self.period, self.clock = logger, burst, period, clock
        self._windows: dict[str, tuple[float, int, int]] = {}
        """key -> (window start, records let through, records suppressed)"""

    def log(self, level: int, key: str, msg: str, *args, exc_info: bool = False) -> bool:
        """Log unless ``key`` is over its budget; True when the record was written."""
        now = self.clock()
        start, passed, suppressed = self._windows.get(key, (now, 0, 0))
        if now - start >= self.period:
            start, passed = now, 0
        if passed >= self.burst:
            self._windows[key] = (start, passed, suppressed + 1)
            return False
        if suppressed:
            msg += " (%d more like this suppressed)"
            args = (*args, suppressed)
        self._windows[key] = (start, passed + 1, 0)
        self.logger.log(level, msg, *args, exc_info=exc_info)
        return True

    def warning(self, key: str, msg: str, *args) -> bool:
        return self.log(logging.WARNING, key, msg, *args)

    def exception(self, key: str, msg: str, *args) -> bool:
        return self.log(logging.ERROR, key, msg, *args, exc_info=True)
