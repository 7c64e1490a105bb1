"""Server-sent events, incrementally: bytes from the socket in, complete events out.

Written for OpenAI-style chat streams (``data: {json}`` events, ``data: [DONE]`` at the end,
``event: error`` for failures). Strict on purpose: a line that is no SSE field is an error, so a
proxy's HTML page or a corrupted stream fails the turn at once instead of being read as silence.
"""

from __future__ import annotations

from typing import NamedTuple

MAX_LINE_BYTES = 1 << 20


class SseError(ValueError):
    """The byte stream is not server-sent events."""


class SseEvent(NamedTuple):
    event: str  # "message" unless an ``event:`` line named it
    data: str


class SseDecoder:
    """Splits a byte stream into events (``\\n`` or ``\\r\\n`` line ends, UTF-8 text).

    Known fields: ``data`` (lines joined with ``\\n``), ``event``, ``id`` and ``retry`` (both
    ignored), comments (``:`` lines), and ``error``, which llama.cpp's C++ server sends instead of
    ``event: error``; it becomes an event named ``error``.
    """

    def __init__(self, max_line_bytes: int = MAX_LINE_BYTES) -> None:
        self._buf = bytearray()
        self._max_line = max_line_bytes
        self._event = ""
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[SseEvent]:
        """The events completed by ``chunk``; raises SseError on anything that is not SSE."""
        self._buf += chunk
        events: list[SseEvent] = []
        start = 0
        while True:
            end = self._buf.find(b"\n", start)
            if end < 0:
                break
            line = bytes(self._buf[start:end])
            start = end + 1
            event = self._line(line[:-1] if line.endswith(b"\r") else line)
            if event is not None:
                events.append(event)
        del self._buf[:start]
        if len(self._buf) > self._max_line:
            raise SseError(f"a line longer than {self._max_line} bytes")
        return events

    def finish(self) -> SseEvent | None:
        """At the end of the stream: an event whose closing blank line never came, if any."""
        if self._buf:
            event = self._line(bytes(self._buf))
            self._buf.clear()
            if event is not None:
                return event
        return self._line(b"")

    def _line(self, raw: bytes) -> SseEvent | None:
        if not raw:
            if not self._data and not self._event:
                return None
            event = SseEvent(self._event or "message", "\n".join(self._data))
            self._event, self._data = "", []
            return event
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise SseError(f"bytes that are not UTF-8 text: {raw[:40]!r}") from None
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "error":
            self._event = "error"
            self._data.append(value)
        elif name not in ("id", "retry"):
            raise SseError(f"a line that is not an event-stream field: {line[:60]!r}")
        return None
