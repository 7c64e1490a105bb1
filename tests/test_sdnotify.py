"""sd_notify against a real AF_UNIX datagram socket, as systemd's $NOTIFY_SOCKET is."""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgevoice import sdnotify


@pytest.fixture
def listener() -> Iterator[tuple[socket.socket, str]]:
    """A bound datagram socket at a short path (unix socket paths are limited to ~107 bytes)."""
    folder = Path(tempfile.mkdtemp(prefix="evsd-"))
    path = folder / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(2)
    try:
        yield sock, str(path)
    finally:
        sock.close()
        path.unlink(missing_ok=True)
        folder.rmdir()


def test_every_call_is_a_noop_without_notify_socket(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert not sdnotify.ready()
    assert not sdnotify.watchdog()
    assert not sdnotify.status("listening")
    assert not sdnotify.stopping()
    assert not sdnotify.extend_timeout(30)


def test_messages_reach_a_path_socket(monkeypatch, listener):
    sock, path = listener
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    assert sdnotify.ready("listening on pulse")
    assert sock.recv(4096) == b"READY=1\nSTATUS=listening on pulse"
    assert sdnotify.watchdog()
    assert sock.recv(4096) == b"WATCHDOG=1"
    assert sdnotify.status("thinking\nabout it")  # one line: a newline would be a new assignment
    assert sock.recv(4096) == b"STATUS=thinking about it"
    assert sdnotify.extend_timeout(1.5)
    assert sock.recv(4096) == b"EXTEND_TIMEOUT_USEC=1500000"
    assert sdnotify.stopping()
    assert sock.recv(4096) == b"STOPPING=1"


def test_abstract_namespace_address(monkeypatch):
    name = f"edgevoice-test-{os.getpid()}-{id(monkeypatch)}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert sdnotify.watchdog()
        assert sock.recv(4096) == b"WATCHDOG=1"


def test_dead_socket_returns_false_and_never_raises(monkeypatch, tmp_path, caplog):
    monkeypatch.setattr(sdnotify, "_warned", False)
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-listens"))
    assert not sdnotify.watchdog()
    assert not sdnotify.watchdog()
    assert sum("sd_notify" in r.message for r in caplog.records) == 1  # warned once, not per call


def test_unsupported_address_is_off(monkeypatch):
    monkeypatch.setattr(sdnotify, "_warned", False)
    monkeypatch.setenv("NOTIFY_SOCKET", "vsock:2:1234")
    assert not sdnotify.ready()


def test_watchdog_interval():
    pid = str(os.getpid())
    assert sdnotify.watchdog_interval({}) is None
    assert sdnotify.watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert sdnotify.watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": pid}) == 15.0
    assert sdnotify.watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None
    assert sdnotify.watchdog_interval({"WATCHDOG_USEC": "junk"}) is None
    assert sdnotify.watchdog_interval({"WATCHDOG_USEC": "0"}) is None


def test_a_reader_that_never_reads_cannot_block_a_keepalive(monkeypatch, listener, caplog):
    """net.unix.max_dgram_qlen is 10 outside systemd: the 11th blocking send would hang the loop."""
    import threading

    sock, path = listener
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.setattr(sdnotify, "_dropped", False)
    results: list[bool] = []
    sender = threading.Thread(target=lambda: results.extend(sdnotify.watchdog()
                                                            for _ in range(200)), daemon=True)
    with caplog.at_level("WARNING", logger="edgevoice.sdnotify"):
        sender.start()
        sender.join(10)
    assert not sender.is_alive(), "a keep-alive blocked on a full notify queue"
    assert len(results) == 200 and results[0] and not results[-1]  # later ones were dropped
    assert sum("not reading" in r.getMessage() for r in caplog.records) == 1  # said once
    sock.settimeout(0.2)
    try:
        while True:
            sock.recv(4096)
    except TimeoutError:
        pass
    assert sdnotify.watchdog()  # once the reader catches up, keep-alives arrive again
    assert sock.recv(4096) == b"WATCHDOG=1"
