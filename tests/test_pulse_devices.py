"""The sound server's own sources and sinks, chosen by name (what a USB headset is under
PulseAudio or PipeWire, where PortAudio sees only ALSA's ``pulse`` and ``default``).

A private PulseAudio with three null sinks: ``vmic`` and ``vspk`` (the fixture's, whose monitor
and sink are the defaults through ``PULSE_SOURCE``/``PULSE_SINK``) and ``headset``, described like a
USB headset. Each routing test picks a device that is *not* the default and checks where the
audio really went: which null sink's monitor has the tone, and which has silence.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from edgevoice.devtools.pulse import write_wav

SINKS = {"vmic", "vspk", "headset"}
SOURCES = {f"{s}.monitor" for s in SINKS}


@pytest.fixture
def server(pulse):
    pulse.pactl("load-module", "module-null-sink", "sink_name=headset",
                "sink_properties=device.description=USB_Headset")
    return pulse


def run_py(code: str, env: dict[str, str], *args: str, timeout: float = 60) -> dict:
    """Run ``code`` in a fresh interpreter (PortAudio enumerates once per process); its last
    stdout line is JSON."""
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def cli(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgevoice", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


def tone(freq: float, seconds: float, rate: int = 16000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (8000 * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def power_at(samples: np.ndarray, freq: float, rate: int = 16000) -> float:
    """Spectral power within 20 Hz of ``freq``."""
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64) * np.hanning(len(samples)))) ** 2
    bins = np.fft.rfftfreq(len(samples), 1 / rate)
    return float(spectrum[np.abs(bins - freq) < 20].sum())


def loud(samples: np.ndarray, threshold: int = 2000) -> np.ndarray:
    return samples[np.abs(samples.astype(np.int32)) > threshold]


# -- listing -----------------------------------------------------------------------------------


def _server_doc(env: dict[str, str]) -> dict:
    out = cli(env, "devices", "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)["server"]


def test_devices_lists_the_servers_sources_and_sinks(server, tmp_path: Path) -> None:
    doc = _server_doc(server.env)
    assert doc is not None and doc["name"] == "pulseaudio" and doc["version"]
    sinks = {s["name"]: s for s in doc["sinks"]}
    sources = {s["name"]: s for s in doc["sources"]}
    assert set(sinks) == SINKS and set(sources) == SOURCES, doc
    assert all(s["monitor"] for s in sources.values()) and not any(
        s["monitor"] for s in sinks.values())
    assert sinks["headset"]["description"] == "USB_Headset"
    assert sources["headset.monitor"]["description"] == "Monitor of USB_Headset"
    assert all(s["channels"] == 2 and s["rate"] >= 8000 for s in [*sinks.values(),
                                                                   *sources.values()])
    # The defaults marked are where a stream with no target goes: here $PULSE_SINK/$PULSE_SOURCE.
    assert [n for n, s in sinks.items() if s["is_default"]] == ["vspk"]
    assert [n for n, s in sources.items() if s["is_default"]] == ["vmic.monitor"]

    text = cli(server.env, "devices")
    assert text.returncode == 0 and "Traceback" not in text.stderr
    assert "sound server pulseaudio" in text.stdout
    assert "headset.monitor" in text.stdout and "USB_Headset" in text.stdout

    # A pactl without --format=json (before PulseAudio 16): the same devices from `list short`.
    old = tmp_path / "old-pactl"
    old.mkdir()
    (old / "pactl").write_text(
        "#!/bin/sh\ncase \"$1\" in --format=*) echo \"pactl: unrecognized option '$1'\" >&2;"
        f" exit 1;; esac\nexec {shutil.which('pactl')} \"$@\"\n")
    (old / "pactl").chmod(0o755)
    env = dict(server.env, PATH=f"{old}{os.pathsep}{server.env.get('PATH', '')}")
    fallback = _server_doc(env)
    assert fallback["name"] == "pulseaudio"
    assert {s["name"]: (s["channels"], s["rate"], s["monitor"], s["is_default"])
            for s in fallback["sources"] + fallback["sinks"]} == {
        s["name"]: (s["channels"], s["rate"], s["monitor"], s["is_default"])
        for s in doc["sources"] + doc["sinks"]}


RESOLVE_SCRIPT = """
    import json
    from edgevoice.audio.devices import resolve_route
    from edgevoice.errors import AudioDeviceError

    def route(spec, kind):
        try:
            r = resolve_route(spec, kind)
        except AudioDeviceError as exc:
            return {"error": str(exc)}
        return {"index": r.index, "name": r.name, "server": r.server_name}

    print(json.dumps({
        "monitor_by_name": route("vspk.monitor", "input"),
        "sink_by_description": route("usb_head", "output"),
        "only_monitors_match": route("headset", "input"),
        "portaudio_first": route("pulse", "input"),
        "ambiguous": route("Monitor of", "input"),
        "unknown": route("no-such-speaker", "output"),
    }))
"""


def test_resolving_names_and_the_sentences_for_wrong_ones(server) -> None:
    out = run_py(RESOLVE_SCRIPT, server.env)
    assert out["monitor_by_name"]["name"] == "pulse"
    assert out["monitor_by_name"]["server"] == "vspk.monitor"
    assert out["sink_by_description"]["server"] == "headset"
    assert out["only_monitors_match"]["server"] == "headset.monitor"
    assert out["portaudio_first"]["server"] is None
    assert out["portaudio_first"]["name"] == "pulse"
    ambiguous = out["ambiguous"]["error"]
    assert "ambiguous" in ambiguous and all(s in ambiguous for s in SOURCES), ambiguous
    unknown = out["unknown"]["error"]
    assert "No audio output device matches 'no-such-speaker'" in unknown
    assert all(f"'{s}'" in unknown for s in SINKS) and "'pulse'" in unknown, unknown
    assert "(USB_Headset)" in unknown and "edgevoice devices" in unknown
    assert "\n" not in unknown and unknown.count(". ") == 0, unknown  # one sentence

    # Without pactl the server's devices cannot be listed: the sentence says what to install.
    no_pactl = run_py(RESOLVE_SCRIPT, dict(server.env, PATH="/nonexistent"))
    assert "pulseaudio-utils" in no_pactl["unknown"]["error"]

    listen = cli(server.env, "listen", "--device", "no-such-microphone")
    assert listen.returncode == 2 and "Traceback" not in listen.stderr
    assert "vspk.monitor" in listen.stderr and "no-such-microphone" in listen.stderr


# -- routing: the audio goes where it was sent ------------------------------------------------

MIC_SCRIPT = """
    import json, os, sys, time
    from edgevoice.audio.devices import Microphone

    out_path, seconds = sys.argv[1], float(sys.argv[2])
    with Microphone(sys.argv[3], rate=16000, block_ms=30) as mic:
        env_after_open = os.environ.get("PULSE_SOURCE")
        first = mic.read(timeout=10)  # null sinks can take ~2 s to start delivering
        assert first is not None, "no audio from the microphone"
        print("READY", flush=True)
        chunks, t0 = [], time.monotonic()
        while time.monotonic() - t0 < seconds:
            chunk = mic.read(timeout=2)
            assert chunk is not None, "microphone stopped delivering"
            chunks.append(chunk)
    with open(out_path, "wb") as fh:
        fh.write(b"".join(c.data for c in chunks))
    print(json.dumps({"device": mic.device_name, "server": mic.route.server_name,
                      "env_after_open": env_after_open}))
"""


def test_microphone_records_the_chosen_source_and_not_the_default(server, tmp_path: Path
                                                                  ) -> None:
    write_wav(tmp_path / "440.wav", tone(440, 1.0), 16000)
    write_wav(tmp_path / "880.wav", tone(880, 1.0), 16000)
    raw = tmp_path / "mic.raw"
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(MIC_SCRIPT), str(raw), "1.8", "vspk.monitor"],
        env=server.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip() == "READY", line + proc.stderr.read()[-3000:]
        time.sleep(0.2)
        # The same moment, two sinks: 440 Hz into vspk (chosen), 880 Hz into vmic (the default
        # source vmic.monitor records it).
        players = [server.play(tmp_path / "440.wav", sink="vspk", wait=False),
                   server.play(tmp_path / "880.wav", sink="vmic", wait=False)]
        for p in players:
            p.wait(30)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr[-3000:]
    info = json.loads(stdout.strip().splitlines()[-1])
    assert info == {"device": "pulse", "server": "vspk.monitor",
                    "env_after_open": "vmic.monitor"}  # the variable was restored after open
    recorded = np.frombuffer(raw.read_bytes(), dtype="<i2")
    heard = loud(recorded)
    assert len(heard) > 0.5 * 16000 * 0.5, "the chosen source recorded no tone"
    assert power_at(recorded, 880) < 0.001 * power_at(recorded, 440), "heard the other sink"


SPEAKER_SCRIPT = """
    import json, os, sys, time
    import numpy as np
    from edgevoice.audio.devices import Speaker
    from edgevoice.audio.format import AudioChunk

    def tone(freq, seconds, rate=22050):
        t = np.arange(int(seconds * rate)) / rate
        return (8000 * np.sin(2 * np.pi * freq * t)).astype(np.int16)

    with Speaker(sys.argv[1], rate=22050) as spk:
        env_after_open = os.environ.get("PULSE_SINK")
        spk.write(AudioChunk.from_samples(tone(440, 1.5), 22050))
        deadline = time.monotonic() + 10
        while spk.last_play_start is None and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.4)
        dropped = spk.clear()  # aborts and restarts the stream: it must stay on the same sink
        spk.write(AudioChunk.from_samples(tone(660, 0.6), 22050))
        drained = spk.drain(timeout=10)
        print(json.dumps({"server": spk.route.server_name, "env_after_open": env_after_open,
                          "dropped_ms": dropped, "drained": drained}))
"""


def test_speaker_plays_into_the_chosen_sink_also_after_clear(server) -> None:
    chosen, other = server.recorder("vmic.monitor"), server.recorder("vspk.monitor")
    with chosen, other:
        out = run_py(SPEAKER_SCRIPT, server.env, "vmic")
        time.sleep(0.6)  # the monitor's tail
        here, there = chosen.stop(), other.stop()
    assert out["server"] == "vmic" and out["env_after_open"] == "vspk" and out["drained"], out
    assert out["dropped_ms"] > 500, out  # the clear() really cut the first tone
    assert np.abs(there).max() < 100, "the default sink played something"
    heard = loud(here)
    # ~0.4 s of the first tone (how much exactly depends on when playback began) + 0.6 s after
    # the clear; the 660 Hz check below tells that the second tone came out of the same sink.
    assert len(heard) > 0.5 * 16000, "the chosen sink played too little"
    assert power_at(here, 440) > 0 and power_at(here, 660) > 0.1 * power_at(here, 440)


def test_say_on_a_sink_named_by_its_description(server) -> None:
    chosen, other = server.recorder("headset.monitor"), server.recorder("vspk.monitor")
    with chosen, other:
        out = cli(server.env, "say", "Hello there.", "--device", "USB_Head")
        time.sleep(0.3)
        here, there = chosen.stop(), other.stop()
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr[-3000:]
    assert len(loud(here, 1000)) > 1600, "nothing was spoken into the chosen sink"
    assert np.abs(there).max() < 100, "the default sink played something"


# -- doctor --------------------------------------------------------------------------------------


def test_doctor_names_the_device_and_its_route(server, tmp_path: Path) -> None:
    config = tmp_path / "devices.yaml"
    config.write_text("audio:\n  input_device: vspk.monitor\n  output_device: usb_headset\n")
    env = {k: v for k, v in server.env.items()
           if k not in ("EDGEVOICE_CONFIG", "EDGEVOICE_MODELS_DIR", "PULSE_SINK", "PULSE_SOURCE")}
    env.update(XDG_CONFIG_HOME=str(tmp_path / "config"), XDG_DATA_HOME=str(tmp_path / "data"),
               XDG_CACHE_HOME=str(tmp_path / "cache"))
    chosen = json.loads(cli(env, "doctor", "--json", "--config", str(config)).stdout)
    checks = {c["name"]: c for c in chosen["checks"]}
    assert checks["audio-input"]["status"] == "ok", checks["audio-input"]
    assert "the sound server's source 'vspk.monitor'" in checks["audio-input"]["detail"]
    assert "'pulse'" in checks["audio-input"]["detail"]
    assert checks["audio-output"]["status"] == "ok", checks["audio-output"]
    assert ("the sound server's sink 'headset' (USB_Headset)"
            in checks["audio-output"]["detail"])

    default = json.loads(cli(env, "doctor", "--json").stdout)
    checks = {c["name"]: c for c in default["checks"]}
    detail = checks["audio-input"]["detail"]
    assert detail.startswith("default: PortAudio device") and "'vmic.monitor'" in detail, detail
    assert "'vspk'" in checks["audio-output"]["detail"], checks["audio-output"]
