"""A small synchronous client for the control API (used by `edgevoice ctl` and the tray).

One connection per thread: ``request`` and ``events`` read the same socket. A tray typically
keeps one client following ``events()`` on a thread and makes short-lived ones for commands.
"""

from __future__ import annotations

import itertools
import json
import socket
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

from edgevoice.control.protocol import encode, request_message, socket_path
from edgevoice.errors import UserError


class ControlError(UserError):
    """The daemon refused a command (its reason is the message), or the connection failed."""


class NoDaemon(ControlError):
    def __init__(self, path: Path) -> None:
        super().__init__(f"no edgevoice daemon is listening on {path}: start one with "
                         "`edgevoice run`")
        self.path = path


class ControlClient:
    def __init__(self, path: str | Path | None = None, timeout: Optional[float] = 10.0) -> None:
        """Connect to ``path`` (default: the configured or standard socket path)."""
        self.path = Path(path) if path else socket_path(None)
        self.timeout = timeout
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        try:
            self._sock.connect(str(self.path))
        except (FileNotFoundError, ConnectionRefusedError):
            self._sock.close()
            raise NoDaemon(self.path) from None
        except PermissionError:
            self._sock.close()
            raise ControlError(f"not allowed to use {self.path}: it belongs to another user") \
                from None
        except OSError as exc:  # a full backlog: EAGAIN, or a timeout while it stays full
            self._sock.close()
            raise ControlError(f"the daemon at {self.path} did not accept the connection "
                               f"({exc.strerror or 'timed out'}): it is busy; try again") \
                from None
        self._file = self._sock.makefile("rb")
        self._ids = itertools.count(1)
        self._pending_events: deque[dict] = deque()
        self._subscribed = False

    def request(self, cmd: str, *, timeout: Optional[float] = None, **args: str) -> dict:
        """Send one command and return its ``result``; ``ControlError`` with the daemon's reason
        when it says no. ``timeout`` overrides the connection's (say/ask wait for the turn)."""
        request_id = next(self._ids)
        self._send(request_message(cmd, request_id, **args))
        self._sock.settimeout(timeout if timeout is not None else self.timeout)
        try:
            while True:
                msg = self._read()
                if "event" in msg and "ok" not in msg:
                    self._pending_events.append(msg)
                    continue
                if msg.get("id") == request_id or msg.get("id") is None:
                    if msg.get("ok"):
                        return msg.get("result") or {}
                    raise ControlError(msg.get("error") or "the daemon refused the command")
        finally:
            self._sock.settimeout(self.timeout)

    def events(self) -> Iterator[dict]:
        """Subscribe and yield every event (``{"v": 1, "event": ...}``) until the daemon stops."""
        if not self._subscribed:
            self.request("subscribe")
            self._subscribed = True
        self._sock.settimeout(None)
        while True:
            while self._pending_events:
                yield self._pending_events.popleft()
            try:
                msg = self._read()
            except ControlError:
                return
            if "event" in msg:
                yield msg

    def _send(self, msg: dict) -> None:
        try:
            self._sock.sendall(encode(msg))
        except OSError as exc:
            raise ControlError(f"lost the connection to the daemon ({exc})") from None

    def _read(self) -> dict[str, Any]:
        try:
            line = self._file.readline()
        except TimeoutError:
            raise ControlError("the daemon did not answer in time") from None
        except OSError as exc:
            raise ControlError(f"lost the connection to the daemon ({exc})") from None
        if not line:
            raise ControlError("the daemon closed the connection")
        try:
            return json.loads(line)
        except ValueError:
            raise ControlError("the daemon sent something that is not JSON") from None

    def close(self) -> None:
        self._file.close()
        self._sock.close()

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
