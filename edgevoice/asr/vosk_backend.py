"""vosk (Kaldi) backend: better accuracy, needs a downloaded model folder."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from edgevoice.asr.protocol import Transcript, Word
from edgevoice.audio.format import AudioChunk
from edgevoice.errors import ModelError

log = logging.getLogger(__name__)

DEFAULT_VOSK_MODEL = "vosk-model-small-en-us-0.15"


def missing_model_error(folder: Path, reason: str) -> ModelError:
    return ModelError(
        f"vosk model folder {folder} {reason}; fetch one with "
        f"`edgevoice models pull {DEFAULT_VOSK_MODEL}`, or set `asr.backend: pocketsphinx`"
    )


def looks_like_vosk_model(folder: Path) -> bool:
    """A vosk model folder has an acoustic model (am/final.mdl) and a graph or a config."""
    return (folder / "am" / "final.mdl").is_file() or (folder / "final.mdl").is_file()


_MODELS: dict[Path, object] = {}


def load_model(folder: Path):
    """Load (once per process) a ``vosk.Model``; recognizers share it."""
    import vosk

    folder = folder.expanduser().resolve()
    if folder in _MODELS:
        return _MODELS[folder]
    if not folder.is_dir():
        raise missing_model_error(folder, "does not exist")
    if not looks_like_vosk_model(folder):
        raise missing_model_error(folder, "is not a vosk model (no am/final.mdl inside)")
    vosk.SetLogLevel(-1)
    try:
        model = vosk.Model(str(folder))
    except Exception as exc:  # vosk raises a bare Exception("Failed to create a model")
        raise missing_model_error(folder, f"could not be loaded ({exc})") from None
    _MODELS[folder] = model
    return model


class VoskRecognizer:
    """Streams audio into a ``KaldiRecognizer``; word times and confidences from ``SetWords``."""

    name = "vosk"

    def __init__(self, model_folder: Path, sample_rate: int = 16000) -> None:
        import vosk

        self.sample_rate = sample_rate
        self.model_folder = model_folder
        self._model = load_model(model_folder)
        self._rec = vosk.KaldiRecognizer(self._model, float(sample_rate))
        self._rec.SetWords(True)
        self._segments: list[dict] = []

    def accept(self, chunk: AudioChunk) -> None:
        if chunk.format.rate != self.sample_rate or chunk.format.channels != 1:
            raise ValueError(f"vosk expects {self.sample_rate} Hz mono, got {chunk.format}")
        if self._rec.AcceptWaveform(chunk.data):
            # vosk found its own endpoint inside our utterance: keep the segment and go on.
            self._segments.append(json.loads(self._rec.Result()))

    def partial(self) -> str:
        partial = json.loads(self._rec.PartialResult()).get("partial", "")
        done = " ".join(s.get("text", "") for s in self._segments if s.get("text"))
        return " ".join(t for t in (done, partial) if t)

    def finish(self) -> Transcript:
        self._segments.append(json.loads(self._rec.FinalResult()))
        words = tuple(
            Word(w["word"], float(w["start"]), float(w["end"]), float(w.get("conf", 1.0)))
            for seg in self._segments
            for w in seg.get("result", [])
        )
        self._segments = []
        text = " ".join(w.text for w in words)
        return Transcript(text, is_final=True, words=words)

    def reset(self) -> None:
        self._rec.Reset()
        self._segments = []

    def close(self) -> None:
        self.reset()
