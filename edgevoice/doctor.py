"""``edgevoice doctor``: check this machine and explain every problem with its fix.

Each check yields ``ok``, ``warn`` (works, but worse than it could) or ``fail`` (a part of the
agent will not work), a one-line detail and, when not ok, the fix. The whole run stays under a
few seconds and never ends in a traceback: a check that crashes becomes a failed check.

Audio devices and speech output are probed in child processes started first and collected last:
PortAudio enumerates devices once per process and its ALSA plugins print to the C stderr, and
pyttsx3/eSpeak keep process-wide state; a child keeps all of that out of this process and lets a
hung sound server time out. Nothing here touches the network unless remote targets are passed in.

Hooks for parts that land later:
* remote targets: ``run_checks(remotes=[(name, base_url), ...])`` (or ``check_remote`` with an
  API key and the configured model) — ``GET {base_url}/models`` with a short timeout;
* the control socket: ``control_socket_path(cfg)`` finds it through the control API's own
  ``socket_path`` (``control.socket`` in the config) and ``check_control_socket`` reports whether
  a daemon listens there; without a control API (or with it disabled) there is no such check.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import platform
import socket
import stat
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Optional

if TYPE_CHECKING:  # imported where used: building the CLI parser must stay cheap
    from edgevoice.config import Config, Paths

Status = Literal["ok", "warn", "fail"]

# A child Python that imports PortAudio and asks the sound server: seconds on a Pi or a busy CPU.
PROBE_TIMEOUT_S = 10.0
REMOTE_TIMEOUT_S = 2.0
SOCKET_TIMEOUT_S = 0.5
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[1])
_REPORT_BUG = "this is a bug in edgevoice doctor: please report it with the detail above"


@dataclass(frozen=True)
class Check:
    """One finding: ``fix`` is None when the status is ok."""

    name: str
    status: Status
    detail: str
    fix: Optional[str] = None


def ok(name: str, detail: str) -> Check:
    return Check(name, "ok", detail)


def warn(name: str, detail: str, fix: str) -> Check:
    return Check(name, "warn", detail, fix)


def fail(name: str, detail: str, fix: str) -> Check:
    return Check(name, "fail", detail, fix)


def _guard(name: str, check: Callable[[], list[Check]]) -> list[Check]:
    """Run a check; an unexpected exception becomes a failed check, never a traceback."""
    try:
        return check()
    except Exception as exc:  # noqa: BLE001 - doctor must report, not crash
        return [fail(name, f"the check itself failed: {type(exc).__name__}: {exc}", _REPORT_BUG)]


def _oneline(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ---------------------------------------------------------------------------------------------
# Python and config
# ---------------------------------------------------------------------------------------------


def check_python() -> list[Check]:
    version = ".".join(str(v) for v in sys.version_info[:3])
    where = sys.executable + (" (virtual environment)" if sys.prefix != sys.base_prefix else "")
    return [ok("python", f"Python {version} at {where}")]


def check_config(config_path: Optional[str]) -> tuple[list[Check], Config]:
    """The config check and the config the other checks use (defaults when it is invalid)."""
    from edgevoice.config import CONFIG_ENV, Config, find_config_path, load_config
    from edgevoice.errors import ConfigError

    wanted = find_config_path(config_path)
    if wanted is not None and not wanted.exists():
        return [fail("config", f"config file {wanted} does not exist",
                     f"create it (`edgevoice config example -o {wanted}` writes every key, "
                     "documented), or drop --config / "
                     f"${CONFIG_ENV}; the checks below use the built-in defaults")], Config()
    try:
        cfg, source = load_config(config_path)
    except ConfigError as exc:
        return [fail("config", _oneline(str(exc)),
                     "edit the file there (`edgevoice config check PATH` re-checks it; "
                     "`edgevoice config example` documents every key); the checks below use the "
                     "built-in defaults")], Config()
    if source is None:
        return [ok("config", "no config file: built-in defaults")], cfg
    return [ok("config", f"{source} is valid")], cfg


# ---------------------------------------------------------------------------------------------
# Child-process probes: audio devices (PortAudio) and speech output (pyttsx3 / eSpeak NG)
# ---------------------------------------------------------------------------------------------


def _audio_probe(arg: str) -> None:
    """Child side: enumerate devices, resolve the configured ones, print one JSON object."""
    want = json.loads(arg)
    out: dict[str, Any] = {}
    from edgevoice.audio import devices
    from edgevoice.errors import AudioDeviceError

    try:
        sd = devices._sd()
    except AudioDeviceError as exc:
        print(json.dumps({"portaudio_error": str(exc)}))
        return
    out["portaudio"] = sd.get_portaudio_version()[1]
    out["hostapis"] = [h["name"] for h in sd.query_hostapis()]
    from edgevoice.audio import soundserver

    listed = devices.list_devices()
    out["devices"] = [asdict(d) for d in listed]
    server = devices.server_devices(listed)
    out["server"] = None if server is None else {
        "name": server.describe(), "sources": len(server.sources), "sinks": len(server.sinks),
        "default_input": server.default("input"), "default_output": server.default("output")}
    for kind in ("input", "output"):
        try:
            route = devices.resolve_route(want[kind], kind)
            with soundserver.routed(kind, route.server_name):
                rate, channels, name = devices._pick_settings(sd, kind, route.index,
                                                              want[f"{kind}_rate"])
            out[kind] = {"index": route.index, "name": name, "rate": rate, "channels": channels,
                         "route": "server" if route.server else "portaudio",
                         "server_device": route.server and asdict(route.server)}
        except AudioDeviceError as exc:
            out[kind] = {"error": str(exc)}
    print(json.dumps(out))


def _speech_probe(arg: str) -> None:
    """Child side: start pyttsx3 (eSpeak NG on Linux), list voices, pick the configured one."""
    want = json.loads(arg)
    import ctypes.util

    import pyttsx3

    from edgevoice.errors import UserError
    from edgevoice.tts.pyttsx3_backend import _pick_voice

    out: dict[str, Any] = {"library": ctypes.util.find_library("espeak-ng")}
    try:
        engine = pyttsx3.init()
    except Exception as exc:  # noqa: BLE001 - OSError, RuntimeError, KeyError by platform
        print(json.dumps({**out, "error": f"{type(exc).__name__}: {exc}"}))
        return
    voices = engine.getProperty("voices")
    out["voices"] = len(voices)
    out["voice"] = engine.getProperty("voice")
    if want.get("voice"):
        try:
            out["voice"] = _pick_voice(voices, want["voice"])
        except UserError as exc:
            out["voice_error"] = str(exc)
    print(json.dumps(out))


class _Probe:
    """A child ``python -c`` running one of the probe functions above, collected later."""

    def __init__(self, function: str, arg: dict[str, Any]) -> None:
        code = f"import sys; from edgevoice.doctor import {function}; {function}(sys.argv[1])"
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH"))
                                            if p)
        self.started = time.monotonic()
        self.proc: Optional[subprocess.Popen[str]] = None
        self.error = ""
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", code, json.dumps(arg)], env=env, text=True,
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )
        except OSError as exc:
            self.error = f"could not start ({exc})"

    def result(self, timeout: float) -> tuple[Optional[dict[str, Any]], str]:
        """(parsed JSON or None, a one-line reason when there is none; else the stderr tail)."""
        if self.proc is None:
            return None, self.error
        left = max(0.1, timeout - (time.monotonic() - self.started))
        try:
            stdout, stderr = self.proc.communicate(timeout=left)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()
            return None, f"did not finish within {timeout:g} s"
        lines = [ln for ln in stdout.splitlines() if ln.startswith("{")]
        tail = _oneline(" | ".join(stderr.strip().splitlines()[-3:]), 200)
        if self.proc.returncode != 0 or not lines:
            return None, f"exited with status {self.proc.returncode}" + (f": {tail}" if tail
                                                                          else "")
        return json.loads(lines[-1]), tail


def _no_device_fix(kind: str) -> str:
    """The most likely fix when PortAudio sees no device of a kind, from what this host has."""
    pulse = os.environ.get("PULSE_SERVER")
    if pulse:
        return (f"PULSE_SERVER={pulse} is set: start that sound server or unset the variable "
                "(`pactl info` tells whether it answers)")
    snd = Path("/dev/snd")
    nodes = sorted(snd.glob("pcmC*")) if snd.is_dir() else []
    if nodes and not any(os.access(n, os.R_OK | os.W_OK) for n in nodes):
        return ("the sound devices in /dev/snd are not accessible to this user: add it to the "
                "`audio` group (`sudo usermod -aG audio $USER`, then log in again)")
    device = "microphone" if kind == "input" else "speaker or headphones"
    if sys.platform.startswith("linux") and not nodes:
        return (f"no sound card is visible (/dev/snd has no PCM devices): connect a {device} "
                "(e.g. a USB one) and check `arecord -l` / `aplay -l`, or start PulseAudio or "
                "PipeWire")
    return (f"connect a {device}, and check that PulseAudio or PipeWire runs (`pactl info`) or "
            "that ALSA lists it (`arecord -L` / `aplay -L`)")


def _audio_checks(probe: _Probe, cfg: Config) -> list[Check]:
    data, reason = probe.result(PROBE_TIMEOUT_S)
    if data is None:
        return [fail("portaudio", f"the audio probe {reason}",
                     "a sound server that hangs can cause this: restart PulseAudio/PipeWire "
                     "(`systemctl --user restart pipewire pulseaudio`) and try again")]
    if "portaudio_error" in data:
        return [fail("portaudio", _oneline(data["portaudio_error"]),
                     "install the PortAudio library: `sudo apt-get install libportaudio2` "
                     "(or your system's PortAudio package)")]
    checks = [ok("portaudio", f"{data['portaudio']}; host APIs: {', '.join(data['hostapis'])}")]
    for kind in ("input", "output"):
        name = f"audio-{kind}"
        spec = getattr(cfg.audio, f"{kind}_device")
        found = [d for d in data["devices"] if d[f"max_{kind}_channels"] > 0]
        got = data[kind]
        if "error" in got:
            if not found:
                detail = f"no audio {kind} device found"
                if reason:
                    detail += f" (the audio library said: {reason})"
                checks.append(fail(name, _oneline(detail), _no_device_fix(kind)))
            else:
                setting = f"audio.{kind}_device"
                checks.append(fail(name, _oneline(got["error"]),
                                   f"set `{setting}` to one of the devices `edgevoice devices` "
                                   f"lists, or to null for the system default"))
            continue
        which = "default" if spec is None else f"{kind}_device {spec!r}"
        checks.append(ok(name, f"{which}: {_audio_route(kind, got, data.get('server'))} "
                               f"({_audio_counts(kind, found, data.get('server'))})"))
    return checks


def _audio_route(kind: str, got: dict[str, Any], server: Optional[dict[str, Any]]) -> str:
    """Which device a stream of ``kind`` opens, and by which route, in words."""
    role = "source" if kind == "input" else "sink"
    device = f"PortAudio device #{got['index']} {got['name']!r}"
    at = f"at {got['rate']} Hz, {got['channels']} ch"
    picked = got.get("server_device")
    if picked:
        about = picked["description"]
        about = f" ({about})" if about and about != picked["name"] else ""
        return f"the sound server's {role} {picked['name']!r}{about} through {device} {at}"
    if server and got["name"] == "pulse":
        return (f"{device} {at}, which {server['name']} sends to its {role} "
                f"{server[f'default_{kind}']!r}")
    if server and got["name"] == "default":
        return (f"{device} {at} (ALSA's default; {server['name']}'s default {role} is "
                f"{server[f'default_{kind}']!r})")
    return f"{device} {at}"


def _audio_counts(kind: str, found: list[Any], server: Optional[dict[str, Any]]) -> str:
    role = "source" if kind == "input" else "sink"
    counts = f"{len(found)} PortAudio {kind} devices"
    if server:
        counts += f", {server[f'{role}s']} sound-server {role}s"
    return counts


def _speech_checks(probe: _Probe) -> list[Check]:
    data, reason = probe.result(PROBE_TIMEOUT_S)
    install = ("install eSpeak NG: `sudo apt-get install espeak-ng` (pyttsx3 drives "
               "libespeak-ng on Linux)")
    if data is None:
        return [fail("espeak-ng", f"the speech probe {reason}", install)]
    if "error" in data:
        lib = data.get("library")
        where = f"library {lib} found, but " if lib else "libespeak-ng not found; "
        return [fail("espeak-ng", _oneline(f"{where}pyttsx3 failed: {data['error']}"), install)]
    if "voice_error" in data:
        return [fail("espeak-ng", _oneline(data["voice_error"]),
                     "set `tts.voice` to an installed voice, or to null for the default")]
    if not data["voices"]:
        return [fail("espeak-ng", "the speech engine started but offers no voices",
                     "reinstall the voice data: `sudo apt-get install --reinstall espeak-ng-data`")]
    lib = data.get("library") or "the platform's engine"
    return [ok("espeak-ng", f"pyttsx3 with {lib}: {data['voices']} voices, using {data['voice']}")]


# ---------------------------------------------------------------------------------------------
# Engines and models
# ---------------------------------------------------------------------------------------------


def _import(module: str):
    try:
        return importlib.import_module(module), None
    except Exception as exc:  # noqa: BLE001 - ImportError, OSError for a missing native lib
        return None, f"{type(exc).__name__}: {exc}"


def _version(distribution: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "?"


def check_webrtcvad(cfg: Config) -> list[Check]:
    vad, error = _import("webrtcvad")
    if vad is None:
        return [fail("webrtcvad", _oneline(f"cannot import webrtcvad ({error})"),
                     "`pip install webrtcvad-wheels` into edgevoice's environment")]
    frame = bytes(2 * 16000 * cfg.vad.frame_ms // 1000)
    vad.Vad(cfg.vad.mode).is_speech(frame, 16000)
    return [ok("webrtcvad", f"importable (webrtcvad-wheels {_version('webrtcvad-wheels')}); "
                            f"mode {cfg.vad.mode}, {cfg.vad.frame_ms} ms frames")]


def check_pocketsphinx() -> list[Check]:
    ps, error = _import("pocketsphinx")
    if ps is None:
        return [fail("pocketsphinx", _oneline(f"cannot import pocketsphinx ({error})"),
                     "`pip install pocketsphinx` into edgevoice's environment")]
    model = Path(ps.get_model_path()) / "en-us"
    if not model.is_dir():
        return [fail("pocketsphinx", f"its bundled en-US model is missing ({model})",
                     "reinstall it: `pip install --force-reinstall pocketsphinx`")]
    return [ok("pocketsphinx", f"importable (pocketsphinx {_version('pocketsphinx')}), bundled "
                               f"model at {model}")]


def check_vosk(cfg: Config, paths: Paths) -> list[Check]:
    """vosk importable, and its model folder: needed when configured, optional under ``auto``."""
    from edgevoice.asr.select import _vosk_folder
    from edgevoice.asr.vosk_backend import DEFAULT_VOSK_MODEL, looks_like_vosk_model

    folder, explicit = _vosk_folder(cfg.asr, paths)
    needed = cfg.asr.backend == "vosk" or (cfg.asr.backend == "auto" and explicit)
    vosk, error = _import("vosk")
    checks = []
    if vosk is None:
        fix = "`pip install vosk` into edgevoice's environment"
        detail = _oneline(f"cannot import vosk ({error})")
        checks.append(fail("vosk", detail, fix) if needed else warn("vosk", detail, fix))
    else:
        checks.append(ok("vosk", f"importable (vosk {_version('vosk')})"))
    get = (f"put a vosk model folder such as {DEFAULT_VOSK_MODEL} (alphacephei.com/vosk/models) "
           f"into {paths.models}, or set `asr.vosk_model`")
    if folder.is_dir() and looks_like_vosk_model(folder):
        checks.append(ok("vosk-model", f"{folder}" + ("" if cfg.asr.backend != "pocketsphinx"
                                                      else " (unused: asr.backend is "
                                                           "pocketsphinx)")))
    elif folder.is_dir():
        detail = f"{folder} is not a vosk model (no am/final.mdl inside)"
        checks.append(fail("vosk-model", detail, get) if needed or cfg.asr.backend == "auto"
                      else warn("vosk-model", detail, get))
    elif needed:
        checks.append(fail("vosk-model", f"vosk model folder {folder} does not exist",
                           get + ", or `asr.backend: pocketsphinx`"))
    elif cfg.asr.backend == "auto":
        checks.append(ok("vosk-model", f"none in {paths.models}: speech recognition uses "
                                       "pocketsphinx's bundled model (vosk is more accurate)"))
    return checks


GGUF_MAGIC = b"GGUF"
_GGUF_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q",
                 11: "q", 12: "d"}
_GGUF_STRING = 8


def read_gguf_header(path: Path) -> dict[str, Any]:
    """Magic, version, counts and the leading string metadata (architecture, name) of a GGUF.

    Raises ValueError saying what is wrong. Reads a few KB, never the tensors.
    """
    with open(path, "rb") as f:
        head = f.read(24)
        if len(head) < 24 or head[:4] != GGUF_MAGIC:
            raise ValueError(f"not a GGUF file (it starts with {head[:4]!r}, not b'GGUF')")
        version, n_tensors, n_kv = struct.unpack("<IQQ", head[4:24])
        if version not in (2, 3):
            raise ValueError(f"GGUF version {version} is not supported by llama.cpp (2 or 3)")
        info: dict[str, Any] = {"version": version, "tensors": n_tensors, "metadata": n_kv}

        def string() -> str:
            (length,) = struct.unpack("<Q", f.read(8))
            if length > 1 << 16:
                raise ValueError("implausible string length: the header is corrupt")
            return f.read(length).decode("utf-8", "replace")

        for _ in range(min(n_kv, 16)):  # general.* keys come first in files llama.cpp writes
            key = string()
            (kind,) = struct.unpack("<I", f.read(4))
            if kind == _GGUF_STRING:
                info[key] = string()
            elif kind in _GGUF_SCALARS:
                fmt = "<" + _GGUF_SCALARS[kind]
                info[key] = struct.unpack(fmt, f.read(struct.calcsize(fmt)))[0]
            else:
                break  # an array: the rest is not needed here
        return info


def check_llm_model(cfg: Config, paths: Paths) -> list[Check]:
    from edgevoice.agent.assemble import GET_MODEL_HINT, resolve_llm_model

    hint = GET_MODEL_HINT.format(models=paths.models)
    path = resolve_llm_model(cfg.llm, paths, None)
    if path is None:
        return [warn("llm-model", "no language model: only the built-in intents are answered",
                     hint)]
    if not path.is_file():
        what = "is not a file" if path.exists() else "does not exist"
        return [fail("llm-model", f"language model {path} {what}", hint)]
    try:
        info = read_gguf_header(path)
    except (OSError, ValueError, struct.error, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        if isinstance(exc, struct.error):
            reason = "the GGUF header is cut short (an incomplete download?)"
        return [fail("llm-model", _oneline(f"{path}: {reason}"),
                     f"download the model again; {hint}")]
    size = path.stat().st_size / 1e9
    arch = info.get("general.architecture", "?")
    name = info.get("general.name")
    named = f" {name!r}," if name else ""
    return [ok("llm-model", f"{path} ({size:.2f} GB, GGUF v{info['version']},{named} "
                            f"architecture {arch}, {info['tensors']} tensors)")]


def check_model_fit(cfg: Config, paths: Paths) -> list[Check]:
    """Which catalog language model suits this machine (RAM, cores, a short calibration of the
    installed model, cached), or whether a remote target is the better plan (``llm.fit``)."""
    from edgevoice.agent.assemble import resolve_llm_model
    from edgevoice.llm.fit import recommend
    from edgevoice.modelstore.catalog import load_catalog

    path = resolve_llm_model(cfg.llm, paths, None)
    status, detail, fix = recommend(
        path if path is not None and path.is_file() else None, cfg.llm,
        paths.cache / "calibration.json", load_catalog(None).entries,
        remote_configured=bool(cfg.remotes))
    return [ok("model-fit", detail) if status == "ok" else warn("model-fit", detail, fix)]


def check_turn_model(cfg: Config, paths: Paths) -> list[Check]:
    """The learned end-of-turn detector (`turn.detector`): onnxruntime and the Smart Turn model;
    a problem fails under `on` and warns under `auto` (turns then end after silence alone)."""
    from edgevoice.ear.turn_detector import DEFAULT_MODEL, resolve_turn_model

    name = "turn-model"
    if cfg.turn.detector == "off":
        return [ok(name, "off (`turn.detector`): turns end after `vad.hangover_ms` of silence")]
    bad = fail if cfg.turn.detector == "on" else warn
    fallback = "" if cfg.turn.detector == "on" else "; turns end after silence alone"
    pull = f"`edgevoice models pull {DEFAULT_MODEL}` (8.7 MB), or `turn.detector: off`"
    ort, error = _import("onnxruntime")
    if ort is None:
        return [bad(name, _oneline(f"cannot import onnxruntime ({error}){fallback}"),
                    "`pip install onnxruntime` into edgevoice's environment (no wheels for "
                    "32-bit ARM: there, `turn.detector: off`)")]
    path = resolve_turn_model(cfg.turn.model, paths.models)
    if not path.is_file():
        return [bad(name, f"no end-of-turn model at {path}{fallback}", pull)]
    from edgevoice.modelstore.resolve import catalog_entry_for

    entry = catalog_entry_for(str(path), paths)
    size = path.stat().st_size
    if entry is not None and entry.sha256 is not None:
        import hashlib

        digest = hashlib.sha256(path.read_bytes()).hexdigest()  # 8.7 MB: ~20 ms
        if digest != entry.sha256:
            return [bad(name, f"{path} is not the catalog's {entry.name} (sha256 {digest[:12]}… "
                              f"!= {entry.sha256[:12]}…){fallback}",
                        f"download it again: `edgevoice models pull {entry.name} --force`")]
    return [ok(name, f"{path} ({size / 1e6:.1f} MB{', sha256 ok' if entry else ''}; onnxruntime "
                     f"{_version('onnxruntime')}), threshold {cfg.turn.threshold:g}, asked "
                     f"after {cfg.vad.pause_ms} ms of silence, ends a turn after "
                     f"{max(cfg.vad.pause_ms, cfg.turn.min_silence_ms)} ms at the earliest, "
                     f"fallback {cfg.turn.fallback_ms} ms")]


def check_echo_cancel(cfg: Config) -> list[Check]:
    """Echo cancellation (`audio.echo_cancel`): whether AEC3 can run; where it cannot, the agent
    is half duplex (no barge-in while it speaks): a warning under `auto`, a failure under `on`."""
    from edgevoice.ear.echo import HALF_DUPLEX, INSTALL_HINT, available

    name = "echo-cancel"
    mode = cfg.audio.echo_cancel
    if mode == "off":
        return [ok(name, "off (`audio.echo_cancel`): fine with a headset; with open speakers "
                         "the agent may hear itself")]
    problem = available()
    if problem is not None:
        bad = fail if mode == "on" else warn
        return [bad(name, f"{problem}; {HALF_DUPLEX}",
                    f"`{INSTALL_HINT}` into edgevoice's environment (no wheels for 32-bit ARM)")]
    return [ok(name, f"{mode}: WebRTC AEC3 (pywebrtc-audio {_version('pywebrtc-audio')}) when "
                     "playing to and recording from devices; falls back to half duplex (logged) "
                     "if the audio backend gives no stream timing")]


# ---------------------------------------------------------------------------------------------
# CPU and llama.cpp
# ---------------------------------------------------------------------------------------------

# llama.cpp's system-info names -> /proc/cpuinfo flags, for the features that matter for speed.
X86_FEATURES = {"SSE3": "pni", "SSSE3": "ssse3", "AVX": "avx", "AVX2": "avx2", "F16C": "f16c",
                "FMA": "fma", "BMI2": "bmi2", "AVX512": "avx512f", "AVX512_VBMI": "avx512vbmi",
                "AVX512_VNNI": "avx512_vnni", "AVX512_BF16": "avx512_bf16",
                "AVX_VNNI": "avx_vnni", "AMX_INT8": "amx_int8"}
ARM_FEATURES = {"NEON": "asimd", "DOTPROD": "asimddp", "MATMUL_INT8": "i8mm", "SVE": "sve",
                "FP16_VA": "asimdhp", "SME": "sme"}


def parse_cpuinfo(text: str) -> tuple[str, set[str]]:
    """(CPU or board model, feature flags) from /proc/cpuinfo text (x86 ``flags``, Arm
    ``Features``)."""
    model, flags = "", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("flags", "features") and not flags:
            flags = set(value.split())
        elif key in ("model name", "model", "hardware", "cpu model") and not model:
            if not value.strip().isdigit():  # x86 has a numeric "model" too
                model = value.strip()
    return model, flags


def parse_system_info(text: str) -> dict[str, bool]:
    """llama.cpp's ``llama_print_system_info()``: ``CPU : AVX2 = 1 | NEON = 0 | ...``."""
    out = {}
    for part in text.replace("\n", "|").split("|"):
        if "=" in part:
            key, _, value = part.rpartition("=")
            key = key.split(":")[-1].strip()
            out[key] = value.strip() == "1"
    return out


def _cpu_flags() -> tuple[str, set[str]]:
    try:
        return parse_cpuinfo(Path("/proc/cpuinfo").read_text(errors="replace"))
    except OSError:
        return platform.processor(), set()


def _features_table() -> dict[str, str]:
    return ARM_FEATURES if platform.machine().lower() in ("aarch64", "arm64") else X86_FEATURES


def check_cpu(cfg: Config) -> list[Check]:
    from edgevoice.llm.fit import usable_cores
    from edgevoice.llm.llama_target import default_threads

    model, flags = _cpu_flags()
    machine = platform.machine()
    cores = usable_cores()
    threads = cfg.llm.threads or default_threads()
    plural = "" if threads == 1 else "s"
    table = _features_table()
    have = [name for name, flag in table.items() if flag in flags]
    detail = (f"{model or machine} ({machine}), {cores} usable cores, llama.cpp will use "
              f"{threads} thread{plural}; features: {', '.join(have) or 'unknown'}")
    if not flags:
        return [ok("cpu", detail + " (no /proc/cpuinfo: features not checked)")]
    if table is X86_FEATURES and "avx2" not in flags:
        return [warn("cpu", detail, "this CPU lacks AVX2: a local model answers several times "
                                    "slower; prefer a smaller model or a remote target")]
    if table is ARM_FEATURES and "asimd" not in flags:
        return [warn("cpu", detail, "this CPU lacks NEON (asimd): a local model will be very "
                                    "slow; use a remote target")]
    if cfg.llm.threads > cores:
        return [warn("cpu", detail, f"`llm.threads` = {cfg.llm.threads} exceeds the {cores} "
                                    "usable cores: set it to 0 (automatic)")]
    return [ok("cpu", detail)]


def _gpu_present() -> Optional[str]:
    if Path("/proc/driver/nvidia/version").exists() or Path("/dev/nvidia0").exists():
        return "an NVIDIA GPU"
    return None


REBUILD_LLAMA = ("rebuild llama-cpp-python on this machine: `CMAKE_ARGS=\"-DGGML_NATIVE=ON\" pip "
                 "install --force-reinstall --no-cache-dir --no-binary llama-cpp-python "
                 "llama-cpp-python`")


def check_llama_cpp(cfg: Config) -> list[Check]:
    llama_cpp, error = _import("llama_cpp")
    if llama_cpp is None:
        return [fail("llama-cpp", _oneline(f"cannot import llama_cpp ({error})"),
                     "`pip install llama-cpp-python` (it compiles llama.cpp: needs "
                     "build-essential and python3-dev; minutes)")]
    offload = bool(llama_cpp.llama_supports_gpu_offload())
    raw = llama_cpp.llama_print_system_info()
    built = parse_system_info(raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw)
    _, flags = _cpu_flags()
    table = _features_table()
    used = [n for n, flag in table.items() if built.get(n)]
    detail = (f"llama-cpp-python {llama_cpp.__version__}, "
              f"{'GPU offload supported' if offload else 'CPU only (no GPU offload)'}; "
              f"built for {', '.join(used) or 'no SIMD extensions'}")
    if flags:
        missing = [n for n, flag in table.items() if built.get(n) and flag not in flags]
        if missing:
            return [fail("llama-cpp", detail + f"; this CPU lacks {', '.join(missing)}: loading "
                                               "a model will crash with 'Illegal instruction'",
                         REBUILD_LLAMA)]
        unused = [n for n in ("AVX2", "AVX512", "DOTPROD", "MATMUL_INT8")
                  if n in table and table[n] in flags and n in built and not built[n]]
        if unused:
            return [warn("llama-cpp", detail + f"; not built for this CPU's {', '.join(unused)}",
                         REBUILD_LLAMA)]
    layers = cfg.llm.gpu_layers
    gpu = _gpu_present()
    if not offload and isinstance(layers, int) and layers > 0:
        return [warn("llama-cpp", detail + f"; `llm.gpu_layers` = {layers} is ignored",
                     "install a GPU build (e.g. `CMAKE_ARGS=\"-DGGML_CUDA=on\" pip install "
                     "--force-reinstall --no-cache-dir llama-cpp-python`) or set "
                     "`llm.gpu_layers: 0`")]
    if not offload and gpu and layers != 0:
        return [warn("llama-cpp", detail + f"; {gpu} is present but unused",
                     "for GPU offload reinstall with CUDA: `CMAKE_ARGS=\"-DGGML_CUDA=on\" pip "
                     "install --force-reinstall --no-cache-dir llama-cpp-python`")]
    return [ok("llama-cpp", detail)]


# ---------------------------------------------------------------------------------------------
# Remote targets and the control socket
# ---------------------------------------------------------------------------------------------


def check_remote(name: str, base_url: str, *, api_key: Optional[str] = None,
                 model: Optional[str] = None, timeout: float = REMOTE_TIMEOUT_S) -> Check:
    """``GET {base_url}/models`` of an OpenAI-compatible target (e.g. ``https://host/v1``).

    With ``model``, also checks the server offers that id (model ids get retired).
    """
    import urllib.error
    import urllib.request

    label = f"remote:{name}"
    url = base_url.rstrip("/") + "/models"
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    if api_key:
        request.add_unredirected_header("Authorization", f"Bearer {api_key}")
    # Direct, like the agent's own HTTP client (http.client): a proxy from the environment would
    # test a path the agent never takes.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    started = time.monotonic()
    try:
        with opener.open(request, timeout=timeout) as response:
            body = response.read(1 << 20)
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            if not api_key:
                return warn(label, f"{url} is reachable but wants an API key (HTTP {exc.code})",
                            f"configure the API key for the remote target {name!r}")
            return fail(label, f"{url} refused the API key (HTTP {exc.code})",
                        f"check the API key configured for {name!r}")
        return fail(label, f"{url} answered HTTP {exc.code}",
                    "check the base URL: it is the OpenAI-compatible root, usually ending in /v1")
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, (TimeoutError, socket.timeout)):
            reason = f"no answer within {timeout:g} s"
        return fail(label, _oneline(f"{url} is unreachable: {reason}"),
                    f"check that the server runs and the URL is right (`curl {url}`); without "
                    "it, turns stay on the local model")
    ms = 1000 * (time.monotonic() - started)
    try:
        ids = [str(m.get("id")) for m in json.loads(body).get("data", [])]
    except (ValueError, AttributeError, TypeError):
        return fail(label, f"{url} answered, but not with an OpenAI-compatible model list",
                    "check the base URL: it is the OpenAI-compatible root, usually ending in /v1")
    if model and model not in ids:
        return fail(label, _oneline(f"{url} does not offer model {model!r} (it offers: "
                                    f"{', '.join(ids) or 'none'})"),
                    f"set the remote target {name!r} to one of the offered models")
    return ok(label, f"{url} answered in {ms:.0f} ms; {len(ids)} models")


def check_remotes(remotes: Iterable[tuple[str, str]],
                  timeout: float = REMOTE_TIMEOUT_S) -> list[Check]:
    """Check several (name, base_url) targets in parallel, so the total stays one timeout."""
    remotes = list(remotes)
    if not remotes:
        return []
    with ThreadPoolExecutor(max_workers=min(8, len(remotes))) as pool:
        return list(pool.map(lambda r: check_remote(r[0], r[1], timeout=timeout), remotes))


def control_socket_path(cfg: Config) -> Optional[Path]:
    """The hook to the control API: its socket path from ``control.socket`` through
    ``edgevoice.control.protocol.socket_path``, or None (no check) while this build has no control
    API or ``control.enabled`` is false."""
    control = getattr(cfg, "control", None)  # the config section arrives with the control API
    if control is None or not control.enabled:
        return None
    if importlib.util.find_spec("edgevoice.control.protocol") is None:
        return None
    from edgevoice.control.protocol import socket_path

    return Path(socket_path(control.socket))


def check_control_socket(path: Path) -> Check:
    """Is a daemon listening at ``path``, and is the socket private (mode 0600)?"""
    name = "control-socket"
    start = "start the daemon: `edgevoice run` (or `systemctl --user start edgevoice`)"
    try:
        st = path.stat()
    except FileNotFoundError:
        return warn(name, f"no daemon is running (no socket at {path})", start)
    if not stat.S_ISSOCK(st.st_mode):
        return fail(name, f"{path} exists but is not a socket",
                    "remove it; the daemon creates the socket when it starts")
    if st.st_mode & 0o077:
        return fail(name, f"{path} is open to other users (mode {stat.S_IMODE(st.st_mode):04o})",
                    "the daemon creates it with mode 0600: restart it, and check who changed "
                    "the mode")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(SOCKET_TIMEOUT_S)
        try:
            sock.connect(str(path))
        except OSError as exc:
            reason = exc.strerror or exc
            return warn(name, f"{path} is stale: nothing accepts connections ({reason})", start)
    return ok(name, f"a daemon is listening at {path}")


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------


def run_checks(config_path: Optional[str] = None, *, remotes: Sequence[tuple[str, str]] = (),
               socket_path: Callable[[Config], Optional[Path]] = control_socket_path,
               ) -> list[Check]:
    """Every check, in a stable order. Slow parts (child probes, HTTP) run concurrently."""
    from edgevoice.config import Config, Paths

    checks = _guard("python", check_python)
    cfg = Config()

    def config() -> list[Check]:
        nonlocal cfg
        found, cfg = check_config(config_path)
        return found

    checks += _guard("config", config)
    paths = Paths.from_config(cfg)

    audio = _Probe("_audio_probe", {
        "input": cfg.audio.input_device, "output": cfg.audio.output_device,
        "input_rate": cfg.audio.sample_rate, "output_rate": 22050})
    speech = _Probe("_speech_probe", {"voice": cfg.tts.voice})
    with ThreadPoolExecutor(max_workers=1) as pool:
        remote_future = pool.submit(check_remotes, remotes)
        local = (_guard("webrtcvad", lambda: check_webrtcvad(cfg))
                 + _guard("pocketsphinx", check_pocketsphinx)
                 + _guard("vosk", lambda: check_vosk(cfg, paths))
                 + _guard("llm-model", lambda: check_llm_model(cfg, paths))
                 + _guard("model-fit", lambda: check_model_fit(cfg, paths))
                 + _guard("turn-model", lambda: check_turn_model(cfg, paths))
                 + _guard("echo-cancel", lambda: check_echo_cancel(cfg))
                 + _guard("cpu", lambda: check_cpu(cfg))
                 + _guard("llama-cpp", lambda: check_llama_cpp(cfg)))
        checks += _guard("audio", lambda: _audio_checks(audio, cfg))
        checks += _guard("espeak-ng", lambda: _speech_checks(speech))
        checks += local
        checks += _guard("remote", remote_future.result)

    def control() -> list[Check]:
        path = socket_path(cfg)
        return [] if path is None else [check_control_socket(path)]

    checks += _guard("control-socket", control)
    return checks


def report(checks: Sequence[Check]) -> dict[str, Any]:
    """The ``--json`` document: ``{"ok": bool, "checks": [{name, status, detail, fix}, ...]}``."""
    return {"ok": all(c.status != "fail" for c in checks), "checks": [asdict(c) for c in checks]}


def _print_human(checks: Sequence[Check]) -> None:
    width = max(len(c.name) for c in checks)
    for c in checks:
        print(f"{c.status:<4}  {c.name:<{width}}  {c.detail}")
        if c.fix:
            print(f"{'':<4}  {'':<{width}}  fix: {c.fix}")
    failed = sum(c.status == "fail" for c in checks)
    warned = sum(c.status == "warn" for c in checks)
    print(f"\n{failed} failed, {warned} warnings, {len(checks) - failed - warned} ok")


def _configured_remotes(config_path: Optional[str]) -> list[tuple[str, str]]:
    """(name, base_url) of the config's remote targets; none when the config can't be read
    (the config check reports that)."""
    from edgevoice.config import load_config
    from edgevoice.errors import UserError

    try:
        cfg, _ = load_config(config_path)
    except UserError:
        return []
    return [(name, rc.base_url) for name, rc in cfg.remotes.items() if rc.base_url]


def cmd_doctor(args: argparse.Namespace) -> int:
    checks = run_checks(args.config, remotes=_configured_remotes(args.config))
    if args.json:
        print(json.dumps(report(checks), ensure_ascii=False), flush=True)
    else:
        _print_human(checks)
    return 0 if report(checks)["ok"] else 1


def add_doctor_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Register ``edgevoice doctor`` (called once from ``cli.build_parser``)."""
    p = sub.add_parser("doctor", parents=[common],
                       help="check audio, speech, models, CPU and services; explain fixes")
    p.add_argument("--json", action="store_true",
                   help='print {"ok": bool, "checks": [{name, status, detail, fix}, ...]}')
    p.set_defaults(func=cmd_doctor)
