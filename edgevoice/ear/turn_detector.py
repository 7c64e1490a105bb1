"""The learned end-of-turn stage: is the user done, or only pausing?

At a short pause inside an utterance (``SpeechPause`` from ``edgevoice.ear.endpoint``, after
``vad.pause_ms`` of silence) the caller gives a detector the utterance's last <= 8 s of audio,
the pause so far included, and gets the probability that the turn is complete. Policy (the
caller's; see ``benchmarks/turn_eval.py``): ``p >= turn.threshold`` ends the turn now; otherwise
keep listening (the next pause comes only after speech resumes), and ``turn.fallback_ms`` of
silence ends it anyway.

API:
- ``TurnDetector`` (protocol): ``probability(audio: np.ndarray, text: str = "") -> float`` with
  ``audio`` int16 mono 16 kHz (the utterance's end, pause included; longer input is cut to its
  last ``max_audio_s``) and ``text`` the words heard so far (a hint; detectors may ignore it).
- ``SmartTurn(path, *, threads=1, max_audio_s=8.0)``: Smart Turn v3.x (pipecat-ai, BSD-2-Clause)
  through onnxruntime's CPU provider; features from ``edgevoice.ear.whisper_features``. Ignores
  ``text``. ``SmartTurn.name`` is the model file's stem.
- ``TextHinted(inner, cap=0.2)``: wraps a detector; when ``text`` ends in a word a complete
  sentence rarely ends in (``ends_incomplete``: "and", "the", "to", ...), the probability is
  at most ``cap``.
- ``ends_incomplete(text) -> bool`` and ``INCOMPLETE_ENDINGS``.
- ``load_turn_detector(cfg: TurnConfig, models_dir: Path) -> SmartTurn | None``: per
  ``turn.detector``: ``off`` -> None; ``auto`` -> the detector, or None with ONE log line saying
  what is missing and what ``edgevoice models pull smart-turn-v3.2`` gives; ``on`` -> the
  detector or a ``ModelError`` with the same text.
- ``resolve_turn_model(model, models_dir) -> Path``: a path as given, or a catalog name's place
  in the models dir (where ``edgevoice models pull`` puts it).

Pure and clock-free apart from the model call: nothing here reads a clock or keeps state
between calls, so the same audio always gives the same probability. onnxruntime is imported only
when a model is loaded.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from edgevoice.ear.whisper_features import MAX_SECONDS, SAMPLE_RATE, smart_turn_features
from edgevoice.errors import ModelError

if TYPE_CHECKING:
    from edgevoice.config import TurnConfig

log = logging.getLogger(__name__)

DEFAULT_MODEL = "smart-turn-v3.2"
INPUT_NAME = "input_features"


class TurnDetector(Protocol):
    def probability(self, audio: np.ndarray, text: str = "") -> float:
        """P(turn complete) for the end of an utterance: int16 mono 16 kHz, pause included."""
        ...


class SmartTurn:
    """Smart Turn v3.x ONNX model on onnxruntime's CPU provider.

    Session options for latency on a small machine: sequential execution, one inter-op thread,
    ``threads`` intra-op threads, all graph optimisations (the QDQ int8 nodes are fused into
    integer kernels; without that a call costs ~1.7x), and no spinning of idle pool threads
    (spinning would burn a core between calls). On the 2 shared AVX2 cores of the dev machines
    one thread cost less CPU than two and was as fast or faster in 3 of 4 runs
    (``benchmarks/turn_eval.py --bench``); a call (features + model) took 85-175 ms of CPU
    there, far above the vendor's ~12 ms on CPUs with int8 dot-product instructions.

    Where that time goes (onnxruntime's profiler, 2026-12): the model run is ~90-120 ms of CPU,
    70 % of it in QLinearMatMul and QLinearSoftmax over a fixed 400-token sequence (the export
    accepts exactly 800 feature frames, so shorter audio cannot be cheaper); the features cost
    3 ms (2 s of speech) to 17 ms (8 s) since frames in the front padding are computed once and
    no BLAS call is made (they were 27-36 ms, plus up to ~40 ms of waiting on OpenBLAS's
    threads). Tried and dropped: 2 intra-op threads or spinning (more CPU, no faster on busy
    cores), basic/extended optimisation (up to 2x slower), no memory arena, denormals as zero,
    QDQ clean-up, int8 kept signed, approximate GELU (all within noise), and the QDQ nodes left
    unfused so the weights run in float32 (``session.disable_quant_qdq``: 1.5x slower); no
    float32 export is on PyPI (the ``pipecat-ai`` wheel ships only this int8 file).
    """

    def __init__(self, path: str | Path, *, threads: int = 1,
                 max_audio_s: float = MAX_SECONDS) -> None:
        import onnxruntime as ort

        if not 0 < max_audio_s <= MAX_SECONDS:
            raise ValueError(f"max_audio_s must be in (0, {MAX_SECONDS:g}], got {max_audio_s}")
        self.path = Path(path)
        self.name = self.path.stem.removesuffix("-cpu")
        self.max_audio_s = float(max_audio_s)
        so = ort.SessionOptions()
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.inter_op_num_threads = 1
        so.intra_op_num_threads = max(1, int(threads))
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.log_severity_level = 3  # errors only: no optimizer chatter on stderr
        self._session = ort.InferenceSession(str(self.path), sess_options=so,
                                             providers=["CPUExecutionProvider"])
        inputs = {i.name: i.shape for i in self._session.get_inputs()}
        if INPUT_NAME not in inputs:
            raise ValueError(f"{self.path} has no `{INPUT_NAME}` input (inputs: "
                             f"{', '.join(inputs)}): not a Smart Turn v3 model")

    def probability(self, audio: np.ndarray, text: str = "") -> float:
        del text  # audio only
        a = np.asarray(audio)
        keep = int(round(self.max_audio_s * SAMPLE_RATE))
        if a.size > keep:
            a = a[-keep:]
        features = smart_turn_features(a, MAX_SECONDS)
        (out,) = self._session.run(None, {INPUT_NAME: features})
        return float(np.asarray(out).reshape(-1)[0])


# Words an English sentence almost never ends with: articles, conjunctions, "to", "of",
# possessive determiners, contracted subjects, fillers. Prepositions that double as particles
# ("turn the lights on", "log in") and auxiliaries ("yes it is") are left out on purpose.
INCOMPLETE_ENDINGS = frozenset("""
a an the and or but nor because if than whether although unless of to my your our their whose
i'm you're we're they're i'll we'll you'll they'll i'd we'd i've we've um uh er erm
""".split())
_WORDS = re.compile(r"[a-z']+")


def ends_incomplete(text: str) -> bool:
    """True when the last word of ``text`` is one of ``INCOMPLETE_ENDINGS``."""
    words = _WORDS.findall(text.lower())
    return bool(words) and words[-1] in INCOMPLETE_ENDINGS


class TextHinted:
    """A detector whose probability is ``cap`` when the words so far end incomplete (see
    ``ends_incomplete``), without asking it: with ``cap`` under the threshold the verdict is the
    same as capping its answer."""

    def __init__(self, inner: TurnDetector, cap: float = 0.2) -> None:
        self.inner = inner
        self.cap = float(cap)
        self.name = f"{getattr(inner, 'name', type(inner).__name__)}+text"

    def probability(self, audio: np.ndarray, text: str = "") -> float:
        if ends_incomplete(text):
            return self.cap  # the model is not asked: its ~100 ms are saved, it could not win
        return self.inner.probability(audio, text)


def resolve_turn_model(model: str, models_dir: Path) -> Path:
    """An existing path as given; else a catalog name's target in ``models_dir``; else a bare
    file name in ``models_dir``; else the path as given (the caller checks it exists)."""
    raw = Path(model).expanduser()
    if raw.exists():
        return raw
    bare = "/" not in model and "\\" not in model and not model.startswith("~")
    if not bare:
        return raw
    from edgevoice.modelstore.resolve import bundled_catalog

    entry = bundled_catalog().get(model)
    return Path(models_dir) / (entry.target if entry is not None else model)


PULL_TEXT = (f"`edgevoice models pull {DEFAULT_MODEL}` gives Smart Turn v3.2 (8.7 MB, "
             "BSD-2-Clause), which ends a turn at a short pause when the speech sounds finished")


def load_turn_detector(cfg: TurnConfig, models_dir: Path) -> SmartTurn | None:
    """The configured detector, or None (see the module docstring)."""
    if cfg.detector == "off":
        return None
    problem = None
    path = resolve_turn_model(cfg.model, Path(models_dir))
    if not path.is_file():  # checked first: no start-up cost for onnxruntime without a model
        problem = f"no end-of-turn model at {path}: {PULL_TEXT}"
    else:
        try:
            import onnxruntime  # noqa: F401
        except ImportError as exc:
            problem = (f"the learned end-of-turn detector needs onnxruntime ({exc}): "
                       "`pip install onnxruntime`")
    if problem is None:
        try:
            return SmartTurn(path, threads=cfg.threads, max_audio_s=cfg.max_audio_s)
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
            problem = (f"cannot load the end-of-turn model {path} ({type(exc).__name__}: "
                       f"{' '.join(str(exc).split())[:200]}): download it again with "
                       f"`edgevoice models pull {DEFAULT_MODEL}`")
    if cfg.detector == "on":
        raise ModelError(problem + " (or set `turn.detector: auto` to fall back to silence)")
    log.info("%s; until then turns end after silence alone", problem)
    return None
