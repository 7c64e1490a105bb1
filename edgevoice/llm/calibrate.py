"""Measure the local target's prefill and decode speed once per model and machine.

The `auto` policy predicts each turn's time to the first clause from these; they are cached
(JSON in the cache dir, written atomically) because a probe on a 2B model costs a few seconds.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import tempfile
import threading
from pathlib import Path
from typing import Optional

from edgevoice.llm.protocol import ChatTarget

log = logging.getLogger(__name__)

PROBE = [{"role": "user", "content": "Count from one to twenty in words, separated by commas, "
                                     "and then say which of those numbers are prime."}]
PROBE_TOKENS = 16


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "Hardware", "Model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _key(target: ChatTarget) -> str:
    info = target.describe()
    return model_key(Path(info.details.get("path", info.model)), info.details.get("threads"),
                     info.details.get("gpu_layers"))


def model_key(path: Path, threads: object, gpu_layers: object) -> str:
    """The cache key: the file (path and size), how it runs, and the machine."""
    size = path.stat().st_size if path.exists() else 0
    return "|".join([str(path.resolve()), str(size), str(threads), str(gpu_layers),
                     _cpu_model(), str(os.cpu_count())])


def cached(cache: Path, key: str) -> Optional[tuple[float, float]]:
    """(prefill, decode) tokens/s from an earlier calibration, without loading the model."""
    entry = _load(cache).get(key)
    return (entry["prefill_tps"], entry["decode_tps"]) if entry else None


def _load(cache: Path) -> dict:
    try:
        return json.loads(cache.read_text())
    except (OSError, ValueError):
        return {}


def _save(cache: Path, data: dict) -> None:
    cache.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".calibration.", dir=cache.parent)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=1)
    os.replace(tmp, cache)


def calibrate(target: ChatTarget, cache: Optional[Path]) -> tuple[float, float]:
    """(prefill tokens/s, decode tokens/s) for ``target``, from the cache or a short probe."""
    key = _key(target)
    data = _load(cache) if cache else {}
    if key in data:
        entry = data[key]
        return entry["prefill_tps"], entry["decode_tps"]
    log.info("%s: calibrating (a one-off probe, cached in %s)", target.name, cache)
    cancel = threading.Event()
    n = 0
    for _ in target.stream(PROBE, cancel):
        n += 1
        if n >= PROBE_TOKENS:
            cancel.set()
    stats = target.last_stats
    if stats is None or not stats.first_token_ms or stats.completion_tokens < 2:
        raise RuntimeError(f"{target.name}: calibration probe produced no tokens")
    prefill = stats.evaluated_tokens / (stats.first_token_ms / 1000)
    decode = (stats.completion_tokens - 1) / max((stats.total_ms - stats.first_token_ms) / 1000,
                                                 1e-6)
    log.info("%s: prefill %.0f tok/s, decode %.1f tok/s", target.name, prefill, decode)
    if cache:
        data[key] = {"prefill_tps": prefill, "decode_tps": decode}
        _save(cache, data)
    return prefill, decode
