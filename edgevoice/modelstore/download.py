"""Resumable downloads into a ``.part`` file: HTTP Range, retries, hashing on the fly.

A download is never installed here: this module only produces a complete ``.part`` file and
its sha256. A sidecar ``.part.json`` remembers the URL, the total size and the server's
strong validator (a strong ETag, or a Last-Modified the server's Date shows to be settled), so a
resume sends ``If-Range`` and a file that changed upstream is restarted instead of being
stitched from two versions. Without a strong validator nothing is resumed: the download starts
over. A 206 is only accepted when its own validator and total match the ones recorded.

For entries without an exact size (pinned on first download) the catalog size is a bound: a
total far from it (a truncated ``Content-Length``, an error page) is refused. A disk that fills
mid-download removes the partial file and says so in one sentence.
"""

from __future__ import annotations

import contextlib
import email.utils
import errno
import hashlib
import http.client
import json
import os
import re
import time
import urllib.error
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from edgevoice.modelstore.errors import DownloadError
from edgevoice.modelstore.fsutil import CHUNK, ensure_free, human_size
from edgevoice.modelstore.http import RETRYABLE_STATUS, HttpStatusError, network_message, open_url
from edgevoice.modelstore.progress import Progress, say

_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")
SIZE_TOLERANCE = 0.10
"""How far (a fraction) a download may be from an estimated catalog size (pinned entries)."""
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


@dataclass(frozen=True)
class Downloaded:
    path: Path
    size: int
    sha256: str


class _Retry(Exception):
    """The transfer stopped early for a reason a later request may not have."""


def meta_path(part: Path) -> Path:
    return part.with_name(part.name + ".json")


def discard(part: Path) -> None:
    """Remove a ``.part`` file and its sidecar."""
    part.unlink(missing_ok=True)
    meta_path(part).unlink(missing_ok=True)


def _read_meta(part: Path) -> dict:
    try:
        data = json.loads(meta_path(part).read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_meta(part: Path, meta: dict) -> None:
    meta_path(part).write_text(json.dumps(meta), encoding="utf-8")


def strong_validator(headers) -> Optional[str]:
    """The response's strong validator: a strong ETag, else a settled Last-Modified, else None.

    Last-Modified counts only when the response's Date is at least a second later (RFC 9110
    8.8.2.2): a file modified within the same second could change again unseen.
    """
    etag = (headers.get("ETag") or "").strip()
    if etag and not etag.startswith("W/"):
        return etag
    modified, date = headers.get("Last-Modified"), headers.get("Date")
    if not modified or not date:
        return None
    try:
        settled = (email.utils.parsedate_to_datetime(date)
                   - email.utils.parsedate_to_datetime(modified)).total_seconds() >= 1
    except (TypeError, ValueError):
        return None
    return modified.strip() if settled else None


def _disk_full_message(name: str, folder: Path, written: int, total: Optional[int],
                       exc: OSError) -> str:
    of = f" of {human_size(total)}" if total else ""
    return (f"{name}: the disk holding {folder} filled up after {human_size(written)}{of} "
            f"({os.strerror(exc.errno)}); the partial download was removed — free some space "
            f"or choose another models dir (--models-dir, `paths.models_dir`) and run again")


class _Transfer:
    """One download's state across attempts: offset, total, validator and a running sha256."""

    def __init__(self, url: str, part: Path, *, name: str, size_hint: int, exact_size: bool,
                 extra_space: int, timeout: float, progress: Progress) -> None:
        self.url, self.part, self.name = url, part, name
        self.size_hint, self.exact_size, self.extra_space = size_hint, exact_size, extra_space
        self.timeout, self.progress = timeout, progress
        meta = _read_meta(part)
        if meta.get("url") != url:  # another file's leftovers: never resume across URLs
            discard(part)
            meta = {}
        self.total: Optional[int] = meta.get("total")
        self.validator: Optional[str] = meta.get("validator")
        self.hasher = hashlib.sha256()
        self.hashed = 0

    def offset(self) -> int:
        try:
            return self.part.stat().st_size
        except FileNotFoundError:
            return 0

    def _restart(self) -> None:
        discard(self.part)
        self.total = self.validator = None
        self.hasher, self.hashed = hashlib.sha256(), 0

    def _catch_up_hash(self, offset: int) -> None:
        """Hash what is already on disk (after a resume) so the digest covers the whole file."""
        if self.hashed == offset:
            return
        self.hasher, self.hashed = hashlib.sha256(), 0
        with open(self.part, "rb") as f:
            remaining = offset
            while remaining and (block := f.read(min(CHUNK, remaining))):
                self.hasher.update(block)
                remaining -= len(block)
                self.hashed += len(block)

    def complete(self) -> bool:
        return self.total is not None and self.offset() == self.total

    def attempt(self) -> None:
        """One request: append to the part file until the body ends; ``_Retry`` if cut short."""
        offset = self.offset()
        if offset and (not self.validator or (self.total is not None and offset > self.total)):
            if not self.validator:
                say(f"{self.name}: the server gave no strong validator (ETag) for the partial "
                    "download, so it cannot be resumed safely; starting over")
            self._restart()
            offset = 0
        needed = (self.total or self.size_hint) - offset + self.extra_space
        ensure_free(self.part.parent, max(needed, 0), self.name)
        headers = {}
        if offset:
            headers["Range"] = f"bytes={offset}-"
            if self.validator:
                headers["If-Range"] = self.validator
        try:
            resp = open_url(self.url, name=self.name, headers=headers, timeout=self.timeout)
        except HttpStatusError as exc:
            if exc.status == 416 and offset:
                self._restart()  # our part is not a prefix of the file any more
                raise _Retry("the server rejected the resume; starting over") from None
            if exc.status in RETRYABLE_STATUS:
                raise _Retry(str(exc)) from None
            raise
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            raise _Retry(network_message(self.url, exc, self.name)) from None
        with resp:
            self._receive(resp, offset)

    def _receive(self, resp, offset: int) -> None:
        if resp.status == 206 and offset:
            match = _CONTENT_RANGE.match(resp.headers.get("Content-Range", "").strip())
            if not match or int(match.group(1)) != offset:
                self._restart()
                raise _Retry("the server answered the resume with another range; starting over")
            if strong_validator(resp.headers) != self.validator or (
                    match.group(3) != "*" and self.total is not None
                    and int(match.group(3)) != self.total):
                self._restart()  # a server that ignored If-Range: the rest is of another file
                raise _Retry("the file changed upstream since the partial download (its "
                             "validator or size differs); starting over")
            if match.group(3) != "*":
                self.total = int(match.group(3))
        else:  # 200: the whole file (no Range support, or If-Range saw a changed file)
            if offset:
                say(f"{self.name}: the server sent the whole file again; starting over")
            self._restart()
            offset = 0
            length = resp.headers.get("Content-Length")
            self.total = int(length) if length and length.isdigit() else None
        if self.total is not None:
            self.check_size(self.total, "the server offers")
            ensure_free(self.part.parent, self.total - offset + self.extra_space, self.name)
        self.validator = strong_validator(resp.headers)
        _write_meta(self.part, {"url": self.url, "total": self.total,
                                "validator": self.validator})
        self._catch_up_hash(offset)
        self.progress.start(self.total, offset)
        received = self._copy(resp, offset)
        if self.total is None:
            self.total = offset + received
            self.check_size(self.total, "the server sent")
            _write_meta(self.part, {"url": self.url, "total": self.total,
                                    "validator": self.validator})
        elif offset + received < self.total:
            raise _Retry(f"connection closed after {human_size(offset + received)} of "
                         f"{human_size(self.total)}")

    def check_size(self, total: int, verb: str) -> None:
        """Refuse a total the catalog rules out: exact for checksummed entries, near otherwise."""
        hint = self.size_hint
        if self.exact_size:
            if total == hint:
                return
            why = "the file upstream changed or the catalog is wrong"
        else:
            if hint <= 0 or abs(total - hint) <= hint * SIZE_TOLERANCE:
                return
            why = (f"more than {SIZE_TOLERANCE:.0%} off the catalog's estimate: a truncated or "
                   "wrong answer (an error page?) or an outdated catalog")
        self._restart()
        raise DownloadError(
            f"{self.name}: {verb} {total} bytes ({human_size(total)}) but the catalog says "
            f"{hint} bytes ({human_size(hint)}): {why}; nothing was installed or pinned")

    def _copy(self, resp, offset: int) -> int:
        """Append the body to the part file; a full disk removes it (``DownloadError``)."""
        received = 0
        try:
            f = open(self.part, "ab" if offset else "wb")  # noqa: SIM115 - closed below
        except OSError as exc:
            if exc.errno in _DISK_FULL:
                self._disk_full(offset, exc)
            raise
        try:
            while True:
                try:
                    block = resp.read(CHUNK)
                except (OSError, http.client.HTTPException) as exc:  # reset, IncompleteRead
                    f.flush()
                    raise _Retry(f"connection lost after {human_size(offset + received)} "
                                 f"({exc.__class__.__name__})") from None
                if not block:
                    break
                f.write(block)
                self.hasher.update(block)
                self.hashed += len(block)
                received += len(block)
                self.progress.update(len(block))
            f.flush()
            os.fsync(f.fileno())
        except OSError as exc:
            if exc.errno not in _DISK_FULL:
                raise
            with contextlib.suppress(OSError):
                f.close()  # closing flushes the buffer again: ENOSPC again, nothing to keep
            self._disk_full(offset + received, exc)
        finally:
            with contextlib.suppress(OSError):
                f.close()
        return received

    def _disk_full(self, written: int, exc: OSError) -> None:
        self._restart()
        raise DownloadError(_disk_full_message(self.name, self.part.parent, written,
                                               self.total, exc)) from None

    def digest(self) -> str:
        self._catch_up_hash(self.offset())
        return self.hasher.hexdigest()


def download(url: str, part: Path, *, name: str, size_hint: int, exact_size: bool,
             extra_space: int = 0, retries: int = 4, backoff: float = 1.0,
             timeout: float = 30.0, progress: Optional[Progress] = None,
             sleep: Callable[[float], None] = time.sleep) -> Downloaded:
    """Fetch ``url`` into ``part``, resuming what a previous run left there.

    Cut connections, timeouts and 5xx/429 answers are retried ``retries`` times with
    exponential backoff, each retry resuming with Range. ``extra_space`` is what the caller
    will need after the download (an archive's unpacked files) for the free-space check.
    Raises ``DownloadError`` (the part file is kept when the failure is resumable).
    """
    part.parent.mkdir(parents=True, exist_ok=True)
    progress = progress or Progress(name)
    transfer = _Transfer(url, part, name=name, size_hint=size_hint, exact_size=exact_size,
                         extra_space=extra_space, timeout=timeout, progress=progress)
    failures = 0
    try:
        if transfer.offset():
            say(f"{name}: resuming a previous download at {human_size(transfer.offset())}")
        while not transfer.complete():
            try:
                transfer.attempt()
            except _Retry as exc:
                failures += 1
                if failures > retries:
                    kept = transfer.offset()
                    raise DownloadError(
                        f"{exc}; gave up after {failures} attempts — run the same command again "
                        f"to resume from {human_size(kept)}") from None
                delay = backoff * 2 ** (failures - 1)
                say(f"{name}: {exc}; retrying in {delay:.0f} s "
                    f"(attempt {failures + 1} of {retries + 1})")
                sleep(delay)
    finally:
        progress.close()
    return Downloaded(path=part, size=transfer.offset(), sha256=transfer.digest())
