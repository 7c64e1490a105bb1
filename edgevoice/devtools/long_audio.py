"""Long recordings for memory tests: written block by block, never held in memory.

A 48 kHz stereo file of quiet noise with a louder burst every ``burst_every_s`` seconds (so the
voice-activity detector has something to look at), of any length.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_long_wav(path: Path, seconds: float, *, rate: int = 48000, channels: int = 2,
                   burst_every_s: float = 30.0, seed: int = 0) -> Path:
    import soundfile

    rng = np.random.default_rng(seed)
    block = rate  # one second at a time
    with soundfile.SoundFile(str(path), "w", samplerate=rate, channels=channels,
                             subtype="PCM_16") as f:
        for second in range(int(seconds)):
            noise = rng.normal(0, 60, (block, channels))
            if burst_every_s and second % int(burst_every_s) == 0:
                t = np.arange(block) / rate
                noise += (3000 * np.sin(2 * np.pi * 220 * t))[:, None]
            f.write(np.clip(noise, -32768, 32767).astype(np.int16))
    return path


def child_peak_rss_mb(argv: list[str]) -> tuple[int, float, str]:
    """Run ``argv``; its exit code, its own peak RSS in MB (wait4), and its stderr."""
    import os
    import subprocess
    import tempfile

    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err,
                                stdin=subprocess.DEVNULL)
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            proc.kill()
            raise
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        return proc.returncode, usage.ru_maxrss / 1024, err.read().decode(errors="replace")
