"""The measuring rig: one stereo null sink (``vbus``, 48 kHz) as the only clock, and mono remap
sinks on its channels: microphones (what we play, the agent records their monitor) on
front-left, speakers (what the agent plays) on front-right. One ``parec -d vbus.monitor`` then
holds both sides, rendered in the same cycles (see FACTS.md, "Measuring at the speaker").

Either a private ``pulseaudio`` (its own runtime, state and HOME under a temporary folder; nothing
of the user's is touched) or, with ``use_running=True``, the user's PulseAudio / pipewire-pulse,
where the modules are loaded with ``pactl`` and unloaded again by ``close()``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from edgevoice.devtools.pulse import end_process
from edgevoice.errors import UserError

RATE = 48000
BUS = "vbus"
APT_LINE = "sudo apt-get install pulseaudio pulseaudio-utils libasound2-plugins"


@dataclass(frozen=True)
class Port:
    """One agent's (or the echo's) pair of devices on the bus."""

    mic_sink: str  # play clips here; the agent records ``mic_sink + ".monitor"``
    speaker_sink: str  # the agent plays here

    @property
    def mic_source(self) -> str:
        return self.mic_sink + ".monitor"


def port_names(count: int) -> list[Port]:
    """vmic/vspk for the first, vmic_b/vspk_b for the second (``--compare``)..."""
    out = []
    for i in range(count):
        suffix = "" if i == 0 else "_" + "abcdefgh"[i]
        out.append(Port("vmic" + suffix, "vspk" + suffix))
    return out


def check_tools(server: bool = True) -> None:
    need = ("pulseaudio", "pactl", "paplay", "parec", "pacat") if server else (
        "pactl", "paplay", "parec", "pacat")
    missing = [t for t in need if shutil.which(t) is None]
    if missing:
        raise UserError(f"the latency bench needs PulseAudio's tools ({', '.join(missing)} not "
                        f"found): {APT_LINE}")


class Rig:
    """The sound server and the bus; ``env`` is the environment for every program on it."""

    def __init__(self, ports: int = 1, use_running: bool = False,
                 root: Optional[Path] = None) -> None:
        self.ports = port_names(ports)
        self.use_running = use_running
        self.root = Path(root) if root else Path(tempfile.mkdtemp(prefix="evlat-"))
        self._own_root = root is None
        self._proc: Optional[subprocess.Popen] = None
        self._modules: list[str] = []
        self.log = self.root / "pulseaudio.log"
        self.env = dict(os.environ)
        self.server_name = ""

    # -- start / stop -------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> Rig:
        check_tools(server=not self.use_running)
        try:
            if not self.use_running:
                self._start_private(timeout)
            elif not self._answers():
                raise UserError("--use-running-server: no PulseAudio or pipewire-pulse server "
                                "answers `pactl info` (start it, or drop the option for a "
                                "private one)")
            self._load_bus()
        except BaseException:
            self.close()
            raise
        return self

    def _answers(self) -> bool:
        try:
            out = subprocess.run(["pactl", "info"], env=self.env, capture_output=True,
                                 text=True, timeout=5)
        except subprocess.TimeoutExpired:
            return False
        for line in out.stdout.splitlines():
            if line.startswith("Server Name:"):
                self.server_name = line.split(":", 1)[1].strip()
        return out.returncode == 0

    def _start_private(self, timeout: float) -> None:
        for sub in ("home", "runtime", "state", "config", "client-runtime"):
            (self.root / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
        socket = self.root / "native"
        client_conf = self.root / "client.conf"
        client_conf.write_text("autospawn = no\n")
        self.env.update(
            PULSE_SERVER=f"unix:{socket}",
            PULSE_CLIENTCONFIG=str(client_conf),  # never autospawn the user's server
            XDG_RUNTIME_DIR=str(self.root / "client-runtime"),
        )
        denv = {k: v for k, v in os.environ.items() if not k.startswith("PULSE_")}
        denv.update(HOME=str(self.root / "home"), XDG_RUNTIME_DIR=str(self.root / "runtime"),
                    XDG_CONFIG_HOME=str(self.root / "config"),
                    PULSE_RUNTIME_PATH=str(self.root / "runtime"),
                    PULSE_STATE_PATH=str(self.root / "state"))
        cmd = ["pulseaudio", "-n", "--daemonize=no", "--exit-idle-time=-1", "--disallow-exit",
               "--realtime=no", "--high-priority=no", "--use-pid-file=no", "--log-level=warn",
               f"--log-target=file:{self.log}",
               f"--load=module-native-protocol-unix socket={socket} auth-anonymous=1"]
        self._proc = subprocess.Popen(cmd, env=denv, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL, start_new_session=True,
                                      preexec_fn=die_with_parent)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                break
            if self._answers():
                return
            time.sleep(0.05)
        log = self.log.read_text(errors="replace").strip() if self.log.exists() else ""
        raise UserError("the private PulseAudio server did not start"
                        + (f"; its log ends: {log.splitlines()[-1]}" if log else ""))

    def pactl(self, *args: str) -> str:
        out = subprocess.run(["pactl", *args], env=self.env, capture_output=True, text=True,
                             timeout=10)
        if out.returncode != 0:
            raise UserError(f"`pactl {' '.join(args)}` failed: "
                            f"{(out.stderr or out.stdout).strip() or 'no reason given'}")
        return out.stdout

    def _load_bus(self) -> None:
        existing = set()
        for line in self.pactl("list", "short", "sinks").splitlines():
            cols = line.split("\t")
            if len(cols) > 1:
                existing.add(cols[1])
        names = {BUS} | {p.mic_sink for p in self.ports} | {p.speaker_sink for p in self.ports}
        clash = sorted(existing & names)
        if clash:
            raise UserError(f"the sound server already has sinks named {', '.join(clash)}: "
                            "unload them (`pactl unload-module ...`) or use a private server")
        self._load("module-null-sink", f"sink_name={BUS}", "channels=2", f"rate={RATE}",
                   "channel_map=front-left,front-right")
        for p in self.ports:
            for name, channel in ((p.mic_sink, "front-left"), (p.speaker_sink, "front-right")):
                self._load("module-remap-sink", f"sink_name={name}", f"master={BUS}",
                           "channels=1", f"master_channel_map={channel}", "channel_map=mono")

    def _load(self, module: str, *args: str) -> None:
        self._modules.append(self.pactl("load-module", module, *args).strip())

    def close(self) -> None:
        if self.use_running:
            for mod in reversed(self._modules):
                subprocess.run(["pactl", "unload-module", mod], env=self.env,
                               capture_output=True, timeout=10)
        self._modules.clear()
        if self._proc is not None:
            end_process(self._proc)
            self._proc = None
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Rig:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- environments for programs on the rig -------------------------------------------------

    def env_for(self, port: Port) -> dict[str, str]:
        """The environment of an agent (or echo) that records ``port``'s mic and plays into its
        speaker (libpulse's PULSE_SOURCE / PULSE_SINK, read when a stream opens)."""
        return {**self.env, "PULSE_SOURCE": port.mic_source, "PULSE_SINK": port.speaker_sink}


def _resolve_prctl():
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _resolve_prctl()  # resolved here: a preexec_fn must not load libraries after fork


def die_with_parent() -> None:
    """``preexec_fn`` for the rig's children: SIGTERM them when the bench dies, even by
    SIGKILL (Linux ``PR_SET_PDEATHSIG``), so no server or agent outlives a killed run."""
    if _PRCTL is not None:
        _PRCTL(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
