"""`edgevoice config example` and `edgevoice install-units`: what a pip user needs from the
checkout's `config.example.yaml` and `packaging/`, without a checkout.

The wheel carries copies of `packaging/` in `edgevoice/packaging/` (setup.py copies them at build
time, so the top-level folder stays the one source); an editable install reads the checkout's
folder. The example config is rendered from the config dataclasses (`render_example`), which a
test keeps identical to `config.example.yaml`. Installed units run the `edgevoice` executable of
the install they came from: that is the install whose files they are.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from edgevoice import __version__
from edgevoice.errors import UserError

USER_UNIT = "edgevoice.service"
SYSTEM_UNIT = "edgevoice-system.service"
TRAY_ENTRY = "edgevoice-tray.desktop"
SYSUSERS = "edgevoice.sysusers"

# The system unit's ProtectHome= and PrivateTmp= hide these from the service.
HIDDEN_FROM_SERVICE = ("/home", "/root", "/run/user", "/tmp", "/var/tmp")
# Neither ExecStart= nor a desktop entry's Exec= takes these plainly (specifiers, variables,
# escapes); a space is fine inside double quotes.
_UNQUOTABLE = frozenset("\"'\\$`%;\n\r\t")


@dataclass(frozen=True)
class Planned:
    """One file to write; ``keep_existing``: the admin's own file (a config), never replaced."""

    path: Path
    text: str
    keep_existing: bool = False


def packaged_dir() -> Path:
    """This install's copy of `packaging/`: in the package (wheel), else in the checkout."""
    here = Path(__file__).resolve().parent
    for folder in (here / "packaging", here.parent / "packaging"):
        if (folder / USER_UNIT).is_file():
            return folder
    raise UserError(f"this edgevoice install ({here}) lacks its packaging files; reinstall it "
                    "from a wheel or a checkout: pip install --force-reinstall --no-deps "
                    "./edgevoice (or dist/edgevoice-*.whl)")


def find_executable(explicit: Optional[str] = None) -> Path:
    """The `edgevoice` program of this install: the one running, else the one pip recorded."""
    if explicit:
        return Path(os.path.abspath(os.path.expanduser(explicit)))
    argv0 = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if argv0 is not None and argv0.name == "edgevoice" and argv0.is_file():
        return Path(os.path.abspath(argv0))
    from importlib import metadata

    # In sys.path order; a checkout's edgevoice.egg-info (no RECORD) may come before the install.
    for dist in metadata.distributions(name="edgevoice"):
        for record in dist.files or ():
            if record.name == "edgevoice" and record.parent.name in ("bin", "Scripts"):
                path = Path(os.path.normpath(dist.locate_file(record)))
                if path.is_file():
                    return path
    found = shutil.which("edgevoice")
    if found:
        return Path(os.path.abspath(found))
    raise UserError("cannot tell where this install's `edgevoice` program is; name it with "
                    "--executable /path/to/bin/edgevoice")


def quoted(exe: Path) -> str:
    """``exe`` as the program of ExecStart= or Exec= (double quotes when it has a space)."""
    text = str(exe)
    if _UNQUOTABLE & set(text):
        raise UserError(f"the path {text!r} has characters a unit file cannot hold; pass "
                        "--executable with a plainer path (e.g. a symlink to it)")
    return f'"{text}"' if " " in text else text


def with_command(text: str, key: str, command: str) -> str:
    """``text`` with its one ``key=`` line (ExecStart=, Exec=) set to ``command``."""
    lines = text.splitlines(keepends=True)
    hits = [i for i, line in enumerate(lines) if line.startswith(f"{key}=")]
    if len(hits) != 1:
        raise ValueError(f"expected one {key}= line, found {len(hits)}")
    lines[hits[0]] = f"{key}={command}\n"
    return "".join(lines)


def _stamp(exe: Path) -> str:
    return f"# Installed by `edgevoice install-units` (edgevoice {__version__}) for {exe}.\n"


def xdg_config_home() -> Path:
    """$XDG_CONFIG_HOME, or ~/.config when unset or relative (the XDG rule)."""
    value = os.environ.get("XDG_CONFIG_HOME", "")
    return Path(value) if os.path.isabs(value) else Path.home() / ".config"


def user_plan(exe: Path, source: Path, *, tray: bool = True) -> list[Planned]:
    """The user unit (systemd's user config dir) and the tray's autostart entry."""
    config = xdg_config_home()
    unit = with_command((source / USER_UNIT).read_text(), "ExecStart", f"{quoted(exe)} run")
    plan = [Planned(config / "systemd" / "user" / USER_UNIT, _stamp(exe) + unit)]
    if tray:
        entry = with_command((source / TRAY_ENTRY).read_text(), "Exec", f"{quoted(exe)} tray")
        plan.append(Planned(config / "autostart" / TRAY_ENTRY, _stamp(exe) + entry))
    return plan


def system_plan(exe: Path, source: Path, root: Path) -> list[Planned]:
    """The system unit, the service account and, unless there is one, the config under ``root``."""
    from edgevoice.config import render_example

    for path in {exe, exe.resolve()}:
        if any(path.is_relative_to(hidden) for hidden in HIDDEN_FROM_SERVICE):
            raise UserError(f"the system service cannot run {path} (its sandbox hides "
                            f"{', '.join(HIDDEN_FROM_SERVICE)}); install edgevoice in "
                            "/opt/edgevoice (python3 -m venv /opt/edgevoice) and run "
                            "/opt/edgevoice/bin/edgevoice install-units --system")
    unit = with_command((source / SYSTEM_UNIT).read_text(), "ExecStart", f"{quoted(exe)} run")
    etc = root / "etc"
    return [Planned(etc / "systemd" / "system" / USER_UNIT, _stamp(exe) + unit),
            Planned(etc / "sysusers.d" / "edgevoice.conf", (source / SYSUSERS).read_text()),
            Planned(etc / "edgevoice" / "config.yaml", render_example(), keep_existing=True)]


def _current(path: Path) -> Optional[str]:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError):
        return ""  # a folder, unreadable or binary: differs from anything we would write


def install(plan: Sequence[Planned], *, force: bool) -> list[tuple[str, Path]]:
    """Write the plan atomically, all or nothing on conflicts: ``(what happened, path)`` each."""
    from edgevoice.modelstore.fsutil import atomic_write_bytes

    differ = [str(p.path) for p in plan
              if not p.keep_existing and _current(p.path) not in (None, p.text)]
    if differ and not force:
        one = len(differ) == 1
        raise UserError(f"{', '.join(differ)} already exist{'s' if one else ''} with other "
                        f"content; pass --force to replace {'it' if one else 'them'}")
    done = []
    for p in plan:
        current = _current(p.path)
        if current == p.text:
            done.append(("up to date", p.path))
        elif current is not None and p.keep_existing:
            done.append(("kept", p.path))
        else:
            try:
                atomic_write_bytes(p.path, p.text.encode("utf-8"))
            except OSError as exc:
                raise UserError(f"cannot write {p.path}: {exc.strerror or exc}") from None
            done.append(("installed", p.path))
    return done


# ---------------------------------------------------------------------------------------------


def register(sub, common: argparse.ArgumentParser, config_actions) -> None:
    """`config example` (under the existing `config` command) and `install-units`."""
    c = config_actions.add_parser(
        "example", parents=[common],
        help="print config.example.yaml: every key at its default, documented")
    c.add_argument("-o", "--output", metavar="PATH",
                   help="write it to PATH (atomically; parent folders are created)")
    c.add_argument("--force", action="store_true", help="replace PATH when it exists")
    c.set_defaults(func=cmd_config_example)

    p = sub.add_parser("install-units", parents=[common],
                       help="install the systemd unit and the tray autostart entry")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--user", action="store_true",
                       help="(the default) the user unit in ~/.config/systemd/user and the tray "
                            "entry in ~/.config/autostart ($XDG_CONFIG_HOME)")
    where.add_argument("--system", action="store_true",
                       help="the system service (root): /etc/systemd/system/edgevoice.service, "
                            "/etc/sysusers.d/edgevoice.conf, /etc/edgevoice/config.yaml if absent")
    where.add_argument("--print-dir", action="store_true",
                       help="print the folder holding this install's packaging files and stop")
    p.add_argument("--no-tray", action="store_true", help="with --user: no tray autostart entry")
    p.add_argument("--root", metavar="DIR",
                   help="with --system: install into the root file system of an image at DIR")
    p.add_argument("--executable", metavar="PATH",
                   help="the edgevoice program the units run (default: this install's)")
    p.add_argument("--force", action="store_true", help="replace files that differ")
    p.set_defaults(func=cmd_install_units)


def cmd_config_example(args) -> int:
    from edgevoice.config import render_example

    if not args.output:
        sys.stdout.write(render_example())
        return 0
    [(what, path)] = install([Planned(Path(args.output), render_example())], force=args.force)
    print(f"{what}: {path}")
    return 0


def cmd_install_units(args) -> int:
    if args.print_dir:
        print(packaged_dir())
        return 0
    if args.root and not args.system:
        raise UserError("--root is for --system (an image's root file system)")
    if args.no_tray and args.system:
        raise UserError("--no-tray is for --user (the system service has no tray)")
    exe, source = find_executable(args.executable), packaged_dir()
    if args.system:
        if args.root is None and os.geteuid() != 0:
            raise UserError("installing the system service writes to /etc and needs root: "
                            f"sudo {exe} install-units --system")
        root = Path(args.root or "/")
        done = install(system_plan(exe, source, root), force=args.force)
    else:
        done = install(user_plan(exe, source, tray=not args.no_tray), force=args.force)
    for what, path in done:
        print(f"{what}: {path}")
    if args.system and args.root:
        print(f"next, in the image: systemd-sysusers --root={args.root} && "
              f"systemctl --root={args.root} enable edgevoice")
    elif args.system:
        print("next: set audio.input_device/output_device in /etc/edgevoice/config.yaml, then "
              "systemd-sysusers && systemctl daemon-reload && systemctl enable --now edgevoice")
    else:
        print("next: systemctl --user daemon-reload && systemctl --user enable --now edgevoice")
        if not args.no_tray and importlib.util.find_spec("pystray") is None:
            print("the tray entry needs the tray extra: pip install 'edgevoice[tray]'")
    return 0
