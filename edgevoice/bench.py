"""`edgevoice bench targets`: time to first token, tokens/s and the router's own overhead per
target, p50/p95 over N requests. Prints figures; nothing asserts speed."""

from __future__ import annotations

import sys
import threading
import time

from edgevoice.llm.protocol import TargetError
from edgevoice.llm.router import Router

PROMPT = [{"role": "user", "content": "In one sentence: why do voice assistants need low latency?"}]


def _pct(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile: no interpolation on a handful of samples."""
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))], 2)


def bench_targets(router: Router, requests: int, progress=None) -> list[dict]:
    """Run ``requests`` streams on every target; return one summary row per target."""
    rows = []
    route_ms = []
    for _ in range(max(requests, 1) * 10):
        t0 = time.perf_counter()
        router.route(PROMPT)
        route_ms.append((time.perf_counter() - t0) * 1000)
    for name, target in router.targets.items():
        ttft, tps, errors = [], [], []
        for i in range(requests):
            if progress:
                progress(f"{name}: request {i + 1}/{requests}")
            try:
                for _ in target.stream(PROMPT, threading.Event()):
                    pass
            except TargetError as exc:
                errors.append(str(exc))
                continue
            stats = target.last_stats
            if stats and stats.first_token_ms is not None:
                ttft.append(stats.first_token_ms)
                if stats.tokens_per_s:
                    tps.append(stats.tokens_per_s)
        rows.append({
            "target": name, "kind": target.describe().kind, "requests": requests,
            "errors": len(errors), "last_error": errors[-1] if errors else None,
            "ttft_ms_p50": _pct(ttft, 0.5), "ttft_ms_p95": _pct(ttft, 0.95),
            "tokens_per_s_p50": _pct(tps, 0.5), "tokens_per_s_p95": _pct(tps, 0.95),
            "router_overhead_ms_p50": _pct(route_ms, 0.5),
            "router_overhead_ms_p95": _pct(route_ms, 0.95),
        })
    return rows


def print_rows(rows: list[dict], out=sys.stdout) -> None:
    cols = ["target", "requests", "errors", "ttft_ms_p50", "ttft_ms_p95", "tokens_per_s_p50",
            "tokens_per_s_p95", "router_overhead_ms_p50", "router_overhead_ms_p95"]
    print("  ".join(cols), file=out)
    for r in rows:
        print("  ".join(str(r[c]) for c in cols), file=out)
