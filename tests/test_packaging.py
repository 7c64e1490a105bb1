"""The files in packaging/: systemd units verified by systemd itself, the autostart entry by
desktop-file-validate, the service account by systemd-sysusers, and the unit's environment
checked against where the code actually puts models, state, cache and the control socket."""

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
