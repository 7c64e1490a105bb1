"""Playing clips into a virtual microphone and recording the whole bus (both channels, one clock).

``BusRecorder`` runs ``parec -d vbus.monitor`` (s16le, 2 channels, 48 kHz) for the whole run and
keeps everything in memory (192 kB/s); ``snapshot()`` reads it while it records, so each turn is
analysed as soon as it is over. ``now()`` maps the wall clock onto the recording's sample index
(to within the capture latency: only used to bound searches, never as a measurement).
"""

from __future__ import annotations

import subprocess
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgevoice.devtools.pulse import Recorder
from edgevoice.latency.rig import BUS, RATE, die_with_parent


class BusRecorder(Recorder):
    """The bus monitor, both channels (L = microphone, R = speaker), in its own session and
    ended with the bench."""

    def __init__(self, env: dict[str, str], source: str = BUS + ".monitor",
                 rate: int = RATE) -> None:
        super().__init__(env, source, rate, channels=2, start_new_session=True,
                         preexec_fn=die_with_parent)

    def start(self, timeout: float = 10.0) -> BusRecorder:
        super().start(timeout)
        return self

    def now(self) -> int:
        """The recording's index for this moment: the frames received so far."""
        return self.frames()


@dataclass(frozen=True)
class BusClip:
    """A clip ready to play: at the bus rate, as a WAV the player reads and as samples."""

    name: str
    source: Path
    wav: Path  # 48 kHz mono int16
    samples: np.ndarray  # int16 at the bus rate
    start_s: float  # first speech sample, seconds into the clip
    end_s: float  # last speech sample
    span_source: str

    @property
    def duration_s(self) -> float:
        return len(self.samples) / RATE


def read_mono(path: Path) -> tuple[np.ndarray, int]:
    """Any WAV/FLAC/OGG as int16 mono (channels averaged) and its rate."""
    import soundfile

    data, rate = soundfile.read(str(path), dtype="int16", always_2d=True)
    if data.shape[1] > 1:
        data = data.astype(np.int32).mean(axis=1).astype(np.int16)
    else:
        data = data[:, 0]
    return np.ascontiguousarray(data), int(rate)


def to_bus_rate(samples: np.ndarray, rate: int) -> np.ndarray:
    if rate == RATE:
        return np.asarray(samples, dtype=np.int16)
    import soxr

    out = soxr.resample(np.asarray(samples, dtype=np.float32) / 32768.0, rate, RATE, "HQ")
    return np.clip(np.round(out * 32768.0), -32768, 32767).astype(np.int16)


def write_wav(path: Path, samples: np.ndarray, rate: int = RATE, channels: int = 1) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.asarray(samples, dtype="<i2").tobytes())


def play(env: dict[str, str], sink: str, wav: Path, timeout: float = 120.0) -> None:
    """Play a WAV into ``sink`` and wait until it has been played (paplay drains first).
    paplay's default (large) buffer: it never underruns on a busy machine, and its latency
    does not matter, since every clip is found on the recording itself."""
    proc = subprocess.Popen(["paplay", "-d", sink, str(wav)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True, preexec_fn=die_with_parent)
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise RuntimeError(f"paplay into {sink} did not finish in {timeout:.0f} s") from None
    if proc.returncode != 0:
        raise RuntimeError(f"paplay into {sink} failed: {err.decode(errors='replace').strip()}")


def play_async(env: dict[str, str], sink: str, wav: Path) -> subprocess.Popen:
    return subprocess.Popen(["paplay", "-d", sink, str(wav)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, preexec_fn=die_with_parent)
