"""The models dir: what is installed, where, and whether it is still intact.

Layout (``ROOT`` is ``paths.models_dir``; models sit directly in it, so a file or folder
copied there by hand works as before)::

    ROOT/gemma-2-2b-it-Q4_K_M.gguf          a model file (catalog ``target``)
    ROOT/vosk-model-small-en-us-0.15/       a model folder (from a zip)
    ROOT/pins.json                          sha256 pinned by first downloads (trust on first use)
    ROOT/.edgevoice/installed/NAME.json     manifest: source, checksum, every file's sha256
    ROOT/.edgevoice/downloads/NAME.part     an unfinished download (resumable) + .part.json
    ROOT/.edgevoice/licenses.json           licences accepted for downloads into this dir
    ROOT/.edgevoice/tmp/, locks/            unpacking area (same file system), pull locks

Every state file is written atomically (temp file, fsync, rename).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

from edgevoice.errors import UserError
from edgevoice.modelstore.catalog import CatalogEntry
from edgevoice.modelstore.errors import DownloadError
from edgevoice.modelstore.fsutil import atomic_write_bytes, fsync_dir, sha256_file

STATE_DIR = ".edgevoice"
PINS_FILE = "pins.json"


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()


@dataclass(frozen=True)
class FileRecord:
    size: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    """What `pull` installed: enough to verify it later without the catalog or the network."""

    name: str
    kind: str
    url: str
    sha256: str
    """Of the download (the archive, for zips)."""
    size: int
    target: str
    archive: Optional[str]
    trust: str
    """``catalog`` (sha256 from the catalog) or ``pin`` (trusted on first download)."""
    installed_at: str
    files: dict[str, FileRecord] = field(default_factory=dict)
    """Relative to the target folder (or ``{target: ...}`` for a single file)."""

    def to_json(self) -> dict:
        data = asdict(self)
        data["files"] = {k: asdict(v) for k, v in self.files.items()}
        return data

    @classmethod
    def from_json(cls, data: dict) -> Manifest:
        files = {k: FileRecord(**v) for k, v in data.get("files", {}).items()}
        return cls(**{**data, "files": files})


@dataclass(frozen=True)
class Verdict:
    name: str
    status: str
    """``ok``, ``failed``, ``missing`` or ``unverifiable``."""
    path: Path
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def hash_tree(folder: Path) -> dict[str, FileRecord]:
    """sha256 and size of every regular file under ``folder`` (symlinks are not followed)."""
    records = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for fname in sorted(filenames):
            path = Path(dirpath) / fname
            if path.is_symlink() or not path.is_file():
                continue
            rel = path.relative_to(folder).as_posix()
            records[rel] = FileRecord(size=path.stat().st_size, sha256=sha256_file(path))
    return records


class ModelStore:
    """One models dir. Cheap to create; touches the disk only when asked."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).expanduser()
        self.state = self.root / STATE_DIR

    # -- places -----------------------------------------------------------------------------------

    @property
    def pins_path(self) -> Path:
        return self.root / PINS_FILE

    @property
    def licenses_path(self) -> Path:
        return self.state / "licenses.json"

    def path_for(self, entry: CatalogEntry) -> Path:
        return self.root / entry.target

    def part_path(self, name: str) -> Path:
        return self.state / "downloads" / f"{name}.part"

    def _manifest_path(self, name: str) -> Path:
        return self.state / "installed" / f"{name}.json"

    def new_tmp_dir(self) -> Path:
        """A private directory on the models dir's file system (renames out of it are atomic)."""
        base = self.state / "tmp"
        base.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix="unpack-", dir=base))

    # -- manifests --------------------------------------------------------------------------------

    def manifest(self, name: str) -> Optional[Manifest]:
        try:
            data = json.loads(self._manifest_path(name).read_text(encoding="utf-8"))
            return Manifest.from_json(data)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError) as exc:
            raise UserError(f"model manifest {self._manifest_path(name)} is unreadable ({exc}); "
                            f"`edgevoice models rm {name}` and pull it again") from None

    def manifests(self) -> list[Manifest]:
        folder = self.state / "installed"
        if not folder.is_dir():
            return []
        return [m for p in sorted(folder.glob("*.json")) if (m := self.manifest(p.stem))]

    def write_manifest(self, manifest: Manifest) -> None:
        text = json.dumps(manifest.to_json(), indent=2, sort_keys=True) + "\n"
        atomic_write_bytes(self._manifest_path(manifest.name), text.encode())

    def installed_path(self, name: str) -> Optional[Path]:
        """Where model ``name`` is if `pull` installed it and it is still there."""
        manifest = self.manifest(name)
        if manifest is None:
            return None
        path = self.root / manifest.target
        return path if path.exists() else None

    def status(self, entry: CatalogEntry) -> str:
        """``installed`` (by `pull`), ``present`` (put there by hand) or ``missing``."""
        if not self.path_for(entry).exists():
            return "missing"
        manifest = self.manifest(entry.name)
        return "installed" if manifest and manifest.target == entry.target else "present"

    # -- pins -------------------------------------------------------------------------------------

    def pins(self) -> dict:
        try:
            data = json.loads(self.pins_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise UserError(f"pins file {self.pins_path} is unreadable ({exc}); fix or delete "
                            "it (deleting it means trusting the next download again)") from None
        return data.get("pins", {}) if isinstance(data, dict) else {}

    def pin_for(self, url: str) -> Optional[dict]:
        return self.pins().get(url)

    def add_pin(self, name: str, url: str, sha256: str, size: int) -> None:
        pins = self.pins()
        pins[url] = {"name": name, "sha256": sha256, "size": size, "pinned_at": now_iso()}
        doc = {"about": "sha256 of downloads the catalog gave no checksum for, trusted on first "
                        "download (edgevoice models pull); later downloads must match",
               "pins": pins}
        atomic_write_bytes(self.pins_path, (json.dumps(doc, indent=2, sort_keys=True) + "\n")
                           .encode())

    # -- lock -------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self, name: str) -> Iterator[None]:
        """One pull/rm of a model at a time per models dir (two terminals, a cron job ...)."""
        import fcntl

        folder = self.state / "locks"
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / f"{name}.lock", "w") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise DownloadError(f"another edgevoice process is pulling or removing {name} in "
                                    f"{self.root}; wait for it to finish") from None
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # -- install / remove -------------------------------------------------------------------------

    def place(self, source: Path, entry: CatalogEntry) -> Path:
        """Move a verified file or unpacked folder to its final name, replacing an old one."""
        dest = self.path_for(entry)
        self.root.mkdir(parents=True, exist_ok=True)
        if source.is_dir() and (dest.exists() or dest.is_symlink()):
            old = self.new_tmp_dir() / "old"
            os.replace(dest, old)  # folders can't be replaced in one step: move the old aside
            os.replace(source, dest)
            shutil.rmtree(old.parent, ignore_errors=True)
        else:
            if dest.is_dir() and not dest.is_symlink():
                shutil.rmtree(dest)
            os.replace(source, dest)
        fsync_dir(self.root)
        return dest

    def remove(self, name: str, entry: Optional[CatalogEntry]) -> Path:
        """Delete an installed model (file or folder), its manifest and any partial download."""
        manifest = self.manifest(name)
        target = manifest.target if manifest else entry.target if entry else None
        if target is None:
            raise UserError(f"model {name} is not installed in {self.root} and not in the catalog")
        path = self.root / target
        if not path.exists() and not path.is_symlink() and manifest is None:
            raise UserError(f"model {name} is not installed in {self.root}")
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
        self._manifest_path(name).unlink(missing_ok=True)
        part = self.part_path(name)
        part.unlink(missing_ok=True)
        part.with_name(part.name + ".json").unlink(missing_ok=True)
        return path

    # -- verify -----------------------------------------------------------------------------------

    def verify(self, name: str, entry: Optional[CatalogEntry]) -> Verdict:
        """Re-hash an installed model against its manifest (and the catalog / pin)."""
        manifest = self.manifest(name)
        if manifest is None:
            return self._verify_unmanaged(name, entry)
        path = self.root / manifest.target
        if not path.exists():
            return Verdict(name, "missing", path, f"{path} is gone; pull it again")
        problems = []
        for rel, record in manifest.files.items():
            file = path if manifest.archive is None else path / rel
            if not file.is_file():
                problems.append(f"{rel} is missing")
            elif file.stat().st_size != record.size:
                problems.append(f"{rel} has {file.stat().st_size} bytes, expected {record.size}")
            elif sha256_file(file) != record.sha256:
                problems.append(f"{rel} has changed (sha256 differs)")
        if entry is not None and entry.url == manifest.url:
            expected = entry.sha256 or (self.pin_for(entry.url) or {}).get("sha256")
            if expected and expected != manifest.sha256:
                problems.append(f"installed from a download with sha256 {manifest.sha256}, but "
                                f"the {'catalog' if entry.sha256 else 'pin'} says {expected}")
        if problems:
            return Verdict(name, "failed", path, "; ".join(problems[:5]) + (
                f" (and {len(problems) - 5} more)" if len(problems) > 5 else "")
                + f" — `edgevoice models pull --force {name}` reinstalls it")
        what = "the file matches" if manifest.archive is None else \
            f"all {len(manifest.files)} files match"
        return Verdict(name, "ok", path, f"{what} the sha256 recorded at install "
                                         f"({manifest.trust})")

    def _verify_unmanaged(self, name: str, entry: Optional[CatalogEntry]) -> Verdict:
        if entry is None:
            raise UserError(f"model {name} is not installed in {self.root} and not in the catalog")
        path = self.path_for(entry)
        if not path.exists():
            return Verdict(name, "missing", path, f"not installed; `edgevoice models pull {name}`")
        pin = self.pin_for(entry.url)
        expected = entry.sha256 or (pin or {}).get("sha256")
        if entry.archive or expected is None or not path.is_file():
            return Verdict(name, "unverifiable", path,
                           "put there by hand and nothing to compare it with; "
                           f"`edgevoice models pull --force {name}` reinstalls it verified")
        actual = sha256_file(path)
        if actual != expected:
            return Verdict(name, "failed", path, f"sha256 {actual} differs from the expected "
                                                 f"{expected}; `edgevoice models pull --force "
                                                 f"{name}` replaces it")
        self.write_manifest(Manifest(
            name=name, kind=entry.kind, url=entry.url, sha256=actual, size=path.stat().st_size,
            target=entry.target, archive=None, trust="catalog" if entry.sha256 else "pin",
            installed_at=now_iso(),
            files={entry.target: FileRecord(size=path.stat().st_size, sha256=actual)}))
        return Verdict(name, "ok", path, "matches the expected sha256 (now recorded as installed)")
