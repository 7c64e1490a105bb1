"""`edgevoice run` in file mode with its control socket, for the control and activation tests."""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import soundfile

from edgevoice.control.client import ControlClient, NoDaemon


def compose(parts: list[tuple[Path | None, float]], path: Path) -> list[tuple[float, float]]:
    """Clips (None = nothing) each followed by seconds of silence; returns each clip's span."""
    chunks, spans, t = [], [], 0.0
    for clip, gap in parts:
        audio = np.zeros(0, np.int16)
        if clip is not None:
            audio, rate = soundfile.read(clip, dtype="int16")
            assert rate == 16000
        chunks += [audio, np.zeros(int(gap * 16000), np.int16)]
        spans.append((t, t + len(audio) / 16000))
        t += (len(audio) + int(gap * 16000)) / 16000
    soundfile.write(path, np.concatenate(chunks), 16000)
    return spans


class EventStream:
    """A subprocess's JSON-lines stdout, readable event by event with a timeout."""

    proc: subprocess.Popen

    def _start_pump(self) -> None:
        self.events: queue.Queue = queue.Queue()
        self.seen: list[dict] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        for line in self.proc.stdout:
            self.events.put(json.loads(line))
        self.events.put(None)

    def stop(self) -> tuple[int, str]:
        """SIGTERM (a clean stop), SIGKILL if that takes over 15 s; exit code and stderr."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        finally:
            self.proc.kill()
        return self.proc.returncode, self.proc.stderr.read()

    def wait_for(self, pred, timeout: float = 30.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"timed out; events so far: {self.seen}"
            event = self.events.get(timeout=left)
            assert event is not None, f"agent exited: {self.proc.stderr.read()}"
            self.seen.append(event)
            if pred(event):
                return event


class Daemon(EventStream):
    """The agent on IN.wav with a private control socket; stdout events readable with timeouts."""

    def __init__(self, wav: Path, config: str = "", *extra: str,
                 socket: Path | None = None) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="evc-"))  # short: socket paths max 107 bytes
        self.socket = socket or self.dir / "control.sock"
        self.config = self.dir / "agent.yaml"
        self.config.write_text(f"control:\n  socket: {self.socket}\n{config}")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edgevoice", "--config", str(self.config), "run", "--input",
             str(wav), "--output", str(self.dir / "out.wav"), "--json", *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "XDG_DATA_HOME": str(self.dir)})  # no user model: intents only
        self._start_pump()

    def client(self, timeout: float = 30.0) -> ControlClient:
        deadline = time.monotonic() + timeout
        while True:
            try:
                return ControlClient(self.socket)
            except NoDaemon:
                assert self.proc.poll() is None, self.proc.stderr.read()
                assert time.monotonic() < deadline, "the control socket never appeared"
                time.sleep(0.05)

    def ctl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "edgevoice", "--config", str(self.config),
                               "ctl", *args], capture_output=True, text=True, timeout=timeout)

    def finish(self, timeout: float = 60) -> tuple[int, str]:
        """Wait for the process to end (quit or input end); return code and stderr."""
        try:
            self.proc.wait(timeout)
        finally:
            self.proc.kill()
            shutil.rmtree(self.dir, ignore_errors=True)
        return self.proc.returncode, self.proc.stderr.read()
