"""What to answer: built-in intents first, then the routed language model, with the history.

Synchronous and shared by `edgevoice ask` and the voice agent. ``llm_stream`` runs on the LLM
worker thread; everything else is cheap and runs wherever the caller is.
"""

from __future__ import annotations

import datetime as _dt
import inspect
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Optional

from edgevoice.agent.intents import ANSWERS, GET_MODEL_COMMAND, NO_MODEL_REPLY, match_intent
from edgevoice.agent.turn import Turn
from edgevoice.config import LlmConfig
from edgevoice.llm.history import Conversation
from edgevoice.llm.protocol import TargetError
from edgevoice.llm.router import Router

log = logging.getLogger(__name__)

MUTED_ACK = "Muted. Say unmute when you need me."
UNMUTED_ACK = "I'm listening."
NO_ANSWER_APOLOGY = "Sorry, I can't reach a language model right now."


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
                 now: Callable[[], _dt.datetime] = _dt.datetime.now, *,
                 apology: Optional[str] = NO_ANSWER_APOLOGY) -> None:
        self.router = router
        self.llm = llm
        self.now = now
        # Said (and the failure logged) when no target answers; None: say nothing and leave the
        # report to the caller, which reads ``turn.metrics.error`` (`edgevoice ask` does).
        self.apology = apology
        self.muted = False
        self.last_reply = ""
        self._conversation: Optional[Conversation] = None

    @property
    def conversation(self) -> Conversation:
        """One history whoever answers; sized and counted by the local model when there is one,
        so its KV cache keeps the common prefix across turns."""
        if self._conversation is None:
            local = self.router.local
            count = getattr(local, "count_tokens", None) or _estimate_tokens
            n_ctx = getattr(local, "n_ctx", None) or self.llm.n_ctx
            budget = max(64, n_ctx - self.llm.max_tokens - 16)
            self._conversation = Conversation(self.llm.system_prompt, budget, count)
        return self._conversation

    def decide(self, text: str) -> Decision:
        """Cheap and network-free (runs on the event loop): intents, or "ask a model"."""
        intent = match_intent(text)
        if self.muted and intent != "unmute":
            return Decision("ignore", "none", "muted: only 'unmute' is answered")
        if intent is not None:
            reply = self._intent_reply(intent)
            return Decision("intent", f"intent:{intent}", "built-in intent", reply, intent)
        if not self.router.has_targets:
            return Decision("intent", "none", "no language model installed", NO_MODEL_REPLY)
        return Decision("llm", "", "")

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

    def wants_llm(self, text: str) -> bool:
        """Whether ``decide(text)`` would ask a model (no side effects: safe for speculation)."""
        return not self.muted and match_intent(text) is None and self.router.has_targets

    def prefill(self, text: str, cancel: threading.Event) -> Optional[int]:
        """Prefill the local model with the prompt for ``text`` (LLM worker thread): words heard
        while the user is still talking, so the turn that follows evaluates only what differs.
        None when there is nothing to prefill (no local model that can, or a remote will
        answer)."""
        local = self.router.local
        if local is None or not hasattr(local, "prefill"):
            return None
        try:
            messages = self.conversation.messages_for(text)
            if not self.router.expects_local(messages):
                return None  # a remote will answer: keep the worker free for it
            return local.prefill(messages, cancel)
        except (TargetError, ValueError) as exc:  # the turn itself will report a real failure
            log.debug("speculative prefill failed: %s", exc)
            return None

    def llm_stream(self, turn: Turn) -> Iterator[str]:
        """Route ``turn`` and stream its reply deltas (call on the LLM worker thread: routing may
        probe the network). A target that fails is cancelled and the turn continues on the next
        one; text already produced is not repeated (the local model continues after it).

        When no target answers (all failed, or every remote is down and there is no local
        model) ``turn.metrics.error`` says why in one sentence with the fix, the target is
        "none", and the brain's ``apology`` is said (the failure then logged once)."""
        metrics = turn.metrics
        messages = self.conversation.messages_for(turn.transcript)
        route = self.router.route(messages)
        metrics.target, metrics.route_reason = route.name, route.reason
        failures: list[tuple[str, str]] = []  # (target, why), in the order they failed
        if route.target is None:
            if not self.router.remotes:
                yield NO_MODEL_REPLY
                return
            failures = [(t.name, self.router.breaker(t.name).last_error or "not reachable")
                        for t in self.router.remotes]
        produced = ""
        candidates = [route.target, *route.fallbacks] if route.target is not None else []
        for i, target in enumerate(candidates):
            if i > 0:
                if produced and not _can_continue(target):
                    continue
                metrics.target = target.name
            started = time.monotonic()
            try:
                stream = (target.stream(messages, turn.cancel, reply_prefix=produced)
                          if produced else target.stream(messages, turn.cancel))
                for delta in stream:
                    metrics.mark("llm_first_token")
                    if metrics.failover and "first_token_after_ms" not in metrics.failover:
                        metrics.failover["first_token_after_ms"] = round(
                            (time.monotonic() - metrics.failover["at"]) * 1000, 1)
                    produced += delta
                    yield delta
            except TargetError as exc:
                _copy_hedge(target, metrics)
                self.router.record_failure(target, exc)
                if turn.cancel.is_set():
                    return
                said = str(exc) if str(exc).startswith(target.name) else f"{target.name}: {exc}"
                failures.append((target.name, said))
                later = [t for t in candidates[i + 1:] if not produced or _can_continue(t)]
                if later:  # one notice per failover; a last failure is reported below, once
                    log.warning("%s; continuing the turn on %s", said, later[0].name)
                else:
                    log.info("%s failed: %s", target.name, exc)
                metrics.failover = {"from": target.name, "reason": str(exc),
                                    "at": time.monotonic(), "after_chars": len(produced)}
                metrics.route_reason += f"; {target.name} failed ({exc})"
                continue
            stats = target.last_stats
            _copy_hedge(target, metrics)
            self.router.record_success(target, stats)
            if stats is not None:
                if stats.first_token_ms is not None:  # the first token may carry no text
                    metrics.mark("llm_first_token", started + stats.first_token_ms / 1000)
                metrics.prompt_tokens = stats.prompt_tokens
                metrics.evaluated_tokens = stats.evaluated_tokens
                metrics.completion_tokens = stats.completion_tokens
            if metrics.failover:
                metrics.failover["to"] = target.name
            return
        metrics.error = _no_answer_message(failures, produced, has_local=self.router.local
                                           is not None)
        if not produced:
            metrics.target = "none"  # nobody answered: nothing goes into the history
        if self.apology is None:
            return
        log.error("%s", metrics.error)
        if not produced:
            yield self.apology

    def finish(self, turn: Turn, decision: Decision) -> None:
        """Record a finished or interrupted turn: history keeps only what was spoken."""
        if decision.kind == "ignore":
            return
        if decision.kind == "llm" and turn.metrics.target not in ("", "none"):
            # A whole reply is stored as generated (byte-identical to what is in the KV cache,
            # so the next turn reuses it); a cut one as the words actually played.
            said = turn.spoken if turn.interrupted else turn.reply
            self.conversation.commit(turn.transcript, said)
        if decision.intent != "repeat" and turn.spoken:
            self.last_reply = turn.spoken


def _no_answer_message(failures: list[tuple[str, str]], produced: str, *,
                       has_local: bool) -> str:
    """One sentence: what failed (remote errors already name their URL) and what to do."""
    what = "; ".join(why for _name, why in failures) or "no target was tried"
    head = "the answer was cut off" if produced else "no language model answered"
    fixes = []
    if any("://" in why for _name, why in failures):
        fixes.append("check that the server is running and its URL is right")
    if not has_local:
        fixes.append(f"install a local model with `{GET_MODEL_COMMAND}`")
    fix = f"; {', or '.join(fixes)}" if fixes else ""
    return f"{head}: {what}{fix}"


def _copy_hedge(target, metrics) -> None:
    """A hedged remote turn (llm/hedge.py): the winner answered it; the event says by how much."""
    outcome = getattr(target, "outcome", None)
    if outcome is not None:
        metrics.target, metrics.hedge = outcome.winner, outcome.as_dict()


def _can_continue(target) -> bool:
    """Only targets that take a reply prefix can pick up a half-spoken answer."""
    return "reply_prefix" in inspect.signature(target.stream).parameters


def _estimate_tokens(messages: list[dict]) -> int:
    """About four characters a token: for targets that can't count exactly."""
    return sum(len(m.get("content", "")) // 4 + 4 for m in messages)
