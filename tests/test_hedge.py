"""Issue 14, hedging end to end: `edgevoice ask` against misbehaving remotes on loopback with
the tiny local model (real llama.cpp) racing them.

A late remote costs the turn the hedge delay, never its timeouts; the first target to deliver a
clause speaks, the other is cancelled (the server sees us hang up), nothing is said twice, and
the turn event records who won. Latency bounds are upper bounds on detection, with slack for a
shared 2-core machine; the figures themselves come from benchmarks/offload_faults.py.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import pytest

from edgevoice.agent.brain import Brain
from edgevoice.agent.turn import Turn
from edgevoice.config import LlmConfig, RemoteConfig
from edgevoice.devtools.fault_server import FaultServer, Reply, silent_listener
from edgevoice.llm.openai_target import OpenAITarget
from edgevoice.llm.router import Router

REMOTE_WORDS = re.compile(r"\bw\d+\b")  # the fault server's tokens: w0 w1 w2 ...


def ask(*args, timeout=60):
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "edgevoice", "ask", *args, "--json"],
                         capture_output=True, text=True, timeout=timeout, env=dict(os.environ))
    return out, time.monotonic() - started


@pytest.fixture
def cfg(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("llm:\n  max_tokens: 12\n  temperature: 0.0\n"
                    f"paths:\n  cache_dir: {tmp_path / 'cache'}\n")
    return ["--config", str(path)]


def remote_turn(cfg, url, tiny_gguf, policy="remote"):
    out, took = ask(*cfg, "hello", "--remote", url, "--remote-model", "fault-model",
                    "--policy", policy, "--llm-model", str(tiny_gguf))
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr
    return json.loads(out.stdout), took


def test_a_silent_remote_costs_the_hedge_delay_not_its_timeouts(tiny_gguf, cfg):
    # Accepts the connection, then says nothing: `ask` took 5.0 s (a 2 s probe at start, then
    # a 2 s first-token timeout on the turn).
    with silent_listener() as url:
        turn, took = remote_turn(cfg, url, tiny_gguf)
    assert turn["target"] == "local" and turn["reply"].strip()
    hedge = turn["hedge"]
    assert (hedge["winner"], hedge["loser"], hedge["loser_state"]) == ("local", "remote",
                                                                       "cancelled")
    assert hedge["hedge_after_ms"] == 200 and hedge["hedged_at_ms"] >= 190
    assert turn["latency_ms"]["first_clause"] < 1500
    assert took < 8.0  # interpreter + model start-up; no 2 s timeout is waited for


FAULTS = {
    "headers then silence": Reply(first_token_delay_s=20.0),
    "stalled after 3 tokens": Reply(tokens=8, stall_after=3, interval_s=0.01),
    "trickling body": Reply(tokens=3, trickle_bytes_s=1.0),
    "reasoning forever": Reply(tokens=2, reasoning=200, interval_s=0.05),
}


@pytest.mark.parametrize("case", list(FAULTS), ids=list(FAULTS))
def test_a_late_remote_is_raced_cancelled_and_never_repeated(tiny_gguf, cfg, case):
    with FaultServer(default=FAULTS[case], max_hang_s=20.0) as server:
        turn, _ = remote_turn(cfg, server.url, tiny_gguf)
        hung_up = server.chat_requests[0].disconnected.wait(2.0)
    assert turn["target"] == "local" and turn["reply"].strip()
    assert not REMOTE_WORDS.search(turn["reply"])  # what the remote had sent was never said
    hedge = turn["hedge"]
    assert hedge["winner"] == "local" and hedge["loser_state"] == "cancelled"
    if case == "stalled after 3 tokens":
        assert hedge["loser_tokens"] == 3
    assert turn["latency_ms"]["first_clause"] < 1500
    assert "failover" not in turn
    assert hung_up  # the HTTP stream was closed, not left to time out


def test_a_failing_remote_starts_the_local_model_at_once(tiny_gguf, cfg):
    with FaultServer(default=Reply(status=503)) as server:
        turn, _ = remote_turn(cfg, server.url, tiny_gguf)
    assert turn["target"] == "local" and turn["reply"].strip()
    hedge = turn["hedge"]
    assert hedge["loser_state"] == "failed" and "HTTP 503" in hedge["loser_error"]
    assert hedge["hedged_at_ms"] < 150  # no waiting for the hedge delay after a failure


def test_a_prompt_remote_wins_and_the_local_model_never_starts(tiny_gguf, cfg):
    with FaultServer(default=Reply(tokens=8)) as server:
        turn, _ = remote_turn(cfg, server.url, tiny_gguf)
    assert turn["target"] == "remote" and turn["reply"] == "w0 w1 w2 w3 w4 w5 w6 w7 "
    assert turn["hedge"]["winner"] == "remote"
    assert turn["hedge"]["loser_state"] == "not started"


@pytest.fixture
def local_model(tiny_gguf):
    from edgevoice.llm.llama_target import LlamaCppTarget

    target = LlamaCppTarget(LlmConfig(model=str(tiny_gguf), n_ctx=1024, max_tokens=16,
                                      threads=1, temperature=0.0), seed=7)
    yield target
    target.close()


def auto_router(local_model, server) -> Router:
    remote = OpenAITarget(RemoteConfig(base_url=server.url, model="fault-model",
                                       first_token_timeout_s=2.0, stall_timeout_s=1.0), "remote")
    router = Router({"local": local_model, "remote": remote}, "auto", 100)
    est = router.estimate("local")  # local predicted far over budget: the remote is picked
    est.prefill_tps.add(5.0)
    est.decode_tps.add(2.0)
    return router


@pytest.mark.parametrize("remote_reply", [Reply(tokens=8), Reply(tokens=8, interval_s=0.03),
                                          Reply(tokens=8, first_token_delay_s=0.5)],
                         ids=["instant remote", "steady remote", "late remote"])
def test_auto_without_estimates_races_both_at_once_and_says_one_answer(local_model,
                                                                        remote_reply):
    with FaultServer(default=remote_reply) as server:
        router = auto_router(local_model, server)
        brain = Brain(router, LlmConfig(max_tokens=16), apology=None)
        route = router.route([{"role": "user", "content": "hello"}])
        assert route.target.after_ms == 0 and "from the start" in route.reason
        turn = Turn("hello")
        deltas = list(brain.llm_stream(turn))
        router.close()
    reply = "".join(deltas)
    hedge = turn.metrics.hedge
    assert hedge is not None and hedge["hedged_at_ms"] < 100
    assert turn.metrics.target == hedge["winner"]
    if hedge["winner"] == "remote":
        assert reply == "w0 w1 w2 w3 w4 w5 w6 w7 "
    else:  # the remote's words never reach the reply, even those that arrived
        assert reply.strip() and not REMOTE_WORDS.search(reply)
    if remote_reply.first_token_delay_s:
        assert hedge["winner"] == "local"  # 0.5 s of silence against a model that takes ms
    assert hedge["loser_state"] == "cancelled"
    assert turn.to_event()["hedge"] == hedge and turn.metrics.error is None
    assert router.breaker("remote").state == "closed"  # losing a race is no failure


def test_ask_against_a_server_trickling_its_models_list_does_not_wait(tiny_gguf, cfg):
    # GET /v1/models one byte a second: start-up hung until killed (>120 s).
    with FaultServer(default=Reply(tokens=8)) as server:
        server.models_trickle_s = 1.0
        turn, took = remote_turn(cfg, server.url, tiny_gguf)
        local, local_took = ask(*cfg, "hello", "--llm-model", str(tiny_gguf))
    assert local.returncode == 0
    assert turn["target"] == "remote" and turn["reply"] == "w0 w1 w2 w3 w4 w5 w6 w7 "
    assert turn["latency_ms"]["first_clause"] < 2000
    assert took < local_took + 2.0, f"ask took {took:.1f} s, local only {local_took:.1f} s"


@pytest.mark.parametrize(("text", "ready"), [
    ("Sure", False), ("Sure. ", True), ("one two three, ", True), ("one two, ", False),
    ("a b c d e f ", True), ("x" * 79, False), ("x" * 80, True),
    ("はい。", True), ("東京は", False), ("我们今天去公园散步吧因为", True),  # 12 Han characters
])
def test_a_first_clause_is_recognized_in_spaced_and_spaceless_scripts(text, ready):
    from edgevoice.llm.hedge import clause_ready

    assert clause_ready(text) is ready
