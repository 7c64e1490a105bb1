"""Signals against a real `edgevoice run` (file mode, private control socket): SIGHUP reloads
the config like `ctl reload`, and a signal while the models load leaves no stale socket."""

from __future__ import annotations

import os
import signal
import time

import pytest
from _daemon import Daemon, compose


@pytest.fixture
def quiet_wav(tmp_path):
    path = tmp_path / "quiet.wav"
    compose([(None, 120.0)], path)
    return path


def _socket_appears(daemon: Daemon, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not daemon.socket.exists():
        assert daemon.proc.poll() is None, daemon.proc.stderr.read()
        assert time.monotonic() < deadline, "the control socket never appeared"
        time.sleep(0.005)


def test_sighup_reloads_the_config_and_the_agent_keeps_running(quiet_wav):
    daemon = Daemon(quiet_wav)
    try:
        with daemon.client() as client:
            assert client.request("status")["activation"]["mode"] == "always"
            with open(daemon.config, "a") as f:
                f.write("activation:\n  mode: push_to_talk\n")
            daemon.proc.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 20
            while client.request("status")["activation"]["mode"] != "push_to_talk":
                assert daemon.proc.poll() is None, "SIGHUP killed the agent"
                assert time.monotonic() < deadline, "SIGHUP did not reload the config"
                time.sleep(0.1)
            client.request("quit")
        code, err = daemon.finish()
    finally:
        daemon.proc.kill()
    assert code == 0 and "Traceback" not in err, err
    assert "SIGHUP: config reloaded" in err


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_while_the_models_load_leaves_no_stale_socket(quiet_wav, sig):
    daemon = Daemon(quiet_wav)
    try:
        _socket_appears(daemon)  # bound first, before the models load
        daemon.proc.send_signal(sig)
        if sig == signal.SIGHUP:  # a reload, not an exit: the agent comes up and serves
            with daemon.client() as client:
                assert client.request("status")["pid"] == daemon.proc.pid
                client.request("quit")
        code, err = daemon.finish(60)
    finally:
        daemon.proc.kill()
    assert code == 0, err
    assert "Traceback" not in err
    assert not os.path.exists(daemon.socket)
