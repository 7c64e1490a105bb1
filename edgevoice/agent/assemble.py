"""Build the agent's parts from config: targets, router, brain, synthesizer, input and output."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Optional

from edgevoice.config import Config, LlmConfig, Paths
from edgevoice.errors import ModelError, UserError
from edgevoice.llm.router import Router

log = logging.getLogger(__name__)

DEFAULT_GGUF = "gemma-4-E2B-it-Q4_K_M.gguf"  # the catalog's gemma-4-e2b-it (DEFAULT_LLM)
EARLIER_DEFAULT_GGUFS = ("gemma-2-2b-it-Q4_K_M.gguf",)
"""Used when the default is not there but an earlier release's default was downloaded."""
GET_MODEL_HINT = (
    "run `edgevoice models pull gemma-4-e2b-it` (3.1 GB, Apache-2.0) to get "
    f"{DEFAULT_GGUF} into {{models}}, or set `llm.model` / --llm-model to a .gguf file "
    "or a catalog name (`edgevoice models list`)"
)


def resolve_llm_model(llm: LlmConfig, paths: Paths, override: Optional[str]) -> Optional[Path]:
    """The GGUF to load, or None when there is none (the agent then answers intents only).

    A path that was asked for explicitly but is missing is an error only for `ask`-style
    one-shot use; the daemon warns and keeps running (see ``load_targets``).
    """
    name = override or llm.model
    if name:
        from edgevoice.modelstore.resolve import resolve_model

        return resolve_model(name, "llm", paths)  # a path, or a catalog name (never downloads)
    for name in (DEFAULT_GGUF, *EARLIER_DEFAULT_GGUFS):
        if (paths.models / name).is_file():
            return paths.models / name
    return None


def load_local(cfg: Config, paths: Paths, llm_model: Optional[str], *,
               require_model: bool = False, warn_missing: bool = True) -> dict:
    """The local target if a model is available. Missing model: warn (or raise when
    ``require_model``; only log at INFO when not ``warn_missing``); corrupt model: always a
    ``ModelError`` naming the file."""
    path = resolve_llm_model(cfg.llm, paths, llm_model)
    hint = GET_MODEL_HINT.format(models=paths.models)
    if path is None:
        # The notice a person reads is one short sentence; the details follow with -v.
        log.log(logging.WARNING if warn_missing else logging.INFO,
                "no language model: only the built-in intents (time, date, mute) are answered "
                "until you run %s", _first_pull(cfg.llm))
        log.info("no %s in %s; `llm.model` or --llm-model takes a .gguf file or a catalog "
                 "name (`edgevoice models list`)", DEFAULT_GGUF, paths.models)
        return {}
    if not path.exists():
        from edgevoice.modelstore.resolve import pull_hint

        pull = pull_hint(str(llm_model or cfg.llm.model or path), paths)
        message = f"language model {path} does not exist; {pull or hint}"
        if require_model:
            raise ModelError(message)
        log.warning("%s — only built-in intents are answered until then", message)
        return {}
    from edgevoice.llm.llama_target import LlamaCppTarget

    target = LlamaCppTarget(dataclasses.replace(cfg.llm, model=str(path)), name="local")
    return {"local": target}


def _first_pull(llm: LlmConfig) -> str:
    """`the pull command` for the catalog model that fits this machine (`edgevoice doctor`'s
    model-fit, from RAM and cores); the default model's if that cannot be worked out."""
    from edgevoice.agent.intents import GET_MODEL_COMMAND

    try:
        from edgevoice.llm.fit import PREFERENCE, first_model

        name = first_model(llm)
    except Exception:  # a start-up hint must never stop the agent
        log.debug("no model-fit estimate", exc_info=True)
        return f"`{GET_MODEL_COMMAND}`"
    if name == PREFERENCE[0]:
        return f"`{GET_MODEL_COMMAND}`"
    return f"`edgevoice models pull {name}` (what fits this machine: `edgevoice doctor`)"


def load_remotes(remotes: dict) -> dict:
    """One OpenAI-compatible target per configured remote (name -> RemoteConfig)."""
    from edgevoice.llm.openai_target import OpenAITarget

    return {name: OpenAITarget(rc, name=name) for name, rc in remotes.items()}


def remote_configs(cfg: Config, url: Optional[str], model: Optional[str]) -> dict:
    """Configured remotes plus the one given with --remote/--remote-model (named "remote")."""
    remotes = dict(getattr(cfg, "remotes", {}) or {})
    if url:
        from edgevoice.config import RemoteConfig

        if not model:
            raise UserError("--remote needs --remote-model NAME (the model id the server serves)")
        # Quick CLI remotes fold the system prompt into the first user turn: it works with every
        # chat template, and Gemma's (served by llama.cpp) rejects a system role outright.
        remotes["remote"] = RemoteConfig(base_url=url, model=model, fold_system_prompt=True)
    elif model:
        raise UserError("--remote-model needs --remote URL")
    return remotes


def make_router(cfg: Config, paths: Paths, llm_model: Optional[str], *,
                require_model: bool = False, remote_url: Optional[str] = None,
                remote_model: Optional[str] = None, policy: Optional[str] = None,
                warn_missing: bool = True) -> Router:
    """A router whose targets load on first use (`ask "what time is it"` loads no model).

    Under policy ``local`` remote targets are not even created: nothing leaves the machine.
    ``warn_missing=False``: no local model is no notice (a caller that reports the turn).
    """
    policy = policy or cfg.llm.policy
    remotes = remote_configs(cfg, remote_url, remote_model)
    if policy != "local" and not remotes:
        raise UserError(f"policy {policy} needs a remote target: add one under `remotes` in the "
                        "config or pass --remote URL --remote-model NAME")

    def load() -> dict:
        targets = {}
        if policy != "local":
            targets.update(load_remotes(remotes))
        need_local = require_model and policy == "local"
        targets.update(load_local(cfg, paths, llm_model, require_model=need_local,
                                  warn_missing=warn_missing))
        return targets

    return Router(load, policy, cfg.llm.first_audio_budget_ms,
                  hedge_after_ms=cfg.llm.hedge_after_ms)


def prepare_targets(router: Router, paths: Paths, *, calibrate_local: bool | None = None,
                    warn: bool = True) -> None:
    """Warm every target up before the first turn; calibrate local speed for `auto`.

    Remotes warm up in the background (nothing waits on the network at start-up); one that
    fails opens its circuit at once and the half-open probe brings it back later. ``warn=False``
    logs that only at INFO, for a caller that reports the turn's own failure (`edgevoice ask`:
    one sentence, not two).
    """
    from edgevoice.llm.protocol import TargetError

    router.warm_up_remotes(warn=warn)
    for name, target in router.targets.items():
        if target in router.remotes:
            continue
        try:
            target.warm_up()
        except TargetError as exc:
            said = str(exc) if str(exc).startswith(name) else f"{name}: {exc}"
            log.log(logging.WARNING if warn else logging.INFO,
                    "%s; turns go elsewhere until it answers", said)
            router.record_failure(target, exc)
    if calibrate_local is None:
        calibrate_local = router.policy == "auto"
    if calibrate_local and router.local is not None:
        from edgevoice.llm.calibrate import calibrate

        prefill, decode = calibrate(router.local, paths.cache / "calibration.json")
        estimate = router.estimate("local")
        estimate.prefill_tps.add(prefill)
        estimate.decode_tps.add(decode)
