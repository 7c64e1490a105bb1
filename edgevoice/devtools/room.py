"""A virtual room: what the microphone hears when the agent's speaker plays into the same air.

``RoomSetting`` is one room (delay, attenuation, a few reflections, optional noise). It is used
two ways: ``RoomSetting.apply`` simulates the echo of a whole signal (unit tests, the ERLE
benchmark), and ``LiveRoom`` does it for real on a private PulseAudio server, between the agent's
virtual speaker and its virtual microphone, with a delay that can change while it runs.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field

import numpy as np

from edgevoice.devtools.pulse import end_process


@dataclass(frozen=True)
class RoomSetting:
    """Speaker-to-microphone path: direct sound after ``delay_ms`` at ``gain_db``, then
    ``reflections`` as (extra delay ms, gain relative to the direct sound, dB), plus white noise
    at ``noise_dbfs`` (None: none)."""

    delay_ms: float = 60.0
    gain_db: float = -9.0
    reflections: tuple[tuple[float, float], ...] = ((23.0, -10.0), (61.0, -18.0))
    noise_dbfs: float | None = None
    name: str = field(default="", compare=False)

    def label(self) -> str:
        noise = "" if self.noise_dbfs is None else f", noise {self.noise_dbfs:.0f} dBFS"
        return self.name or f"{self.delay_ms:.0f} ms, {self.gain_db:.0f} dB{noise}"

    def paths(self) -> list[tuple[float, float]]:
        """(delay ms, gain dB relative to the direct sound) of every path, the direct first."""
        return [(self.delay_ms, 0.0), *((self.delay_ms + d, g) for d, g in self.reflections)]

    def apply(self, far: np.ndarray, rate: int, seed: int = 0) -> np.ndarray:
        """The echo of ``far`` (float64, same length), noise included."""
        x = far.astype(np.float64)
        y = np.zeros(len(x))
        for d, g in self.paths():  # a few sparse paths: shifted, scaled copies
            k = int(rate * d / 1000)
            if k < len(x):
                y[k:] += 10 ** ((self.gain_db + g) / 20) * x[: len(x) - k]
        if self.noise_dbfs is not None:
            rms = 32768 * 10 ** (self.noise_dbfs / 20)
            y += np.random.default_rng(seed).normal(0.0, rms, len(y))
        return y


def mix(*signals: np.ndarray) -> np.ndarray:
    """Sum float signals (padded to the longest) into clipped int16."""
    n = max(len(s) for s in signals)
    out = np.zeros(n)
    for s in signals:
        out[: len(s)] += s
    return np.clip(np.round(out), -32768, 32767).astype(np.int16)


def pactl_for(env: dict[str, str]):
    """``pactl`` on the server ``env`` names (``PulseServer.pactl`` from inside a child)."""

    def pactl(*args: str) -> str:
        return subprocess.run(["pactl", *args], env=env, capture_output=True, text=True,
                              timeout=10, check=True).stdout

    return pactl


def _sink_inputs_of(listing: str, module: str) -> list[str]:
    """The sink inputs that ``module`` owns, from ``pactl list sink-inputs`` (the short listing
    has no owner column: its second field is the sink)."""
    found, current = [], None
    for line in listing.splitlines():
        line = line.strip()
        if line.startswith("Sink Input #"):
            current = line.removeprefix("Sink Input #")
        elif line.startswith("Owner Module:") and line.split(":", 1)[1].strip() == module:
            if current is not None:
                found.append(current)
    return found


class LiveRoom:
    """The speaker looped back into the microphone on a private PulseAudio server: PulseAudio's
    ``module-loopback`` from ``source`` (the agent's speaker monitor) to ``sink`` (the agent's
    microphone) at ``setting``'s delay (``latency_msec``, which the module holds by resampling
    adaptively, as a real device drifts) and attenuation (the loopback stream's volume).
    Reflections are not rendered here (``RoomSetting.apply`` simulates them); noise, when set,
    is a noise clip looped into the microphone by ``paplay``.

    ``set_delay(ms)`` reloads the loopback at another latency while the agent runs: the output
    device's latency changed.
    """

    def __init__(self, pactl, setting: RoomSetting, source: str = "vspk.monitor",
                 sink: str = "vmic", noise_wav: str | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.pactl, self.setting, self.source, self.sink = pactl, setting, source, sink
        self.noise_wav, self.env = noise_wav, env
        self._module: str | None = None
        self._noise: subprocess.Popen[bytes] | None = None

    def _load(self) -> None:
        self._module = self.pactl(
            "load-module", "module-loopback", f"source={self.source}", f"sink={self.sink}",
            f"latency_msec={int(self.setting.delay_ms)}", "source_dont_move=true",
            "sink_dont_move=true", "sink_input_properties=media.name=room").strip()
        volume = 10 ** (self.setting.gain_db / 20)
        found = _sink_inputs_of(self.pactl("list", "sink-inputs"), self._module)
        if not found:
            raise RuntimeError(f"no sink input of the room's loopback (module {self._module})")
        for index in found:
            self.pactl("set-sink-input-volume", index, f"{volume:.4f}")

    def _unload(self) -> None:
        if self._module is not None:
            self.pactl("unload-module", self._module)
            self._module = None

    def set_delay(self, delay_ms: float) -> None:
        from dataclasses import replace

        self.setting = replace(self.setting, delay_ms=delay_ms)
        self._unload()
        self._load()

    def start(self) -> LiveRoom:
        self._load()
        if self.noise_wav is not None and self.setting.noise_dbfs is not None:
            volume = int(65536 * 10 ** ((self.setting.noise_dbfs + 20) / 20))
            self._noise = subprocess.Popen(
                ["sh", "-c", f'while :; do paplay -d {self.sink} --volume={volume} '
                             f'"{self.noise_wav}" || exit; done'],
                env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True)
        return self

    def stop(self) -> None:
        if self._noise is not None:
            import os
            import signal

            try:
                os.killpg(self._noise.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            end_process(self._noise)
            self._noise = None
        self._unload()

    def __enter__(self) -> LiveRoom:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def speech_rms_dbfs(samples: np.ndarray) -> float:
    x = samples.astype(np.float64)
    return float(10 * np.log10(np.mean(x * x) / 32768**2 + 1e-12))


