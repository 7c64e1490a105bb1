"""``Turn`` and ``TurnMetrics``: one exchange and where its milliseconds went."""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Optional

# Stage timestamps, in the order a reply flows. All are time.monotonic() seconds.
# With the answer started at a pause, the stages after asr_final may come before end_of_turn (the
# moment the utterance was known to be over).
STAGES = ("asr_final", "end_of_turn", "llm_first_token", "first_clause", "tts_first_audio",
          "playback_start")

_ids = itertools.count(1)


@dataclass
class TurnMetrics:
    """Timestamps of one turn. Latencies are reported from ``speech_end``: the end of the last
    speech sample at the microphone, mapped onto the monotonic clock by the audio source."""

    speech_end: Optional[float] = None
    asr_final: Optional[float] = None
    end_of_turn: Optional[float] = None
    llm_first_token: Optional[float] = None
    first_clause: Optional[float] = None
    tts_first_audio: Optional[float] = None
    playback_start: Optional[float] = None
    target: str = ""
    route_reason: str = ""
    prompt_tokens: Optional[int] = None
    evaluated_tokens: Optional[int] = None
    completion_tokens: Optional[int] = None
    failover: Optional[dict] = None  # from, to, reason, at (monotonic), first_token_after_ms
    hedge: Optional[dict] = None  # a raced remote turn: winner, loser, by how much (llm/hedge.py)
    speculation: Optional[dict] = None  # read ahead while the user spoke (agent/speculation.py)
    error: Optional[str] = None  # why no target answered (or the answer was cut), one sentence

    def mark(self, stage: str, when: float | None = None) -> None:
        """Record a stage once (the first occurrence is the one that matters for latency)."""
        if getattr(self, stage) is None:
            setattr(self, stage, time.monotonic() if when is None else when)

    def latency_ms(self) -> dict[str, float]:
        """Each recorded stage in ms after speech end, plus ``first_audio`` (speech end to the
        first reply audio at the output) when both ends are known."""
        origin = self.speech_end
        out: dict[str, float] = {}
        if origin is None:
            return out
        for stage in STAGES:
            value = getattr(self, stage)
            if value is not None:
                out[stage] = round((value - origin) * 1000, 1)
        if "playback_start" in out:
            out["first_audio"] = out["playback_start"]
        return out


@dataclass
class Turn:
    """One exchange. Results tagged with an older turn's id are dropped by the manager."""

    transcript: str
    id: int = field(default_factory=lambda: next(_ids))
    cancel: threading.Event = field(default_factory=threading.Event)
    metrics: TurnMetrics = field(default_factory=TurnMetrics)
    reply: str = ""
    spoken: str = ""
    interrupted: bool = False
    reopened: bool = False  # stopped by a false cut-off: the next words join this turn

    def to_event(self) -> dict:
        """The JSON-line record printed by `run --json` and `ask --json`."""
        m = self.metrics
        event = {
            "event": "turn",
            "id": self.id,
            "transcript": self.transcript,
            "reply": self.reply,
            "target": m.target,
            "route_reason": m.route_reason,
            "latency_ms": m.latency_ms(),
        }
        if self.interrupted:
            event["interrupted"] = True
            event["spoken"] = self.spoken
        if self.reopened:
            event["reopened"] = True
        tokens = {k: getattr(m, k) for k in ("prompt_tokens", "evaluated_tokens",
                                             "completion_tokens") if getattr(m, k) is not None}
        if tokens:
            event["tokens"] = tokens
        if m.failover:
            event["failover"] = {k: v for k, v in m.failover.items() if k != "at"}
        if m.hedge:
            event["hedge"] = dict(m.hedge)
        if m.speculation:
            event["speculation"] = dict(m.speculation)
        if m.error:
            event["error"] = m.error
        return event
