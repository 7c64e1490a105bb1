"""Issue 17: `wyoming.enabled` makes `edgevoice run` serve Wyoming beside its own microphone,
sharing the agent's recognizer config, voice and brain pieces (file mode stands in for the
microphone)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

import pytest

pytest.importorskip("wyoming", reason="the wyoming package (pip install wyoming)")

from edgevoice.devtools import wyoming_peer as peer  # noqa: E402
from edgevoice.devtools.fault_server import free_port  # noqa: E402


def test_run_serves_wyoming_beside_the_agent(tmp_path, speech_folder, tiny_gguf):
    port = free_port()
    cfg = tmp_path / "c.yaml"
    cfg.write_text("llm:\n  max_tokens: 8\n"
                   f"wyoming:\n  enabled: true\n  uri: tcp://127.0.0.1:{port}\n")
    clip = speech_folder / "pocketsphinx__librivox_sense_and_sensibility_0870.wav"  # 7 s
    process = subprocess.Popen(
        [sys.executable, "-m", "edgevoice", "run", "--config", str(cfg), "--input", str(clip),
         "--output", str(tmp_path / "out.wav"), "--json", "--llm-model", str(tiny_gguf)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        info = None
        while info is None and time.monotonic() < deadline and process.poll() is None:
            try:
                info = asyncio.run(peer.describe("127.0.0.1", port, timeout_s=5))
            except OSError:
                time.sleep(0.2)
        assert info is not None and info.handle[0].models[0].name == "tiny-gemma2.gguf"
        event, _ = asyncio.run(peer.handle("127.0.0.1", port, "what time is it", "ha-1"))
        assert event.type == "handled" and event.data["text"].strip()
        event, _ = asyncio.run(peer.handle("127.0.0.1", port, "tell me a joke", "ha-1"))
        assert event.type == "handled" and event.data["text"].strip()  # the agent's model
        spoken = asyncio.run(peer.synthesize("127.0.0.1", port, "Hello from the kitchen."))
        assert len(spoken.pcm) > spoken.rate  # over half a second of the agent's own voice
        out, err = process.communicate(timeout=90)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err
    assert "Traceback" not in err
    heard = [json.loads(line) for line in out.splitlines()]
    assert any(e.get("event") == "partial" for e in heard), out  # the agent listened meanwhile
