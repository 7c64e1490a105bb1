"""Which catalog language model suits this machine, and when a remote target is the better plan.

The answer is a prediction of each model's time to the first clause of an answer on this
machine, compared with the latency budget (`llm.first_audio_budget_ms`), plus its memory
(`memory` in the catalog) compared with the RAM that is free. Speeds come from a short
calibration of the model that is installed (``calibrate``, cached) scaled to the other models by
their relative speeds, which were measured here on random-weight twins of the same shapes
(``benchmarks/gemma_twins.py``); without an installed model, from the core count
alone (and it says so). A voice turn after the first evaluates only the new user turn (the KV
cache keeps the rest), so the first clause costs about ``TURN_TOKENS`` of prefill and
``CLAUSE_TOKENS`` of decode.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from edgevoice.config import LlmConfig

if TYPE_CHECKING:
    from edgevoice.modelstore.catalog import CatalogEntry

TURN_TOKENS = 30
"""A spoken question with its chat-template framing, in tokens."""
CLAUSE_TOKENS = 10
"""A short first clause (up to about 8 words)."""
HEADROOM_BYTES = 700_000_000
"""RAM left for the rest of the agent (speech recognition, TTS, audio) and the system."""


@dataclass(frozen=True)
class Speed:
    prefill_tps: float
    decode_tps: float

    def first_clause_ms(self) -> float:
        return 1000.0 * (TURN_TOKENS / self.prefill_tps + CLAUSE_TOKENS / self.decode_tps)

    def scaled(self, factor: float) -> Speed:
        return Speed(self.prefill_tps * factor, self.decode_tps * factor)


# For one thread on a quiet 2-core x86 machine (the agent's default there was one thread; it is
# two now, see ``threads_for``, and ``machine_factor`` scales by the threads).
# Anchored on Gemma 2 2B's twin (FACTS.md: prefill 35-55, decode ~6 tok/s with 2 threads; one
# thread gets about 60 %), Gemma 4 E2B from the E2B/Gemma-2 ratio of benchmarks/gemma_twins.py
# (1 thread, one run on a shared machine: prefill 1.35-1.6x, decode 1.8x; 1.4x and 1.5x used),
# the two Gemma 3 models by their weight bytes read per token (estimates). Only the ratios matter
# once an installed model has been calibrated.
REFERENCE: dict[str, Speed] = {
    "gemma-4-e2b-it": Speed(prefill_tps=28.0, decode_tps=6.0),
    "gemma-2-2b-it": Speed(prefill_tps=20.0, decode_tps=4.0),
    "gemma-3-1b-it": Speed(prefill_tps=45.0, decode_tps=9.0),
    "gemma-3-270m-it": Speed(prefill_tps=150.0, decode_tps=25.0),
}
PREFERENCE = ("gemma-4-e2b-it", "gemma-2-2b-it", "gemma-3-1b-it", "gemma-3-270m-it")
"""Best answers first: the first one that fits the machine is the recommendation."""
REFERENCE_THREADS = 1
"""The references were measured with the agent's default on a 2-core machine: 1 thread."""


@dataclass(frozen=True)
class Candidate:
    name: str
    speed: Speed
    memory: Optional[int]
    fits_budget: bool
    fits_memory: bool

    @property
    def fits(self) -> bool:
        return self.fits_budget and self.fits_memory


@dataclass(frozen=True)
class Fit:
    candidates: tuple[Candidate, ...]
    best: Optional[Candidate]
    measured: Optional[str]
    """The model whose calibration the predictions are scaled from (None: core count only)."""
    ram_total: int
    ram_available: int
    cores: int
    budget_ms: int


def meminfo(text: Optional[str] = None) -> tuple[int, int]:
    """(MemTotal, MemAvailable) in bytes from /proc/meminfo text (0, 0 when unknown)."""
    if text is None:
        try:
            text = Path("/proc/meminfo").read_text()
        except OSError:
            return 0, 0
    values = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            values[key] = int(parts[0]) * 1024
    total = values.get("MemTotal", 0)
    return total, values.get("MemAvailable", total)


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask; the CPU count off Linux)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def threads_for(cores: int) -> int:
    """Decode threads on ``cores``: all but one, which the audio path keeps (PortAudio
    callbacks, VAD, ASR, the turn detector), except on two cores, where the model takes both.
    Measured on a 2-core machine, a Gemma-2-2B twin in an 8-turn conversation at the speaker
    (`edgevoice bench latency --compare`): 2 threads answered in 1714 ms p50 against 2524 ms for
    one, with the ear never behind real time and no false cut-off on either."""
    return max(1, cores if cores <= 2 else cores - 1)


def machine_factor(measured_name: Optional[str], measured: Optional[Speed], cores: int) -> float:
    """How much faster than the reference machine this one is (the decode ratio of the model
    that was calibrated; else the core count's, capped, since decode is memory-bound)."""
    if measured_name in REFERENCE and measured is not None:
        return measured.decode_tps / REFERENCE[measured_name].decode_tps
    threads = min(threads_for(cores), 4)  # the agent's default (``llm.threads: 0``)
    return (threads / max(REFERENCE_THREADS, 1)) ** 0.7  # decode scales less than linearly


def assess(memories: dict[str, Optional[int]], *, budget_ms: int, ram: tuple[int, int],
           cores: int, measured_name: Optional[str] = None,
           measured: Optional[Speed] = None,
           names: Iterable[str] = PREFERENCE) -> Fit:
    """Predict every known model here and pick the best that fits budget and memory.

    ``memories``: catalog name -> bytes to run it; ``ram``: (total, available) bytes.
    """
    factor = machine_factor(measured_name, measured, cores)
    total, available = ram
    candidates = []
    for name in names:
        if name not in REFERENCE:
            continue
        speed = measured if name == measured_name and measured else REFERENCE[name].scaled(factor)
        memory = memories.get(name)
        fits_memory = memory is None or not available or memory + HEADROOM_BYTES <= available
        candidates.append(Candidate(name, speed, memory, speed.first_clause_ms() <= budget_ms,
                                    fits_memory))
    best = next((c for c in candidates if c.fits), None)
    return Fit(tuple(candidates), best, measured_name if measured else None, total, available,
               cores, budget_ms)


def describe(fit: Fit) -> str:
    """One line: the machine, and each model's predicted first clause."""
    gb = 1e9
    basis = (f"scaled from {fit.measured}'s calibration" if fit.measured
             else "estimated from the core count (no model installed to calibrate)")
    parts = [f"{c.name} ~{c.speed.first_clause_ms():.0f} ms"
             + ("" if c.fits_memory else " (too little RAM)") for c in fit.candidates]
    return (f"{fit.ram_total / gb:.1f} GB RAM ({fit.ram_available / gb:.1f} GB free), "
            f"{fit.cores} cores; predicted first clause ({basis}; budget {fit.budget_ms} ms): "
            + ", ".join(parts))


def first_model(llm_cfg: LlmConfig) -> str:
    """The catalog model to pull first on this machine when none is installed (what the first
    `make run` names): the best one predicted to fit the budget and the RAM, else the default.
    From the core count and RAM alone (nothing to calibrate yet), so it costs no model load."""
    from edgevoice.modelstore.catalog import load_catalog

    fit = assess(names_in(load_catalog(None).entries), budget_ms=llm_cfg.first_audio_budget_ms,
                 ram=meminfo(), cores=usable_cores())
    return fit.best.name if fit.best is not None else PREFERENCE[0]


def names_in(entries: Sequence[CatalogEntry]) -> dict[str, Optional[int]]:
    """catalog name -> memory, for the catalog's language models."""
    return {e.name: e.memory for e in entries if e.kind == "llm"}


def measure_installed(path: Path, llm_cfg: LlmConfig, cache: Path) -> Speed:
    """The installed model's speed here: from the calibration cache, else a short probe
    (loads the model once; a few seconds for a 2B model), cached for the agent too."""
    import llama_cpp

    from edgevoice.llm.calibrate import cached, calibrate, model_key
    from edgevoice.llm.llama_target import LlamaCppTarget, default_threads, resolve_gpu_layers

    threads = llm_cfg.threads or default_threads()
    layers = resolve_gpu_layers(llm_cfg.gpu_layers, bool(llama_cpp.llama_supports_gpu_offload()))
    known = cached(cache, model_key(path, threads, layers))
    if known is None:
        cfg = dataclasses.replace(llm_cfg, model=str(path))
        with LlamaCppTarget(cfg, "doctor") as target:
            known = calibrate(target, cache)
    return Speed(*known)


def recommend(path: Optional[Path], llm_cfg: LlmConfig, cache: Path,
              entries: Sequence[CatalogEntry], *, remote_configured: bool) -> tuple[str, str, str]:
    """(status ``ok``/``warn``, detail, fix) for `edgevoice doctor`'s model-fit check."""
    by_target = {e.target: e.name for e in entries if e.kind == "llm"}
    current = by_target.get(path.name) if path is not None else None
    measured = measure_installed(path, llm_cfg, cache) if path and path.is_file() else None
    fit = assess(names_in(entries), budget_ms=llm_cfg.first_audio_budget_ms,
                 ram=meminfo(), cores=usable_cores(), measured_name=current,
                 measured=measured if current else None)
    detail = describe(fit)
    if measured is not None and current is None:
        detail += (f"; {path.name} measured: prefill {measured.prefill_tps:.0f} tok/s, decode "
                   f"{measured.decode_tps:.1f} tok/s (~{measured.first_clause_ms():.0f} ms)")
    remote_fix = ("configure a remote target (a `remote:` section, e.g. Cerebras or a LAN "
                  "llama.cpp server) with `llm.policy: auto`: it answers when the local model "
                  "would be too slow, and the local model stays the fallback")
    if fit.best is None:
        if remote_configured and llm_cfg.policy != "local":
            return "ok", detail + "; no local model meets the budget: the remote target leads", ""
        return "warn", detail + "; no catalog model meets the budget here", remote_fix
    best = fit.best.name
    if best != PREFERENCE[0] and not remote_configured:
        detail += (f"; answers as good as {PREFERENCE[0]}'s within the budget need a remote "
                   "target (`llm.policy: auto`)")
    if current is None and path is None:
        return "ok", detail + f"; recommended here: {best} (`edgevoice models pull {best}`)", ""
    mine = next((c for c in fit.candidates if c.name == current), None)
    if mine is None or mine.fits or mine.name == best:
        return "ok", detail + (f"; {current} fits" if current else ""), ""
    pull = f"`edgevoice models pull {best}` and set `llm.model: {best}`"
    if remote_configured:
        return "warn", detail + f"; {current} misses the budget", f"{pull}, or {remote_fix}"
    return "warn", detail + f"; {current} misses the budget here", pull
