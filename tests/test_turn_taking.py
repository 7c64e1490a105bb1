"""The answer starts before the decision, and a false cut-off reopens the turn.

The ear is scripted (events at set times on the stream timeline, on the ear thread, like the real
one); the model is a real llama.cpp model (the generated tiny GGUF), the clock is real.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import numpy as np
import pytest
import soundfile

from edgevoice.agent.brain import Brain
from edgevoice.agent.manager import TurnManager
from edgevoice.agent.outputs import FileOutput
from edgevoice.asr.protocol import Transcript
from edgevoice.audio.filesource import RealtimeFileSource
from edgevoice.audio.format import AudioChunk, AudioFormat
from edgevoice.config import AgentConfig, LlmConfig
from edgevoice.ear.endpoint import SpeechStart
from edgevoice.ear.transcriber import NoWords, Pause, Resume, Utterance
from edgevoice.llm.llama_target import LlamaCppTarget
from edgevoice.llm.router import Router


class ToneSynth:
    """0.4 s of tone per clause, so the output file shows what was played."""

    name, format = "tone", AudioFormat(22050)

    def __init__(self) -> None:
        self.said: list[str] = []

    def synthesize(self, text):
        self.said.append(text)
        t = np.arange(int(0.4 * 22050)) / 22050
        return AudioChunk.from_samples((np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16),
                                       22050)

    def close(self):
        pass


class ScriptedEar:
    """Emits ``(at_ms, event)`` pairs once the stream reaches ``at_ms``."""

    def __init__(self, script: list) -> None:
        self.script = list(script)

    def feed(self, chunk):
        while self.script and chunk.end_ms >= self.script[0][0]:
            yield self.script.pop(0)[1]

    def flush(self):
        return iter(())


def utterance(text: str, start: float, end: float) -> Utterance:
    return Utterance(start, end, Transcript(text, True), "silence")


@pytest.fixture(scope="module")
def local(tiny_gguf: Path):
    target = LlamaCppTarget(LlmConfig(model=str(tiny_gguf), n_ctx=512, max_tokens=12,
                                      threads=1, temperature=0.0), seed=7)
    yield target
    target.close()


NOW = dt.datetime(2026, 3, 4, 14, 30)


def run(tmp_path, local, script, seconds: float, **agent):
    wav = tmp_path / "quiet.wav"
    soundfile.write(wav, np.zeros(int(seconds * 16000), np.int16), 16000)
    events: list[dict] = []
    synth = ToneSynth()
    brain = Brain(Router({"local": local}), LlmConfig(max_tokens=12), now=lambda: NOW)
    manager = TurnManager(
        source=RealtimeFileSource(wav), transcriber=ScriptedEar(script), brain=brain,
        synthesizer=synth, output=FileOutput(tmp_path / "o.wav"),
        agent=AgentConfig(stale_s=30, speculate=True, **agent), emit=events.append,
        stop_at_input_end=True, first_clause_max_words=3)
    asyncio.run(asyncio.wait_for(manager.run(), timeout=60))
    return events, brain, manager


def kinds(events, kind):
    return [e for e in events if e["event"] == kind]


def test_the_answer_is_ready_at_the_pause_and_plays_when_the_turn_ends(tmp_path, local):
    script = [(300, SpeechStart(300.0)),
              (1200, Pause("tell me a story", 300.0, 1110.0, True, 900.0)),
              (2700, utterance("tell me a story", 300.0, 900.0))]
    events, brain, manager = run(tmp_path, local, script, 5.0)
    (turn,) = kinds(events, "turn")
    assert turn["transcript"] == "tell me a story" and turn["reply"]
    assert turn["speculation"]["answer_at_pause"] is True
    lat = turn["latency_ms"]
    # the words, tokens and the first clause's audio were ready before the end of the turn was
    # known; the audio played after it, never before
    assert lat["asr_final"] < lat["end_of_turn"]
    assert lat["llm_first_token"] < lat["end_of_turn"] and lat["tts_first_audio"] < \
        lat["end_of_turn"]
    assert lat["playback_start"] >= lat["end_of_turn"]
    assert turn["speculation"]["ahead_ms"] > 1000
    assert brain.conversation.pairs[0][0] == "tell me a story"


def test_going_on_drops_the_early_answer_and_one_reply_answers_the_longer_words(tmp_path,
                                                                                 local):
    script = [(300, SpeechStart(300.0)),
              (1200, Pause("tell me", 300.0, 1110.0, True, 900.0)),
              (1800, Resume(300.0, 1800.0)),
              (2700, Pause("tell me a story", 300.0, 2610.0, True, 2400.0)),
              (3100, utterance("tell me a story", 300.0, 2400.0))]
    events, brain, manager = run(tmp_path, local, script, 5.0)
    (turn,) = kinds(events, "turn")
    assert turn["transcript"] == "tell me a story"
    assert [e["text"] for e in kinds(events, "transcript")] == ["tell me a story"]
    assert [p[0] for p in brain.conversation.pairs] == ["tell me a story"]
    # nothing of the dropped answer reached the speaker: the first audio is after the turn end
    assert turn["latency_ms"]["playback_start"] >= turn["latency_ms"]["end_of_turn"]
    assert len(manager.turns) == 1


def test_a_final_that_differs_from_the_pause_is_answered_afresh(tmp_path, local):
    script = [(300, SpeechStart(300.0)),
              (1200, Pause("tell me", 300.0, 1110.0, True, 900.0)),
              (2000, utterance("tell me now", 300.0, 900.0))]
    events, brain, _ = run(tmp_path, local, script, 4.0)
    (turn,) = kinds(events, "turn")
    assert turn["transcript"] == "tell me now"
    assert "answer_at_pause" not in (turn.get("speculation") or {})


def test_off_the_turn_starts_only_at_the_end(tmp_path, local):
    script = [(300, SpeechStart(300.0)),
              (1200, Pause("tell me a story", 300.0, 1110.0, True, 900.0)),
              (2700, utterance("tell me a story", 300.0, 900.0))]
    events, _, _ = run(tmp_path, local, script, 5.0, answer_at_pause=False)
    (turn,) = kinds(events, "turn")
    assert turn["latency_ms"]["llm_first_token"] > turn["latency_ms"]["end_of_turn"]


def reopen_script(second_start: float, second: object):
    return [(300, SpeechStart(300.0)),
            (1500, utterance("what is the", 300.0, 900.0)),
            (second_start, SpeechStart(second_start)),
            (second_start + 900, second)]


def test_speech_soon_after_the_answer_reopens_the_turn_one_reply_to_the_whole(tmp_path, local):
    events, brain, _ = run(tmp_path, local,
                           reopen_script(1800, utterance("weather today", 1800.0, 2500.0)), 5.0,
                           reopen_ms=1500)
    first, second = kinds(events, "turn")
    assert first["transcript"] == "what is the" and first["reopened"] and first["interrupted"]
    assert second["transcript"] == "what is the weather today" and not second.get("reopened")
    # the abandoned start never reaches the history: one exchange, the whole sentence
    assert [p[0] for p in brain.conversation.pairs] == ["what is the weather today"]


def test_speech_later_than_reopen_ms_is_a_barge_in(tmp_path, local):
    events, brain, _ = run(tmp_path, local,
                           reopen_script(3500, utterance("weather today", 3500.0, 4100.0)), 6.5,
                           reopen_ms=300)
    first, second = kinds(events, "turn")
    assert not first.get("reopened")
    assert second["transcript"] == "weather today"
    assert [p[0] for p in brain.conversation.pairs][-1] == "weather today"


def test_a_reopening_sound_without_words_answers_the_first_words_after_all(tmp_path, local):
    events, brain, _ = run(tmp_path, local, reopen_script(1800, NoWords(1800.0, 2300.0)), 5.0,
                           reopen_ms=1500)
    first, second = kinds(events, "turn")
    assert first["reopened"] and second["transcript"] == "what is the" and second["reply"]
    assert [p[0] for p in brain.conversation.pairs] == ["what is the"]


def test_a_command_after_the_answer_is_not_joined_to_the_sentence(tmp_path, local):
    events, brain, _ = run(tmp_path, local,
                           reopen_script(1800, utterance("stop", 1800.0, 2300.0)), 5.0,
                           reopen_ms=1500)
    assert [t["transcript"] for t in kinds(events, "turn")] == ["what is the", "stop"]


def test_its_own_words_coming_back_are_never_answered(tmp_path, local):
    from edgevoice.agent.intents import ANSWERS

    reply = ANSWERS["time"](NOW)  # what the agent will say, played 1.5 s .. ~2.3 s
    echo = " ".join(reply.lower().replace(".", "").split()[:5])
    script = [(300, SpeechStart(300.0)), (1500, utterance("what time is it", 300.0, 900.0)),
              (1700, SpeechStart(1700.0)), (2600, utterance(echo, 1700.0, 2400.0)),
              (3200, SpeechStart(3200.0)), (4000, utterance("tell me a story", 3200.0, 3800.0))]
    events, brain, _ = run(tmp_path, local, script, 5.5)
    ignored = kinds(events, "ignored")
    assert [e["reason"] for e in ignored] == ["own voice"]
    said = {e["id"]: e["text"] for e in kinds(events, "transcript")}
    assert said[ignored[0]["id"]] == echo
    # the real request after it is answered as usual, and nothing is said twice (the echo
    # stopped the answer: repeating it could echo again)
    assert [t["transcript"] for t in kinds(events, "turn")] == ["what time is it",
                                                                 "tell me a story"]


class Unspeakable(Brain):
    """A model answer with nothing to say aloud (random weights sometimes write only ';;;')."""

    def llm_stream(self, turn):
        yield ";;;"


def test_an_early_answer_with_nothing_to_say_still_ends_its_turn(tmp_path, local):
    wav = tmp_path / "quiet.wav"
    soundfile.write(wav, np.zeros(int(4.0 * 16000), np.int16), 16000)
    events: list[dict] = []
    script = [(300, SpeechStart(300.0)),
              (1200, Pause("tell me a story", 300.0, 1110.0, True, 900.0)),
              (2000, utterance("tell me a story", 300.0, 900.0))]
    manager = TurnManager(
        source=RealtimeFileSource(wav), transcriber=ScriptedEar(script),
        brain=Unspeakable(Router({"local": local}), LlmConfig()), synthesizer=ToneSynth(),
        output=FileOutput(tmp_path / "o.wav"), agent=AgentConfig(stale_s=30),
        emit=events.append, stop_at_input_end=True)
    asyncio.run(asyncio.wait_for(manager.run(), timeout=30))
    (turn,) = kinds(events, "turn")
    assert turn["reply"] == ";;;" and not turn.get("interrupted")
    states = [e["state"] for e in kinds(events, "state")]
    assert states[-1] == "listening" and manager._active is None
