"""Contract tests of the pyttsx3 synthesizer against the real eSpeak NG engine."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import textwrap
import threading
import wave
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from edgevoice.audio.format import AudioChunk
from edgevoice.audio.resample import resample
from edgevoice.config import TtsConfig
from edgevoice.errors import UserError
from edgevoice.tts.protocol import Synthesizer
from edgevoice.tts.pyttsx3_backend import Pyttsx3Synthesizer, read_audio_file


def _espeak_missing() -> str | None:
    """Why the engine tests cannot run here, or None when they can."""
    try:
        import pyttsx3  # noqa: F401
    except ImportError:
        return "pyttsx3 is not installed (pip install pyttsx3)"
    if not sys.platform.startswith("linux"):
        return "these engine tests expect eSpeak NG (Linux)"
    try:
        from pyttsx3.drivers import _espeak  # noqa: F401  # loads libespeak-ng
    except Exception:  # pyttsx3 raises RuntimeError when the library is absent
        return "eSpeak NG is not installed (sudo apt-get install espeak-ng)"
    return None


needs_espeak = pytest.mark.skipif(_espeak_missing() is not None, reason=str(_espeak_missing()))

SENTENCE = "The quick brown fox jumps over the lazy dog near the river bank."


@pytest.fixture
def synth() -> Iterator[Pyttsx3Synthesizer]:
    with Pyttsx3Synthesizer(TtsConfig()) as s:
        yield s


def speech_fraction(chunk: AudioChunk, mode: int = 2) -> float:
    """Share of 30 ms frames webrtcvad calls speech, after resampling to 16 kHz."""
    import webrtcvad

    vad = webrtcvad.Vad(mode)
    pcm = resample(chunk.samples(), chunk.format.rate, 16000)
    frames = [pcm[i : i + 480] for i in range(0, len(pcm) - 479, 480)]
    return sum(vad.is_speech(f.tobytes(), 16000) for f in frames) / len(frames)


def rms(chunk: AudioChunk) -> float:
    return float(np.sqrt(np.mean(chunk.samples().astype(np.float64) ** 2)))


# --- engine contract ------------------------------------------------------------------------------


@needs_espeak
def test_renders_real_speech(synth: Pyttsx3Synthesizer) -> None:
    chunk = synth.synthesize(SENTENCE)
    assert chunk.format.rate == 22050 and chunk.format.channels == 1 and chunk.format.width == 2
    assert chunk.format == synth.format
    words = len(SENTENCE.split())
    expected_s = words / TtsConfig().rate_wpm * 60
    assert 0.5 * expected_s < chunk.duration_ms / 1000 < 2 * expected_s + 0.5
    assert rms(chunk) > 500
    assert np.abs(chunk.samples()).max() > 5000
    assert speech_fraction(chunk) > 0.6


@needs_espeak
def test_satisfies_the_protocol(synth: Pyttsx3Synthesizer) -> None:
    assert isinstance(synth, Synthesizer)
    assert synth.name == "pyttsx3" and synth.driver == "espeak"
    assert synth.warm_up_ms > 0


@needs_espeak
def test_rate_setting_changes_duration() -> None:
    durations = {}
    for wpm in (100, 300):
        with Pyttsx3Synthesizer(TtsConfig(rate_wpm=wpm)) as s:
            durations[wpm] = s.synthesize(SENTENCE).duration_ms
    assert durations[100] > 2 * durations[300]


@needs_espeak
def test_volume_setting_changes_level() -> None:
    levels = {}
    for volume in (0.2, 1.0):
        with Pyttsx3Synthesizer(TtsConfig(volume=volume)) as s:
            levels[volume] = rms(s.synthesize(SENTENCE))
    assert levels[0.2] < 0.5 * levels[1.0]


@needs_espeak
def test_twenty_clauses_in_a_row_on_one_engine_thread(synth: Pyttsx3Synthesizer) -> None:
    threads = set()
    for i in range(20):
        chunk = synth.synthesize(f"This is clause number {i}, spoken in a row.")
        assert chunk.duration_ms > 1000
        assert synth.last_synthesis_ms > 0
        threads.add(synth._call(threading.get_ident))
    assert len(threads) == 1 and threading.get_ident() not in threads


@needs_espeak
def test_different_texts_give_different_audio(synth: Pyttsx3Synthesizer) -> None:
    yes, no = synth.synthesize("Yes."), synth.synthesize("No, not at all, never.")
    assert yes.data != no.data
    assert no.duration_ms > yes.duration_ms + 300
    again = synth.synthesize("Yes.")  # the same text renders (nearly) the same
    assert abs(again.duration_ms - yes.duration_ms) < 50


@needs_espeak
def test_callers_on_many_threads_are_served_in_turn(synth: Pyttsx3Synthesizer) -> None:
    results: dict[int, float] = {}

    def speak(n: int) -> None:
        results[n] = synth.synthesize(f"Caller {n} says hello.").duration_ms

    workers = [threading.Thread(target=speak, args=(n,)) for n in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=30)
    assert sorted(results) == [0, 1, 2, 3]
    assert all(d > 500 for d in results.values())


@needs_espeak
def test_empty_text_gives_no_samples(synth: Pyttsx3Synthesizer) -> None:
    chunk = synth.synthesize("  \n")
    assert chunk.data == b"" and chunk.format == synth.format


@needs_espeak
def test_nothing_is_printed_to_stdout(
    synth: Pyttsx3Synthesizer, capfd: pytest.CaptureFixture[str]
) -> None:
    synth.synthesize("Quiet please.")
    assert "Audio saved" not in capfd.readouterr().out


@needs_espeak
def test_voice_selection_by_id_suffix_name_and_unknown() -> None:
    with Pyttsx3Synthesizer(TtsConfig(voice="en-us")) as s:
        assert s.voice_id == "gmw/en-us"
        ids = dict(s.list_voices())
        assert ids["gmw/en-us"] == "English (America)"
    with Pyttsx3Synthesizer(TtsConfig(voice="english (america)")) as s:
        assert s.voice_id == "gmw/en-us"
    with pytest.raises(UserError, match=r"tts.voice 'klingon-xyz' matches no installed voice"):
        Pyttsx3Synthesizer(TtsConfig(voice="klingon-xyz"))


@needs_espeak
def test_a_failed_open_leaves_the_engine_usable() -> None:
    with pytest.raises(UserError) as kept:  # its traceback stays alive in ``kept``
        Pyttsx3Synthesizer(TtsConfig(voice="no-such-voice", rate_wpm=300))
    with Pyttsx3Synthesizer(TtsConfig()) as s:
        assert s.voice_id == "gmw/en"
        assert s.synthesize(SENTENCE).duration_ms > 3000  # 175 wpm, not the failed 300
    assert kept.value


@needs_espeak
def test_one_open_instance_close_and_reopen() -> None:
    first = Pyttsx3Synthesizer(TtsConfig())
    with pytest.raises(RuntimeError, match="only one"):
        Pyttsx3Synthesizer(TtsConfig())
    first.close()
    first.close()  # twice is fine
    with pytest.raises(RuntimeError, match="closed"):
        first.synthesize("Hello.")
    with Pyttsx3Synthesizer(TtsConfig()) as second:
        assert second.synthesize("Back again.").duration_ms > 300


@needs_espeak
def test_missing_espeak_library_is_a_user_error(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import ctypes
        real = ctypes.cdll.LoadLibrary
        def load(name):
            if "espeak" in str(name):
                raise OSError(f"{name}: cannot open shared object file")
            return real(name)
        ctypes.cdll.LoadLibrary = load
        from edgevoice.config import TtsConfig
        from edgevoice.errors import UserError
        from edgevoice.tts.pyttsx3_backend import Pyttsx3Synthesizer
        try:
            Pyttsx3Synthesizer(TtsConfig())
        except UserError as exc:
            print("USERERROR", exc)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    assert "USERERROR" in out.stdout, out.stderr
    assert "sudo apt-get install espeak-ng" in out.stdout


# --- file reading (no engine needed) ------------------------------------------------------------


def _ieee_extended(value: int) -> bytes:
    exponent = value.bit_length() - 1
    mantissa = value << (63 - exponent)
    return struct.pack(">HQ", exponent + 16383, mantissa)


def test_reads_big_endian_aiff(tmp_path: Path) -> None:
    samples = np.array([0, 1000, -1000, 32767, -32768], dtype=np.int16)
    sound = samples.astype(">i2").tobytes()
    comm = struct.pack(">hIh", 1, len(samples), 16) + _ieee_extended(22050)
    ssnd = struct.pack(">II", 0, 0) + sound
    body = b"AIFF" + b"COMM" + struct.pack(">I", len(comm)) + comm
    body += b"SSND" + struct.pack(">I", len(ssnd)) + ssnd
    path = tmp_path / "a.aiff"
    path.write_bytes(b"FORM" + struct.pack(">I", len(body)) + body)
    chunk = read_audio_file(path)
    assert chunk.format.rate == 22050 and chunk.format.channels == 1
    assert chunk.samples().tolist() == samples.tolist()


def test_reads_stereo_wav_as_mono(tmp_path: Path) -> None:
    path = tmp_path / "s.wav"
    frames = np.array([[100, 300], [-100, -300]], dtype=np.int16)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(frames.tobytes())
    chunk = read_audio_file(path)
    assert chunk.format.rate == 16000 and chunk.format.channels == 1
    assert chunk.samples().tolist() == [200, -200]


def test_rejects_other_files(tmp_path: Path) -> None:
    path = tmp_path / "x.bin"
    path.write_bytes(b"not audio at all")
    with pytest.raises(RuntimeError, match="neither WAV nor AIFF"):
        read_audio_file(path)
