"""The remote OpenAI-compatible target against real servers on loopback.

llama.cpp's own server on the tiny GGUF proves the happy path against a real implementation;
the fault server does what real servers will not on demand (stall, cut, garbage, 401/429/500,
slow first token, TLS with a private CA). Every failure must be a ``RemoteTargetError`` with plain
words and the URL, raised within its timeout, after exactly one request (no retries), and the API
key must never show in messages, logs or reprs. Timing bounds here are upper bounds on how long
a failure takes to detect (a timeout plus slack), never speed claims.
"""

from __future__ import annotations

import dataclasses
import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Optional

import pytest

from edgevoice import config as config_module
from edgevoice.config import ConfigError, RemoteConfig
from edgevoice.devtools.fault_server import (
    FaultServer,
    Reply,
    TlsFiles,
    free_port,
    llama_server,
    llama_server_missing,
    make_tls_files,
    token_text,
)
from edgevoice.llm import ChatTarget, TargetError
from edgevoice.llm.openai_target import OpenAITarget, RemoteTargetError, retry_after_s
from edgevoice.llm.sse import SseDecoder, SseError, SseEvent

KEY = "sk-test-0123456789SECRETkey"
KEY_ENV = "EDGEVOICE_TEST_REMOTE_KEY"
MESSAGES = [{"role": "user", "content": "say something short"}]
STALL_S = 0.3
FIRST_TOKEN_S = 0.4
SLACK_S = 0.5


def make_target(url: str, model: str, name: str = "remote", **changes) -> OpenAITarget:
    cfg = RemoteConfig(base_url=url, model=model, connect_timeout_s=1.0,
                       first_token_timeout_s=FIRST_TOKEN_S, stall_timeout_s=STALL_S,
                       max_completion_tokens=32)
    return OpenAITarget(dataclasses.replace(cfg, **changes), name)


def collect(target: OpenAITarget, cancel: Optional[threading.Event] = None) -> str:
    return "".join(target.stream(MESSAGES, cancel or threading.Event()))


def wait_until(condition, timeout_s: float = 2.0) -> bool:
    end = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > end:
            return False
        time.sleep(0.01)
    return True


@pytest.fixture
def server() -> Iterator[FaultServer]:
    with FaultServer(max_lifetime_s=60.0, max_hang_s=10.0) as srv:
        yield srv


@pytest.fixture
def target(server: FaultServer) -> Iterator[OpenAITarget]:
    with make_target(server.url, server.model) as t:
        yield t


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    try:
        return make_tls_files(tmp_path_factory.mktemp("tls"))
    except RuntimeError as exc:
        pytest.skip(f"cannot make a test CA: {exc}")


# -- llama.cpp's real server --------------------------------------------------------------------


@pytest.fixture(scope="module")
def llama(tiny_gguf: Path):
    missing = llama_server_missing()
    if missing:
        pytest.skip(missing)
    with llama_server(tiny_gguf, "tiny", api_key=KEY) as srv:
        yield srv


@pytest.fixture
def llama_target(llama, monkeypatch) -> Iterator[OpenAITarget]:
    monkeypatch.setenv(KEY_ENV, KEY)
    with make_target(llama.url, llama.model, api_key_env=KEY_ENV, max_completion_tokens=12,
                     first_token_timeout_s=10.0, stall_timeout_s=10.0) as t:
        yield t


def test_streams_from_llama_cpp_server_and_keeps_one_connection(llama_target):
    t = llama_target
    assert isinstance(t, ChatTarget)
    t.warm_up()
    assert t.server_models == ["tiny"]
    assert t.last_probe_ms is not None
    for _ in range(3):
        text = collect(t)
        stats = t.last_stats
        assert text and text == text.lstrip()  # gibberish, but something, without leading blanks
        assert stats is not None and stats.finish_reason in ("stop", "length")
        assert 1 <= stats.completion_tokens <= 12
        assert stats.first_token_ms is not None and 0 < stats.first_token_ms <= stats.total_ms
        assert t.reused_connection is True
    assert t.connections_opened == 1  # warm-up and three streams over one TCP connection
    info = t.describe()
    assert (info.kind, info.device, info.model) == ("openai", "remote", "tiny")
    assert info.details["base_url"] == t.url and info.details["api_key_set"]


def test_gemma2_behind_llama_cpp_server_needs_the_system_prompt_folded(llama, llama_target):
    # Gemma 2's template raises on a system role; llama.cpp's server then ends the stream empty
    messages = [{"role": "system", "content": "Be brief."}, *MESSAGES]
    with pytest.raises(RemoteTargetError) as info:
        "".join(llama_target.stream(messages, threading.Event()))
    assert info.value.kind == "cut" and "without finishing" in str(info.value)
    with make_target(llama.url, llama.model, api_key_env=KEY_ENV, fold_system_prompt=True,
                     first_token_timeout_s=10.0, stall_timeout_s=10.0) as folded:
        assert "".join(folded.stream(messages, threading.Event()))


def test_llama_cpp_server_refuses_a_wrong_key(llama, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "sk-wrong-key")
    with make_target(llama.url, llama.model, api_key_env=KEY_ENV) as t:
        with pytest.raises(RemoteTargetError) as info:
            collect(t)
    assert info.value.kind == "auth" and info.value.status == 401
    assert "refused the API key" in str(info.value) and llama.url in str(info.value)
    assert "sk-wrong-key" not in str(info.value)


def test_llama_cpp_server_lacking_the_model_is_named(llama, monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    with make_target(llama.url, "gemma-9000", api_key_env=KEY_ENV) as t:
        with pytest.raises(RemoteTargetError) as info:
            t.warm_up()
    message = str(info.value)
    assert info.value.kind == "model_missing"
    assert "'gemma-9000'" in message and "tiny" in message and llama.url in message


# -- the normal stream, on the fault server -----------------------------------------------------


def test_request_carries_model_limit_extra_fields_and_key(server, monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    extra = {"reasoning_effort": "low", "temperature": 0.2}
    with make_target(server.url, server.model, api_key_env=KEY_ENV, extra_body=extra) as t:
        assert collect(t) == "w0 w1 w2 "
    (request,) = server.chat_requests
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.headers["accept"] == "text/event-stream"
    body = request.body
    assert body["model"] == server.model and body["messages"] == MESSAGES
    assert body["stream"] is True
    assert body["max_completion_tokens"] == body["max_tokens"] == 32
    assert body["reasoning_effort"] == "low" and body["temperature"] == 0.2


def test_system_prompt_folded_for_templates_without_a_system_role(server):
    messages = [{"role": "system", "content": "Be brief."}, *MESSAGES,
                {"role": "assistant", "content": "ok"}, {"role": "user", "content": "more"}]
    with make_target(server.url, server.model, fold_system_prompt=True) as t:
        "".join(t.stream(messages, threading.Event()))
    sent = server.chat_requests[0].body["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]
    assert sent[0]["content"] == "Be brief.\n\nsay something short"


@pytest.mark.parametrize("field", ["max_completion_tokens", "max_tokens"])
def test_the_reply_limit_goes_in_the_configured_field(server, field):
    with make_target(server.url, server.model, max_tokens_field=field) as t:
        collect(t)
    body = server.chat_requests[0].body
    other = "max_tokens" if field == "max_completion_tokens" else "max_completion_tokens"
    assert body[field] == 32 and other not in body


def test_keep_alive_one_connection_for_warm_up_and_three_streams(server, target):
    target.warm_up()
    for i in range(3):
        server.script(Reply(tokens=i + 1))
        assert collect(target) == "".join(token_text(j) for j in range(i + 1)).lstrip()
    assert server.connections == 1
    assert {r.conn_id for r in server.requests} == {1}
    assert target.connections_opened == 1 and target.reused_connection


def test_cerebras_time_info_and_usage_from_the_final_chunk(server, target):
    server.script(Reply(tokens=4, cerebras=True))
    assert collect(target) == "w0 w1 w2 w3 "
    stats = target.last_stats
    assert stats.completion_tokens == 4 and stats.prompt_tokens == 3  # from `usage`
    assert stats.evaluated_tokens == 3 and stats.cached_tokens == 0
    assert stats.finish_reason == "stop"
    info = target.last_time_info
    assert set(info) >= {"queue_time", "prompt_time", "completion_time", "total_time"}
    assert target.last_usage["total_tokens"] == 7


def test_without_usage_tokens_are_counted_and_timed(server, target):
    server.script(Reply(tokens=5, interval_s=0.02))
    collect(target)
    stats = target.last_stats
    assert stats.completion_tokens == 5 and stats.prompt_tokens == 0
    assert stats.first_token_ms < stats.total_ms and stats.tokens_per_s is not None
    assert target.last_time_info is None


def test_reasoning_keeps_a_stream_alive_but_is_not_spoken(server, target):
    # 6 reasoning deltas 0.1 s apart: longer than the first-token timeout, never a stall
    server.script(Reply(tokens=2, reasoning=6, interval_s=0.1))
    assert collect(target) == "w0 w1 "
    assert target.last_stats.first_token_ms > FIRST_TOKEN_S * 1000  # the first spoken token


def test_a_finish_reason_without_done_is_a_complete_answer(server, target):
    server.script(Reply(tokens=2, done=False))
    assert collect(target) == "w0 w1 "
    assert target.last_stats.finish_reason == "stop"


def test_a_slow_consumer_is_not_a_stall(server, target):
    server.script(Reply(tokens=3))
    parts = []
    for part in target.stream(MESSAGES, threading.Event()):
        parts.append(part)
        time.sleep(STALL_S * 2)  # the turn manager may hold a token while TTS catches up
    assert "".join(parts) == "w0 w1 w2 "


def test_a_server_ignoring_the_limit_is_stopped(server):
    server.script(Reply(tokens=200, interval_s=0.01))
    with make_target(server.url, server.model, max_completion_tokens=5) as t:
        text = collect(t)
        assert t.last_stats.finish_reason == "length"
    assert len(text.split()) <= 5 + 8
    assert server.chat_requests[0].disconnected.wait(2.0)


def test_an_idle_connection_the_server_closed_is_replaced_without_a_retry():
    with FaultServer(keepalive_s=0.2) as srv, make_target(srv.url, srv.model) as t:
        t.warm_up()
        time.sleep(0.6)  # the server drops the idle kept-alive connection
        assert collect(t) == "w0 w1 w2 "
        assert t.connections_opened == 2 and not t.reused_connection
        assert len(srv.chat_requests) == 1


# -- failures: each one error, within its timeout, after exactly one request -------------------

FAILURES = {
    "stall": (Reply(tokens=6, stall_after=2), "stall", STALL_S,
              "no token for 0.3 s (stall_timeout_s) after 2 tokens"),
    "stall with keep-alive comments": (Reply(tokens=6, stall_after=1, trickle_s=0.05), "stall",
                                       STALL_S, "stalled"),
    "slow first token": (Reply(first_token_delay_s=5.0), "first_token", FIRST_TOKEN_S,
                         "no token within 0.4 s of sending the request"),
    "slow headers": (Reply(headers_delay_s=5.0), "first_token", FIRST_TOKEN_S, "no token"),
    "cut mid-stream": (Reply(tokens=6, cut_after=2), "cut", 0.0,
                       "closed mid-answer after 2 tokens"),
    "cut before a token": (Reply(tokens=6, cut_after=0), "cut", 0.0, "closed mid-answer"),
    "reset mid-stream": (Reply(tokens=6, cut_after=2, reset=True), "cut", 0.0, "closed"),
    "clean end without [DONE]": (Reply(finish_reason=None, done=False), "cut", 0.0,
                                 "ended after 3 tokens without finishing (no [DONE])"),
    "HTML in the stream": (Reply(garbage=b"<html><body>502 Bad Gateway</body></html>\n\n"),
                           "protocol", 0.0, "not an event stream"),
    "data that is not JSON": (Reply(garbage=b"data: {oops\n\n"), "protocol", 0.0, "not JSON"),
    "bytes that are not text": (Reply(garbage=b"data: \xff\xfe\n\n"), "protocol", 0.0,
                                "not UTF-8"),
    "wrong content type": (Reply(content_type="text/html"), "protocol", 0.0,
                           "text/html, not an event stream"),
    "error data event": (Reply(tokens=4, error_after=1), "server_error", 0.0,
                         "reported an error 503 mid-stream"),
    "event: error": (Reply(tokens=4, error_after=2, error_style="event"), "server_error", 0.0,
                     "reported an error 503 mid-stream"),
    "HTTP 500": (Reply(status=500), "http", 0.0, "server error on POST /chat/completions"),
    "HTTP 401": (Reply(status=401), "auth", 0.0, "refused the API key (HTTP 401"),
    "HTTP 403": (Reply(status=403), "auth", 0.0, "denied access (HTTP 403"),
    "HTTP 404": (Reply(status=404), "http", 0.0, "base_url ends in /v1"),
}


@pytest.mark.parametrize("case", list(FAILURES), ids=list(FAILURES))
def test_failures_raise_target_error_in_time_after_one_request(server, target, case):
    reply, kind, timeout_s, words = FAILURES[case]
    server.script(reply)
    start = time.monotonic()
    with pytest.raises(RemoteTargetError) as info:
        collect(target)
    elapsed = time.monotonic() - start
    err = info.value
    assert isinstance(err, TargetError)
    assert err.kind == kind, str(err)
    assert words in str(err)
    assert str(err).startswith(f"remote at {server.url}: ")
    assert "Traceback" not in str(err) and "Error:" not in str(err)
    assert elapsed < timeout_s + SLACK_S, f"{case} took {elapsed:.2f} s"
    if timeout_s:
        assert elapsed >= timeout_s * 0.9
    assert len(server.chat_requests) == 1  # no retries
    assert target.last_stats is not None and target.last_stats.finish_reason == "error"


@pytest.mark.parametrize("case", ["stall", "slow first token"])
def test_a_timed_out_request_is_closed(server, target, case):
    server.script(FAILURES[case][0])
    with pytest.raises(RemoteTargetError):
        collect(target)
    assert server.chat_requests[0].disconnected.wait(1.0)  # the server saw us hang up


def test_rate_limit_exposes_retry_after_and_quota_headers(server, target):
    headers = {
        "x-ratelimit-limit-requests-day": "14400",
        "x-ratelimit-remaining-requests-day": "14390",
        "x-ratelimit-reset-requests-day": "33011.38",
        "x-ratelimit-limit-tokens-minute": "60000",
        "x-ratelimit-remaining-tokens-minute": "0",
        "x-ratelimit-reset-tokens-minute": "11.5",
    }
    server.script(Reply(status=429, headers=headers))
    with pytest.raises(RemoteTargetError) as info:
        collect(target)
    assert info.value.kind == "rate_limit" and info.value.status == 429
    assert info.value.retry_after_s == pytest.approx(11.5)
    assert "try again in 12 s" in str(info.value)
    assert target.rate_limits["x-ratelimit-remaining-tokens-minute"] == "0"
    server.script(Reply(status=429, headers={"Retry-After": "7", **headers}))
    with pytest.raises(RemoteTargetError) as info:
        collect(target)
    assert info.value.retry_after_s == 7.0
    assert len(server.chat_requests) == 2


def test_retry_after_parsing():
    assert retry_after_s({"retry-after": "3"}) == 3.0
    assert retry_after_s({"x-ratelimit-reset-tokens": "6m0s",
                          "x-ratelimit-reset-requests": "20ms"}) == pytest.approx(0.02)
    assert retry_after_s({"x-ratelimit-reset-tokens-minute": "30",
                          "x-ratelimit-remaining-tokens-minute": "0",
                          "x-ratelimit-reset-requests-day": "80000",
                          "x-ratelimit-remaining-requests-day": "0"}) == 80000.0
    assert retry_after_s({"retry-after": "Wed, 21 Oct 2015 07:28:10 GMT"},
                         now=1445412480.0) == pytest.approx(10.0)
    assert retry_after_s({"retry-after": "soon"}) is None
    assert retry_after_s({}) is None


def test_connection_refused_is_immediate_and_plain():
    port = free_port()  # nothing listens there
    with make_target(f"http://127.0.0.1:{port}/v1", "m") as t:
        start = time.monotonic()
        with pytest.raises(RemoteTargetError) as info:
            collect(t)
        assert time.monotonic() - start < SLACK_S
        with pytest.raises(RemoteTargetError):
            t.probe()
    assert info.value.kind == "connect"
    assert str(info.value) == (f"remote at http://127.0.0.1:{port}/v1: connection refused: "
                               f"nothing is listening at 127.0.0.1:{port}")


def test_connect_timeout_when_the_server_never_accepts():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(3):  # fill the accept queue: further SYNs are dropped
            s = socket.socket()
            s.settimeout(0.2)
            try:
                s.connect(("127.0.0.1", port))
            except OSError:
                pass
            fillers.append(s)
        with make_target(f"http://127.0.0.1:{port}/v1", "m", connect_timeout_s=0.3) as t:
            start = time.monotonic()
            with pytest.raises(RemoteTargetError) as info:
                collect(t)
            elapsed = time.monotonic() - start
    finally:
        for s in fillers:
            s.close()
        listener.close()
    assert info.value.kind == "connect"
    assert "within 0.3 s (connect_timeout_s)" in str(info.value)
    assert elapsed < 0.3 + SLACK_S


def test_unknown_host_is_named():
    with make_target("http://edgevoice-no-such-host.invalid/v1", "m") as t:
        with pytest.raises(RemoteTargetError) as info:
            collect(t)
    assert info.value.kind == "connect"
    assert "cannot resolve host edgevoice-no-such-host.invalid" in str(info.value)


# -- cancellation -------------------------------------------------------------------------------


def test_cancel_while_blocked_on_the_network_ends_promptly_and_hangs_up(server, target):
    server.script(Reply(tokens=50, interval_s=0.5))
    cancel = threading.Event()
    stream = target.stream(MESSAGES, cancel)
    assert next(stream) == "w0 "
    timer = threading.Timer(0.1, cancel.set)
    timer.start()
    with pytest.raises(StopIteration):
        next(stream)  # blocked in recv until the watchdog shuts the socket down
    ended = time.monotonic()
    timer.join()
    assert target.last_stats.finish_reason == "cancelled"
    record = server.chat_requests[0]
    assert record.disconnected.wait(1.0)
    assert record.disconnected_at - ended < SLACK_S
    assert record.tokens_sent < 5
    # the next turn simply opens a new connection
    server.script(Reply(tokens=2))
    assert collect(target) == "w0 w1 "
    assert target.connections_opened == 2


def test_cancel_timing_is_within_milliseconds(server, target):
    server.script(Reply(tokens=3, first_token_delay_s=5.0))
    cancel = threading.Event()
    stream = target.stream(MESSAGES, cancel)
    set_at: list[float] = []

    def fire() -> None:
        set_at.append(time.monotonic())
        cancel.set()

    threading.Timer(0.15, fire).start()
    assert list(stream) == []
    assert time.monotonic() - set_at[0] < 0.1
    assert target.last_stats.finish_reason == "cancelled"
    assert server.chat_requests[0].disconnected.wait(1.0)


def test_cancel_before_the_call_sends_nothing(server, target):
    cancel = threading.Event()
    cancel.set()
    assert collect(target, cancel) == ""
    assert target.last_stats.finish_reason == "cancelled"
    assert server.chat_requests == []


def test_closing_the_iterator_hangs_up(server, target):
    server.script(Reply(tokens=50, interval_s=0.05))
    stream = target.stream(MESSAGES, threading.Event())
    next(stream)
    stream.close()
    assert target.last_stats.finish_reason == "cancelled"
    assert server.chat_requests[0].disconnected.wait(1.0)


def test_close_from_another_thread_ends_a_stream(server, target):
    server.script(Reply(tokens=50, interval_s=0.5))
    stream = target.stream(MESSAGES, threading.Event())
    next(stream)
    threading.Timer(0.1, target.close).start()
    with pytest.raises(RemoteTargetError, match="closed while answering"):
        next(stream)
    with pytest.raises(RemoteTargetError, match="closed"):
        collect(target)


# -- TLS ----------------------------------------------------------------------------------------


def test_tls_with_a_private_ca(tls_files):
    with FaultServer(tls=tls_files) as srv:
        assert srv.url.startswith("https://")
        with make_target(srv.url, srv.model, ca_bundle=str(tls_files.ca)) as t:
            t.connect()
            time.sleep(0.1)  # TLS 1.3 session tickets wait unread: not a dropped connection
            assert collect(t) == "w0 w1 w2 "
            t.warm_up()
            assert t.connections_opened == 1 and srv.connections == 1
        with make_target(srv.url, srv.model) as t:  # system CAs don't know ours
            with pytest.raises(RemoteTargetError) as info:
                t.warm_up()
        assert info.value.kind == "tls"
        assert "could not be verified" in str(info.value) and "set ca_bundle" in str(info.value)
        assert wait_until(lambda: srv.tls_failures)  # the server saw the handshake fail
        assert len(srv.chat_requests) == 1


def test_tls_cut_and_cancel_work_under_tls(tls_files):
    with FaultServer(tls=tls_files) as srv, \
            make_target(srv.url, srv.model, ca_bundle=str(tls_files.ca)) as t:
        srv.script(Reply(tokens=6, cut_after=2), Reply(tokens=50, interval_s=0.5))
        with pytest.raises(RemoteTargetError, match="closed mid-answer after 2 tokens"):
            collect(t)
        cancel = threading.Event()
        stream = t.stream(MESSAGES, cancel)
        next(stream)
        threading.Timer(0.1, cancel.set).start()
        start = time.monotonic()
        assert list(stream) == []
        assert time.monotonic() - start < 0.1 + SLACK_S
        assert srv.chat_requests[1].disconnected.wait(1.0)


def test_tls_verification_off_works_and_warns(tls_files, caplog):
    with FaultServer(tls=tls_files) as srv:
        with caplog.at_level(logging.WARNING):
            t = make_target(srv.url, srv.model, verify_tls=False)
        with t:
            assert collect(t) == "w0 w1 w2 "
    assert "TLS certificate verification is OFF" in caplog.text


def test_https_to_a_plain_http_server_says_so(server):
    url = server.url.replace("http://", "https://")
    with make_target(url, server.model) as t:
        with pytest.raises(RemoteTargetError) as info:
            collect(t)
    assert info.value.kind == "tls" and "plain http://" in str(info.value)


# -- the API key --------------------------------------------------------------------------------


def test_api_key_never_in_messages_logs_or_reprs(monkeypatch, caplog):
    monkeypatch.setenv(KEY_ENV, KEY)
    errors: list[BaseException] = []
    with caplog.at_level(logging.DEBUG), FaultServer(api_key=KEY) as srv:
        t = make_target(srv.url, srv.model, api_key_env=KEY_ENV)
        t.warm_up()
        collect(t)
        echo = f'{{"error": {{"message": "Incorrect API key provided: {KEY}"}}}}'.encode()
        srv.script(Reply(status=401, body=echo), Reply(tokens=4, stall_after=1),
                   Reply(garbage=f"data: {KEY}\n\n".encode()))
        for _ in range(3):
            with pytest.raises(RemoteTargetError) as info:
                collect(t)
            errors.append(info.value)
        shown = [repr(t), str(t.describe()), repr(vars(t)), caplog.text]
        shown += [f"{e!s} {e!r} {e.args}" for e in errors]
        t.close()
        assert srv.requests[0].headers["authorization"] == f"Bearer {KEY}"
    for text in shown:
        assert KEY not in text
    assert "***" in str(errors[0]) and "***" in str(errors[2])


def test_missing_key_variable_fails_without_sending(server, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    with make_target(server.url, server.model, api_key_env=KEY_ENV) as t:
        with pytest.raises(RemoteTargetError) as info:
            collect(t)
        with pytest.raises(RemoteTargetError):
            t.warm_up()
    assert info.value.kind == "auth" and f"{KEY_ENV} (api_key_env) is not set" in str(info.value)
    assert server.requests == []


def test_server_wanting_a_key_we_do_not_have(monkeypatch):
    with FaultServer(api_key=KEY) as srv, make_target(srv.url, srv.model) as t:
        with pytest.raises(RemoteTargetError) as info:
            t.probe()
    assert info.value.kind == "auth" and "set api_key_env" in str(info.value)


# -- probe and warm-up ------------------------------------------------------------------------


def test_probe_measures_and_checks_the_model(server, target):
    assert target.probe() >= 0.0
    server.models = ("other-model", "third")
    with pytest.raises(RemoteTargetError) as info:
        target.probe()
    assert info.value.kind == "model_missing"
    assert "'fault-model'" in str(info.value) and "other-model, third" in str(info.value)
    server.models_status = 404  # a server without a models list: reachable, not checkable
    assert target.probe() >= 0.0
    server.models_status = 503
    with pytest.raises(RemoteTargetError, match="HTTP 503"):
        target.probe()


def test_probe_after_the_server_died(server, target):
    target.warm_up()
    server.stop()
    with pytest.raises(RemoteTargetError) as info:
        target.probe()
    assert info.value.kind in ("connect", "cut")


# -- configuration ------------------------------------------------------------------------------


@pytest.mark.parametrize(("changes", "words"), [
    ({"base_url": None}, "has no base_url"),
    ({"model": None}, "has no model"),
    ({"base_url": "ftp://host/v1"}, "http:// or https://"),
    ({"base_url": "http://host:99999/v1"}, "invalid port"),
    ({"base_url": "https://host/v1?key=abc"}, "must not have a query"),
    ({"ca_bundle": "/nonexistent/ca.pem"}, "ca_bundle /nonexistent/ca.pem does not exist"),
    ({"extra_body": {"stream": False}}, "extra_body may not set stream"),
])
def test_bad_remote_config_is_a_config_error(changes, words):
    cfg = dataclasses.replace(RemoteConfig(base_url="https://h/v1", model="m"), **changes)
    with pytest.raises(ConfigError, match=words.replace("?", r"\?")):
        OpenAITarget(cfg, "cloud")


def test_ca_bundle_that_is_not_pem(tmp_path):
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate\n")
    cfg = RemoteConfig(base_url="https://h/v1", model="m", ca_bundle=str(bad))
    with pytest.raises(ConfigError, match="no usable PEM"):
        OpenAITarget(cfg, "cloud")


@dataclasses.dataclass(frozen=True)
class _Holder:
    remotes: dict[str, RemoteConfig] = config_module.opt(None, "remote targets", factory=dict)


def _parse_holder(text: str) -> _Holder:
    import yaml

    data = yaml.load(text, Loader=config_module._LineLoader)  # noqa: S506
    found = config_module._Found()
    holder = config_module._build(_Holder, data, "", "my.yaml", None, found)
    if found.problems:
        raise found.problems[0]
    return holder


def test_remote_config_from_yaml_with_extra_body_mapping():
    holder = _parse_holder(
        "remotes:\n"
        "  cerebras:\n"
        "    base_url: https://api.cerebras.ai/v1\n"
        "    model: llama3.1-8b\n"
        "    api_key_env: CEREBRAS_API_KEY\n"
        "    stall_timeout_s: 2\n"
        "    extra_body: {reasoning_effort: low, stop: [\"\\n\\n\"], nested: {a: 1}}\n"
        "  lan:\n"
        "    base_url: https://cs3.lan:8443/v1\n"
        "    model: m\n"
        "    ca_bundle: /etc/edgevoice/lan-ca.pem\n"
    )
    cerebras = holder.remotes["cerebras"]
    assert cerebras.stall_timeout_s == 2.0 and cerebras.verify_tls is True
    assert cerebras.extra_body == {"reasoning_effort": "low", "stop": ["\n\n"],
                                   "nested": {"a": 1}}
    assert type(cerebras.extra_body["nested"]) is dict  # plain, not the loader's mapping
    assert holder.remotes["lan"].extra_body == {}
    assert RemoteConfig().extra_body == {} and RemoteConfig().extra_body is not \
        RemoteConfig().extra_body


@pytest.mark.parametrize(("text", "expected"), [
    ("remotes:\n  x:\n    stall_timeout_s: 0\n", ["line 3", "remotes.x.stall_timeout_s",
                                                     "out of range"]),
    ("remotes:\n  x:\n    extra_body: [1, 2]\n", ["line 3", "remotes.x.extra_body",
                                                    "a mapping"]),
    ("remotes:\n  x:\n    base_ur: h\n", ["line 3", "did you mean `remotes.x.base_url`"]),
    ("remotes: 3\n", ["line 1", "`remotes` must be a mapping of names to sections"]),
    ("remotes:\n  x:\n    max_tokens_field: n\n", ["remotes.x.max_tokens_field",
                                                    "'max_tokens'"]),
])
def test_remote_config_errors_name_key_and_line(text, expected):
    with pytest.raises(ConfigError) as info:
        _parse_holder(text)
    for part in expected:
        assert part in str(info.value)


# -- the SSE decoder ----------------------------------------------------------------------------

STREAM = (b": comment\r\ndata: {\"a\": 1}\r\n\r\nevent: error\ndata: line1\ndata: line2\n\n"
          b"id: 7\nretry: 100\ndata: [DONE]\n\nerror: {\"message\": \"boom\"}\n\n")
EXPECTED = [SseEvent("message", '{"a": 1}'), SseEvent("error", "line1\nline2"),
            SseEvent("message", "[DONE]"), SseEvent("error", '{"message": "boom"}')]


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, len(STREAM)])
def test_sse_decoder_at_any_split(size):
    decoder = SseDecoder()
    events = []
    for i in range(0, len(STREAM), size):
        events += decoder.feed(STREAM[i:i + size])
    assert events == EXPECTED
    assert decoder.finish() is None


def test_sse_decoder_rejects_garbage_and_huge_lines():
    with pytest.raises(SseError, match="not an event-stream field"):
        SseDecoder().feed(b"<!doctype html>\n")
    with pytest.raises(SseError, match="not UTF-8"):
        SseDecoder().feed(b"data: \xc3\x28\n")
    with pytest.raises(SseError, match="longer than"):
        SseDecoder(max_line_bytes=100).feed(b"data: " + b"x" * 200)
    decoder = SseDecoder()
    decoder.feed(b"data: [DONE]")
    assert decoder.finish() == SseEvent("message", "[DONE]")
