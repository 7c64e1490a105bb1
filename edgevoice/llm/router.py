"""The accelerator abstraction's decision point: which ``ChatTarget`` answers this turn, and why.

This release routes between the local llama.cpp target and nothing (built-in intents only);
remote targets and latency-predicted routing plug in here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Optional

from edgevoice.llm.protocol import ChatTarget


@dataclass(frozen=True)
class Route:
    target: Optional[ChatTarget]
    reason: str

    @property
    def name(self) -> str:
        return self.target.name if self.target is not None else "none"


class Router:
    """Picks a target per turn from the configured ones and the policy."""

    def __init__(self, targets: dict[str, ChatTarget] | Callable[[], dict[str, ChatTarget]],
                 policy: str = "local") -> None:
        # A callable is loaded on first use, so a turn that needs no model never loads one.
        self._loader = targets if callable(targets) else None
        self._targets: Optional[dict[str, ChatTarget]] = None if callable(targets) else targets
        self.policy = policy

    @property
    def targets(self) -> dict[str, ChatTarget]:
        if self._targets is None:
            self._targets = self._loader()
        return self._targets

    def route(self) -> Route:
        local = self.targets.get("local")
        if local is not None:
            return Route(local, "local model (only target configured)")
        return Route(None, "no language model installed")

    def close(self) -> None:
        for target in (self._targets or {}).values():
            target.close()
