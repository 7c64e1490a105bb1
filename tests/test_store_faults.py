"""The model store against servers and disks that misbehave: wrong bytes are never pinned.

Every test uses a real HTTP server on loopback (edgevoice.devtools.store_server) and the real
download code; the full-disk test uses a real, small tmpfs.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from edgevoice.devtools.store_server import StoreServer
from edgevoice.modelstore.catalog import load_catalog
from edgevoice.modelstore.errors import DownloadError
from edgevoice.modelstore.install import pull
from edgevoice.modelstore.progress import Progress
from edgevoice.modelstore.store import ModelStore

HTML = b"<!DOCTYPE html><p>login</p>"  # 27 bytes: a captive portal's answer


@pytest.fixture
def server():
    with StoreServer() as srv:
        yield srv


@pytest.fixture(autouse=True)
def _no_proxies(monkeypatch):
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy",
                "ALL_PROXY", "HF_TOKEN", "EDGEVOICE_MODELS_DIR"):
        monkeypatch.delenv(var, raising=False)


def gguf(n: int, seed: int) -> bytes:
    return b"GGUF" + hashlib.shake_256(str(seed).encode()).digest(n - 4)


def catalog_with(tmp_path: Path, url: str, size: int, *, sha256: str | None = None,
                 target: str = "m.gguf", kind: str = "llm", archive: str | None = None):
    e = {"name": "m", "kind": kind, "description": "test", "url": url, "target": target,
         "size": size, "license": "apache-2.0"}
    if sha256:
        e["sha256"] = sha256
    else:
        e.update(sha256=None, pin="first-download")
    if archive:
        e["archive"] = archive
    doc = {"version": 1, "licenses": {"apache-2.0": {
        "title": "Apache License 2.0", "url": "https://www.apache.org/licenses/LICENSE-2.0",
        "accept": False}}, "models": [e]}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def quiet() -> Progress:
    return Progress("test", enabled=False)


def pinned(store: ModelStore) -> dict:
    return store.pins() if store.pins_path.exists() else {}


def test_no_resume_without_a_validator_after_the_file_changed(server, tmp_path):
    old, new = gguf(300_000, 1), gguf(300_000, 2)
    server.files["/m.gguf"] = old
    server.behave("/m.gguf", validator="none", cut_once_at=150_000)
    entry = load_catalog(catalog_with(tmp_path, server.url("/m.gguf"), len(old))).require("m")
    store = ModelStore(tmp_path / "models")
    with pytest.raises(DownloadError):
        pull(entry, store, retries=0, progress=quiet())
    assert store.part_path("m").stat().st_size == 150_000
    server.files["/m.gguf"] = new  # upstream changed; nothing tells us so
    pull(entry, store, progress=quiet())
    assert (store.root / "m.gguf").read_bytes() == new
    assert server.hits("/m.gguf")[-1]["range"] is None  # started over, no stitching
    assert pinned(store)[entry.url]["sha256"] == hashlib.sha256(new).hexdigest()


def test_a_206_with_another_etag_is_not_stitched(server, tmp_path):
    old, new = gguf(300_000, 3), gguf(300_000, 4)
    server.files["/m.gguf"] = old
    server.behave("/m.gguf", ignore_if_range=True, cut_once_at=100_000)
    entry = load_catalog(catalog_with(tmp_path, server.url("/m.gguf"), len(old))).require("m")
    store = ModelStore(tmp_path / "models")
    with pytest.raises(DownloadError):
        pull(entry, store, retries=0, progress=quiet())
    server.files["/m.gguf"] = new
    pull(entry, store, backoff=0, progress=quiet())
    assert (store.root / "m.gguf").read_bytes() == new
    ranges = [h["range"] for h in server.hits("/m.gguf")]
    assert ranges == [None, "bytes=100000-", None]  # the 206 was refused, then a clean start


def test_a_short_content_length_is_refused_with_real_numbers(server, tmp_path):
    data = gguf(3_000_000, 5)
    server.files["/m.gguf"] = data
    server.behave("/m.gguf", declared_length=1_500_000)
    entry = load_catalog(catalog_with(tmp_path, server.url("/m.gguf"), len(data))).require("m")
    store = ModelStore(tmp_path / "models")
    with pytest.raises(DownloadError) as info:
        pull(entry, store, progress=quiet())
    message = str(info.value)
    assert "1500000 bytes" in message and "3000000 bytes" in message and "None" not in message
    assert not (store.root / "m.gguf").exists() and pinned(store) == {}
    assert not store.part_path("m").exists()


@pytest.mark.parametrize("case", ["html-for-gguf", "html-for-zip", "html-for-onnx"])
def test_a_page_that_is_not_the_model_is_never_pinned(server, tmp_path, case):
    target, kind, archive = {"html-for-gguf": ("m.gguf", "llm", None),
                             "html-for-zip": ("m-folder", "asr", "zip"),
                             "html-for-onnx": ("m.onnx", "turn", None)}[case]
    server.files["/m"] = HTML
    catalog = catalog_with(tmp_path, server.url("/m"), len(HTML), target=target, kind=kind,
                           archive=archive)
    models = tmp_path / "models"
    out = subprocess.run([sys.executable, "-m", "edgevoice", "models", "pull", "m", "--catalog",
                          str(catalog), "--models-dir", str(models)], capture_output=True,
                         text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert out.returncode == 1, out.stderr
    assert "HTML" in out.stderr and "nothing was installed or pinned" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (models / target).exists() and not (models / "pins.json").exists()


def test_a_truncated_zip_of_the_estimated_size_is_refused_before_the_pin(server, tmp_path):
    import io

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("top/a.bin", os.urandom(200_000))
    data = buf.getvalue()[:-100]  # the central directory's end is gone
    server.files["/z.zip"] = data
    entry = load_catalog(catalog_with(tmp_path, server.url("/z.zip"), len(data), target="top",
                                      kind="asr", archive="zip")).require("m")
    store = ModelStore(tmp_path / "models")
    with pytest.raises(DownloadError, match="not a zip archive"):
        pull(entry, store, progress=quiet())
    assert pinned(store) == {}


def test_an_estimate_within_tolerance_still_installs(server, tmp_path):
    data = gguf(300_000, 6)
    server.files["/m.gguf"] = data
    entry = load_catalog(catalog_with(tmp_path, server.url("/m.gguf"), 320_000)).require("m")
    store = ModelStore(tmp_path / "models")
    assert pull(entry, store, progress=quiet()).action == "installed"


@pytest.fixture
def tiny_disk(tmp_path):
    """A real 72 MiB tmpfs (root only): room for the free-space margin and a small model."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=72m", "tmpfs", str(mnt)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()})")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(folder: Path) -> None:
    """Another process filling the disk: write until ENOSPC."""
    with open(folder / "filler", "wb") as f:
        try:
            while True:
                f.write(b"\0" * (1 << 20))
                f.flush()
        except OSError:
            pass
        try:
            f.close()
        except OSError:
            pass


def test_a_disk_that_fills_mid_download_says_so_and_frees_the_part(server, tmp_path, tiny_disk):
    data = gguf(4_000_000, 7)
    server.files["/m.gguf"] = data
    models = tiny_disk / "models"
    models.mkdir()
    server.behave("/m.gguf", midway=lambda: _fill(tiny_disk))
    catalog = catalog_with(tmp_path, server.url("/m.gguf"), len(data))
    out = subprocess.run([sys.executable, "-m", "edgevoice", "models", "pull", "m", "--catalog",
                          str(catalog), "--models-dir", str(models)], capture_output=True,
                         text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert out.returncode == 1, out.stderr
    assert "Traceback" not in out.stderr
    assert "filled up" in out.stderr and "partial download was removed" in out.stderr
    downloads = models / ".edgevoice" / "downloads"
    assert not downloads.is_dir() or list(downloads.iterdir()) == []
    assert not (models / "pins.json").exists() and not (models / "m.gguf").exists()
    assert len(out.stderr.splitlines()) <= 3, out.stderr  # a sentence, not a report
