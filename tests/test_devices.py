"""Devices on real PortAudio streams: a private PulseAudio with null sinks stands in for hardware.

Code that opens devices runs in a subprocess with the server's environment, because PortAudio
enumerates devices once per process. Each script prints one JSON line as its result.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from edgevoice.devtools.pulse import read_wav
from edgevoice.evaluation import speech_dir

SPEECH = speech_dir()
CLIP = "pocketsphinx__goforward.wav"
needs_speech = pytest.mark.skipif(
    SPEECH is None,
    reason="speech clips not found: set EDGEVOICE_SPEECH_DIR or add ../shared/speech",
)


def run_py(code: str, env: dict[str, str], *args: str, timeout: float = 60) -> dict:
    """Run ``code`` in a fresh interpreter and return the JSON it printed last."""
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        env=env, capture_output=True, text=True, timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def tone(freq: float, seconds: float, rate: int, amp: int = 8000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def loud_spans(samples: np.ndarray, rate: int, threshold: int = 2000, gap_s: float = 0.05
               ) -> list[tuple[float, float]]:
    """(start, end) seconds of the regions louder than ``threshold``, bridging short gaps."""
    idx = np.flatnonzero(np.abs(samples.astype(np.int32)) > threshold)
    if not len(idx):
        return []
    parts = np.split(idx, np.flatnonzero(np.diff(idx) > gap_s * rate) + 1)
    return [(p[0] / rate, p[-1] / rate) for p in parts]


def dominant_hz(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64) * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[np.argmax(spectrum)])


def best_correlation(recording: np.ndarray, clip: np.ndarray) -> float:
    """Peak normalised cross-correlation of ``clip`` against every offset of ``recording``."""
    rec, ref = recording.astype(np.float64), clip.astype(np.float64)
    n = 1 << int(np.ceil(np.log2(len(rec) + len(ref))))
    spectrum = np.fft.rfft(rec, n) * np.conj(np.fft.rfft(ref, n))
    corr = np.fft.irfft(spectrum, n)[: len(rec) - len(ref)]
    energy = np.cumsum(np.concatenate(([0.0], rec**2)))
    seg = energy[len(ref) : len(ref) + len(corr)] - energy[: len(corr)]
    return float(np.max(corr / np.sqrt(np.maximum(seg, 1e-9) * np.sum(ref**2))))


# -- no PortAudio / no devices ------------------------------------------------------------------


def test_import_needs_no_portaudio_and_a_missing_library_is_a_clear_error() -> None:
    code = """
        import importlib.abc, json, sys

        class NoPortAudio(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name == "sounddevice":  # what sounddevice raises without libportaudio2
                    raise OSError("PortAudio library not found")

        sys.meta_path.insert(0, NoPortAudio())
        import edgevoice.audio.devices as dev
        from edgevoice.errors import AudioDeviceError
        try:
            dev.list_devices()
        except AudioDeviceError as exc:
            print(json.dumps({"error": str(exc)}))
    """
    out = run_py(code, dict(os.environ))
    assert "libportaudio2" in out["error"] and "apt-get install" in out["error"]


def test_no_audio_server_and_no_devices_gives_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "client.conf").write_text("autospawn = no\n")
    env = dict(os.environ)
    env.update(
        PULSE_SERVER=f"unix:{tmp_path}/no-such-socket",
        PULSE_CLIENTCONFIG=str(tmp_path / "client.conf"),
        JACK_NO_START_SERVER="1",
    )
    code = """
        import json
        from edgevoice.audio.devices import Microphone, Speaker, list_devices, resolve_device
        from edgevoice.errors import AudioDeviceError
        out = {"devices": [d.name for d in list_devices()]}
        for name, call in [("resolve_in", lambda: resolve_device(None, "input")),
                           ("resolve_out", lambda: resolve_device(None, "output")),
                           ("mic", lambda: Microphone().open()),
                           ("spk", lambda: Speaker().open())]:
            try:
                call()
                out[name] = None
            except AudioDeviceError as exc:
                out[name] = str(exc)
        print(json.dumps(out))
    """
    out = run_py(code, env)
    if out["devices"]:
        pytest.skip(f"this machine has ALSA devices without PulseAudio: {out['devices']}")
    for key, kind in [("resolve_in", "input"), ("mic", "input"), ("resolve_out", "output"),
                      ("spk", "output")]:
        assert out[key] is not None, f"{key} did not raise AudioDeviceError"
        assert f"No audio {kind} device found" in out[key]
        assert "PulseAudio" in out[key] and "edgevoice devices" in out[key]


@pytest.mark.parametrize("spec", [2, "2", "USB"])
@pytest.mark.parametrize("kind", ["input", "output"])
def test_a_named_device_with_no_devices_at_all_says_none_was_found(monkeypatch, spec, kind):
    """Not "choose one of none": with nothing to choose from, the fix is the audio server."""
    from edgevoice.audio import devices
    from edgevoice.errors import AudioDeviceError

    monkeypatch.setattr(devices, "list_devices", lambda: [])
    with pytest.raises(AudioDeviceError) as info:
        devices.resolve_device(spec, kind)
    message = str(info.value)
    assert f"No audio {kind} device found" in message and "PulseAudio" in message
    assert "none" not in message


# -- with a private PulseAudio --------------------------------------------------------------------


def test_list_and_resolve_devices(pulse) -> None:
    code = """
        import json
        from edgevoice.audio.devices import Speaker, list_devices, resolve_device
        from edgevoice.errors import AudioDeviceError

        def err(call):
            try:
                return call() and None
            except AudioDeviceError as exc:
                return str(exc)

        devs = list_devices()
        print(json.dumps({
            "devices": [d.__dict__ for d in devs],
            "default_in": resolve_device(None, "input"),
            "default_out": resolve_device(None, "output"),
            "by_name": resolve_device("pulse", "input"),
            "by_substring": resolve_device("PUL", "output"),
            "by_index": resolve_device(str(devs[0].index), "output"),
            "unknown": err(lambda: resolve_device("no such card", "input")),
            "ambiguous": err(lambda: resolve_device("", "input")),
            "bad_index": err(lambda: Speaker(device=99).open()),
        }))
    """
    out = run_py(code, pulse.env)
    names = {d["name"]: d for d in out["devices"]}
    assert "pulse" in names, out["devices"]
    assert names["pulse"]["max_input_channels"] > 0 and names["pulse"]["max_output_channels"] > 0
    default = [d for d in out["devices"] if d["is_default_input"]]
    assert len(default) == 1 and out["default_in"] == default[0]["index"]
    assert out["by_name"] == out["by_substring"] == names["pulse"]["index"]
    assert out["by_index"] == out["devices"][0]["index"]
    assert "No audio input device matches 'no such card'" in out["unknown"]
    assert "'pulse'" in out["unknown"] and "edgevoice devices" in out["unknown"]
    assert "ambiguous" in out["ambiguous"] and "'pulse'" in out["ambiguous"]
    assert "#99" in out["bad_index"] and "edgevoice devices" in out["bad_index"]


MIC_SCRIPT = """
    import json, sys, time
    import numpy as np
    import sounddevice as sd
    from edgevoice.audio.devices import Microphone

    out_path, seconds, force_native = sys.argv[1], float(sys.argv[2]), sys.argv[3] == "1"
    if force_native:  # pretend the device only takes stereo at its native rate
        real_check = sd.check_input_settings
        def native_only(device=None, samplerate=None, channels=None, **kw):
            if samplerate != sd.query_devices(device)["default_samplerate"] or channels != 2:
                raise sd.PortAudioError("Invalid sample rate or channel count")
            return real_check(device=device, samplerate=samplerate, channels=channels, **kw)
        sd.check_input_settings = native_only
    with Microphone(rate=16000, block_ms=30) as mic:
        first = mic.read(timeout=10)  # null sinks can take ~2 s to start delivering
        assert first is not None, "no audio from the microphone"
        print("READY", flush=True)
        chunks, t0 = [first], time.monotonic()
        while time.monotonic() - t0 < seconds:
            chunk = mic.read(timeout=2)
            assert chunk is not None, "microphone stopped delivering"
            chunks.append(chunk)
        elapsed = time.monotonic() - t0
        info = {"device_rate": mic.device_rate, "channels": mic.channels,
                "overflows": mic.overflows,
                "starts": [c.start_ms for c in chunks], "lens": [len(c.data) for c in chunks],
                "rates": sorted({c.format.rate for c in chunks}), "elapsed": elapsed}
    with open(out_path, "wb") as fh:
        fh.write(b"".join(c.data for c in chunks))
    print(json.dumps(info))
"""


@needs_speech
@pytest.mark.parametrize("force_native", [False, True], ids=["16k-mono", "44k-stereo"])
def test_microphone_records_a_clip_played_into_the_virtual_mic(
    pulse, tmp_path: Path, force_native: bool
) -> None:
    clip, rate = read_wav(SPEECH / CLIP)
    assert rate == 16000
    seconds = len(clip) / rate + 1.5
    raw = tmp_path / "mic.raw"
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(MIC_SCRIPT), str(raw), str(seconds),
         "1" if force_native else "0"],
        env=pulse.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip() == "READY", line + proc.stderr.read()[-3000:]
        time.sleep(0.2)
        pulse.play(SPEECH / CLIP, sink="vmic")
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr[-3000:]
    info = json.loads(stdout.strip().splitlines()[-1])
    recorded = np.frombuffer(raw.read_bytes(), dtype="<i2")

    assert info["rates"] == [16000]
    if force_native:
        assert info["device_rate"] != 16000 and info["channels"] == 2
    else:
        assert (info["device_rate"], info["channels"]) == (16000, 1)
    # Exact 30 ms chunks on a gap-free, sample-counted timeline.
    assert set(info["lens"]) == {960}
    assert info["starts"] == [30.0 * i for i in range(len(info["starts"]))]
    # Delivered audio keeps pace with the wall clock (no lost or invented blocks).
    assert abs(30e-3 * (len(info["starts"]) - 1) - info["elapsed"]) < 0.3
    assert info["overflows"] == 0

    assert np.abs(recorded).max() > 1000, "recorded silence"
    corr = best_correlation(recorded, clip)
    assert corr > 0.8, f"recording does not match the clip (correlation {corr:.2f})"
    gain = np.sqrt(np.mean(recorded.astype(np.float64) ** 2) * len(recorded) / len(clip)) / (
        np.sqrt(np.mean(clip.astype(np.float64) ** 2))
    )
    assert 0.5 < gain < 2.0, gain


SPEAKER_SCRIPT = """
    import json, time
    import numpy as np
    from edgevoice.audio.devices import Speaker
    from edgevoice.audio.format import AudioChunk

    def tone(freq, seconds, rate):
        t = np.arange(int(seconds * rate)) / rate
        return (8000 * np.sin(2 * np.pi * freq * t)).astype(np.int16)

    starts = []
    with Speaker(rate=22050, on_play_start=starts.append) as spk:
        t0 = time.monotonic()
        # Two chunks at different rates: the 16 kHz one is resampled to the device rate.
        spk.write(AudioChunk.from_samples(tone(440, 0.6, 22050), 22050))
        spk.write(AudioChunk.from_samples(tone(1000, 0.6, 16000), 16000))
        playing = spk.playing
        drained = spk.drain(timeout=10)
        t1 = time.monotonic()
        history = spk.played(since=t0)
        print(json.dumps({
            "drain_s": t1 - t0, "drained": drained, "playing_during": playing,
            "playing_after": spk.playing, "starts": [s - t0 for s in starts],
            "device_rate": spk.device_rate, "underflows": spk.underflows,
            "history_loud_s": sum(int(np.count_nonzero(b.samples)) for b in history)
                / spk.device_rate,
            "history_sorted": all(a.time < b.time for a, b in zip(history, history[1:])),
        }))
"""


def test_speaker_plays_to_the_virtual_speaker(pulse) -> None:
    with pulse.recorder("vspk.monitor", rate=16000) as rec:
        out = run_py(SPEAKER_SCRIPT, pulse.env)
        time.sleep(0.2)
        recorded = rec.stop()

    assert out["drained"] and out["playing_during"] and not out["playing_after"]
    assert 1.2 <= out["drain_s"] < 2.5, out  # 1.2 s of audio plus the output latency
    assert len(out["starts"]) == 1 and 0 <= out["starts"][0] < 0.5, out["starts"]
    assert abs(out["history_loud_s"] - 1.2) < 0.05, out
    assert out["history_sorted"]

    spans = loud_spans(recorded, 16000)
    assert len(spans) == 1, spans  # one continuous tone: no gaps between the two chunks
    start, end = spans[0]
    assert abs((end - start) - 1.2) < 0.05, spans
    first = recorded[int((start + 0.1) * 16000) : int((start + 0.5) * 16000)]
    second = recorded[int((start + 0.7) * 16000) : int((start + 1.1) * 16000)]
    assert abs(dominant_hz(first, 16000) - 440) < 10
    assert abs(dominant_hz(second, 16000) - 1000) < 10


CLEAR_SCRIPT = """
    import json, threading, time
    import numpy as np
    from edgevoice.audio.devices import Speaker
    from edgevoice.audio.format import AudioChunk

    rate = 22050
    t = np.arange(3 * rate) / rate
    long_tone = (8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
    started = threading.Event()
    starts = []
    def on_start(when):
        starts.append(when)
        started.set()
    with Speaker(rate=rate, buffer_ms=1000, on_play_start=on_start) as spk:
        # A 3 s tone into a 1 s buffer: the writer blocks until clear() releases it.
        result = {}
        writer = threading.Thread(
            target=lambda: result.update(ok=spk.write(AudioChunk.from_samples(long_tone, rate))))
        writer.start()
        assert started.wait(10)
        time.sleep(0.8)
        t_clear = time.monotonic()
        dropped_ms = spk.clear()
        clear_s = time.monotonic() - t_clear
        writer.join(5)
        playing_after = spk.playing
        time.sleep(0.5)
        t_done = t_clear + clear_s
        # Blocks that reached the DAC before clear() returned really played (a block's start
        # may fall in the few ms clear() takes); none may start after it.
        after = [b for b in spk.played(since=t_done) if b.time >= t_done]
        # The speaker still works after a clear.
        spk.write(AudioChunk.from_samples(long_tone[: rate // 2], rate))
        spk.drain(timeout=5)
        print(json.dumps({
            "played_before_clear": t_clear - starts[0], "clear_s": clear_s,
            "dropped_ms": dropped_ms, "writer_returned": not writer.is_alive(),
            "write_result": result.get("ok"), "playing_after": playing_after,
            "loud_after_clear": sum(int((np.abs(b.samples) > 0).sum()) for b in after),
            "n_after": len(after), "starts": len(starts),
        }))
"""


def test_clear_silences_the_speaker_within_100_ms(pulse) -> None:
    with pulse.recorder("vspk.monitor", rate=16000) as rec:
        out = run_py(CLEAR_SCRIPT, pulse.env)
        time.sleep(0.2)
        recorded = rec.stop()

    assert out["writer_returned"] and out["write_result"] is False, out  # clear() freed the writer
    assert out["clear_s"] < 0.1 and not out["playing_after"], out
    assert out["dropped_ms"] > 1000, out  # most of the 3 s tone never played
    assert out["n_after"] > 0 and out["loud_after_clear"] == 0, out  # the history agrees
    assert out["starts"] == 2, out  # on_play_start fired again for the audio after clear()

    spans = loud_spans(recorded, 16000)
    assert len(spans) == 2, spans
    heard = spans[0][1] - spans[0][0]
    # Heard for as long as it played before clear(), plus at most ~100 ms (without clear: 3 s).
    assert heard < out["played_before_clear"] + 0.1, (heard, out)
    assert heard > out["played_before_clear"] - 0.15, (heard, out)
    assert abs((spans[1][1] - spans[1][0]) - 0.5) < 0.05, spans

