"""Shared fixtures."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgevoice.devtools import pulse as pulse_helpers


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight Gemma 2 GGUF (~430 KB) that llama.cpp loads in milliseconds.

    Written once per session by ``edgevoice.devtools.gguf_model``; says gibberish, so tests
    assert structure, not content, and bound generation with ``max_tokens``.
    """
    pytest.importorskip(
        "gguf", reason="gguf is not installed (test extra: pip install -e '.[test]')"
    )
    from edgevoice.devtools.gguf_model import write_tiny_gemma2

    return write_tiny_gemma2(tmp_path_factory.mktemp("gguf") / "tiny-gemma2.gguf")


@pytest.fixture(scope="session")
def tiny_gemma4_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Gemma 4 GGUF (arch ``gemma4``: per-layer embeddings, sliding pattern,
    shared-KV layers, thought-channel tokens) with a Gemma 4 chat template; loads in ~60 ms."""
    pytest.importorskip(
        "gguf", reason="gguf is not installed (test extra: pip install -e '.[test]')"
    )
    from edgevoice.devtools.gguf_gemma4 import write_tiny_gemma4

    return write_tiny_gemma4(tmp_path_factory.mktemp("gguf") / "tiny-gemma4.gguf")


@pytest.fixture(scope="session")
def chatty_gemma4_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Gemma 4, made to emit its thought-channel markers often (tests of filtering)."""
    pytest.importorskip(
        "gguf", reason="gguf is not installed (test extra: pip install -e '.[test]')"
    )
    from edgevoice.devtools.gguf_gemma4 import write_tiny_gemma4

    path = tmp_path_factory.mktemp("gguf") / "chatty-gemma4.gguf"
    return write_tiny_gemma4(path, chatty_thoughts=True)


@pytest.fixture
def pulse() -> Iterator[pulse_helpers.PulseServer]:
    """A private PulseAudio server with null sinks ``vmic`` and ``vspk``.

    Skips when PulseAudio is not installed. Run code that opens devices in a subprocess with
    ``pulse.env``: PortAudio enumerates devices once per process.
    """
    try:
        pulse_helpers.check_installed()
    except pulse_helpers.PulseUnavailable as exc:
        pytest.skip(str(exc))
    root = Path(tempfile.mkdtemp(prefix="evpa-"))  # short: unix socket paths max ~107 bytes
    server = pulse_helpers.PulseServer(root)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def speech_folder() -> Path:
    """The shared real speech clips (``$EDGEVOICE_SPEECH_DIR`` or ``<repo>/../shared/speech``)."""
    from edgevoice.evaluation import speech_dir

    folder = speech_dir()
    if folder is None:
        pytest.skip(
            "real speech clips not found: set EDGEVOICE_SPEECH_DIR to a folder with MANIFEST.tsv "
            "(see shared/speech/README.md) or put it at <repo>/../shared/speech"
        )
    return folder
