"""Gemma 4 E2B is the catalog's default, `models list` says what each model costs, and the
model-fit advice picks the best model that meets the budget here (or a remote target)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgevoice.llm import fit
from edgevoice.llm.fit import assess, meminfo
from edgevoice.modelstore.catalog import DEFAULT_LLM, load_catalog

GB = 1_000_000_000
MEMORIES = {"gemma-4-e2b-it": 3 * GB, "gemma-2-2b-it": 2 * GB, "gemma-3-1b-it": GB,
            "gemma-3-270m-it": GB // 2}


def test_the_default_model_is_gemma4_e2b_pinned_with_its_checksum_and_memory() -> None:
    entry = load_catalog(None).require(DEFAULT_LLM)
    assert entry.name == "gemma-4-e2b-it" and entry.target == "gemma-4-E2B-it-Q4_K_M.gguf"
    assert "/resolve/main/" not in entry.url and "unsloth/gemma-4-E2B-it-GGUF" in entry.url
    assert entry.sha256 and entry.size == 3_106_738_272
    assert entry.license.id == "apache-2.0" and not entry.license.accept
    assert entry.memory and entry.memory > entry.size  # weights + KV cache + buffers


def test_models_list_shows_the_default_with_download_size_and_memory(tmp_path: Path) -> None:
    def run(*extra: str) -> str:
        out = subprocess.run([sys.executable, "-m", "edgevoice", "models", "list",
                              "--models-dir", str(tmp_path), *extra],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return out.stdout

    lines = run().splitlines()
    assert lines[0].split()[:5] == ["NAME", "KIND", "SIZE", "MEMORY", "STATUS"]
    assert lines[1].startswith("gemma-4-e2b-it *") and "3.1 GB" in lines[1]
    rows = {r["name"]: r for r in json.loads(run("--json"))["models"]}
    assert rows["gemma-4-e2b-it"]["default"] and not rows["gemma-2-2b-it"]["default"]
    assert all(rows[n]["memory"] for n in MEMORIES)


def test_meminfo_reads_total_and_available() -> None:
    text = "MemTotal:       24000000 kB\nMemFree:   100 kB\nMemAvailable:   12000000 kB\n"
    assert meminfo(text) == (24000000 * 1024, 12000000 * 1024)
    assert meminfo("") == (0, 0)


def test_the_best_model_that_meets_the_budget_and_fits_in_memory_wins() -> None:
    ram = (16 * GB, 12 * GB)
    fast = assess(MEMORIES, budget_ms=100_000, ram=ram, cores=2)
    assert fast.best is not None and fast.best.name == "gemma-4-e2b-it"
    # A tight budget: the 2B models are too slow at the reference speed, the 1B one is not.
    ref = fit.REFERENCE
    budget = int(ref["gemma-3-1b-it"].first_clause_ms()) + 1
    tight = assess(MEMORIES, budget_ms=budget, ram=ram, cores=2, measured_name="gemma-4-e2b-it",
                   measured=ref["gemma-4-e2b-it"])
    assert tight.best is not None and tight.best.name == "gemma-3-1b-it"
    # Little free memory rules the big ones out whatever their speed.
    small = assess(MEMORIES, budget_ms=100_000, ram=(4 * GB, int(1.5 * GB)), cores=2)
    assert small.best is not None and small.best.name == "gemma-3-270m-it"
    assert not small.candidates[0].fits_memory


def test_a_faster_measurement_scales_every_prediction() -> None:
    ref = fit.REFERENCE["gemma-2-2b-it"]
    slow = assess(MEMORIES, budget_ms=1200, ram=(16 * GB, 12 * GB), cores=2,
                  measured_name="gemma-2-2b-it", measured=ref)
    quick = assess(MEMORIES, budget_ms=1200, ram=(16 * GB, 12 * GB), cores=2,
                   measured_name="gemma-2-2b-it", measured=ref.scaled(4.0))
    for a, b in zip(slow.candidates, quick.candidates, strict=True):
        assert b.speed.first_clause_ms() == pytest.approx(a.speed.first_clause_ms() / 4)


def test_when_nothing_local_meets_the_budget_a_remote_target_is_the_plan(tmp_path) -> None:
    from edgevoice.config import LlmConfig

    entries = load_catalog(None).entries
    cfg = LlmConfig(first_audio_budget_ms=100)
    status, detail, fix = fit.recommend(None, cfg, tmp_path / "c.json", entries,
                                        remote_configured=False)
    assert status == "warn" and "no catalog model meets the budget" in detail
    assert "remote" in fix and "llm.policy: auto" in fix
    status, detail, _ = fit.recommend(None, LlmConfig(first_audio_budget_ms=100, policy="auto"),
                                      tmp_path / "c.json", entries, remote_configured=True)
    assert status == "ok" and "remote target leads" in detail


def test_an_installed_model_is_calibrated_once_and_cached(tmp_path, tiny_gemma4_gguf) -> None:
    from edgevoice.config import LlmConfig

    cache = tmp_path / "calibration.json"
    cfg = LlmConfig(threads=1, first_audio_budget_ms=60_000)
    status, detail, _ = fit.recommend(tiny_gemma4_gguf, cfg, cache,
                                      load_catalog(None).entries, remote_configured=False)
    assert status == "ok" and f"{tiny_gemma4_gguf.name} measured: prefill" in detail
    assert cache.is_file()
    first = json.loads(cache.read_text())
    fit.recommend(tiny_gemma4_gguf, cfg, cache, load_catalog(None).entries,
                  remote_configured=False)
    assert json.loads(cache.read_text()) == first  # the second run read the cache


def test_the_first_run_without_a_model_names_the_model_that_fits_the_budget(tmp_path,
                                                                              caplog) -> None:
    # Issue 15, item 4: the first `make run` without a model says which catalog model to pull:
    # the best one predicted to meet `llm.first_audio_budget_ms` here, from RAM and cores.
    import dataclasses
    import logging

    from edgevoice.agent.assemble import load_local
    from edgevoice.config import Config, Paths

    paths = Paths(models=tmp_path / "models", cache=tmp_path / "cache", logs=tmp_path / "logs")
    here = assess(fit.names_in(load_catalog(None).entries), budget_ms=10**9, ram=meminfo(),
                  cores=fit.usable_cores())
    fastest = min(here.candidates, key=lambda c: c.speed.first_clause_ms())
    best = next(c for c in here.candidates if c.fits_memory)

    def notice(budget_ms: int) -> str:
        cfg = Config()
        cfg = dataclasses.replace(cfg, llm=dataclasses.replace(cfg.llm,
                                                               first_audio_budget_ms=budget_ms))
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="edgevoice.agent.assemble"):
            assert load_local(cfg, paths, None) == {}
        (line,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        return line

    assert f"`edgevoice models pull {best.name}`" in notice(60000)
    tight = int(fastest.speed.first_clause_ms()) + 1  # only the fastest model meets it
    if fastest.name != best.name and fastest.fits_memory:
        line = notice(tight)
        assert f"`edgevoice models pull {fastest.name}`" in line and "edgevoice doctor" in line
