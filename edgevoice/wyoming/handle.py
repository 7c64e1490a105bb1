"""The `handle` service: Home Assistant's conversation agent is our Brain.

Each Home Assistant conversation id gets its own ``Brain`` (its own bounded history and mute
state) over the one shared router, so two rooms talking at once never see each other's turns;
the least recently used conversation is forgotten past ``wyoming.conversations``. Every answer is
computed on the one LLM thread (a llama.cpp model is not thread-safe).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import OrderedDict
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Optional

from edgevoice.agent.brain import Brain
from edgevoice.agent.turn import Turn
from edgevoice.config import LlmConfig
from edgevoice.llm.router import Router

log = logging.getLogger(__name__)

ANONYMOUS = ""  # the conversation of clients that send no id


@dataclass(frozen=True)
class Answer:
    text: str
    target: str  # "intent:time", "local", "remote", "none"
    first_token_ms: Optional[float]
    total_ms: float


class Conversations:
    """Brains by conversation id, least recently used first out."""

    def __init__(self, router: Router, llm: LlmConfig, limit: int) -> None:
        self.router = router
        self.llm = llm
        self.limit = limit
        self._brains: OrderedDict[str, Brain] = OrderedDict()
        self._lock = threading.Lock()  # brains are looked up on the LLM thread

    def __len__(self) -> int:
        return len(self._brains)

    def __contains__(self, conversation_id: str) -> bool:
        return conversation_id in self._brains

    def brain(self, conversation_id: str) -> Brain:
        with self._lock:
            brain = self._brains.get(conversation_id)
            if brain is None:
                brain = Brain(self.router, self.llm)
                self._brains[conversation_id] = brain
                while len(self._brains) > self.limit:
                    forgotten, _ = self._brains.popitem(last=False)
                    log.debug("forgot Wyoming conversation %r (wyoming.conversations)",
                              forgotten)
            else:
                self._brains.move_to_end(conversation_id)
            return brain

    def answer(self, conversation_id: str, text: str, cancel: threading.Event) -> Answer:
        """Intents, else the routed model (failover included); blocking, on the LLM thread."""
        started = time.monotonic()
        brain = self.brain(conversation_id)
        turn = Turn(text)
        turn.cancel = cancel
        turn.metrics.speech_end = started
        decision = brain.decide(text)
        turn.metrics.target = decision.target
        first = None
        if decision.kind == "ignore":
            reply = ""
        elif decision.reply is not None:
            reply = decision.reply
        else:
            parts = []
            for delta in brain.llm_stream(turn):
                if first is None:
                    first = (time.monotonic() - started) * 1000
                parts.append(delta)
                if cancel.is_set():
                    turn.interrupted = True
                    break
            reply = "".join(parts)
        turn.reply = turn.spoken = reply
        brain.finish(turn, decision)
        return Answer(reply.strip(), turn.metrics.target or decision.target, first,
                      (time.monotonic() - started) * 1000)

    async def ask(self, conversation_id: str, text: str, thread: Executor) -> Answer:
        """``answer`` on ``thread``; a cancelled caller (the client left) stops the model."""
        cancel = threading.Event()
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(thread, self.answer, conversation_id, text, cancel)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            cancel.set()
            raise
