"""Reading Wyoming events with limits: a client cannot make us buffer without bound.

The ``wyoming`` package's own reader trusts the lengths a peer declares and ends the connection on
any bad line; a service on a LAN needs both bounded and forgiving: a line that is not an event is
answered with an error and the connection goes on, only a broken frame (its length unknowable)
ends it. Events are written with the package's ``async_write_event``.
"""

from __future__ import annotations

import asyncio
import json
from typing import Optional

from wyoming.event import Event

MAX_LINE_BYTES = 64 * 1024  # the header line (asyncio's default stream limit)
MAX_DATA_BYTES = 1024 * 1024  # extra JSON data after the header
MAX_PAYLOAD_BYTES = 4 * 1024 * 1024  # binary payload: ~10 s of 48 kHz stereo int32 audio


class BadEvent(Exception):
    """A frame that is not a Wyoming event. ``fatal``: the stream cannot be read on from it."""

    def __init__(self, message: str, *, fatal: bool) -> None:
        super().__init__(message)
        self.fatal = fatal


def _length(header: dict, key: str, limit: int) -> int:
    value = header.get(key)
    if value is None:
        return 0
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise BadEvent(f"{key} must be a non-negative integer, got {value!r}", fatal=True)
    if value > limit:
        raise BadEvent(f"{key} {value} is over the limit of {limit} bytes", fatal=True)
    return value


async def read_event(reader: asyncio.StreamReader) -> Optional[Event]:
    """The next event, or None at end of stream (also when the peer stops mid-frame).

    Raises ``BadEvent`` for a frame that is not an event."""
    try:
        line = await reader.readline()
    except ValueError:  # asyncio: the separator was not found within the stream's limit
        raise BadEvent(f"header line longer than {MAX_LINE_BYTES} bytes", fatal=True) from None
    if not line or not line.endswith(b"\n"):
        return None
    try:
        header = json.loads(line)
    except ValueError:
        raise BadEvent("header line is not JSON", fatal=False) from None
    if not isinstance(header, dict) or not isinstance(header.get("type"), str):
        raise BadEvent("header is not an object with a string `type`", fatal=False)
    data = header.get("data") or {}
    if not isinstance(data, dict):
        raise BadEvent("`data` must be an object", fatal=False)
    data_length = _length(header, "data_length", MAX_DATA_BYTES)
    payload_length = _length(header, "payload_length", MAX_PAYLOAD_BYTES)
    try:
        extra = await reader.readexactly(data_length) if data_length else b""
        payload = await reader.readexactly(payload_length) if payload_length else None
    except asyncio.IncompleteReadError:
        return None
    if extra:
        try:
            more = json.loads(extra)
        except ValueError:
            raise BadEvent("event data is not JSON", fatal=False) from None
        if not isinstance(more, dict):
            raise BadEvent("event data must be an object", fatal=False)
        data = {**data, **more}
    return Event(type=header["type"], data=data, payload=payload)
