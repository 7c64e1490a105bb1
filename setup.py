"""setuptools hook (the metadata is in pyproject.toml): the wheel carries `packaging/`.

pip users have no checkout, yet `edgevoice install-units` needs the systemd units, the tray's
autostart entry and the service account file. They are copied from the top-level `packaging/`
(the one source; the sdist carries it) into the built package as `edgevoice/packaging/`, so the
copy can never drift and nothing is written into the checkout. Editable installs skip the copy:
they read the checkout's folder (`edgevoice.packaging_files.packaged_dir`). Only what a user
installs ships (by suffix); build tooling kept there (scripts, CMake includes) needs the
checkout anyway. tests/test_packaging.py and packaging/check-dist.sh hold the wheel to this.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

SOURCE = Path(__file__).resolve().parent / "packaging"
TARGET = ("edgevoice", "packaging")
SUFFIXES = (".service", ".desktop", ".sysusers", ".md")


def shipped() -> list[Path]:
    """The files of `packaging/` that go into the wheel: units, autostart entry, account, docs."""
    return sorted(p for p in SOURCE.iterdir() if p.is_file() and p.suffix in SUFFIXES)


class BuildPyWithPackaging(build_py):
    """build_py, plus the copy of `packaging/` inside the package."""

    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return
        target = Path(self.build_lib, *TARGET)
        self.mkpath(str(target))
        for src in shipped():
            self.copy_file(str(src), str(target / src.name), preserve_mode=False)

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        outputs = super().get_outputs(include_bytecode)
        if self.editable_mode:
            return outputs
        return outputs + [str(Path(self.build_lib, *TARGET, p.name)) for p in shipped()]


setup(cmdclass={"build_py": BuildPyWithPackaging})
