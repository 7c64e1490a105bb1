"""Issue 14, item 5: a LAN we can break. llama.cpp's own server runs in a network namespace
behind a veth pair (devtools/lan.py); the link gets ``tc netem`` delay, jitter and loss (when the
kernel has sch_netem), is taken down mid-stream, or gets a blackhole route — and the turn still
answers, from the local model when the remote cannot, without a word said twice.

Needs root (namespaces) and llama-cpp-python's server extra; skipped with the reason otherwise.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from edgevoice.agent.brain import Brain
from edgevoice.agent.turn import Turn
from edgevoice.config import LlmConfig, RemoteConfig
from edgevoice.devtools.fault_server import llama_server, llama_server_missing
from edgevoice.devtools.lan import NETEM_MISSING, Lan, lan_missing
from edgevoice.llm.openai_target import OpenAITarget, RemoteTargetError
from edgevoice.llm.router import Router

MESSAGES = [{"role": "user", "content": "tell me a story"}]
SLACK_S = 0.6

pytestmark = pytest.mark.skipif(bool(lan_missing() or llama_server_missing()),
                                reason=str(lan_missing() or llama_server_missing()))


@pytest.fixture(scope="module")
def lan():
    with Lan() as net:
        yield net


@pytest.fixture(scope="module")
def server(lan, tiny_gguf: Path):
    with llama_server(tiny_gguf, "tiny", n_ctx=1024, host=lan.peer_ip,
                      prefix=lan.exec_prefix) as srv:
        yield srv


@pytest.fixture
def healthy_lan(lan):
    lan.link(True)
    lan.blackhole(False)
    yield lan
    lan.link(True)
    lan.blackhole(False)
    lan.netem("")


def remote(server, **changes) -> OpenAITarget:
    values = {"base_url": server.url, "model": server.model, "max_completion_tokens": 40,
              "connect_timeout_s": 0.5, "first_token_timeout_s": 3.0, "stall_timeout_s": 0.5,
              "fold_system_prompt": True, **changes}
    return OpenAITarget(RemoteConfig(**values), "lan")


@pytest.fixture
def local_model(tiny_gguf):
    from edgevoice.llm.llama_target import LlamaCppTarget

    target = LlamaCppTarget(LlmConfig(model=str(tiny_gguf), n_ctx=1024, max_tokens=16,
                                      threads=1, temperature=0.0), seed=7)
    yield target
    target.close()


def test_over_the_lan_the_remote_answers_on_one_kept_connection(server, healthy_lan):
    with remote(server) as target:
        target.warm_up()
        for _ in range(2):
            assert "".join(target.stream(MESSAGES, threading.Event())).strip()
        assert target.connections_opened == 1 and target.reused_connection


def test_delay_jitter_and_loss_still_answer(server, healthy_lan):
    if not healthy_lan.netem_available():
        pytest.skip(NETEM_MISSING)
    for spec in ("delay 1ms 1ms", "delay 5ms 2ms", "delay 3ms 2ms loss 1%"):
        healthy_lan.netem(spec)
        with remote(server) as target:
            assert "".join(target.stream(MESSAGES, threading.Event())).strip(), spec


def test_the_link_taken_down_mid_stream_is_a_stall_and_closes_the_request(server, healthy_lan):
    with remote(server) as target:
        start = None
        with pytest.raises(RemoteTargetError) as info:
            for i, _delta in enumerate(target.stream(MESSAGES, threading.Event())):
                if i == 0:
                    healthy_lan.link(False)
                    start = time.monotonic()
        elapsed = time.monotonic() - start
    assert info.value.kind == "stall" and "no token for 0.5 s" in str(info.value)
    assert elapsed < 0.5 + SLACK_S


def test_a_blackhole_route_is_a_connect_error_at_once(server, healthy_lan):
    healthy_lan.blackhole(True)
    with remote(server) as target:
        start = time.monotonic()
        with pytest.raises(RemoteTargetError) as info:
            target.probe()
    assert info.value.kind == "connect" and time.monotonic() - start < 0.5 + SLACK_S


def test_link_down_mid_answer_the_turn_continues_on_local_without_repeating(
        server, healthy_lan, local_model):
    router = Router({"local": local_model, "lan": remote(server)}, "remote",
                    hedge_after_ms=5000)  # the remote wins its clause (no race), then the cut
    brain = Brain(router, LlmConfig(max_tokens=16), apology=None)
    turn = Turn("tell me a story")
    deltas = []
    for delta in brain.llm_stream(turn):
        deltas.append(delta)
        if len(deltas) == 1:
            healthy_lan.link(False)
    router.close()
    reply, fo = "".join(deltas), turn.metrics.failover
    assert fo is not None and (fo["from"], fo["to"]) == ("lan", "local"), turn.metrics
    spoken = reply[:fo["after_chars"]]
    assert spoken and deltas[0].startswith(spoken[:1])
    assert len(reply) > len(spoken)  # the local model went on after what the remote said
    assert turn.metrics.hedge["winner"] == "lan" and turn.metrics.error is None


def test_a_blackholed_kept_alive_connection_costs_the_hedge_delay(server, healthy_lan,
                                                                   local_model):
    lan_target = remote(server)
    lan_target.warm_up()  # a kept-alive connection, then the route to the server vanishes
    healthy_lan.blackhole(True)
    router = Router({"local": local_model, "lan": lan_target}, "remote")
    brain = Brain(router, LlmConfig(max_tokens=16), apology=None)
    turn = Turn("tell me a story")
    start = time.monotonic()
    reply = ""
    first = None
    for delta in brain.llm_stream(turn):
        first = first or time.monotonic()
        reply += delta
    router.close()
    assert turn.metrics.target == "local" and reply.strip()
    hedge = turn.metrics.hedge
    assert hedge["winner"] == "local" and hedge["loser_state"] == "cancelled"
    assert first - start < 1.5  # the hedge delay (200 ms) and the tiny model, not 3 s
