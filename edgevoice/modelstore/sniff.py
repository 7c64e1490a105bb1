"""Is a downloaded file what its catalog entry says it is? Checked before it is pinned.

A pin (trust on first use) trusts whatever bytes arrive first, so a captive portal's HTML page,
a truncated body or a JSON error answered with 200 would be pinned and installed as a model.
A cheap look at the structure (GGUF magic, a zip's central directory, an ONNX protobuf head)
refuses those before anything is pinned.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Optional

GGUF_MAGIC = b"GGUF"
_TEXT_STARTS = (b"<!doctype", b"<html", b"<?xml", b"<head", b"<body", b"{", b"[")


def _head(path: Path, n: int = 64) -> bytes:
    with open(path, "rb") as f:
        return f.read(n)


def _looks_like_text(head: bytes) -> Optional[str]:
    lowered = head.lstrip().lower()
    if any(lowered.startswith(s) for s in _TEXT_STARTS):
        return "an HTML/JSON page" if lowered[:1] in (b"<", b"{", b"[") else "text"
    return None


def content_problem(path: Path, *, target: str, archive: Optional[str]) -> Optional[str]:
    """Why ``path`` cannot be the model ``target`` names (a phrase), or None when it may be."""
    size = path.stat().st_size
    head = _head(path)
    if archive == "zip":
        if not zipfile.is_zipfile(path):
            text = _looks_like_text(head)
            return (f"it is {text}, not a zip archive" if text else
                    "it is not a zip archive (no central directory: truncated or another format)")
        try:
            with zipfile.ZipFile(path) as zf:
                if not zf.infolist():
                    return "it is an empty zip archive"
        except (zipfile.BadZipFile, OSError, ValueError) as exc:
            return f"it is not a readable zip archive ({exc})"
        return None
    lowered = target.lower()
    if lowered.endswith(".gguf"):
        if head[:4] != GGUF_MAGIC:
            text = _looks_like_text(head)
            return (f"it is {text} ({size} bytes), not a GGUF model" if text else
                    f"it does not start with the GGUF magic (first bytes {head[:4]!r})")
        return None
    if lowered.endswith(".onnx") and head[:1] != b"\x08":
        text = _looks_like_text(head)
        return (f"it is {text} ({size} bytes), not an ONNX model" if text else
                f"it does not start like an ONNX model (first byte {head[:1]!r})")
    text = _looks_like_text(head)
    if text:
        return f"it is {text} ({size} bytes), not a model"
    return None
