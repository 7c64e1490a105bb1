"""Bounded fuzzing (hypothesis) of the parsers hostile input reaches first: the SSE decoder,
the control protocol and the config loader. Each may refuse input, only in its own error type,
never with another exception, never by hanging; the fault campaign's inputs are the seeds."""

from __future__ import annotations

import json
import time

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from edgevoice.config import check_config
from edgevoice.control.protocol import ProtocolError, encode, error_reply, ok_reply, parse_request
from edgevoice.llm.sse import SseDecoder, SseError

FUZZ = settings(max_examples=100, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])


def _strict(line: bytes):
    def refuse(name):
        raise AssertionError(f"{name} in {line!r}")

    return json.loads(line, parse_constant=refuse)


# -- SSE ------------------------------------------------------------------------------------


@FUZZ
@given(st.lists(st.binary(max_size=300), max_size=12))
@example([b"data: {\"a\":1}\n\n", b"data: [DONE]\n\n"])
@example([b"<!DOCTYPE html>\n<p>login</p>\n"])
@example([b"data: " + b"[" * 30_000 + b"\n\n"])
@example([b"\xff\xfe\x00d\x00a\x00t\x00a\x00:\n\n"])
@example([b"data: x\r", b"\ndata: y\r\n\r\n", b"event: error\ndata: {}\n\n"])
def test_sse_decoder_yields_events_or_sse_errors_only(chunks):
    decoder = SseDecoder(max_line_bytes=4096)
    try:
        for chunk in chunks:
            for event in decoder.feed(chunk):
                assert isinstance(event.event, str) and isinstance(event.data, str)
        decoder.finish()
    except SseError:
        pass


@FUZZ
@given(st.lists(st.text(alphabet=st.characters(blacklist_characters="\r\n"), min_size=1,
                        max_size=40),
                min_size=1, max_size=5), st.integers(1, 7))
def test_sse_events_survive_any_chunking(datas, cut):
    stream = b"".join(f"data: {d}\n\n".encode() for d in datas)
    decoder = SseDecoder()
    events = []
    for i in range(0, len(stream), cut):
        events += decoder.feed(stream[i:i + cut])
    assert [e.data for e in events] == datas


# -- control protocol ---------------------------------------------------------------------


@FUZZ
@given(st.one_of(st.binary(max_size=400),
                 st.recursive(st.none() | st.booleans() | st.floats() | st.integers()
                              | st.text(max_size=20),
                              lambda kids: st.lists(kids, max_size=4)
                              | st.dictionaries(st.sampled_from(["id", "cmd", "v", "text",
                                                                 "policy", "x"]), kids,
                                                max_size=5),
                              max_leaves=20).map(lambda v: json.dumps(v).encode())))
@example(b'{"id":1,"cmd":' + b"[" * 30_000 + b"]" * 30_000 + b"}")
@example(b'{"id":NaN,"cmd":"status"}')
@example(b'{"id":1e400,"cmd":"status"}')
@example(b'{"id":' + b"9" * 5000 + b',"cmd":"status"}')
@example(b'{"cmd":"say","text":"\xff"}')
def test_control_parser_answers_every_line_in_strict_json(line):
    try:
        request = parse_request(line)
    except ProtocolError as exc:
        reply = encode(error_reply(exc.request_id, str(exc)))
    else:
        reply = encode(ok_reply(request.id, {"echo": request.args}))
    assert reply.endswith(b"\n") and reply.count(b"\n") == 1
    _strict(reply)


# -- config loader -------------------------------------------------------------------------

SEEDS = [
    "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
    "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n",
    "llm:\n  model: " + "[" * 20_000 + "]" * 20_000 + "\n",
    "audio:\n  sample_rate: " + "9" * 5000 + "\n",
    "vad:\n  neural_threshold: .nan\n",
    "llm:\n  max_tokens: 8\nllm:\n  max_tokens: 9\n",
    "remotes:\n  r:\n    base_url: 'http://[::1'\n    model: m\n"
    "    extra_body: {d: 2024-01-01, b: !!binary aGVsbG8=, s: !!set {a, b}}\n",
    "? [a, b]\n: 1\n",
    "x: !!python/object:os.system [echo hi]\n",
    "\x00\x01\x02",
]


@FUZZ
@given(st.one_of(st.sampled_from(SEEDS),
                 st.text(alphabet=st.sampled_from(list("ab:-[]{}&*!?,.#'\"\n |>0123456789")),
                         max_size=120),
                 st.builds(lambda a, b: a[: len(a) // 2] + b, st.sampled_from(SEEDS),
                           st.text(max_size=30))))
def test_config_loader_reports_problems_and_never_raises(text):
    started = time.perf_counter()
    checked = check_config(text, "fuzz.yaml")
    assert time.perf_counter() - started < 5
    for problem in checked.problems:
        assert "fuzz.yaml" in str(problem)
