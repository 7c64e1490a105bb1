"""Speculative prefill: the local model reads the user's words while they are still talking.

On a 2B model with two cores, evaluating the new words of a prompt costs about as much as the
endpointer's hangover, and it used to start only after it. The ``Speculator`` hands every newer
partial transcript (and the one taken at a pause) to the model's ``prefill`` on the LLM worker
thread, so by the end of the utterance the KV cache holds most or all of the turn's prompt; the
turn then evaluates only what differs. Newer words supersede older ones that have not started;
one prefill runs at a time, on the same thread as the turns, so a turn never races a prefill.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Optional

log = logging.getLogger(__name__)

Prefill = Callable[[str, threading.Event], Optional[int]]


@dataclass
class _Round:
    """One utterance's speculation; ``report`` becomes the turn's ``speculation`` metrics."""

    latest: str
    lock: threading.Lock = field(default_factory=threading.Lock)
    cancel: threading.Event = field(default_factory=threading.Event)
    queued: bool = False
    closed: bool = False
    current: str = ""  # the words prefilled last (or being prefilled now); "" = none started
    first_started: Optional[float] = None
    done: str = ""  # the words of the last prefill that finished
    running: bool = False
    useless: bool = False  # a prefill declined: no local model can, or a remote will answer
    report: dict = field(default_factory=lambda: {"prefills": 0, "tokens": 0,
                                                  "prefill_ms": 0.0})


class Speculator:
    """Feed it words with ``heard`` (event loop); ``take`` when the utterance is final."""

    def __init__(self, prefill: Prefill, worker: Executor,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.prefill = prefill
        self.worker = worker
        self.clock = clock
        self._round: Optional[_Round] = None

    def heard(self, text: str) -> None:
        """The newest words of the current utterance (a partial, or the text at a pause)."""
        spec = self._round
        if spec is None:
            spec = self._round = _Round(text)
        with spec.lock:
            spec.latest = text
            if spec.queued:
                return  # the running job picks the newest words up when it is done
            spec.queued = True
        self.worker.submit(self._run, spec)

    def take(self, final: str, asr_final: float) -> Optional[dict]:
        """Close the round for the final transcript; the report (filled in by the worker as
        the last prefill ends), or None when nothing was speculated."""
        spec, self._round = self._round, None
        if spec is None:
            return None
        with spec.lock:
            spec.closed = True
            if not spec.current:  # none started: the turn evaluates the words as fast itself
                spec.cancel.set()
                return None
            if spec.useless:
                return None
            report = spec.report
            if spec.running and shared_words(spec.current, final) <= shared_words(spec.done,
                                                                                final):
                # The running prefill can't add a word of the final (the recognizer changed
                # its mind about its last words): stop it so the turn starts now.
                spec.cancel.set()
                report["stopped_stale"] = True
            report.update(heard=spec.current, matched=spec.current == final,
                          ahead_ms=round((asr_final - spec.first_started) * 1000, 1))
        return report

    def cancel(self) -> None:
        """Drop the round (barge-in off, shutdown): a running prefill stops soon."""
        spec, self._round = self._round, None
        if spec is not None:
            spec.cancel.set()

    def _run(self, spec: _Round) -> None:
        """On the LLM worker: prefill the newest words until they are all in, or the round
        closes."""
        while True:
            with spec.lock:
                text = spec.latest
                if spec.closed or spec.cancel.is_set() or text == spec.current:
                    spec.queued = False
                    return
                spec.running = True
                spec.current = text
                start = self.clock()
                if spec.first_started is None:
                    spec.first_started = start
            try:
                tokens = self.prefill(text, spec.cancel)
            finally:
                with spec.lock:
                    spec.running = False
            ms = (self.clock() - start) * 1000
            if tokens is None:  # nothing to prefill (no local model, or a remote will answer)
                with spec.lock:
                    spec.useless, spec.queued = True, False
                return
            with spec.lock:
                if not spec.cancel.is_set():
                    spec.done = text
                report = spec.report
                report["prefills"] += 1
                report["tokens"] += tokens
                report["prefill_ms"] = round(report["prefill_ms"] + ms, 1)
            log.debug("prefilled %r: %d tokens in %.0f ms", text, tokens, ms)


def shared_words(a: str, b: str) -> int:
    """How many leading words ``a`` and ``b`` have in common."""
    n = 0
    for x, y in zip(a.split(), b.split(), strict=False):
        if x != y:
            break
        n += 1
    return n
