"""`edgevoice doctor`: the JSON schema, failures that name their fix, real devices, real sockets,
a real loopback HTTP server for remote targets."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from edgevoice import doctor
from edgevoice.config import Config, LlmConfig, Paths

STATUSES = {"ok", "warn", "fail"}


def run_doctor(tmp_path: Path, *args: str, env: dict | None = None):
    """The CLI in a subprocess, isolated from the user's config, models and sound server."""
    base = {k: v for k, v in os.environ.items()
            if k not in ("EDGEVOICE_CONFIG", "EDGEVOICE_MODELS_DIR")}
    base.update(XDG_CONFIG_HOME=str(tmp_path / "config"), XDG_DATA_HOME=str(tmp_path / "data"),
                XDG_CACHE_HOME=str(tmp_path / "cache"),
                PULSE_SERVER=f"unix:{tmp_path}/no-pulse-here/native")
    base.update(env or {})
    out = subprocess.run([sys.executable, "-m", "edgevoice", "doctor", *args],
                         capture_output=True, text=True, timeout=60, env=base)
    assert "Traceback" not in out.stderr, out.stderr
    return out


def by_name(document: dict) -> dict[str, dict]:
    return {c["name"]: c for c in document["checks"]}


def assert_schema(document: dict) -> None:
    assert set(document) == {"ok", "checks"}
    assert isinstance(document["ok"], bool) and document["checks"]
    names = [c["name"] for c in document["checks"]]
    assert len(names) == len(set(names)), names
    for c in document["checks"]:
        assert set(c) == {"name", "status", "detail", "fix"}, c
        assert c["status"] in STATUSES and isinstance(c["detail"], str) and c["detail"]
        assert "\n" not in c["detail"]
        if c["status"] == "ok":
            assert c["fix"] is None, c
        else:
            assert isinstance(c["fix"], str) and c["fix"], c
    assert document["ok"] == all(c["status"] != "fail" for c in document["checks"])


def test_json_schema_exit_code_and_the_checks_it_names(tmp_path):
    out = run_doctor(tmp_path, "--json")
    document = json.loads(out.stdout)
    assert_schema(document)
    assert out.returncode == (0 if document["ok"] else 1)
    names = set(by_name(document))
    assert {"python", "config", "portaudio", "audio-input", "audio-output", "espeak-ng",
            "webrtcvad", "pocketsphinx", "vosk", "vosk-model", "llm-model", "cpu",
            "llama-cpp"} <= names
    assert not any(n.startswith("remote:") for n in names)  # no network unless asked
    has_control = doctor.control_socket_path(Config()) is not None
    assert ("control-socket" in names) == has_control


def test_bad_config_fails_with_the_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("audio:\n  sample_rate: 16000\nvad:\n  mode: 7\n")
    out = run_doctor(tmp_path, "--json", "--config", str(bad))
    document = json.loads(out.stdout)
    assert_schema(document)
    config = by_name(document)["config"]
    assert config["status"] == "fail"
    assert f"{bad}, line 4" in config["detail"] and "vad.mode" in config["detail"]
    assert "config check" in config["fix"]
    assert out.returncode == 1 and not document["ok"]


def test_missing_config_file_from_the_environment(tmp_path):
    out = run_doctor(tmp_path, env={"EDGEVOICE_CONFIG": str(tmp_path / "absent.yaml")})
    assert out.returncode == 1
    assert f"config file {tmp_path / 'absent.yaml'} does not exist" in out.stdout
    assert "fix: create it" in out.stdout  # the human format prints the fix under the finding


def test_no_audio_devices_fails_with_a_fix(tmp_path):
    out = run_doctor(tmp_path, "--json")  # PULSE_SERVER points at a socket nobody serves
    checks = by_name(json.loads(out.stdout))
    if checks["portaudio"]["status"] != "ok":
        pytest.skip(f"PortAudio unavailable here: {checks['portaudio']['detail']}")
    if Path("/dev/snd").is_dir() and any(Path("/dev/snd").glob("pcmC*")):
        pytest.skip("this machine has a real sound card: ALSA devices are found without pulse")
    for kind in ("input", "output"):
        check = checks[f"audio-{kind}"]
        assert check["status"] == "fail", check
        assert f"no audio {kind} device" in check["detail"]
        assert "PULSE_SERVER" in check["fix"]
    assert out.returncode == 1


def _pulse_env(pulse) -> dict[str, str]:
    return {k: pulse.env[k] for k in ("PULSE_SERVER", "PULSE_CLIENTCONFIG")}


def test_private_pulseaudio_devices_are_ok(tmp_path, pulse):
    out = run_doctor(tmp_path, "--json", env=_pulse_env(pulse))
    checks = by_name(json.loads(out.stdout))
    for kind in ("input", "output"):
        assert checks[f"audio-{kind}"]["status"] == "ok", checks[f"audio-{kind}"]
        assert "default" in checks[f"audio-{kind}"]["detail"]


def test_configured_device_that_does_not_exist(tmp_path, pulse):
    config = tmp_path / "devices.yaml"
    config.write_text("audio:\n  input_device: no-such-mic\n")
    out = run_doctor(tmp_path, "--json", "--config", str(config),
                     env=_pulse_env(pulse))
    checks = by_name(json.loads(out.stdout))
    assert checks["audio-input"]["status"] == "fail"
    assert "no-such-mic" in checks["audio-input"]["detail"]
    assert "audio.input_device" in checks["audio-input"]["fix"]
    assert checks["audio-output"]["status"] == "ok"


def test_unknown_tts_voice_fails_with_the_setting_to_change(tmp_path):
    config = tmp_path / "voice.yaml"
    config.write_text("tts:\n  voice: klingon-imperial\n")
    checks = by_name(json.loads(run_doctor(tmp_path, "--json", "--config", str(config)).stdout))
    if "libespeak-ng not found" in checks["espeak-ng"]["detail"]:
        pytest.skip("espeak-ng is not installed here")
    assert checks["espeak-ng"]["status"] == "fail"
    assert "klingon-imperial" in checks["espeak-ng"]["detail"]
    assert "tts.voice" in checks["espeak-ng"]["fix"]


def test_a_crashing_check_is_reported_not_raised(monkeypatch):
    def boom(cfg):
        raise RuntimeError("kaboom")

    monkeypatch.setattr(doctor, "check_cpu", boom)
    checks = {c.name: c for c in doctor.run_checks(socket_path=lambda cfg: None)}
    assert checks["cpu"].status == "fail" and "RuntimeError: kaboom" in checks["cpu"].detail
    assert checks["cpu"].fix
    assert_schema(doctor.report(list(checks.values())))


# ---------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------


def _paths(tmp_path: Path) -> Paths:
    return Paths(models=tmp_path / "models", cache=tmp_path / "cache", logs=tmp_path / "logs")


def _llm(model: str | None) -> Config:
    return Config(llm=LlmConfig(model=model))


def test_llm_model_valid_gguf(tmp_path, tiny_gguf):
    [check] = doctor.check_llm_model(_llm(str(tiny_gguf)), _paths(tmp_path))
    assert check.status == "ok", check
    assert "GGUF v3" in check.detail and "architecture gemma2" in check.detail


def test_llm_model_corrupt_truncated_missing_and_absent(tmp_path, tiny_gguf):
    paths = _paths(tmp_path)
    corrupt = tmp_path / "corrupt.gguf"
    corrupt.write_bytes(b"<html>404 Not Found</html>" + bytes(100))
    [check] = doctor.check_llm_model(_llm(str(corrupt)), paths)
    assert check.status == "fail" and "not a GGUF file" in check.detail
    assert "download the model again" in check.fix

    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(tiny_gguf.read_bytes()[:40])
    [check] = doctor.check_llm_model(_llm(str(truncated)), paths)
    assert check.status == "fail" and "cut short" in check.detail

    [check] = doctor.check_llm_model(_llm(str(tmp_path / "nope.gguf")), paths)
    assert check.status == "fail" and "does not exist" in check.detail

    [check] = doctor.check_llm_model(_llm(None), paths)  # none configured, none in models dir
    assert check.status == "warn" and "built-in intents" in check.detail
    assert str(paths.models) in check.fix


def test_vosk_model_configured_but_missing_fails(tmp_path):
    from edgevoice.config import AsrConfig

    cfg = Config(asr=AsrConfig(backend="vosk", vosk_model=str(tmp_path / "absent")))
    checks = {c.name: c for c in doctor.check_vosk(cfg, _paths(tmp_path))}
    assert checks["vosk-model"].status == "fail" and "does not exist" in checks["vosk-model"].detail
    checks = {c.name: c for c in doctor.check_vosk(Config(), _paths(tmp_path))}
    assert checks["vosk-model"].status == "ok" and "pocketsphinx" in checks["vosk-model"].detail


# ---------------------------------------------------------------------------------------------
# CPU and llama.cpp
# ---------------------------------------------------------------------------------------------

PI4_CPUINFO = """processor\t: 0
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm crc32 cpuid
CPU implementer\t: 0x41
CPU architecture: 8
CPU part\t: 0xd08

Hardware\t: BCM2835
Revision\t: c03114
Model\t\t: Raspberry Pi 4 Model B Rev 1.4
"""


def test_parse_cpuinfo_arm_and_x86():
    model, flags = doctor.parse_cpuinfo(PI4_CPUINFO)
    assert model == "BCM2835" and {"asimd", "fp"} <= flags and "asimddp" not in flags
    x86 = "processor\t: 0\nmodel\t\t: 1\nmodel name\t: AMD EPYC\nflags\t\t: fpu avx avx2 fma\n"
    assert doctor.parse_cpuinfo(x86) == ("AMD EPYC", {"fpu", "avx", "avx2", "fma"})


def test_parse_system_info():
    info = doctor.parse_system_info("CPU : SSE3 = 1 | AVX2 = 0 | NEON = 1 | ")
    assert info == {"SSE3": True, "AVX2": False, "NEON": True}


def test_llama_build_for_a_newer_cpu_fails(monkeypatch):
    pytest.importorskip("llama_cpp")
    [check] = doctor.check_llama_cpp(Config())
    assert check.status in STATUSES and "llama-cpp-python" in check.detail
    built = [n for n in doctor._features_table() if f"{n}," in check.detail + ","]
    if not built:
        pytest.skip("this llama.cpp build uses no SIMD extension to take away")
    monkeypatch.setattr(doctor, "_cpu_flags", lambda: ("old CPU", {"fpu"}))
    [check] = doctor.check_llama_cpp(Config())
    assert check.status == "fail" and "Illegal instruction" in check.detail
    assert "GGML_NATIVE" in check.fix


# ---------------------------------------------------------------------------------------------
# Remote targets against a real loopback HTTP server
# ---------------------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    routes: dict[str, tuple[int, bytes]] = {}
    hang = threading.Event()

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.path.startswith("/slow"):
            self.hang.wait(10)
        status, body = self.routes.get(self.path, (404, b"{}"))
        if self.path.startswith("/auth") and self.headers.get("Authorization") == "Bearer good":
            status, body = 200, self.routes["/v1/models"][1]
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    models = json.dumps({"object": "list", "data": [{"id": "llama3.1-8b"}, {"id": "qwen"}]})
    _Handler.routes = {
        "/v1/models": (200, models.encode()),
        "/auth/v1/models": (401, b'{"error": "no key"}'),
        "/html/v1/models": (200, b"<html>hello</html>"),
    }
    _Handler.hang.clear()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        _Handler.hang.set()
        httpd.shutdown()
        httpd.server_close()


def test_remote_up(server):
    [check] = doctor.check_remotes([("lan", f"{server}/v1/")])
    assert check.name == "remote:lan" and check.status == "ok", check
    assert "2 models" in check.detail
    check = doctor.check_remote("lan", f"{server}/v1", model="qwen")
    assert check.status == "ok"


def test_remote_model_not_offered(server):
    check = doctor.check_remote("cerebras", f"{server}/v1", model="llama-3.3-70b")
    assert check.status == "fail" and "llama3.1-8b" in check.detail and check.fix


def test_remote_down(server):
    with socket.socket() as s:  # a port that was free a moment ago: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    checks = doctor.check_remotes([("up", f"{server}/v1"), ("down", f"http://127.0.0.1:{port}/v1")])
    assert [c.status for c in checks] == ["ok", "fail"]
    assert "unreachable" in checks[1].detail and "curl" in checks[1].fix


def test_remote_timeout_http_errors_and_garbage(server):
    slow = doctor.check_remote("slow", f"{server}/slow/v1", timeout=0.3)
    assert slow.status == "fail" and "no answer within 0.3 s" in slow.detail
    assert doctor.check_remote("x", f"{server}/nothing/v1").status == "fail"  # HTTP 404
    garbage = doctor.check_remote("x", f"{server}/html/v1")
    assert garbage.status == "fail" and "model list" in garbage.detail
    no_key = doctor.check_remote("x", f"{server}/auth/v1")
    assert no_key.status == "warn" and "API key" in no_key.detail
    assert doctor.check_remote("x", f"{server}/auth/v1", api_key="bad").status == "fail"
    assert doctor.check_remote("x", f"{server}/auth/v1", api_key="good").status == "ok"


def test_run_checks_includes_the_remotes_it_is_given(server):
    checks = doctor.run_checks(remotes=[("lan", f"{server}/v1")], socket_path=lambda cfg: None)
    assert [c for c in checks if c.name == "remote:lan"][0].status == "ok"


# ---------------------------------------------------------------------------------------------
# Control socket (the hook for the control API)
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="evds-"))  # short: unix socket paths max ~107 bytes
    try:
        yield folder
    finally:
        for p in folder.iterdir():
            p.unlink()
        folder.rmdir()


def test_control_socket_states(sock_dir):
    path = sock_dir / "control.sock"
    assert doctor.check_control_socket(path).status == "warn"  # no daemon
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(path))
        os.chmod(path, 0o600)
        server.listen(1)
        check = doctor.check_control_socket(path)
        assert check.status == "ok" and "listening" in check.detail
        os.chmod(path, 0o666)
        check = doctor.check_control_socket(path)
        assert check.status == "fail" and "0666" in check.detail
        os.chmod(path, 0o600)
    check = doctor.check_control_socket(path)  # closed but not removed: stale
    assert check.status == "warn" and "stale" in check.detail
    path.unlink()
    path.write_text("not a socket")
    assert doctor.check_control_socket(path).status == "fail"


def test_control_socket_hook(sock_dir):
    path = sock_dir / "control.sock"
    checks = doctor.run_checks(socket_path=lambda cfg: path)
    assert checks[-1].name == "control-socket" and checks[-1].status == "warn"
    assert "no daemon" in checks[-1].detail and "edgevoice run" in checks[-1].fix


def test_control_socket_path_follows_the_control_config(sock_dir):
    if not hasattr(Config(), "control"):
        assert doctor.control_socket_path(Config()) is None  # no control API yet: no check
        return
    import dataclasses

    cfg = Config()
    mine = dataclasses.replace(cfg.control, socket=str(sock_dir / "mine.sock"))
    assert doctor.control_socket_path(dataclasses.replace(cfg, control=mine)) == (
        sock_dir / "mine.sock")
    off = dataclasses.replace(cfg.control, enabled=False)
    assert doctor.control_socket_path(dataclasses.replace(cfg, control=off)) is None
