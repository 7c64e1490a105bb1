"""The remote chat target: any OpenAI-compatible ``/v1/chat/completions`` server.

Cerebras (the cloud, or a CS-3 on the LAN), llama.cpp's server, vLLM or Ollama. Voice needs what
the official SDKs do not give (they retry twice, with 60 s timeouts): **no retries** — the router
fails over to the local model instead — and tight timeouts per phase: connect, first token, and
the silence between tokens (a stall).

HTTP client: the standard library's ``http.client``, chosen over httpx/requests because
* it adds no dependency to an on-device install, and it does all we need: HTTP/1.1 keep-alive on
  one ``HTTPConnection`` we hold (a pool of one, kept warm from ``warm_up``), chunked bodies read
  incrementally with ``read1``, TLS through an ``ssl.SSLContext`` we build (``cafile=`` for a
  private CA, or verification off);
* timeouts are plain socket timeouts, settable between reads, plus deadlines we own;
* cancellation from another thread works on any client only by shutting the socket down:
  ``close()`` on a response (httpx, urllib3 or http.client alike) does not wake a thread blocked in
  ``recv``, ``shutdown(SHUT_RDWR)`` does, at once, and the server sees the FIN. With the socket in
  our hands that is one call. A small per-stream watchdog thread does it when ``cancel`` is set or
  the token deadline passes, so a stall and a cancel end a blocked read within milliseconds,
  whatever the server trickles (keep-alive comments, bytes without a token).

Not thread-safe for streaming: one worker thread advances a target's ``stream``; ``probe`` and
``close`` may come from any thread (a busy connection is never shared: a probe during a stream
uses a second, short-lived one).
"""

from __future__ import annotations

import email.utils
import errno
import http.client
import json
import logging
import math
import os
import re
import select
import socket
import ssl
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal, Optional
from urllib.parse import urlsplit

from edgevoice import __version__
from edgevoice.config import RemoteConfig
from edgevoice.errors import ConfigError
from edgevoice.llm.chat_template import SYSTEM_FOLD_SEPARATOR
from edgevoice.llm.protocol import Message, StreamStats, TargetError, TargetInfo
from edgevoice.llm.safe_text import for_log, speakable
from edgevoice.llm.sse import SseDecoder, SseError, SseEvent

log = logging.getLogger(__name__)

USER_AGENT = f"edgevoice/{__version__}"
READ_BYTES = 16384
MAX_ERROR_BODY = 65536
MAX_MODELS_BODY = 1 << 20
LIMIT_SLACK_TOKENS = 8
"""Deltas beyond ``max_completion_tokens`` before we stop a server that ignores the limit."""
RESERVED_FIELDS = ("model", "messages", "stream")

ErrorKind = Literal[
    "connect", "tls", "auth", "rate_limit", "http", "first_token", "stall", "timeout", "cut",
    "protocol", "server_error", "model_missing", "closed",
]


class RemoteTargetError(TargetError):
    """A remote target failed; the message is plain words with the URL, never the API key.

    ``kind`` says what failed (for metrics and the circuit breaker), ``status`` is the HTTP
    status when there was one, ``retry_after_s`` how long a 429 asked us to wait.
    """

    def __init__(self, message: str, *, kind: ErrorKind, url: str, status: Optional[int] = None,
                 retry_after_s: Optional[float] = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.url = url
        self.status = status
        self.retry_after_s = retry_after_s


class _Secret:
    """Holds the API key so that repr(), vars() and tracebacks show ``***``."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "'***'"

    __str__ = __repr__


# -- rate-limit headers ------------------------------------------------------------------------

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration_s(text: str, now: Optional[float] = None) -> Optional[float]:
    """Seconds from ``"12"``, ``"1.5"``, ``"6m0s"``, ``"20ms"`` or an HTTP date; None if unknown."""
    text = text.strip()
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        return max(0.0, value) if math.isfinite(value) else None
    parts = _DURATION.findall(text)
    if parts and "".join(n + u for n, u in parts) == text:
        return sum(float(n) * _UNITS[u] for n, u in parts)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def retry_after_s(headers: Mapping[str, str], now: Optional[float] = None) -> Optional[float]:
    """How long a 429 asks us to wait: ``retry-after``, else the ``x-ratelimit-reset-*`` of the
    exhausted limit (``x-ratelimit-remaining-*`` = 0; the longest if several), else the shortest.

    ``headers`` has lower-case names.
    """
    if "retry-after" in headers:
        value = parse_duration_s(headers["retry-after"], now)
        if value is not None:
            return value
    resets: dict[str, float] = {}
    for key, raw in headers.items():
        if key.startswith("x-ratelimit-reset-"):
            value = parse_duration_s(raw, now)
            if value is not None:
                resets[key.removeprefix("x-ratelimit-reset-")] = value
    if not resets:
        return None
    exhausted = [v for k, v in resets.items()
                 if parse_duration_s(headers.get(f"x-ratelimit-remaining-{k}", "x")) == 0]
    return max(exhausted) if exhausted else min(resets.values())


# -- the watchdog ------------------------------------------------------------------------------


class _Watchdog:
    """Shuts the stream's socket down from its own thread when ``cancel`` is set or the token
    deadline passes: the only way to end a ``recv`` blocked in another thread at once.

    The deadline is paused while the consumer holds a token (a slow consumer is not a stall).
    """

    POLL_S = 0.25  # how late the thread notices a stream that ended normally (it then exits)

    def __init__(self, sock: socket.socket, cancel: threading.Event, deadline: float) -> None:
        self._sock = sock
        self._cancel = cancel
        self.deadline = deadline
        self.fired: Optional[Literal["cancel", "deadline"]] = None
        self._done = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="remote-watchdog", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._done:
            wait = min(self.deadline - time.monotonic(), self.POLL_S)
            if self._cancel.wait(max(wait, 0.0)):
                self._fire("cancel")
            elif time.monotonic() >= self.deadline:
                self._fire("deadline")

    def _fire(self, why: Literal["cancel", "deadline"]) -> None:
        with self._lock:
            if self._done:
                return
            self._done = True
            self.fired = why
        try:  # the plain socket's shutdown, also under TLS: SSLSocket.shutdown would unwrap it
            socket.socket.shutdown(self._sock, socket.SHUT_RDWR)
        except OSError:
            pass

    def stop(self) -> None:
        with self._lock:
            self._done = True


def _connect(sock: socket.socket, address: Any, deadline: float,
             cancel: Optional[threading.Event]) -> None:
    """TCP connect by the deadline, given up within ~20 ms of ``cancel`` (a blocking connect
    cannot be interrupted: a SYN into a dead network would hold its thread to the end)."""
    sock.setblocking(False)
    err = sock.connect_ex(address)
    while err in (errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EALREADY):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("connect deadline")
        if cancel is not None and cancel.is_set():
            raise OSError(errno.ECANCELED, "cancelled")
        _, writable, _ = select.select([], [sock], [], min(left, 0.02))
        if writable:
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if err:
        raise OSError(err, os.strerror(err))
    sock.settimeout(max(deadline - time.monotonic(), 0.001))


class _ResolveTimeout(TimeoutError):
    """Name resolution did not finish before the connect deadline."""


def _resolve(host: str, port: int, deadline: float) -> list[tuple]:
    """``getaddrinfo`` within the deadline. The resolver cannot be interrupted, so a slow one
    runs on a daemon thread that is left to finish on its own (it holds no socket of ours)."""
    try:
        return socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM, 0, socket.AI_NUMERICHOST)
    except socket.gaierror:
        pass  # a name, not an address
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["addresses"] = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
        except OSError as exc:
            result["error"] = exc

    thread = threading.Thread(target=run, name="remote-resolve", daemon=True)
    thread.start()
    thread.join(max(0.0, deadline - time.monotonic()))
    if "error" in result:
        raise result["error"]
    if "addresses" not in result:
        raise _ResolveTimeout(f"resolving {host}")
    return result["addresses"]


def _dropped(sock: socket.socket) -> bool:
    """Whether an idle kept-alive connection was closed by the server (or has stray bytes)."""
    try:
        if hasattr(select, "poll"):
            poller = select.poll()
            poller.register(sock, select.POLLIN)
            readable = bool(poller.poll(0))
        else:  # Windows
            readable = bool(select.select([sock], [], [], 0)[0])
    except (OSError, ValueError):
        return True
    if not readable:
        return False
    if isinstance(sock, ssl.SSLSocket):  # maybe only a TLS 1.3 session ticket: not app data
        timeout = sock.gettimeout()
        sock.setblocking(False)
        try:
            sock.recv(1)
        except ssl.SSLWantReadError:
            return False
        except OSError:
            return True
        finally:
            sock.settimeout(timeout)
    return True


def _error_message(raw: bytes) -> str:
    """The human part of an error body: OpenAI's ``{"error": {"message"}}``, FastAPI's
    ``{"detail"}``, or the text itself."""
    text = raw.decode("utf-8", "replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        return text
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict):
            for key in ("message", "detail", "msg"):
                if err.get(key):
                    return str(err[key])
        elif err:
            return str(err)
        if data.get("detail"):
            return str(data["detail"])
    return text


class OpenAITarget:
    """``ChatTarget`` on an OpenAI-compatible server, streaming SSE over one kept-alive
    connection. After each stream: ``last_stats``, and the server's own ``last_time_info``
    (Cerebras: queue/prompt/completion/total seconds) and ``last_usage`` when it sent them.
    """

    kind = "openai"

    def __init__(self, cfg: RemoteConfig, name: str) -> None:
        self.name = name
        self._cfg = cfg
        self._check_config(cfg)
        parts = urlsplit(cfg.base_url or "")
        self._https = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = parts.port or (443 if self._https else 80)
        self._prefix = parts.path.rstrip("/")
        host = f"[{self._host}]" if ":" in self._host else self._host
        default_port = parts.port is None
        self.url = f"{parts.scheme}://{host}{'' if default_port else f':{self._port}'}" \
                   f"{self._prefix}"
        """The base URL as shown in messages and logs (no user info, no query)."""
        self._api_key: Optional[_Secret] = None
        self._key_problem = ""
        if cfg.api_key_env:
            value = os.environ.get(cfg.api_key_env, "").strip()
            if value:
                self._api_key = _Secret(value)
            else:
                self._key_problem = (f"the API key is missing: environment variable "
                                     f"{cfg.api_key_env} (api_key_env) is not set")
        self._ssl = self._ssl_context(cfg) if self._https else None
        if self._api_key is not None and not self._https and not _is_loopback(self._host):
            log.warning("%s: the API key goes to %s over plain http: anyone on the network can "
                        "read it; use https", name, self.url)

        self._lock = threading.Lock()
        self._idle: Optional[http.client.HTTPConnection] = None
        self._active: set[socket.socket] = set()
        self._closed = False
        self._last_stats: Optional[StreamStats] = None
        self.last_time_info: Optional[dict[str, Any]] = None
        self.last_usage: Optional[dict[str, Any]] = None
        self.rate_limits: dict[str, str] = {}
        """The latest ``x-ratelimit-*`` headers the server sent (remaining quota, resets)."""
        self.server_models: Optional[list[str]] = None
        self.connections_opened = 0
        self.last_connect_ms: Optional[float] = None
        self.last_probe_ms: Optional[float] = None
        self.reused_connection: Optional[bool] = None
        """Whether the latest request went over an already open connection."""

    # -- setup -----------------------------------------------------------------------------

    def _check_config(self, cfg: RemoteConfig) -> None:
        where = f"remote target `{self.name}`"
        if not cfg.base_url:
            raise ConfigError(f"{where} has no base_url: set it to the server's URL up to /v1, "
                              "e.g. https://api.cerebras.ai/v1")
        if not cfg.model:
            raise ConfigError(f"{where} has no model: set it to a model id the server lists at "
                              f"{cfg.base_url.rstrip('/')}/models")
        parts = urlsplit(cfg.base_url)
        try:
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            raise ConfigError(f"{where}: base_url {cfg.base_url!r} has an invalid port") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"{where}: base_url must be an http:// or https:// URL with a host, "
                              f"e.g. https://api.cerebras.ai/v1 (got {parts.scheme or 'no'} "
                              "scheme)")
        if parts.query or parts.fragment:
            raise ConfigError(f"{where}: base_url must not have a query or fragment; put the "
                              "API key in the environment variable named by api_key_env")
        reserved = sorted(set(cfg.extra_body) & set(RESERVED_FIELDS))
        if reserved:
            raise ConfigError(f"{where}: extra_body may not set {', '.join(reserved)} (the "
                              "target sets them)")

    def _ssl_context(self, cfg: RemoteConfig) -> ssl.SSLContext:
        if not cfg.verify_tls:
            log.warning("%s: TLS certificate verification is OFF for %s: anyone on the network "
                        "path can read and change the conversation and the API key", self.name,
                        self.url)
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            return context
        if not cfg.ca_bundle:
            return ssl.create_default_context()
        path = Path(cfg.ca_bundle).expanduser()
        if not path.is_file():
            raise ConfigError(f"remote target `{self.name}`: ca_bundle {path} does not exist "
                              "(it should be the PEM file of the CA that signed the server's "
                              "certificate)")
        try:
            return ssl.create_default_context(cafile=str(path))
        except (ssl.SSLError, ValueError) as exc:
            raise ConfigError(f"remote target `{self.name}`: ca_bundle {path} holds no usable "
                              f"PEM certificate ({exc})") from None

    # -- errors ----------------------------------------------------------------------------

    def _error(self, kind: ErrorKind, what: str, *, status: Optional[int] = None,
               retry_after: Optional[float] = None) -> RemoteTargetError:
        # Server-chosen text (error bodies, model ids, content types) is escaped and the key
        # redacted here, once: the message goes to logs, route_reason and failover.reason.
        message = for_log(f"{self.name} at {self.url}: {what}", self._secrets(), limit=600)
        return RemoteTargetError(message, kind=kind, url=self.url, status=status,
                                 retry_after_s=retry_after)

    def _secrets(self) -> tuple[str, ...]:
        return (self._api_key.reveal(),) if self._api_key is not None else ()

    def _safe(self, text: object, limit: int = 200) -> str:
        """A server-chosen string fit for a log line (escaped, key redacted, shortened)."""
        return for_log(text, self._secrets(), limit)

    def _connect_error(self, exc: BaseException) -> RemoteTargetError:
        where = f"{self._host}:{self._port}"
        if isinstance(exc, _ResolveTimeout):
            return self._error("connect", f"cannot resolve host {self._host} within "
                                          f"{self._cfg.connect_timeout_s:g} s (connect_timeout_s)")
        if isinstance(exc, ssl.SSLCertVerificationError):
            fix = (f"the CA in ca_bundle ({self._cfg.ca_bundle}) did not sign it"
                   if self._cfg.ca_bundle else
                   "set ca_bundle to the PEM file of the CA that signed it (a private CA)")
            reason = exc.verify_message or exc.reason or "verification failed"
            return self._error("tls", f"its TLS certificate could not be verified ({reason}): "
                                      f"{fix}")
        if isinstance(exc, ssl.SSLError):
            hint = (": is it a plain http:// server?" if exc.reason == "WRONG_VERSION_NUMBER"
                    else "")
            return self._error("tls", f"the TLS handshake failed ({exc.reason or exc}){hint}")
        if isinstance(exc, socket.gaierror):
            return self._error("connect", f"cannot resolve host {self._host} "
                                          f"({exc.strerror or exc})")
        if isinstance(exc, ConnectionRefusedError):
            return self._error("connect", f"connection refused: nothing is listening at {where}")
        if isinstance(exc, TimeoutError):
            return self._error("connect", f"no connection to {where} within "
                                          f"{self._cfg.connect_timeout_s:g} s (connect_timeout_s)")
        if isinstance(exc, OSError):
            return self._error("connect", f"cannot connect to {where} "
                                          f"({exc.strerror or exc.__class__.__name__})")
        return self._error("connect", f"cannot connect to {where} ({exc.__class__.__name__})")

    def _status_error(self, status: int, headers: Mapping[str, str], raw: bytes,
                      action: str) -> RemoteTargetError:
        said = " ".join(_error_message(raw).split())[:200]
        said = f": {said}" if said else ""
        if status in (401, 403):
            fix = (f"check the key in ${self._cfg.api_key_env}" if self._api_key is not None
                   else "it needs an API key: set api_key_env to the variable that holds it")
            verb = "refused the API key" if status == 401 else "denied access"
            return self._error("auth", f"{verb} (HTTP {status}{said}); {fix}", status=status)
        if status == 429:
            wait = retry_after_s(headers)
            when = f"; try again in {wait:.0f} s" if wait is not None else ""
            return self._error("rate_limit", f"rate limit reached (HTTP 429{said}){when}",
                               status=status, retry_after=wait)
        if status == 404:
            return self._error("http", f"{action} found nothing (HTTP 404{said}): check that "
                                       "base_url ends in /v1 and the model id", status=status)
        if status >= 500:
            return self._error("http", f"server error on {action} (HTTP {status}{said})",
                               status=status)
        return self._error("http", f"{action} was rejected (HTTP {status}{said})", status=status)

    # -- connections ---------------------------------------------------------------------------

    def _open(self, cancel: Optional[threading.Event] = None) -> http.client.HTTPConnection:
        """A new connection within ``connect_timeout_s`` in total: name resolution, TCP to each
        address in turn and the TLS handshake share one deadline."""
        timeout = self._cfg.connect_timeout_s
        conn = http.client.HTTPConnection(self._host, self._port, timeout=timeout)
        conn.auto_open = 0  # type: ignore[attr-defined]  # we connect, count and time it
        start = time.perf_counter()
        try:
            conn.sock = self._connect_socket(time.monotonic() + timeout, cancel)
        except (OSError, ssl.SSLError) as exc:
            conn.close()
            raise self._connect_error(exc) from None
        self.last_connect_ms = (time.perf_counter() - start) * 1000.0
        self.connections_opened += 1
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        log.debug("%s: connected to %s:%d in %.1f ms%s", self.name, self._host, self._port,
                  self.last_connect_ms, " (TLS)" if self._https else "")
        return conn

    def _connect_socket(self, deadline: float,
                        cancel: Optional[threading.Event]) -> socket.socket:
        last: Optional[BaseException] = None
        for family, kind, proto, _name, address in _resolve(self._host, self._port, deadline):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            sock = socket.socket(family, kind, proto)
            try:
                _connect(sock, address, deadline, cancel)
                if self._ssl is None:
                    return sock
                # The handshake is many reads: the watchdog bounds them together.
                guard = _Watchdog(sock, cancel or threading.Event(), deadline)
                try:
                    sock.settimeout(max(deadline - time.monotonic(), 0.001))
                    wrapped = self._ssl.wrap_socket(sock, server_hostname=self._host)
                except (OSError, ssl.SSLError):
                    if guard.fired is not None:
                        raise TimeoutError("TLS handshake past the deadline") from None
                    raise
                finally:
                    guard.stop()
                if guard.fired is not None:
                    wrapped.close()
                    raise TimeoutError("TLS handshake past the deadline")
                return wrapped
            except TimeoutError:
                sock.close()
                raise
            except (OSError, ssl.SSLError) as exc:
                sock.close()
                if isinstance(exc, ssl.SSLError):
                    raise
                last = exc
        if last is not None:
            raise last
        raise TimeoutError("connect deadline")

    def _checkout(self, cancel: Optional[threading.Event] = None) -> http.client.HTTPConnection:
        """The kept-alive connection if it is idle and still open, else a new one."""
        with self._lock:
            if self._closed:
                raise self._error("closed", "the target is closed")
            conn, self._idle = self._idle, None
        if conn is not None and (conn.sock is None or _dropped(conn.sock)):
            log.debug("%s: the server closed the idle connection; reconnecting", self.name)
            conn.close()
            conn = None
        self.reused_connection = conn is not None
        if conn is None:
            conn = self._open(cancel)
        with self._lock:
            if self._closed:
                conn.close()
                raise self._error("closed", "the target is closed")
            self._active.add(conn.sock)
        return conn

    def _checkin(self, conn: http.client.HTTPConnection, sock: socket.socket,
                 reusable: bool) -> None:
        with self._lock:
            self._active.discard(sock)
            if (reusable and conn.sock is not None and not self._closed
                    and self._idle is None):
                self._idle = conn
                return
        conn.close()

    def _headers(self, accept: str, body: bool) -> dict[str, str]:
        headers = {"Accept": accept, "User-Agent": USER_AGENT}
        if body:
            headers["Content-Type"] = "application/json"
        if self._api_key is not None:
            headers["Authorization"] = "Bearer " + self._api_key.reveal()
        return headers

    def _path(self, endpoint: str) -> str:
        return f"{self._prefix}{endpoint}"

    def _note_rate_limits(self, resp: http.client.HTTPResponse) -> dict[str, str]:
        headers = {k.lower(): v for k, v in resp.getheaders()}
        limits = {self._safe(k, 80): self._safe(v, 80) for k, v in headers.items()
                  if k.startswith("x-ratelimit-")}
        if limits:
            self.rate_limits = limits
        return headers

    def _ready(self) -> None:
        if self._closed:
            raise self._error("closed", "the target is closed")
        if self._key_problem:
            raise self._error("auth", self._key_problem)

    # -- ChatTarget ----------------------------------------------------------------------------

    @property
    def last_stats(self) -> Optional[StreamStats]:
        return self._last_stats

    def describe(self) -> TargetInfo:
        cfg = self._cfg
        return TargetInfo(
            name=self.name,
            kind=self.kind,
            model=cfg.model or "",
            device="remote",
            details={
                "base_url": self.url,
                "tls": self._https,
                "verify_tls": cfg.verify_tls,
                "ca_bundle": cfg.ca_bundle,
                "api_key_env": cfg.api_key_env,
                "api_key_set": self._api_key is not None,
                "connect_timeout_s": cfg.connect_timeout_s,
                "first_token_timeout_s": cfg.first_token_timeout_s,
                "stall_timeout_s": cfg.stall_timeout_s,
                "max_completion_tokens": cfg.max_completion_tokens,
                "extra_body_keys": sorted(cfg.extra_body),
                "server_models": self.server_models,
                "connections_opened": self.connections_opened,
                "last_connect_ms": _round(self.last_connect_ms),
                "last_probe_ms": _round(self.last_probe_ms),
                "rate_limits": dict(self.rate_limits),
            },
        )

    def __repr__(self) -> str:
        return f"OpenAITarget(name={self.name!r}, url={self.url!r}, model={self._cfg.model!r})"

    def connect(self) -> None:
        """Open the kept-alive connection now if there is none (say after a cancelled stream
        closed it), so the next turn does not pay for TCP and TLS set-up."""
        self._ready()
        conn = self._checkout()
        self._checkin(conn, conn.sock, reusable=True)

    def warm_up(self) -> None:
        """Connect, and check with ``GET {base_url}/models`` that the server serves our model.

        Leaves the connection open for the first turn. Raises ``RemoteTargetError`` naming the
        URL and the model when the server is unreachable, refuses the key or lacks the model.
        """
        rtt = self.probe()
        log.info("%s: %s serves %s (connect %s, models %.0f ms)", self.name, self.url,
                 self._cfg.model,
                 "reused" if self.last_connect_ms is None else f"{self.last_connect_ms:.0f} ms",
                 rtt)

    def probe(self) -> float:
        """``GET {base_url}/models`` on the kept-alive connection: the round trip in ms.

        For the router's half-open circuit breaker and RTT estimate. Raises
        ``RemoteTargetError`` when the server is unreachable, refuses the key, or does not list
        the configured model (a server without a models list only gets a warning).
        """
        self._ready()
        self.last_connect_ms = None
        conn = self._checkout()
        sock = conn.sock
        reusable = False
        limit_s = self._cfg.first_token_timeout_s
        # One deadline for the whole answer: a per-read timeout would let a server that sends a
        # byte a second hold the caller for as long as it likes.
        watchdog = _Watchdog(sock, threading.Event(), time.monotonic() + limit_s)
        try:
            sock.settimeout(limit_s + 1.0)  # a backstop: the watchdog ends every wait
            start = time.perf_counter()
            try:
                conn.request("GET", self._path("/models"),
                             headers=self._headers("application/json", body=False))
                resp = conn.getresponse()
                raw = resp.read(MAX_MODELS_BODY + 1)
            except (OSError, http.client.HTTPException, ValueError) as exc:
                watchdog.stop()
                if self._closed:
                    raise self._error("closed", "the target was closed during GET /models") \
                        from None
                if watchdog.fired == "deadline" or isinstance(exc, TimeoutError):
                    raise self._error("timeout", f"no complete answer to GET /models within "
                                      f"{limit_s:g} s") from None
                raise self._error("cut", f"the connection failed during GET /models "
                                  f"({_describe_exc(exc)})") from None
            watchdog.stop()
            if watchdog.fired is not None:
                raise self._error("timeout", f"no complete answer to GET /models within "
                                  f"{limit_s:g} s")
            rtt = (time.perf_counter() - start) * 1000.0
            headers = self._note_rate_limits(resp)
            reusable = resp.isclosed() and not resp.will_close
            if resp.status == 404:
                log.warning("%s: %s has no /models list; cannot check that it serves %s",
                            self.name, self.url, self._cfg.model)
            elif resp.status != 200:
                raise self._status_error(resp.status, headers, raw, "GET /models")
            else:
                self._check_model(raw)
        finally:
            watchdog.stop()
            self._checkin(conn, sock, reusable)
        self.last_probe_ms = rtt
        return rtt

    def _check_model(self, raw: bytes) -> None:
        try:
            data = json.loads(raw)
            models = [self._safe(m["id"], 120) for m in data["data"]
                      if isinstance(m, dict) and "id" in m]
        except (ValueError, KeyError, TypeError):
            raise self._error("protocol", "GET /models did not answer with an OpenAI model "
                              "list") from None
        self.server_models = models
        model = self._cfg.model
        if not models:
            log.warning("%s: %s lists no models; cannot check that it serves %s", self.name,
                        self.url, model)
        elif model not in models:
            shown = ", ".join(models[:10]) + (", ..." if len(models) > 10 else "")
            raise self._error("model_missing", f"the server does not serve model {model!r} "
                              f"(it lists: {shown}); set model to one of those")

    def stream(self, messages: list[Message], cancel: threading.Event) -> Iterator[str]:
        """Stream the reply; see ``ChatTarget.stream``. One request, never retried.

        Raises ``RemoteTargetError`` on any failure: connect, TLS, auth, HTTP status, an error
        event in the stream, no first token within ``first_token_timeout_s``, no token for
        ``stall_timeout_s``, a stream cut before its end, or bytes that are not a chat stream.
        """
        self._ready()
        return self._stream(messages, cancel)

    def _body(self, messages: list[Message]) -> bytes:
        cfg = self._cfg
        if cfg.fold_system_prompt:
            messages = fold_system_prompt(messages)
        body: dict[str, Any] = {"model": cfg.model, "messages": messages, "stream": True}
        if cfg.max_tokens_field in ("max_completion_tokens", "both"):
            body["max_completion_tokens"] = cfg.max_completion_tokens
        if cfg.max_tokens_field in ("max_tokens", "both"):
            body["max_tokens"] = cfg.max_completion_tokens
        body.update(cfg.extra_body)
        return json.dumps(body, ensure_ascii=False).encode("utf-8")

    def _stream(self, messages: list[Message], cancel: threading.Event) -> Iterator[str]:
        cfg = self._cfg
        start = time.perf_counter()
        self._last_stats = None
        self.last_time_info = self.last_usage = None
        stats = StreamStats(0, 0, 0, 0, None, 0.0, "error")
        run = _Run()
        try:
            if cancel.is_set():
                stats.finish_reason = "cancelled"
                return
            body = self._body(messages)
            self.last_connect_ms = None
            try:
                conn = self._checkout(cancel)
            except RemoteTargetError:
                if cancel.is_set():  # cancelled while connecting: not the server's failure
                    stats.finish_reason = "cancelled"
                    return
                raise
            sock = conn.sock
            watchdog = _Watchdog(sock, cancel, time.monotonic() + cfg.first_token_timeout_s)
            reusable = False
            resp: Optional[http.client.HTTPResponse] = None
            try:
                # A backstop only: the watchdog ends every wait at its deadline.
                sock.settimeout(max(cfg.first_token_timeout_s, cfg.stall_timeout_s) + 1.0)
                try:
                    conn.request("POST", self._path("/chat/completions"), body,
                                 self._headers("text/event-stream", body=True))
                    resp = conn.getresponse()
                except (OSError, http.client.HTTPException) as exc:
                    self._read_failed(exc, watchdog, cancel, run, before_answer=True)
                    stats.finish_reason = "cancelled"
                    return
                headers = self._note_rate_limits(resp)
                if resp.status != 200:
                    raw = self._read_error_body(resp, watchdog, cancel, run)
                    if cancel.is_set():
                        stats.finish_reason = "cancelled"
                        return
                    reusable = resp.isclosed() and not resp.will_close
                    raise self._status_error(resp.status, headers, raw, "POST /chat/completions")
                ctype = headers.get("content-type", "")
                if ctype and "text/event-stream" not in ctype.lower():
                    raise self._error("protocol", f"the answer is {ctype.split(';')[0]}, not an "
                                      "event stream")
                decoder = SseDecoder()
                while not run.done:
                    try:
                        chunk = resp.read1(READ_BYTES)
                    except (OSError, http.client.HTTPException, ValueError) as exc:
                        self._read_failed(exc, watchdog, cancel, run, before_answer=False)
                        stats.finish_reason = "cancelled"
                        return
                    if not chunk:
                        tail = self._ended(decoder, watchdog, cancel, run)
                        if cancel.is_set():
                            stats.finish_reason = "cancelled"
                            return
                        if tail:  # a last event without its closing blank line
                            if stats.first_token_ms is None:
                                stats.first_token_ms = (time.perf_counter() - start) * 1000.0
                            stats.completion_tokens += 1
                            tail = tail if run.spoken else tail.lstrip()
                            if tail:
                                yield tail
                        break
                    try:
                        events = decoder.feed(chunk)
                    except SseError as exc:
                        raise self._error("protocol", f"the answer is not an event stream: "
                                          f"{exc}") from None
                    for event in events:
                        if run.done:
                            break  # nothing after [DONE] counts
                        run.progress = False
                        delta = self._event(event, run)
                        if run.progress:
                            watchdog.deadline = time.monotonic() + cfg.stall_timeout_s
                        if not delta:
                            continue
                        if stats.first_token_ms is None:
                            stats.first_token_ms = (time.perf_counter() - start) * 1000.0
                        stats.completion_tokens += 1
                        if not run.spoken:  # like the local target: no leading whitespace
                            delta = delta.lstrip()
                            run.spoken = bool(delta)
                            if not delta:
                                continue
                        watchdog.deadline = math.inf  # the consumer's time is not a stall
                        yield delta
                        if cancel.is_set():
                            stats.finish_reason = "cancelled"
                            return
                        watchdog.deadline = time.monotonic() + cfg.stall_timeout_s
                        if stats.completion_tokens >= cfg.max_completion_tokens + \
                                LIMIT_SLACK_TOKENS:
                            log.warning("%s: the server ignores the reply limit; stopped after "
                                        "%d deltas (try max_tokens_field)", self.name,
                                        stats.completion_tokens)
                            run.finish_reason = "length"
                            run.done = True
                            run.stopped_early = True
                            break
                if run.done and not run.stopped_early:
                    reusable = self._drain(resp, watchdog, cfg.stall_timeout_s)
                stats.finish_reason = "length" if run.finish_reason == "length" else "stop"
            finally:
                watchdog.stop()
                if resp is not None and not reusable:
                    resp.close()
                self._checkin(conn, sock, reusable)
        except GeneratorExit:  # the consumer stopped iterating: treat as cancelled
            stats.finish_reason = "cancelled"
            raise
        finally:
            self._finish(stats, start, run)

    def _read_failed(self, exc: BaseException, watchdog: _Watchdog, cancel: threading.Event,
                     run: _Run, *, before_answer: bool) -> None:
        """Returns when the read ended because of ``cancel``; else raises the right error."""
        watchdog.stop()
        if watchdog.fired == "cancel" or cancel.is_set():
            return
        if self._closed:
            raise self._error("closed", "the target was closed while answering")
        if watchdog.fired == "deadline" or isinstance(exc, TimeoutError):
            raise self._timeout_error(run)
        if before_answer:
            raise self._error("cut", "the server closed the connection without answering "
                              f"({_describe_exc(exc)})")
        raise self._cut_error(run, exc)

    def _timeout_error(self, run: _Run) -> RemoteTargetError:
        cfg = self._cfg
        if not run.active:
            return self._error("first_token", f"no token within {cfg.first_token_timeout_s:g} "
                               "s of sending the request (first_token_timeout_s)")
        return self._error("stall", f"the stream stalled: no token for {cfg.stall_timeout_s:g} "
                           f"s (stall_timeout_s) after {run.deltas} tokens")

    def _cut_error(self, run: _Run, exc: BaseException) -> RemoteTargetError:
        return self._error("cut", f"the connection closed mid-answer after {run.deltas} tokens, "
                           f"before the end of the stream ({_describe_exc(exc)})")

    def _read_error_body(self, resp: http.client.HTTPResponse, watchdog: _Watchdog,
                         cancel: threading.Event, run: _Run) -> bytes:
        try:
            return resp.read(MAX_ERROR_BODY)
        except (OSError, http.client.HTTPException, ValueError) as exc:
            if isinstance(exc, http.client.IncompleteRead):
                return exc.partial
            self._read_failed(exc, watchdog, cancel, run, before_answer=False)
            return b""

    def _ended(self, decoder: SseDecoder, watchdog: _Watchdog, cancel: threading.Event,
               run: _Run) -> str:
        """The body ended before ``[DONE]``: complete if a finish reason came, else cut.

        Returns the text of a last event that lacked its closing blank line, if any.
        """
        watchdog.stop()
        if watchdog.fired == "cancel" or cancel.is_set():
            return ""
        if self._closed:
            raise self._error("closed", "the target was closed while answering")
        if watchdog.fired == "deadline":
            raise self._timeout_error(run)
        try:
            last = decoder.finish()
        except SseError as exc:
            raise self._error("protocol", f"the answer is not an event stream: {exc}") from None
        text = self._event(last, run) if last is not None else ""
        if not run.done:
            if run.finish_reason is None:
                raise self._error("cut", f"the stream ended after {run.deltas} tokens without "
                                  "finishing (no [DONE]): the server failed while answering; "
                                  "its log says why")
            log.debug("%s: the stream ended without [DONE] after its finish reason", self.name)
            run.done = True
        return text

    def _drain(self, resp: http.client.HTTPResponse, watchdog: _Watchdog, wait_s: float) -> bool:
        """Read the body's end after ``[DONE]`` so the connection can carry the next request."""
        watchdog.deadline = time.monotonic() + wait_s
        try:
            while resp.read1(READ_BYTES):
                pass
        except (OSError, http.client.HTTPException, ValueError):
            return False
        return resp.isclosed() and not resp.will_close and watchdog.fired is None

    def _event(self, event: SseEvent, run: _Run) -> str:
        """Handle one event; return its reply text ("" for none). Raises on error events."""
        if event.event == "error":
            raise self._stream_error(event.data)
        if event.event not in ("message", ""):
            return ""  # named events we do not know (pings and the like) carry no text
        if event.data.strip() == "[DONE]":
            run.done = True
            return ""
        try:
            data = json.loads(event.data)
        except ValueError:
            raise self._error("protocol", "the stream sent data that is not JSON: "
                              f"{event.data[:60]!r}") from None
        if not isinstance(data, dict):
            raise self._error("protocol", f"the stream sent {type(data).__name__}, not a "
                              "completion chunk")
        if "error" in data:
            raise self._stream_error(data)
        if isinstance(data.get("usage"), dict):
            self.last_usage = data["usage"]
        if isinstance(data.get("time_info"), dict):
            # Server-named keys: one echoing the API key must not carry it any further.
            self.last_time_info = {self._safe(k, 40): v for k, v in data["time_info"].items()}
        choices = data.get("choices")
        if choices is None:
            if "usage" in data or "time_info" in data:
                return ""
            raise self._error("protocol", "the stream sent a chunk without choices")
        if not isinstance(choices, list):
            raise self._error("protocol", "the stream sent a chunk whose choices is not a list")
        text = ""
        for choice in choices:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            if choice.get("finish_reason"):
                run.finish_reason = str(choice["finish_reason"])
            delta = choice.get("delta") or {}
            if not isinstance(delta, dict):
                continue
            content = delta.get("content")
            if isinstance(content, str):
                content = speakable(content)  # lone surrogates, control characters
            if isinstance(content, str) and content:
                text += content
                run.active = run.progress = True
            elif delta.get("reasoning") or delta.get("reasoning_content"):
                run.active = run.progress = True  # working, though with nothing to speak
        if text:
            run.deltas += 1
        return text

    def _stream_error(self, payload: Any) -> RemoteTargetError:
        """An error the server sent inside the stream (data ``{"error"}`` or ``event: error``)."""
        if isinstance(payload, str):
            try:
                payload = json.loads(payload)
            except ValueError:
                payload = {"error": payload}
        status = None
        if isinstance(payload, dict):
            raw_status = payload.get("status_code")
            err = payload.get("error", payload)
            if isinstance(err, dict):
                raw_status = raw_status or err.get("status_code") or err.get("code")
            status = raw_status if isinstance(raw_status, int) else None
            message = _error_message(json.dumps(payload).encode())
        else:
            message = str(payload)
        message = " ".join(message.split())[:200] or "no details"
        code = f" {status}" if status else ""
        return self._error("server_error", f"the server reported an error{code} mid-stream: "
                           f"{message}", status=status)

    def _finish(self, stats: StreamStats, start: float, run: _Run) -> None:
        stats.total_ms = (time.perf_counter() - start) * 1000.0
        usage = self.last_usage or {}
        try:
            if usage.get("prompt_tokens") is not None:
                stats.prompt_tokens = int(usage["prompt_tokens"])
            if usage.get("completion_tokens") is not None:
                stats.completion_tokens = int(usage["completion_tokens"])
            details = usage.get("prompt_tokens_details") or {}
            stats.cached_tokens = int(details.get("cached_tokens") or 0)
        except (TypeError, ValueError, AttributeError):
            pass
        stats.evaluated_tokens = max(0, stats.prompt_tokens - stats.cached_tokens)
        self._last_stats = stats
        speed = stats.tokens_per_s
        server = self.last_time_info or {}
        server_txt = ""
        if server:
            parts = [f"{str(k).removesuffix('_time')} {float(v) * 1000:.0f} ms"
                     for k, v in server.items()
                     if str(k).endswith("_time") and isinstance(v, (int, float))
                     and math.isfinite(float(v))]
            server_txt = f"; server {', '.join(parts)}"
        log.info("%s: first token %s; %d tokens in %.0f ms%s; %s%s%s", self.name,
                 "-" if stats.first_token_ms is None else f"{stats.first_token_ms:.0f} ms",
                 stats.completion_tokens, stats.total_ms,
                 f" ({speed:.1f} tok/s)" if speed else "", stats.finish_reason,
                 "" if self.reused_connection else " (new connection)", server_txt)

    # -- lifetime ------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the kept-alive connection and cut any stream in flight (idempotent)."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, None
            active = list(self._active)
        if idle is not None:
            idle.close()
        for sock in active:
            try:
                socket.socket.shutdown(sock, socket.SHUT_RDWR)
            except OSError:
                pass

    def __enter__(self) -> OpenAITarget:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


class _Run:
    """What one stream has seen so far."""

    __slots__ = ("done", "active", "progress", "spoken", "deltas", "finish_reason",
                 "stopped_early")

    def __init__(self) -> None:
        self.done = False  # [DONE] seen (or the end of a complete stream)
        self.active = False  # a token (text or reasoning) arrived: the stall clock applies
        self.progress = False  # the event being handled carried a token
        self.spoken = False  # some non-blank text was yielded
        self.deltas = 0
        self.finish_reason: Optional[str] = None
        self.stopped_early = False


def fold_system_prompt(messages: list[Message]) -> list[Message]:
    """The system message moved to the start of the first user message (as the local target
    does for templates without a system role)."""
    if len(messages) < 2 or messages[0]["role"] != "system" or messages[1]["role"] != "user":
        return messages
    system, first = messages[0]["content"], messages[1]
    if not system.strip():
        return messages[1:]
    merged = {**first, "content": system + SYSTEM_FOLD_SEPARATOR + first["content"]}
    return [merged, *messages[2:]]


def _describe_exc(exc: BaseException) -> str:
    if isinstance(exc, http.client.IncompleteRead):
        return "incomplete chunk"
    if isinstance(exc, http.client.RemoteDisconnected):
        return "closed by the server"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    text = str(exc).strip()
    return f"{exc.__class__.__name__}: {text}"[:120] if text else exc.__class__.__name__


def _is_loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


def _round(value: Optional[float]) -> Optional[float]:
    return None if value is None else round(value, 1)
