"""What to answer: built-in intents first, then the routed language model, with the history.

Synchronous and shared by `edgevoice ask` and the voice agent. ``llm_stream`` runs on the LLM
worker thread; everything else is cheap and runs wherever the caller is.
"""

from __future__ import annotations

import datetime as _dt
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Optional

from edgevoice.agent.intents import ANSWERS, NO_MODEL_REPLY, match_intent
from edgevoice.agent.turn import Turn
from edgevoice.config import LlmConfig
from edgevoice.llm.history import Conversation
from edgevoice.llm.router import Router

log = logging.getLogger(__name__)

MUTED_ACK = "Muted. Say unmute when you need me."
UNMUTED_ACK = "I'm listening."


@dataclass(frozen=True)
class Decision:
    """How a turn is answered: ``reply`` is fixed text (intents), or None to stream the LLM."""

    kind: str  # "intent" | "llm" | "ignore"
    target: str
    reason: str
    reply: Optional[str] = None
    intent: Optional[str] = None


class Brain:
    def __init__(self, router: Router, llm: LlmConfig,
                 now: Callable[[], _dt.datetime] = _dt.datetime.now) -> None:
        self.router = router
        self.llm = llm
        self.now = now
        self.muted = False
        self.last_reply = ""
        self._conversations: dict[str, Conversation] = {}

    def _conversation(self, target) -> Conversation:
        conv = self._conversations.get(target.name)
        if conv is None:
            count = getattr(target, "count_tokens", None) or _estimate_tokens
            n_ctx = getattr(target, "n_ctx", None) or self.llm.n_ctx
            budget = max(64, n_ctx - self.llm.max_tokens - 16)
            conv = Conversation(self.llm.system_prompt, budget, count)
            self._conversations[target.name] = conv
        return conv

    def decide(self, text: str) -> Decision:
        intent = match_intent(text)
        if self.muted and intent != "unmute":
            return Decision("ignore", "none", "muted: only 'unmute' is answered")
        if intent is not None:
            reply = self._intent_reply(intent)
            return Decision("intent", f"intent:{intent}", "built-in intent", reply, intent)
        route = self.router.route()
        if route.target is None:
            return Decision("intent", "none", route.reason, NO_MODEL_REPLY, None)
        return Decision("llm", route.name, route.reason)

    def _intent_reply(self, intent: str) -> str:
        if intent == "mute":
            self.muted = True
            return MUTED_ACK
        if intent == "unmute":
            self.muted = False
            return UNMUTED_ACK
        if intent == "stop":
            return ""
        if intent == "repeat":
            return self.last_reply or "I haven't said anything yet."
        return ANSWERS[intent](self.now())

    def llm_stream(self, turn: Turn) -> Iterator[str]:
        """Stream the routed target's reply deltas for ``turn`` (call on the LLM thread)."""
        route = self.router.route()
        if route.target is None:
            yield NO_MODEL_REPLY
            return
        conv = self._conversation(route.target)
        messages = conv.messages_for(turn.transcript)
        started = time.monotonic()
        for delta in route.target.stream(messages, turn.cancel):
            turn.metrics.mark("llm_first_token")
            yield delta
        stats = route.target.last_stats
        if stats is not None:
            if stats.first_token_ms is not None:  # the first token may carry no text
                turn.metrics.mark("llm_first_token", started + stats.first_token_ms / 1000)
            turn.metrics.prompt_tokens = stats.prompt_tokens
            turn.metrics.evaluated_tokens = stats.evaluated_tokens
            turn.metrics.completion_tokens = stats.completion_tokens

    def finish(self, turn: Turn, decision: Decision) -> None:
        """Record a finished or interrupted turn: history keeps only what was spoken."""
        if decision.kind == "ignore":
            return
        if decision.kind == "llm":
            route = self.router.route()
            if route.target is not None:
                # A whole reply is stored as generated (byte-identical to what is in the KV
                # cache, so the next turn reuses it); a cut one as the words actually played.
                said = turn.spoken if turn.interrupted else turn.reply
                self._conversation(route.target).commit(turn.transcript, said)
        if decision.intent != "repeat" and turn.spoken:
            self.last_reply = turn.spoken


def _estimate_tokens(messages: list[dict]) -> int:
    """About four characters a token: for targets that can't count exactly."""
    return sum(len(m.get("content", "")) // 4 + 4 for m in messages)
