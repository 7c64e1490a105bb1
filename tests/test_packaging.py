"""The files in packaging/: systemd units verified by systemd itself, the autostart entry by
desktop-file-validate, the service account by systemd-sysusers, and the unit's environment
checked against where the code actually puts models, state, cache and the control socket; and
what a pip user gets instead of a checkout: the wheel's copy of packaging/, `edgevoice config
example` and `edgevoice install-units`, run from a wheel installed into a fresh venv."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGING = Path(__file__).resolve().parents[1] / "packaging"
USER_UNIT = PACKAGING / "edgevoice.service"
SYSTEM_UNIT = PACKAGING / "edgevoice-system.service"
DESKTOP = PACKAGING / "edgevoice-tray.desktop"
SYSUSERS = PACKAGING / "edgevoice.sysusers"


def directives(unit: Path) -> dict[str, list[str]]:
    """``Key`` -> every value it is given (units repeat keys such as Environment=)."""
    out: dict[str, list[str]] = {}
    for line in unit.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")) and "=" in line:
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def unit_environment(unit: Path) -> dict[str, str]:
    env = {}
    for value in directives(unit).get("Environment", []):
        for item in value.split():
            key, _, val = item.partition("=")
            env[key] = val
    return env


def needs(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed (Debian: apt-get install "
                    f"{'desktop-file-utils' if tool.startswith('desktop') else 'systemd'})")
    return path


def a_real_executable() -> str:
    """`systemd-analyze verify` insists that ExecStart's binary exists: use this venv's one."""
    candidate = Path(sys.executable).with_name("edgevoice")
    return str(candidate) if candidate.is_file() else shutil.which("true") or "/bin/true"


def verify(unit: Path, env: dict[str, str], *user: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([needs("systemd-analyze"), *user, "verify", str(unit)],
                          capture_output=True, text=True, timeout=60, env={**os.environ, **env})


def test_system_unit_verifies(tmp_path):
    text = SYSTEM_UNIT.read_text()
    assert "\nExecStart=/opt/edgevoice/bin/edgevoice run\n" in text
    copy = tmp_path / "edgevoice.service"  # installed under this name
    copy.write_text(text.replace("/opt/edgevoice/bin/edgevoice", a_real_executable()))
    out = verify(copy, {})
    assert out.returncode == 0 and not out.stderr.strip(), out.stderr


def test_user_unit_verifies(tmp_path):
    home, runtime = tmp_path / "home", tmp_path / "run"
    (home / ".local" / "bin").mkdir(parents=True)
    runtime.mkdir(mode=0o700)
    (home / ".local" / "bin" / "edgevoice").symlink_to(a_real_executable())
    out = verify(USER_UNIT, {"HOME": str(home), "XDG_RUNTIME_DIR": str(runtime)}, "--user")
    assert out.returncode == 0 and not out.stderr.strip(), out.stderr


def test_units_restart_notify_and_harden():
    user, system = directives(USER_UNIT), directives(SYSTEM_UNIT)
    assert user["ExecStart"] == ["%h/.local/bin/edgevoice run"]
    for d in (user, system):
        assert d["Type"] == ["notify"] and d["Restart"] == ["on-failure"]
    assert system["User"] == ["edgevoice"] and system["SupplementaryGroups"] == ["audio"]
    assert float(system["WatchdogSec"][0]) > 0
    for key, value in {"ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
                       "NoNewPrivileges": "yes", "StateDirectory": "edgevoice",
                       "DevicePolicy": "closed", "DeviceAllow": "char-alsa rw"}.items():
        assert system[key] == [value], key
    env = unit_environment(SYSTEM_UNIT)
    assert env["EDGEVOICE_CONFIG"] == "/etc/edgevoice/config.yaml"
    assert env["EDGEVOICE_MODELS_DIR"] == "/var/lib/edgevoice/models"


def test_system_unit_exposure_stays_low(tmp_path):
    """systemd's own hardening score (0 = locked down, 10 = none); 3.0 is the bar we keep."""
    copy = tmp_path / "edgevoice.service"
    copy.write_text(SYSTEM_UNIT.read_text().replace("/opt/edgevoice/bin/edgevoice",
                                                    a_real_executable()))
    out = subprocess.run([needs("systemd-analyze"), "security", "--offline=yes", "--no-pager",
                          str(copy)], capture_output=True, text=True, timeout=60)
    if "--offline" in out.stderr or "unrecognized option" in out.stderr:
        pytest.skip("systemd-analyze security --offline needs systemd >= 250")
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", out.stdout)
    assert match, out.stdout[-2000:] + out.stderr
    assert float(match[1]) <= 3.0, out.stdout


def test_unit_directories_match_where_the_code_writes(monkeypatch):
    """platformdirs under the unit's environment lands in the directories the unit creates."""
    from edgevoice.config import Config, Paths

    for key in ("XDG_DATA_HOME", "XDG_STATE_HOME", "XDG_CACHE_HOME", "XDG_RUNTIME_DIR"):
        monkeypatch.delenv(key, raising=False)
    for key, value in unit_environment(SYSTEM_UNIT).items():
        monkeypatch.setenv(key, value)
    paths = Paths.from_config(Config())
    assert paths.models == Path("/var/lib/edgevoice/models")
    assert paths.logs.is_relative_to("/var/lib/edgevoice")  # StateDirectory=edgevoice
    assert paths.cache == Path("/var/cache/edgevoice")  # CacheDirectory=edgevoice
    system = directives(SYSTEM_UNIT)
    assert system["CacheDirectory"] == ["edgevoice"] and system["RuntimeDirectory"] == [
        "edgevoice"]
    # XDG_RUNTIME_DIR must be private (0700) or platformdirs falls back to /tmp, which
    # PrivateTmp= hides from `edgevoice ctl`.
    assert system["RuntimeDirectoryMode"] == ["0700"]
    import platformdirs

    runtime = Path(platformdirs.user_runtime_dir("edgevoice"))
    assert runtime.is_relative_to("/run/edgevoice")


def test_desktop_entry_validates():
    out = subprocess.run([needs("desktop-file-validate"), str(DESKTOP)], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 0 and not out.stdout.strip(), out.stdout + out.stderr
    assert "\nExec=edgevoice tray\n" in DESKTOP.read_text()


def test_sysusers_creates_the_account_in_the_audio_group(tmp_path):
    tool = needs("systemd-sysusers")
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (etc / "group").write_text("root:x:0:\naudio:x:29:\n")
    (etc / "shadow").write_text("root:*:19000:0:99999:7:::\n")
    (etc / "gshadow").write_text("root:*::\naudio:*::\n")
    out = subprocess.run([tool, f"--root={tmp_path}", str(SYSUSERS)], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    user = next(line for line in (etc / "passwd").read_text().splitlines()
                if line.startswith("edgevoice:"))
    assert user.split(":")[5] == "/var/lib/edgevoice"
    audio = next(line for line in (etc / "group").read_text().splitlines()
                 if line.startswith("audio:"))
    assert "edgevoice" in audio.split(":")[3].split(",")


def test_check_dist_script_is_executable_shell():
    script = PACKAGING / "check-dist.sh"
    assert os.access(script, os.X_OK)
    out = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


# --- what pip users get instead of a checkout: `config example`, `install-units`, the wheel ---

ROOT = PACKAGING.parent
# What setup.py copies into the wheel: what users install; build tooling stays in the checkout.
SHIPPED = sorted(p.name for p in PACKAGING.iterdir()
                 if p.is_file() and p.suffix in (".service", ".desktop", ".sysusers", ".md"))


def test_shipped_packaging_files_are_what_install_units_needs():
    from edgevoice import packaging_files as pf

    for name in (pf.USER_UNIT, pf.SYSTEM_UNIT, pf.TRAY_ENTRY, pf.SYSUSERS, "EMBEDDED.md"):
        assert name in SHIPPED, name


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    from edgevoice.cli import main

    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.fixture
def xdg_home(tmp_path, monkeypatch) -> Path:
    """A private HOME and XDG base dirs: nothing a test installs lands in the real home."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "cfg"))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / "data"))
    return home


def exec_lines(text: str, key: str) -> list[str]:
    return [line.split("=", 1)[1] for line in text.splitlines() if line.startswith(f"{key}=")]


def same_but_exec(installed: str, source: str, key: str) -> bool:
    """The installed file is the packaged one with only the stamp and its ``key=`` line changed."""
    def rest(text: str) -> list[str]:
        return [line for line in text.splitlines()
                if not line.startswith((f"{key}=", "# Installed by `edgevoice install-units`"))]
    return rest(installed) == rest(source)


def verify_user_unit(unit: Path, tmp_path: Path) -> None:
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700, exist_ok=True)
    out = verify(unit, {"HOME": str(tmp_path / "home"), "XDG_RUNTIME_DIR": str(runtime)},
                 "--user")
    assert out.returncode == 0 and not out.stderr.strip(), out.stderr


def test_config_example_is_the_example_file_and_passes_check(tmp_path, capsys):
    rc, out, _ = cli(capsys, "config", "example")
    assert rc == 0 and out == (ROOT / "config.example.yaml").read_text()
    written = tmp_path / "config.yaml"
    written.write_text(out)  # `edgevoice config example > config.yaml`
    rc, out, err = cli(capsys, "config", "check", str(written))
    assert rc == 0 and out.strip() == f"{written}: OK", err


def test_config_example_output_is_atomic_and_refuses_to_overwrite(tmp_path, capsys):
    target = tmp_path / "new" / "dir" / "config.yaml"
    rc, out, _ = cli(capsys, "config", "example", "-o", str(target))
    assert rc == 0 and out.strip() == f"installed: {target}"
    assert target.read_text() == (ROOT / "config.example.yaml").read_text()
    target.write_text("llm:\n  policy: auto\n")
    rc, out, err = cli(capsys, "config", "example", "-o", str(target))
    assert rc == 2 and "--force" in err and len(err.strip().splitlines()) == 1, err
    assert target.read_text() == "llm:\n  policy: auto\n"
    rc, _, _ = cli(capsys, "config", "example", "-o", str(target), "--force")
    assert rc == 0 and target.read_text() == (ROOT / "config.example.yaml").read_text()
    assert [p.name for p in target.parent.iterdir()] == ["config.yaml"]  # no temp files left


def test_install_units_user_writes_the_unit_and_the_autostart_entry(xdg_home, tmp_path, capsys):
    exe = a_real_executable()
    rc, out, err = cli(capsys, "install-units", "--user", "--executable", exe)
    assert rc == 0, err
    unit = xdg_home / "cfg" / "systemd" / "user" / "edgevoice.service"
    entry = xdg_home / "cfg" / "autostart" / "edgevoice-tray.desktop"
    assert f"installed: {unit}" in out and f"installed: {entry}" in out
    assert "systemctl --user enable --now edgevoice" in out
    assert exec_lines(unit.read_text(), "ExecStart") == [f"{exe} run"]
    assert same_but_exec(unit.read_text(), USER_UNIT.read_text(), "ExecStart")
    assert exec_lines(entry.read_text(), "Exec") == [f"{exe} tray"]
    assert same_but_exec(entry.read_text(), DESKTOP.read_text(), "Exec")
    assert not (xdg_home / "data").exists() and not (xdg_home / ".config").exists()
    verify_user_unit(unit, tmp_path)
    out = subprocess.run([needs("desktop-file-validate"), str(entry)], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 0 and not out.stdout.strip(), out.stdout + out.stderr


def test_install_units_refuses_to_overwrite_changed_files(xdg_home, capsys):
    exe = a_real_executable()
    assert cli(capsys, "install-units", "--executable", exe)[0] == 0
    unit = xdg_home / "cfg" / "systemd" / "user" / "edgevoice.service"
    entry = xdg_home / "cfg" / "autostart" / "edgevoice-tray.desktop"
    rc, out, _ = cli(capsys, "install-units", "--executable", exe)
    assert rc == 0 and f"up to date: {unit}" in out and f"up to date: {entry}" in out
    entry.unlink()
    unit.write_text(unit.read_text() + "# mine\n")
    rc, out, err = cli(capsys, "install-units", "--executable", exe)
    assert rc == 2 and str(unit) in err and "--force" in err, err
    assert len(err.strip().splitlines()) == 1
    assert unit.read_text().endswith("# mine\n") and not entry.exists()  # all or nothing
    rc, out, _ = cli(capsys, "install-units", "--executable", exe, "--force")
    assert rc == 0 and not unit.read_text().endswith("# mine\n") and entry.is_file()
    assert cli(capsys, "install-units", "--no-tray", "--executable", "/x/bin/edgevoice",
               "--force")[0] == 0
    assert exec_lines(unit.read_text(), "ExecStart") == ["/x/bin/edgevoice run"]
    assert exec_lines(entry.read_text(), "Exec") == [f"{exe} tray"]  # --no-tray left it


def test_install_units_runs_the_edgevoice_program_it_was_started_as(xdg_home, tmp_path, capsys,
                                                                     monkeypatch):
    program = tmp_path / "some venv" / "bin" / "edgevoice"
    program.parent.mkdir(parents=True)
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    monkeypatch.setattr(sys, "argv", [str(program), "install-units"])
    assert cli(capsys, "install-units")[0] == 0
    unit = (xdg_home / "cfg" / "systemd" / "user" / "edgevoice.service").read_text()
    assert exec_lines(unit, "ExecStart") == [f'"{program}" run']  # quoted: a space in the path
    entry = (xdg_home / "cfg" / "autostart" / "edgevoice-tray.desktop").read_text()
    assert exec_lines(entry, "Exec") == [f'"{program}" tray']
    rc, _, err = cli(capsys, "install-units", "--executable", "/opt/a$b/edgevoice", "--force")
    assert rc == 2 and "--executable" in err and "\n" not in err.strip()


def test_install_units_without_a_program_path_uses_the_recorded_script(xdg_home, capsys,
                                                                       monkeypatch):
    """Started as `python -m edgevoice`: the console script pip recorded for this install."""
    from edgevoice.packaging_files import find_executable

    script = Path(sys.executable).with_name("edgevoice")  # where pip puts it in a venv
    if not script.is_file():
        pytest.skip("edgevoice is not installed in this venv (pip install -e .)")
    monkeypatch.setattr(sys, "argv", [str(ROOT / "edgevoice" / "__main__.py")])
    monkeypatch.setenv("PATH", "/nonexistent")  # not found by a PATH search
    found = find_executable()
    assert found.is_absolute() and found.samefile(script), found


def test_install_units_system_needs_root_and_writes_under_root(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    rc, out, err = cli(capsys, "install-units", "--system", "--executable",
                       "/opt/edgevoice/bin/edgevoice")
    assert rc == 2 and "sudo /opt/edgevoice/bin/edgevoice install-units --system" in err, err
    image = tmp_path / "image"
    program = shutil.which("true") or "/bin/true"  # verify wants ExecStart's binary to exist
    rc, out, err = cli(capsys, "install-units", "--system", "--root", str(image),
                       "--executable", program)
    assert rc == 0, err
    unit = image / "etc" / "systemd" / "system" / "edgevoice.service"
    sysusers = image / "etc" / "sysusers.d" / "edgevoice.conf"
    config = image / "etc" / "edgevoice" / "config.yaml"
    for path in (unit, sysusers, config):
        assert f"installed: {path}" in out
    assert exec_lines(unit.read_text(), "ExecStart") == [f"{program} run"]
    assert same_but_exec(unit.read_text(), SYSTEM_UNIT.read_text(), "ExecStart")
    assert sysusers.read_text() == SYSUSERS.read_text()
    assert config.read_text() == (ROOT / "config.example.yaml").read_text()
    out = verify(unit, {})
    assert out.returncode == 0 and not out.stderr.strip(), out.stderr
    config.write_text("audio:\n  input_device: 'hw:1,0'\n")
    rc, out, _ = cli(capsys, "install-units", "--system", "--root", str(image), "--executable",
                     program, "--force")
    assert rc == 0 and f"kept: {config}" in out  # the admin's config is never replaced
    assert config.read_text() == "audio:\n  input_device: 'hw:1,0'\n"
    rc, _, err = cli(capsys, "install-units", "--system", "--root", str(image), "--executable",
                     "/home/me/venv/bin/edgevoice")
    assert rc == 2 and "/opt/edgevoice" in err  # ProtectHome= would hide it from the service


def test_packaged_files_are_the_packaging_folder():
    """An editable install reads packaging/ itself; an installed wheel its copy of it."""
    from edgevoice.packaging_files import packaged_dir

    folder = packaged_dir()
    for name in SHIPPED:
        assert (folder / name).read_bytes() == (PACKAGING / name).read_bytes(), name


def _build_requirements_missing() -> str | None:
    from importlib import metadata

    try:
        import build  # noqa: F401
        import wheel  # noqa: F401
        major = int(metadata.version("setuptools").split(".")[0])
    except (ImportError, metadata.PackageNotFoundError):
        major = 0
    return None if major >= 77 else "needs build, wheel and setuptools>=77 (the test extra)"


@pytest.fixture(scope="module")
def built_wheel(tmp_path_factory) -> Path:
    """sdist, then the wheel from the sdist (as a release is built), from a copy of the tree."""
    missing = _build_requirements_missing()
    if missing:
        pytest.skip(missing)
    work = tmp_path_factory.mktemp("dist")
    src = work / "src"
    junk = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__",
                                  ".pytest_cache", ".ruff_cache", ".hypothesis", "*.pyc")
    shutil.copytree(ROOT, src, ignore=junk)
    out = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir",
                          str(work / "out"), str(src)], capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    [wheel] = (work / "out").glob("edgevoice-*.whl")
    return wheel


def test_wheel_carries_the_packaging_files(built_wheel):
    import zipfile

    with zipfile.ZipFile(built_wheel) as wheel:
        names = set(wheel.namelist())
        for name in SHIPPED:
            assert f"edgevoice/packaging/{name}" in names, name
            assert wheel.read(f"edgevoice/packaging/{name}") == (PACKAGING / name).read_bytes()
        packaged = sorted(n.removeprefix("edgevoice/packaging/") for n in names
                          if n.startswith("edgevoice/packaging/"))
        assert packaged == SHIPPED  # no build tooling (check-dist.sh, CMake includes...)


def test_commands_work_from_an_installed_wheel(built_wheel, tmp_path):
    """`pip install --no-deps dist/edgevoice-*.whl` into a fresh venv; the dependencies come
    from this interpreter's site-packages (a .pth), not from a download."""
    import sysconfig
    import venv

    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    # Away from the checkout (its edgevoice.egg-info would read as "already installed").
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install",
                          "--no-deps", "--no-index", str(built_wheel)], capture_output=True,
                         text=True, timeout=300, cwd=tmp_path, env=env)
    assert out.returncode == 0 and "Successfully installed" in out.stdout, out.stdout + out.stderr
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()"
                           "['purelib'])"], capture_output=True, text=True, check=True)
    deps = {sysconfig.get_paths()[k] for k in ("purelib", "platlib")}
    Path(site.stdout.strip(), "zz-test-deps.pth").write_text("\n".join(sorted(deps)) + "\n")
    home = tmp_path / "home"
    home.mkdir()
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / "cfg"))
    program = env_dir / "bin" / "edgevoice"

    def run(*argv: str) -> str:
        done = subprocess.run([str(program), *argv], capture_output=True, text=True, env=env,
                              cwd=tmp_path, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout

    folder = Path(run("install-units", "--print-dir").strip())
    assert folder.is_relative_to(env_dir) and folder.name == "packaging", folder
    assert sorted(p.name for p in folder.iterdir()) == SHIPPED
    assert run("config", "example") == (ROOT / "config.example.yaml").read_text()
    run("install-units", "--user")
    unit = home / "cfg" / "systemd" / "user" / "edgevoice.service"
    assert exec_lines(unit.read_text(), "ExecStart") == [f"{program} run"]
    verify_user_unit(unit, tmp_path)
