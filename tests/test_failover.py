"""Issue 4 end to end through the CLI: answers from a real remote (llama.cpp's own server on
loopback), failover to local when the remote is dead, stalls or is cut mid-answer — without
repeating what was already said — and `policy: local` sending nothing at all."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time

import pytest

from edgevoice.devtools.fault_server import FaultServer, Reply, llama_server, llama_server_missing


def ask(*args, env=None, timeout=60):
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "edgevoice", "ask", *args, "--json"],
                         capture_output=True, text=True, timeout=timeout,
                         env={**os.environ, **(env or {})})
    return out, time.monotonic() - started


@pytest.fixture
def short(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("llm:\n  max_tokens: 12\n  temperature: 0.0\n")
    return ["--config", str(cfg)]


@pytest.fixture
def unhedged(tmp_path):
    """As ``short``, with hedging off: the tiny local model is as fast as any remote here, so a
    race (tests/test_hedge.py) could be won by either."""
    cfg = tmp_path / "u.yaml"
    cfg.write_text("llm:\n  max_tokens: 12\n  temperature: 0.0\n  hedge_after_ms: 60000\n")
    return ["--config", str(cfg)]


@pytest.mark.skipif(llama_server_missing() is not None, reason=str(llama_server_missing()))
def test_answers_from_a_real_remote_llama_cpp_server(tiny_gguf, unhedged):
    with llama_server(tiny_gguf, alias="tiny") as server:
        out, _ = ask(*unhedged, "tell me a story", "--remote", server.url, "--remote-model",
                     "tiny", "--policy", "remote", "--llm-model", str(tiny_gguf))
    assert out.returncode == 0, out.stderr
    turn = json.loads(out.stdout)
    assert turn["target"] == "remote" and turn["reply"].strip()
    assert "failover" not in turn and "llm_first_token" in turn["latency_ms"]


def test_dead_remote_fails_over_to_local_within_3_s(tiny_gguf, short):
    with FaultServer() as server:
        url = server.url
    out, took = ask(*short, "hello", "--remote", url, "--remote-model", "fault-model",
                    "--policy", "remote", "--llm-model", str(tiny_gguf))
    assert out.returncode == 0 and "Traceback" not in out.stderr
    turn = json.loads(out.stdout)
    assert turn["target"] == "local" and turn["reply"].strip()
    assert took < 3.0 + 2.0  # 3 s promise + interpreter and model start-up
    assert "remote" in turn["route_reason"]


# The remote has spoken a first clause (six words: it won the hedge race) when it fails.
SPOKEN = "w0 w1 w2 w3 w4 w5 w6 w7 "


@pytest.mark.parametrize("fault", [Reply(tokens=12, stall_after=8, interval_s=0.005),
                                   Reply(tokens=12, cut_after=8, interval_s=0.005)],
                         ids=["stall", "cut"])
def test_mid_answer_failure_continues_on_local_without_repeating(tiny_gguf, short, fault):
    with FaultServer(default=fault) as server:
        out, _ = ask(*short, "hello", "--remote", server.url, "--remote-model", "fault-model",
                     "--policy", "remote", "--llm-model", str(tiny_gguf))
    assert out.returncode == 0, out.stderr
    turn = json.loads(out.stdout)
    fo = turn["failover"]
    assert (fo["from"], fo["to"]) == ("remote", "local") and turn["target"] == "local"
    assert turn["reply"].startswith(SPOKEN)  # what the remote said is kept, once
    assert turn["reply"].count("w0 ") == 1 and len(turn["reply"]) > len(SPOKEN)
    assert fo["after_chars"] == len(SPOKEN)
    assert fo["first_token_after_ms"] < 2000
    assert turn["hedge"]["winner"] == "remote"  # it won the race, then failed; never raced


def test_policy_local_sends_nothing_and_the_key_never_leaks(tiny_gguf, short, tmp_path):
    secret = "sk-test-do-not-leak-1234567890"
    cfg = tmp_path / "remote.yaml"
    with FaultServer(api_key=secret) as server:
        cfg.write_text("llm:\n  max_tokens: 8\n  policy: local\nremotes:\n  cs3:\n"
                       f"    base_url: {server.url}\n    model: fault-model\n"
                       "    api_key_env: TEST_REMOTE_KEY\n")
        out, _ = ask("--config", str(cfg), "-vv", "hello", "--llm-model", str(tiny_gguf),
                     env={"TEST_REMOTE_KEY": secret})
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["target"] == "local"
        assert server.requests == [] and server.connections == 0
        # The same config under policy remote does use it, with the key, never logging it.
        out, _ = ask("--config", str(cfg), "-vv", "hello", "--policy", "remote",
                     "--llm-model", str(tiny_gguf), env={"TEST_REMOTE_KEY": secret})
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["target"] == "cs3"
        assert server.chat_requests and secret not in out.stderr + out.stdout


# -- nothing answers (issue 10, item 6): one sentence with the URL and the fix, exit 1 -----------


def ask_without_a_model(tmp_path, *args):
    """`edgevoice ask` as a first-time user runs it: no config file, an empty models dir."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("EDGEVOICE_CONFIG", "EDGEVOICE_MODELS_DIR")}
    env.update(XDG_CONFIG_HOME=str(tmp_path / "config"), XDG_DATA_HOME=str(tmp_path / "data"),
               XDG_CACHE_HOME=str(tmp_path / "cache"))
    return subprocess.run([sys.executable, "-m", "edgevoice", "ask", *args], capture_output=True,
                          text=True, timeout=60, env=env)


@pytest.fixture
def refused_url():
    """A loopback URL where nothing listens (a server's port, after it stopped)."""
    with FaultServer() as server:
        url = server.url
    return url


def test_ask_with_nothing_reachable_says_so_once_and_fails(tmp_path, refused_url):
    out = ask_without_a_model(tmp_path, "hi", "--remote", refused_url, "--remote-model",
                              "fault-model", "--policy", "remote")
    assert out.returncode == 1, (out.stdout, out.stderr)
    lines = out.stderr.splitlines()
    assert len(lines) == 1 and refused_url in lines[0], out.stderr  # once, not three times
    assert lines[0].startswith("edgevoice: error: ") and "connection refused" in lines[0]
    assert "check that the server is running" in lines[0]  # the fix
    assert "edgevoice models pull" in lines[0]  # ... or the offline one
    assert "Traceback" not in out.stderr
    assert out.stdout.strip() == ""  # no spoken-style apology: that is the daemon's


def test_ask_json_with_nothing_reachable_prints_the_turn_and_fails(tmp_path, refused_url):
    out = ask_without_a_model(tmp_path, "hi", "--remote", refused_url, "--remote-model",
                              "fault-model", "--policy", "remote", "--json")
    assert out.returncode == 1, (out.stdout, out.stderr)
    turn = json.loads(out.stdout)
    assert turn["event"] == "turn" and turn["reply"] == "" and turn["target"] == "none"
    assert refused_url in turn["error"] and turn["failover"]["from"] == "remote"
    assert "to" not in turn["failover"]
    assert [line for line in out.stderr.splitlines() if refused_url in line] == [
        f"edgevoice: error: {turn['error']}"]


def test_ask_cut_off_with_no_fallback_keeps_the_words_and_fails(tmp_path):
    with FaultServer(default=Reply(tokens=6, cut_after=3, interval_s=0.02)) as server:
        out = ask_without_a_model(tmp_path, "hi", "--remote", server.url, "--remote-model",
                                  "fault-model", "--policy", "remote", "--json")
    assert out.returncode == 1, (out.stdout, out.stderr)
    turn = json.loads(out.stdout)
    assert turn["reply"] == "w0 w1 w2 " and turn["target"] == "remote"
    assert turn["error"].startswith("the answer was cut off: ") and server.url in turn["error"]
    assert len(out.stderr.splitlines()) == 1 and "Traceback" not in out.stderr


class _DeadRemote:
    """A remote target whose every request is refused."""

    name = "cs3"
    last_stats = None

    def __init__(self) -> None:
        self.streams = 0

    def describe(self):
        from edgevoice.llm.protocol import TargetInfo

        return TargetInfo(self.name, "openai", "m", "remote")

    def stream(self, messages, cancel):
        from edgevoice.llm.protocol import TargetError

        self.streams += 1
        raise TargetError("cs3 at http://10.0.0.5:8000/v1: connection refused")
        yield ""  # pragma: no cover

    def close(self) -> None:
        pass


def _brain(**kw):
    from edgevoice.agent.brain import Brain
    from edgevoice.config import LlmConfig
    from edgevoice.llm.router import Router

    remote = _DeadRemote()
    return Brain(Router({"cs3": remote}, "remote"), LlmConfig(), **kw), remote


def test_the_daemon_still_apologizes_and_logs_the_failure_once(caplog):
    from edgevoice.agent.brain import NO_ANSWER_APOLOGY
    from edgevoice.agent.intents import NO_MODEL_REPLY
    from edgevoice.agent.turn import Turn

    brain, remote = _brain()
    turn = Turn("hello")
    with caplog.at_level(logging.INFO, logger="edgevoice.agent.brain"):
        assert list(brain.llm_stream(turn)) == [NO_ANSWER_APOLOGY]
    notices = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.getMessage() for r in notices] == [turn.metrics.error]
    assert "http://10.0.0.5:8000/v1" in turn.metrics.error and turn.metrics.target == "none"
    assert turn.to_event()["error"] == turn.metrics.error
    # The next turns find its circuit open: still "can't reach", never "no model installed".
    for _ in range(2):
        turn = Turn("hello again")
        deltas = list(brain.llm_stream(turn))
        assert deltas == [NO_ANSWER_APOLOGY] and deltas != [NO_MODEL_REPLY]
        assert "http://10.0.0.5:8000/v1" in turn.metrics.error
    assert remote.streams == 2  # the breaker opened after two failures: no third request


def test_ask_style_brain_says_nothing_and_leaves_the_report(caplog):
    from edgevoice.agent.turn import Turn

    brain, _ = _brain(apology=None)
    turn = Turn("hello")
    with caplog.at_level(logging.WARNING):
        assert list(brain.llm_stream(turn)) == []
    assert caplog.records == [] and turn.metrics.error.startswith("no language model answered")
