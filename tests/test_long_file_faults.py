"""`transcribe` streams long files from disk: memory does not grow with the file's length."""

from __future__ import annotations

import sys

import numpy as np
import soundfile

from edgevoice.audio.filestream import stream_audio
from edgevoice.audio.wavfile import iter_chunks, read_audio
from edgevoice.devtools.long_audio import child_peak_rss_mb, write_long_wav


def test_streamed_blocks_equal_the_whole_file_path_at_the_processing_rate(tmp_path):
    path = tmp_path / "a.wav"
    rng = np.random.default_rng(1)
    soundfile.write(path, rng.integers(-3000, 3000, 16000 * 3 + 123).astype(np.int16), 16000)
    whole = list(iter_chunks(read_audio(path, 16000), 30))
    streamed = list(stream_audio(path, 16000, 30))
    assert [c.data for c in streamed] == [c.data for c in whole]
    assert [c.start_ms for c in streamed] == [c.start_ms for c in whole]


def test_streamed_48k_stereo_matches_the_whole_file_resampled(tmp_path):
    path = write_long_wav(tmp_path / "b.wav", 5, burst_every_s=2)
    whole = read_audio(path, 16000).samples().astype(np.float64)
    streamed = np.concatenate([c.samples() for c in stream_audio(path, 16000, 30)])
    assert abs(len(streamed) - len(whole)) <= 16
    n = min(len(whole), len(streamed))
    assert np.corrcoef(whole[:n], streamed[:n])[0, 1] > 0.99


def test_transcribe_memory_does_not_grow_with_the_file(tmp_path):
    def peak(seconds: float) -> float:
        path = write_long_wav(tmp_path / f"{seconds}.wav", seconds, burst_every_s=0)
        code, rss_mb, err = child_peak_rss_mb([sys.executable, "-m", "edgevoice", "transcribe",
                                               str(path)])
        assert code == 0, err
        return rss_mb

    short, long = peak(2), peak(3 * 60)
    # Decoded whole, 3 min x 48 kHz x 2 ch as float32 is 69 MB before the resampled copies.
    assert long - short <= 15, f"peak RSS {short:.0f} MB for 2 s, {long:.0f} MB for 3 min"
