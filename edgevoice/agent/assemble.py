"""Build the agent's parts from config: targets, router, brain, synthesizer, input and output."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Optional

from edgevoice.config import Config, LlmConfig, Paths
from edgevoice.errors import ModelError
from edgevoice.llm.router import Router

log = logging.getLogger(__name__)

DEFAULT_GGUF = "gemma-2-2b-it-Q4_K_M.gguf"
GET_MODEL_HINT = (
    f"download a Gemma 2 2B instruct GGUF ({DEFAULT_GGUF}, 1.7 GB) into {{models}} "
    "or set `llm.model` / --llm-model to a .gguf file"
)


def resolve_llm_model(llm: LlmConfig, paths: Paths, override: Optional[str]) -> Optional[Path]:
    """The GGUF to load, or None when there is none (the agent then answers intents only).

    A path that was asked for explicitly but is missing is an error only for `ask`-style
    one-shot use; the daemon warns and keeps running (see ``load_targets``).
    """
    name = override or llm.model
    if name:
        path = Path(name).expanduser()
        if not path.is_absolute() and not path.exists() and (paths.models / path).exists():
            path = paths.models / path
        return path
    default = paths.models / DEFAULT_GGUF
    return default if default.is_file() else None


def load_targets(cfg: Config, paths: Paths, llm_model: Optional[str], *,
                 require_model: bool = False) -> dict:
    """Load the local target if a model is available. Missing model: warn (or raise when
    ``require_model``); corrupt model: always a ``ModelError`` naming the file."""
    path = resolve_llm_model(cfg.llm, paths, llm_model)
    hint = GET_MODEL_HINT.format(models=paths.models)
    if path is None:
        log.warning("no language model: only built-in intents are answered; to talk freely, %s",
                    hint)
        return {}
    if not path.exists():
        message = f"language model {path} does not exist; {hint}"
        if require_model:
            raise ModelError(message)
        log.warning("%s — only built-in intents are answered until then", message)
        return {}
    from edgevoice.llm.llama_target import LlamaCppTarget

    target = LlamaCppTarget(dataclasses.replace(cfg.llm, model=str(path)), name="local")
    return {"local": target}


def make_router(cfg: Config, paths: Paths, llm_model: Optional[str], *,
                require_model: bool = False) -> Router:
    """A router whose targets load on first use (`ask "what time is it"` loads no model)."""
    return Router(lambda: load_targets(cfg, paths, llm_model, require_model=require_model))
