"""`edgevoice tray`: a system-tray icon for the daemon, over the control API.

The tray is a client, never the agent itself: it attaches to `edgevoice run` on the control socket,
or starts one as a child process (so audio, models and a crash stay out of the GUI process, and
the daemon is exactly what `edgevoice run` is). One thread follows the event stream on its own
connection; each menu command opens a short-lived second one. What is shown comes from
``edgevoice.tray_model`` (pure); this module wires it to pystray, notifications and processes.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

from edgevoice.control.client import ControlClient, ControlError, NoDaemon
from edgevoice.errors import UserError
from edgevoice.tray_model import (
    MenuEntry,
    TrayModel,
    apply_event,
    from_status,
    icon_spec,
    menu_model,
    tooltip,
)

log = logging.getLogger(__name__)

ATTACH_GRACE_S = 5.0   # at login the systemd user unit may still be starting the daemon
START_TIMEOUT_S = 120.0  # a started daemon loads its models before it opens the socket
RECONNECT_S = 1.0


# `python -m edgevoice` would put the working directory first on sys.path, and a folder there
# named `edgevoice` (the checkout of an editable install, started from its parent, e.g. $HOME at
# login) would shadow the package. `-c` puts '' there instead, which this removes before import.
def python_main(module: str) -> list[str]:
    """argv that runs ``module.main()`` with this interpreter whatever the working directory:
    unlike ``-m``, a folder named ``edgevoice`` there (a checkout's parent) cannot shadow the
    package."""
    return [sys.executable, "-c", "import sys\n"
            "if sys.path and sys.path[0] == '': del sys.path[0]\n"
            f"from {module} import main\n"
            "sys.exit(main())"]


def agent_command(config: Optional[str] = None, *run_args: str) -> list[str]:
    """The argv that starts `edgevoice run` with this interpreter, whatever the working directory.

    A relative ``config`` is made absolute so it means what it meant to the user.
    """
    argv = python_main("edgevoice.cli")
    if config:
        argv += ["--config", str(Path(config).absolute())]
    return [*argv, "run", *run_args]


def notify(message: str) -> None:
    """A desktop notification where ``notify-send`` exists, else a log line."""
    log.warning("%s", message)
    if shutil.which("notify-send"):
        try:
            subprocess.Popen(["notify-send", "--app-name=edgevoice", "edgevoice", message],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        except OSError:  # pragma: no cover - a broken notify-send must not stop the tray
            pass


class TrayApp:
    """The tray's state and actions, independent of how (or whether) an icon is shown."""

    def __init__(self, socket_path: Path, config_path: Path, *,
                 notifier: Callable[[str], None] = notify,
                 run_argv: Optional[list[str]] = None) -> None:
        self.socket_path = socket_path
        self.config_path = config_path
        self.notify = notifier
        self.run_argv = run_argv or agent_command()
        self.model = TrayModel()
        self.child: Optional[subprocess.Popen] = None
        self.icon: Any = None  # an X11TrayIcon or a PystrayIcon once made
        self._lock = threading.Lock()
        self._icon_lock = threading.Lock()
        self._child_lock = threading.Lock()
        self._stopping = threading.Event()
        self._events_client: Optional[ControlClient] = None
        self._thread: Optional[threading.Thread] = None

    # -- daemon --------------------------------------------------------------------------------

    def daemon_running(self) -> bool:
        try:
            ControlClient(self.socket_path, timeout=2.0).close()
            return True
        except ControlError:
            return False

    def attach_or_start(self, start: bool) -> None:
        """Attach to a daemon; start one as a child if none answers (at once with ``start``,
        else after a short grace for a service that is still coming up)."""
        deadline = time.monotonic() + (0.0 if start else ATTACH_GRACE_S)
        while not self.daemon_running():
            if time.monotonic() >= deadline:
                self.start_daemon()
                return
            time.sleep(0.25)
        log.info("attached to the agent on %s", self.socket_path)

    def attach_or_start_in_background(self, start: bool) -> threading.Thread:
        """``attach_or_start`` on its own thread, so the icon (grey: no agent) shows meanwhile.

        A start that fails becomes a notification; the tray stays, offering "Start the agent".
        """
        def run() -> None:
            try:
                self.attach_or_start(start)
            except (UserError, OSError) as exc:
                if not self._stopping.is_set():
                    self.notify(f"could not start the agent: {exc}")

        thread = threading.Thread(target=run, name="tray-start", daemon=True)
        thread.start()
        return thread

    def start_daemon(self) -> None:
        with self._child_lock:  # never start a child after stop() has looked for one
            if self._stopping.is_set():
                return
            log.info("no agent on %s: starting it", self.socket_path)
            log.debug("agent command: %s", self.run_argv)
            self.child = child = subprocess.Popen(self.run_argv, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.daemon_running():
            if self.child is not child:  # the tray was quit meanwhile (stop() stopped it)
                return
            if child.poll() is not None:
                self.child = None
                raise UserError(f"the agent exited with code {child.returncode} before "
                                "it opened its control socket (see its messages above)")
            if time.monotonic() >= deadline:
                raise UserError(f"the agent did not open {self.socket_path} within "
                                f"{START_TIMEOUT_S:.0f} s")
            time.sleep(0.1)

    def stop_child(self, timeout: float = 10.0) -> None:
        """Stop the daemon this tray started: ``quit`` first, then SIGTERM, then SIGKILL."""
        child, self.child = self.child, None
        if child is None or child.poll() is not None:
            return
        try:
            self.command("quit")
        except ControlError:
            child.terminate()
        try:
            child.wait(timeout)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()

    # -- events --------------------------------------------------------------------------------

    def follow(self) -> None:
        """Start the event thread (reconnects while the tray runs)."""
        self._thread = threading.Thread(target=self._follow, name="tray-events", daemon=True)
        self._thread.start()

    def _follow(self) -> None:
        while not self._stopping.is_set():
            try:
                with ControlClient(self.socket_path) as client:
                    self._events_client = client
                    self._set(from_status(client.request("status")))
                    for event in client.events():
                        self.on_event(event)
            except NoDaemon:
                pass
            except ControlError as exc:
                log.debug("event stream ended: %s", exc)
            finally:
                self._events_client = None
            if self._stopping.is_set():
                break
            if self.model.connected:
                self._set(TrayModel(connected=False))
                code = self.child.poll() if self.child is not None else None
                if code not in (None, 0):
                    self.notify(f"the agent stopped (exit code {code})")
            self._stopping.wait(RECONNECT_S)

    def on_event(self, event: dict) -> None:
        if event.get("event") == "error":
            self.notify(event.get("message") or "the agent reported an error")
        with self._lock:
            model = apply_event(self.model, event)
        self._set(model)

    def _set(self, model: TrayModel) -> None:
        with self._lock:
            changed, self.model = model != self.model, model
        if changed:
            self.refresh()

    # -- actions (the menu's code path) --------------------------------------------------------

    def command(self, cmd: str, **args: str) -> dict:
        with ControlClient(self.socket_path) as client:
            return client.request(cmd, **args)

    def perform(self, action: str) -> dict:
        """Run a menu action; a refusal or lost daemon becomes a notification, not a crash."""
        try:
            return self._perform(action)
        except (ControlError, OSError) as exc:
            self.notify(str(exc))
            return {}

    def _perform(self, action: str) -> dict:
        model = self.model
        if action == "toggle_mute":
            result = self.command("unmute" if model.muted else "mute")
            self._update(muted=bool(result.get("muted")))
        elif action == "toggle_ptt":
            result = self.command("ptt_stop" if model.ptt_pressed else "ptt_start")
            self._update(ptt_pressed=bool(result.get("pressed")))
        elif action.startswith("policy:"):
            result = self.command("set_policy", policy=action.split(":", 1)[1])
            self._update(policy=result.get("policy", model.policy))
        elif action == "open_config":
            result = {"opened": str(self.open_config())}
        elif action == "stop_daemon":
            result = self.command("quit")
        elif action == "start_daemon":
            if self.model.connected or self.daemon_running():
                result = {"started": False}
            else:
                self.attach_or_start_in_background(start=True)
                result = {"started": True}
        elif action == "quit":
            self.stop()
            result = {"stopping": True}
        else:
            raise ValueError(f"unknown tray action {action!r}")
        return result

    def _update(self, **changes: Any) -> None:
        from dataclasses import replace

        with self._lock:
            model = replace(self.model, **changes)
        self._set(model)

    def open_config(self) -> Path:
        """Open the config file in the desktop's editor, creating a stub if there is none."""
        path = self.config_path
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("# edgevoice configuration: see `edgevoice config show` for every "
                            "key and its value.\n")
        opener = "open" if sys.platform == "darwin" else "xdg-open"
        if not shutil.which(opener):
            raise OSError(f"cannot open {path}: `{opener}` is not installed")
        subprocess.Popen([opener, str(path)], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
        return path

    def stop(self) -> None:
        """Quit the tray (and the daemon, when the tray started it); idempotent."""
        with self._child_lock:
            if self._stopping.is_set():
                return
            self._stopping.set()
        client = self._events_client
        if client is not None:
            try:
                client._sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked event reader
            except OSError:
                pass
        self.stop_child()
        with self._icon_lock:
            if self.icon is not None:
                self.icon.stop()

    # -- icon ----------------------------------------------------------------------------------

    def entries(self) -> list[MenuEntry]:
        return menu_model(self.model, owns_daemon=self.child is not None)

    def default_action(self) -> str:
        """What a left click does: push-to-talk in that mode, else mute / unmute."""
        return "toggle_ptt" if self.model.activation_mode == "push_to_talk" else "toggle_mute"

    def pystray_menu(self) -> Any:
        """The pystray menu, rebuilt from the model each time it is shown."""
        import pystray

        def run(action: str) -> Callable[[Any, Any], Any]:
            # pystray counts parameters (defaults included): exactly (icon, item).
            return lambda icon, menu_item: self.perform(action)

        def constant(value: bool) -> Callable[[Any], bool]:
            return lambda menu_item: value

        def item(entry: MenuEntry) -> Any:
            if entry.separator:
                return pystray.Menu.SEPARATOR
            action = run(entry.action) if entry.action else None
            checked = None if entry.checked is None else constant(entry.checked)
            return pystray.MenuItem(entry.text, action, checked=checked, radio=entry.radio,
                                    enabled=entry.enabled,
                                    default=entry.action == self.default_action())

        return pystray.Menu(lambda: [item(e) for e in self.entries()])

    def make_icon(self, backend: Optional[str] = None) -> Any:
        """The icon on ``backend`` ("x11": ours, "pystray"); default: ``choose_backend()``."""
        from edgevoice.tray_icons import render

        image, title = render(icon_spec(self.model)), tooltip(self.model)
        if (backend or choose_backend()) == "x11":
            from edgevoice.tray_x11 import X11TrayIcon

            self.icon = X11TrayIcon(image, title, entries=self.entries,
                                    on_action=self.perform, default_action=self.default_action)
        else:
            import pystray

            self.icon = PystrayIcon(pystray.Icon("edgevoice", image, title,
                                                 menu=self.pystray_menu()))
        return self.icon

    def run_icon(self) -> None:
        """Show the icon and handle its events until ``stop`` (blocks)."""
        self.icon.run()

    def refresh(self) -> None:
        """Redraw from the model. One thread at a time: pystray's backends are not re-entrant."""
        from edgevoice.tray_icons import render

        with self._icon_lock:
            icon = self.icon
            if icon is None or self._stopping.is_set():
                return
            icon.update(render(icon_spec(self.model)), tooltip(self.model))


class PystrayIcon:
    """A pystray icon behind the same ``update`` / ``run`` / ``stop`` as ``X11TrayIcon``."""

    def __init__(self, icon: Any) -> None:
        self.icon = icon

    def update(self, image: Any, title: str) -> None:
        self.icon.icon = image
        self.icon.title = title
        self.icon.update_menu()

    def run(self) -> None:
        self.icon.run()

    def stop(self) -> None:
        self.icon.stop()


def choose_backend() -> str:
    """"x11" (ours) where pystray would use its xorg backend (an X session without PyGObject:
    no menu, lost dock requests, cross-thread X calls); "pystray" for AppIndicator, GTK, macOS
    and Windows, which have real menus."""
    import os

    wanted = os.environ.get("PYSTRAY_BACKEND")
    if wanted:
        return "x11" if wanted == "xorg" else "pystray"
    if sys.platform in ("darwin", "win32"):
        return "pystray"
    import pystray

    return "x11" if pystray.Icon.__module__.endswith("._xorg") else "pystray"


# -- CLI ---------------------------------------------------------------------------------------

def register(sub, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("tray", parents=[common],
                       help="system-tray icon: state, mute, push-to-talk, LLM policy")
    p.add_argument("--socket", metavar="PATH",
                   help="control socket (default: control.socket, else the standard path)")
    p.add_argument("--start", action="store_true",
                   help="start `edgevoice run` at once when no agent is running (default: wait "
                        f"{ATTACH_GRACE_S:.0f} s for one, then start it)")
    p.set_defaults(func=cmd_tray)


def cmd_tray(args) -> int:
    from edgevoice.config import default_config_path, find_config_path, load_config
    from edgevoice.control.protocol import socket_path

    try:
        import PIL  # noqa: F401

        backend = choose_backend()  # imports pystray, whose xorg backend opens the display
        if backend == "x11":
            from Xlib.display import Display

            Display().close()
    except ImportError as exc:
        raise UserError(f"the tray needs pystray, Pillow and python-xlib: "
                        f"pip install 'edgevoice[tray]' ({exc})") from None
    except Exception as exc:
        raise UserError(f"no desktop to put a tray icon on ({exc}); run `edgevoice tray` in "
                        "the desktop session, or set DISPLAY") from None

    cfg, _ = load_config(args.config)
    path = socket_path(args.socket or cfg.control.socket)
    run_argv = agent_command(args.config)
    config_file = find_config_path(args.config) or default_config_path()
    app = TrayApp(path, Path(config_file), run_argv=run_argv)
    if args.socket and path != socket_path(cfg.control.socket):
        # A started daemon listens where its config says; only attach to other sockets.
        if not app.daemon_running():
            raise UserError(f"no agent on {path}; the tray starts agents only on the configured "
                            f"socket ({socket_path(cfg.control.socket)})")
    app.make_icon(backend)  # at once: grey "no agent" until the agent answers
    app.follow()
    if not (args.socket and path != socket_path(cfg.control.socket)):
        app.attach_or_start_in_background(args.start)
    signal.signal(signal.SIGTERM, lambda *_: app.stop())
    signal.signal(signal.SIGINT, lambda *_: app.stop())
    try:
        app.run_icon()
    finally:
        app.stop()
    return 0

