"""Text from a remote server made safe before it reaches speech, JSON, history or log lines.

A server chooses every byte it sends. Valid JSON can still carry a lone UTF-16 surrogate
(``"\\ud800"``), which no UTF-8 encoder accepts (printing or storing it raises), and control
characters that rewrite a terminal line or forge a log record. Two treatments:
``speakable`` removes them (reply text: nothing to say there), ``for_log`` makes them visible
as escapes and redacts secrets (error messages, reasons, server-named keys), and shortens.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# C0 controls but tab and newline, DEL, C1 controls, and every surrogate code point (a valid
# pair never survives JSON decoding as two code points, so any left here is a lone one).
_UNSAFE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")  # terminal escape sequences
_UNSAFE_IN_LOG = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff\u2028\u2029]")
REDACTED = "***"


def speakable(text: str) -> str:
    """``text`` without lone surrogates, terminal escape sequences and control characters
    (newline and tab stay)."""
    return _UNSAFE.sub("", _ANSI.sub("", text)) if _UNSAFE.search(text) else text


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every non-empty secret replaced by ``***``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return text


def for_log(text: object, secrets: Iterable[str] = (), limit: int = 300) -> str:
    """One printable line: control characters, line separators and lone surrogates escaped
    (``\\x1b``, ``\\ud800``), secrets redacted, at most ``limit`` characters."""
    line = redact(str(text), secrets)
    line = _UNSAFE_IN_LOG.sub(_escape, line)
    return line if len(line) <= limit else line[: limit - 3] + "..."
