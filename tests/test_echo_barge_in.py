"""Barge-in with echo cancellation in mind: a barge-in without words resumes the answer
(``agent.resume_false_barge_in``), one with words ends it, and a microphone that could not get
echo cancellation (``half_duplex``) takes no barge-in at all.

The ear is scripted as in test_turn_taking.py (events at set times on the stream timeline); the
model is the generated tiny GGUF on llama.cpp, the clock is real.
"""

from __future__ import annotations

import asyncio

import numpy as np
import soundfile
from test_turn_taking import NOW, ScriptedEar, ToneSynth, kinds, local, utterance  # noqa: F401

from edgevoice.agent.brain import Brain
from edgevoice.agent.manager import TurnManager
from edgevoice.agent.outputs import FileOutput
from edgevoice.audio.filesource import RealtimeFileSource
from edgevoice.audio.format import AudioChunk
from edgevoice.config import AgentConfig, LlmConfig
from edgevoice.ear.echo import HalfDuplexSource
from edgevoice.ear.endpoint import SpeechStart
from edgevoice.ear.transcriber import NoWords

QUESTION = [(300, SpeechStart(300.0)), (1500, utterance("tell me a story", 300.0, 900.0))]


class WordySynth(ToneSynth):
    """0.3 s of tone per word: an answer long enough to be still playing at the barge-ins below
    however fast the machine made it (ToneSynth's 0.4 s per clause can be over by then)."""

    def synthesize(self, text):
        self.said.append(text)
        t = np.arange(int(0.3 * 22050 * max(1, len(text.split())))) / 22050
        return AudioChunk.from_samples((np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16),
                                       22050)


def _run(tmp_path, local, script, seconds, half_duplex=False, synth=None,  # noqa: F811
         **agent):
    wav = tmp_path / "quiet.wav"
    soundfile.write(wav, np.zeros(int(seconds * 16000), np.int16), 16000)
    events: list[dict] = []
    synth = synth or WordySynth()
    brain = Brain(Router_local(local), LlmConfig(max_tokens=12), now=lambda: NOW)
    source = RealtimeFileSource(wav)
    output = FileOutput(tmp_path / "o.wav")
    manager = TurnManager(
        source=HalfDuplexSource(source) if half_duplex else source,
        transcriber=ScriptedEar(script), brain=brain, synthesizer=synth,
        output=output,
        agent=AgentConfig(stale_s=30, speculate=False, answer_at_pause=False, reopen_ms=0,
                          **agent),
        emit=events.append, stop_at_input_end=True, first_clause_max_words=2)
    asyncio.run(asyncio.wait_for(manager.run(), timeout=60))
    output.close()
    return events, synth


def Router_local(local):  # noqa: N802, F811
    from edgevoice.llm.router import Router

    return Router({"local": local})


def _barge(at_ms: float, *then):
    return [(at_ms, SpeechStart(at_ms - 300.0)), *then]


def _first_play_ms(events) -> float:
    return kinds(events, "turn")[0]["latency_ms"]["playback_start"]


def test_a_barge_in_without_words_resumes_the_answer(tmp_path, local):  # noqa: F811
    # The answer starts playing ~0.1-0.5 s after the utterance (1.5 s); the barge-in comes
    # 0.5 s into it, its utterance ends with no words 0.4 s later.
    script = QUESTION + _barge(2300) + [(2700, NoWords(2000.0, 2600.0))]
    events, synth = _run(tmp_path, local, script, 7.0)
    (turn,) = kinds(events, "turn")
    (resumed,) = kinds(events, "resumed")
    assert resumed["id"] == turn["id"] and resumed["reason"] == "no words"
    assert not turn.get("interrupted"), turn
    # every clause played whole in the end (the one that was cut, again from its start), and
    # each was synthesized once
    played, rate = soundfile.read(tmp_path / "o.wav", dtype="int16")
    frames = played[: len(played) // (rate // 100) * (rate // 100)].reshape(-1, rate // 100)
    tone_s = float((np.abs(frames).max(axis=1) > 1000).sum()) / 100
    assert len(synth.said) >= 2
    words = sum(len(text.split()) for text in synth.said)
    assert tone_s >= 0.3 * words - 0.05, (tone_s, synth.said)


def test_a_barge_in_with_words_ends_the_answer(tmp_path, local):  # noqa: F811
    script = QUESTION + _barge(2300, (3100, utterance("what time is it", 2000.0, 2700.0)))
    events, _ = _run(tmp_path, local, script, 6.0)
    first, second = kinds(events, "turn")
    assert first["interrupted"] and len(first["spoken"]) < len(first["reply"])
    assert second["transcript"] == "what time is it" and not second.get("interrupted")
    assert not kinds(events, "resumed")


def test_with_resume_off_a_wordless_barge_in_still_ends_the_answer(tmp_path, local):  # noqa: F811
    script = QUESTION + _barge(2300) + [(2700, NoWords(2000.0, 2600.0))]
    events, _ = _run(tmp_path, local, script, 5.0, resume_false_barge_in=False)
    (turn,) = kinds(events, "turn")
    assert turn["interrupted"] and not kinds(events, "resumed")


def test_half_duplex_takes_no_barge_in_and_ignores_speech_over_the_answer(tmp_path,
                                                                           local):  # noqa: F811
    script = QUESTION + _barge(2300, (3100, utterance("what time is it", 2000.0, 2700.0)))
    events, _ = _run(tmp_path, local, script, 6.0, half_duplex=True)
    (turn,) = kinds(events, "turn")  # the speech over it started no turn
    assert not turn.get("interrupted")
    assert turn["transcript"] == "tell me a story"
