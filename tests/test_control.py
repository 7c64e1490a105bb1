"""The control API over a real Unix socket, against `edgevoice run` in file mode."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys

import pytest
from _daemon import Daemon, compose

from edgevoice.control.client import ControlError
from edgevoice.control.protocol import ProtocolError, parse_request
from edgevoice.evaluation import speech_dir

SPEECH = speech_dir()
needs_speech = pytest.mark.skipif(SPEECH is None, reason="speech clips not found")


@pytest.fixture
def quiet_wav(tmp_path):
    path = tmp_path / "quiet.wav"
    compose([(None, 120.0)], path)
    return path


def test_parse_request_accepts_v1_and_explains_everything_else():
    assert parse_request(b'{"v":1,"id":3,"cmd":"say","text":"hi"}').args == {"text": "hi"}
    assert parse_request(b'{"cmd":"status"}').id is None
    for line, words in [(b"nope", "not a JSON object"), (b"[1]", "JSON object"),
                        (b'{"cmd":"fly"}', "unknown command 'fly'"),
                        (b'{"v":2,"cmd":"status"}', "unsupported protocol version 2"),
                        (b'{"cmd":"say"}', "needs `text`"),
                        (b'{"cmd":"status","x":1}', "takes no 'x'"),
                        (b'{"cmd":"set_policy","policy":"cloud"}', "policy must be one of"),
                        (b'{"id":[1],"cmd":"status"}', "`id` must be")]:
        with pytest.raises(ProtocolError, match=words):
            parse_request(line)


def test_status_mute_policy_round_trip_and_quit(quiet_wav):
    daemon = Daemon(quiet_wav)
    try:
        with daemon.client() as client:
            assert stat.S_IMODE(os.stat(daemon.socket).st_mode) == 0o600
            status = client.request("status")
            assert status["muted"] is False and status["policy"] == "local"
            assert status["activation"] == {"mode": "always", "active": True}
            assert status["pid"] == daemon.proc.pid and status["socket"] == str(daemon.socket)
            assert client.request("mute") == {"muted": True}
            assert client.request("status")["muted"] is True
            daemon.wait_for(lambda e: e.get("state") == "muted")
            client.request("unmute")
            assert client.request("set_policy", policy="auto") == {"policy": "auto"}
            assert client.request("status")["policy"] == "auto"
            with pytest.raises(ControlError, match="push-to-talk is off"):
                client.request("ptt_start")
            out = daemon.ctl("status", "--json")
            assert out.returncode == 0 and json.loads(out.stdout)["policy"] == "auto"
            out = daemon.ctl("ask", "what time is it")
            assert out.returncode == 0 and out.stdout.startswith("It's"), out.stderr
            assert client.request("quit") == {"stopping": True}
        code, err = daemon.finish()
    finally:
        daemon.proc.kill()
    assert code == 0 and "Traceback" not in err, err
    assert not daemon.socket.exists()


def _raw_lines(sock: socket.socket, n: int) -> list[dict]:
    buf = b""
    while buf.count(b"\n") < n:
        data = sock.recv(65536)
        assert data, "the daemon closed the connection"
        buf += data
    return [json.loads(line) for line in buf.splitlines()[:n]]


def test_bad_messages_get_errors_and_the_daemon_keeps_serving(quiet_wav):
    daemon = Daemon(quiet_wav)
    try:
        daemon.client().close()  # wait for the socket
        raw = socket.socket(socket.AF_UNIX)
        raw.connect(str(daemon.socket))
        raw.sendall(b"not json\n" b'{"cmd":"fly","id":1}\n' b"\xff\xfe\n" b"[]\n"
                    + b'{"cmd":"say","text":"' + b"x" * 200_000 + b'"}\n'
                    + b'{"id":9,"cmd":"status"}\n')
        replies = _raw_lines(raw, 6)
        assert [r["ok"] for r in replies] == [False] * 5 + [True]
        assert "unknown command 'fly'" in replies[1]["error"] and replies[1]["id"] == 1
        assert "line longer than" in replies[4]["error"]
        assert replies[5]["id"] == 9 and replies[5]["result"]["state"]
        raw.close()

        # A subscriber that never reads is dropped; the daemon and other clients carry on.
        lazy = socket.socket(socket.AF_UNIX)
        lazy.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        lazy.connect(str(daemon.socket))
        lazy.sendall(b'{"cmd":"subscribe"}\n')
        with daemon.client() as client:
            for _ in range(3000):
                client.request("mute")
                client.request("unmute")
            assert client.request("status")["muted"] is False
        lazy.settimeout(10)
        received = 0
        while data := lazy.recv(65536):
            received += len(data)
            assert received < 5_000_000, "the lazy client was never dropped"
        lazy.close()
        with daemon.client() as client:
            client.request("quit")
        code, err = daemon.finish()
    finally:
        daemon.proc.kill()
    assert code == 0 and "Traceback" not in err, err


def test_ctl_without_a_daemon_is_one_sentence_and_exit_2(tmp_path):
    sock = tmp_path / "none.sock"
    out = subprocess.run([sys.executable, "-m", "edgevoice", "ctl", "--socket", str(sock),
                          "status"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        f"edgevoice: error: no edgevoice daemon is listening on {sock}: start one with "
        "`edgevoice run`"]


def test_a_second_daemon_is_refused_and_a_stale_socket_replaced(quiet_wav):
    first = Daemon(quiet_wav)
    try:
        first.client().close()
        second = subprocess.run(
            [sys.executable, "-m", "edgevoice", "--config", str(first.config), "run", "--input",
             str(quiet_wav), "--output", str(first.dir / "second.wav")],
            capture_output=True, text=True, timeout=60)
        assert second.returncode == 2
        assert "another edgevoice daemon is already running" in second.stderr
    finally:
        first.proc.kill()  # dies without removing its socket
        first.proc.wait(10)
    assert stat.S_ISSOCK(os.lstat(first.socket).st_mode)
    third = Daemon(quiet_wav, socket=first.socket)
    try:
        with third.client() as client:
            assert client.request("status")["pid"] == third.proc.pid
            client.request("quit")
        code, err = third.finish()
    finally:
        third.proc.kill()
    assert code == 0, err


@needs_speech
def test_ctl_events_shows_a_turn(tmp_path):
    wav = tmp_path / "in.wav"
    compose([(None, 4.0), (SPEECH / "pocketsphinx__goforward.wav", 6.0)], wav)
    daemon = Daemon(wav)
    try:
        daemon.client().close()
        events = subprocess.Popen(
            [sys.executable, "-m", "edgevoice", "ctl", "--socket", str(daemon.socket), "events"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        code, err = daemon.finish(90)  # the input ends, the daemon stops, `events` ends
        out, ev_err = events.communicate(timeout=30)
    finally:
        daemon.proc.kill()
    assert code == 0, err
    assert events.returncode == 0, ev_err
    lines = [json.loads(line) for line in out.splitlines()]
    assert all(e["v"] == 1 for e in lines)
    kinds = [e["event"] for e in lines]
    assert {"state", "partial", "transcript", "turn"} <= set(kinds)
    turn = lines[kinds.index("turn")]
    assert "forward" in turn["transcript"] and "first_audio" in turn["latency_ms"]
