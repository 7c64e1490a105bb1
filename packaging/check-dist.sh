#!/usr/bin/env bash
# Build the sdist and the wheel as a release would and check them: `python -m build` (the wheel
# is built from the sdist, so a file missing from the sdist breaks it), `twine check` (metadata,
# README rendering), then what each archive must contain. Builds from a copy of the source tree
# (tracked and untracked-but-not-ignored files, i.e. what a commit holds) in a temp dir, so the
# checkout is never written to. Needs `build` and `twine` (the test extra).
#   packaging/check-dist.sh              # uses .venv/bin/python
#   PYTHON=python3 packaging/check-dist.sh
#   KEEP_DIST=dist packaging/check-dist.sh   # also copy the archives there
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-$root/.venv/bin/python}
work=$(mktemp -d "${TMPDIR:-/tmp}/edgevoice-dist.XXXXXX")
trap 'rm -rf "$work"' EXIT

"$py" - "$root" "$work/src" <<'PY'
"""Copy what a commit would hold (git's view when this is a checkout, else all but junk)."""
import os, shutil, subprocess, sys
from pathlib import Path

root, dest = Path(sys.argv[1]), Path(sys.argv[2])
try:
    listing = subprocess.run(
        ["git", "-C", str(root), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        check=True, capture_output=True).stdout.decode().split("\0")
    files = [f for f in listing if f and (root / f).is_file()]
except (OSError, subprocess.CalledProcessError):
    junk = {".git", ".venv", "build", "dist", "__pycache__", ".pytest_cache", ".ruff_cache"}
    files = [str(p.relative_to(root)) for p in root.rglob("*")
             if p.is_file() and not junk & set(p.relative_to(root).parts)]
for name in files:
    (dest / name).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(root / name, dest / name)
print(f"check-dist: {len(files)} files copied to {dest}")
PY

"$py" -m build --quiet --outdir "$work/dist" "$work/src"
"$py" -m twine check --strict "$work"/dist/*

"$py" - "$work/src" "$work/dist" <<'PY'
"""Each archive holds what it must: the wheel every file of the package plus the copy of
packaging/ that setup.py puts in it (for `edgevoice install-units`), the sdist the package plus
config example, units, tests and benchmarks; names carry the package version."""
import re, sys, tarfile, zipfile
from pathlib import Path

src, dist = Path(sys.argv[1]), Path(sys.argv[2])
version = re.search(r'__version__ = "([^"]+)"', (src / "edgevoice/__init__.py").read_text())[1]
wheels, sdists = list(dist.glob("*.whl")), list(dist.glob("*.tar.gz"))
problems = []
if len(wheels) != 1 or len(sdists) != 1:
    sys.exit(f"check-dist: expected one wheel and one sdist, got {wheels + sdists}")
wheel, sdist = wheels[0], sdists[0]
for archive in (wheel, sdist):
    if f"-{version}" not in archive.name:
        problems.append(f"{archive.name} does not carry version {version}")

def tracked(folder):
    return {str(p.relative_to(src)) for p in (src / folder).rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}

in_wheel = set(zipfile.ZipFile(wheel).namelist())
for name in sorted(tracked("edgevoice") - in_wheel):
    problems.append(f"wheel lacks {name}")
for name in in_wheel:
    if not (name.startswith("edgevoice/") or ".dist-info/" in name):
        problems.append(f"wheel carries {name} (only the edgevoice package belongs there)")
shipped = (".service", ".desktop", ".sysusers", ".md")  # setup.py's SUFFIXES; tooling stays out
for source in sorted((src / "packaging").iterdir()):
    member = f"edgevoice/packaging/{source.name}"
    if not source.is_file() or source.suffix not in shipped:
        if member in in_wheel:
            problems.append(f"wheel carries {member} (build tooling belongs in the checkout)")
    elif member not in in_wheel:
        problems.append(f"wheel lacks {member} (setup.py copies packaging/ into the package)")
    elif zipfile.ZipFile(wheel).read(member) != source.read_bytes():
        problems.append(f"wheel's {member} differs from packaging/{source.name}")
if not any(n.endswith(".dist-info/licenses/LICENSE") for n in in_wheel):
    problems.append("wheel lacks the LICENSE")
info = next(n for n in in_wheel if n.endswith(".dist-info/entry_points.txt"))
if "edgevoice = edgevoice.cli:main" not in zipfile.ZipFile(wheel).read(info).decode():
    problems.append("wheel lacks the `edgevoice` console script")

top = sdist.name[: -len(".tar.gz")]
in_sdist = {n.split("/", 1)[1] for n in tarfile.open(sdist).getnames() if "/" in n}
wanted = set().union(*(tracked(d) for d in ("edgevoice", "tests", "packaging", "benchmarks")))
wanted |= {"README.md", "pyproject.toml", "setup.py", "config.example.yaml", "Makefile",
           "MANIFEST.in", "models/README.md", "LICENSE"}
for name in sorted(wanted - in_sdist):
    problems.append(f"sdist lacks {name}")

if problems:
    sys.exit("check-dist: FAILED\n  " + "\n  ".join(problems))
print(f"check-dist: OK: {wheel.name} ({len(in_wheel)} files), {sdist.name} ({len(in_sdist)} "
      "files)")
PY

if [ -n "${KEEP_DIST:-}" ]; then
    mkdir -p "$KEEP_DIST" && cp "$work"/dist/* "$KEEP_DIST"/
fi
