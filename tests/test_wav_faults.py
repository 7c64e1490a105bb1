"""Output WAVs survive crashes: written as they go, readable before close and after a kill -9,
and created with the user's umask."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile
from _daemon import Daemon, compose

from edgevoice.agent.outputs import FileOutput
from edgevoice.audio.format import AudioChunk, AudioFormat
from edgevoice.audio.wav_stream import StreamingWavWriter

FMT = AudioFormat(rate=16000, channels=1, width=2)


def tone(ms: float, amp: int = 8000) -> AudioChunk:
    n = int(16 * ms)
    samples = (amp * np.sin(np.arange(n) * 2 * np.pi * 440 / 16000)).astype("<i2")
    return AudioChunk(samples.tobytes(), FMT)


@pytest.fixture
def umask():
    old = os.umask(0o027)
    yield 0o027
    os.umask(old)


def test_a_streaming_wav_is_readable_before_close_and_places_and_mixes(tmp_path, umask):
    path = tmp_path / "o.wav"
    writer = StreamingWavWriter(path, 16000)
    writer.write(tone(500), at_ms=1000)
    writer.write(tone(500), at_ms=1250)  # overlaps the first: mixed, not overwritten
    writer.flush()
    data, rate = soundfile.read(path, dtype="int16")  # as a crash would leave it
    assert rate == 16000 and len(data) == 16 * 1750
    assert not data[: 16 * 1000].any() and data[16 * 1000:].any()
    assert np.abs(data[16 * 1300: 16 * 1500]).max() > 8000  # the sum of two tones
    writer.pad_to(3000)
    writer.close()
    assert len(soundfile.read(path, dtype="int16")[0]) == 16 * 3000
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640  # 0666 minus the umask


def test_file_output_puts_played_audio_on_disk_while_running(tmp_path, umask):
    path = tmp_path / "o.wav"
    out = FileOutput(path, 16000)
    out.origin = time.monotonic()
    out.duration_ms = 5000
    out.play(tone(300))
    time.sleep(0.3 + 2 * FileOutput.FLUSH_S)
    data, _ = soundfile.read(path, dtype="int16")  # still open: what a kill -9 would leave
    assert data.any() and len(data) >= 16 * 300
    out.close()
    data, _ = soundfile.read(path, dtype="int16")
    assert len(data) == 16 * 5000
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640


def test_a_kill_9_keeps_what_the_agent_said(tmp_path):
    wav = tmp_path / "quiet.wav"
    compose([(None, 120.0)], wav)
    daemon = Daemon(wav)
    try:
        with daemon.client() as client:
            client.request("say", text="hello there, this is a test", timeout=60)
        time.sleep(1.5)  # past the end of the speech and a flush
        daemon.proc.kill()
        daemon.proc.wait(10)
        out = daemon.dir / "out.wav"
        info = subprocess.run([sys.executable, "-c", "import soundfile, sys; d, r = "
                               "soundfile.read(sys.argv[1], dtype='int16'); "
                               "print(len(d), int(abs(d).max()))", str(out)],
                              capture_output=True, text=True, timeout=60)
        assert info.returncode == 0, info.stderr
        frames, peak = map(int, info.stdout.split())
        assert frames > 0 and peak > 1000, info.stdout  # the speech is there
    finally:
        daemon.proc.kill()
