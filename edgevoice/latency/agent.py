"""The programs under test on the rig: the agent (`edgevoice run --json`) and the echo.

Each runs in its own process group, its stdout read line by line into a queue, its stderr kept
in a file so that a failed start can be reported with its last lines.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Optional

import yaml

from edgevoice.errors import ConfigError, UserError
from edgevoice.latency.rig import Port, die_with_parent
from edgevoice.tray import agent_command


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


DEFAULT_AGENT_CONFIG: dict[str, Any] = {
    # The tiny model's gibberish never ends by itself: a bounded reply, a few seconds of speech
    # (long enough to speak over for barge-in). At temperature 0 its growing history soon
    # collapses into one repeated token that has nothing to say aloud: sample instead.
    "llm": {"max_tokens": 40, "temperature": 1.0},
}


def agent_config(user_config: Optional[Path], port: Port, path: Path,
                 remote: Optional[tuple[str, str]] = None) -> Path:
    """The agent's config: the user's file (or the bench's default) with the audio devices set
    to the rig's and the control API off (the user's own agent may hold its socket). With
    ``remote`` (url, model: the bench's llama.cpp server) that server is its only remote and
    the policy ``remote``, its reply bounded like the local one's (``llm.max_tokens``)."""
    if user_config is not None:
        try:
            data = yaml.safe_load(Path(user_config).read_text(encoding="utf-8")) or {}
        except OSError as exc:
            raise UserError(f"cannot read the config {user_config}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{user_config}: not valid YAML ({exc})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{user_config}: expected a mapping of sections")
    else:
        data = json.loads(json.dumps(DEFAULT_AGENT_CONFIG))
    audio = dict(data.get("audio") or {})
    audio.update(input_device=port.mic_source, output_device=port.speaker_sink)
    data["audio"] = audio
    control = dict(data.get("control") or {})
    control["enabled"] = False
    data["control"] = control
    if remote is not None:
        llm = dict(data.get("llm") or {})
        llm["policy"] = "remote"
        data["llm"] = llm
        data["remotes"] = {"remote": {
            "base_url": remote[0], "model": remote[1],
            "max_completion_tokens": int(llm.get("max_tokens") or 256),
            "max_tokens_field": "max_tokens",  # what llama.cpp's Python server reads
            "fold_system_prompt": True,  # Gemma's template rejects a system role
        }}
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


class Program:
    """A child process with JSON-or-text stdout lines in ``lines`` and stderr in a file."""

    def __init__(self, cmd: list[str], env: dict[str, str], stderr_path: Path,
                 stdin: bool = False) -> None:
        self.cmd = cmd
        self.stderr_path = stderr_path
        self._err = open(stderr_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=self._err,
                                     stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                                     text=True, start_new_session=True,
                                     preexec_fn=die_with_parent)
        self.lines: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def stderr_tail(self, lines: int = 5) -> str:
        try:
            text = self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""
        tail = [ln for ln in text.strip().splitlines() if ln.strip()][-lines:]
        return " | ".join(tail)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 15.0) -> Optional[int]:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait()
        self._err.close()
        return self.proc.returncode


class Agent(Program):
    """`edgevoice run --json` on one port of the rig; ``events`` holds everything it said."""

    def __init__(self, label: str, config: Path, port: Port, env: dict[str, str],
                 workdir: Path, extra: list[str]) -> None:
        self.label, self.port = label, port
        self.events: list[dict] = []
        self.state = ""
        cmd = agent_command(str(config), "--json", *extra)
        super().__init__(cmd, env, workdir / f"agent-{label}.stderr")

    def poll(self, timeout: float = 0.0) -> Optional[dict]:
        """The next event (None when none came within ``timeout``); raises when it exited."""
        try:
            line = self.lines.get(timeout=timeout) if timeout > 0 else self.lines.get_nowait()
        except queue.Empty:
            return None
        if line is None:
            self.lines.put(None)  # stay at end of stream
            raise UserError(f"the agent ({self.label}) exited with code {self.proc.wait()}: "
                            f"{self.stderr_tail() or 'no message'}")
        try:
            event = json.loads(line)
        except ValueError:
            return None  # a stray print (e.g. a native library's) is not an event
        if not isinstance(event, dict):
            return None
        event["_t"] = time.monotonic()
        self.events.append(event)
        if event.get("event") == "state":
            self.state = str(event.get("state"))
        return event

    def drain(self) -> list[dict]:
        out = []
        while (event := self.poll()) is not None:
            out.append(event)
        return out

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.state != "listening":
            left = deadline - time.monotonic()
            if left <= 0:
                raise UserError(f"the agent ({self.label}) was not listening after "
                                f"{timeout:.0f} s: {self.stderr_tail() or 'no message'}")
            try:
                self.poll(min(left, 0.2))
            except UserError:
                raise UserError(f"the agent ({self.label}) failed to start: "
                                f"{self.stderr_tail() or 'no message'}") from None
