"""The accelerator abstraction's decision point: which ``ChatTarget`` answers this turn, and why.

Policies:
- ``local``: never offload. No request, probe or warm-up ever goes to a remote (privacy switch).
- ``remote``: a healthy remote first, local as the fallback.
- ``auto``: predict the time to the first clause on every healthy target for *this* prompt (the
  local target knows how much of it is already in its KV cache) and take local when it meets the
  budget, else the fastest predicted target.
Health is a circuit breaker per remote with a half-open probe (``GET /v1/models``). Nothing here
waits on the network: warm-ups and half-open probes run on background threads (a failed warm-up
opens the circuit at once; a half-open remote sits out the turn that starts its probe), so
``route`` is cheap wherever it runs. A remote route is hedged (``llm/hedge.py``): when the local
model exists it races a remote whose first clause is late, so a silent or slow remote costs the
turn ``hedge_after_ms``, never its timeouts.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Optional

from edgevoice.llm.estimates import CircuitBreaker, Estimates
from edgevoice.llm.hedge import HedgedTarget, derive_hedge_after_ms
from edgevoice.llm.protocol import ChatTarget, Message, StreamStats, TargetError

log = logging.getLogger(__name__)

POLICIES = ("local", "remote", "auto")


@dataclass(frozen=True)
class Route:
    """The chosen target, the plain-words reason, and the targets to fall back to in order."""

    target: Optional[ChatTarget]
    reason: str
    fallbacks: tuple[ChatTarget, ...] = ()
    predicted_ms: dict[str, Optional[float]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.target.name if self.target is not None else "none"

    @property
    def chosen(self) -> Optional[ChatTarget]:
        """The target picked (a hedged route's remote, not the wrapper)."""
        return self.target.primary if isinstance(self.target, HedgedTarget) else self.target


class Router:
    """Picks a target per turn from the configured ones, the policy and live estimates."""

    def __init__(
        self,
        targets: dict[str, ChatTarget] | Callable[[], dict[str, ChatTarget]],
        policy: str = "local",
        budget_ms: float = 1200.0,
        *,
        breaker_threshold: int = 2,
        breaker_cooldown_s: float = 15.0,
        clock: Callable[[], float] = time.monotonic,
        hedge_after_ms: Optional[float] = None,
    ) -> None:
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")
        # A callable is loaded on first use, so a turn that needs no model never loads one.
        self._loader = targets if callable(targets) else None
        self._targets: Optional[dict[str, ChatTarget]] = None if callable(targets) else targets
        self.policy = policy
        self.budget_ms = budget_ms
        self.clock = clock
        self._breaker_args = (breaker_threshold, breaker_cooldown_s)
        self.estimates: dict[str, Estimates] = {}
        self.breakers: dict[str, CircuitBreaker] = {}
        self.hedge_after_ms = hedge_after_ms
        """``llm.hedge_after_ms``: None derives it per turn from the remote's estimate."""
        self._background_lock = threading.Lock()
        self._in_flight: dict[str, threading.Thread] = {}
        self._unsaid: dict[str, str] = {}  # a quiet warm-up failure, told by the turn it skips

    @property
    def targets(self) -> dict[str, ChatTarget]:
        if self._targets is None:
            self._targets = self._loader()
        return self._targets

    def estimate(self, name: str) -> Estimates:
        return self.estimates.setdefault(name, Estimates())

    def breaker(self, name: str) -> CircuitBreaker:
        if name not in self.breakers:
            self.breakers[name] = CircuitBreaker(*self._breaker_args, clock=self.clock)
        return self.breakers[name]

    @property
    def local(self) -> Optional[ChatTarget]:
        return self.targets.get("local")

    @property
    def remotes(self) -> list[ChatTarget]:
        if self.policy == "local":
            return []
        return [t for name, t in self.targets.items() if name != "local"]

    @property
    def has_targets(self) -> bool:
        return self.local is not None or bool(self.remotes)

    # -- health --------------------------------------------------------------------------------

    def warm_up_remotes(self, *, warn: bool = True) -> list[threading.Thread]:
        """Warm every remote up on a background thread of its own and return at once.

        A remote that fails its warm-up opens its circuit at once (turns go elsewhere until the
        half-open probe finds it back); logged at WARNING, or INFO with ``warn=False`` (for a
        caller that reports the turn's own failure)."""
        return [t for t in (self._in_background(target, "warm-up", target.warm_up, warn)
                            for target in self.remotes) if t is not None]

    def wait_for_background(self, timeout_s: float) -> bool:
        """Wait for warm-ups and probes in flight (tests, `edgevoice targets`)."""
        end = time.monotonic() + timeout_s
        with self._background_lock:
            threads = list(self._in_flight.values())
        for thread in threads:
            thread.join(max(0.0, end - time.monotonic()))
        return not any(t.is_alive() for t in threads)

    def _in_background(self, target: ChatTarget, what: str, work: Callable[[], object],
                       warn: bool) -> Optional[threading.Thread]:
        with self._background_lock:
            if target.name in self._in_flight:
                return None
            thread = threading.Thread(target=self._run_background,
                                      args=(target, what, work, warn),
                                      name=f"{what}-{target.name}", daemon=True)
            self._in_flight[target.name] = thread
        thread.start()
        return thread

    def _run_background(self, target: ChatTarget, what: str, work: Callable[[], object],
                        warn: bool) -> None:
        breaker = self.breaker(target.name)
        started = time.monotonic()
        try:
            work()
        except TargetError as exc:
            said = str(exc) if str(exc).startswith(target.name) else f"{target.name}: {exc}"
            self.estimate(target.name).observe_failure()
            why = str(exc) if what == "warm-up" else f"{what} failed: {exc}"
            breaker.trip(why, getattr(exc, "retry_after_s", None))
            log.log(logging.WARNING if warn else logging.INFO,
                    "%s; turns go elsewhere until it answers", said)
            if not warn:
                with self._background_lock:
                    self._unsaid[target.name] = said
        except Exception:  # a bug must not kill the process from a daemon thread
            log.exception("%s: %s crashed", target.name, what)
            breaker.trip(f"{what} crashed")
        else:
            was = breaker.state
            self.estimate(target.name).rtt_ms.add((time.monotonic() - started) * 1000)
            breaker.success()
            if was != "closed":
                log.info("%s: probe answered, circuit closed again", target.name)
        finally:
            with self._background_lock:
                self._in_flight.pop(target.name, None)

    def probe_in_background(self, target: ChatTarget) -> Optional[threading.Thread]:
        """Start the half-open probe of ``target`` unless one is in flight."""
        probe = getattr(target, "probe", None)
        if probe is None:
            self.breaker(target.name).success()
            return None
        return self._in_background(target, "probe", probe, False)

    def healthy(self, target: ChatTarget) -> bool:
        """Closed circuit, or half-open and the probe answered: probes here, on the caller's
        thread (`edgevoice targets`); ``route`` never does."""
        breaker = self.breaker(target.name)
        state = breaker.state
        if state == "closed":
            return True
        if state == "open":
            return False
        probe = getattr(target, "probe", None)
        if probe is None:
            return True
        started = self.clock()
        try:
            probe()
        except TargetError as exc:
            breaker.failure(f"probe failed: {exc}", getattr(exc, "retry_after_s", None))
            return False
        self.estimate(target.name).rtt_ms.add((self.clock() - started) * 1000)
        breaker.success()
        log.info("%s: probe answered, circuit closed again", target.name)
        return True

    # -- the decision --------------------------------------------------------------------------

    def _evaluated_tokens(self, target: ChatTarget, messages: list[Message]) -> int:
        cost = getattr(target, "prompt_cost", None)
        if cost is not None:
            return cost(messages).evaluated_tokens
        counter = getattr(self.local, "count_tokens", None)
        if counter is not None:
            return counter(messages)
        return sum(len(m.get("content", "")) // 4 + 4 for m in messages)

    def predict_ms(self, target: ChatTarget, messages: list[Message]) -> Optional[float]:
        return self.estimate(target.name).predict_first_clause_ms(
            self._evaluated_tokens(target, messages))

    def expects_local(self, messages: list[Message]) -> bool:
        """Whether ``route(messages)`` will most likely pick the local model, decided without
        the network: for speculative work that only the local model can use and that would
        delay a remote turn."""
        local = self.local
        return local is not None and self.route(messages, probe=False).target is local

    def route(self, messages: Optional[list[Message]] = None, *, probe: bool = True) -> Route:
        """The target for ``messages`` and its fallbacks, decided without waiting on the
        network: a remote whose circuit is half-open sits this turn out and, unless
        ``probe=False``, gets its probe started in the background."""
        messages = messages or []
        local = self.local
        remotes = []
        for target in self.remotes:
            state = self.breaker(target.name).state
            if state == "closed":
                remotes.append(target)
            elif state == "half-open" and probe:
                self.probe_in_background(target)
        down = [t.name for t in self.remotes if t not in remotes]
        if probe and self.policy != "local" and (local is not None or remotes):
            self._tell_skipped(down, local)  # with nowhere to go, the turn's error says it
        down_note = f"; {', '.join(down)} unavailable" if down else ""
        if self.policy == "local" or not self.remotes:
            if local is None:
                return Route(None, "no language model installed")
            why = "policy local" if self.policy == "local" else "no remote target configured"
            return Route(local, f"local model ({why})")
        fallback_local = [local] if local is not None else []
        predicted = {t.name: self.predict_ms(t, messages) for t in remotes + fallback_local}
        if self.policy == "remote":
            if remotes:
                best = min(remotes, key=lambda t: predicted[t.name] or float("inf"))
                rest = [t for t in remotes if t is not best] + fallback_local
                return self._hedged(Route(best, "policy remote", tuple(rest), predicted))
            if local is None:
                return Route(None, f"no target reachable{down_note}")
            return Route(local, f"policy remote, but no remote is healthy{down_note}", (),
                         predicted)
        # auto
        if local is not None:
            local_ms = predicted[local.name]
            if not remotes:
                return Route(local, f"auto: local (no healthy remote{down_note})", (), predicted)
            if local_ms is None:
                return Route(local, "auto: local (not calibrated yet)", tuple(remotes), predicted)
            if local_ms <= self.budget_ms:
                return Route(local, f"auto: local predicted {local_ms:.0f} ms, within the "
                             f"{self.budget_ms:.0f} ms budget", tuple(remotes), predicted)
        if not remotes:
            return Route(None, f"no target reachable{down_note}")
        best = min(remotes, key=lambda t: predicted[t.name] or float("inf"))
        best_ms = predicted[best.name]
        if local is not None and best_ms is not None and best_ms >= predicted[local.name]:
            return Route(local, f"auto: local predicted {predicted[local.name]:.0f} ms, over "
                         f"budget but faster than {best.name} ({best_ms:.0f} ms)",
                         tuple(remotes), predicted)
        local_txt = f"local predicted {predicted[local.name]:.0f} ms" if local else "no local model"
        best_txt = "not measured yet" if best_ms is None else f"predicted {best_ms:.0f} ms"
        rest = [t for t in remotes if t is not best] + fallback_local
        return self._hedged(Route(best, f"auto: {local_txt}, over the {self.budget_ms:.0f} ms "
                                  f"budget; {best.name} {best_txt}", tuple(rest), predicted))

    def _tell_skipped(self, down: list[str], local: Optional[ChatTarget]) -> None:
        """A quiet warm-up failure (``warn=False``: `edgevoice ask`) is said once, by the first
        turn that goes elsewhere because of it, in the words of a failover in the turn."""
        with self._background_lock:
            said = [self._unsaid.pop(name) for name in down if name in self._unsaid]
        for text in said:
            where = local.name if local is not None else "the next target"
            log.warning("%s; continuing the turn on %s", text, where)

    def _hedged(self, route: Route) -> Route:
        """A remote route raced by the local model when the remote's first clause is late."""
        local, remote = self.local, route.target
        if local is None or remote is None:
            return route
        after = derive_hedge_after_ms(route.predicted_ms.get(remote.name), self.hedge_after_ms,
                                      race_when_unknown=self.policy == "auto")
        hedge = HedgedTarget(remote, local, after, predicted_ms=dict(route.predicted_ms),
                             record_failure=self.record_failure)
        when = "from the start" if after <= 0 else f"after {after:.0f} ms without a clause"
        return Route(hedge, f"{route.reason}; local races it {when}", route.fallbacks,
                     route.predicted_ms)

    # -- feedback ------------------------------------------------------------------------------

    def record_success(self, target: ChatTarget, stats: Optional[StreamStats]) -> None:
        if isinstance(target, HedgedTarget):
            target = target.settled
        self.breaker(target.name).success()
        if stats is not None and stats.finish_reason in ("stop", "length"):
            self.estimate(target.name).observe(
                evaluated_tokens=stats.evaluated_tokens, first_token_ms=stats.first_token_ms,
                completion_tokens=stats.completion_tokens, total_ms=stats.total_ms)

    def record_failure(self, target: ChatTarget, exc: Exception) -> None:
        if isinstance(target, HedgedTarget):
            target = target.settled
        self.estimate(target.name).observe_failure()
        self.breaker(target.name).failure(str(exc), getattr(exc, "retry_after_s", None))

    def status(self) -> list[dict]:
        """Per target: kind, health and measured latency (for `edgevoice targets`)."""
        out = []
        for name, target in self.targets.items():
            info = target.describe()
            breaker = self.breaker(name)
            out.append({
                "name": name, "kind": info.kind, "model": info.model, "device": info.device,
                "used_by_policy": name == "local" or self.policy != "local",
                "circuit": breaker.state, "last_error": breaker.last_error or None,
                "estimates": self.estimate(name).as_dict(),
            })
        return out

    def close(self) -> None:
        for target in (self._targets or {}).values():
            target.close()
