"""Issue 14 at the remote target: every network operation has a total deadline, and text a
server chooses is made safe — against real misbehaving servers on loopback.

Each case here reproduces one the issue saw fail: a /v1/models answered one byte a second (the
probe hung: per-read timeouts restart on every byte), a TLS handshake that trickles, a resolver
that hangs, a lone surrogate in the stream (crashed `ask`), control characters and an echoed API
key in server strings (reached log lines). Time bounds are upper bounds on failure detection.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import socket
import threading
import time

import pytest

from edgevoice.config import RemoteConfig
from edgevoice.devtools.fault_server import FaultServer, Reply, trickling_tls_server
from edgevoice.llm.openai_target import OpenAITarget, RemoteTargetError
from edgevoice.llm.safe_text import for_log, speakable

KEY = "sk-test-offload-0123456789SECRET"
KEY_ENV = "EDGEVOICE_TEST_OFFLOAD_KEY"
MESSAGES = [{"role": "user", "content": "say something"}]
SLACK_S = 0.6


def make_target(url: str, name: str = "remote", **changes) -> OpenAITarget:
    cfg = RemoteConfig(base_url=url, model="fault-model", connect_timeout_s=0.5,
                       first_token_timeout_s=0.5, stall_timeout_s=0.5,
                       max_completion_tokens=32)
    return OpenAITarget(dataclasses.replace(cfg, **changes), name)


def collect(target: OpenAITarget) -> str:
    return "".join(target.stream(MESSAGES, threading.Event()))


@pytest.fixture
def server():
    with FaultServer(max_lifetime_s=60.0, max_hang_s=10.0) as srv:
        yield srv


# -- total deadlines ------------------------------------------------------------------------------


def test_a_models_list_trickled_one_byte_at_a_time_fails_the_probe_at_its_deadline(server):
    server.models_trickle_s = 0.05  # ~70 bytes: 3.5 s at this pace; the deadline is 0.5 s
    with make_target(server.url) as t:
        start = time.monotonic()
        with pytest.raises(RemoteTargetError) as info:
            t.probe()
        elapsed = time.monotonic() - start
    assert info.value.kind == "timeout" and "GET /models within 0.5 s" in str(info.value)
    assert elapsed < 0.5 + SLACK_S, f"the probe took {elapsed:.2f} s"
    assert server.requests[0].disconnected.wait(1.0)  # the fired deadline closed the socket


def test_a_chat_body_trickled_one_byte_at_a_time_is_a_first_token_timeout(server):
    server.script(Reply(tokens=3, trickle_bytes_s=0.02))  # bytes keep coming, tokens do not
    with make_target(server.url) as t:
        start = time.monotonic()
        with pytest.raises(RemoteTargetError) as info:
            collect(t)
        elapsed = time.monotonic() - start
    assert info.value.kind == "first_token"
    assert elapsed < 0.5 + SLACK_S


def test_a_trickling_tls_handshake_fails_at_the_connect_deadline():
    with trickling_tls_server(interval_s=0.05) as url, make_target(url) as t:
        start = time.monotonic()
        with pytest.raises(RemoteTargetError) as info:
            collect(t)
        elapsed = time.monotonic() - start
    assert info.value.kind == "connect"
    assert "within 0.5 s (connect_timeout_s)" in str(info.value)
    assert elapsed < 0.5 + SLACK_S, f"the handshake took {elapsed:.2f} s"


def test_name_resolution_counts_against_the_connect_deadline(monkeypatch):
    # A resolver that hangs cannot be made on loopback: this one blocks like a dead DNS server.
    real = socket.getaddrinfo

    def hanging(host, *args, **kw):
        flags = args[4] if len(args) > 4 else kw.get("flags", 0)
        if host == "slow-dns.invalid" and not flags & socket.AI_NUMERICHOST:
            time.sleep(3.0)  # (a numeric-only lookup never asks a DNS server)
        return real(host, *args, **kw)

    monkeypatch.setattr(socket, "getaddrinfo", hanging)
    with make_target("http://slow-dns.invalid:9/v1") as t:
        start = time.monotonic()
        with pytest.raises(RemoteTargetError) as info:
            t.probe()
        elapsed = time.monotonic() - start
    assert info.value.kind == "connect"
    assert "cannot resolve host slow-dns.invalid within 0.5 s" in str(info.value)
    assert elapsed < 0.5 + SLACK_S


def test_a_cancel_ends_a_connect_that_the_network_never_answers():
    # A full accept queue drops SYNs: the connect would wait out connect_timeout_s (3 s here),
    # holding a hedged turn's remote thread (and the next turn) long after the local model won.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(3):
            s = socket.socket()
            s.settimeout(0.2)
            try:
                s.connect(("127.0.0.1", port))
            except OSError:
                pass
            fillers.append(s)
        with make_target(f"http://127.0.0.1:{port}/v1", connect_timeout_s=3.0) as t:
            cancel = threading.Event()
            threading.Timer(0.2, cancel.set).start()
            start = time.monotonic()
            assert "".join(t.stream(MESSAGES, cancel)) == ""
            elapsed = time.monotonic() - start
            assert t.last_stats.finish_reason == "cancelled"
    finally:
        for s in fillers:
            s.close()
        listener.close()
    assert elapsed < 0.2 + 0.3, f"the connect held on for {elapsed:.2f} s"


# -- what the server says, made safe ------------------------------------------------------------


def test_a_lone_surrogate_and_control_characters_never_reach_the_reply(server):
    texts = ("Hel\ud800lo ", "wor\x1b[2Jld\x07 ", "a\tb\n", "\udfffend")
    server.script(Reply(tokens=4, texts=texts))
    with make_target(server.url) as t:
        text = collect(t)
    assert text == "Hello world a\tb\nend"
    text.encode("utf-8")  # printable, storable: raised UnicodeEncodeError before
    json.dumps({"reply": text}, ensure_ascii=False).encode("utf-8")


def test_server_strings_in_errors_are_escaped_to_one_line(server):
    body = json.dumps({"error": {"message": "boom\x1b[31m\r\n2026-01-01 INFO forged line\ud800"}})
    server.script(Reply(status=500, body=body.encode()))
    with make_target(server.url) as t:
        with pytest.raises(RemoteTargetError) as info:
            collect(t)
    said = str(info.value)
    assert "\x1b" not in said and "\n" not in said and "\r" not in said
    assert "\\x1b[31m" in said and "\\ud800" in said
    said.encode("utf-8")


def test_an_api_key_echoed_into_a_time_info_key_name_is_never_logged(monkeypatch, caplog):
    monkeypatch.setenv(KEY_ENV, KEY)
    with FaultServer(api_key=KEY) as srv, caplog.at_level(logging.DEBUG):
        srv.script(Reply(tokens=2, cerebras=True,
                         time_info_extra={f"{KEY}_time": 0.25, "x\x1b[2J_time": 0.1}),
                   Reply(tokens=2, cerebras=True, time_info_extra={f"{KEY}_time": 0.25}))
        srv.models = ("fault-model", f"echo-{KEY}")
        with make_target(srv.url, api_key_env=KEY_ENV) as t:
            t.warm_up()
            assert collect(t) == "w0 w1 "
            assert collect(t) == "w0 w1 "
            described = json.dumps(t.describe().details)
    assert "server" in caplog.text and "***" in caplog.text  # the line is there, redacted
    assert KEY not in caplog.text and KEY not in described
    assert "\x1b" not in caplog.text


def test_safe_text_helpers():
    assert speakable("a\x00b\x7fc\x9fd\ud800e\n\tf\r") == "abcde\n\tf"
    assert for_log("k=sk-1 \x1b\n", ("sk-1",)) == "k=*** \\x1b\\x0a"
    assert for_log("x" * 500, limit=20) == "x" * 17 + "..."
    assert for_log("\u2028") == "\\u2028"


def test_ask_json_survives_a_lone_surrogate_and_escapes_a_hostile_error(tmp_path):
    # `ask` crashed with a traceback on "\ud800" and did not fail over; here the remote wins the
    # first turn with it, and a second remote's error body tries to forge log lines.
    import os
    import subprocess
    import sys

    cfg = tmp_path / "c.yaml"
    env = {k: v for k, v in os.environ.items() if k != "EDGEVOICE_MODELS_DIR"}
    env.update(XDG_DATA_HOME=str(tmp_path / "data"), XDG_CACHE_HOME=str(tmp_path / "cache"),
               PYTHONIOENCODING="utf-8")  # no local model: the remote alone answers
    with FaultServer(default=Reply(tokens=8, texts=("a\ud800b ", "c\x1b[1md\x00 "))) as srv:
        cfg.write_text("llm:\n  policy: remote\nremotes:\n  cs3:\n"
                       f"    base_url: {srv.url}\n    model: fault-model\n")
        out = subprocess.run([sys.executable, "-m", "edgevoice", "--config", str(cfg), "ask",
                              "hello", "--json"], capture_output=True, text=True, timeout=60,
                             env=env)
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr
    turn = json.loads(out.stdout)
    assert turn["target"] == "cs3" and turn["reply"] == "ab cd " * 4
    hostile = json.dumps({"error": {"message": "x\r\nERROR forged\x1b[2J"}})
    with FaultServer(default=Reply(status=500, body=hostile.encode())) as srv:
        cfg.write_text("llm:\n  policy: remote\nremotes:\n  cs3:\n"
                       f"    base_url: {srv.url}\n    model: fault-model\n")
        out = subprocess.run([sys.executable, "-m", "edgevoice", "--config", str(cfg), "ask",
                              "hello", "--json"], capture_output=True, text=True, timeout=60,
                             env=env)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    turn = json.loads(out.stdout)
    for text in (turn["route_reason"], turn["error"], turn["failover"]["reason"], out.stderr):
        assert "\x1b" not in text and "\r" not in text and "\nERROR forged" not in text
    assert "x ERROR forged\\x1b[2J" in turn["failover"]["reason"]
