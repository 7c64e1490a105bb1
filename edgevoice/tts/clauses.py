"""Turn streamed LLM text into short, clean clauses for the synthesizer.

Two pure pieces:

* ``clean_for_speech`` removes what a voice must not read aloud: markdown markers, code, emoji,
  URL paths. Fenced code blocks become the sentence "Code omitted." (the listener learns that
  something was skipped; reading code aloud helps nobody); inline code keeps its text.
* ``ClauseSplitter`` cuts the growing text into clauses as deltas arrive: the first clause early
  (so the first audio starts while the LLM is still writing), later ones at sentence ends.

Cleaning is built so that it *composes* at every place the splitter may cut (cuts always fall just
before whitespace, never inside a code fence or a table row): cleaning the clauses one by one gives
the same words as cleaning the whole answer. Every rule is therefore either tied to a line start,
a whole line the splitter never cuts, or a single whitespace-free token.
"""

from __future__ import annotations

import bisect
import re
import unicodedata
from collections.abc import Callable

CODE_OMITTED = "Code omitted."

# --- cleaning -------------------------------------------------------------------------------------

_FENCE_MARK = "```"
_FENCE = re.compile(r"```.*?(?:```|\Z)", re.S)
# A markdown marker at the start of a line: blockquote, heading, bullet or list number.
_LINE_MARKER = re.compile(r"^\s*(?:>+|(?:#{1,6}|[-*+•]|\d{1,3}[.)])(?=\s|$))")
_URL = re.compile(r"(?:https?|ftp)://\S+|(?<![\w.@/])www\.\S+", re.I)
_URL_TRAIL = ".,;:!?)]}'\"\u201d\u2019\u00bb"
_EMOTICON = re.compile(r"(?<!\S)[:;=]-?[)(DPp](?!\S)")
_EMOJI = re.compile(
    "["
    "\U0001f000-\U0001faff"  # pictographs, emoticons, transport, flags, symbols & pictographs ext.
    "\u2600-\u27bf"  # misc symbols, dingbats
    "\u2b00-\u2bff"  # arrows and stars used as emoji
    "\u2190-\u21ff"  # arrows
    "\ufe0e\ufe0f\u200d\u20e3"  # variation selectors, zero-width joiner, keycap
    "\U000e0020-\U000e007f"  # tag characters (subdivision flags)
    "\u3030\u303d"
    "]"
)
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1b\x7f]")

# Token-level rules, in order. None of them matches across whitespace, and their look-arounds treat
# the string's edges like whitespace, which is what makes cleaning compose at the splitter's cuts.
_TOKEN_RULES: list[tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]]] = [
    (re.compile(r"!\["), "["),  # image -> its alt text, like a link
    (re.compile(r"\]\([^()\s]*\)"), ""),  # link target: keep the link text only
    (re.compile(r"\[\d{1,3}\]"), ""),  # citation marks [1]
    (re.compile(r"[\[\]]"), ""),
    (_URL, lambda m: _speakable_url(m.group())),
    (re.compile(r"`"), ""),  # inline code: keep its text
    (re.compile(r"</?[A-Za-z][A-Za-z0-9]*/?>"), " "),  # bare HTML tags such as <br>
    (re.compile(r"(?<=\d)\*(?=\d)"), " times "),
    (re.compile(r"(?<!\S)\*(?!\S)"), "times"),
    (re.compile(r"\*"), ""),  # emphasis
    (re.compile(r"~~"), ""),  # strikethrough
    (re.compile(r"~(?=\d)"), "about "),
    (re.compile(r"~"), ""),
    (re.compile(r"_"), " "),  # emphasis and snake_case
    (re.compile(r"\|"), " "),
    (_EMOTICON, ""),
    (_EMOJI, " "),
    (_CONTROL, ""),
]


def _speakable_url(url: str) -> str:
    """Keep only the host of a URL ("example.com"); a listener cannot use a path."""
    trail = ""
    while url and url[-1] in _URL_TRAIL:
        url, trail = url[:-1], url[-1] + trail
    host = re.split(r"[/?#]", url.split("://", 1)[-1], maxsplit=1)[0]
    host = host.rsplit("@", 1)[-1].split(":", 1)[0]
    if host.lower().startswith("www."):
        host = host[4:]
    return host + trail


def _is_table_row(line: str) -> bool:
    return line.lstrip().startswith("|")


def _clean_table_row(line: str) -> str:
    """``| a | b |`` -> ``a, b.``; separator rows (``|---|:--:|``) vanish."""
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    cells = [c for c in cells if c.strip(":- \t")]
    if not cells:
        return ""
    text = ", ".join(cells)
    return text if text[-1] in ".!?,;:" else text + "."


def _clean_line_start(line: str) -> str:
    if _is_table_row(line):
        return _clean_table_row(line)
    while True:
        m = _LINE_MARKER.match(line)
        if not m:
            return line
        line = line[m.end() :]


def _clean(text: str, line_start: bool) -> str:
    """Clean ``text``; ``line_start`` says whether it begins at the start of a line."""
    text = _FENCE.sub(f" {CODE_OMITTED} ", text)
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if i or line_start:
            lines[i] = _clean_line_start(line)
    text = "\n".join(lines)
    for pattern, repl in _TOKEN_RULES:
        text = pattern.sub(repl, text)
    return " ".join(text.split())


def clean_for_speech(text: str) -> str:
    """Text as it should be spoken: markdown, code, emoji and URL paths removed, one-line.

    Numbers and ordinary punctuation stay (the synthesizer uses punctuation for pauses and
    intonation). Fenced code blocks become "Code omitted."; a link keeps its text; a bare URL keeps
    its host; table rows become comma-separated cells.
    """
    return _clean(text, line_start=True)


def is_speakable(text: str) -> bool:
    """True when the text has a letter or digit; punctuation alone makes no speech."""
    return any(ch.isalnum() for ch in text)


def _word_count(text: str) -> int:
    return sum(1 for token in text.split() if is_speakable(token))


# --- splitting ------------------------------------------------------------------------------------

_CLOSERS = "\"'\u201d\u2019)\\]}\u00bb"  # closing quotes and brackets
_OPENERS = "\"'\u201c\u2018([{\u00ab*_"
# Candidate cut points: punctuation (plus closing quotes/brackets) followed by whitespace, or a
# newline. The whitespace itself must have arrived: "3." may still become "3.14".
_ELLIPSIS, _EM_DASH, _EN_DASH = "\u2026", "\u2014", "\u2013"
# Chinese and Japanese end clauses with full-width punctuation and write no space after it.
_WIDE_STRONG, _WIDE_WEAK = "\u3002\uff01\uff1f", "\u3001\uff0c\uff1b\uff1a"  # 。！？ 、，；：
_WIDE_CLOSERS = "\u300d\u300f\uff09\u3011\u300b\u3009"  # 」』）】》〉
WIDE_SENTENCE_END = re.compile(f"[{_WIDE_STRONG}]")
_BOUNDARY = re.compile(
    rf"(?P<punct>\.{{3,}}|{_ELLIPSIS}|[.!?]+|[,;:{_EM_DASH}{_EN_DASH}])[{_CLOSERS}]*(?=\s)"
    rf"|(?P<wide>[{_WIDE_STRONG}]+|[{_WIDE_WEAK}])[{_WIDE_CLOSERS}{_CLOSERS}]*"
    r"|(?P<nl>\n)"
)
_WEAK_PUNCT = frozenset(",;:" + _EM_DASH + _EN_DASH + _WIDE_WEAK)
# Scripts written without spaces between words (Han, kana, Thai, Lao, Myanmar, Khmer): a run-on
# in them can only be cut between two of their characters.
SPACELESS = re.compile(
    "[\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u3400-\u4dbf"
    "\u4e00-\u9fff\uf900-\ufaff]"
)
_ABBREVIATIONS = frozenset(
    ["mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "mt", "vs", "approx", "fig", "dept"]
)
_INITIALS = re.compile(r"(?:[A-Za-z]\.)*[A-Za-z]")  # "U.S", "e.g", "i.e", "J" (dot stripped)
_SPACE_AFTER_TEXT = re.compile(r"(?<=\S)\s")


class ClauseSplitter:
    """Incremental clause splitter for streamed text.

    ``push`` returns the clauses that became ready; ``flush`` returns the rest when the stream ends.
    The first clause is released at the first clause boundary (``, ; : —`` or an ellipsis) once it
    holds ``min_first_words`` words, or at the first sentence end, whichever comes first; later
    clauses at sentence ends and newlines. When no sentence end comes, the text is cut at the last
    clause boundary (else the last space) within ``first_max_chars`` / ``max_chars``, so a run-on
    sentence never stalls speech; and the first clause is cut at the word boundary after
    ``first_max_words`` words (0 = no limit) when no punctuation came sooner (models that write no
    commas would otherwise hold the first audio back for 80 characters). Abbreviations ("Dr.",
    "e.g.", "U.S."), decimals ("3.14"), times ("10:30") and numbered-list markers are not
    boundaries; nothing is cut inside a code fence or a table row. Clauses come out cleaned
    (``clean_for_speech``); a piece with nothing to say (punctuation, emoji) is joined to the
    following text rather than emitted.
    """

    def __init__(
        self, min_first_words: int = 3, first_max_chars: int = 80, max_chars: int = 160,
        first_max_words: int = 0,
    ) -> None:
        if min_first_words < 1 or first_max_chars < 1 or max_chars < 1:
            raise ValueError("min_first_words, first_max_chars and max_chars must be positive")
        if first_max_words < 0:
            raise ValueError("first_max_words must be 0 (no limit) or positive")
        self.min_first_words = min_first_words
        self.first_max_chars = first_max_chars
        self.max_chars = max_chars
        self.first_max_words = first_max_words
        self.reset()

    def reset(self) -> None:
        """Forget buffered text (barge-in) and start a new answer."""
        self._buf = ""
        self._first = True  # no clause emitted yet
        self._line_start = True  # the buffer begins at the start of a line

    def push(self, delta: str) -> list[str]:
        """Add a text delta; return the clauses that are now complete."""
        self._buf += delta
        out: list[str] = []
        while (cut := self._next_cut()) is not None:
            clause = _clean(self._buf[:cut], self._line_start)
            self._buf = self._buf[cut:]
            self._line_start = False  # cuts fall mid-line or just before a newline
            if is_speakable(clause):
                out.append(clause)
                self._first = False
        return out

    def flush(self) -> list[str]:
        """End of the stream: return the last clause, if it says anything, and reset."""
        clause = _clean(self._buf, self._line_start)
        self.reset()
        return [clause] if is_speakable(clause) else []

    # -- internals --

    def _next_cut(self) -> int | None:
        buf = self._buf
        fences = [m.start() for m in re.finditer(re.escape(_FENCE_MARK), buf)]
        # Nothing after an unclosed fence can be cut: don't rescan the code on every delta.
        end = fences[-1] if len(fences) % 2 else len(buf)
        limit = self.first_max_chars if self._first else self.max_chars
        fallback: int | None = None  # last clause boundary within the length limit
        for m in _BOUNDARY.finditer(buf, 0, end):
            if m.group("nl") is not None:
                cut, weak = m.start(), False
                if cut == 0:
                    continue
            else:
                cut = m.end()
                punct = m.group("punct") or m.group("wide")
                weak = punct in _WEAK_PUNCT or punct.startswith("...") or punct == _ELLIPSIS
                if punct == "." and self._is_abbreviation(m.start()):
                    continue
            if not self._safe(cut, fences, newline=m.group("nl") is not None):
                continue
            piece = _clean(buf[:cut], self._line_start)
            if not is_speakable(piece):
                continue
            if not weak:
                return cut
            if self._first and _word_count(piece) >= self.min_first_words:
                return cut
            if cut <= limit:
                fallback = cut
        if self._first and self.first_max_words:
            cut = self._word_cut(self.first_max_words, fences, end)
            # without spaces, a word is about two characters (Chinese averages 1.5-2)
            spaceless_limit = 2 * self.first_max_words
            if cut is None and len(buf) > spaceless_limit:
                cut = self._spaceless_cut(spaceless_limit, fences)
            if cut is not None:
                return cut
        if len(buf) <= limit:
            return None
        if fallback is not None:
            return fallback
        cut = self._space_cut(limit, fences, end)
        if cut is None or cut > limit:
            cut = self._spaceless_cut(limit, fences) or cut
        return cut

    def _word_cut(self, words: int, fences: list[int], end: int) -> int | None:
        """The first safe cut before whitespace after at least ``words`` spoken words."""
        for m in _SPACE_AFTER_TEXT.finditer(self._buf, 0, end):
            cut = m.start()
            if self._safe(cut, fences, newline=False) and _word_count(
                    _clean(self._buf[:cut], self._line_start)) >= words:
                return cut
        return None

    def _space_cut(self, limit: int, fences: list[int], end: int) -> int | None:
        """Last safe cut before whitespace within ``limit`` (else the first one after it)."""
        best: int | None = None
        for m in _SPACE_AFTER_TEXT.finditer(self._buf, 0, end):
            cut = m.start()
            if not self._safe(cut, fences, newline=False):
                continue
            if not is_speakable(_clean(self._buf[:cut], self._line_start)):
                continue
            if cut > limit:
                return best if best is not None else cut
            best = cut
        return best

    def _spaceless_cut(self, limit: int, fences: list[int]) -> int | None:
        """The last safe cut within ``limit`` between two characters of a script written
        without spaces (a Chinese or Thai run-on has no whitespace to cut at), or None."""
        buf = self._buf
        for cut in range(min(limit, len(buf) - 1), 0, -1):
            if (SPACELESS.match(buf, cut - 1) and SPACELESS.match(buf, cut)
                    and not unicodedata.category(buf[cut]).startswith("M")
                    and self._safe(cut, fences, newline=False)
                    and is_speakable(_clean(buf[:cut], self._line_start))):
                return cut
        return None

    def _safe(self, cut: int, fences: list[int], newline: bool) -> bool:
        """A cut must not fall inside a code fence or (unless at its end) a table row."""
        if bisect.bisect_left(fences, cut) % 2:
            return False
        if newline:
            return True
        start = self._buf.rfind("\n", 0, cut) + 1
        if start == 0 and not self._line_start:
            return True  # a continued line: it was checked when the previous cut was made
        return not _is_table_row(self._buf[start:cut])

    def _is_abbreviation(self, dot: int) -> bool:
        """Whether the "." at ``dot`` ends an abbreviation, initials or a list number."""
        buf = self._buf
        start = dot
        while start > 0 and not buf[start - 1].isspace():
            start -= 1
        word = buf[start:dot].lstrip(_OPENERS)
        if word.lower() in _ABBREVIATIONS or _INITIALS.fullmatch(word):
            return True
        if word.isdigit() and len(word) <= 3:
            line_start = buf.rfind("\n", 0, start) + 1
            at_line_start = line_start > 0 or self._line_start
            return at_line_start and not buf[line_start:start].strip()
        return False
