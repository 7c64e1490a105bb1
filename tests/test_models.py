"""The model store against a real HTTP server on loopback (Range, cut connections, 401s).

The server is ``http.server`` in a thread, serving bytes the tests make; it can cut a response
mid-body once, force a status, ignore Range, and records every request it saw.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import socket
import stat
import subprocess
import sys
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from edgevoice.config import AsrConfig, Config, LlmConfig, Paths
from edgevoice.errors import ModelError
from edgevoice.modelstore import archive
from edgevoice.modelstore.catalog import bundled_catalog_path, load_catalog, parse_catalog
from edgevoice.modelstore.errors import CatalogError, DownloadError
from edgevoice.modelstore.http import build_request, status_message
from edgevoice.modelstore.install import pull
from edgevoice.modelstore.licenses import LicenseNotAccepted, accepted, ensure_accepted
from edgevoice.modelstore.progress import Progress
from edgevoice.modelstore.resolve import pull_hint, resolve_model
from edgevoice.modelstore.store import ModelStore

REPO = Path(__file__).resolve().parents[1]
VOSK_SMALL_SHA = "30f26242c4eb449f948e42cb302dd7a686cb29a3423a8367f99ff41780942498"


# ---------------------------------------------------------------------------------------------
# A loopback file server
# ---------------------------------------------------------------------------------------------


class FileServer:
    """Serves ``files`` over HTTP/1.1 with Range and If-Range, and misbehaves on request."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.cut_once: set[str] = set()
        self.status: dict[str, int] = {}
        self.no_range: set[str] = set()
        self.requests: list[dict] = []
        self._lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def url(self, path: str) -> str:
        return self.base + path

    def hits(self, path: str) -> list[dict]:
        with self._lock:
            return [r for r in self.requests if r["path"] == path]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                path = urlsplit(self.path).path
                with server._lock:
                    server.requests.append({
                        "path": path, "range": self.headers.get("Range"),
                        "if_range": self.headers.get("If-Range"),
                        "authorization": self.headers.get("Authorization"),
                        "host": self.headers.get("Host"),
                    })
                if path in server.status:
                    body = b"denied\n"
                    self.send_response(server.status[path])
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                data = server.files.get(path)
                if data is None:
                    self.send_error(404)
                    return
                etag = '"' + hashlib.sha256(data).hexdigest()[:16] + '"'
                start, end, code = 0, len(data) - 1, 200
                wanted = self.headers.get("Range")
                if_range = self.headers.get("If-Range")
                if wanted and path not in server.no_range and if_range in (None, etag):
                    m = re.fullmatch(r"bytes=(\d+)-(\d*)", wanted)
                    assert m, wanted
                    start = int(m.group(1))
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    end = int(m.group(2)) if m.group(2) else len(data) - 1
                    code = 206
                body = data[start:end + 1]
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("ETag", etag)
                if code == 206:
                    self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
                self.end_headers()
                if path in server.cut_once:
                    server.cut_once.discard(path)
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                self.wfile.write(body)

        return Handler


@pytest.fixture
def server():
    srv = FileServer()
    yield srv
    srv.close()


@pytest.fixture(autouse=True)
def _no_proxies_or_tokens(monkeypatch):
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy",
                "ALL_PROXY", "HF_TOKEN", "EDGEVOICE_MODELS_DIR", "EDGEVOICE_CONFIG"):
        monkeypatch.delenv(var, raising=False)


# ---------------------------------------------------------------------------------------------
# Helpers: model-like files, catalogs, the CLI
# ---------------------------------------------------------------------------------------------


def gguf_bytes(n: int = 300_000, seed: int = 1) -> bytes:
    """A GGUF-looking file (magic + random body): the store only cares about the bytes."""
    return b"GGUF" + hashlib.shake_256(str(seed).encode()).digest(n - 4)


def vosk_zip(top: str = "vosk-model-tiny", extra: list[tuple] = ()) -> bytes:
    """A vosk-style model folder zipped under one top folder, plus any ``extra`` members."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(f"{top}/", b"")
        zf.writestr(f"{top}/am/final.mdl", hashlib.shake_256(b"am").digest(50_000))
        zf.writestr(f"{top}/conf/model.conf", b"--sample-frequency=16000\n")
        zf.writestr(f"{top}/graph/HCLr.fst", hashlib.shake_256(b"graph").digest(20_000))
        zf.writestr(f"{top}/README", b"a tiny vosk-style test model\n")
        for info, data in extra:
            zf.writestr(info, data)
    return buf.getvalue()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def entry(name: str, url: str, data: bytes | None, *, kind: str = "llm", target: str = "",
          archive_: str | None = None, license_: str = "apache-2.0", sha256: str | None = "",
          size: int | None = None) -> dict:
    """A catalog entry; ``sha256=""`` means the right checksum of ``data``, None means TOFU."""
    e = {"name": name, "kind": kind, "description": f"test model {name}", "url": url,
         "target": target or (name + (".gguf" if archive_ is None else "")),
         "size": size if size is not None else len(data or b"x"), "license": license_}
    if sha256 is None:
        e.update(sha256=None, pin="first-download")
    else:
        e["sha256"] = sha256 or sha(data)
    if archive_:
        e["archive"] = archive_
    return e


def write_catalog(path: Path, *entries: dict) -> Path:
    doc = {"version": 1, "licenses": {
        "gemma": {"title": "Gemma Terms of Use", "url": "https://ai.google.dev/gemma/terms",
                  "accept": True, "notice": "Gemma is provided under the Gemma Terms of Use."},
        "apache-2.0": {"title": "Apache License 2.0",
                       "url": "https://www.apache.org/licenses/LICENSE-2.0", "accept": False}},
        "models": list(entries)}
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def run_cli(*args: str, env: dict | None = None, timeout: float = 120):
    base = {k: v for k, v in os.environ.items()
            if k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
            and k not in ("HF_TOKEN", "EDGEVOICE_MODELS_DIR", "EDGEVOICE_CONFIG")}
    return subprocess.run([sys.executable, "-m", "edgevoice", *args], capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                          env={**base, **(env or {})})


def quiet() -> Progress:
    return Progress("test", enabled=False)


def leftovers(models: Path) -> list[str]:
    """Partial downloads and unpack dirs left in the store's state folder."""
    state = models / ".edgevoice"
    found = []
    for sub in ("downloads", "tmp"):
        folder = state / sub
        if folder.is_dir():
            found += [str(p.relative_to(models)) for p in folder.iterdir()]
    return found


# ---------------------------------------------------------------------------------------------
# The catalog
# ---------------------------------------------------------------------------------------------


def test_bundled_catalog_is_valid_shipped_and_equal_to_the_repo_copy():
    catalog = load_catalog(None)
    assert (REPO / "models" / "catalog.yaml").read_bytes() == bundled_catalog_path().read_bytes(), \
        "models/catalog.yaml and edgevoice/modelstore/catalog.yaml must be identical: copy it"
    names = {e.name: e for e in catalog.entries}
    assert {"gemma-2-2b-it", "gemma-3-1b-it", "gemma-3-270m-it", "vosk-model-small-en-us-0.15",
            "vosk-model-en-us-0.22"} <= set(names)
    small = names["vosk-model-small-en-us-0.15"]
    assert small.sha256 == VOSK_SMALL_SHA and small.size == 41_205_931
    assert small.archive == "zip" and small.kind == "asr"
    assert names["gemma-2-2b-it"].target == "gemma-2-2b-it-Q4_K_M.gguf"  # the default GGUF
    default = names["gemma-4-e2b-it"]  # Gemma 4 is Apache-2.0: no terms to accept
    assert default.is_default and default.license.id == "apache-2.0" and default.sha256
    assert "/resolve/main/" not in default.url and default.memory
    for e in catalog.entries:
        if e.name.startswith(("gemma-2", "gemma-3")):
            assert e.kind == "llm" and e.license.id == "gemma" and e.license.accept
            assert "ai.google.dev/gemma/terms" in e.license.url
        assert e.url.startswith("https://")
    # Entries without a checksum are declared trust-on-first-use in the file itself.
    text = bundled_catalog_path().read_text()
    for e in catalog.entries:
        if e.sha256 is None:
            block = text[text.index(f"name: {e.name}"):]
            block = block[: block.find("\n  - name:") if "\n  - name:" in block else None]
            assert "pin: first-download" in block, e.name


@pytest.mark.parametrize("change, message", [
    ({"sha256": None}, "pin: first-download"),
    ({"sha256": "abc"}, "64 hex digits"),
    ({"target": "../escape.gguf"}, "plain file name"),
    ({"target": "/etc/passwd"}, "plain file name"),
    ({"name": "a/b"}, "plain file name"),
    ({"url": "file:///etc/passwd"}, "http(s) URL"),
    ({"license": "mystery"}, "not in `licenses`"),
    ({"kind": "video"}, "`kind` must be one of"),
    ({"archive": "tar"}, "`archive` must be one of"),
    ({"size": -1}, "positive number of bytes"),
    ({"colour": "blue"}, "unknown key"),
])
def test_catalog_validation_names_the_entry_and_the_problem(tmp_path, change, message):
    good = entry("good-model", "https://example.org/x.gguf", b"data")
    bad = {**entry("bad-model", "https://example.org/y.gguf", b"data"), **change}
    path = write_catalog(tmp_path / "c.yaml", good, bad)
    with pytest.raises(CatalogError) as info:
        load_catalog(path)
    assert message in str(info.value) and str(path) in str(info.value)


@pytest.mark.parametrize("line, message, wrong", [
    # YAML reads an unquoted all-digit checksum as a number: 0000...0 becomes the int 0.
    ("sha256: " + "0" * 64, "must be a quoted string of 64 hex digits", "64 hex digits, got 0"),
    ("description: 404", "`description` must be a string, got 404: put it in quotes",
     "one line of text"),
])
def test_catalog_type_mistakes_name_the_real_cause(line, message, wrong):
    text = ("licenses:\n  mit: {title: MIT, url: 'https://opensource.org/license/mit'}\n"
            "models:\n  - name: m\n    kind: llm\n    url: https://example.org/m.gguf\n"
            "    target: m.gguf\n    size: 4\n    license: mit\n")
    text += "    " + line + "\n"
    text += "    description: a model\n" if not line.startswith("description") else \
        "    sha256: '" + "0" * 64 + "'\n"
    with pytest.raises(CatalogError) as info:
        parse_catalog(text, "my-catalog.yaml")
    assert message in str(info.value) and wrong not in str(info.value)
    assert "my-catalog.yaml" in str(info.value) and "model `m`" in str(info.value)


def test_catalog_rejects_duplicates_and_missing_files(tmp_path):
    e = entry("twice", "https://example.org/x.gguf", b"data")
    with pytest.raises(CatalogError, match="duplicate name"):
        load_catalog(write_catalog(tmp_path / "c.yaml", e, e))
    with pytest.raises(CatalogError, match="does not exist"):
        load_catalog(tmp_path / "nope.yaml")
    with pytest.raises(CatalogError, match="invalid YAML"):
        parse_catalog("models: [\n", "inline")


# ---------------------------------------------------------------------------------------------
# The "done when" case: the CLI installs and verifies a GGUF and a zipped vosk folder
# ---------------------------------------------------------------------------------------------


def test_cli_pull_installs_and_verifies_a_gguf_and_a_zipped_vosk_folder(server, tmp_path):
    gguf, vzip = gguf_bytes(), vosk_zip()
    server.files["/m/tiny.gguf"] = gguf
    server.files["/m/vosk-model-tiny.zip"] = vzip
    catalog = write_catalog(
        tmp_path / "catalog.yaml",
        entry("tiny-llm", server.url("/m/tiny.gguf"), gguf),
        entry("vosk-model-tiny", server.url("/m/vosk-model-tiny.zip"), vzip, kind="asr",
              archive_="zip"))
    models = tmp_path / "models"
    common = ("--catalog", str(catalog), "--models-dir", str(models))

    out = run_cli("models", "pull", "tiny-llm", "vosk-model-tiny", *common)
    assert out.returncode == 0, out.stderr
    assert (models / "tiny-llm.gguf").read_bytes() == gguf
    folder = models / "vosk-model-tiny"
    assert (folder / "am" / "final.mdl").is_file() and (folder / "conf" / "model.conf").is_file()
    assert not (folder / "vosk-model-tiny").exists()  # the zip's top folder became the model
    assert leftovers(models) == []  # no .part, no archive, no unpack dir left behind
    assert "installed at" in out.stderr

    out = run_cli("models", "verify", *common)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "tiny-llm: OK" in out.stdout and "vosk-model-tiny: OK" in out.stdout

    out = run_cli("models", "path", "vosk-model-tiny", *common)
    assert out.returncode == 0 and out.stdout.strip() == str(folder)

    out = run_cli("models", "pull", "tiny-llm", *common)  # again: nothing to do
    assert out.returncode == 0 and "already installed" in out.stderr
    assert len(server.hits("/m/tiny.gguf")) == 1

    # verify notices a changed file and exits 1
    with open(folder / "am" / "final.mdl", "r+b") as f:
        f.write(b"X")
    out = run_cli("models", "verify", "vosk-model-tiny", *common)
    assert out.returncode == 1 and "FAILED" in out.stdout and "final.mdl" in out.stdout

    out = run_cli("models", "rm", "vosk-model-tiny", *common)
    assert out.returncode == 0 and not folder.exists()
    out = run_cli("models", "path", "vosk-model-tiny", *common)
    assert out.returncode == 2 and "edgevoice models pull vosk-model-tiny" in out.stderr


# ---------------------------------------------------------------------------------------------
# Downloads: resume, checksums, disk space
# ---------------------------------------------------------------------------------------------


def test_a_cut_connection_is_resumed_with_range_and_the_sha_matches(server, tmp_path):
    data = gguf_bytes(400_000)
    server.files["/cut.gguf"] = data
    server.cut_once.add("/cut.gguf")
    catalog = load_catalog(write_catalog(tmp_path / "c.yaml",
                                         entry("cut", server.url("/cut.gguf"), data)))
    store = ModelStore(tmp_path / "models")
    result = pull(catalog.require("cut"), store, backoff=0, progress=quiet())
    assert result.action == "installed"
    assert sha((tmp_path / "models" / "cut.gguf").read_bytes()) == sha(data)
    first, second = server.hits("/cut.gguf")
    assert first["range"] is None
    offset = int(re.fullmatch(r"bytes=(\d+)-", second["range"]).group(1))
    assert 0 < offset < len(data)
    assert second["if_range"]  # the ETag: a changed file restarts instead of being stitched
    assert store.verify("cut", catalog.get("cut")).ok


def test_a_failed_pull_keeps_its_part_file_and_the_next_run_resumes(server, tmp_path):
    data = gguf_bytes(400_000, seed=2)
    server.files["/big.gguf"] = data
    server.cut_once.add("/big.gguf")
    catalog = write_catalog(tmp_path / "c.yaml", entry("big", server.url("/big.gguf"), data))
    store = ModelStore(tmp_path / "models")
    with pytest.raises(DownloadError, match="run the same command again to resume"):
        pull(load_catalog(catalog).require("big"), store, retries=0, progress=quiet())
    part = store.part_path("big")
    kept = part.stat().st_size
    assert 0 < kept < len(data)
    assert not (tmp_path / "models" / "big.gguf").exists()

    out = run_cli("models", "pull", "big", "--catalog", str(catalog), "--models-dir",
                  str(store.root))
    assert out.returncode == 0, out.stderr
    assert "resuming a previous download" in out.stderr
    assert len(server.hits("/big.gguf")) == 2
    assert server.hits("/big.gguf")[-1]["range"] == f"bytes={kept}-"
    assert (store.root / "big.gguf").read_bytes() == data and not part.exists()


def test_a_file_changed_upstream_restarts_instead_of_resuming(server, tmp_path):
    old, new = gguf_bytes(300_000, seed=3), gguf_bytes(300_000, seed=4)
    server.files["/m.gguf"] = old
    server.cut_once.add("/m.gguf")
    catalog = load_catalog(write_catalog(tmp_path / "c.yaml",
                                         entry("m", server.url("/m.gguf"), new)))
    store = ModelStore(tmp_path / "models")
    with pytest.raises(DownloadError):
        pull(catalog.require("m"), store, retries=0, progress=quiet())
    server.files["/m.gguf"] = new  # the file changed: its ETag no longer matches If-Range
    pull(catalog.require("m"), store, progress=quiet())
    assert (store.root / "m.gguf").read_bytes() == new
    assert server.hits("/m.gguf")[-1]["if_range"] is not None


def test_a_server_without_range_support_restarts_cleanly(server, tmp_path):
    data = gguf_bytes(300_000, seed=5)
    server.files["/nr.gguf"] = data
    server.cut_once.add("/nr.gguf")
    server.no_range.add("/nr.gguf")
    catalog = load_catalog(write_catalog(tmp_path / "c.yaml",
                                         entry("nr", server.url("/nr.gguf"), data)))
    store = ModelStore(tmp_path / "models")
    pull(catalog.require("nr"), store, backoff=0, progress=quiet())
    assert (store.root / "nr.gguf").read_bytes() == data


@pytest.mark.parametrize("kind", ["gguf", "zip"])
def test_checksum_mismatch_exits_nonzero_and_installs_nothing(server, tmp_path, kind):
    data = gguf_bytes() if kind == "gguf" else vosk_zip()
    server.files["/x"] = data
    e = entry("x", server.url("/x"), data, sha256="0" * 64, kind="llm" if kind == "gguf" else "asr",
              archive_=None if kind == "gguf" else "zip")
    catalog = write_catalog(tmp_path / "c.yaml", e)
    models = tmp_path / "models"
    out = run_cli("models", "pull", "x", "--catalog", str(catalog), "--models-dir", str(models))
    assert out.returncode == 1, out.stderr
    assert "checksum mismatch" in out.stderr and "Traceback" not in out.stderr
    assert not (models / e["target"]).exists()
    assert leftovers(models) == []  # no .part claiming anything either
    assert not (models / ".edgevoice" / "installed" / "x.json").exists()
    listed = json.loads(run_cli("models", "list", "--json", "--catalog", str(catalog),
                                "--models-dir", str(models)).stdout)
    assert listed["models"][0]["status"] == "missing"


def test_progress_bar_counts_bytes_on_a_terminal(capsys):
    bar = Progress("model-x", enabled=True)
    bar.start(1000, 400)  # a resume: the bar starts where the part file ends
    bar.update(600)
    bar.close()
    err = capsys.readouterr().err
    assert "model-x" in err and "100%" in err


def test_not_enough_disk_space_fails_before_any_request(server, tmp_path):
    server.files["/huge.gguf"] = b"GGUF"
    e = entry("huge", server.url("/huge.gguf"), b"GGUF", size=10**18)
    catalog = load_catalog(write_catalog(tmp_path / "c.yaml", e))
    with pytest.raises(DownloadError, match="not enough disk space"):
        pull(catalog.require("huge"), ModelStore(tmp_path / "models"), progress=quiet())
    assert server.hits("/huge.gguf") == []


def test_trust_on_first_use_pins_loudly_and_later_downloads_must_match(server, tmp_path):
    first = gguf_bytes(seed=6)
    server.files["/t.gguf"] = first
    catalog = write_catalog(tmp_path / "c.yaml",
                            entry("tofu", server.url("/t.gguf"), first, sha256=None))
    models = tmp_path / "models"
    common = ("--catalog", str(catalog), "--models-dir", str(models))
    out = run_cli("models", "pull", "tofu", *common)
    assert out.returncode == 0, out.stderr
    assert "WARNING" in out.stderr and sha(first) in out.stderr and "pins.json" in out.stderr
    pins = json.loads((models / "pins.json").read_text())["pins"]
    assert pins[server.url("/t.gguf")]["sha256"] == sha(first)
    assert run_cli("models", "verify", "tofu", *common).returncode == 0

    assert run_cli("models", "rm", "tofu", *common).returncode == 0
    server.files["/t.gguf"] = gguf_bytes(seed=7)  # upstream now serves other bytes
    out = run_cli("models", "pull", "tofu", *common)
    assert out.returncode == 1 and "checksum mismatch" in out.stderr and "pin" in out.stderr
    assert not (models / "tofu.gguf").exists()


# ---------------------------------------------------------------------------------------------
# Archives: zip-slip and friends
# ---------------------------------------------------------------------------------------------


def _symlink_member() -> zipfile.ZipInfo:
    info = zipfile.ZipInfo("vosk-model-tiny/am/link")
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


@pytest.mark.parametrize("member, why", [
    ("vosk-model-tiny/../../evil.txt", ".."),
    ("../evil.txt", ".."),
    ("/tmp/evil-edgevoice.txt", "absolute"),
    ("C:/evil.txt", "absolute"),
    (_symlink_member(), "symbolic link"),
])
def test_zip_slip_archives_are_refused_and_nothing_is_written(server, tmp_path, member, why):
    data = vosk_zip(extra=[(member, b"/etc/passwd" if why == "symbolic link" else b"pwned")])
    server.files["/evil.zip"] = data
    catalog = load_catalog(write_catalog(
        tmp_path / "c.yaml",
        entry("vosk-model-tiny", server.url("/evil.zip"), data, kind="asr", archive_="zip")))
    models = tmp_path / "deep" / "models"
    with pytest.raises(archive.UnsafeArchive, match=re.escape(why)):
        pull(catalog.require("vosk-model-tiny"), ModelStore(models), progress=quiet())
    assert not (models / "vosk-model-tiny").exists()
    assert leftovers(models) == []
    written = [p for p in tmp_path.rglob("*evil*")]
    assert written == [] and not Path("/tmp/evil-edgevoice.txt").exists()


@given(st.lists(st.sampled_from(["a", "b", "..", ".", "", "/", "\\", "C:", "x.bin"]),
                min_size=1, max_size=6))
def test_member_paths_never_escape(parts):
    name = "/".join(parts)
    info = zipfile.ZipInfo(name or "x")
    try:
        rel = archive._member_path(info, "prop")
    except archive.UnsafeArchive:
        return
    if rel is not None:
        assert not rel.is_absolute() and ".." not in rel.parts
        resolved = (Path("/root-of-test") / rel).resolve()
        assert resolved.is_relative_to(Path("/root-of-test"))


# ---------------------------------------------------------------------------------------------
# HTTP: gated repositories and tokens
# ---------------------------------------------------------------------------------------------


def test_gated_hugging_face_401_names_hf_token(server, tmp_path):
    """The real huggingface.co code path, via urllib's proxy support to our loopback server."""
    path = "/google/gemma-test-it-GGUF/resolve/main/gemma-test.gguf"
    server.status[path] = 401
    catalog = write_catalog(tmp_path / "c.yaml",
                            entry("gated", "http://huggingface.co" + path, b"whatever"))
    out = run_cli("models", "pull", "gated", "--catalog", str(catalog), "--models-dir",
                  str(tmp_path / "models"), env={"http_proxy": server.base, "no_proxy": ""})
    assert out.returncode == 1, out.stderr
    assert "HF_TOKEN" in out.stderr and "HTTP 401" in out.stderr
    assert "https://huggingface.co/google/gemma-test-it-GGUF" in out.stderr  # where to accept
    assert server.hits(path)[0]["host"] == "huggingface.co"
    assert len(server.hits(path)) == 1  # not retried: retrying won't fix a missing token
    assert not (tmp_path / "models" / "gated.gguf").exists()


def test_403_elsewhere_says_the_token_only_goes_to_hugging_face(server, tmp_path):
    server.status["/private.gguf"] = 403
    catalog = load_catalog(write_catalog(
        tmp_path / "c.yaml", entry("private", server.url("/private.gguf"), b"x")))
    with pytest.raises(DownloadError) as info:
        pull(catalog.require("private"), ModelStore(tmp_path / "models"), progress=quiet())
    assert "HTTP 403" in str(info.value) and "HF_TOKEN is only sent to huggingface.co" in str(
        info.value)


def test_hf_token_is_sent_as_bearer_only_to_hugging_face_over_https(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    hf = build_request("https://huggingface.co/bartowski/x/resolve/main/x.gguf")
    # unredirected: never follows the redirect to the CDN (or anywhere else)
    assert hf.unredirected_hdrs.get("Authorization") == "Bearer hf_secret"
    assert "Authorization" not in hf.headers
    for url in ("https://alphacephei.com/vosk/models/x.zip", "http://huggingface.co/a/b/x",
                "https://huggingface.co.evil.example/a/b/x"):
        req = build_request(url)
        assert not req.has_header("Authorization"), url
    message = status_message("https://huggingface.co/google/g/resolve/main/g.gguf", 403,
                             "Forbidden", "g")
    assert "HF_TOKEN is set" in message and "accepted" in message


def test_catalog_from_a_url(server, tmp_path):
    data = gguf_bytes(seed=8)
    server.files["/d.gguf"] = data
    write_catalog(tmp_path / "c.yaml", entry("remote-listed", server.url("/d.gguf"), data))
    server.files["/catalog.yaml"] = (tmp_path / "c.yaml").read_bytes()
    out = run_cli("models", "list", "--json", "--catalog", server.url("/catalog.yaml"),
                  "--models-dir", str(tmp_path / "models"))
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["catalog"] == server.url("/catalog.yaml")
    assert [m["name"] for m in doc["models"]] == ["remote-listed"]


# ---------------------------------------------------------------------------------------------
# list --json, models dir selection
# ---------------------------------------------------------------------------------------------


def test_list_json_schema(server, tmp_path):
    data = gguf_bytes(seed=9)
    server.files["/l.gguf"] = data
    catalog = write_catalog(
        tmp_path / "c.yaml", entry("listed", server.url("/l.gguf"), data),
        entry("gemma-like", server.url("/g.gguf"), b"g" * 10, license_="gemma", sha256=None))
    models = tmp_path / "models"
    common = ("--catalog", str(catalog), "--models-dir", str(models))
    assert run_cli("models", "pull", "listed", *common).returncode == 0
    (models / "hand-placed.gguf").write_bytes(b"GGUF")
    out = run_cli("models", "list", "--json", *common)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert set(doc) == {"models_dir", "catalog", "models"}
    assert doc["models_dir"] == str(models) and doc["catalog"] == str(catalog)
    types = {"name": str, "kind": str, "description": str, "url": str, "target": str,
             "archive": (str, type(None)), "size": int, "size_exact": bool,
             "sha256": (str, type(None)), "pinned_sha256": (str, type(None)),
             "license": (dict, type(None)), "status": str, "installed": bool, "path": str,
             "installed_bytes": (int, type(None)), "partial_bytes": (int, type(None)),
             "in_catalog": bool, "memory": (int, type(None)), "default": bool}
    for row in doc["models"]:
        assert set(row) == set(types), set(row) ^ set(types)
        for key, tp in types.items():
            assert isinstance(row[key], tp), (key, row[key])
        assert row["status"] in ("installed", "present", "missing")
        assert set(row["license"]) == {"id", "title", "url", "accept_required", "accepted"}
    rows = {r["name"]: r for r in doc["models"]}
    assert rows["listed"]["status"] == "installed" and rows["listed"]["installed"]
    assert rows["listed"]["installed_bytes"] == len(data)
    assert rows["gemma-like"]["status"] == "missing" and rows["gemma-like"]["sha256"] is None
    assert rows["gemma-like"]["size_exact"] is False
    assert rows["gemma-like"]["license"]["accept_required"] is True
    assert rows["gemma-like"]["license"]["accepted"] is False
    plain = run_cli("models", "list", *common)
    assert plain.returncode == 0 and "listed" in plain.stdout and "installed" in plain.stdout


def test_models_dir_flag_beats_environment_and_environment_beats_default(tmp_path):
    catalog = write_catalog(tmp_path / "c.yaml", entry("a", "https://example.org/a.gguf", b"a"))
    env = {"EDGEVOICE_MODELS_DIR": str(tmp_path / "from-env"),
           "XDG_CONFIG_HOME": str(tmp_path / "cfg"), "XDG_DATA_HOME": str(tmp_path / "data")}
    out = run_cli("models", "list", "--json", "--catalog", str(catalog), env=env)
    assert json.loads(out.stdout)["models_dir"] == str(tmp_path / "from-env")
    out = run_cli("models", "--models-dir", str(tmp_path / "flag"), "list", "--json",
                  "--catalog", str(catalog), env=env)
    assert json.loads(out.stdout)["models_dir"] == str(tmp_path / "flag")
    env.pop("EDGEVOICE_MODELS_DIR")
    out = run_cli("models", "list", "--json", "--catalog", str(catalog), env=env)
    assert json.loads(out.stdout)["models_dir"] == str(tmp_path / "data" / "edgevoice" / "models")


def test_unknown_model_name_is_a_user_error_with_a_suggestion(tmp_path):
    out = run_cli("models", "pull", "gemma-2-2b", "--models-dir", str(tmp_path))
    assert out.returncode == 2 and "did you mean `gemma-2-2b-it`" in out.stderr


# ---------------------------------------------------------------------------------------------
# Licences
# ---------------------------------------------------------------------------------------------


def test_gemma_licence_must_be_accepted_once(server, tmp_path):
    one, two = gguf_bytes(seed=10), gguf_bytes(seed=11)
    server.files["/g1.gguf"], server.files["/g2.gguf"] = one, two
    catalog = write_catalog(tmp_path / "c.yaml",
                            entry("gemma-one", server.url("/g1.gguf"), one, license_="gemma"),
                            entry("gemma-two", server.url("/g2.gguf"), two, license_="gemma"))
    models = tmp_path / "models"
    common = ("--catalog", str(catalog), "--models-dir", str(models))

    out = run_cli("models", "pull", "gemma-one", *common)  # not interactive, no flag
    assert out.returncode == 2
    assert "Gemma Terms of Use" in out.stderr and "--accept-license" in out.stderr
    assert "https://ai.google.dev/gemma/terms" in out.stderr
    assert server.hits("/g1.gguf") == [] and not (models / "gemma-one.gguf").exists()

    out = run_cli("models", "pull", "gemma-one", "--accept-license", *common)
    assert out.returncode == 0, out.stderr
    record = json.loads((models / ".edgevoice" / "licenses.json").read_text())["gemma"]
    assert record["url"] == "https://ai.google.dev/gemma/terms" and record["accepted_at"]

    out = run_cli("models", "pull", "gemma-two", *common)  # remembered: no flag needed now
    assert out.returncode == 0, out.stderr
    assert "accepted on" in out.stderr and (models / "gemma-two.gguf").read_bytes() == two


def test_interactive_licence_prompt(tmp_path, capsys):
    catalog = load_catalog(write_catalog(
        tmp_path / "c.yaml", entry("gemma-x", "https://example.org/g.gguf", b"g",
                                   license_="gemma")))
    store = ModelStore(tmp_path / "models")
    gemma = catalog.require("gemma-x")
    with pytest.raises(LicenseNotAccepted):
        ensure_accepted([gemma], store, accept_flag=False, interactive=True, read=lambda: "no\n")
    assert "Gemma is provided under the Gemma Terms of Use" in capsys.readouterr().err
    assert accepted(store, gemma.license) is None
    ensure_accepted([gemma], store, accept_flag=False, interactive=True, read=lambda: "yes\n")
    assert accepted(store, gemma.license)["how"] == "interactive"
    ensure_accepted([gemma], store, accept_flag=False, interactive=False)  # remembered


# ---------------------------------------------------------------------------------------------
# Wiring: config names a model by catalog name or path; `run` never downloads
# ---------------------------------------------------------------------------------------------


def _paths(tmp_path: Path) -> Paths:
    return Paths(models=tmp_path / "models", cache=tmp_path / "cache", logs=tmp_path / "logs")


def test_resolve_model_by_catalog_name_or_path(tmp_path):
    paths = _paths(tmp_path)
    assert resolve_model("gemma-3-1b-it", "llm", paths) == \
        paths.models / "gemma-3-1b-it-Q4_K_M.gguf"
    assert resolve_model("vosk-model-en-us-0.22", "asr", paths) == \
        paths.models / "vosk-model-en-us-0.22"
    own = tmp_path / "own.gguf"
    own.write_bytes(b"GGUF")
    assert resolve_model(str(own), "llm", paths) == own
    assert resolve_model("custom.gguf", "llm", paths) == paths.models / "custom.gguf"
    with pytest.raises(ModelError, match=r"speech recognition model \(asr\), not a language"):
        resolve_model("vosk-model-small-en-us-0.15", "llm", paths)
    assert pull_hint("gemma-2-2b-it", paths) == \
        "run `edgevoice models pull gemma-2-2b-it` to download it"
    assert pull_hint(str(paths.models / "gemma-2-2b-it-Q4_K_M.gguf"), paths) is not None
    assert pull_hint(str(own), paths) is None


def test_a_model_pulled_from_another_catalog_resolves_by_name(server, tmp_path):
    data = gguf_bytes(seed=12)
    server.files["/own.gguf"] = data
    catalog = load_catalog(write_catalog(
        tmp_path / "c.yaml", entry("my-llm", server.url("/own.gguf"), data, target="mine.gguf")))
    paths = _paths(tmp_path)
    pull(catalog.require("my-llm"), ModelStore(paths.models), progress=quiet())
    assert resolve_model("my-llm", "llm", paths) == paths.models / "mine.gguf"


def test_missing_catalog_models_name_the_pull_command(tmp_path):
    from edgevoice.agent.assemble import load_local, resolve_llm_model
    from edgevoice.asr.select import make_recognizer

    paths = _paths(tmp_path)
    with pytest.raises(ModelError) as info:
        make_recognizer(AsrConfig(vosk_model="vosk-model-en-us-0.22"), paths)
    assert "edgevoice models pull vosk-model-en-us-0.22" in str(info.value)
    with pytest.raises(ModelError) as info:
        make_recognizer(AsrConfig(backend="vosk"), paths)
    assert "edgevoice models pull vosk-model-small-en-us-0.15" in str(info.value)
    assert resolve_llm_model(LlmConfig(model="gemma-3-270m-it"), paths, None) == \
        paths.models / "gemma-3-270m-it-Q8_0.gguf"
    cfg = Config(llm=LlmConfig(model="gemma-3-270m-it"))
    with pytest.raises(ModelError) as info:
        load_local(cfg, paths, None, require_model=True)
    assert "edgevoice models pull gemma-3-270m-it" in str(info.value)
    assert not paths.models.exists()  # nothing was fetched or created at run time


def test_ask_with_a_missing_catalog_model_says_which_pull_to_type(tmp_path):
    out = run_cli("ask", "hello", "--llm-model", "gemma-3-1b-it",
                  env={"XDG_DATA_HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path)})
    assert out.returncode == 2, out.stderr
    assert "edgevoice models pull gemma-3-1b-it" in out.stderr and "Traceback" not in out.stderr
