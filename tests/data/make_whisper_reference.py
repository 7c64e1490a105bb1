"""Regenerate whisper_reference.npz: Hugging Face's WhisperFeatureExtractor on fixed inputs.

Run once in a scratch environment with ``pip install transformers numpy`` (no torch needed):

    python tests/data/make_whisper_reference.py

Stores, for each input, every 5th frame of the (1, 80, 800) features and whole-array statistics,
computed exactly as Smart Turn's inference code calls the extractor (chunk_length=8, the audio
already cut/padded to the last 8 s with zeros in front, do_normalize=True).
"""

import sys
import wave
from pathlib import Path

import numpy as np
from transformers import WhisperFeatureExtractor

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))
from tests.test_turn_detector import synthetic_signal  # noqa: E402

SPEECH = HERE.parents[2] / "shared" / "speech"


def last_8s(samples: np.ndarray) -> np.ndarray:
    x = samples.astype(np.float32) / 32768.0
    n = 8 * 16000
    return x[-n:] if x.size >= n else np.concatenate([np.zeros(n - x.size, np.float32), x])


def main() -> None:
    fe = WhisperFeatureExtractor(chunk_length=8)
    inputs = {"synthetic": synthetic_signal()}
    with wave.open(str(SPEECH / "pocketsphinx__goforward.wav")) as w:
        inputs["goforward"] = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    out = {}
    for name, samples in inputs.items():
        feats = fe(last_8s(samples), sampling_rate=16000, return_tensors="np",
                   padding="max_length", max_length=8 * 16000, truncation=True,
                   do_normalize=True).input_features.astype(np.float32)
        out[f"{name}_every5"] = feats[0, :, ::5]
        out[f"{name}_stats"] = np.array([feats.mean(), feats.std(), feats.min(), feats.max()])
        out[f"{name}_shape"] = np.array(feats.shape)
    np.savez_compressed(HERE / "whisper_reference.npz", **out)


if __name__ == "__main__":
    main()
