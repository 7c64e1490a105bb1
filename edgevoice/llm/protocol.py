"""What every chat target (local llama.cpp, remote OpenAI-compatible) offers the agent and router.

Targets are synchronous and single-threaded on purpose: each lives on its own worker thread and
its ``stream`` generator is advanced there, never on the event loop. Cancellation is a
``threading.Event`` because it is set from the loop while the worker is inside native code.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

Message = dict[str, str]
"""One chat message: ``{"role": "system" | "user" | "assistant", "content": text}``."""

FinishReason = Literal["stop", "length", "cancelled", "error"]


class TargetError(RuntimeError):
    """A target failed while answering (not the caller's fault): the router fails over on it."""


@dataclass(frozen=True)
class TargetInfo:
    """What a target is and where it runs, declared as data (for `targets`, routing and logs)."""

    name: str
    kind: str  # "local" | "openai"
    model: str
    device: str  # "cpu" | "gpu" | "remote"
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class StreamStats:
    """Token accounting and timing of one ``stream`` call, for metrics and latency prediction.

    ``first_token_ms`` is from the call to the first generated token (the prefill time, which the
    router predicts from ``evaluated_tokens``); ``cached_tokens`` were reused from the KV cache.
    """

    prompt_tokens: int
    cached_tokens: int
    evaluated_tokens: int
    completion_tokens: int
    first_token_ms: float | None
    total_ms: float
    finish_reason: FinishReason

    @property
    def tokens_per_s(self) -> float | None:
        """Decode speed after the first token (None when there is nothing to measure)."""
        if self.first_token_ms is None or self.completion_tokens < 2:
            return None
        decode_ms = self.total_ms - self.first_token_ms
        return (self.completion_tokens - 1) * 1000.0 / decode_ms if decode_ms > 0 else None


@runtime_checkable
class ChatTarget(Protocol):
    """A language model that streams a reply to a chat, cancellably."""

    name: str

    def stream(self, messages: list[Message], cancel: threading.Event) -> Iterator[str]:
        """Yield the reply as text deltas, lazily; stop soon after ``cancel`` is set.

        The work happens while the iterator is advanced (on the caller's worker thread). After it
        ends, ``last_stats`` describes the call. Raises ``TargetError`` when the target fails.
        """
        ...

    def describe(self) -> TargetInfo: ...

    @property
    def last_stats(self) -> StreamStats | None:
        """Stats of the most recent finished ``stream`` call (None before the first)."""
        ...

    def warm_up(self) -> None:
        """Do the start-up work that would otherwise land on the first turn."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class PromptCost:
    """How much of a prompt a prefix-caching target would have to evaluate right now."""

    prompt_tokens: int
    cached_tokens: int

    @property
    def evaluated_tokens(self) -> int:
        return self.prompt_tokens - self.cached_tokens


@runtime_checkable
class PrefixCachingTarget(ChatTarget, Protocol):
    """A target that keeps a KV cache: it can count tokens and price a prompt before running it."""

    def count_tokens(self, messages: list[Message]) -> int: ...

    def prompt_cost(self, messages: list[Message]) -> PromptCost: ...
