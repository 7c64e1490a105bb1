"""The control socket under abuse, against a real `edgevoice run` daemon on a real Unix socket:
every malformed request answered, pipelining answered, bursts accepted, a client limit with a
clear refusal, strict JSON always, and a bounded log."""

from __future__ import annotations

import json
import os
import socket
import time

import pytest
from _daemon import Daemon, compose

from edgevoice.control.client import ControlError
from edgevoice.control.protocol import encode
from edgevoice.control.server import MAX_CLIENTS


def _strict(line: bytes) -> dict:
    def refuse(name):
        raise AssertionError(f"invalid JSON constant {name} in {line!r}")

    return json.loads(line, parse_constant=refuse)


NL = b"\n"


def _lines(sock: socket.socket, n: int) -> list[dict]:
    sock.settimeout(20)
    buf = b""
    while buf.count(b"\n") < n:
        data = sock.recv(1 << 16)
        assert data, f"the daemon closed the connection after {buf.count(NL)} replies"
        buf += data
    return [_strict(line) for line in buf.splitlines()[:n]]


def _connect(path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(str(path))
    return sock


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    wav = tmp_path_factory.mktemp("ctl") / "quiet.wav"
    compose([(None, 300.0)], wav)
    d = Daemon(wav)
    d.client().close()  # wait for the socket
    yield d
    d.proc.kill()
    d.proc.wait(10)


def test_malformed_requests_each_get_a_reply_in_strict_json(daemon):
    sock = _connect(daemon.socket)
    nested = b'{"id":1,"cmd":"status","x":' + b"[" * 30_000 + b"]" * 30_000 + b"}\n"
    assert len(nested) < 64 * 1024
    sock.sendall(nested + b'{"id":NaN,"cmd":"status"}\n' + b'{"id":1e400,"cmd":"status"}\n'
                 + b'{"id":Infinity,"cmd":"status"}\n' + b'{"id":2,"cmd":"status"}\n')
    replies = _lines(sock, 5)
    assert [r["ok"] for r in replies] == [False, False, False, False, True]
    assert "nested too deeply" in replies[0]["error"]
    assert replies[4]["id"] == 2
    sock.close()


def test_pipelined_requests_are_all_answered_in_order(daemon):
    sock = _connect(daemon.socket)
    sock.sendall(b"".join(encode({"id": i, "cmd": "status"}) for i in range(500)))
    replies = _lines(sock, 500)
    assert [r["id"] for r in replies] == list(range(500)) and all(r["ok"] for r in replies)
    sock.close()


def test_a_burst_of_connections_is_accepted_not_refused(daemon):
    socks, refused = [], 0
    for _ in range(300):  # faster than any accept loop: the backlog takes them
        s = socket.socket(socket.AF_UNIX)
        s.setblocking(False)
        try:
            s.connect(str(daemon.socket))
        except BlockingIOError:  # the listen backlog is full
            refused += 1
        socks.append(s)
    for s in socks:
        s.close()
    assert refused == 0


def _alone(daemon):
    """A client that is the only one connected (earlier tests' connections seen closed)."""
    deadline = time.monotonic() + 10
    while True:
        try:  # earlier tests' hundreds of connections may still hold the client limit a moment
            client = daemon.client()
            if client.request("status")["clients"] == 1:
                return client
            client.close()
        except ControlError:
            pass
        assert time.monotonic() < deadline, "closed connections are still counted"
        time.sleep(0.1)


def test_too_many_clients_are_refused_in_a_sentence_and_status_still_answers(daemon):
    first = _alone(daemon)
    held = [_connect(daemon.socket) for _ in range(MAX_CLIENTS - 1)]
    for s in held[:3]:  # they are all being served
        s.sendall(b'{"cmd":"status"}\n')
        assert _lines(s, 1)[0]["ok"]
    extra = [_connect(daemon.socket) for _ in range(300)]
    answers = [_lines(s, 1)[0] for s in extra]
    assert all(not a["ok"] and "too many control clients" in a["error"] for a in answers)
    deadline = time.monotonic() + 10
    while (fds := len(os.listdir(f"/proc/{daemon.proc.pid}/fd"))) > MAX_CLIENTS + 100:
        assert time.monotonic() < deadline, f"{fds} fds: refused connections pile up"
        time.sleep(0.1)
    for s in extra + held:
        s.close()
    first.close()
    out = daemon.ctl("status", "--json", timeout=30)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["clients"] <= MAX_CLIENTS


def test_the_daemon_log_stays_small_and_it_quits_cleanly(daemon):
    with daemon.client() as client:
        client.request("quit")
    code, err = daemon.finish()
    assert code == 0, err
    assert "Traceback" not in err
    assert err.count("too many") <= 6, err[-2000:]
