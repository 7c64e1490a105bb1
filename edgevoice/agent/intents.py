"""Built-in intents: what must never wait for or depend on a language model.

A small table of (name, pattern). Matching is on the whole normalized utterance so that ordinary
questions that merely contain "stop" or "time" still go to the model.
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Optional

_FILLER = r"(?:(?:hey|ok|okay|please|now|computer|edgevoice|assistant|just)\s+)*"
_TAIL = r"(?:\s+(?:please|now|thanks|thank you))*"


def _phrase(body: str) -> re.Pattern[str]:
    return re.compile(rf"^{_FILLER}(?:{body}){_TAIL}$")


@dataclass(frozen=True)
class Intent:
    name: str
    pattern: re.Pattern[str]


INTENTS: tuple[Intent, ...] = (
    Intent("unmute", _phrase(r"unmute|un mute|wake up|start listening( again)?|you can talk")),
    Intent("mute", _phrase(r"mute|be quiet|quiet|stop listening|go to sleep|silence")),
    Intent("stop", _phrase(r"stop|cancel|never ?mind|stop (it|that|talking)|shut up|enough")),
    Intent("repeat", _phrase(r"(can you |could you )?(repeat|say) (that|it)( again)?|repeat|"
                             r"what did you (just )?say|come again|pardon( me)?")),
    Intent("time", _phrase(r"what(?: is|'s| s)? the time|what time is it( now)?|"
                           r"(tell me )?the time|time")),
    Intent("date", _phrase(r"what(?: is|'s| s)? (the |today's |today s )?date( today)?|"
                           r"what day is (it|today)( today)?|what's today|what is today|"
                           r"(tell me )?the date|date")),
)


def normalize(text: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[^a-z' ]", " ", text.lower())).strip()


def match_intent(text: str) -> Optional[str]:
    """The built-in intent the whole utterance asks for, or None."""
    norm = normalize(text)
    for intent in INTENTS:
        if intent.pattern.match(norm):
            return intent.name
    return None


def _spoken_time(now: _dt.datetime) -> str:
    hour = now.hour % 12 or 12
    suffix = "in the morning" if now.hour < 12 else "in the afternoon" if now.hour < 18 \
        else "in the evening"
    minutes = "o'clock" if now.minute == 0 else f"{now.minute:02d}" if now.minute < 10 \
        else str(now.minute)
    if 0 < now.minute < 10:
        minutes = f"oh {now.minute}"
    return f"It's {hour} {minutes} {suffix}."


def _spoken_date(now: _dt.datetime) -> str:
    return f"Today is {now.strftime('%A')}, {now.strftime('%B')} {now.day}, {now.year}."


ANSWERS: dict[str, Callable[[_dt.datetime], str]] = {
    "time": _spoken_time,
    "date": _spoken_date,
}

GET_MODEL_COMMAND = "edgevoice models pull gemma-4-e2b-it"
"""The one fix for "no language model": the reply below and the CLI's hint both give it."""

NO_MODEL_REPLY = (
    "I can tell the time and the date, but I have no language model for anything else yet: "
    f"run `{GET_MODEL_COMMAND}`, or set `llm.model` in the config."
)
