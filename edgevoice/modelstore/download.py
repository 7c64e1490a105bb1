"""Resumable downloads into a ``.part`` file: HTTP Range, retries, hashing on the fly.

A download is never installed here: this module only produces a complete ``.part`` file and
its sha256. A sidecar ``.part.json`` remembers the URL, the total size and the server's
validator (strong ETag or Last-Modified), so a resume sends ``If-Range`` and a file that
changed upstream is restarted instead of being stitched from two versions.
"""

from __future__ import annotations

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
        if self.total is not None and offset > self.total:
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
            if match.group(3) != "*":
                self.total = int(match.group(3))
        else:  # 200: the whole file (no Range support, or If-Range saw a changed file)
            if offset:
                say(f"{self.name}: the server sent the whole file again; starting over")
            self._restart()
            offset = 0
            length = resp.headers.get("Content-Length")
            self.total = int(length) if length and length.isdigit() else None
        if self.exact_size and self.total is not None and self.total != self.size_hint:
            self._restart()
            raise DownloadError(
                f"{self.name}: the server offers {self.total} bytes but the catalog says "
                f"{self.size_hint}: the file upstream changed or the catalog is wrong; nothing "
                f"was installed")
        if self.total is not None:
            ensure_free(self.part.parent, self.total - offset + self.extra_space, self.name)
        etag = resp.headers.get("ETag")
        self.validator = (etag if etag and not etag.startswith("W/")
                          else resp.headers.get("Last-Modified"))
        _write_meta(self.part, {"url": self.url, "total": self.total,
                                "validator": self.validator})
        self._catch_up_hash(offset)
        self.progress.start(self.total, offset)
        received = 0
        with open(self.part, "ab" if offset else "wb") as f:
            try:
                while block := resp.read(CHUNK):
                    f.write(block)
                    self.hasher.update(block)
                    self.hashed += len(block)
                    received += len(block)
                    self.progress.update(len(block))
            except (OSError, http.client.HTTPException) as exc:  # reset, timeout, IncompleteRead
                f.flush()
                raise _Retry(f"connection lost after {human_size(offset + received)} "
                             f"({exc.__class__.__name__})") from None
            f.flush()
            os.fsync(f.fileno())
        if self.total is None:
            self.total = offset + received
            _write_meta(self.part, {"url": self.url, "total": self.total,
                                    "validator": self.validator})
        elif offset + received < self.total:
            raise _Retry(f"connection closed after {human_size(offset + received)} of "
                         f"{human_size(self.total)}")

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
