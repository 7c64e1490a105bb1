"""Small file-system helpers: hashing, atomic writes, free space, sizes for people."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from edgevoice.modelstore.errors import DownloadError

CHUNK = 1 << 20
FREE_MARGIN = 64 << 20
"""Left free after a download: a full disk breaks more than the download."""


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks (models are GBs)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable (POSIX); a no-op where directories can't be opened."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``path`` so a reader sees the old or the new content, never half of either."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def free_bytes(path: Path) -> int:
    """Free bytes on the file system holding ``path`` (its nearest existing parent)."""
    probe = path
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    return shutil.disk_usage(probe).free


def ensure_free(path: Path, needed: int, what: str) -> None:
    """Fail before writing when ``needed`` bytes (plus a margin) don't fit."""
    free = free_bytes(path)
    if needed + FREE_MARGIN > free:
        raise DownloadError(
            f"not enough disk space in {path} for {what}: needs {human_size(needed)} "
            f"(+{human_size(FREE_MARGIN)} margin), {human_size(free)} free; free some space "
            f"or choose another models dir (--models-dir, `paths.models_dir`)")


def human_size(n: int | float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")
