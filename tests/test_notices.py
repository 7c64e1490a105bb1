"""stderr is for a person (issue 10, item 5): one-sentence notices without timestamps, logger
names or tracebacks unless -v is given, and ALSA's native chatter in the log, not the terminal."""

from __future__ import annotations

import ctypes
import logging
import os
import re
import subprocess
import sys
import textwrap

import pytest

from edgevoice.audio.native_log import _format
from edgevoice.devtools.fault_server import FaultServer

TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")
MAX_LINE = 200  # a notice is a sentence, not a paragraph


def edgevoice(tmp_path, *args, timeout=120):
    """The CLI as a first-time user runs it: no config file, an empty models dir."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("EDGEVOICE_CONFIG", "EDGEVOICE_MODELS_DIR")}
    env.update(XDG_CONFIG_HOME=str(tmp_path / "config"), XDG_DATA_HOME=str(tmp_path / "data"),
               XDG_CACHE_HOME=str(tmp_path / "cache"), XDG_RUNTIME_DIR=str(tmp_path / "run"))
    return subprocess.run([sys.executable, "-m", "edgevoice", *args], capture_output=True,
                          text=True, timeout=timeout, env=env)


def assert_notices(stderr: str) -> None:
    for line in stderr.splitlines():
        assert not TIMESTAMP.search(line), line
        assert "edgevoice.agent" not in line and "edgevoice.llm" not in line, line
        assert len(line) <= MAX_LINE, line
    assert "Traceback" not in stderr


def test_ask_without_a_model_prints_no_developer_log(tmp_path):
    out = edgevoice(tmp_path, "ask", "hi")
    assert out.returncode == 0, out.stderr
    assert "edgevoice models pull" in out.stdout
    assert_notices(out.stderr)


def test_a_failover_is_one_sentence_and_v_brings_the_detail_back(tmp_path, tiny_gguf):
    with FaultServer() as server:
        url = server.url  # nothing listens there once it stopped
    cfg = tmp_path / "c.yaml"
    cfg.write_text("llm:\n  max_tokens: 8\n  temperature: 0.0\n")
    args = ["ask", "hello", "--config", str(cfg), "--remote", url, "--remote-model",
            "fault-model", "--policy", "remote", "--llm-model", str(tiny_gguf)]
    out = edgevoice(tmp_path, *args)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip()  # the local model answered
    assert_notices(out.stderr)
    lines = out.stderr.splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("edgevoice: warning: ") and url in lines[0]
    assert "connection refused" in lines[0] and "continuing the turn on local" in lines[0]
    verbose = edgevoice(tmp_path, "-v", *args)
    assert verbose.returncode == 0, verbose.stderr
    detail = [line for line in verbose.stderr.splitlines() if "continuing the turn" in line]
    assert len(detail) == 1 and TIMESTAMP.search(detail[0])
    # said by the layer that saw it: the turn (brain), the race (hedge) or the route (router)
    assert re.search(r"WARNING edgevoice\.(agent\.brain|llm\.hedge|llm\.router): ", detail[0])
    assert "INFO" in verbose.stderr  # -v shows what the default hides


def test_the_no_model_notice_is_one_short_sentence(tmp_path, caplog):
    from edgevoice.agent.assemble import load_local
    from edgevoice.config import Config, Paths
    from edgevoice.llm.fit import first_model

    cfg = Config()
    paths = Paths(models=tmp_path / "models", cache=tmp_path / "cache", logs=tmp_path / "logs")
    with caplog.at_level(logging.INFO, logger="edgevoice.agent.assemble"):
        assert load_local(cfg, paths, None) == {}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    # the pull command of the catalog model that fits this machine (issue 15, item 4)
    assert f"`edgevoice models pull {first_model(cfg.llm)}`" in warnings[0]
    assert len(warnings[0]) <= MAX_LINE - 20
    assert "\n" not in warnings[0]
    # The details (where it looked, the other ways to name a model) are there with -v.
    assert any("--llm-model" in r.getMessage() for r in caplog.records
               if r.levelno == logging.INFO)


def test_default_format_has_no_timestamp_logger_name_or_traceback():
    from edgevoice.cli import _NoticeFormatter

    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("edgevoice.agent.manager", logging.ERROR, __file__, 1,
                                   "turn %d failed: %s", (3, "boom"), sys.exc_info())
    text = _NoticeFormatter().format(record)
    assert text.startswith("edgevoice: error: turn 3 failed: boom") and "-v" in text
    assert "\n" not in text and "Traceback" not in text and "manager" not in text
    warning = logging.LogRecord("x.y", logging.WARNING, __file__, 1, "careful", (), None)
    assert _NoticeFormatter().format(warning) == "edgevoice: warning: careful"


# -- ALSA -----------------------------------------------------------------------------------------

def _libasound():
    try:
        return ctypes.CDLL("libasound.so.2")
    except OSError:
        return None


needs_alsa = pytest.mark.skipif(_libasound() is None, reason="libasound.so.2 is not installed")

# Opening a PCM that does not exist makes libasound report "Unknown PCM <name>" through its
# error handler (by default: "ALSA lib pcm.c:NNNN:(snd_pcm_open_noupdate) Unknown PCM ..." on
# stderr). The script sets logging up as the CLI does, then does what every audio command does
# first (``devices._sd()``: route ALSA, import sounddevice), then triggers the message.
ALSA_SCRIPT = textwrap.dedent("""
    import ctypes, sys
    verbosity, route = int(sys.argv[1]), sys.argv[2]
    from edgevoice.cli import _setup_logging
    _setup_logging(verbosity)
    if route == "devices":
        from edgevoice.audio import devices
        devices._sd()
    elif route == "direct":
        from edgevoice.audio.native_log import route_alsa_messages
        assert route_alsa_messages() and route_alsa_messages()  # idempotent
    lib = ctypes.CDLL("libasound.so.2")
    pcm = ctypes.c_void_p()
    if route == "held":  # as `import sounddevice` does: fd 2 is /dev/null while PortAudio starts
        import os
        from edgevoice.audio.native_log import alsa_messages_held
        with alsa_messages_held():
            saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, 2)
            rc = lib.snd_pcm_open(ctypes.byref(pcm), b"nonexistent_pcm_xyz", 0, 0)
            os.dup2(saved, 2)
        print(rc, flush=True)
    else:
        print(lib.snd_pcm_open(ctypes.byref(pcm), b"nonexistent_pcm_xyz", 0, 0), flush=True)
""")


def _alsa(verbosity: int, route: str):
    out = subprocess.run([sys.executable, "-c", ALSA_SCRIPT, str(verbosity), route],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) < 0  # the open failed, as it should
    return out.stderr


@needs_alsa
@pytest.mark.parametrize("route", ["direct", "devices", "held"])
def test_alsa_messages_go_to_the_log_not_the_terminal(route):
    if route == "devices":
        try:
            import sounddevice  # noqa: F401
        except (ImportError, OSError) as exc:
            pytest.skip(f"sounddevice/PortAudio unavailable: {exc}")
    raw = _alsa(2, "none")
    if "Unknown PCM nonexistent_pcm_xyz" not in raw:
        pytest.skip("this libasound does not report unknown PCMs on stderr")
    assert "ALSA lib" in raw  # what a user saw before
    assert "nonexistent_pcm_xyz" not in _alsa(0, route)  # default: not on the terminal
    logged = [line for line in _alsa(2, route).splitlines() if "nonexistent_pcm_xyz" in line]
    assert len(logged) == 1, logged
    line = logged[0]
    assert "DEBUG edgevoice.audio.alsa: " in line and not line.startswith("ALSA lib")
    # The message's own %s argument is filled in, with where libasound said it.
    assert line.endswith("Unknown PCM nonexistent_pcm_xyz") and "snd_pcm_open" in line


def test_alsa_formats_only_what_it_can_read_safely():
    text = ctypes.create_string_buffer(b"underrun")
    address = ctypes.addressof(text)
    assert _format("%s occurred", (address,)) == "underrun occurred"
    assert _format("card %d: %i%% %u %x|%-4d|", (2**64 - 5, 7, 3, 255, 1)) \
        == "card -5: 7% 3 ff|1   |"
    assert _format("%.5s '%c' %s", (address, ord("z"), 0)) == "under 'z' (null)"
    assert _format("no arguments", ()) == "no arguments"
    # A double, a * width or too few slots: left as the raw format, nothing dereferenced.
    assert _format("rate %f", (address,)) is None
    assert _format("%*d", (3, 4)) is None
    assert _format("%s %s", (address,)) is None
