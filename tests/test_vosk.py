"""The vosk backend on a real model, through the pieces users use (make_recognizer, the ear,
`edgevoice transcribe`).

The model is tests/_vosk.py's: the Korean small model of the test extra unless
EDGEVOICE_VOSK_MODEL names another. It hears our English clips as Korean words, so these tests
assert mechanics (partials, finals, word times, grammars, errors, determinism), never words.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _vosk import INSTALL_HINT, vosk_model

from edgevoice.asr.select import make_recognizer
from edgevoice.asr.vosk_backend import VoskRecognizer, grammar_json, load_model
from edgevoice.audio.format import AudioChunk
from edgevoice.audio.wavfile import iter_chunks, read_audio
from edgevoice.config import AsrConfig, Config, Paths
from edgevoice.ear.transcriber import StreamingTranscriber, transcribe_chunks
from edgevoice.errors import ModelError


@pytest.fixture(scope="module")
def model_folder() -> Path:
    model = vosk_model()
    assert model is not None, INSTALL_HINT
    return model.folder


@pytest.fixture(scope="module")
def clips(speech_folder) -> dict[str, AudioChunk]:
    return {name: read_audio(speech_folder / f"{name}.wav")
            for name in ("pocketsphinx__goforward", "speechbrain__spk1_snt1")}


def _paths(tmp_path: Path) -> Paths:
    return Paths(models=tmp_path / "models", cache=tmp_path / "cache", logs=tmp_path / "logs")


def _silence(seconds: float) -> AudioChunk:
    return AudioChunk.from_samples(np.zeros(int(seconds * 16000), np.int16), 16000)


def _join(*parts: AudioChunk) -> AudioChunk:
    return AudioChunk.from_samples(np.concatenate([p.samples() for p in parts]), 16000)


def _decode(rec, audio: AudioChunk):
    partials = []
    for chunk in iter_chunks(audio, 30):
        rec.accept(chunk)
        partials.append(rec.partial())
    return partials, rec.finish()


def test_make_recognizer_finds_the_model_by_path_and_by_name(model_folder, tmp_path):
    paths = _paths(tmp_path)
    rec = make_recognizer(AsrConfig(backend="vosk", vosk_model=str(model_folder)), paths)
    assert rec.name == "vosk" and rec.model_folder == model_folder
    # The names a user writes: a catalog name (where `models pull` puts it), a folder in the
    # models dir, and nothing at all under `auto` (the default model's place).
    paths.models.mkdir()
    (paths.models / "vosk-model-small-en-us-0.15").symlink_to(model_folder)
    (paths.models / "my-vosk-model").symlink_to(model_folder)
    for cfg in (AsrConfig(backend="vosk", vosk_model="vosk-model-small-en-us-0.15"),
                AsrConfig(backend="vosk", vosk_model="my-vosk-model"), AsrConfig()):
        rec = make_recognizer(cfg, paths)
        assert rec.name == "vosk" and rec.model_folder.parent == paths.models, cfg
        assert rec._model is load_model(model_folder)  # one Model per process, shared


def test_partials_while_speaking_and_a_final_with_utterance_relative_word_times(
        model_folder, clips, speech_folder):
    """21 s of speech with pauses as one utterance: vosk cuts it into segments of its own
    (AcceptWaveform -> True; at the latest after 20 s, its rule 5), and the words of every
    segment count from the start of our utterance (vosk's own times do not restart)."""
    audio = read_audio(speech_folder / "pocketsphinx__chan3_vad.wav")
    first = clips["pocketsphinx__goforward"]
    rec = VoskRecognizer(model_folder)
    partials = []
    for n, chunk in enumerate(iter_chunks(audio, 30)):
        rec.accept(chunk)
        if n % 8 == 0:  # as the ear asks: every 250 ms or so
            partials.append((chunk.end_ms, rec.partial()))
    assert rec._segments, "vosk found no endpoint of its own in 21 s"
    final = rec.finish()
    assert any(text for at, text in partials if at < 1800), "no partial in the first phrase"
    early = next(text for _, text in partials if text)
    assert len(partials[-1][1].split()) > len(early.split())  # and keeps the done segments
    assert final.is_final and final.text == " ".join(w.text for w in final.words)
    times = [t for w in final.words for t in (w.start, w.end)]
    assert times == sorted(times) and 0 <= times[0] and times[-1] <= audio.duration_ms / 1000
    assert final.words[-1].start > 16.0, final.words  # the last phrase: 16.44-20.87 s
    assert all(w.confidence is not None and 0 <= w.confidence <= 1 for w in final.words)
    # The next utterance on the same recognizer counts from its own start again (vosk's own
    # times run on across FinalResult and Reset), and an abandoned utterance leaves nothing.
    rec.accept(AudioChunk.from_samples(audio.samples()[:8000], 16000))
    rec.reset()
    _, again = _decode(rec, first)
    _, alone = _decode(VoskRecognizer(model_folder), first)
    # Same words at the same times; the confidences may differ in the third decimal (vosk's
    # online feature adaptation keeps a little of what it heard before: seen 0.544 vs 0.549).
    assert again.words and [(w.text, w.start, w.end) for w in again.words] == \
        [(w.text, w.start, w.end) for w in alone.words]
    assert all(abs(a.confidence - b.confidence) < 0.05
               for a, b in zip(again.words, alone.words, strict=True))
    assert again.words[0].start < first.duration_ms / 1000


def test_grammar_mode_hears_only_the_grammar(model_folder, clips):
    speech = clips["pocketsphinx__goforward"]
    _, free = _decode(VoskRecognizer(model_folder), speech)
    phrase = " ".join(w.text for w in free.words[:2])  # words this model surely knows
    other = free.words[-1].text
    rec = VoskRecognizer(model_folder, grammar=[phrase])
    _, final = _decode(rec, speech)
    assert set(final.text.split()) <= set(phrase.split()), final.text
    rec.set_grammar([other])  # SetGrammar on the running recognizer
    _, final = _decode(rec, speech)
    assert set(final.text.split()) <= {other}, final.text
    rec.set_grammar(None)
    _, final = _decode(rec, speech)
    assert final.text == free.text  # the whole vocabulary again, from a fresh state
    with pytest.raises(ModelError, match=r"not in the vocabulary of vosk model .*'zzqx'"):
        VoskRecognizer(model_folder, grammar=[f"{phrase} zzqx"])
    with pytest.raises(ModelError, match="cannot take a grammar"):
        grammar_json(load_model(model_folder), Path("/nowhere/vosk-model-en-us-0.22"), [phrase])


def run_cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "edgevoice", *args], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ})


def _config(tmp_path: Path, folder: Path) -> Path:
    cfg = tmp_path / f"vosk-{folder.name}.yaml"
    cfg.write_text(f"asr:\n  backend: vosk\n  vosk_model: {json.dumps(str(folder))}\n")
    return cfg


def test_transcribe_with_vosk_gives_the_same_text_for_the_same_file_after_others(
        model_folder, speech_folder, tmp_path):
    a = speech_folder / "pocketsphinx__goforward.wav"
    b = speech_folder / "speechbrain__spk1_snt1.wav"
    out = run_cli("--config", str(_config(tmp_path, model_folder)), "transcribe", "--json",
                  str(a), str(b), str(a))
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    by_file: list[list[dict]] = []
    for row in rows:
        if not by_file or by_file[-1][0]["file"] != row["file"]:
            by_file.append([])
        by_file[-1].append(row)
    assert [group[0]["file"] for group in by_file] == [str(a), str(b), str(a)], rows
    assert all(r["text"] and 0 <= r["start"] < r["end"] for r in rows)
    assert by_file[0] == by_file[2]  # same file, same text and times, whatever came between
    assert "VoskAPI" not in out.stderr and "Traceback" not in out.stderr, out.stderr


def _symlink_model(src: Path, dst: Path, *, skip: tuple[str, ...] = ()) -> Path:
    """A copy of the model made of symlinks (the real files are hundreds of MB)."""
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src)
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        if not path.is_dir() and str(rel) not in skip:
            (dst / rel).symlink_to(path)
    return dst


def test_a_broken_model_folder_is_one_sentence_naming_it(model_folder, speech_folder, tmp_path):
    clip = str(speech_folder / "pocketsphinx__goforward.wav")
    page = _symlink_model(model_folder, tmp_path / "html-am", skip=("am/final.mdl",))
    (page / "am" / "final.mdl").write_bytes(b"<html><body>404 Not Found</body></html>\n")
    junk = _symlink_model(model_folder, tmp_path / "junk-am", skip=("am/final.mdl",))
    (junk / "am" / "final.mdl").write_bytes(b"\0B<TransitionModel> " + b"junk" * 100)
    no_conf = _symlink_model(model_folder, tmp_path / "no-conf", skip=("conf/model.conf",))
    cut = _symlink_model(model_folder, tmp_path / "cut-graph", skip=("graph/HCLr.fst",))
    with open(model_folder / "graph" / "HCLr.fst", "rb") as whole:
        (cut / "graph" / "HCLr.fst").write_bytes(whole.read(100_000))  # a download cut short
    for folder, says in ((page, "has a damaged am/final.mdl"), (junk, "could not be loaded"),
                         (no_conf, "no conf/model.conf"), (cut, "could not be used")):
        out = run_cli("--config", str(_config(tmp_path, folder)), "transcribe", clip)
        assert out.returncode == 2, (folder, out.stdout, out.stderr)
        ours = [line for line in out.stderr.splitlines() if line.startswith("edgevoice:")]
        assert len(ours) == 1 and str(folder) in ours[0] and says in ours[0], out.stderr
        assert "Traceback" not in out.stderr and "Exception ignored" not in out.stderr
        assert "LOG (VoskAPI" not in out.stderr and "WARNING (VoskAPI" not in out.stderr


def test_the_ear_with_vosk_endpoints_and_transcribes_two_utterances(model_folder, clips):
    """The streaming path `listen` and `run` use: endpointer + vosk, one recognizer."""
    audio = _join(_silence(0.5), clips["pocketsphinx__goforward"], _silence(2.0),
                  clips["speechbrain__spk1_snt1"], _silence(1.0))
    rec = make_recognizer(AsrConfig(backend="vosk", vosk_model=str(model_folder)),
                          Paths(models=Path("/nonexistent"), cache=Path("/tmp"), logs=Path("/tmp")))
    utterances = list(transcribe_chunks(iter_chunks(audio, 30),
                                        StreamingTranscriber(Config().vad, rec)))
    assert len(utterances) == 2, [(u.start_ms, u.end_ms, u.text) for u in utterances]
    for utt in utterances:
        assert utt.text and utt.transcript.words
        assert utt.transcript.words[-1].end <= (utt.end_ms - utt.start_ms) / 1000 + 0.5
