"""Recognizer contracts on the real engines, and streaming accuracy on real recorded speech."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from edgevoice.asr.pocketsphinx_backend import PocketsphinxRecognizer
from edgevoice.asr.select import make_recognizer
from edgevoice.audio.format import AudioChunk
from edgevoice.audio.wavfile import iter_chunks, read_audio
from edgevoice.config import AsrConfig, Config, Paths, VadConfig
from edgevoice.ear.transcriber import StreamingTranscriber, transcribe_chunks
from edgevoice.errors import ModelError
from edgevoice.evaluation import asr_clips, corpus_wer, read_manifest, speech_dir

SPEECH = speech_dir()
needs_speech = pytest.mark.skipif(
    SPEECH is None,
    reason="speech clips not found: set EDGEVOICE_SPEECH_DIR or add ../shared/speech",
)


def _paths(tmp_path: Path) -> Paths:
    return Paths(models=tmp_path / "models", cache=tmp_path / "cache", logs=tmp_path / "logs")


def _recognizers(tmp_path):
    yield PocketsphinxRecognizer()
    folder = os.environ.get("EDGEVOICE_VOSK_MODEL")
    if folder:
        from edgevoice.asr.vosk_backend import VoskRecognizer

        yield VoskRecognizer(Path(folder))


@needs_speech
def test_recognizer_contract_partials_final_words_and_reuse(tmp_path):
    audio = read_audio(SPEECH / "pocketsphinx__goforward.wav")
    for rec in _recognizers(tmp_path):
        partials = []
        for c in iter_chunks(audio, 30):
            rec.accept(c)
            partials.append(rec.partial())
        assert any(p for p in partials), f"{rec.name}: no partial while speaking"
        assert "forward" in partials[-1]
        final = rec.finish()
        assert final.is_final
        assert final.text.split()[:3] == ["go", "forward", "ten"], (rec.name, final.text)
        assert [w.text for w in final.words] == final.text.split()
        times = [t for w in final.words for t in (w.start, w.end)]
        assert times == sorted(times) and 0 <= times[0] and times[-1] <= audio.duration_ms / 1000
        # The same instance decodes the next utterance (pocketsphinx's running cepstral mean
        # adapts between utterances, so the words may differ slightly, not the start).
        for c in iter_chunks(audio, 30):
            rec.accept(c)
        assert rec.finish().text.split()[:3] == ["go", "forward", "ten"]
        # reset() abandons an utterance; finish() with no audio is an empty final transcript.
        rec.accept(AudioChunk(audio.data[:32000]))
        rec.reset()
        assert rec.finish().text == ""


def test_pocketsphinx_rejects_wrong_format():
    rec = PocketsphinxRecognizer()
    stereo = AudioChunk.from_samples(np.zeros((160, 2), dtype=np.int16), 16000)
    with pytest.raises(ValueError, match="16000 Hz mono"):
        rec.accept(stereo)


def test_auto_picks_pocketsphinx_without_a_vosk_model(tmp_path, caplog):
    caplog.set_level("INFO")
    rec = make_recognizer(AsrConfig(), _paths(tmp_path))
    assert rec.name == "pocketsphinx"
    assert "edgevoice models pull vosk-model-small-en-us-0.15" in caplog.text


@pytest.mark.parametrize("backend", ["auto", "vosk"])
def test_missing_vosk_model_names_folder_and_fetch_command(tmp_path, backend):
    missing = tmp_path / "nope"
    with pytest.raises(ModelError) as info:
        make_recognizer(AsrConfig(backend=backend, vosk_model=str(missing)), _paths(tmp_path))
    assert str(missing) in str(info.value)
    assert "edgevoice models pull" in str(info.value)


def test_broken_vosk_model_folder_is_a_clear_error(tmp_path):
    broken = tmp_path / "models" / "vosk-model-small-en-us-0.15"
    broken.mkdir(parents=True)
    (broken / "README").write_text("not a model")
    with pytest.raises(ModelError, match="not a vosk model"):
        make_recognizer(AsrConfig(backend="vosk"), _paths(tmp_path))


def _batch_text(rec, audio: AudioChunk) -> str:
    rec.accept(audio)
    return rec.finish().text


def _streaming_text(rec, audio: AudioChunk, vad: VadConfig) -> str:
    transcriber = StreamingTranscriber(vad, rec)
    return " ".join(u.text for u in transcribe_chunks(iter_chunks(audio, 30), transcriber))


@needs_speech
def test_streaming_wer_is_within_003_of_batch_decoding():
    """Endpointing must not cost accuracy: same engine, whole clip vs our streaming pipeline."""
    rec = PocketsphinxRecognizer()
    vad = Config().vad
    batch, streaming = [], []
    for clip in asr_clips(SPEECH):
        audio = read_audio(clip.path)
        batch.append((clip.reference, _batch_text(rec, audio)))
        streaming.append((clip.reference, _streaming_text(rec, audio, vad)))
    batch_wer, streaming_wer = corpus_wer(batch), corpus_wer(streaming)
    print(f"pocketsphinx WER: batch {batch_wer:.3f}, streaming {streaming_wer:.3f}")
    assert batch_wer < 0.5, "the engine itself is broken"
    assert streaming_wer <= batch_wer + 0.03


@needs_speech
def test_noise_yields_no_words():
    rec = PocketsphinxRecognizer()
    vad = Config().vad
    noise_clips = [c for c in read_manifest(SPEECH) if c.category == "noise"]
    assert noise_clips
    rng = np.random.default_rng(1)
    generated = [
        AudioChunk.from_samples((rng.normal(0, 3000, 16000 * 5)).astype(np.int16), 16000),
        AudioChunk.from_samples((rng.normal(0, 300, 16000 * 5)).astype(np.int16), 16000),
    ]
    for audio in [read_audio(c.path) for c in noise_clips] + generated:
        assert _streaming_text(rec, audio, vad) == ""
    # ...while the same settings do hear speech (the gate is not simply closed).
    speech = read_audio(SPEECH / "pocketsphinx__goforward.wav")
    assert "forward" in _streaming_text(rec, speech, vad)
