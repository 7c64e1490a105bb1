"""systemd service notifications (sd_notify) without a dependency: readiness, watchdog, status.

Under a unit with ``Type=notify`` systemd passes ``$NOTIFY_SOCKET``, an AF_UNIX datagram socket
(a path, or an abstract-namespace name written with a leading ``@``). We send it newline-separated
``KEY=VALUE`` assignments. With no ``$NOTIFY_SOCKET`` (a terminal, tests, another init system)
every call is a no-op that returns False, so callers never need to ask whether they run under
systemd. Errors are logged once and never raised: a keep-alive must not break the turn loop.

Sends never block. The receiver's queue is short (``net.unix.max_dgram_qlen``, 10 by default
outside systemd's sysctl), and a blocking ``sendto`` into a full queue would freeze the asyncio
loop that owns the turns -- the very hang the watchdog exists to catch. A full queue drops the
message (logged once); the next keep-alive tries again.

Intended call sites (the daemon, ``edgevoice run``):

* ``ready()`` once the targets are warmed up, the input stream is open and the turn loop is about
  to run: only then does ``systemctl start`` return and do ``After=`` units start.
* ``watchdog()`` every ``watchdog_interval()`` seconds from a task **on the asyncio loop** that
  owns the turns, so a stuck loop stops the keep-alives and systemd restarts the service
  (``WatchdogSec=`` in the unit; ``watchdog_interval()`` is None when no watchdog is configured).
  The manager also skips them while the microphone or speaker is lost: a deaf daemon is not
  healthy.
* ``status(text)`` on state changes ("listening", "thinking", "speaking", "muted",
  "no-microphone", "no-speaker"): shown by ``systemctl status``.
* ``stopping()`` when SIGTERM (or a quit command) starts the shutdown.
* ``extend_timeout(seconds)`` before a long start-up step (loading a big model on a slow board),
  so ``TimeoutStartSec=`` does not kill a start that is merely slow.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)

_warned = False
_dropped = False


def _address(env: Mapping[str, str]) -> str | None:
    """The socket address from ``$NOTIFY_SOCKET``: a path, or an abstract name ('@' -> NUL)."""
    value = env.get("NOTIFY_SOCKET", "")
    if not value:
        return None
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    # vsock:CID:PORT (systemd >= 254, VMs) and anything else we do not speak.
    _warn_once(f"NOTIFY_SOCKET={value!r} is not a unix socket address; notifications are off")
    return None


def _warn_once(message: str) -> None:
    global _warned
    if not _warned:
        _warned = True
        log.warning("sd_notify: %s", message)


def notify(*assignments: str, env: Mapping[str, str] | None = None) -> bool:
    """Send ``KEY=VALUE`` assignments to systemd; True when sent, False when off or failed."""
    address = _address(os.environ if env is None else env)
    if address is None:
        return False
    message = "\n".join(assignments).encode("utf-8")
    flags = socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK
    try:
        with socket.socket(socket.AF_UNIX, flags) as sock:
            sock.sendto(message, socket.MSG_DONTWAIT, address)
    except BlockingIOError:
        _note_dropped(address)
        return False
    except OSError as exc:
        _warn_once(f"cannot notify {address.lstrip(chr(0))!r}: {exc}")
        return False
    return True


def _note_dropped(address: str) -> None:
    """The receiver is not reading: drop this message, say so once (not once per keep-alive)."""
    global _dropped
    if not _dropped:
        _dropped = True
        log.warning("sd_notify: %r is not reading its queue; notifications are dropped until it "
                    "does", address.lstrip(chr(0)))


def _oneline(text: str) -> str:
    """STATUS= is one line: a newline would start a new assignment."""
    return " ".join(text.split())


def ready(status_text: str | None = None) -> bool:
    """Start-up finished: ``systemctl start`` returns, ``After=`` units start."""
    extra = [f"STATUS={_oneline(status_text)}"] if status_text else []
    return notify("READY=1", *extra)


def watchdog() -> bool:
    """Keep-alive: must arrive within every ``WatchdogSec=`` or systemd restarts the service."""
    return notify("WATCHDOG=1")


def status(text: str) -> bool:
    """A one-line state shown by ``systemctl status``."""
    return notify(f"STATUS={_oneline(text)}")


def stopping(status_text: str | None = None) -> bool:
    """Shutdown started (so a slow stop is not mistaken for a hang)."""
    extra = [f"STATUS={_oneline(status_text)}"] if status_text else []
    return notify("STOPPING=1", *extra)


def extend_timeout(seconds: float) -> bool:
    """Ask for ``seconds`` more before the start (or stop) times out."""
    return notify(f"EXTEND_TIMEOUT_USEC={max(1, int(seconds * 1_000_000))}")


def watchdog_interval(env: Mapping[str, str] | None = None) -> float | None:
    """How often to call ``watchdog()``: half of ``WatchdogSec=``, as sd_watchdog_enabled advises.

    None when no watchdog is configured for this process (``$WATCHDOG_USEC`` unset or invalid, or
    ``$WATCHDOG_PID`` naming another process, e.g. a child that inherited the environment).
    """
    env = os.environ if env is None else env
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    pid = env.get("WATCHDOG_PID")
    if usec <= 0 or (pid and pid != str(os.getpid())):
        return None
    return usec / 2_000_000
