"""The control API server: a Unix socket served on the turn manager's own asyncio loop.

Commands are verbs of the ``TurnManager`` (it stays the one owner of state); events are the
records it already emits. The socket is bound before the models load, so a second daemon is
refused in a second, and it is created with mode 0600 (umask during bind, then chmod).
Nothing a client sends or fails to read can stop the daemon: every bad line gets an error
reply, over-long lines are dropped with one, pipelined requests are answered in order (a client
that sends faster than it reads is simply not read until it catches up), a subscriber that
can't keep up with its bounded event queue is disconnected, connections beyond
``MAX_CLIENTS`` are refused with a one-line reason, and repeated failures are logged at a
bounded rate.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import socket
import stat
from pathlib import Path
from typing import Any, Optional

from edgevoice import __version__
from edgevoice.config import Config, config_to_dict
from edgevoice.control.protocol import (
    MAX_LINE_BYTES,
    ProtocolError,
    Request,
    encode,
    error_reply,
    event_message,
    ok_reply,
    parse_request,
    socket_path,
)
from edgevoice.control.ratelog import RateLimitedLog
from edgevoice.errors import UserError

log = logging.getLogger(__name__)
_limited = RateLimitedLog(log)

QUEUE_SIZE = 256  # messages waiting for one client before it counts as dead
MAX_IN_FLIGHT = 16  # say/ask requests one client may have waiting for their turns
MAX_CLIENTS = 64  # connections at once: far below the fd limit, far above the tray + a few ctl
BACKLOG = 512  # connection bursts wait in the kernel instead of being refused
_MAX_UNIX_PATH = 107
_LIVE_SECTIONS = ("agent", "activation")  # what `reload` applies without a restart


def bind_socket(path: Path) -> socket.socket:
    """A listening socket at ``path`` with mode 0600; a stale socket file is replaced, a live
    one (another daemon) is a ``UserError``."""
    if len(os.fsencode(path)) > _MAX_UNIX_PATH:
        raise UserError(f"control socket path {path} is too long ({len(os.fsencode(path))} bytes; "
                        f"Unix sockets allow {_MAX_UNIX_PATH}): set a shorter `control.socket`")
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise UserError(f"cannot create {path.parent} for the control socket ({exc.strerror}): "
                        "set `control.socket` to a writable place") from None
    if path.is_symlink() or path.exists():
        if not stat.S_ISSOCK(path.lstat().st_mode):
            raise UserError(f"{path} exists and is not a socket: remove it or set "
                            "`control.socket` elsewhere")
        if _answers(path):
            raise UserError(f"another edgevoice daemon is already running (control socket "
                            f"{path}): stop it with `edgevoice ctl quit` first")
        log.info("removing stale control socket %s", path)
        path.unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        sock.bind(str(path))
    except OSError as exc:
        sock.close()
        if _answers(path):
            raise UserError(f"another edgevoice daemon is already running (control socket "
                            f"{path})") from None
        raise UserError(f"cannot create the control socket {path}: {exc.strerror}") from None
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600)
    sock.listen(BACKLOG)
    sock.setblocking(False)
    return sock


def _answers(path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        probe.close()


def _flat(data: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


class _Client:
    """One connection: a bounded outgoing queue drained by a writer task."""

    def __init__(self, writer: asyncio.StreamWriter, queue_size: int) -> None:
        self.writer = writer
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(queue_size)
        self.subscribed = False
        self.closed = False
        self.tasks: set[asyncio.Task] = set()
        self.pump = asyncio.get_running_loop().create_task(self._pump())

    def send(self, msg: dict) -> None:
        """Queue an event; a client too far behind is disconnected (events can't wait)."""
        if self.closed:
            return
        try:
            self.queue.put_nowait(encode(msg))
        except asyncio.QueueFull:
            _limited.warning("slow-client", "control client is not reading (%d messages "
                             "queued): disconnected", self.queue.qsize())
            self.close(abort=True)

    async def reply(self, msg: dict) -> None:
        """Queue a reply, waiting for room: a pipelining client is answered at its own pace."""
        if self.closed:
            return
        data = encode(msg)
        while not self.closed:
            try:
                self.queue.put_nowait(data)
                return
            except asyncio.QueueFull:
                await asyncio.sleep(0.005)

    async def _pump(self) -> None:
        try:
            while True:
                data = await self.queue.get()
                self.writer.write(data)
                await self.writer.drain()
        except (ConnectionError, OSError):
            self.close(abort=True)

    async def flush(self, timeout: float = 1.0) -> None:
        """Wait (bounded) until what was queued has been handed to the socket."""
        deadline = asyncio.get_running_loop().time() + timeout
        while not self.closed and not self.queue.empty():
            if asyncio.get_running_loop().time() > deadline:
                return
            await asyncio.sleep(0.01)
        if not self.closed:
            try:
                await asyncio.wait_for(self.writer.drain(), max(0.0, deadline -
                                                                asyncio.get_running_loop().time()))
            except (asyncio.TimeoutError, ConnectionError, OSError):
                pass

    def close(self, abort: bool = False) -> None:
        if self.closed:
            return
        self.closed = True
        if asyncio.current_task() is not self.pump:
            self.pump.cancel()
        if abort:
            self.writer.transport.abort()
        else:
            self.writer.close()


class ControlServer:
    """Bind with ``ControlServer(path, config=...)`` early, ``await start(manager)`` on the loop,
    ``await aclose()`` when the agent stops (``close()`` also works without a loop)."""

    def __init__(self, path: Path, *, config: Config, config_path: Optional[str] = None,
                 max_line: int = MAX_LINE_BYTES, queue_size: int = QUEUE_SIZE) -> None:
        self.path = path
        self.config = config
        self.config_path = config_path
        self.max_line = max_line
        self.queue_size = queue_size
        self._sock: Optional[socket.socket] = bind_socket(path)
        st = os.stat(path)
        self._identity = (st.st_dev, st.st_ino)
        self._server: Optional[asyncio.AbstractServer] = None
        self._clients: set[_Client] = set()
        self._handlers: set[asyncio.Task] = set()
        self._manager = None

    @classmethod
    def for_run(cls, cfg: Config, config_path: Optional[str],
                file_mode: bool) -> Optional[ControlServer]:
        """The server `edgevoice run` should have: none when disabled, and in file mode only
        when a socket path was configured (test and demo runs never take the user's socket)."""
        if not cfg.control.enabled or (file_mode and not cfg.control.socket):
            return None
        return cls(socket_path(cfg.control.socket), config=cfg, config_path=config_path)

    async def start(self, manager) -> None:
        self._manager = manager
        self._server = await asyncio.start_unix_server(self._serve, sock=self._sock,
                                                       backlog=BACKLOG)  # asyncio's is 100
        manager.add_listener(self.publish)
        log.info("control API on %s", self.path)

    def publish(self, event: dict) -> None:
        """Fan an agent event out to subscribed clients (called on the loop by the manager)."""
        msg = event_message(event)
        for client in list(self._clients):
            if client.subscribed:
                client.send(msg)

    async def aclose(self) -> None:
        if self._manager is not None:
            self._manager.remove_listener(self.publish)
        if self._server is not None:
            self._server.close()
        for client in list(self._clients):
            await client.flush(0.5)
            client.close()
        if self._handlers:  # they see end-of-file and finish; don't leave them to be cancelled
            await asyncio.wait(list(self._handlers), timeout=1.0)
        self.close()

    def close(self) -> None:
        """Stop listening and remove the socket file, if it is still ours."""
        if self._sock is not None and self._server is None:
            self._sock.close()
        self._sock = None
        try:
            st = os.stat(self.path)
            if (st.st_dev, st.st_ino) == self._identity:
                self.path.unlink()
        except OSError:
            pass

    # -- one connection ---------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._clients) >= MAX_CLIENTS:
            await self._refuse(writer)
            return
        client = _Client(writer, self.queue_size)
        self._clients.add(client)
        handler = asyncio.current_task()
        self._handlers.add(handler)
        handler.add_done_callback(self._handlers.discard)
        buf = bytearray()
        skipping = False  # inside a line that was too long
        too_long = f"line longer than {self.max_line} bytes: dropped"
        try:
            while not client.closed:
                try:
                    data = await reader.read(65536)
                except (ConnectionError, OSError):
                    break
                if not data:
                    break
                buf += data
                while not client.closed:
                    newline = buf.find(b"\n")
                    if newline < 0:
                        if len(buf) > self.max_line:
                            if not skipping:
                                await client.reply(error_reply(None, too_long))
                            skipping = True
                            buf.clear()
                        break
                    line = bytes(buf[:newline])
                    del buf[: newline + 1]
                    if skipping:
                        skipping = False
                    elif len(line) > self.max_line:
                        await client.reply(error_reply(None, too_long))
                    elif line.strip():
                        await self._dispatch(client, line)
        except Exception:  # a bug here must cost one connection, never a log flood
            _limited.exception("serve", "control connection failed")
        finally:
            self._clients.discard(client)  # a say/ask still running finishes; its reply is lost
            await client.flush(0.5)
            client.close()

    async def _refuse(self, writer: asyncio.StreamWriter) -> None:
        _limited.warning("too-many-clients", "control socket: %d clients connected, refusing "
                         "another", len(self._clients))
        try:
            writer.write(encode(error_reply(None, f"too many control clients ({MAX_CLIENTS} "
                                                  "connected): close idle connections and "
                                                  "try again")))
            await asyncio.wait_for(writer.drain(), 1.0)
        except (asyncio.TimeoutError, ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def _dispatch(self, client: _Client, line: bytes) -> None:
        """Commands run in order, one at a time per client; say/ask, which wait for their
        turn to end, run beside the others (bounded per client)."""
        try:
            request = parse_request(line)
        except ProtocolError as exc:
            await client.reply(error_reply(exc.request_id, str(exc)))
            return
        if request.cmd not in ("say", "ask"):
            await self._run(client, request)
            return
        if len(client.tasks) >= MAX_IN_FLIGHT:
            await client.reply(error_reply(request.id, f"too many requests in flight (at most "
                                                       f"{MAX_IN_FLIGHT}): wait for the "
                                                       "replies"))
            return
        task = asyncio.get_running_loop().create_task(self._run(client, request))
        client.tasks.add(task)
        task.add_done_callback(client.tasks.discard)

    async def _run(self, client: _Client, request: Request) -> None:
        try:
            result = await self._execute(client, request)
        except UserError as exc:
            await client.reply(error_reply(request.id, str(exc)))
            return
        except Exception as exc:  # a bug in one command must not take the daemon down
            _limited.exception(f"cmd-{request.cmd}", "control command %s failed", request.cmd)
            await client.reply(error_reply(request.id, f"internal error in {request.cmd}: "
                                                       f"{exc}"))
            return
        await client.reply(ok_reply(request.id, result))
        if request.cmd == "quit":
            await client.flush()
            self._manager.stop()

    async def _execute(self, client: _Client, request: Request) -> dict:
        manager, cmd, args = self._manager, request.cmd, request.args
        if cmd == "status":
            return {**manager.status(), "pid": os.getpid(), "version": __version__,
                    "socket": str(self.path), "clients": len(self._clients)}
        if cmd in ("subscribe", "unsubscribe"):
            client.subscribed = cmd == "subscribe"
            # A snapshot to start from: events only say what changes.
            return {"subscribed": client.subscribed, "status": manager.status()}
        if cmd in ("mute", "unmute"):
            manager.set_muted(cmd == "mute")
            return {"muted": cmd == "mute"}
        if cmd in ("ptt_start", "ptt_stop"):
            manager.push_to_talk(cmd == "ptt_start")
            return {"pressed": cmd == "ptt_start"}
        if cmd == "cancel":
            return {"cancelled": manager.cancel_turn()}
        if cmd in ("say", "ask"):
            waiter = getattr(manager, cmd)(args["text"])
            return await waiter
        if cmd == "set_policy":
            manager.set_policy(args["policy"])
            return {"policy": args["policy"]}
        if cmd == "reload":
            return await self.reload()
        if cmd == "quit":
            return {"stopping": True}
        raise ProtocolError(f"unknown command {cmd!r}")  # pragma: no cover - parse_request

    async def reload(self) -> dict:
        """`reload` (and SIGHUP): re-read the config file, apply the live sections."""
        self.config, result = await reload_config(self._manager, self.config, self.config_path)
        return result


async def reload_config(manager, current: Config,
                        config_path: Optional[str]) -> tuple[Config, dict]:
    """Re-read the config file; apply the live sections to ``manager``, list what needs a
    restart. Returns the config now in effect and the result `reload` replies with."""
    from edgevoice.config import load_config
    from edgevoice.ear.activation import make_spotter

    loop = asyncio.get_running_loop()
    new, source = await loop.run_in_executor(None, load_config, config_path)
    # Built off the loop; a phrase the dictionary can't say fails here, before any change.
    spotter = await loop.run_in_executor(None, make_spotter, new.activation,
                                         new.audio.sample_rate)
    old, fresh = _flat(config_to_dict(current)), _flat(config_to_dict(new))
    changed = [key for key in fresh if fresh[key] != old.get(key)]
    manager.apply_config(new.agent, new.activation, spotter)
    applied = dataclasses.replace(current, agent=new.agent, activation=new.activation)
    live = tuple(f"{section}." for section in _LIVE_SECTIONS)
    return applied, {"source": str(source) if source else None,
                     "applied": [k for k in changed if k.startswith(live)],
                     "needs_restart": [k for k in changed if not k.startswith(live)]}


async def run_agent(manager, control: Optional[ControlServer]) -> None:
    """Run the turn manager with the control API (if any) served on its loop meanwhile."""
    if control is None:
        await manager.run()
        return
    await control.start(manager)
    try:
        await manager.run()
    finally:
        await control.aclose()
