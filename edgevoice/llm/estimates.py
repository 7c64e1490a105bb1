"""Live per-target latency estimates and health: what the router predicts each turn from.

Time to the first clause on a target is modelled as
    first_clause_ms = overhead_ms + evaluated_tokens / prefill_tps * 1000
                      + clause_tokens / decode_tps * 1000
where ``overhead_ms`` is the fixed cost of a request (network round trip and queueing for a
remote target, ~0 for local), fitted from observed first-token times as moving averages.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Optional

CLAUSE_TOKENS = 8  # tokens in a typical first clause ("Sure, here's how it works," ...)


class Ewma:
    """Exponentially weighted moving average; ``None`` until the first sample."""

    def __init__(self, alpha: float = 0.3, initial: Optional[float] = None) -> None:
        self.alpha = alpha
        self.value = initial
        self.count = 0

    def add(self, x: float) -> float:
        self.value = x if self.value is None else self.value + self.alpha * (x - self.value)
        self.count += 1
        return self.value


@dataclass
class Estimates:
    """Moving averages for one target. Prefill/decode speeds come from calibration or traffic."""

    overhead_ms: Ewma = field(default_factory=lambda: Ewma(initial=0.0))
    prefill_tps: Ewma = field(default_factory=Ewma)
    decode_tps: Ewma = field(default_factory=Ewma)
    rtt_ms: Ewma = field(default_factory=Ewma)
    error_rate: Ewma = field(default_factory=lambda: Ewma(alpha=0.2, initial=0.0))
    requests: int = 0
    failures: int = 0

    @property
    def known(self) -> bool:
        return self.prefill_tps.value is not None and self.decode_tps.value is not None

    def predict_first_clause_ms(self, evaluated_tokens: int) -> Optional[float]:
        """Predicted ms to the first clause, or None before anything was measured."""
        if not self.known:
            return None
        prefill = evaluated_tokens / max(self.prefill_tps.value, 1e-6) * 1000
        decode = CLAUSE_TOKENS / max(self.decode_tps.value, 1e-6) * 1000
        return (self.overhead_ms.value or 0.0) + prefill + decode

    def observe(self, *, evaluated_tokens: int, first_token_ms: Optional[float],
                completion_tokens: int, total_ms: float) -> None:
        """Fold one finished request in. The first-token time is split into prefill and
        overhead using the current prefill speed; decode speed from the tokens after it."""
        self.requests += 1
        self.error_rate.add(0.0)
        if first_token_ms is not None:
            if self.prefill_tps.value is not None and evaluated_tokens > 0:
                prefill_ms = evaluated_tokens / self.prefill_tps.value * 1000
                self.overhead_ms.add(max(0.0, first_token_ms - prefill_ms))
            else:
                self.overhead_ms.add(first_token_ms)
            decode_ms = total_ms - first_token_ms
            if completion_tokens > 1 and decode_ms > 0:
                self.decode_tps.add((completion_tokens - 1) / decode_ms * 1000)

    def observe_failure(self) -> None:
        self.requests += 1
        self.failures += 1
        self.error_rate.add(1.0)

    def as_dict(self) -> dict:
        def r(e: Ewma, nd: int = 1):
            return None if e.value is None else round(e.value, nd)

        return {"overhead_ms": r(self.overhead_ms), "prefill_tps": r(self.prefill_tps),
                "decode_tps": r(self.decode_tps), "rtt_ms": r(self.rtt_ms),
                "error_rate": r(self.error_rate, 3), "requests": self.requests,
                "failures": self.failures}


class CircuitBreaker:
    """closed -> (``threshold`` consecutive failures) -> open -> (cool-down) -> half-open: one
    probe decides. A 429's reset time holds the circuit open at least that long."""

    def __init__(self, threshold: int = 2, cooldown_s: float = 15.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.threshold = threshold
        self.cooldown_s = cooldown_s
        self.clock = clock
        self.consecutive = 0
        self.opened_at: Optional[float] = None
        self.open_until: Optional[float] = None
        self.last_error = ""

    @property
    def state(self) -> str:
        if self.open_until is None:
            return "closed"
        return "open" if self.clock() < self.open_until else "half-open"

    def success(self) -> None:
        self.consecutive = 0
        self.opened_at = self.open_until = None
        self.last_error = ""

    def trip(self, reason: str, retry_after_s: Optional[float] = None) -> None:
        """Open at once, whatever the count: a remote that failed its warm-up is not offered
        turns to fail a second time."""
        self.consecutive = max(self.consecutive + 1, self.threshold)
        self.last_error = reason
        now = self.clock()
        self.opened_at, self.open_until = now, now + max(self.cooldown_s, retry_after_s or 0.0)

    def failure(self, reason: str, retry_after_s: Optional[float] = None) -> None:
        self.consecutive += 1
        self.last_error = reason
        half_open = self.state == "half-open"
        if self.consecutive >= self.threshold or half_open or retry_after_s:
            now = self.clock()
            wait = max(self.cooldown_s, retry_after_s or 0.0)
            self.opened_at, self.open_until = now, now + wait
