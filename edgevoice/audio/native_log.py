"""ALSA's own messages routed into Python ``logging``, off the terminal.

libasound reports problems it recovers from (an underrun, a missing plugin, the dozen PCMs that
PortAudio probes while listing devices) by calling one process-global error handler, whose
default prints ``ALSA lib pcm.c:8570:(snd_pcm_recover) underrun occurred`` to stderr. We install
our own handler with ``snd_lib_error_set_handler``: each message becomes a DEBUG record of the
``edgevoice.audio.alsa`` logger (shown with ``-vv``, never otherwise).

The handler is variadic in C: ``(file, line, function, err, fmt, ...)``. A ctypes callback
cannot be variadic, and without a ``va_list`` libc's ``vsnprintf`` cannot help either. We declare
the five fixed arguments plus ``_EXTRA`` pointer-sized ones: on the Linux calling conventions
(x86-64 System V, i386, AArch64, 32-bit ARM EABI) variadic integer and pointer arguments are
passed exactly like named ones, so the extras hold the message's arguments in order (slots the
caller did not fill hold junk that nothing reads). ``_format`` then fills in ``fmt`` itself, and
only when every conversion in it is an integer, a character, a string or a pointer that we can
read safely; a format with anything else (a ``double``, a ``*`` width, more arguments than
``_EXTRA``) is logged as the raw format string rather than guessed at. ALSA exists only on
Linux; elsewhere (or without libasound) nothing is installed.

The callback runs on whichever thread libasound reports from, possibly PortAudio's audio
thread, so it does as little as it can: it returns at once unless DEBUG is enabled for the logger.
While sounddevice starts PortAudio it points file descriptor 2 at /dev/null (its own way of
hiding this chatter), so ``alsa_messages_held`` keeps those messages back and logs them after.

PortAudio's own diagnostics (``Expression '...' failed in 'src/hostapi/alsa/pa_linux_alsa.c'``)
are a different matter: they are written with ``fprintf(stderr)`` and the hook to redirect them,
``PaUtil_SetDebugPrintFunction``, is not exported by the distributions' libportaudio. They only
appear when opening a device fails, beside our own one-sentence error. Redirecting the C
library's ``stderr`` for the whole process would hide them, but also the last words of a crash
(an assertion, ``ggml_abort``), so we do not.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import re
import sys
import threading
from collections.abc import Iterator
from typing import Any, Optional

log = logging.getLogger("edgevoice.audio.alsa")

_EXTRA = 8  # variadic arguments read per message (ALSA's messages use at most four or so)
_POINTER_BITS = ctypes.sizeof(ctypes.c_void_p) * 8
_CONVERSION = re.compile(
    r"%(?P<flags>[-+ #0]*)(?P<width>\d*)(?:\.(?P<precision>\d+))?"
    r"(?P<length>hh|h|ll|l|z|j|t)?(?P<conv>[diouxXcsp%])"
)
_LONG = {"l", "z", "j", "t", "ll"}  # one pointer-sized slot each on LP64; "ll" is two on ILP32

_HANDLER_TYPE = ctypes.CFUNCTYPE(
    None, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
    *([ctypes.c_void_p] * _EXTRA),
)

_lock = threading.Lock()
_handler: Any = None  # the ctypes callback; must stay referenced while libasound may call it
_libasound: Optional[ctypes.CDLL] = None
_held: Optional[list[str]] = None  # messages kept back while stderr is silenced (see below)


def _as_int(value: Optional[int], bits: int, signed: bool) -> int:
    value = (value or 0) & ((1 << bits) - 1)
    if signed and value >= 1 << (bits - 1):
        value -= 1 << bits
    return value


def _format(fmt: str, args: tuple[Optional[int], ...]) -> Optional[str]:
    """``fmt`` % ``args`` the way printf would, or None when that is not safe to do.

    ``args`` are the raw pointer-sized variadic slots. Strings are read from memory only after
    the whole format has been checked, so an unsupported conversion never dereferences a slot.
    """
    pieces: list[tuple[str, Optional[re.Match[str]]]] = []
    pos = 0
    needed = 0
    for match in re.finditer(r"%", fmt):
        if match.start() < pos:
            continue  # the second % of a "%%"
        conv = _CONVERSION.match(fmt, match.start())
        if conv is None:
            return None  # "%f", "%*d", "%n", ...: not ours to guess
        if conv["length"] == "ll" and _POINTER_BITS == 32 and conv["conv"] not in "s%":
            return None  # a 64-bit value in two slots: not worth the risk
        pieces.append((fmt[pos:match.start()], None))
        pieces.append(("", conv))
        if conv["conv"] != "%":
            needed += 1
        pos = conv.end()
    pieces.append((fmt[pos:], None))
    if needed > len(args):
        return None
    out: list[str] = []
    slots = iter(args)
    for text, conv in pieces:
        if conv is None:
            out.append(text)
            continue
        kind = conv["conv"]
        if kind == "%":
            out.append("%")
            continue
        raw = next(slots)
        spec = f"%{conv['flags']}{conv['width']}"
        if conv["precision"] is not None:
            spec += f".{conv['precision']}"
        if kind == "s":
            value: Any = ("(null)" if not raw
                          else ctypes.string_at(raw).decode("utf-8", errors="replace"))
            out.append((spec + "s") % value)
        elif kind == "p":
            out.append((spec.split(".")[0] + "s") % (f"0x{raw:x}" if raw else "(nil)"))
        elif kind == "c":
            out.append((spec.split(".")[0] + "s") % chr(_as_int(raw, 8, False)))
        else:
            length = conv["length"] or ""
            bits = {"hh": 8, "h": 16}.get(length, _POINTER_BITS if length in _LONG else 32)
            signed = kind in "di"
            out.append((spec + ("d" if kind in "diu" else kind)) % _as_int(raw, bits, signed))
    return "".join(out)


def _describe(file: Optional[bytes], line: int, function: Optional[bytes], err: int,
              fmt: Optional[bytes], args: tuple[Optional[int], ...]) -> str:
    text = (fmt or b"").decode("utf-8", errors="replace")
    message = _format(text, args)
    if message is None:
        message = text
    if err and _libasound is not None:
        strerror = _libasound.snd_strerror(err)
        message += f": {strerror.decode('utf-8', errors='replace') if strerror else err}"
    where = (file or b"?").decode("utf-8", errors="replace")
    func = (function or b"?").decode("utf-8", errors="replace")
    return f"{where}:{line} ({func}): {message.rstrip()}"


def _on_alsa_error(file: Optional[bytes], line: int, function: Optional[bytes], err: int,
                   fmt: Optional[bytes], *args: Optional[int]) -> None:
    try:
        if log.isEnabledFor(logging.DEBUG):
            text = _describe(file, line, function, err, fmt, args)  # pointers valid only now
            with _lock:
                if _held is not None:
                    _held.append(text)
                    return
            log.debug("%s", text)
    except Exception:  # noqa: BLE001 - an exception here would be printed by ctypes to stderr
        pass


@contextlib.contextmanager
def alsa_messages_held() -> Iterator[None]:
    """Route ALSA's messages (see ``route_alsa_messages``) and log the ones that arrive inside
    the block only when it ends.

    For ``import sounddevice``: it points file descriptor 2 at /dev/null while PortAudio
    initializes, which would swallow our log records of the very messages (the probing of
    every ALSA PCM) that ``-vv`` is for.
    """
    global _held
    route_alsa_messages()
    with _lock:
        outer, _held = _held, [] if _held is None else _held
    try:
        yield
    finally:
        with _lock:
            held, _held = _held, outer
        if outer is None:
            for text in held or []:
                log.debug("%s", text)


def _load_libasound() -> Optional[ctypes.CDLL]:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL("libasound.so.2")
    except OSError:
        name = ctypes.util.find_library("asound")
        try:
            return ctypes.CDLL(name) if name else None
        except OSError:
            return None


def route_alsa_messages() -> bool:
    """Send libasound's error messages to ``logging`` (DEBUG) instead of stderr. Idempotent.

    Call it before PortAudio initializes (``edgevoice.audio.devices`` does, around its import
    of sounddevice: ``alsa_messages_held``), so that device probing is covered too. Returns
    whether a handler is installed: False where there is no libasound (not Linux, no ALSA).
    """
    global _handler, _libasound
    with _lock:
        if _handler is not None:
            return True
        lib = _load_libasound()
        if lib is None:
            return False
        try:
            set_handler = lib.snd_lib_error_set_handler
        except AttributeError:
            return False
        lib.snd_strerror.restype = ctypes.c_char_p
        lib.snd_strerror.argtypes = [ctypes.c_int]
        set_handler.restype = ctypes.c_int
        set_handler.argtypes = [_HANDLER_TYPE]
        handler = _HANDLER_TYPE(_on_alsa_error)
        if set_handler(handler) != 0:
            return False
        _libasound, _handler = lib, handler
        return True
