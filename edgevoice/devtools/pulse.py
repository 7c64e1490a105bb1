"""A private PulseAudio server with two null sinks: real audio devices without sound hardware.

``vmic`` is the virtual microphone (play a clip into it; PortAudio records ``vmic.monitor``) and
``vspk`` the virtual speaker (PortAudio plays into it; a recorder captures ``vspk.monitor``).
PortAudio reaches the server through ALSA's ``pulse`` plugin (Debian ``libasound2-plugins``): its
devices are named ``pulse`` and ``default``. PortAudio enumerates devices once per process, so
code under test must run in a subprocess started with ``PulseServer.env``.

Null sinks render in 2-second blocks while nobody asks for low latency, so a new stream may wait up
to 2 s for its first data: wait for the first data before timing anything (``Recorder.start`` does).
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import threading
import time
import wave
from pathlib import Path

import numpy as np

TOOLS = ("pulseaudio", "pactl", "paplay", "parec")


def end_process(proc: subprocess.Popen, timeout: float = 5.0) -> None:
    """SIGTERM a child, SIGKILL it if it takes over ``timeout`` s, and reap it."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class PulseUnavailable(RuntimeError):
    """PulseAudio or its tools are not installed here (tests skip with this message)."""


def check_installed() -> None:
    """Raise PulseUnavailable naming what to install when anything is missing."""
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        raise PulseUnavailable(
            f"PulseAudio tools not found ({', '.join(missing)}): "
            "sudo apt-get install pulseaudio pulseaudio-utils libasound2-plugins"
        )
    plugin = "alsa-lib/libasound_module_pcm_pulse.so"
    if not (glob.glob(f"/usr/lib/*/{plugin}") or glob.glob(f"/usr/lib*/{plugin}")):
        raise PulseUnavailable(
            "ALSA's pulse plugin not found: sudo apt-get install libasound2-plugins"
        )


class Recorder:
    """Captures a PulseAudio source as 16-bit samples with ``parec``: read it while it records
    (``snapshot``) or at the end (``stop``). Mono gives a flat array, more channels (n, channels).
    """

    def __init__(self, env: dict[str, str], source: str, rate: int = 16000,
                 channels: int = 1, **popen_options) -> None:
        self.env, self.source, self.rate, self.channels = env, source, rate, channels
        self._popen_options = popen_options
        self._buf = bytearray()
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._thread: threading.Thread | None = None
        self._first = threading.Event()

    def start(self, timeout: float = 5.0) -> Recorder:
        """Start recording and wait until data flows, so later timing is not skewed."""
        cmd = [
            "parec", "-d", self.source, "--raw", "--format=s16le", f"--channels={self.channels}",
            f"--rate={self.rate}", "--latency-msec=20",
        ]
        self._proc = subprocess.Popen(
            cmd, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            **self._popen_options
        )
        self._thread = threading.Thread(target=self._pump, name="parec", daemon=True)
        self._thread.start()
        if not self._first.wait(timeout):
            self.stop()
            raise RuntimeError(f"parec got no data from {self.source} within {timeout:.0f} s")
        return self

    def _pump(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        while block := os.read(fd, 65536):
            with self._lock:
                self._buf += block
            self._first.set()

    def frames(self) -> int:
        """Frames received so far: the recording's index for this moment."""
        with self._lock:
            return len(self._buf) // (2 * self.channels)

    def snapshot(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Frames [start, stop) recorded so far, as int16."""
        width = 2 * self.channels
        with self._lock:
            n = len(self._buf) // width
            stop = n if stop is None else min(stop, n)
            start = max(0, min(start, stop))
            data = bytes(self._buf[start * width:stop * width])
        samples = np.frombuffer(data, dtype="<i2").copy()
        return samples if self.channels == 1 else samples.reshape(-1, self.channels)

    def stop(self) -> np.ndarray:
        """Stop and return everything recorded."""
        if self._proc is not None:
            end_process(self._proc)
            if self._thread is not None:
                self._thread.join(5)
            self._proc = None
        return self.snapshot()

    def __enter__(self) -> Recorder:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class PulseServer:
    """One private ``pulseaudio`` process, with its runtime, state and config under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.socket = self.root / "native"
        self.log = self.root / "pulseaudio.log"
        self._proc: subprocess.Popen[bytes] | None = None
        client_conf = self.root / "client.conf"
        self.env = dict(os.environ)
        self.env.update(
            PULSE_SERVER=f"unix:{self.socket}",
            PULSE_CLIENTCONFIG=str(client_conf),  # autospawn off: never start the user's server
            PULSE_SINK="vspk",
            PULSE_SOURCE="vmic.monitor",
            # Programs under test get their own runtime dir: a daemon's control socket never
            # collides with the user's or another test's.
            XDG_RUNTIME_DIR=str(self.root / "client-runtime"),
        )
        self._client_conf = client_conf

    def start(self, timeout: float = 10.0) -> PulseServer:
        check_installed()
        for sub in ("home", "runtime", "state", "config", "client-runtime"):
            (self.root / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
        self._client_conf.write_text("autospawn = no\n")
        # The daemon gets its own HOME/XDG dirs so it never touches the user's; as root it
        # prints "not intended to be run as root" and works anyway.
        denv = {k: v for k, v in os.environ.items() if not k.startswith("PULSE_")}
        denv.update(
            HOME=str(self.root / "home"),
            XDG_RUNTIME_DIR=str(self.root / "runtime"),
            XDG_CONFIG_HOME=str(self.root / "config"),
            PULSE_RUNTIME_PATH=str(self.root / "runtime"),
            PULSE_STATE_PATH=str(self.root / "state"),
        )
        cmd = [
            "pulseaudio", "-n", "--daemonize=no", "--exit-idle-time=-1", "--disallow-exit",
            "--realtime=no", "--high-priority=no", "--use-pid-file=no", "--log-level=warn",
            f"--log-target=file:{self.log}",
            f"--load=module-native-protocol-unix socket={self.socket} auth-anonymous=1",
            "--load=module-null-sink sink_name=vmic",
            "--load=module-null-sink sink_name=vspk",
        ]
        self._proc = subprocess.Popen(
            cmd, env=denv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                break
            ok = subprocess.run(
                ["pactl", "info"], env=self.env, capture_output=True, timeout=5
            ).returncode == 0
            if ok:
                self.pactl("set-default-sink", "vspk")
                self.pactl("set-default-source", "vmic.monitor")
                return self
            time.sleep(0.05)
        log = self.log.read_text(errors="replace") if self.log.exists() else ""
        self.stop()
        raise RuntimeError(f"private pulseaudio did not start; its log:\n{log}")

    def pactl(self, *args: str) -> str:
        out = subprocess.run(
            ["pactl", *args], env=self.env, capture_output=True, text=True, timeout=10, check=True
        )
        return out.stdout

    def play(
        self, wav_path: str | os.PathLike, sink: str = "vmic", wait: bool = True
    ) -> subprocess.Popen[bytes]:
        """Play a file into a sink with ``paplay``; returns the (finished, if ``wait``) process."""
        proc = subprocess.Popen(["paplay", "-d", sink, str(wav_path)], env=self.env)
        if wait:
            proc.wait(60)
        return proc

    def recorder(self, source: str = "vspk.monitor", rate: int = 16000) -> Recorder:
        return Recorder(self.env, source, rate)

    def record(self, source: str = "vspk.monitor", seconds: float = 1.0, rate: int = 16000
               ) -> np.ndarray:
        rec = self.recorder(source, rate).start()
        time.sleep(seconds)
        return rec.stop()

    def stop(self) -> None:
        if self._proc is None:
            return
        end_process(self._proc)
        self._proc = None

    def __enter__(self) -> PulseServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def write_wav(path: str | os.PathLike, samples: np.ndarray, rate: int) -> None:
    """16-bit mono WAV with the standard library (paplay reads it)."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.asarray(samples, dtype="<i2").tobytes())


def read_wav(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """16-bit mono WAV as (samples, rate)."""
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2 or w.getnchannels() != 1:
            raise ValueError(f"{path}: expected 16-bit mono")
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").copy(), w.getframerate()
