"""Choose and build the recognizer from config: vosk when a model is there, else pocketsphinx."""

from __future__ import annotations

import logging
from pathlib import Path

from edgevoice.asr.protocol import Recognizer
from edgevoice.asr.vosk_backend import DEFAULT_VOSK_MODEL, missing_model_error
from edgevoice.config import AsrConfig, Paths
from edgevoice.errors import ModelError, UserError

log = logging.getLogger(__name__)


def _vosk_folder(cfg: AsrConfig, paths: Paths) -> tuple[Path, bool]:
    """The vosk model folder to use and whether the user named it explicitly."""
    if cfg.vosk_model:
        from edgevoice.modelstore.resolve import resolve_model

        # A path, or a name: a catalog model or a folder in the models dir (never downloads).
        return resolve_model(cfg.vosk_model, "asr", paths), True
    return paths.models / DEFAULT_VOSK_MODEL, False


def make_recognizer(cfg: AsrConfig, paths: Paths, sample_rate: int = 16000) -> Recognizer:
    """Build the configured backend; log which one and how to get the better one."""
    folder, explicit = _vosk_folder(cfg, paths)
    backend = cfg.backend
    if backend == "auto":
        if folder.is_dir() or explicit:
            backend = "vosk"
        else:
            backend = "pocketsphinx"
            log.info(
                "speech recognition: pocketsphinx (bundled model); for better accuracy run "
                "`edgevoice models pull %s`", DEFAULT_VOSK_MODEL)
    if backend == "vosk":
        if not folder.is_dir():
            from edgevoice.modelstore.resolve import pull_hint

            pull = pull_hint(cfg.vosk_model or DEFAULT_VOSK_MODEL, paths)
            if pull:
                raise ModelError(f"vosk model folder {folder} does not exist; {pull}, or set "
                                 "`asr.backend: pocketsphinx`")
            raise missing_model_error(folder, "does not exist")
        try:
            from edgevoice.asr.vosk_backend import VoskRecognizer
        except ImportError:  # pragma: no cover - vosk is a core dependency
            raise UserError("the vosk package is not installed: `pip install vosk`") from None
        rec = VoskRecognizer(folder, sample_rate)
        log.info("speech recognition: vosk, model %s", folder)
        return rec
    from edgevoice.asr.pocketsphinx_backend import PocketsphinxRecognizer

    if cfg.backend == "pocketsphinx":
        log.info("speech recognition: pocketsphinx (bundled model)")
    return PocketsphinxRecognizer(sample_rate)
