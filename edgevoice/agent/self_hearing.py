"""Never answer our own voice: a transcript that repeats what the agent just said is an echo.

Echo cancellation and the double-talk guard keep most of the agent's voice out of the ear, but a
room, a device the sound server silently swapped (a capture stream moved onto the speaker's
monitor) or a cancellation that has not converged yet can still let it through, and then the
agent answers itself, turn after turn. The last line of defence is on words: the ear's text is
compared with the clauses the speaker was playing while that speech was heard.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

# Echo reaches the microphone a little after it is played (room, buffers), and the endpointer's
# pre-roll reaches back before the speech: margins around what was played.
ECHO_LATE_S = 1.0
ECHO_EARLY_S = 0.5
MIN_WORDS = 2  # a single word ("yes", "stop") is never dropped as an echo
MIN_SHARE = 0.6  # of the heard words, in order, found in what was played


def _words(text: str) -> list[str]:
    return [w for w in "".join(c.lower() if c.isalnum() or c == "'" else " "
                               for c in text).split() if w]


def shared_in_order(heard: list[str], said: list[str]) -> int:
    """Longest common subsequence of two word lists (heard words found, in order, in said)."""
    if not heard or not said:
        return 0
    prev = [0] * (len(said) + 1)
    for h in heard:
        row = [0]
        for j, s in enumerate(said):
            row.append(prev[j] + 1 if h == s else max(prev[j + 1], row[j]))
        prev = row
    return prev[-1]


def sounds_like(heard: str, said: str) -> bool:
    """Whether ``heard`` is (most of) ``said`` coming back: at least ``MIN_WORDS`` words, and
    ``MIN_SHARE`` of them in order in ``said``."""
    h = _words(heard)
    if len(h) < MIN_WORDS:
        return False
    n = shared_in_order(h, _words(said))
    return n >= MIN_WORDS and n >= MIN_SHARE * len(h)


@dataclass(frozen=True)
class _Played:
    start: float
    end: float
    text: str


class OwnVoice:
    """What the speaker played recently (monotonic times), and whether speech heard between two
    times repeats it."""

    def __init__(self, keep_s: float = 30.0) -> None:
        self.keep_s = keep_s
        self._played: deque[_Played] = deque()

    def played(self, start: float, end: float, text: str) -> None:
        self._played.append(_Played(start, end, text))
        while self._played and self._played[0].end < end - self.keep_s:
            self._played.popleft()

    def cut(self, at: float) -> None:
        """The output was cleared at ``at``: nothing scheduled after it was played."""
        self._played = deque(p for p in self._played if p.start < at)

    def is_echo(self, heard: str, start: float, end: float) -> bool:
        said = " ".join(p.text for p in self._played
                        if p.start - ECHO_EARLY_S <= end and start <= p.end + ECHO_LATE_S)
        return bool(said) and sounds_like(heard, said)
