"""Finals at pauses: the text a pause reports is the utterance's final when the user stops there,
and a user who goes on gets one utterance (one decode through the pause where the recognizer has
a checkpoint, else segments that join), on real speech and pocketsphinx."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgevoice.asr.protocol import Transcript, Word
from edgevoice.audio.format import AudioChunk
from edgevoice.audio.wavfile import iter_chunks, read_audio
from edgevoice.config import VadConfig
from edgevoice.ear.endpoint import SpeechAudio, SpeechEnd, SpeechPause, SpeechResume, SpeechStart
from edgevoice.ear.transcriber import (
    Pause,
    Resume,
    StreamingTranscriber,
    Utterance,
    join_segments,
)

RATE = 16000


class ScriptedRecognizer:
    """Returns one scripted word per finished segment and records what it was given."""

    name, sample_rate = "scripted", RATE

    def __init__(self, words: list[str]) -> None:
        self.words = list(words)
        self.calls: list[str] = []
        self.audio_ms = 0.0

    def accept(self, chunk: AudioChunk) -> None:
        self.calls.append("accept")
        self.audio_ms += chunk.duration_ms

    def partial(self) -> str:
        return self.words[0] if self.audio_ms else ""

    def finish(self) -> Transcript:
        self.calls.append("finish")
        word = self.words.pop(0)
        self.audio_ms = 0.0
        return Transcript(word, True, (Word(word, 0.1, 0.4),))

    def resume_utterance(self) -> None:
        self.calls.append("resume")

    def reset(self) -> None: ...

    def close(self) -> None: ...


def chunk(start_ms: float, ms: float = 30) -> AudioChunk:
    return AudioChunk(np.zeros(int(RATE * ms / 1000), np.int16).tobytes(),
                      AudioChunk.from_samples(np.zeros(1, np.int16), RATE).format, start_ms)


def test_a_pause_finishes_the_words_and_a_resume_continues_the_same_utterance():
    rec = ScriptedRecognizer(["hello", "world"])
    tr = StreamingTranscriber(VadConfig(), rec, partial_interval_ms=0)
    events = list(tr.handle([SpeechStart(0.0), *(SpeechAudio(chunk(t)) for t in range(0, 600, 30)),
                             SpeechPause(390.0, 600.0)]))
    pause = next(e for e in events if isinstance(e, Pause))
    assert pause.final and pause.text == "hello" and pause.speech_end_ms == 390.0
    # silence after the final is held, not decoded; the resume feeds its last ~150 ms first
    assert list(tr.handle([SpeechAudio(chunk(t)) for t in range(600, 900, 30)])) == []
    assert rec.calls.count("accept") == 20
    events = list(tr.handle([SpeechResume(900.0), *(SpeechAudio(chunk(t))
                                                     for t in range(900, 1500, 30))]))
    assert isinstance(events[0], Resume) and events[0].at_ms == 900.0
    assert rec.calls[21] == "resume" and rec.calls.index("resume") > rec.calls.index("finish")
    partials = [e.text for e in events if not isinstance(e, Resume)]
    assert partials and all(p.startswith("hello ") for p in partials)
    (utt,) = [e for e in tr.handle([SpeechEnd(1400.0, "silence")]) if isinstance(e, Utterance)]
    assert utt.text == "hello world" and utt.start_ms == 0.0
    # word times are on the utterance's timeline: the second segment began with the held audio
    held_from = 900 - 150 - 30 + 30  # held chunks cover the last >= 150 ms before the resume
    assert [w.text for w in utt.transcript.words] == ["hello", "world"]
    assert utt.transcript.words[0].start == pytest.approx(0.1)
    assert 0.1 + held_from / 1000 - 0.031 <= utt.transcript.words[1].start <= 0.1 + 0.75 + 1e-9


def test_without_finals_at_pauses_the_recognizer_finishes_once():
    rec = ScriptedRecognizer(["hello world"])
    tr = StreamingTranscriber(VadConfig(), rec, partial_interval_ms=0, finals_at_pauses=False)
    events = list(tr.handle([SpeechStart(0.0), *(SpeechAudio(chunk(t)) for t in range(0, 600, 30)),
                             SpeechPause(390.0, 600.0), SpeechResume(630.0),
                             SpeechAudio(chunk(630)), SpeechEnd(660.0, "silence")]))
    assert rec.calls.count("finish") == 1 and "resume" not in rec.calls
    assert [e.final for e in events if isinstance(e, Pause)] == [False]
    assert [e.text for e in events if isinstance(e, Utterance)] == ["hello world"]


class CheckpointRecognizer(ScriptedRecognizer):
    """A recognizer that can say its final so far without ending the utterance (as
    pocketsphinx does): one word per 300 ms of audio accepted."""

    def _words(self) -> Transcript:
        words = tuple(Word(w, 0.3 * i, 0.3 * i + 0.2)
                      for i, w in enumerate(self.words[: int(self.audio_ms // 300)]))
        return Transcript(" ".join(w.text for w in words), True, words)

    def partial(self) -> str:
        return self._words().text

    def checkpoint(self) -> Transcript:
        self.calls.append("checkpoint")
        return self._words()

    def finish(self) -> Transcript:
        self.calls.append("finish")
        done, self.audio_ms = self._words(), 0.0
        return done

    def reset(self) -> None:
        self.calls.append("reset")
        self.audio_ms = 0.0


def test_a_checkpoint_at_a_pause_keeps_one_decode_through_the_pause():
    rec = CheckpointRecognizer(["hello", "big", "world"])
    tr = StreamingTranscriber(VadConfig(), rec, partial_interval_ms=0)
    events = list(tr.handle([SpeechStart(0.0), *(SpeechAudio(chunk(t)) for t in range(0, 300, 30)),
                             SpeechPause(90.0, 300.0)]))
    (pause,) = [e for e in events if isinstance(e, Pause)]
    assert pause.final and pause.text == "hello"
    # the silence of the pause is decoded too (nothing held back, nothing finished)
    list(tr.handle([SpeechAudio(chunk(t)) for t in range(300, 600, 30)]))
    assert rec.calls.count("accept") == 20 and "finish" not in rec.calls
    events = list(tr.handle([SpeechResume(600.0), *(SpeechAudio(chunk(t))
                                                     for t in range(600, 900, 30))]))
    assert isinstance(events[0], Resume) and events[0].at_ms == 600.0
    assert "hello big world" in [e.text for e in events[1:]]
    # speech since the last pause: the final comes from the recognizer's own end, one utterance
    (utt,) = [e for e in tr.handle([SpeechEnd(870.0, "silence")]) if isinstance(e, Utterance)]
    assert utt.text == "hello big world" and rec.calls.count("finish") == 1
    assert [w.start for w in utt.transcript.words] == pytest.approx([0.0, 0.3, 0.6])


def test_an_utterance_that_ends_in_a_pause_has_the_checkpoint_as_its_final():
    rec = CheckpointRecognizer(["hello", "there", "again"])
    tr = StreamingTranscriber(VadConfig(), rec, partial_interval_ms=0)
    events = list(tr.handle([SpeechStart(0.0), *(SpeechAudio(chunk(t)) for t in range(0, 600, 30)),
                             SpeechPause(390.0, 600.0),
                             # more silence reaches the recognizer (it would say one more word)
                             *(SpeechAudio(chunk(t)) for t in range(600, 990, 30)),
                             SpeechEnd(390.0, "silence")]))
    (pause,) = [e for e in events if isinstance(e, Pause)]
    (utt,) = [e for e in events if isinstance(e, Utterance)]
    assert pause.final and utt.text == pause.text == "hello there"
    assert "finish" not in rec.calls and rec.calls[-1] == "reset"
    assert not any(isinstance(e, Resume) for e in events)


def test_join_segments_moves_word_times():
    a = Transcript("go", True, (Word("go", 0.1, 0.3),))
    b = Transcript("home now", True, (Word("home", 0.0, 0.2), Word("now", 0.3, 0.5)))
    joined = join_segments([(1000.0, a), (2500.0, b)], 1000.0)
    assert joined.text == "go home now"
    assert [(w.start, w.end) for w in joined.words] == [(0.1, 0.3), (1.5, 1.7), (1.8, 2.0)]


# --------------------------------------------------------------------------- real speech


def clip(folder: Path, name: str) -> np.ndarray:
    return read_audio(folder / name, RATE).samples()


def run(audio: np.ndarray, **kw):
    from edgevoice.asr.pocketsphinx_backend import PocketsphinxRecognizer

    tr = StreamingTranscriber(VadConfig(**kw), PocketsphinxRecognizer(), 250)
    events = []
    chunks = iter_chunks(AudioChunk.from_samples(audio.astype(np.int16), RATE), 30)
    for c in chunks:
        events += tr.feed(c)
    return events + list(tr.flush())


SILENCE = np.zeros(RATE, np.int16)


def trimmed(x: np.ndarray) -> np.ndarray:
    """The clip without its leading and trailing quiet (10 ms frames under -20 dB of its peak)."""
    frames = x[: len(x) // 160 * 160].reshape(-1, 160).astype(np.float64)
    rms = np.sqrt((frames ** 2).mean(axis=1))
    loud = np.flatnonzero(rms > rms.max() * 10 ** (-20 / 20))
    return x[loud[0] * 160:(loud[-1] + 1) * 160]


def test_real_speech_the_last_pause_text_is_the_final(speech_folder):
    audio = np.concatenate([clip(speech_folder, "pocketsphinx__librivox_sense_and_sensibility_"
                                                "0880.wav"), SILENCE])
    events = run(audio)
    (utt,) = [e for e in events if isinstance(e, Utterance)]
    pauses = [e for e in events if isinstance(e, Pause)]
    assert pauses and pauses[-1].final and pauses[-1].text == utt.text
    assert "young man" in utt.text


def test_real_speech_going_on_after_a_pause_is_one_utterance(speech_folder):
    first = trimmed(clip(speech_folder, "pocketsphinx__goforward.wav"))
    second = trimmed(clip(speech_folder, "pocketsphinx__librivox_sense_and_sensibility_0880.wav"))
    gap = np.zeros(int(0.35 * RATE), np.int16)  # longer than vad.pause_ms, shorter than hangover
    events = run(np.concatenate([first, gap, second, SILENCE]))
    utts = [e for e in events if isinstance(e, Utterance)]
    assert len(utts) == 1, [u.text for u in utts]
    resumes = [e for e in events if isinstance(e, Resume)]
    assert resumes
    said_at_resume = [e for e in events if isinstance(e, Pause)
                      and e.at_ms < resumes[-1].at_ms][-1].text
    # one decode through the pause: its words may still change, not disappear
    assert "forward" in said_at_resume and "forward" in utts[0].text
    assert "young man" in utts[0].text
    times = [w.start for w in utts[0].transcript.words]
    assert times == sorted(times) and times[-1] > len(first) / RATE + 0.35


# --------------------------------------------------------------------------- the turn detector


class ScriptedDetector:
    """Says ``answers`` in turn; records what it heard."""

    def __init__(self, *answers: float) -> None:
        self.answers = list(answers)
        self.heard: list[tuple[int, str]] = []

    def probability(self, audio: np.ndarray, text: str = "") -> float:
        self.heard.append((len(audio), text))
        return self.answers.pop(0)


def test_a_complete_turn_ends_at_the_pause_and_an_incomplete_one_waits():
    events_in = [SpeechStart(0.0), *(SpeechAudio(chunk(t)) for t in range(0, 600, 30)),
                 SpeechPause(390.0, 600.0), *(SpeechAudio(chunk(t)) for t in range(600, 900, 30)),
                 SpeechEnd(390.0, "silence")]
    done = ScriptedDetector(0.9)
    tr = StreamingTranscriber(VadConfig(), ScriptedRecognizer(["hello"]), turn_detector=done,
                              turn_audio_s=0.3)
    out = list(tr.handle(events_in))
    (utt,) = [e for e in out if isinstance(e, Utterance)]
    assert utt.reason == "turn_complete" and utt.text == "hello" and utt.end_ms == 390.0
    assert out.index(utt) == next(i for i, e in enumerate(out) if isinstance(e, Pause)) + 1
    # it heard the utterance's end (<= turn_audio_s) and the words; the leftover events of the
    # closed utterance (the endpointer's own SpeechEnd) are dropped
    ((n, said),) = done.heard
    assert said == "hello" and 0.3 * RATE <= n <= 0.33 * RATE
    assert tr.decisions[-1][0] == 0.9
    not_yet = ScriptedDetector(0.2)
    tr = StreamingTranscriber(VadConfig(), ScriptedRecognizer(["hello"]), turn_detector=not_yet)
    (utt,) = [e for e in tr.handle(events_in) if isinstance(e, Utterance)]
    assert utt.reason == "silence"


def _pause_then(after: list, speech_end: float = 390.0, pause_at: float = 510.0) -> list:
    """Speech to ``speech_end``, a SpeechPause at ``pause_at`` (120 ms), then ``after``."""
    return [SpeechStart(0.0), *(SpeechAudio(chunk(t)) for t in range(0, int(pause_at), 30)),
            SpeechPause(speech_end, pause_at), *after]


def test_a_complete_verdict_waits_for_the_silence_floor_and_speech_before_it_cancels_it():
    silence = [SpeechAudio(chunk(t)) for t in range(510, 900, 30)]
    tr = StreamingTranscriber(VadConfig(), ScriptedRecognizer(["hello"]),
                              turn_detector=ScriptedDetector(0.95), turn_min_silence_ms=210)
    ended_at = None
    for event in _pause_then([*silence, SpeechEnd(390.0, "silence")]):
        for e in tr.handle([event]):
            if isinstance(e, Utterance):
                assert ended_at is None and e.reason == "turn_complete" and e.end_ms == 390.0
                ended_at = event.chunk.end_ms
    # it ended on the first frame that reached 390 + 210 ms of silence, not at the 120 ms pause
    assert ended_at == 600.0
    # speech 150 ms into the silence: the verdict is dropped and the utterance goes on
    tr = StreamingTranscriber(VadConfig(), ScriptedRecognizer(["hello", "there"]),
                              turn_detector=ScriptedDetector(0.95, 0.1), turn_min_silence_ms=210)
    resumed = [SpeechAudio(chunk(510)), SpeechResume(540.0),
               *(SpeechAudio(chunk(t)) for t in range(540, 900, 30)), SpeechEnd(870.0, "silence")]
    out = list(tr.handle(_pause_then(resumed)))
    (utt,) = [e for e in out if isinstance(e, Utterance)]
    assert utt.reason == "silence" and utt.end_ms == 870.0
    assert [type(e).__name__ for e in out].count("Resume") == 1
    # with no floor (the default) the same verdict ends the turn at the pause itself
    tr = StreamingTranscriber(VadConfig(), ScriptedRecognizer(["hello"]),
                              turn_detector=ScriptedDetector(0.95))
    out = list(tr.handle(_pause_then(resumed)))
    (utt,) = [e for e in out if isinstance(e, Utterance)]
    assert utt.reason == "turn_complete" and not any(isinstance(e, Resume) for e in out)


def test_real_speech_and_the_real_smart_turn_end_the_turn_at_the_pause(speech_folder):
    pytest.importorskip("onnxruntime")
    from edgevoice.asr.pocketsphinx_backend import PocketsphinxRecognizer
    from edgevoice.devtools.pause_set import smart_turn_model
    from edgevoice.ear.turn_detector import SmartTurn

    detector = SmartTurn(smart_turn_model())
    # Smart Turn is sure of this one ("the birch canoe slid on the smooth planks"; it is unsure
    # of many read sentences: tests/test_turn_detector.py); then 2 s of a quiet room
    room = np.round(np.random.default_rng(3).standard_normal(2 * RATE) * 20).astype(np.int16)
    audio = np.concatenate([trimmed(clip(speech_folder, "speechbrain__example1.wav")), room])
    tr = StreamingTranscriber(VadConfig(hangover_ms=1500), PocketsphinxRecognizer(),
                              turn_detector=detector)
    events = []
    for c in iter_chunks(AudioChunk.from_samples(audio, RATE), 30):
        events += tr.feed(c)
    events += tr.flush()
    (utt,) = [e for e in events if isinstance(e, Utterance)]
    pause = [e for e in events if isinstance(e, Pause)][-1]
    assert utt.reason == "turn_complete", tr.decisions
    assert utt.text == pause.text and "planks" in utt.text
    # decided at the pause (vad.pause_ms after the speech), not after the 1500 ms fallback
    assert pause.at_ms - utt.end_ms == pytest.approx(VadConfig().pause_ms, abs=31)
