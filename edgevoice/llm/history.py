"""The conversation history, kept append-only so each prompt extends the previous one.

llama.cpp reuses the KV cache for the longest common token prefix of consecutive prompts. A
history that only ever appends (system prompt, then user/assistant pairs, then the new user
turn) makes turn N+1's prompt start with turn N's prompt byte for byte, so only the new words
are evaluated. Two things break that and are therefore rare and deliberate here:

* Trimming. When a prompt would not fit, the oldest pairs are dropped — and everything after
  the system prompt must be evaluated again. So we trim with hysteresis: down to ``trim_to`` of
  the budget, not just one pair, so the full re-evaluation happens once in a while instead of
  on every turn once the window is full.
* Editing the past. Never done: a committed turn is stored exactly as it was prompted (a
  too-long user text stays truncated the same way in later prompts).

A reply is stored as text (what was said; for a cut reply, the words spoken). Its text does not
re-tokenize into the ids the model generated, so the local target puts those ids back where the
reply's text is (``edgevoice.llm.reply_tokens``): the KV cache's prefix survives the reply.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from edgevoice.errors import ConfigError
from edgevoice.llm.protocol import Message

log = logging.getLogger(__name__)

EMPTY_REPLY = "…"
"""Stored for an assistant turn that was cancelled before a word was spoken.

Keeping the pair (rather than dropping it) keeps what the user said in context — after a
barge-in the next utterance often continues it — and keeps roles alternating, which Gemma's
template enforces. An ellipsis tells the model it said nothing, without inventing words.
"""

TRUNCATION_MARK = "… "

CountTokens = Callable[[list[Message]], int]


class Conversation:
    """System prompt plus alternating user/assistant pairs, fitted to a token budget.

    ``count_tokens`` prices a message list as the target will see it (for llama.cpp: the
    template-rendered prompt, tokenized). ``max_prompt_tokens`` is what the prompt may use:
    the context window minus the reply's ``max_tokens`` and a small margin.
    """

    def __init__(
        self,
        system_prompt: str,
        max_prompt_tokens: int,
        count_tokens: CountTokens,
        *,
        trim_to: float = 0.75,
    ) -> None:
        if not 0.0 < trim_to <= 1.0:
            raise ValueError("trim_to must be in (0, 1]")
        self.system_prompt = system_prompt
        self.max_prompt_tokens = max_prompt_tokens
        self._count = count_tokens
        self._trim_to = trim_to
        self._pairs: list[tuple[str, str]] = []
        self._fitted: dict[str, str] = {}  # user text as given -> as it was put in the prompt
        base = self._count(self._messages([], ""))
        if base >= max_prompt_tokens:
            raise ConfigError(
                f"the system prompt takes {base} tokens but only {max_prompt_tokens} fit before "
                "the reply: shorten `llm.system_prompt`, raise `llm.n_ctx` or lower "
                "`llm.max_tokens`")

    @property
    def pairs(self) -> tuple[tuple[str, str], ...]:
        """The committed (user, assistant) turns, oldest first."""
        return tuple(self._pairs)

    def clear(self) -> None:
        self._pairs.clear()
        self._fitted.clear()

    def _messages(self, pairs: list[tuple[str, str]], user_text: str) -> list[Message]:
        out: list[Message] = []
        if self.system_prompt:
            out.append({"role": "system", "content": self.system_prompt})
        for user, assistant in pairs:
            out.append({"role": "user", "content": user})
            out.append({"role": "assistant", "content": assistant})
        out.append({"role": "user", "content": user_text})
        return out

    def messages_for(self, user_text: str) -> list[Message]:
        """The prompt messages for a new user turn: system, history, then ``user_text``.

        Drops the oldest pairs when needed (see the module docstring) and, when even the new
        text alone is too long, keeps its end — the last words, where a spoken question lands.
        """
        messages = self._messages(self._pairs, user_text)
        if self._count(messages) <= self.max_prompt_tokens:
            return messages
        if self._pairs:
            self._trim(user_text)
            messages = self._messages(self._pairs, user_text)
            if self._count(messages) <= self.max_prompt_tokens:
                return messages
        fitted = self._truncate(user_text)
        self._fitted[user_text] = fitted
        return self._messages(self._pairs, fitted)

    def _trim(self, user_text: str) -> None:
        """Drop oldest pairs until the prompt is at most ``trim_to`` of the budget."""
        low_water = int(self.max_prompt_tokens * self._trim_to)
        dropped = 0
        while self._pairs:
            self._pairs.pop(0)
            dropped += 1
            if self._count(self._messages(self._pairs, user_text)) <= low_water:
                break
        log.info("history trimmed: dropped the %d oldest turns, %d kept", dropped,
                 len(self._pairs))

    def _truncate(self, user_text: str) -> str:
        """The longest tail of ``user_text`` (marked as cut) whose prompt fits; binary search."""
        lo, hi = 0, len(user_text)  # number of characters kept from the end
        while lo < hi:
            mid = (lo + hi + 1) // 2
            candidate = TRUNCATION_MARK + user_text[-mid:]
            if self._count(self._messages(self._pairs, candidate)) <= self.max_prompt_tokens:
                lo = mid
            else:
                hi = mid - 1
        log.warning("user text of %d characters truncated to its last %d to fit the context",
                    len(user_text), lo)
        return TRUNCATION_MARK + user_text[-lo:] if lo else TRUNCATION_MARK.strip()

    def commit(self, user_text: str, assistant_text: str) -> None:
        """Record a finished turn: ``assistant_text`` is what was actually said (maybe cut).

        ``user_text`` is the text given to ``messages_for`` (stored as it was prompted). An
        empty or blank reply is stored as ``EMPTY_REPLY`` so roles keep alternating.
        """
        user = self._fitted.pop(user_text, user_text)
        self._fitted.clear()
        reply = assistant_text if assistant_text.strip() else EMPTY_REPLY
        self._pairs.append((user, reply))
