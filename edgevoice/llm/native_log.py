"""llama.cpp's native log routed into Python ``logging``, and its Python-side prints silenced.

llama.cpp writes its model-loading report (hundreds of lines) through one process-global log
callback. llama-cpp-python's own callback prints to stderr, and its ``verbose=False`` "fix"
``dup2``s the whole process's file descriptors 1 and 2 to /dev/null while loading — which would
also swallow our own output and any other thread's. Instead we install a callback that turns
each native line into a DEBUG record of the ``edgevoice.llama_cpp`` logger (quiet unless asked
for), and remember the last error lines so a failed load can say why.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import io
import logging
import sys
import threading
from collections.abc import Iterator
from typing import Any

log = logging.getLogger("edgevoice.llama_cpp")

# ggml's enum ggml_log_level in the llama.cpp bundled with llama-cpp-python 0.3.x (checked:
# loader lines arrive as 2 and "error loading model" as 4; llama_cpp/_logger.py's table is stale).
_GGML_LEVEL_NAMES = {0: "none", 1: "debug", 2: "info", 3: "warn", 4: "error"}
_GGML_ERROR = 4
_GGML_CONT = 5

_lock = threading.Lock()
_pending: list[str] = []  # a line in progress (llama.cpp sends some lines in pieces)
_pending_level = 2
_recent_errors: collections.deque[str] = collections.deque(maxlen=8)
_callback: Any = None  # the ctypes callback; must stay referenced while llama.cpp may call it


def _on_native_log(level: int, text: bytes | None, _user_data: ctypes.c_void_p) -> None:
    try:
        _handle(level, text)
    except Exception:  # noqa: BLE001 - an exception here would be printed by ctypes to stderr
        pass


def _handle(level: int, text: bytes | None) -> None:
    global _pending_level
    piece = (text or b"").decode("utf-8", errors="replace")
    lines: list[tuple[int, str]] = []
    with _lock:
        if level != _GGML_CONT:
            if _pending:  # a new message starts: flush the unfinished one
                lines.append((_pending_level, "".join(_pending)))
                _pending.clear()
            _pending_level = level
        _pending.append(piece)
        joined = "".join(_pending)
        if "\n" in joined:
            *done, rest = joined.split("\n")
            lines += [(_pending_level, line) for line in done]
            _pending[:] = [rest] if rest else []
        for lvl, line in lines:
            if lvl == _GGML_ERROR and line.strip():
                _recent_errors.append(line.strip())
    for lvl, line in lines:
        if line.strip():
            log.debug("[%s] %s", _GGML_LEVEL_NAMES.get(lvl, lvl), line.rstrip())


def route_native_logs() -> None:
    """Send llama.cpp's (and ggml's) native log into ``logging`` at DEBUG. Idempotent.

    Call it after ``import llama_cpp`` (whose import installs llama-cpp-python's printing
    callback) and before loading a model; re-installing is cheap and undoes anyone who replaced it.
    """
    global _callback
    import llama_cpp

    if _callback is None:
        _callback = llama_cpp.llama_log_callback(_on_native_log)
    llama_cpp.llama_log_set(_callback, ctypes.c_void_p(0))


def take_recent_errors() -> list[str]:
    """The native error lines logged since the last call (for a failed load's message)."""
    with _lock:
        errors = list(_recent_errors)
        _recent_errors.clear()
    return errors


class _LogStream(io.TextIOBase):
    """A text stream whose lines become DEBUG records (for llama-cpp-python's own prints)."""

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger
        self._buf = ""

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        self._buf += s
        *lines, self._buf = self._buf.split("\n")
        for line in lines:
            if line.strip():
                self._logger.debug("%s", line if len(line) < 2000 else line[:2000] + " …")
        return len(s)

    def flush(self) -> None:
        if self._buf.strip():
            self._logger.debug("%s", self._buf)
        self._buf = ""


class _SysProxy:
    """Stands in for the ``sys`` module inside one module: stdout/stderr go to logging."""

    def __init__(self, stream: _LogStream) -> None:
        self.stdout = stream
        self.stderr = stream

    def __getattr__(self, name: str) -> Any:
        return getattr(sys, name)


@contextlib.contextmanager
def quiet_llama_prints() -> Iterator[None]:
    """Route ``print(..., file=sys.stderr)`` calls made by ``llama_cpp.llama`` into logging.

    With ``verbose=True`` (the only setting that does not redirect the process's file
    descriptors) ``Llama()`` prints its system info, the model metadata and the chat template. We
    rebind the ``sys`` name *inside that one module* for the duration, so nothing else in the
    process — other threads, our own stderr — is touched.
    """
    import llama_cpp.llama as llama_module

    stream = _LogStream(logging.getLogger("edgevoice.llama_cpp.python"))
    original = llama_module.sys
    llama_module.sys = _SysProxy(stream)  # type: ignore[assignment]
    try:
        yield
    finally:
        llama_module.sys = original
        stream.flush()
