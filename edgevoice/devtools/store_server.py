"""A loopback HTTP file server that misbehaves the ways real mirrors and proxies do.

For the model store's fault tests: files can change between requests, validators can be
missing, ``If-Range`` can be ignored, ``Content-Length`` can lie short, a body can be cut, and
a hook can run half-way through a body (to fill the disk while a download is writing).
It speaks real HTTP/1.1 with Range/206/416, so the client under test is the real one.
"""

from __future__ import annotations

import hashlib
import re
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional
from urllib.parse import urlsplit


@dataclass
class Behaviour:
    """How one path is served (all off: a well-behaved server with strong ETags)."""

    validator: str = "etag"
    """``etag`` (strong), ``weak-etag``, ``last-modified`` or ``none``."""
    ignore_if_range: bool = False
    """Honour Range even when If-Range no longer matches (a broken proxy)."""
    declared_length: Optional[int] = None
    """Send this Content-Length (and only this many bytes) for a whole-file answer."""
    cut_once_at: Optional[int] = None
    """Close the connection after this many body bytes, once."""
    midway: Optional[Callable[[], None]] = None
    """Called once after half the body was sent, before the rest."""
    hits: list[dict] = field(default_factory=list)


class StoreServer:
    """``files`` (path -> bytes) served on 127.0.0.1; ``behave(path)`` tunes one path."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.behaviours: dict[str, Behaviour] = {}
        self._lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def behave(self, path: str, **kw) -> Behaviour:
        b = self.behaviours.setdefault(path, Behaviour())
        for k, v in kw.items():
            setattr(b, k, v)
        return b

    def hits(self, path: str) -> list[dict]:
        with self._lock:
            return list(self.behave(path).hits)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> StoreServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                path = urlsplit(self.path).path
                with server._lock:
                    b = server.behave(path)
                    b.hits.append({"range": self.headers.get("Range"),
                                   "if_range": self.headers.get("If-Range")})
                    data = server.files.get(path)
                if data is None:
                    self.send_error(404)
                    return
                digest = hashlib.sha256(data).hexdigest()[:16]
                validator = {"etag": f'"{digest}"', "weak-etag": f'W/"{digest}"'}.get(
                    b.validator)
                start, end, code = 0, len(data) - 1, 200
                wanted, if_range = self.headers.get("Range"), self.headers.get("If-Range")
                fresh = if_range is None or if_range == validator or b.ignore_if_range
                if wanted and fresh:
                    m = re.fullmatch(r"bytes=(\d+)-(\d*)", wanted)
                    start = int(m.group(1)) if m else 0
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    end = int(m.group(2)) if m and m.group(2) else len(data) - 1
                    code = 206
                body = data[start:end + 1]
                if code == 200 and b.declared_length is not None:
                    body = body[:b.declared_length]
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Accept-Ranges", "bytes")
                if validator:
                    self.send_header("ETag", validator)
                if b.validator == "last-modified":
                    self.send_header("Last-Modified", formatdate(1_600_000_000, usegmt=True))
                if code == 206:
                    self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
                self.end_headers()
                cut, b.cut_once_at = b.cut_once_at, None
                if cut is not None:
                    self.wfile.write(body[:cut])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                midway, b.midway = b.midway, None
                if midway is not None:
                    half = len(body) // 2
                    self.wfile.write(body[:half])
                    self.wfile.flush()
                    midway()
                    body = body[half:]
                try:
                    self.wfile.write(body)
                except OSError:  # the client gave up (a full disk): nothing to tell anyone
                    self.close_connection = True

        return Handler
