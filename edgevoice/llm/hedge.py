"""Hedged offload: a remote that is late with its first clause is raced by the local model.

The remote streams on a thread of its own; the caller's thread (the LLM worker, the only one
that may drive llama.cpp) waits for it until ``after_ms``, then starts the local model on the
same messages. Whichever delivers a first clause first (a clause boundary, enough words, or a
complete short answer) wins the turn: its text is yielded from the start, the other is
cancelled at once (the remote's HTTP stream is shut down by its watchdog, llama.cpp is aborted
mid-prefill through its cancel event) and nothing it produced is ever yielded, so nothing is
said twice. Before the decision nothing is yielded at all: a first clause is what the speaker
waits for anyway, so buffering up to it costs no latency.

A target that fails before the decision just leaves the race (the other continues alone, the
local model starting at once); a failure after it is raised, as from any target, and the
caller's failover continues the answer. ``outcome`` records who won and by how much.
"""

from __future__ import annotations

import logging
import queue
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Optional

from edgevoice.llm.protocol import ChatTarget, Message, StreamStats, TargetError, TargetInfo
from edgevoice.llm.safe_text import for_log
from edgevoice.tts.clauses import SPACELESS, WIDE_SENTENCE_END

log = logging.getLogger(__name__)

HEDGE_UNKNOWN_MS = 200.0
"""Hedge delay under ``remote`` before anything was measured (a LAN CS-3's first clause)."""
HEDGE_MARGIN_MS = 150.0
CLAUSE_WORDS = 6  # a first clause without punctuation: this many complete words
CLAUSE_CHARS = 80  # ... or this much text (a speaker cuts a run-on first clause there too)
_SENTENCE_END = re.compile(r"[.!?]+[\"')\]]*\s")
_CLAUSE_END = re.compile(r"[,;:\u2014\u2013]\s")


def derive_hedge_after_ms(predicted_ms: Optional[float], configured_ms: Optional[float], *,
                          race_when_unknown: bool) -> float:
    """``llm.hedge_after_ms`` when set; else max(2x predicted, predicted + 150 ms) from the
    remote's first-clause estimate; with no estimate, 0 (race at once, ``auto``) or 200 ms."""
    if configured_ms is not None:
        return float(configured_ms)
    if predicted_ms is None:
        return 0.0 if race_when_unknown else HEDGE_UNKNOWN_MS
    return max(2.0 * predicted_ms, predicted_ms + HEDGE_MARGIN_MS)


def clause_ready(text: str) -> bool:
    """Whether ``text`` (the start of a reply) holds a first clause a speaker could start on."""
    if not text.strip():
        return False
    if _SENTENCE_END.search(text) or WIDE_SENTENCE_END.search(text):
        return True
    if len(SPACELESS.findall(text)) >= 2 * CLAUSE_WORDS:  # a word is ~2 such characters
        return True
    words = re.findall(r"\S+(?=\s)", text)  # complete words only
    if len(words) >= 3 and _CLAUSE_END.search(text):
        return True
    return len(words) >= CLAUSE_WORDS or len(text.strip()) >= CLAUSE_CHARS


class LinkedEvent(threading.Event):
    """Set when itself or its parent is: one racer's cancel inside the turn's cancel."""

    POLL_S = 0.01

    def __init__(self, parent: threading.Event) -> None:
        super().__init__()
        self._parent = parent

    def is_set(self) -> bool:
        return super().is_set() or self._parent.is_set()

    def wait(self, timeout: Optional[float] = None) -> bool:
        end = None if timeout is None else time.monotonic() + timeout
        while not self.is_set():
            step = self.POLL_S if end is None else min(self.POLL_S, end - time.monotonic())
            if step <= 0:
                return self.is_set()
            super().wait(step)
        return True


@dataclass
class HedgeOutcome:
    """Who answered a hedged turn, for the turn event. Times are ms from the turn's request.

    ``won_by_ms`` is how much earlier the winner's first clause came than the loser's was
    predicted to (the loser is cancelled, so its real time is never known); None without an
    estimate or when the loser failed.
    """

    winner: str
    loser: str
    hedge_after_ms: float
    hedged_at_ms: Optional[float]  # when the local model started (None: it never had to)
    first_clause_ms: Optional[float]
    loser_state: str  # "cancelled" | "failed" | "not started"
    loser_ran_ms: Optional[float]
    loser_tokens: int
    won_by_ms: Optional[float]
    loser_error: Optional[str] = None

    def as_dict(self) -> dict:
        return {k: (round(v, 1) if isinstance(v, float) else v)
                for k, v in asdict(self).items() if v is not None}


class _Race:
    """The shared state of one hedged stream (guarded by ``lock``)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.winner: Optional[ChatTarget] = None
        self.decided_at: Optional[float] = None
        self.remote_tokens = 0
        self.local_tokens = 0


class HedgedTarget:
    """A ``ChatTarget`` answering from ``primary`` (a remote), raced by ``backup`` (the local
    model) when the primary's first clause is later than ``after_ms``."""

    def __init__(self, primary: ChatTarget, backup: ChatTarget, after_ms: float, *,
                 predicted_ms: Optional[dict[str, Optional[float]]] = None,
                 record_failure: Optional[Callable[[ChatTarget, Exception], None]] = None,
                 clause: Callable[[str], bool] = clause_ready) -> None:
        self.primary = primary
        self.backup = backup
        self.after_ms = after_ms
        self._predicted = predicted_ms or {}
        self._record_failure = record_failure
        self._clause = clause
        self.outcome: Optional[HedgeOutcome] = None
        self._settled: Optional[ChatTarget] = None
        self._stats: Optional[StreamStats] = None

    @property
    def name(self) -> str:
        """The winner's name once decided (before: the primary's)."""
        return (self._settled or self.primary).name

    @property
    def settled(self) -> ChatTarget:
        """The target this turn's success or failure belongs to."""
        return self._settled or self.primary

    @property
    def last_stats(self) -> Optional[StreamStats]:
        return self._stats

    def describe(self) -> TargetInfo:
        return self.primary.describe()

    def warm_up(self) -> None:
        """Nothing of its own: the router warms the two targets up."""

    def close(self) -> None:
        """Nothing of its own: the router closes the two targets."""

    def stream(self, messages: list[Message], cancel: threading.Event) -> Iterator[str]:
        """See ``ChatTarget.stream``; call on the thread that owns ``backup``."""
        self.outcome, self._settled, self._stats = None, None, None
        return self._stream(messages, cancel)

    # -- the race ------------------------------------------------------------------------------

    def _stream(self, messages: list[Message], cancel: threading.Event) -> Iterator[str]:
        primary, backup = self.primary, self.backup
        t0 = time.monotonic()
        race = _Race()
        items: queue.Queue[tuple[str, object]] = queue.Queue()
        remote_cancel, local_cancel = LinkedEvent(cancel), LinkedEvent(cancel)

        def claim(who: ChatTarget) -> bool:
            with race.lock:
                if race.winner is None:
                    race.winner, race.decided_at = who, time.monotonic()
                    (local_cancel if who is primary else remote_cancel).set()
                return race.winner is who

        def run_remote() -> None:
            text = ""
            try:
                for delta in primary.stream(messages, remote_cancel):
                    text += delta
                    race.remote_tokens += 1
                    items.put(("delta", delta))
                    if race.winner is None and self._clause(text):
                        claim(primary)
                stats = primary.last_stats
                if not remote_cancel.is_set() and (stats is None or stats.finish_reason in
                                                   ("stop", "length")):
                    claim(primary)  # a complete answer, however short
                items.put(("end", None))
            except TargetError as exc:
                items.put(("error", exc))
            except Exception as exc:  # a bug in a target must not hang the turn
                log.debug("%s: unexpected error in a hedged stream", primary.name, exc_info=True)
                items.put(("error", TargetError(f"{primary.name}: {exc.__class__.__name__}")))

        thread = threading.Thread(target=run_remote, name=f"hedge-{primary.name}", daemon=True)
        thread.start()
        remote_text: list[str] = []
        remote_end = ""  # "end" | "error" once the remote thread is done
        errors: dict[str, TargetError] = {}  # "remote" / "local": failed before the decision
        lost: set[str] = set()  # of those, the ones already recorded (the last one is raised)
        local_started: Optional[float] = None
        local_text: list[str] = []
        local_iter: Optional[Iterator[str]] = None

        def take(item: tuple[str, object]) -> None:
            nonlocal remote_end
            kind, value = item
            if kind == "delta":
                remote_text.append(str(value))
                return
            remote_end = kind
            if kind == "error":
                assert isinstance(value, TargetError)
                if race.winner is primary:
                    errors["after"] = value  # the winner failed mid-answer: raised below
                else:
                    errors["remote"] = value
                    if "local" not in errors:
                        lost.add("remote")
                        self._lost(primary, value, backup)

        def poll(timeout: float) -> None:
            try:
                take(items.get(timeout=timeout) if timeout > 0 else items.get_nowait())
            except queue.Empty:
                pass

        try:
            # 1. The remote alone, until it wins, fails, or is late.
            deadline = t0 + self.after_ms / 1000.0
            while race.winner is None and not remote_end and not cancel.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                poll(min(left, 0.05))
            # 2. The local model joins (on this thread), unless the remote already won.
            if race.winner is None and not cancel.is_set():
                local_started = time.monotonic()
                if not remote_end:
                    log.info("%s: no first clause after %.0f ms; %s races it", primary.name,
                             (local_started - t0) * 1000, backup.name)
                try:
                    local_iter = iter(backup.stream(messages, local_cancel))
                    for delta in local_iter:
                        race.local_tokens += 1
                        local_text.append(delta)
                        while not remote_end and not items.empty():
                            poll(0)
                        if race.winner is primary or (
                                self._clause("".join(local_text)) and claim(backup)):
                            break
                    else:
                        stats = backup.last_stats
                        if not local_cancel.is_set() and (
                                stats is None or stats.finish_reason in ("stop", "length")):
                            claim(backup)
                except TargetError as exc:
                    if race.winner is backup:
                        self._settled = backup
                        raise
                    if race.winner is None:
                        errors["local"] = exc
                        if remote_end != "error":
                            lost.add("local")
                            self._lost(backup, exc, primary)  # else it is raised below, as the last
            if cancel.is_set():
                return
            # 3. The winner speaks, from its first word.
            if race.winner is backup:
                self._settle(backup, t0, local_started, race, errors.get("remote"))
                yield "".join(local_text)
                assert local_iter is not None
                yield from local_iter
                self._stats = backup.last_stats
                return
            if local_iter is not None:
                _close(local_iter)
                local_iter = None
            # The remote won or is all that is left: its own timeouts bound the wait.
            while race.winner is None and not remote_end:
                if cancel.is_set():
                    return
                poll(0.05)
            if race.winner is not primary:
                if "local" in errors and "local" not in lost:
                    self._settled = backup
                    raise errors["local"]
                self._settled = primary
                if "remote" in errors and "remote" not in lost:
                    raise errors["remote"]
                raise TargetError(f"{primary.name}: the stream ended without an answer")
            self._settled = primary
            self._settle(primary, t0, local_started, race, errors.get("local"))
            while True:
                while not items.empty():
                    poll(0)
                if remote_text:
                    yield "".join(remote_text)
                    remote_text.clear()
                if remote_end:
                    break
                if cancel.is_set():
                    return
                poll(0.05)
            if "after" in errors:
                raise errors["after"]
            self._stats = primary.last_stats
        finally:
            local_cancel.set()
            if local_iter is not None:
                _close(local_iter)
            remote_cancel.set()  # a no-op once the remote finished; else it hangs up now
            thread.join(timeout=1.0)  # one stream at a time per target

    def _lost(self, target: ChatTarget, exc: TargetError, other: ChatTarget) -> None:
        """A racer failed before the decision: it leaves the race, its breaker knows, and the
        user is told once, as for any failover."""
        said = for_log(exc)
        said = said if said.startswith(target.name) else f"{target.name}: {said}"
        log.warning("%s; continuing the turn on %s", said, other.name)
        if self._record_failure is not None:
            self._record_failure(target, exc)

    def _settle(self, winner: ChatTarget, t0: float, local_started: Optional[float],
                race: _Race, loser_error: Optional[TargetError]) -> None:
        primary, backup = self.primary, self.backup
        self._settled = winner
        loser = backup if winner is primary else primary
        decided = race.decided_at or time.monotonic()
        first_clause_ms = (decided - t0) * 1000
        hedged_at_ms = None if local_started is None else (local_started - t0) * 1000
        loser_start_ms = 0.0 if loser is primary else hedged_at_ms
        if loser_error is not None:
            state = "failed"
        elif loser_start_ms is None:
            state = "not started"
        else:
            state = "cancelled"
        ran = None if loser_start_ms is None else max(0.0, first_clause_ms - loser_start_ms)
        predicted = self._predicted.get(loser.name)
        won_by = None
        if state == "cancelled" and predicted is not None and loser_start_ms is not None:
            won_by = loser_start_ms + predicted - first_clause_ms
        self.outcome = HedgeOutcome(
            winner=winner.name, loser=loser.name, hedge_after_ms=self.after_ms,
            hedged_at_ms=hedged_at_ms, first_clause_ms=first_clause_ms, loser_state=state,
            loser_ran_ms=ran,
            loser_tokens=race.local_tokens if loser is backup else race.remote_tokens,
            won_by_ms=won_by, loser_error=None if loser_error is None else for_log(loser_error))
        if local_started is not None:
            log.info("hedged turn: %s won (first clause %.0f ms; %s %s)", winner.name,
                     first_clause_ms, loser.name, state)


def _close(iterator: Iterator[str]) -> None:
    close = getattr(iterator, "close", None)
    if close is not None:
        close()
