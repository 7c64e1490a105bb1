"""Router policy as pure logic: predictions, budget, circuit breaker, privacy of `local`.

The targets here are minimal protocol objects whose speeds the test sets: routing is a decision
over numbers, so it is tested on numbers (real targets are exercised in test_remote_target.py
and test_failover.py)."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from edgevoice.llm.estimates import CircuitBreaker, Estimates
from edgevoice.llm.protocol import PromptCost, TargetError, TargetInfo
from edgevoice.llm.router import Router


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class Target:
    def __init__(self, name: str, kind: str, *, cached: int = 0, probe_ok: bool = True):
        self.name, self.kind, self.cached, self.probe_ok = name, kind, cached, probe_ok
        self.probes = 0

    def describe(self) -> TargetInfo:
        return TargetInfo(self.name, self.kind, "m", "cpu" if self.kind == "local" else "remote")

    def prompt_cost(self, messages) -> PromptCost:
        n = sum(len(m["content"].split()) for m in messages) + 10
        return PromptCost(prompt_tokens=n, cached_tokens=min(self.cached, n))

    def probe(self) -> None:
        self.probes += 1
        if not self.probe_ok:
            raise TargetError("connection refused")

    def close(self) -> None:
        pass


MESSAGES = [{"role": "user", "content": "word " * 90}]  # 100 tokens


def _router(policy: str, local_tps=(50.0, 8.0), remote=True, budget=1200, **kw):
    clock = Clock()
    targets = {"local": Target("local", "local", **kw)}
    if remote:
        targets["cs3"] = Target("cs3", "openai")
    router = Router(targets, policy, budget, breaker_threshold=2, breaker_cooldown_s=10,
                    clock=clock)
    est = router.estimate("local")
    est.prefill_tps.add(local_tps[0])
    est.decode_tps.add(local_tps[1])
    if remote:
        r = router.estimate("cs3")
        r.prefill_tps.add(5000.0)
        r.decode_tps.add(1500.0)
        r.overhead_ms.add(170.0)
    return router, targets, clock


def test_prediction_uses_only_the_uncached_part_of_the_prompt():
    est = Estimates()
    assert est.predict_first_clause_ms(100) is None
    est.prefill_tps.add(50.0)
    est.decode_tps.add(8.0)
    assert est.predict_first_clause_ms(100) == pytest.approx(2000 + 1000)
    router, targets, _ = _router("auto", cached=95)
    assert router.predict_ms(targets["local"], MESSAGES) == pytest.approx(5 / 50 * 1000 + 1000)


def test_auto_prefers_local_within_budget_and_offloads_when_it_cannot_meet_it():
    router, targets, _ = _router("auto", cached=95, budget=1500)
    route = router.route(MESSAGES)
    assert route.target is targets["local"] and "within" in route.reason
    assert route.fallbacks == (targets["cs3"],)
    router, targets, _ = _router("auto", cached=0, budget=1500)
    route = router.route(MESSAGES)
    assert route.chosen is targets["cs3"] and "over the 1500 ms budget" in route.reason
    assert route.fallbacks == (targets["local"],)


def test_auto_keeps_local_when_it_is_faster_than_every_remote_anyway():
    router, targets, _ = _router("auto", budget=200)
    router.estimate("cs3").overhead_ms.value = 60000.0
    assert router.route(MESSAGES).target is targets["local"]


def test_expects_local_agrees_with_route_and_never_probes():
    # Speculative prefill asks this on every pause: it must match route() and stay offline.
    cases = [("local", {}), ("remote", {}), ("auto", {"cached": 95, "budget": 1500}),
             ("auto", {"cached": 0, "budget": 1500}), ("auto", {"remote": False})]
    for policy, kw in cases:
        router, targets, _ = _router(policy, **kw)
        expected = router.route(MESSAGES).target is targets["local"]
        assert router.expects_local(MESSAGES) is expected, (policy, kw)
    router, targets, _ = _router("auto", budget=200)
    router.estimate("cs3").overhead_ms.value = 60000.0    # over budget, but faster than cs3
    assert router.expects_local(MESSAGES) is True
    router, targets, _ = _router("auto", cached=0, budget=1500)
    router.breaker("cs3").failure("x")
    router.breaker("cs3").failure("x")                     # cs3's circuit is open
    assert router.expects_local(MESSAGES) is True and targets["cs3"].probes == 0


def test_policy_local_never_touches_a_remote():
    router, targets, _ = _router("local")
    router.breaker("cs3").failure("x")
    router.breaker("cs3").failure("x")
    route = router.route(MESSAGES)
    assert route.target is targets["local"] and route.fallbacks == ()
    assert router.remotes == [] and targets["cs3"].probes == 0


def test_policy_remote_falls_back_to_local_when_the_remote_is_down():
    router, targets, clock = _router("remote")
    assert router.route(MESSAGES).chosen is targets["cs3"]
    router.record_failure(targets["cs3"], TargetError("stalled"))
    assert router.route(MESSAGES).chosen is targets["cs3"]  # one failure: still closed
    router.record_failure(targets["cs3"], TargetError("stalled"))
    route = router.route(MESSAGES)
    assert route.target is targets["local"] and "cs3 unavailable" in route.reason
    assert targets["cs3"].probes == 0  # open: not even probed during the cool-down


class SlowProbeTarget(Target):
    """A remote whose probe blocks until the test releases it (a server trickling its
    /v1/models): routing must not wait for it."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.release = threading.Event()
        self.probing = threading.Event()

    def probe(self) -> None:
        self.probing.set()
        self.release.wait(10)
        super().probe()


def test_half_open_probe_runs_in_the_background_and_closes_or_reopens_the_circuit():
    router, targets, clock = _router("remote")
    slow = targets["cs3"] = SlowProbeTarget("cs3", "openai")
    for _ in range(2):
        router.record_failure(slow, TargetError("refused"))
    clock.t += 11
    assert router.breaker("cs3").state == "half-open"
    slow.probe_ok = False
    started = time.monotonic()
    route = router.route(MESSAGES)           # starts the probe, does not wait for it
    assert time.monotonic() - started < 0.5
    assert route.target is targets["local"] and "cs3 unavailable" in route.reason
    assert slow.probing.wait(2)
    assert router.route(MESSAGES).target is targets["local"]  # still probing: one probe only
    slow.release.set()
    assert router.wait_for_background(2)
    assert slow.probes == 1 and router.breaker("cs3").state == "open"
    clock.t += 11
    slow.probe_ok = True
    assert router.route(MESSAGES).target is targets["local"]  # this turn starts the probe
    assert router.wait_for_background(2)
    assert router.breaker("cs3").state == "closed" and slow.probes == 2
    assert router.route(MESSAGES).chosen is slow


def test_a_failed_warm_up_opens_the_circuit_at_once_in_the_background():
    router, targets, _ = _router("remote")
    release = threading.Event()

    def warm_up():
        release.wait(5)
        raise TargetError("cs3 at http://x/v1: no answer")

    targets["cs3"].warm_up = warm_up
    started = time.monotonic()
    threads = router.warm_up_remotes(warn=False)
    assert time.monotonic() - started < 0.5 and len(threads) == 1
    assert router.route(MESSAGES).chosen is targets["cs3"]  # not known yet: hedged remote
    release.set()
    assert router.wait_for_background(2)
    assert router.breaker("cs3").state == "open"  # one failure was enough
    assert router.breaker("cs3").last_error == "cs3 at http://x/v1: no answer"
    assert router.route(MESSAGES).target is targets["local"]


def test_remote_routes_are_hedged_with_a_derived_delay():
    router, targets, _ = _router("remote")
    route = router.route(MESSAGES)
    predicted = route.predicted_ms["cs3"]
    assert route.target.after_ms == pytest.approx(max(2 * predicted, predicted + 150))
    assert "local races it after" in route.reason
    router.estimates.pop("cs3")  # nothing measured: 200 ms under remote, a race under auto
    assert router.route(MESSAGES).target.after_ms == 200
    router, targets, _ = _router("auto", cached=0, budget=1500)
    router.estimates.pop("cs3")
    route = router.route(MESSAGES)
    assert route.chosen is targets["cs3"] and route.target.after_ms == 0
    assert "from the start" in route.reason
    router.hedge_after_ms = 500  # llm.hedge_after_ms
    assert router.route(MESSAGES).target.after_ms == 500
    router, targets, _ = _router("remote", remote=True)
    targets.pop("local")
    assert router.route(MESSAGES).target is targets["cs3"]  # nobody to race it


def test_rate_limit_reset_holds_the_circuit_open():
    breaker = CircuitBreaker(threshold=3, cooldown_s=5, clock=(clock := Clock()))
    breaker.failure("429", retry_after_s=30)
    assert breaker.state == "open"
    clock.t += 20
    assert breaker.state == "open"
    clock.t += 11
    assert breaker.state == "half-open"


def test_observations_move_the_estimates():
    est = Estimates()
    est.prefill_tps.add(100.0)
    est.observe(evaluated_tokens=50, first_token_ms=700.0, completion_tokens=11, total_ms=1700.0)
    assert est.overhead_ms.value == pytest.approx(0.3 * 200.0)
    assert est.decode_tps.value == pytest.approx(10.0)
    est.observe_failure()
    assert est.failures == 1 and est.error_rate.value > 0


def test_a_quiet_warm_up_failure_with_nowhere_else_to_go_is_left_to_the_turns_error(caplog):
    """`edgevoice ask --policy remote` with no local model: when the remote's warm-up fails
    before the turn routes, the turn's error says it, once; no "continuing the turn on the
    next target" where there is none (the failover test saw both lines, now and then)."""
    targets = {"cs3": Target("cs3", "openai")}
    router = Router(targets, "remote", 1200, breaker_threshold=2, breaker_cooldown_s=10,
                    clock=Clock())

    def warm_up():
        raise TargetError("cs3 at http://x/v1: connection refused")

    targets["cs3"].warm_up = warm_up
    router.warm_up_remotes(warn=False)
    assert router.wait_for_background(2)
    with caplog.at_level(logging.WARNING, logger="edgevoice.llm.router"):
        route = router.route(MESSAGES)
    assert route.target is None
    assert "continuing the turn" not in caplog.text, caplog.text
