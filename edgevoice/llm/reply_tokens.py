"""The token ids each reply was generated as, so the next prompt can say the reply the same way.

A reply's text does not re-tokenize into the ids the model generated: a tokenizer picks one
segmentation of the text, the sampler picked another (a Gemma-sized model does so in most
replies; its random twin in every one), and the reply's leading space is dropped from the text.
Re-tokenized, the history then differs from the KV cache from the reply's first differing token
on, and every turn re-reads the reply and everything after it. So the local target records the
ids of what it generates, and where a later prompt holds that reply it puts those ids, not the
re-tokenized text (``LlamaCppTarget.prompt_tokens``): the KV cache's prefix survives the reply and
each turn evaluates only the template's framing and the new user words.

What the history says wins. A history reply is matched against the recorded ids piece by piece
(bytes as generated; leading whitespace, which the text drops, is ignored): the ids are used as
far as their text is exactly the history's, and the rest of the history's text is tokenized as
text. So a reply cut by a barge-in (the history keeps the words spoken) keeps the ids of the
spoken part; a reply whose text was changed (thought-channel markers stripped, whitespace
normalized) keeps the ids up to the first change. A token with no text (a control token such as a
channel marker) ends the match: the history does not show it, so the prompt must not hold it.

A history reply is resolved once and then always spliced the same way, so consecutive prompts
stay token prefixes of each other.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence

TokenBytes = Callable[[int], bytes]
Tokenize = Callable[[bytes], list[int]]

RECENT_REPLIES = 64
"""Generated replies remembered (a history rarely holds more within one context window)."""
RESOLVED_REPLIES = 1024
"""History replies whose ids are remembered once resolved (each a few hundred ints at most)."""


class ReplyTokens:
    """Recorded generations and, per history reply text, the ids a prompt puts for it.

    ``token_bytes`` gives a token's text as generated (empty for control tokens);
    ``tokenize_fragment`` tokenizes text that sits between other tokens (no BOS), or is None
    when the tokenizer cannot do that faithfully (one that adds a space prefix): then only a
    reply the ids cover completely is spliced. Thread-safe: the worker records while another
    thread may price a prompt.
    """

    def __init__(self, token_bytes: TokenBytes, tokenize_fragment: Tokenize | None) -> None:
        self._bytes = token_bytes
        self._tokenize = tokenize_fragment
        self._lock = threading.Lock()
        self._recent: deque[list[int]] = deque(maxlen=RECENT_REPLIES)
        self._resolved: OrderedDict[str, tuple[int, ...] | None] = OrderedDict()

    def __bool__(self) -> bool:
        return bool(self._recent) or bool(self._resolved)

    def start(self, prefix: Sequence[int] = ()) -> list[int]:
        """A new generation: the returned list is remembered; append each token as sampled."""
        ids = list(prefix)
        with self._lock:
            self._recent.append(ids)
        return ids

    def clear(self) -> None:
        with self._lock:
            self._recent.clear()
            self._resolved.clear()

    def ids_for(self, reply: str) -> tuple[int, ...] | None:
        """The ids to put in a prompt for the history reply ``reply`` (as the template renders
        it), or None to tokenize it as text. The first answer for a text is kept for good."""
        with self._lock:
            if reply in self._resolved:
                self._resolved.move_to_end(reply)
                return self._resolved[reply]
            candidates = [list(ids) for ids in reversed(self._recent)]
        ids = self._resolve(reply, candidates)
        with self._lock:
            self._resolved.setdefault(reply, ids)
            while len(self._resolved) > RESOLVED_REPLIES:
                self._resolved.popitem(last=False)
            return self._resolved[reply]

    def _resolve(self, reply: str, candidates: list[list[int]]) -> tuple[int, ...] | None:
        # The reply's own leading whitespace, if the template keeps any, is said by the ids'.
        body = reply.encode("utf-8").lstrip()
        if not body:
            return None
        best: tuple[int, list[int]] | None = None  # (bytes covered, ids), newest first wins ties
        for generated in candidates:
            covered, used = self._match(generated, body)
            if used and (best is None or covered > best[0]):
                best = (covered, generated[:used])
                if covered == len(body):
                    break
        if best is None:
            return None
        covered, ids = best
        if covered < len(body):
            if self._tokenize is None:
                return None
            ids = ids + self._tokenize(body[covered:])
        return tuple(ids)

    def _match(self, generated: list[int], body: bytes) -> tuple[int, int]:
        """How many bytes of ``body`` the longest usable start of ``generated`` says exactly,
        and how many ids that takes. Never ends inside a UTF-8 character of ``body``."""
        covered = used = 0
        ends: list[tuple[int, int]] = [(0, 0)]  # (covered, used) after each whole piece
        started = False
        for token in generated:
            piece = self._bytes(token)
            if not piece:
                break  # a token with no text: the history cannot show it
            if not started:
                piece = piece.lstrip()
                if not piece:  # leading whitespace, dropped from the text
                    used += 1
                    continue
                started = True
            if not body.startswith(piece, covered):
                break
            covered += len(piece)
            used += 1
            ends.append((covered, used))
        while 0 < ends[-1][0] < len(body) and body[ends[-1][0]] & 0xC0 == 0x80:
            ends.pop()  # the next byte continues a character: back off to its start
        covered, used = ends[-1]
        return (covered, used) if covered else (0, 0)
