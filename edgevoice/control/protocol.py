"""Control API messages, version 1: one JSON object per line, UTF-8, each way.

In (client -> daemon): ``{"v": 1, "id": 7, "cmd": "say", "text": "hello"}``; ``v`` and ``id`` are
optional (``id`` is echoed so a client can match replies to requests).
Replies: ``{"v": 1, "id": 7, "ok": true, "result": {...}}`` or ``{"v": 1, "id": 7, "ok": false,
"error": "plain words"}``.
Events (after ``subscribe``): ``{"v": 1, "event": "state", "state": "listening"}`` — the agent's
own event records with ``v`` added. The README's "Control API" section is the reference.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

VERSION = 1
MAX_LINE_BYTES = 64 * 1024
POLICIES = ("local", "remote", "auto")

# command -> its required string arguments
COMMANDS: dict[str, tuple[str, ...]] = {
    "status": (), "subscribe": (), "unsubscribe": (),
    "mute": (), "unmute": (), "ptt_start": (), "ptt_stop": (), "cancel": (),
    "say": ("text",), "ask": ("text",), "set_policy": ("policy",),
    "reload": (), "quit": (),
}
_ENVELOPE = ("v", "id", "cmd")


class ProtocolError(Exception):
    """A message the daemon can't act on; the text goes back to the client as ``error``."""

    def __init__(self, message: str, request_id: Any = None) -> None:
        super().__init__(message)
        self.request_id = request_id


@dataclass(frozen=True)
class Request:
    cmd: str
    id: Any = None
    args: dict[str, str] = field(default_factory=dict)


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is not a finite number")
    return value


def parse_request(line: bytes) -> Request:
    """One line -> a validated ``Request``, or ``ProtocolError`` saying what is wrong.

    Strict JSON: NaN/Infinity (which Python's json accepts) and numbers too big for a double
    are refused, so nothing echoed back (``id``) can make a reply invalid JSON; nesting deep
    enough to exhaust the parser's recursion is an error reply, not a dropped connection.
    """
    try:
        msg = json.loads(line, parse_constant=_no_constant, parse_float=_finite)
    except RecursionError:
        raise ProtocolError("the JSON is nested too deeply") from None
    except (UnicodeDecodeError, ValueError):
        raise ProtocolError("not a JSON object on one line") from None
    if not isinstance(msg, dict):
        raise ProtocolError("a message must be a JSON object")
    request_id = msg.get("id")
    if request_id is not None and (isinstance(request_id, bool) or not isinstance(
            request_id, (str, int, float))):
        raise ProtocolError("`id` must be a string or a number")
    if isinstance(request_id, int) and abs(request_id) > 2 ** 53:
        raise ProtocolError("`id` must be an integer a JSON client can read back (at most "
                            "2**53)")
    version = msg.get("v", VERSION)
    if version != VERSION:
        raise ProtocolError(f"unsupported protocol version {version!r} (this daemon speaks "
                            f"{VERSION})", request_id)
    cmd = msg.get("cmd")
    if not isinstance(cmd, str) or not cmd:
        raise ProtocolError("missing `cmd`", request_id)
    if cmd not in COMMANDS:
        raise ProtocolError(f"unknown command {cmd!r} (known: {', '.join(COMMANDS)})",
                            request_id)
    wanted = COMMANDS[cmd]
    extra = sorted(set(msg) - set(_ENVELOPE) - set(wanted))
    if extra:
        raise ProtocolError(f"`{cmd}` takes no {', '.join(map(repr, extra))}", request_id)
    args = {}
    for name in wanted:
        value = msg.get(name)
        if not isinstance(value, str) or not value.strip():
            raise ProtocolError(f"`{cmd}` needs `{name}` as a non-empty string", request_id)
        args[name] = value
    if cmd == "set_policy" and args["policy"] not in POLICIES:
        raise ProtocolError(f"policy must be one of {', '.join(POLICIES)}, not "
                            f"{args['policy']!r}", request_id)
    return Request(cmd, request_id, args)


def encode(msg: dict) -> bytes:
    """One line of strict JSON (a non-finite number anywhere becomes null, never ``NaN``)."""
    try:
        text = json.dumps(msg, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except ValueError:
        text = json.dumps(_finite_only(msg), ensure_ascii=False, separators=(",", ":"),
                          allow_nan=False)
    return text.encode() + b"\n"


def _finite_only(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_only(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_only(v) for v in value]
    return value


def request_message(cmd: str, request_id: Any = None, **args: str) -> dict:
    msg: dict = {"v": VERSION, "cmd": cmd, **args}
    if request_id is not None:
        msg["id"] = request_id
    return msg


def ok_reply(request_id: Any, result: Optional[dict] = None) -> dict:
    return {"v": VERSION, "id": request_id, "ok": True, "result": result or {}}


def error_reply(request_id: Any, message: str) -> dict:
    return {"v": VERSION, "id": request_id, "ok": False, "error": message}


def event_message(event: dict) -> dict:
    return {"v": VERSION, **event}


def default_socket_path() -> Path:
    """``$XDG_RUNTIME_DIR/edgevoice/control.sock``; without that variable, platformdirs' runtime
    dir (``/run/user/UID`` when it exists, else a private folder under /tmp)."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return Path(runtime) / "edgevoice" / "control.sock"
    import warnings

    import platformdirs

    with warnings.catch_warnings():  # "XDG_RUNTIME_DIR is not set": the fallback is what we want
        warnings.simplefilter("ignore")
        return Path(platformdirs.user_runtime_dir("edgevoice")) / "control.sock"


def socket_path(configured: Optional[str]) -> Path:
    return Path(configured).expanduser() if configured else default_socket_path()
