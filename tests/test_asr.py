"""Recognizer contracts on the real engines, and streaming accuracy on real recorded speech."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _vosk import INSTALL_HINT, vosk_model

from edgevoice.asr.pocketsphinx_backend import PocketsphinxRecognizer
from edgevoice.asr.select import make_recognizer
from edgevoice.audio.format import AudioChunk
from edgevoice.audio.wavfile import iter_chunks, read_audio
from edgevoice.config import AsrConfig, Config, Paths, VadConfig
from edgevoice.ear.endpoint import UtteranceSegmenter
from edgevoice.ear.transcriber import (
    Partial,
    Pause,
    Resume,
    StreamingTranscriber,
    Utterance,
    transcribe_chunks,
)
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
    """(recognizer, whether its words can be checked): pocketsphinx, and the test vosk model
    (tests/_vosk.py: the Korean one unless EDGEVOICE_VOSK_MODEL names another)."""
    yield PocketsphinxRecognizer(), True
    model = vosk_model()
    assert model is not None, INSTALL_HINT
    from edgevoice.asr.vosk_backend import VoskRecognizer

    yield VoskRecognizer(model.folder), model.english


@needs_speech
def test_recognizer_contract_partials_final_words_and_reuse(tmp_path):
    audio = read_audio(SPEECH / "pocketsphinx__goforward.wav")
    for rec, english in _recognizers(tmp_path):
        partials = []
        for c in iter_chunks(audio, 30):
            rec.accept(c)
            partials.append(rec.partial())
        assert any(p for p in partials), f"{rec.name}: no partial while speaking"
        assert "forward" in partials[-1] or not english
        final = rec.finish()
        assert final.is_final and final.text
        first = final.text.split()[:3]
        assert first == ["go", "forward", "ten"] or not english, (rec.name, final.text)
        assert [w.text for w in final.words] == final.text.split()
        times = [t for w in final.words for t in (w.start, w.end)]
        assert times == sorted(times) and 0 <= times[0] and times[-1] <= audio.duration_ms / 1000
        # The same instance decodes the next utterance (pocketsphinx's running cepstral mean
        # adapts between utterances, so the words may differ slightly, not the start).
        for c in iter_chunks(audio, 30):
            rec.accept(c)
        again = rec.finish()
        assert again.text and (again.text.split()[:3] == first or not english)
        # Word times count from the start of this utterance, not of the recognizer's life.
        assert 0 <= again.words[0].start < audio.duration_ms / 1000
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


def _streaming_text(rec, audio: AudioChunk, vad: VadConfig) -> str:
    transcriber = StreamingTranscriber(vad, rec)
    return " ".join(u.text for u in transcribe_chunks(iter_chunks(audio, 30), transcriber))


@needs_speech
def test_streaming_wer_is_within_003_of_batch_decoding():
    """Streaming must not cost accuracy: pocketsphinx's own batch decoding of each whole clip
    (fresh default Decoder, full_utt) vs our streaming pipeline, a fresh recognizer per clip."""
    vad = Config().vad
    batch, streaming = [], []
    for clip in asr_clips(SPEECH):
        audio = read_audio(clip.path)
        batch.append((clip.reference, _pocketsphinx_batch(audio)))
        streaming.append((clip.reference, _streaming_text(PocketsphinxRecognizer(), audio, vad)))
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


# --- pocketsphinx: per-utterance cepstral mean, streaming as accurate as batch -------------


def _pocketsphinx_batch(audio: AudioChunk) -> str:
    """pocketsphinx's own whole-file decoding: a fresh default Decoder, full_utt=True."""
    from pocketsphinx import Decoder

    from edgevoice.asr.pocketsphinx_backend import _is_filler

    decoder = Decoder(samprate=16000, loglevel="FATAL")
    decoder.start_utt()
    decoder.process_raw(audio.data, False, True)
    decoder.end_utt()
    return " ".join(s.word.split("(")[0] for s in decoder.seg() if not _is_filler(s.word))


def _scaled(audio: AudioChunk, gain: float, noise_rms: float = 0.0) -> AudioChunk:
    x = audio.samples().astype(np.float64) * gain
    x += np.random.default_rng(7).normal(0, noise_rms, len(x)) if noise_rms else 0
    return AudioChunk.from_samples(np.clip(np.round(x), -32768, 32767).astype(np.int16), 16000)


def test_the_cmn_estimator_measures_the_mean_the_full_dictionary_would(speech_folder):
    """The estimator loads a one-word dictionary (cmudict's 135,000 words cost ~21 MB of RSS
    per recognizer); the cepstral mean comes from the front end alone, so it must not change."""
    from pocketsphinx import Decoder

    rec = PocketsphinxRecognizer()
    full = Decoder(samprate=16000, loglevel="FATAL", keyphrase="oh", kws_threshold=1e-30)
    assert rec._estimator.config["dict"] != full.config["dict"]  # the small one is in use
    for name in ("pocketsphinx__goforward.wav", "speechbrain__spk1_snt1.wav"):
        data = read_audio(speech_folder / name).data[: 16000 * 2]
        full.reinit_feat()
        full.start_utt()
        full.process_raw(data, True, True)
        expected = full.get_cmn(False)
        full.end_utt()
        assert rec._estimate_cmn(data) == expected


def test_same_file_same_text_after_other_files(speech_folder):
    """What was transcribed before (louder, quieter, noisy files) must not change the words:
    pocketsphinx's live cepstral mean used to carry from one utterance into the next."""
    vad = Config().vad
    clips = [read_audio(speech_folder / n) for n in
             ("pocketsphinx__goforward.wav", "speechbrain__spk1_snt1.wav")]
    other = read_audio(speech_folder / "pocketsphinx__cards_005.wav")
    before = [_scaled(other, 6.0), _scaled(other, 0.05), _scaled(other, 1.0, noise_rms=1500.0)]
    fresh = [_streaming_text(PocketsphinxRecognizer(), clip, vad) for clip in clips]
    assert all(fresh), fresh
    for pre in before:
        rec = PocketsphinxRecognizer()
        _streaming_text(rec, pre, vad)
        assert [_streaming_text(rec, clip, vad) for clip in clips] == fresh


def test_short_utterance_gets_a_final(speech_folder):
    """Under a second of speech: the held-back audio is decoded at the pause / at finish()."""
    audio = read_audio(speech_folder / "pocketsphinx__cards_001.wav")  # "ten of clubs", 1.1 s
    vad = Config().vad
    events = list(StreamingTranscriber(vad, PocketsphinxRecognizer()).handle(
        UtteranceSegmenter(vad).feed(AudioChunk(b"\0\0" * 8000 + audio.data + b"\0\0" * 16000))))
    finals = [e for e in events if isinstance(e, Utterance)]
    assert len(finals) == 1 and "clubs" in finals[0].text, events
    # finish() before the lookahead window has filled decodes what it holds.
    rec = PocketsphinxRecognizer()
    rec.accept(AudioChunk(audio.data[: 16000 * 2 * 9 // 10]))
    assert rec.partial() == ""
    final = rec.finish()
    assert final.text and final.words and final.words[0].start >= 0


def test_partials_arrive_during_a_long_utterance(speech_folder):
    audio = read_audio(speech_folder / "pocketsphinx__librivox_sense_and_sensibility_0870.wav")
    transcriber = StreamingTranscriber(Config().vad, PocketsphinxRecognizer())
    events = [e for c in iter_chunks(audio, 30) for e in transcriber.feed(c)]
    events += list(transcriber.flush())
    partials = [e for e in events if isinstance(e, Partial)]
    finals = [e for e in events if isinstance(e, Utterance)]
    assert finals and len(partials) >= 5
    assert events.index(partials[0]) < events.index(finals[0])


# --- pocketsphinx: one decode through the pauses of an utterance (finals at pauses) -------


def _feed(rec: PocketsphinxRecognizer, data: bytes) -> None:
    for i in range(0, len(data), 960):
        rec.accept(AudioChunk(data[i:i + 960]))


def test_checkpoint_is_the_final_and_does_not_end_the_utterance(speech_folder):
    """At a pause, checkpoint() is what finish() gives when only silence follows; and it ends
    nothing: the speech after it is decoded in the same utterance."""
    first = read_audio(speech_folder / "pocketsphinx__goforward.wav")
    second = read_audio(speech_folder / "pocketsphinx__cards_005.wav")  # "eight of spades ..."
    pause, rest = b"\0\0" * 16 * 240, b"\0\0" * 16 * 400
    rec = PocketsphinxRecognizer()
    _feed(rec, first.data + pause)
    at_pause = rec.checkpoint()
    assert "forward" in at_pause.text.split()
    _feed(rec, rest)
    final = rec.finish()
    assert final.text == at_pause.text
    assert [w.text for w in final.words] == [w.text for w in at_pause.words]
    # the same again, the speaker going on after the pause: one utterance with both
    _feed(rec, first.data + pause)
    assert rec.checkpoint().text == at_pause.text
    _feed(rec, second.data)
    words = rec.finish().text.split()
    assert "forward" in words and "spades" in words
    assert rec.checkpoint().text == ""  # no utterance open


def test_a_reset_utterance_leaves_nothing_behind(speech_folder):
    """reset() after a checkpoint (the transcriber's end of an utterance that ended in a pause):
    the next utterance decodes as on a fresh recognizer, the held-back start included."""
    clip = read_audio(speech_folder / "pocketsphinx__cards_005.wav")
    other = read_audio(speech_folder / "speechbrain__spk1_snt1.wav")
    alone = PocketsphinxRecognizer()
    _feed(alone, other.data)
    expected = alone.finish().text
    rec = PocketsphinxRecognizer()
    _feed(rec, _scaled(clip, 0.1).data)
    assert rec.checkpoint().text
    rec.reset()
    head = AudioChunk(other.data[: 16000 * 2 * 9 // 10])  # 0.9 s: under the lookahead window
    rec.accept(head)
    assert rec.partial() == ""
    _feed(rec, other.data[len(head.data):])
    assert rec.finish().text == expected and expected


def _trimmed(audio: AudioChunk) -> AudioChunk:
    """The clip from its first to its last 30 ms frame within 30 dB of its loudest."""
    x = audio.samples()
    n = len(x) // 480
    energy = (x[: n * 480].reshape(n, 480).astype(np.float64) ** 2).mean(axis=1)
    loud = np.flatnonzero(energy > energy.max() * 1e-3)
    return AudioChunk.from_samples(x[loud[0] * 480: (loud[-1] + 1) * 480], 16000)


def test_finals_at_pauses_decode_through_the_pause(speech_folder):
    """The transcriber takes a checkpoint at the pause and the recognizer goes on decoding when
    the speaker does: one utterance, one decode, both clips' words."""
    a = _trimmed(read_audio(speech_folder / "pocketsphinx__goforward.wav"))
    b = _trimmed(read_audio(speech_folder / "pocketsphinx__cards_005.wav"))
    gap = b"\0\0" * 16 * 350
    # "meters" fades out: with 100 ms more, the VAD hears ~480 ms of silence between the clips,
    # a pause (``vad.pause_ms``) and not an end (600 ms).
    audio = AudioChunk(gap * 2 + a.data + b"\0\0" * 1600 + b.data + gap * 3)
    rec = PocketsphinxRecognizer()
    calls = []
    for name in ("checkpoint", "finish"):
        method = getattr(rec, name)
        setattr(rec, name, lambda m=method, n=name: (calls.append(n), m())[1])
    transcriber = StreamingTranscriber(Config().vad, rec)
    events = [e for c in iter_chunks(audio, 30) for e in transcriber.feed(c)]
    events += list(transcriber.flush())
    finals = [e for e in events if isinstance(e, Utterance)]
    assert len(finals) == 1, events
    words = finals[0].text.split()
    assert "forward" in words and "spades" in words, finals[0].text
    assert "checkpoint" in calls and calls.count("finish") <= 1, calls
    assert any(isinstance(e, Resume) for e in events)
    pauses = [e for e in events if isinstance(e, Pause) and e.final]
    # One of them is the gap between the clips (at 150 ms, "go ... forward" has one of its own).
    assert any("forward" in p.text.split() and "spades" not in p.text.split() for p in pauses)
    times = [t for w in finals[0].transcript.words for t in (w.start, w.end)]
    assert times == sorted(times)
