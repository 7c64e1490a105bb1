"""Behind real time, say so: the ear's clock, the `behind` warning, and `stale` utterances.

File mode plays its input in real time (``RealtimeFileSource`` hands a block out when the wall
clock says it was captured), so a slow ear falls behind it exactly as it would behind a
microphone: these tests slow the ear down and watch the manager notice.
"""

from __future__ import annotations

import asyncio
import logging
import time

import numpy as np
import pytest
import soundfile
from hypothesis import given
from hypothesis import strategies as st

from edgevoice.agent.brain import Brain
from edgevoice.agent.manager import TurnManager
from edgevoice.agent.outputs import FileOutput
from edgevoice.asr.protocol import Transcript
from edgevoice.audio.filesource import RealtimeFileSource
from edgevoice.audio.format import AudioChunk, AudioFormat
from edgevoice.config import AgentConfig, Config, LlmConfig
from edgevoice.ear.clock import EarClock
from edgevoice.ear.endpoint import SpeechStart
from edgevoice.ear.transcriber import StreamingTranscriber, Utterance
from edgevoice.evaluation import speech_dir
from edgevoice.llm.router import Router

SPEECH = speech_dir()

# -- the clock, pure ------------------------------------------------------------------------


def _feed(clock: EarClock, reads):
    """reads: (end_ms, now, waited_s) with 30 ms blocks; returns the reports."""
    return [r for end, now, waited in reads if (r := clock.read(end, now, waited, 30.0))]


def test_a_caught_up_ear_is_never_behind():
    clock = EarClock()
    # Each block read 2-9 ms after its capture, after waiting for it, starting at t=100.
    reads = [((n + 1) * 30, 100 + (n + 1) * 0.03 + 0.002 + (n % 8) / 1000, 0.02)
             for n in range(2000)]
    assert _feed(clock, reads) == []
    assert clock.behind_s < 0.05 and clock.at(0) == pytest.approx(100, abs=0.01)


def test_a_stalled_ear_reports_how_far_behind_then_rate_limits_then_caught_up():
    clock = EarClock(warn_s=0.5, every_s=10.0)
    reads = [(30 * (n + 1), 100 + 0.03 * (n + 1), 0.02) for n in range(100)]  # 3 s, in time
    t = 103.0
    # A 2 s stall, then the backlog read at once (no waiting) but slower than it came in.
    for n in range(100, 300):
        t = max(t, 103.0 + 2.0) + 0.015 if n == 100 else t + 0.025
        reads.append((30 * (n + 1), t, 0.0))
    reports = _feed(clock, reads)
    assert reports[0].behind_s == pytest.approx(2.0, abs=0.05) and not reports[0].caught_up
    assert len(reports) == 1  # within every_s: one report, though still behind
    # Caught up: reads wait for their blocks again.
    end = 30 * 300
    later = [(end + 30 * (k + 1), 100 + (end + 30 * (k + 1)) / 1000 + 0.003, 0.02)
             for k in range(10)]
    reports = _feed(clock, later)
    assert [r.caught_up for r in reports] == [True]


def test_dropped_audio_does_not_leave_the_ear_forever_behind():
    """A full queue dropped 1.5 s of blocks: the sample count now lags the clock. The first
    read that has to wait again re-anchors, so later utterances are not stale for ever."""
    clock = EarClock()
    _feed(clock, [(30 * (n + 1), 100 + 0.03 * (n + 1), 0.02) for n in range(100)])
    # Stream ms 3000.. continue, but captured 1.5 s later than the count says.
    _feed(clock, [(3000 + 30 * (k + 1), 101.5 + 3.0 + 0.03 * (k + 1), 0.02) for k in range(10)])
    assert clock.behind_s == pytest.approx(0, abs=0.01)
    assert clock.at(3300) == pytest.approx(101.5 + 3.3, abs=0.01)


@given(st.lists(st.tuples(st.floats(0, 0.2), st.booleans()), min_size=1, max_size=300))
def test_behind_is_never_negative_and_reports_are_rate_limited(steps):
    clock = EarClock(warn_s=0.5, every_s=10.0)
    now, reports = 50.0, []
    for n, (delay, waited) in enumerate(steps):
        now += delay
        report = clock.read(30 * (n + 1), now, 0.02 if waited else 0.0, 30.0)
        assert clock.behind_s >= 0
        if report is not None:
            reports.append((now, report))
    last = None  # the last warning (time, figure) while behind
    for t, report in reports:
        if report.caught_up:
            assert last is not None  # only after a warning
            last = None
        else:
            assert report.behind_s >= 0.5
            # Again within 10 s only when twice as far behind.
            assert last is None or t - last[0] >= 10.0 or report.behind_s >= 2 * last[1]
            last = (t, report.behind_s)


# -- the manager: stale utterances are reported, not answered ---------------------------------


class SilentSynth:
    name, format = "silent", AudioFormat(22050)

    def synthesize(self, text):
        return AudioChunk.from_samples(np.zeros(2205, np.int16), 22050)

    def close(self):
        pass


class ScriptedEar:
    """Hears "what time is it" twice on the stream timeline; the first final takes ``slow_s``
    to come out (a recognizer starved of CPU), on the ear thread, like a real one."""

    def __init__(self, slow_s: float) -> None:
        self.slow_s = slow_s
        self.script = [(300, SpeechStart(300.0)), (1200, ("utterance", 300.0, 900.0, slow_s)),
                       (2100, SpeechStart(2100.0)), (3000, ("utterance", 2100.0, 2700.0, 0.0))]

    def feed(self, chunk):
        while self.script and chunk.end_ms >= self.script[0][0]:
            _, event = self.script.pop(0)
            if isinstance(event, tuple):
                _, start, end, slow = event
                time.sleep(slow)
                event = Utterance(start, end, Transcript("what time is it", True), "silence")
            yield event

    def flush(self):
        return iter(())


def _run(manager: TurnManager, timeout: float = 30) -> None:
    asyncio.run(asyncio.wait_for(manager.run(), timeout=timeout))


def _manager(tmp_path, source, transcriber, stale_s: float, events: list) -> TurnManager:
    return TurnManager(
        source=source, transcriber=transcriber, brain=Brain(Router({}), LlmConfig()),
        synthesizer=SilentSynth(), output=FileOutput(tmp_path / "o.wav"),
        agent=AgentConfig(stale_s=stale_s, speculate=False), emit=events.append,
        stop_at_input_end=True)


def test_a_final_ready_after_stale_s_is_reported_not_answered_and_the_lag_is_told(
        tmp_path, caplog):
    wav = tmp_path / "quiet.wav"
    soundfile.write(wav, np.zeros(int(3.6 * 16000), np.int16), 16000)
    events: list[dict] = []
    caplog.set_level(logging.INFO, logger="edgevoice.agent.manager")
    manager = _manager(tmp_path, RealtimeFileSource(wav), ScriptedEar(slow_s=1.6), 1.0, events)
    _run(manager)
    said = [e for e in events if e["event"] == "transcript"]
    ignored = [e for e in events if e["event"] == "ignored"]
    turns = [e for e in events if e["event"] == "turn"]
    assert len(said) == 2, events
    # The first: ended at 0.9 s, final at ~1.2 + 1.6 s -> ~1.9 s late: reported, not answered.
    assert ignored == [{"event": "ignored", "id": said[0]["id"], "reason": "stale",
                        "late_s": ignored[0]["late_s"]}]
    assert ignored[0]["late_s"] > 1.0
    # The second came in time (the ear caught up in the silence between): answered.
    assert [t["id"] for t in turns] == [said[1]["id"]]
    assert turns[0]["latency_ms"]["asr_final"] < 1000
    behind = [e for e in events if e["event"] == "behind"]
    assert behind[0]["behind_s"] >= 1.0 and behind[-1]["behind_s"] == 0.0, behind
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("behind real time" in m for m in warned), warned
    assert any("not answering" in m and "agent.stale_s" in m for m in warned), warned


def test_in_time_the_same_script_is_answered_twice_and_nothing_is_behind(tmp_path):
    wav = tmp_path / "quiet.wav"
    soundfile.write(wav, np.zeros(int(3.6 * 16000), np.int16), 16000)
    events: list[dict] = []
    _run(_manager(tmp_path, RealtimeFileSource(wav), ScriptedEar(slow_s=0.0), 1.0, events))
    assert len([e for e in events if e["event"] == "turn"]) == 2, events
    assert not [e for e in events if e["event"] in ("ignored", "behind")], events


class SlowFinish:
    """A real recognizer whose final transcript takes ``slow_s`` longer (CPU contention)."""

    def __init__(self, inner, slow_s: float) -> None:
        self.inner, self.slow_s = inner, slow_s
        self.name, self.sample_rate = inner.name, inner.sample_rate

    def accept(self, chunk):
        self.inner.accept(chunk)

    def partial(self):
        return self.inner.partial()

    def finish(self):
        time.sleep(self.slow_s)
        return self.inner.finish()

    def reset(self):
        self.inner.reset()

    def close(self):
        self.inner.close()


@pytest.mark.skipif(SPEECH is None, reason="speech clips not found")
def test_real_speech_through_a_slow_recognizer_is_stale(tmp_path):
    """The real ear (endpointer + pocketsphinx) on a real clip played in real time; only the
    final transcript is slowed. The utterance is reported with its words, and not answered."""
    from edgevoice.asr.pocketsphinx_backend import PocketsphinxRecognizer

    audio, rate = soundfile.read(SPEECH / "pocketsphinx__goforward.wav", dtype="int16")
    wav = tmp_path / "in.wav"
    soundfile.write(wav, np.concatenate([audio, np.zeros(2 * rate, np.int16)]), rate)
    events: list[dict] = []
    ear = StreamingTranscriber(Config().vad, SlowFinish(PocketsphinxRecognizer(), 2.5))
    _run(_manager(tmp_path, RealtimeFileSource(wav), ear, 1.5, events))
    said = [e for e in events if e["event"] == "transcript"]
    assert len(said) == 1 and "forward" in said[0]["text"], events
    ignored = [e for e in events if e["event"] == "ignored"]
    assert ignored and ignored[0]["reason"] == "stale" and ignored[0]["late_s"] > 2.5
    assert not [e for e in events if e["event"] == "turn"]
    assert any(e["event"] == "behind" and e["behind_s"] >= 2.0 for e in events), events
