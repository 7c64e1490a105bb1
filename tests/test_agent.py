"""The voice turn: intents, the brain, and the daemon in file mode on real recorded speech."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile
from _daemon import compose

from edgevoice.agent.brain import MUTED_ACK, Brain
from edgevoice.agent.intents import NO_MODEL_REPLY, match_intent
from edgevoice.agent.manager import Scheduled, _Played, spoken_text
from edgevoice.agent.turn import Turn
from edgevoice.config import LlmConfig
from edgevoice.evaluation import speech_dir
from edgevoice.llm.router import Router

SPEECH = speech_dir()
needs_speech = pytest.mark.skipif(SPEECH is None, reason="speech clips not found")


@pytest.mark.parametrize(
    ("text", "intent"),
    [
        ("What time is it?", "time"), ("what's the time", "time"), ("time please", "time"),
        ("what is the date today", "date"), ("what day is it", "date"),
        ("stop", "stop"), ("okay stop", "stop"), ("cancel", "cancel" and "stop"),
        ("repeat that", "repeat"), ("can you say that again", "repeat"),
        ("mute", "mute"), ("unmute", "unmute"), ("start listening again", "unmute"),
        ("what time does the shop close", None), ("stop the music in the kitchen", None),
        ("tell me about time travel", None), ("", None),
    ],
)
def test_intent_table(text, intent):
    assert match_intent(text) == intent


def test_brain_without_model_answers_intents_and_explains_the_rest():
    brain = Brain(Router({}), LlmConfig(), now=lambda: dt.datetime(2026, 3, 4, 14, 5))
    d = brain.decide("what time is it")
    assert (d.kind, d.target) == ("intent", "intent:time") and "2 oh 5" in d.reply
    assert "Wednesday, March 4, 2026" in brain.decide("what's the date").reply
    d = brain.decide("why is the sky blue")
    assert d.kind == "intent" and d.reply == NO_MODEL_REPLY and "llm.model" in d.reply


def test_brain_mute_repeat_and_stop():
    brain = Brain(Router({}), LlmConfig())
    turn = Turn("what time is it")
    d = brain.decide(turn.transcript)
    turn.spoken = d.reply
    brain.finish(turn, d)
    assert brain.decide("repeat that").reply == d.reply
    assert brain.decide("stop").reply == ""
    assert brain.decide("mute").reply == MUTED_ACK and brain.muted
    assert brain.decide("what time is it").kind == "ignore"
    assert brain.decide("unmute").kind == "intent" and not brain.muted
    assert brain.decide("what time is it").kind == "intent"


def test_spoken_text_keeps_only_what_was_played():
    played = [_Played("Hello there.", Scheduled(10.0, 11.0)),
              _Played("one two three four five six seven eight.", Scheduled(11.0, 13.0)),
              _Played("Never heard.", Scheduled(13.0, 14.0))]
    assert spoken_text(played, 9.0) == ""
    assert spoken_text(played, 11.0) == "Hello there."
    assert spoken_text(played, 12.0) == "Hello there. one two three four"
    assert spoken_text(played, 20.0).endswith("Never heard.")


def test_turn_event_schema():
    turn = Turn("hi")
    turn.metrics.speech_end = 100.0
    for stage, t in [("asr_final", 100.1), ("llm_first_token", 100.3), ("first_clause", 100.4),
                     ("tts_first_audio", 100.45), ("playback_start", 100.5)]:
        turn.metrics.mark(stage, t)
    turn.metrics.mark("asr_final", 200.0)  # only the first mark counts
    event = json.loads(json.dumps(turn.to_event()))
    assert event["event"] == "turn" and event["transcript"] == "hi"
    assert event["latency_ms"] == {"asr_final": 100.0, "llm_first_token": 300.0,
                                   "first_clause": 400.0, "tts_first_audio": 450.0,
                                   "playback_start": 500.0, "first_audio": 500.0}


# ---------------------------------------------------------------------------------------------
# The CLI end to end
# ---------------------------------------------------------------------------------------------


def run_cli(*args, env=None, timeout=180):
    return subprocess.run([sys.executable, "-m", "edgevoice", *args], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


@pytest.fixture
def short_replies(tmp_path) -> Path:
    cfg = tmp_path / "short.yaml"
    cfg.write_text("llm:\n  max_tokens: 8\n  temperature: 0.0\n")
    return cfg


def test_ask_streams_from_the_local_model(tiny_gguf, short_replies):
    out = run_cli("--config", str(short_replies), "ask", "hello there", "--llm-model",
                  str(tiny_gguf), "--json")
    assert out.returncode == 0, out.stderr
    event = json.loads(out.stdout)
    assert event["target"] == "local" and event["reply"].strip()
    assert event["tokens"]["completion_tokens"] == 8
    assert {"llm_first_token", "first_clause"} <= set(event["latency_ms"])


def test_ask_intent_needs_no_model_and_missing_model_is_clear(tmp_path):
    out = run_cli("ask", "what time is it", "--json", env={"XDG_DATA_HOME": str(tmp_path)})
    assert out.returncode == 0 and json.loads(out.stdout)["target"] == "intent:time"
    out = run_cli("ask", "hello", "--llm-model", str(tmp_path / "gone.gguf"))
    assert out.returncode == 2 and "gone.gguf does not exist" in out.stderr
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a model" * 100)
    out = run_cli("ask", "hello", "--llm-model", str(junk))
    assert out.returncode == 2 and "junk.gguf" in out.stderr and "Traceback" not in out.stderr


def test_say_writes_speech(tmp_path):
    wav = tmp_path / "say.wav"
    out = run_cli("say", "Hello. The weather is fine today.", "-o", str(wav))
    assert out.returncode == 0, out.stderr
    audio, rate = soundfile.read(wav)
    assert 1.0 < len(audio) / rate < 6.0 and np.abs(audio).max() > 0.1


def _envelope(path: Path, hop_s: float = 0.02):
    audio, rate = soundfile.read(path)
    hop = int(rate * hop_s)
    frames = audio[: len(audio) // hop * hop].reshape(-1, hop)
    return np.sqrt((frames**2).mean(axis=1)) > 0.01, hop_s


@needs_speech
def test_file_mode_one_turn_per_utterance_with_reply_audio_after_each(
        tmp_path, tiny_gguf, short_replies):
    inp, out_wav = tmp_path / "in.wav", tmp_path / "out.wav"
    spans = compose([(SPEECH / "pocketsphinx__goforward.wav", 5.0),
                      (SPEECH / "speechbrain__spk1_snt1.wav", 5.0),
                      (SPEECH / "speechbrain__spk1_snt3.wav", 4.0)], inp)
    out = run_cli("--config", str(short_replies), "run", "--input", str(inp), "--output",
                  str(out_wav), "--llm-model", str(tiny_gguf), "--json")
    assert out.returncode == 0, out.stderr
    events = [json.loads(line) for line in out.stdout.splitlines()]
    turns = [e for e in events if e["event"] == "turn"]
    assert len(turns) == 3, events
    assert "forward" in turns[0]["transcript"]
    voiced, hop = _envelope(out_wav)
    in_len = soundfile.info(inp).duration
    assert abs(soundfile.info(out_wav).duration - in_len) < 2.0
    said = {e["id"]: e for e in events if e["event"] == "transcript"}
    next_starts = [s for s, _ in spans[1:]] + [in_len + 2]
    spoken = 0
    for turn, (start, _), nxt in zip(turns, spans, next_starts, strict=True):
        end = said[turn["id"]]["end"]  # end of speech as the endpointer saw it
        assert turn["target"] == "local" and not turn.get("interrupted")
        assert turn["tokens"]["completion_tokens"] == 8
        if not any(ch.isalnum() for ch in turn["reply"]):
            continue  # the random model's 8 tokens were all punctuation: nothing to say
        spoken += 1
        lat = turn["latency_ms"]
        assert list(lat) == ["asr_final", "end_of_turn", "llm_first_token", "first_clause",
                             "tts_first_audio", "playback_start", "first_audio"]
        assert 0 < lat["asr_final"] <= lat["llm_first_token"] <= lat["first_clause"] \
            <= lat["tts_first_audio"] <= lat["playback_start"] == lat["first_audio"]
        # the answer may be ready before the end of the turn is known, never heard before it
        assert lat["asr_final"] <= lat["end_of_turn"] <= lat["playback_start"]
        # The reply is in OUT.wav after the utterance ended, before the next one began, and
        # the file's timeline agrees with the reported first-audio latency.
        first = int(np.argmax(voiced[int(end / hop):])) * hop + end
        assert voiced[int(end / hop):].any() and first < nxt
        assert not voiced[int(start / hop): int(end / hop)].any()
        assert first - end == pytest.approx(lat["first_audio"] / 1000, abs=0.4)
    assert spoken >= 1, [t["reply"] for t in turns]
    # KV-cache reuse across turns: later turns evaluate only part of the prompt.
    assert turns[2]["tokens"]["evaluated_tokens"] < turns[2]["tokens"]["prompt_tokens"] / 2


@needs_speech
def test_speculation_prefills_the_words_so_far_and_the_turn_evaluates_the_rest(
        tmp_path, tiny_gguf):
    # agent.speculate: partial transcripts (and the one at vad.pause_ms of silence) go into the
    # model's KV cache while the user is still talking. When the final transcript is what was
    # read ahead, the turn evaluates a single prompt token.
    inp = tmp_path / "in.wav"
    compose([(SPEECH / "speechbrain__spk1_snt1.wav", 4.0),
             (SPEECH / "speechbrain__spk1_snt3.wav", 4.0)], inp)

    def turns(speculate: bool) -> list[dict]:
        flag = str(speculate).lower()
        cfg = tmp_path / f"{flag}.yaml"
        # the prefill speculator alone (answer_at_pause would start whole answers instead)
        cfg.write_text(f"llm:\n  max_tokens: 4\n  temperature: 0.0\nagent:\n  speculate: {flag}\n"
                       "  answer_at_pause: false\n")
        out = run_cli("--config", str(cfg), "run", "--input", str(inp), "--output",
                      str(tmp_path / f"o{flag}.wav"), "--llm-model", str(tiny_gguf), "--json")
        assert out.returncode == 0, out.stderr
        found = [json.loads(line) for line in out.stdout.splitlines()]
        return [e for e in found if e["event"] == "turn"]

    ahead, plain = turns(True), turns(False)
    assert len(ahead) == len(plain) == 2
    for spec_turn, plain_turn in zip(ahead, plain, strict=True):
        assert "speculation" not in plain_turn
        spec = spec_turn["speculation"]
        assert spec["heard"] and spec["prefills"] >= 1 and spec["tokens"] > 0
        assert spec["ahead_ms"] > 0 and spec["prefill_ms"] > 0
        assert spec_turn["transcript"] == plain_turn["transcript"]
        assert spec_turn["tokens"]["evaluated_tokens"] <= plain_turn["tokens"]["evaluated_tokens"]
        if spec["matched"]:
            assert spec["heard"] == spec_turn["transcript"]
            assert spec_turn["tokens"]["evaluated_tokens"] == 1
            assert plain_turn["tokens"]["evaluated_tokens"] > 1
    assert any(t["speculation"]["matched"] for t in ahead)


@needs_speech
def test_file_mode_barge_in_on_a_real_multi_utterance_recording(tmp_path, tiny_gguf):
    """chan3: speech resumes ~1 s after the first utterance, over a long reply."""
    cfg = tmp_path / "long.yaml"
    # pocketsphinx decodes this noisy 13 s utterance slower than real time on 2 cores (RTF ~1.3
    # even in batch): its turns would be rightly dropped as stale; this test is about barge-in.
    cfg.write_text("llm:\n  max_tokens: 60\n  temperature: 0.0\nagent:\n  stale_s: 60\n")
    out = run_cli("--config", str(cfg), "run", "--input",
                  str(SPEECH / "pocketsphinx__chan3_vad.wav"), "--output",
                  str(tmp_path / "o.wav"), "--llm-model", str(tiny_gguf), "--json")
    assert out.returncode == 0, out.stderr
    events = [json.loads(line) for line in out.stdout.splitlines()]
    transcripts = [e for e in events if e["event"] == "transcript"]
    turns = [e for e in events if e["event"] == "turn"]
    assert len(turns) == len(transcripts) >= 3
    cut = [t for t in turns if t.get("interrupted")]
    assert cut, turns
    assert all(len(t["spoken"]) < len(t["reply"]) or not t["reply"] for t in cut)
    assert not turns[-1].get("interrupted")  # nobody talks over the last answer


@needs_speech
def test_a_failing_synthesizer_ends_the_turn_with_an_error_not_a_hang(tmp_path):
    """Fault injection: the speech engine dies mid-turn. The turn is reported and closed, and the
    agent keeps running to the end of the input."""
    import asyncio

    from edgevoice.agent.manager import TurnManager
    from edgevoice.agent.outputs import FileOutput
    from edgevoice.asr.pocketsphinx_backend import PocketsphinxRecognizer
    from edgevoice.audio.filesource import RealtimeFileSource
    from edgevoice.audio.format import AudioFormat
    from edgevoice.config import AgentConfig, Config
    from edgevoice.ear.transcriber import StreamingTranscriber

    class DyingSynthesizer:
        name, format = "dying", AudioFormat(22050)

        def synthesize(self, text):
            raise RuntimeError("speech engine died")

        def close(self):
            pass

    events: list[dict] = []
    manager = TurnManager(
        source=RealtimeFileSource(SPEECH / "pocketsphinx__goforward.wav", speed=4.0),
        transcriber=StreamingTranscriber(Config().vad, PocketsphinxRecognizer()),
        brain=Brain(Router({}), LlmConfig()), synthesizer=DyingSynthesizer(),
        output=FileOutput(tmp_path / "o.wav"), agent=AgentConfig(), emit=events.append,
        stop_at_input_end=True)
    asyncio.run(asyncio.wait_for(manager.run(), timeout=30))
    kinds = [e["event"] for e in events]
    assert "error" in kinds and "speech engine died" in events[kinds.index("error")]["message"]
    turn = events[kinds.index("turn")]
    assert turn["interrupted"] and turn["spoken"] == ""
    assert events[-1] == {"event": "state", "state": "listening"}


@needs_speech
def test_daemon_tells_systemd_it_is_ready_and_keeps_the_watchdog_fed(tmp_path):
    """Type=notify + WatchdogSec: READY=1 once the loop runs, WATCHDOG=1 from the turn loop."""
    import socket

    addr = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(addr)
    messages: list[str] = []
    done = threading.Event()

    def drain() -> None:  # read as systemd does, so the queue (max_dgram_qlen 10) never fills
        sock.settimeout(0.1)
        while not done.is_set():
            try:
                messages.append(sock.recv(4096).decode())
            except TimeoutError:
                continue

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    out = run_cli("run", "--input", str(SPEECH / "speechbrain__spk2_snt2.wav"), "--output",
                  str(tmp_path / "o.wav"), "--json",
                  env={"NOTIFY_SOCKET": addr, "WATCHDOG_USEC": "400000",
                       "XDG_DATA_HOME": str(tmp_path)})
    time.sleep(0.3)
    done.set()
    reader.join(5)
    assert out.returncode == 0, out.stderr
    text = "\n".join(messages)
    assert "READY=1" in text and "STOPPING=1" in text
    assert text.count("WATCHDOG=1") >= 2  # the clip lasts ~2 s; keep-alives every 0.2 s
    assert text.index("READY=1") < text.index("STOPPING=1")
