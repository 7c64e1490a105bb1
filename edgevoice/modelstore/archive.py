"""Unpack a downloaded zip without trusting it.

Every member is checked before a single byte is written: absolute paths, drive letters,
``..`` components, symbolic links, device files, encrypted and duplicate members are refused
(zip-slip and friends). Files are then written one by one into a fresh directory, each path
checked again after resolving, so nothing can land outside it.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import zipfile
from pathlib import Path, PurePosixPath

from edgevoice.modelstore.errors import DownloadError
from edgevoice.modelstore.fsutil import ensure_free

_DRIVE = re.compile(r"^[A-Za-z]:")


class UnsafeArchive(DownloadError):
    """The archive tries to write outside its folder, or holds things we don't unpack."""


def _member_path(info: zipfile.ZipInfo, what: str) -> PurePosixPath | None:
    """The safe relative path of a member (None for the root entry itself), or refuse."""
    name = info.filename
    if "\x00" in name:
        raise UnsafeArchive(f"{what}: member {name!r} has a NUL byte in its name: refused")
    normal = name.replace("\\", "/")
    if normal.startswith("/") or _DRIVE.match(normal):
        raise UnsafeArchive(f"{what}: member {name!r} has an absolute path: refused "
                            "(nothing was unpacked)")
    parts = [p for p in normal.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchive(f"{what}: member {name!r} points outside the archive folder (..): "
                            "refused (nothing was unpacked)")
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise UnsafeArchive(f"{what}: member {name!r} is a symbolic link: refused "
                            "(nothing was unpacked)")
    if stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):  # 0: no type recorded
        raise UnsafeArchive(f"{what}: member {name!r} is not a regular file or folder: refused")
    if info.flag_bits & 0x1:
        raise UnsafeArchive(f"{what}: member {name!r} is encrypted: refused")
    return PurePosixPath(*parts) if parts else None


def check_zip(zf: zipfile.ZipFile, what: str) -> list[tuple[zipfile.ZipInfo, PurePosixPath]]:
    """All members with their safe paths; raises ``UnsafeArchive`` before anything is written."""
    members, seen = [], set()
    for info in zf.infolist():
        rel = _member_path(info, what)
        if rel is None:
            continue
        key = str(rel).casefold()
        if key in seen:
            raise UnsafeArchive(f"{what}: member {info.filename!r} appears twice: refused")
        seen.add(key)
        members.append((info, rel))
    if not members:
        raise UnsafeArchive(f"{what}: the archive is empty")
    return members


def extract_zip(archive: Path, dest: Path, what: str) -> Path:
    """Unpack ``archive`` into the new directory ``dest``; return the model folder in it.

    The model folder is the archive's single top-level folder when it has one (as vosk zips
    do), else ``dest`` itself. ``dest`` must not exist; on failure it is removed.
    """
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DownloadError(f"{what}: the download is not a valid zip archive ({exc})") from None
    dest.mkdir(parents=True)
    try:
        with zf:
            members = check_zip(zf, what)
            ensure_free(dest, sum(info.file_size for info, _ in members), f"{what} (unpacked)")
            root = dest.resolve()
            for info, rel in members:
                target = dest.joinpath(*rel.parts)
                if not target.resolve().is_relative_to(root):  # belt and braces
                    raise UnsafeArchive(f"{what}: member {info.filename!r} escapes the folder")
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                executable = (info.external_attr >> 16) & 0o111
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
                fd = os.open(target, flags, 0o755 if executable else 0o644)
                with zf.open(info) as src, os.fdopen(fd, "wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
    except zipfile.BadZipFile as exc:
        shutil.rmtree(dest, ignore_errors=True)
        raise DownloadError(f"{what}: the archive is corrupt ({exc})") from None
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    entries = list(dest.iterdir())
    if len(entries) == 1 and entries[0].is_dir():
        return entries[0]
    return dest
