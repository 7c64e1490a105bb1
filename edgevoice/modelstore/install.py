"""`pull`: download, check, unpack and install one catalog model — all or nothing.

Order matters: the sha256 is checked (against the catalog, or the pin of an earlier first
download) and the file's structure (GGUF magic, zip directory) before anything is pinned,
unpacked or renamed; a zip is unpacked into a temp folder on the
same file system; the manifest is written before the final atomic rename, so a crash leaves
either the old state or a model `verify` can check — never a half-written file under the
model's name.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from typing import Optional

from edgevoice.errors import UserError
from edgevoice.modelstore.archive import extract_zip
from edgevoice.modelstore.catalog import CatalogEntry
from edgevoice.modelstore.download import discard, download
from edgevoice.modelstore.errors import DownloadError
from edgevoice.modelstore.fsutil import human_size
from edgevoice.modelstore.progress import Progress, say, warn_loudly
from edgevoice.modelstore.sniff import content_problem
from edgevoice.modelstore.store import FileRecord, Manifest, ModelStore, hash_tree, now_iso

UNPACK_FACTOR = 2
"""Room assumed for an archive's unpacked files before the download (checked exactly later)."""


@dataclass(frozen=True)
class PullResult:
    name: str
    path: str
    action: str
    """``installed``, ``already-installed`` or ``adopted`` (a hand-placed file verified)."""


def _already(entry: CatalogEntry, store: ModelStore) -> Optional[PullResult]:
    """Skip work when the model is there and matches; refuse to clobber hand-placed files."""
    dest = store.path_for(entry)
    if not dest.exists():
        return None
    manifest = store.manifest(entry.name)
    if manifest is not None:
        if manifest.url == entry.url and (entry.sha256 in (None, manifest.sha256)):
            return PullResult(entry.name, str(dest), "already-installed")
        say(f"{entry.name}: the catalog now points at a different download; replacing it")
        return None
    verdict = store.verify(entry.name, entry)  # hand-placed: adopt it if it checks out
    if verdict.ok:
        return PullResult(entry.name, str(dest), "adopted")
    raise UserError(f"{dest} already exists but was not installed by `edgevoice models pull` "
                    f"({verdict.detail}); pass --force to replace it")


def pull(entry: CatalogEntry, store: ModelStore, *, force: bool = False, retries: int = 4,
         backoff: float = 1.0, timeout: float = 30.0,
         progress: Optional[Progress] = None) -> PullResult:
    """Install ``entry`` into ``store``; raises ``DownloadError`` with nothing installed."""
    with store.lock(entry.name):
        if not force and (done := _already(entry, store)):
            return done
        store.root.mkdir(parents=True, exist_ok=True)
        part = store.part_path(entry.name)
        # Room for the unpacked files is estimated now (checked exactly before unpacking).
        extra = entry.size * UNPACK_FACTOR if entry.archive else 0
        say(f"{entry.name}: downloading {'' if entry.size_exact else '~'}"
            f"{human_size(entry.size)} from {entry.url}")
        got = download(entry.url, part, name=entry.name, size_hint=entry.size,
                       exact_size=entry.size_exact, extra_space=extra, retries=retries,
                       backoff=backoff, timeout=timeout,
                       progress=progress or Progress(entry.name))
        pin = store.pin_for(entry.url)
        expected = entry.sha256 or (pin or {}).get("sha256")
        if expected is not None and got.sha256 != expected:
            discard(part)
            source = "the catalog" if entry.sha256 else f"the pin in {store.pins_path}"
            raise DownloadError(
                f"{entry.name}: checksum mismatch — the download has sha256 {got.sha256}, "
                f"{source} expects {expected}; it was deleted and nothing was installed (run "
                f"again; if it fails again the file upstream changed: don't trust it)")
        if entry.size_exact and got.size != entry.size:
            discard(part)
            raise DownloadError(f"{entry.name}: the download has {got.size} bytes, the catalog "
                                f"says {entry.size}; nothing was installed")
        problem = content_problem(part, target=entry.target, archive=entry.archive)
        if problem is not None:
            discard(part)
            raise DownloadError(f"{entry.name}: the download from {entry.url} is not a "
                                f"{entry.kind} model: {problem}; it was deleted and nothing was "
                                f"installed or pinned")
        if expected is None:
            store.add_pin(entry.name, entry.url, got.sha256, got.size)
            warn_loudly([
                f"the catalog has no sha256 for {entry.name}: trusting this first download "
                "(trust on first use) and pinning it:",
                f"  sha256 {got.sha256}  ({got.size} bytes)",
                f"  from {entry.url}",
                f"  pinned in {store.pins_path}; every later download and "
                "`edgevoice models verify` must match it.",
                "  Compare it with a checksum the publisher shows (for Hugging Face: the file's "
                "page, 'SHA256') if you can.",
            ])
        trust = "catalog" if entry.sha256 else "pin"
        if entry.archive == "zip":
            dest = _install_zip(entry, store, part, got.sha256, got.size, trust)
        else:
            dest = _install_file(entry, store, part, got.sha256, got.size, trust)
        discard(part)
        say(f"{entry.name}: installed at {dest}")
        return PullResult(entry.name, str(dest), "installed")


def _manifest(entry: CatalogEntry, sha256: str, size: int, trust: str,
              files: dict[str, FileRecord]) -> Manifest:
    return Manifest(name=entry.name, kind=entry.kind, url=entry.url, sha256=sha256, size=size,
                    target=entry.target, archive=entry.archive, trust=trust,
                    installed_at=now_iso(), files=files)


def _install_file(entry: CatalogEntry, store: ModelStore, part, sha256: str, size: int,
                  trust: str):
    part.chmod(0o644)
    store.write_manifest(_manifest(entry, sha256, size, trust,
                                   {entry.target: FileRecord(size=size, sha256=sha256)}))
    return store.place(part, entry)


def _install_zip(entry: CatalogEntry, store: ModelStore, part, sha256: str, size: int,
                 trust: str):
    tmp = store.new_tmp_dir()
    try:
        try:
            folder = extract_zip(part, tmp / "unpacked", entry.name)
        except DownloadError:
            discard(part)  # a verified archive that is unsafe or broken won't get better
            raise
        files = hash_tree(folder)
        if not files:
            raise DownloadError(f"{entry.name}: the archive holds no files")
        store.write_manifest(_manifest(entry, sha256, size, trust, files))
        dest = store.place(folder, entry)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest

