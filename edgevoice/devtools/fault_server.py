"""Chat servers on loopback for testing the remote target: a scriptable faulty one, the real one.

``FaultServer`` speaks the OpenAI chat-completions protocol (SSE over chunked HTTP/1.1 with
keep-alive, optional TLS) and does on demand what a real server will not: a slow first token, a
stall, a cut connection, garbage, error events, 401/429/500. Each request takes the next scripted
``Reply`` and is recorded (headers, body, connection id, whether the client hung up), so tests can
assert what was sent and that a cancelled stream really was closed. It listens on 127.0.0.1 only
and stops itself after ``max_lifetime_s``; a stalled reply hangs at most ``max_hang_s``.

``llama_server`` runs llama.cpp's own OpenAI-compatible server (``llama-cpp-python[server]``) as a
subprocess on a free port.

    with FaultServer() as server:
        server.script(Reply(tokens=5), Reply(stall_after=2))
        ... OpenAITarget(RemoteConfig(base_url=server.url, model=server.model), "remote") ...
"""

from __future__ import annotations

import collections
import contextlib
import http.client
import http.server
import importlib.util
import json
import logging
import os
import select
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

log = logging.getLogger(__name__)

POLL_S = 0.02


@dataclass
class Reply:
    """What the server does with one ``POST /v1/chat/completions``.

    Tokens are ``"w0 "``, ``"w1 "``, ...; ``interval_s`` apart, the first after
    ``first_token_delay_s`` (headers go out at once unless ``headers_delay_s``). Faults happen
    after that many tokens: ``stall_after`` (then silence, or ``trickle_s``-spaced SSE comments),
    ``cut_after`` (the connection is closed mid-body; with ``reset`` by an RST), ``error_after``
    (an error event: ``data: {"error": ...}`` or ``event: error``), ``garbage`` (raw bytes in the
    body after the tokens). ``reasoning`` deltas (``delta.reasoning``, as reasoning models
    send them, ``interval_s`` apart) come before the first token. ``status`` other than 200
    answers with ``body`` (default: an OpenAI error JSON) and ``headers``. ``cerebras`` adds
    ``usage`` and ``time_info`` to the last chunk (``time_info_extra`` merged into it).
    ``texts`` replaces the token texts (a lone surrogate, control characters: whatever JSON can
    carry); ``trickle_bytes_s`` sends the whole body one byte at a time, that far apart.
    """

    tokens: int = 3
    interval_s: float = 0.0
    first_token_delay_s: float = 0.0
    headers_delay_s: float = 0.0
    stall_after: Optional[int] = None
    trickle_s: Optional[float] = None
    cut_after: Optional[int] = None
    reset: bool = False
    error_after: Optional[int] = None
    error_style: Literal["data", "event"] = "data"
    error_status: int = 503
    garbage: Optional[bytes] = None
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: Optional[bytes] = None
    content_type: str = "text/event-stream; charset=utf-8"
    cerebras: bool = False
    reasoning: int = 0
    finish_reason: Optional[str] = "stop"
    done: bool = True
    texts: Optional[tuple[str, ...]] = None
    time_info_extra: dict[str, Any] = field(default_factory=dict)
    trickle_bytes_s: Optional[float] = None


def token_text(i: int) -> str:
    return f"w{i} "


@dataclass
class RequestRecord:
    """One request as the server saw it."""

    conn_id: int
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: Any  # parsed JSON, or None
    tokens_sent: int = 0
    disconnected: threading.Event = field(default_factory=threading.Event)
    """The client went away before the reply was complete."""
    finished: threading.Event = field(default_factory=threading.Event)
    disconnected_at: Optional[float] = None  # time.monotonic()


@dataclass(frozen=True)
class TlsFiles:
    """A throw-away CA and a server certificate it signed, for 127.0.0.1 and localhost."""

    ca: Path
    cert: Path
    key: Path


def make_tls_files(folder: Path) -> TlsFiles:
    """Generate a self-signed CA and a server certificate with the ``openssl`` command.

    Raises ``RuntimeError`` when ``openssl`` is missing (Debian package ``openssl``).
    """
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("the openssl command is not installed (apt install openssl)")
    folder.mkdir(parents=True, exist_ok=True)
    ca, ca_key = folder / "ca.pem", folder / "ca.key"
    cert, key, csr = folder / "server.pem", folder / "server.key", folder / "server.csr"
    ext = folder / "server.ext"
    ext.write_text("basicConstraints=critical,CA:FALSE\n"
                   "keyUsage=critical,digitalSignature,keyEncipherment\n"
                   "extendedKeyUsage=serverAuth\n"
                   "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                   "subjectKeyIdentifier=hash\n"
                   "authorityKeyIdentifier=keyid,issuer\n")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    commands = [
        [openssl, "req", "-x509", *ec, "-keyout", ca_key, "-out", ca, "-days", "2",
         "-subj", "/CN=edgevoice test CA", "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
        [openssl, "req", *ec, "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1"],
        [openssl, "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
         "-out", cert, "-days", "2", "-extfile", ext],
    ]
    for command in commands:
        done = subprocess.run([str(c) for c in command], capture_output=True, text=True,
                              timeout=60, check=False)
        if done.returncode:
            raise RuntimeError(f"openssl failed: {done.stderr.strip()[-500:]}")
    return TlsFiles(ca=ca, cert=cert, key=key)


class _Http(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    owner: FaultServer

    def finish_request(self, request: socket.socket, client_address: Any) -> None:
        owner = self.owner
        conn = request
        if owner.tls_context is not None:
            request.settimeout(5.0)
            try:  # the handshake runs here, on the connection's own thread
                conn = owner.tls_context.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError) as exc:
                owner.tls_failures.append(str(exc))
                request.close()
                return
        try:
            super().finish_request(conn, client_address)
        finally:
            if conn is not request:
                self._end(conn)

    def shutdown_request(self, request: socket.socket) -> None:
        self._end(request)  # under TLS the plain socket is detached by now: a no-op

    def _end(self, sock: socket.socket) -> None:
        with self.owner._lock:
            reset = sock in self.owner._resets
            self.owner._resets.discard(sock)
        if not reset:  # a reset closes at once: SO_LINGER 0 turns the close into an RST
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_WR)
        sock.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # a client hanging up is normal
            log.debug("fault server: error while handling a request", exc_info=True)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Http

    _trickle_s: Optional[float] = None

    def setup(self) -> None:
        self.owner = self.server.owner
        self.timeout = self.owner.keepalive_s
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as real servers
        super().setup()
        self.conn_id = self.owner._connected(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass
        finally:
            self.owner._disconnected(self.connection)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        log.debug("fault server: " + format, *args)

    # -- helpers -----------------------------------------------------------------------------

    def _record(self, body: Any) -> RequestRecord:
        record = RequestRecord(self.conn_id, self.command, self.path,
                               {k.lower(): v for k, v in self.headers.items()}, body)
        self.owner._add(record)
        return record

    def _authorized(self) -> bool:
        key = self.owner.api_key
        return key is None or self.headers.get("Authorization") == f"Bearer {key}"

    def _send_json(self, status: int, payload: Any, headers: Optional[dict[str, str]] = None,
                   raw: Optional[bytes] = None) -> None:
        data = raw if raw is not None else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _client_gone(self) -> bool:
        """EOF from the client (a peek at the raw socket: works under TLS too)."""
        sock = self.connection
        try:
            readable, _, _ = select.select([sock], [], [], 0)
            return bool(readable) and socket.socket.recv(sock, 1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True

    def _wait(self, seconds: float, record: RequestRecord) -> bool:
        """Sleep, watching for the client hanging up and the server stopping; False if so."""
        end = time.monotonic() + seconds
        while True:
            if self.owner.stopping.is_set() or self._client_gone():
                self._gone(record)
                return False
            left = end - time.monotonic()
            if left <= 0:
                return True
            time.sleep(min(POLL_S, left))

    def _gone(self, record: RequestRecord) -> None:
        if not record.disconnected.is_set():
            record.disconnected_at = time.monotonic()
            record.disconnected.set()
        self.close_connection = True

    def _chunk(self, data: bytes, record: RequestRecord) -> bool:
        try:
            if self._trickle_s and data:
                for i in range(len(data)):
                    if not self._wait(self._trickle_s, record):
                        return False
                    self.wfile.write(b"1\r\n%s\r\n" % data[i:i + 1])
                    self.wfile.flush()
                return True
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            return True
        except OSError:
            self._gone(record)
            return False

    def _event(self, payload: Any, record: RequestRecord, event: Optional[str] = None) -> bool:
        text = payload if isinstance(payload, str) else json.dumps(payload)
        head = f"event: {event}\n" if event else ""
        return self._chunk(f"{head}data: {text}\n\n".encode(), record)

    # -- routes ------------------------------------------------------------------------------

    def do_GET(self) -> None:  # noqa: N802
        record = self._record(None)
        try:
            trickle = self.owner.models_trickle_s
            if trickle and self.path.rstrip("/") == "/v1/models":
                self._trickle_models(trickle, record)
            elif not self._authorized():
                self._send_json(401, {"error": {"message": "Wrong API Key",
                                                "type": "invalid_request_error"}})
            elif self.path.rstrip("/") == "/v1/models" and self.owner.models_status == 200:
                models = [{"id": m, "object": "model", "owned_by": "fault"}
                          for m in self.owner.models]
                self._send_json(200, {"object": "list", "data": models})
            elif self.path.rstrip("/") == "/v1/models":
                status = self.owner.models_status
                self._send_json(status, {"error": {"message": f"models status {status}"}})
            else:
                self._send_json(404, {"error": {"message": f"no route {self.path}"}})
        finally:
            record.finished.set()

    def _trickle_models(self, interval_s: float, record: RequestRecord) -> None:
        """A valid model list, one byte per ``interval_s`` (headers at once)."""
        models = [{"id": m, "object": "model"} for m in self.owner.models]
        data = json.dumps({"object": "list", "data": models}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.flush()
        for i in range(len(data)):
            if not self._wait(interval_s, record):
                return
            try:
                self.wfile.write(data[i:i + 1])
                self.wfile.flush()
            except OSError:
                self._gone(record)
                return

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        record = self._record(body)
        try:
            if self.path != "/v1/chat/completions":
                self._send_json(404, {"error": {"message": f"no route {self.path}"}})
            elif not self._authorized():
                self._send_json(401, {"error": {"message": "Wrong API Key",
                                                "type": "invalid_request_error",
                                                "code": "wrong_api_key"}})
            else:
                self._chat(self.owner._next_reply(), record, body)
        except OSError:
            self._gone(record)
        finally:
            record.finished.set()

    def _chat(self, reply: Reply, record: RequestRecord, body: Any) -> None:
        self._trickle_s = reply.trickle_bytes_s
        if reply.headers_delay_s and not self._wait(reply.headers_delay_s, record):
            return
        if reply.status != 200:
            payload = {"message": f"scripted HTTP {reply.status}", "type": "scripted_error",
                       "code": str(reply.status)}
            self._send_json(reply.status, payload, reply.headers, reply.body)
            return
        self.send_response(200)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Cache-Control", "no-store")
        self.send_header("Transfer-Encoding", "chunked")
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        model = (body or {}).get("model", self.owner.model)
        ident = f"chatcmpl-{uuid.uuid4().hex[:12]}"

        def chunk(delta: dict, finish: Optional[str] = None, **extra: Any) -> dict:
            return {"id": ident, "object": "chat.completion.chunk", "created": int(time.time()),
                    "model": model, "choices": [{"index": 0, "delta": delta,
                                                 "finish_reason": finish}], **extra}

        if not self._event(chunk({"role": "assistant"}), record):
            return
        started = time.monotonic()
        for i in range(reply.reasoning):
            if (i and reply.interval_s and not self._wait(reply.interval_s, record)) or \
                    not self._event(chunk({"reasoning": f"think{i} "}), record):
                return
        for i in range(reply.tokens):
            if i == reply.stall_after:
                self._stall(reply, record)
                return
            if i == reply.cut_after:
                self._cut(reply, record)
                return
            if i == reply.error_after:
                self._error_event(reply, record)
                return
            delay = reply.first_token_delay_s if i == 0 else reply.interval_s
            if delay and not self._wait(delay, record):
                return
            text = reply.texts[i % len(reply.texts)] if reply.texts else token_text(i)
            if not self._event(chunk({"content": text}), record):
                return
            record.tokens_sent += 1
        n = reply.tokens
        if reply.stall_after is not None and reply.stall_after >= n:
            self._stall(reply, record)
            return
        if reply.cut_after is not None and reply.cut_after >= n:
            self._cut(reply, record)
            return
        if reply.error_after is not None and reply.error_after >= n:
            self._error_event(reply, record)
            return
        if reply.garbage is not None and not self._chunk(reply.garbage, record):
            return
        extra: dict[str, Any] = {}
        if reply.cerebras:
            prompt = sum(len(str(m.get("content", "")).split())
                         for m in (body or {}).get("messages", []) if isinstance(m, dict))
            elapsed = time.monotonic() - started
            extra["usage"] = {"prompt_tokens": prompt, "completion_tokens": n,
                              "total_tokens": prompt + n,
                              "prompt_tokens_details": {"cached_tokens": 0}}
            extra["time_info"] = {"queue_time": 0.000123, "prompt_time": 0.0021,
                                  "completion_time": round(elapsed, 6),
                                  "total_time": round(elapsed + 0.002223, 6),
                                  "created": time.time(), **reply.time_info_extra}
        if reply.finish_reason is not None or extra:
            if not self._event(chunk({}, reply.finish_reason, **extra), record):
                return
        if reply.done and not self._event("[DONE]", record):
            return
        self._chunk(b"", record)  # the last chunk: the body is complete

    def _stall(self, reply: Reply, record: RequestRecord) -> None:
        end = time.monotonic() + self.owner.max_hang_s
        while time.monotonic() < end:
            step = reply.trickle_s or 0.2
            if not self._wait(min(step, end - time.monotonic()), record):
                return
            if reply.trickle_s and not self._chunk(b": keep-alive\n\n", record):
                return
        self.close_connection = True

    def _cut(self, reply: Reply, record: RequestRecord) -> None:
        sock = self.connection
        if reply.reset:  # an RST instead of a FIN, when the server closes the socket
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            with self.owner._lock:
                self.owner._resets.add(sock)
        else:
            with contextlib.suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)
        self.close_connection = True

    def _error_event(self, reply: Reply, record: RequestRecord) -> None:
        message = "The server had an error while processing your request"
        if reply.error_style == "event":
            ok = self._event({"message": message, "type": "server_error",
                              "status_code": reply.error_status}, record, event="error")
        else:
            ok = self._event({"error": {"message": message, "type": "server_error",
                                        "code": "internal"},
                              "status_code": reply.error_status}, record)
        if ok:
            self._chunk(b"", record)


class FaultServer:
    """A scriptable OpenAI-compatible chat server on 127.0.0.1 (see the module docstring)."""

    def __init__(self, *, models: tuple[str, ...] = ("fault-model",),
                 api_key: Optional[str] = None, tls: Optional[TlsFiles] = None,
                 default: Optional[Reply] = None, keepalive_s: float = 30.0,
                 max_lifetime_s: float = 120.0, max_hang_s: float = 30.0) -> None:
        self.models = models
        self.model = models[0] if models else "fault-model"
        self.api_key = api_key
        self.models_status = 200
        self.models_trickle_s: Optional[float] = None
        """Send ``GET /v1/models`` one byte per this many seconds (a dying proxy, a bad link)."""
        self.default = default or Reply()
        self.max_hang_s = max_hang_s
        self.keepalive_s = keepalive_s  # an idle kept-alive connection is closed after this
        self.max_lifetime_s = max_lifetime_s
        self.tls_context: Optional[ssl.SSLContext] = None
        if tls is not None:
            self.tls_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.tls_context.load_cert_chain(str(tls.cert), str(tls.key))
        self.tls_failures: list[str] = []
        self.requests: list[RequestRecord] = []
        self.connections = 0
        self.stopping = threading.Event()
        self._script: collections.deque[Reply] = collections.deque()
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._resets: set[socket.socket] = set()
        self._http: Optional[_Http] = None
        self._thread: Optional[threading.Thread] = None
        self._timer: Optional[threading.Timer] = None

    @property
    def port(self) -> int:
        assert self._http is not None, "start the server first"
        return self._http.server_address[1]

    @property
    def url(self) -> str:
        scheme = "https" if self.tls_context is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}/v1"

    @property
    def chat_requests(self) -> list[RequestRecord]:
        with self._lock:
            return [r for r in self.requests if r.method == "POST"]

    def script(self, *replies: Reply) -> None:
        """Queue replies for the next chat requests (then ``default`` answers)."""
        with self._lock:
            self._script.extend(replies)

    def start(self) -> FaultServer:
        self._http = _Http(("127.0.0.1", 0), _Handler)
        self._http.owner = self
        self._thread = threading.Thread(target=self._http.serve_forever,
                                        kwargs={"poll_interval": 0.05}, name="fault-server",
                                        daemon=True)
        self._thread.start()
        self._timer = threading.Timer(self.max_lifetime_s, self.stop)
        self._timer.daemon = True
        self._timer.start()
        return self

    def stop(self) -> None:
        """Stop serving, end open connections and wait (briefly) for the handlers."""
        if self.stopping.is_set() or self._http is None:
            return
        self.stopping.set()
        if self._timer is not None:
            self._timer.cancel()
        if self._thread is not threading.current_thread():
            self._http.shutdown()
        with self._lock:
            open_now = list(self._open)
        for sock in open_now:
            with contextlib.suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)
        end = time.monotonic() + 2.0
        while time.monotonic() < end:
            with self._lock:
                if not self._open:
                    break
            time.sleep(POLL_S)
        self._http.server_close()

    def __enter__(self) -> FaultServer:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # -- called by handlers ------------------------------------------------------------------

    def _connected(self, sock: socket.socket) -> int:
        with self._lock:
            self.connections += 1
            self._open.add(sock)
            return self.connections

    def _disconnected(self, sock: socket.socket) -> None:
        with self._lock:
            self._open.discard(sock)

    def _add(self, record: RequestRecord) -> None:
        with self._lock:
            self.requests.append(record)

    def _next_reply(self) -> Reply:
        with self._lock:
            return self._script.popleft() if self._script else self.default


# -- servers that barely exist -------------------------------------------------------------------


@contextlib.contextmanager
def silent_listener() -> Iterator[str]:
    """A loopback port whose connections are accepted (by the kernel's backlog) and then never
    read or answered: the base URL, ``http://127.0.0.1:PORT/v1``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1"


@contextlib.contextmanager
def trickling_tls_server(interval_s: float = 0.1, max_s: float = 30.0) -> Iterator[str]:
    """A loopback server that answers a TLS ClientHello with a record header announcing 16 KB
    and then sends it one byte per ``interval_s``: a handshake that never ends, though bytes
    keep coming (per-read timeouts never fire). The base URL, ``https://127.0.0.1:PORT/v1``."""
    stop = threading.Event()
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.1)

    def serve(conn: socket.socket) -> None:
        end = time.monotonic() + max_s
        with conn:
            try:
                conn.settimeout(1.0)
                conn.recv(4096)  # the ClientHello
                conn.sendall(b"\x16\x03\x03\x40\x00")  # a handshake record of 16384 bytes
                while not stop.is_set() and time.monotonic() < end:
                    time.sleep(interval_s)
                    conn.sendall(b"\x00")
            except OSError:
                pass

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, name="trickling-tls", daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.getsockname()[1]}/v1"
    finally:
        stop.set()
        thread.join(2.0)
        server.close()


# -- llama.cpp's own server --------------------------------------------------------------------

LLAMA_SERVER_MODULES = ("uvicorn", "fastapi", "sse_starlette", "starlette_context",
                        "pydantic_settings")


def llama_server_missing() -> Optional[str]:
    """Why llama.cpp's Python server cannot run here, or None when it can."""
    missing = [m for m in LLAMA_SERVER_MODULES if importlib.util.find_spec(m) is None]
    if importlib.util.find_spec("llama_cpp") is None:
        missing.insert(0, "llama_cpp")
    if not missing:
        return None
    return (f"llama.cpp's OpenAI-compatible server needs {', '.join(missing)}: "
            "pip install 'llama-cpp-python[server]' (the test extra installs it)")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class LlamaServer:
    url: str  # base URL, ending in /v1
    port: int
    model: str  # the alias it serves
    process: subprocess.Popen
    log_path: Path


@contextlib.contextmanager
def llama_server(model: Path, alias: str = "tiny", *, n_ctx: int = 512,
                 api_key: Optional[str] = None, start_timeout_s: float = 60.0,
                 extra_args: tuple[str, ...] = (), host: str = "127.0.0.1",
                 prefix: tuple[str, ...] = ()) -> Iterator[LlamaServer]:
    """Run ``python -m llama_cpp.server`` on a free loopback port until the block ends.

    ``prefix`` goes before the command (``("ip", "netns", "exec", NS)``: the server runs in a
    network namespace a test made, listening on ``host`` there). Waits until ``GET /v1/models``
    answers; raises ``RuntimeError`` with the end of the server's log when it exits or does not
    answer within ``start_timeout_s``.
    """
    port = free_port()
    fd, log_name = tempfile.mkstemp(prefix="llama-server-", suffix=".log")
    log_path = Path(log_name)
    command = [*prefix, sys.executable, "-m", "llama_cpp.server", "--model", str(model),
               "--host", host, "--port", str(port), "--model_alias", alias,
               "--n_ctx", str(n_ctx), "--interrupt_requests", "false", *extra_args]
    if api_key is not None:
        command += ["--api_key", api_key]
    with os.fdopen(fd, "wb") as log_file:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log_file,
                                   stderr=subprocess.STDOUT)
    try:
        _wait_until_serving(process, host, port, api_key, start_timeout_s, log_path)
        shown = f"[{host}]" if ":" in host else host
        yield LlamaServer(f"http://{shown}:{port}/v1", port, alias, process, log_path)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        with contextlib.suppress(OSError):
            log_path.unlink()


def _wait_until_serving(process: subprocess.Popen, host: str, port: int,
                        api_key: Optional[str], timeout_s: float, log_path: Path) -> None:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if process.poll() is not None:
            raise RuntimeError(f"llama.cpp's server exited with {process.returncode}: "
                               f"{_tail(log_path)}")
        conn = http.client.HTTPConnection(host, port, timeout=2.0)
        try:
            conn.request("GET", "/v1/models", headers=headers)
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        finally:
            conn.close()
        time.sleep(0.1)
    raise RuntimeError(f"llama.cpp's server did not answer within {timeout_s:g} s: "
                       f"{_tail(log_path)}")


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
