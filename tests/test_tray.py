"""The tray: its model, icons and menu as plain data, then for real on Xvfb + trayer."""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from _daemon import Daemon, compose

from edgevoice.tray import TrayApp, agent_command
from edgevoice.tray_model import (
    ICONS,
    TrayModel,
    apply_event,
    from_status,
    icon_kind,
    icon_spec,
    latency_text,
    menu_model,
)
from edgevoice.tray_x11 import MENU_BG, _menu_font

STATUS = {"state": "listening", "muted": False, "policy": "auto",
          "activation": {"mode": "always", "active": True},
          "last_turn": {"id": 3, "target": "local", "latency_ms": {"asr_final": 120.0,
                                                                   "first_audio": 640.4}},
          "targets": [{"name": "local", "kind": "local"}, {"name": "lan", "kind": "openai"}]}


# -- model, icon spec, menu --------------------------------------------------------------------

def test_status_and_events_fold_into_the_icon_kind():
    model = from_status(STATUS)
    assert icon_kind(model) == "listening" and model.connected
    assert icon_kind(TrayModel()) == "offline"
    steps = [({"event": "state", "state": "thinking"}, "thinking"),
             ({"event": "state", "state": "speaking"}, "speaking"),
             ({"event": "muted", "muted": True}, "muted"),            # muted wins over speaking
             ({"event": "muted", "muted": False}, "speaking"),
             ({"event": "state", "state": "listening"}, "listening"),
             ({"event": "turn", "target": "lan", "latency_ms": {"first_audio": 900.0}},
              "offload"),                                             # last turn went remote
             ({"event": "turn", "target": "intents", "latency_ms": {}}, "listening"),
             ({"event": "policy", "policy": "remote"}, "offload"),
             ({"event": "policy", "policy": "local"}, "listening"),
             ({"event": "activation", "mode": "push_to_talk", "active": False}, "idle"),
             ({"event": "partial", "text": "wh"}, "idle")]            # not shown: no change
    for event, kind in steps:
        model = apply_event(model, event)
        assert icon_kind(model) == kind, event


def test_a_lost_microphone_or_speaker_shows_whatever_else_is_going_on():
    from edgevoice.tray_model import tooltip

    model = apply_event(from_status(STATUS), {"event": "muted", "muted": True})
    for state, words in (("no-microphone", "no microphone"), ("no-speaker", "no speaker")):
        lost = apply_event(model, {"event": "state", "state": state})
        assert icon_kind(lost) == "no_device" and icon_spec(lost).glyph == "alert"
        assert tooltip(lost) == f"edgevoice: {words} (waiting for it to come back)"
    assert icon_kind(from_status({**STATUS, "state": "no-speaker"})) == "no_device"
    back = apply_event(lost, {"event": "state", "state": "listening"})
    assert icon_kind(back) == "muted"


def test_icons_differ_and_offload_shows_as_a_badge_while_busy():
    specs = list(ICONS.values())
    assert len({s.colour for s in specs}) == len(specs)
    assert len({s.glyph for s in specs}) == len(specs)
    busy = apply_event(from_status({**STATUS, "policy": "remote"}),
                       {"event": "state", "state": "thinking"})
    assert icon_spec(busy).kind == "thinking" and icon_spec(busy).badge
    assert not icon_spec(from_status(STATUS)).badge


def test_menu_model_follows_the_state():
    model = from_status(STATUS)
    entries = {e.text: e for e in menu_model(model)}
    assert entries["Muted"].checked is False and entries["Muted"].action == "toggle_mute"
    assert not entries["Push to talk"].enabled                # activation mode is "always"
    radios = [e for e in entries.values() if e.radio]
    assert [(e.text, e.checked) for e in radios] == [
        ("LLM: local", False), ("LLM: auto", True), ("LLM: remote", False)]
    latency = entries["Last turn: 640 ms (local)"]
    assert latency.action is None and not latency.enabled
    assert entries["Open config"].action == "open_config" and "Quit" in entries

    model = apply_event(apply_event(model, {"event": "muted", "muted": True}),
                        {"event": "activation", "mode": "push_to_talk", "active": False})
    entries = {e.text: e for e in menu_model(model, owns_daemon=True)}
    assert entries["Muted"].checked and entries["Push to talk"].enabled
    assert "Quit (stops the agent)" in entries
    offline = menu_model(TrayModel())
    assert not any(e.enabled for e in offline if e.action and e.action.startswith("policy"))
    assert latency_text(TrayModel()) == "Last turn: none yet"
    assert "Start the agent" in {e.text for e in offline} and "Stop the agent" not in {
        e.text for e in offline}
    assert latency_text(TrayModel(last_latency_ms={"asr_final": 80.0, "llm_first_token": 310.0})
                        ) == "Last turn: 310 ms"              # cut before it spoke


def test_icons_are_drawn_in_their_colour():
    pytest.importorskip("PIL")
    from edgevoice.tray_icons import render

    for spec in ICONS.values():
        img = render(spec, 64).convert("RGB")
        assert img.size == (64, 64)
        assert img.getpixel((32, 5)) == spec.colour, spec.kind     # the disc, above the glyph
        assert (255, 255, 255) in {c for _, c in img.getcolors(4096)}  # the glyph
    badge = render(icon_spec(apply_event(from_status({**STATUS, "policy": "remote"}),
                                         {"event": "state", "state": "speaking"})))
    assert badge.convert("RGB").getpixel((52, 12)) == ICONS["offload"].colour


# -- against a daemon (no display needed) -------------------------------------------------------

@pytest.fixture
def quiet_wav(tmp_path):
    path = tmp_path / "quiet.wav"
    compose([(None, 120.0)], path)
    return path


def wait_until(pred, timeout: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_actions_change_the_daemon_and_events_follow(quiet_wav, tmp_path):
    daemon = Daemon(quiet_wav)
    notes: list[str] = []
    try:
        daemon.client().close()
        app = TrayApp(daemon.socket, tmp_path / "cfg" / "config.yaml", notifier=notes.append)
        app.follow()
        wait_until(lambda: app.model.connected, what="the event stream")
        assert app.perform("toggle_mute") == {"muted": True}
        assert daemon.client().request("status")["muted"] is True
        wait_until(lambda: app.model.state == "muted", what="the muted state event")
        app.perform("toggle_mute")
        app.perform("policy:remote")
        status = daemon.client().request("status")
        assert status["muted"] is False and status["policy"] == "remote"
        assert icon_kind(app.model) == "offload"
        app.perform("toggle_ptt")                               # refused: not push-to-talk
        assert notes and "push-to-talk is off" in notes[-1]
        app.perform("stop_daemon")
        assert daemon.finish()[0] == 0
        wait_until(lambda: not app.model.connected, what="the tray to see the daemon go")
    finally:
        app.stop()
        daemon.proc.kill()


def test_tray_starts_its_own_daemon_and_stops_it(quiet_wav, tmp_path, monkeypatch):
    sock = Path(tmp_path / "c.sock")
    if len(str(sock)) > 100:
        pytest.skip("tmp path too long for a Unix socket")
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(f"control:\n  socket: {sock}\n")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))           # no user model: intents only
    argv = [sys.executable, "-m", "edgevoice", "--config", str(cfg), "run", "--input",
            str(quiet_wav), "--output", str(tmp_path / "out.wav")]
    app = TrayApp(sock, cfg, run_argv=argv, notifier=lambda _: None)
    try:
        app.attach_or_start(start=True)
        child = app.child
        assert child is not None and app.daemon_running()
        assert any(e.text == "Quit (stops the agent)" for e in app.entries())
        app.perform("quit")
        assert child.wait(15) == 0 and not app.daemon_running()
    finally:
        if app.child is not None:
            app.child.kill()


def test_every_menu_text_has_a_glyph_in_the_menu_font():
    # Pillow's built-in font has no em dash: "Last turn: —" was drawn as a box.
    pytest.importorskip("PIL")
    from PIL import Image, ImageDraw

    font = _menu_font()

    def bitmap(ch: str) -> bytes:
        image = Image.new("L", (40, 40))
        ImageDraw.Draw(image).text((5, 5), ch, fill=255, font=font)
        return image.tobytes()

    missing = bitmap("\U0010fffd")  # a private-use code point: no font draws it
    states = [TrayModel(), from_status(STATUS),
              apply_event(from_status(STATUS), {"event": "muted", "muted": True})]
    texts = {e.text for m in states for owns in (False, True)
             for e in menu_model(m, owns_daemon=owns) if not e.separator}
    assert "Last turn: none yet" in texts
    for text in sorted(texts):
        for ch in set(text) - {" "}:
            assert bitmap(ch) != missing, f"{ch!r} of {text!r} has no glyph in the menu font"


def test_the_agent_starts_from_a_folder_holding_a_checkout_named_edgevoice(
        quiet_wav, tmp_path, monkeypatch):
    # `python -m` puts the working directory first on sys.path: a checkout at ~/edgevoice,
    # started from ~ (as autostart does), shadowed the package and the agent died on import.
    home = tmp_path / "home"
    (home / "edgevoice" / "edgevoice").mkdir(parents=True)   # a checkout's layout, no __init__
    monkeypatch.chdir(home)
    sock = Path(tempfile.mkdtemp(prefix="evtr-")) / "c.sock"
    (home / "agent.yaml").write_text(f"control:\n  socket: {sock}\n")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    shadowed = subprocess.run([sys.executable, "-m", "edgevoice", "--version"],
                              capture_output=True, text=True)
    assert shadowed.returncode != 0   # the trap is real in this folder
    argv = agent_command("agent.yaml", "--input", str(quiet_wav), "--output",
                         str(tmp_path / "out.wav"))
    assert str(home / "agent.yaml") in argv                   # relative config made absolute
    app = TrayApp(sock, home / "agent.yaml", run_argv=argv, notifier=lambda _: None)
    try:
        app.attach_or_start(start=True)
        assert app.daemon_running()
    finally:
        app.stop()


# -- for real: Xvfb, trayer, clicks through the X server (XTest) ----------------------------------

def _missing() -> str | None:
    import importlib.util

    for tool, package in [("Xvfb", "xvfb"), ("trayer", "trayer"), ("import", "imagemagick")]:
        if not shutil.which(tool):
            return f"`{tool}` not found (apt install {package})"
    for module, package in [("pystray", "pystray"), ("PIL", "Pillow"), ("Xlib", "python-xlib")]:
        if importlib.util.find_spec(module) is None:  # not imported: pystray opens the display
            return f"{package} not installed (pip install 'edgevoice[tray]' python-xlib)"
    return None


needs_x = pytest.mark.skipif(_missing() is not None, reason=_missing() or "")


def start_trayer(display: str) -> subprocess.Popen:
    """trayer docked at the top-left (64x32), once it owns the tray selection."""
    trayer = subprocess.Popen(["trayer", "--edge", "top", "--align", "left", "--widthtype",
                               "pixel", "--width", "64", "--heighttype", "pixel", "--height",
                               "32", "--SetDockType", "false", "--transparent", "false"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until(lambda: tray_owner(display), timeout=60,  # slow to start on a loaded machine
               what="trayer to own the tray selection")
    return trayer


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture
def xserver(monkeypatch):
    """A private Xvfb (640x480) as DISPLAY, pystray on its xorg backend; no tray host yet."""
    read, write = os.pipe()
    xvfb = subprocess.Popen(["Xvfb", "-displayfd", str(write), "-screen", "0", "640x480x24",
                             "-nolisten", "tcp"], pass_fds=(write,), stderr=subprocess.DEVNULL)
    os.close(write)
    with os.fdopen(read) as f:
        number = f.readline().strip()
    assert number, "Xvfb did not start"
    display = f":{number}"
    monkeypatch.setenv("DISPLAY", display)
    monkeypatch.setenv("PYSTRAY_BACKEND", "xorg")
    try:
        yield display
    finally:
        stop(xvfb)


@pytest.fixture
def xdisplay(xserver):
    """The private Xvfb with trayer running, as DISPLAY."""
    trayer = start_trayer(xserver)
    try:
        yield xserver
    finally:
        stop(trayer)


def tray_owner(display: str) -> bool:
    from Xlib import X
    from Xlib.display import Display

    d = Display(display)
    try:
        return d.get_selection_owner(d.intern_atom("_NET_SYSTEM_TRAY_S0")) != X.NONE
    finally:
        d.close()


def screenshot(display: str):
    from PIL import Image

    png = subprocess.run(["import", "-display", display, "-window", "root", "png:-"],
                         capture_output=True, check=True, timeout=20).stdout
    return Image.open(io.BytesIO(png)).convert("RGB")


def pixels_of(display: str, colour: tuple[int, int, int], tol: int = 10) -> list[tuple[int, int]]:
    rgb = np.asarray(screenshot(display), dtype=np.int16)
    ys, xs = np.nonzero((np.abs(rgb - np.array(colour)) <= tol).all(axis=2))
    return list(zip(xs.tolist(), ys.tolist(), strict=True))


def shows(display: str, kind: str, timeout: float = 15.0) -> list[tuple[int, int]]:
    """The icon's pixels in ``kind``'s colour, all inside the tray strip (top-left 64x32)."""
    colour = ICONS[kind].colour
    found = wait_until(lambda: len(pixels_of(display, colour)) > 100, timeout,
                       f"the {kind} icon on screen")
    found = pixels_of(display, colour)
    assert max(x for x, _ in found) < 64 and max(y for _, y in found) < 32, "outside the tray"
    return found


def click(display: str, at: tuple[int, int], button: int = 1) -> None:
    """A real pointer click through the X server (XTest), as a user's mouse makes it."""
    from Xlib import X
    from Xlib.display import Display

    d = Display(display)
    try:
        d.xtest_fake_input(X.MotionNotify, x=at[0], y=at[1])
        d.xtest_fake_input(X.ButtonPress, button)
        d.xtest_fake_input(X.ButtonRelease, button)
        d.sync()
    finally:
        d.close()


def press_key(display: str, keysym_name: str) -> None:
    from Xlib import XK, X
    from Xlib.display import Display

    d = Display(display)
    try:
        code = d.keysym_to_keycode(XK.string_to_keysym(keysym_name))
        d.xtest_fake_input(X.KeyPress, code)
        d.xtest_fake_input(X.KeyRelease, code)
        d.sync()
    finally:
        d.close()


def centre(pixels: list[tuple[int, int]]) -> tuple[int, int]:
    return (sum(x for x, _ in pixels) // len(pixels), sum(y for _, y in pixels) // len(pixels))


def open_menu(app: TrayApp, display: str, kind: str) -> dict:
    """Right-click the icon; the menu's rows by text once it is on screen."""
    click(display, centre(shows(display, kind)), button=3)
    rows = wait_until(lambda: app.icon.menu_rows, what="the menu to open")
    wait_until(lambda: len(pixels_of(display, MENU_BG, tol=2)) > 3000, what="the menu on screen")
    return {row.entry.text: row for row in rows}


@pytest.fixture
def tray(quiet_wav, tmp_path, xdisplay):
    """A daemon, and a TrayApp attached to it with its icon running on our X11 backend."""
    daemon = Daemon(quiet_wav)
    app = None
    try:
        daemon.client().close()
        app = TrayApp(daemon.socket, tmp_path / "config.yaml", notifier=lambda _: None)
        app.make_icon("x11")
        app.follow()
        thread = threading.Thread(target=app.run_icon, daemon=True)
        thread.start()
        yield daemon, app, thread
    finally:
        if app is not None:
            app.stop()
        daemon.client().request("quit")
        daemon.finish()


@needs_x
def test_icon_in_a_real_tray_clicks_and_menu(tray, xdisplay):
    daemon, app, thread = tray
    wait_until(lambda: app.model.connected, what="the event stream")
    click(xdisplay, centre(shows(xdisplay, "listening")))           # left click: mute
    wait_until(lambda: daemon.client().request("status")["muted"], what="the daemon muted")
    shows(xdisplay, "muted")
    assert not pixels_of(xdisplay, ICONS["listening"].colour)

    rows = open_menu(app, xdisplay, "muted")
    assert rows["Muted"].entry.checked is True and rows["LLM: local"].entry.checked is True
    assert rows["Push to talk"].entry.enabled is False                 # not in that mode
    assert rows["Muted"].y >= 32                                       # under the tray strip
    click(xdisplay, rows["Muted"].centre)                              # unmute from the menu
    wait_until(lambda: not app.icon.menu_rows, what="the menu to close")
    wait_until(lambda: not daemon.client().request("status")["muted"], what="unmuted")
    assert len(pixels_of(xdisplay, MENU_BG, tol=2)) < 3000    # the menu is gone

    rows = open_menu(app, xdisplay, "listening")
    click(xdisplay, rows["LLM: remote"].centre)
    wait_until(lambda: daemon.client().request("status")["policy"] == "remote", what="remote")
    shows(xdisplay, "offload")
    rows = open_menu(app, xdisplay, "offload")
    assert rows["LLM: remote"].entry.checked and not rows["LLM: auto"].entry.checked
    click(xdisplay, (600, 450))                                        # outside: closes it
    wait_until(lambda: not app.icon.menu_rows, what="the menu to close")
    assert daemon.client().request("status")["policy"] == "remote"    # and ran nothing
    open_menu(app, xdisplay, "offload")
    press_key(xdisplay, "Escape")
    wait_until(lambda: not app.icon.menu_rows, what="Escape to close the menu")

    rows = open_menu(app, xdisplay, "offload")
    click(xdisplay, rows["Quit"].centre)
    thread.join(10)
    assert not thread.is_alive(), "the icon loop did not end on Quit"
    assert daemon.client().request("status")["policy"] == "remote"    # attached: not stopped


@needs_x
def test_the_pystray_menu_runs_the_same_actions(quiet_wav, tmp_path, xserver):
    # AppIndicator / GTK / macOS / Windows users get pystray's menu, built from the same model.
    daemon = Daemon(quiet_wav)
    try:
        daemon.client().close()
        app = TrayApp(daemon.socket, tmp_path / "config.yaml", notifier=lambda _: None)
        app.model = from_status(daemon.client().request("status"))
        items = {str(item.text): item for item in app.pystray_menu().items}
        import pystray

        assert [str(i.text) for i in app.pystray_menu().items
                if i is not pystray.Menu.SEPARATOR] == \
            [e.text for e in app.entries() if not e.separator]
        assert items["Muted"].default and not items["Muted"].checked
        items["Muted"](None)                                           # what a click runs
        assert daemon.client().request("status")["muted"] is True
        assert {str(i.text): i for i in app.pystray_menu().items}["Muted"].checked
        items["LLM: auto"](None)
        assert daemon.client().request("status")["policy"] == "auto"
    finally:
        daemon.client().request("quit")
        daemon.finish()


@needs_x
def test_cli_attaches_shows_the_icon_and_exits_on_sigterm(quiet_wav, xdisplay):
    daemon = Daemon(quiet_wav)
    tray = None
    try:
        daemon.client().close()
        tray = subprocess.Popen([sys.executable, "-m", "edgevoice", "--config",
                                 str(daemon.config), "tray"], stderr=subprocess.PIPE, text=True)
        shows(xdisplay, "listening", timeout=30)
        daemon.client().request("mute")
        shows(xdisplay, "muted")
        tray.send_signal(signal.SIGTERM)
        assert tray.wait(15) == 0, tray.stderr.read()
        assert daemon.client().request("status")["muted"] is True   # the daemon lives on
    finally:
        if tray is not None and tray.poll() is None:
            tray.kill()
            tray.wait()
        daemon.client().request("quit")
        daemon.finish()


@needs_x
def test_icon_docks_when_the_tray_host_starts_late_and_again_after_it_restarts(
        quiet_wav, tmp_path, xserver):
    # A login session may start the tray app before the panel; a panel may crash and restart.
    daemon = Daemon(quiet_wav)
    app = trayer = None
    try:
        daemon.client().close()
        app = TrayApp(daemon.socket, tmp_path / "config.yaml", notifier=lambda _: None)
        app.make_icon("x11")
        app.follow()
        threading.Thread(target=app.run_icon, daemon=True).start()
        time.sleep(1.5)
        assert app.icon.dock_requests == 0 and not app.icon.docked.is_set()
        assert not pixels_of(xserver, ICONS["listening"].colour)   # no tray host, no icon

        trayer = start_trayer(xserver)
        shows(xserver, "listening")
        assert app.icon.docked.is_set()

        stop(trayer)
        wait_until(lambda: not app.icon.docked.is_set(), what="the icon to see the host go")
        time.sleep(0.5)
        assert not pixels_of(xserver, ICONS["listening"].colour)   # not left on the desktop
        trayer = start_trayer(xserver)
        shows(xserver, "listening")
        daemon.client().request("mute")
        shows(xserver, "muted")
    finally:
        if app is not None:
            app.stop()
        if trayer is not None:
            stop(trayer)
        daemon.client().request("quit")
        daemon.finish()


@needs_x
def test_cli_shows_no_agent_at_once_then_starts_the_agent_from_home(pulse, tmp_path, xdisplay):
    # The icon must be there before the agent is (users started the tray twice), and the
    # agent the tray starts must run from a folder that holds a checkout called edgevoice.
    home = tmp_path / "home"
    (home / "edgevoice" / "edgevoice").mkdir(parents=True)
    sock = Path(tempfile.mkdtemp(prefix="evtr-")) / "c.sock"
    cfg = home / "agent.yaml"
    cfg.write_text(f"control:\n  socket: {sock}\n")
    env = dict(pulse.env, DISPLAY=xdisplay, PYSTRAY_BACKEND="xorg", XDG_DATA_HOME=str(tmp_path))
    edgevoice = Path(sys.executable).with_name("edgevoice")   # the console script users run
    if not edgevoice.exists():
        pytest.skip(f"no console script next to {sys.executable}: pip install -e .")
    tray = subprocess.Popen([str(edgevoice), "--config", "agent.yaml", "tray"], cwd=str(home),
                            env=env, stderr=subprocess.PIPE, text=True)
    try:
        shows(xdisplay, "offline", timeout=30)
        assert not sock.exists(), "the grey icon should show while no agent runs yet"
        shows(xdisplay, "listening", timeout=90)         # the tray started the agent
        tray.send_signal(signal.SIGTERM)
        assert tray.wait(20) == 0, tray.stderr.read()
        probe = TrayApp(sock, cfg)
        wait_until(lambda: not probe.daemon_running(), what="the tray's agent to stop with it")
    finally:
        if tray.poll() is None:
            tray.kill()
            tray.wait()
