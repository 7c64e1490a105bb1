"""The Speculator's scheduling, with a scripted prefill on a real single-thread executor."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from edgevoice.agent.speculation import Speculator, shared_words


class ScriptedPrefill:
    """Records the texts prefilled; each call blocks until the test releases it."""

    def __init__(self, tokens: int | None = 5) -> None:
        self.calls: list[str] = []
        self.entered = threading.Semaphore(0)
        self.release = threading.Semaphore(0)
        self.tokens = tokens
        self.cancelled: list[bool] = []

    def __call__(self, text: str, cancel: threading.Event) -> int | None:
        self.calls.append(text)
        self.entered.release()
        self.release.acquire(timeout=5)
        self.cancelled.append(cancel.is_set())
        return self.tokens


def drain(worker: ThreadPoolExecutor) -> None:
    worker.submit(lambda: None).result(5)


def test_newer_words_supersede_queued_ones_and_one_prefill_runs_at_a_time():
    prefill = ScriptedPrefill()
    with ThreadPoolExecutor(1) as worker:
        spec = Speculator(prefill, worker)
        spec.heard("what")
        assert prefill.entered.acquire(timeout=5)          # 'what' is being prefilled
        spec.heard("what time")
        spec.heard("what time is")                           # supersedes 'what time'
        prefill.release.release()
        assert prefill.entered.acquire(timeout=5)
        prefill.release.release()
        drain(worker)
        assert prefill.calls == ["what", "what time is"]
        report = spec.take("what time is", asr_final=1e9)
        assert report["matched"] and report["heard"] == "what time is"
        assert report["prefills"] == 2 and report["tokens"] == 10
        assert report["ahead_ms"] > 0


def test_the_same_words_twice_are_prefilled_once():
    prefill = ScriptedPrefill()
    prefill.release.release()
    prefill.release.release()
    with ThreadPoolExecutor(1) as worker:
        spec = Speculator(prefill, worker)
        spec.heard("turn on the lights")
        drain(worker)
        spec.heard("turn on the lights")                     # the pause repeats the partial
        drain(worker)
        assert prefill.calls == ["turn on the lights"]


def test_take_cancels_a_prefill_that_has_not_started_and_lets_a_running_one_finish():
    prefill = ScriptedPrefill()
    with ThreadPoolExecutor(1) as worker:
        gate = threading.Event()
        worker.submit(gate.wait, 5)                          # the worker is busy (a turn)
        spec = Speculator(prefill, worker)
        spec.heard("play some music")
        assert spec.take("play some music", asr_final=0.0) is None   # never started: dropped
        gate.set()
        drain(worker)
        assert prefill.calls == []

        spec.heard("set a timer")
        assert prefill.entered.acquire(timeout=5)
        report = spec.take("set a timer for ten minutes", asr_final=1e9)
        assert report["matched"] is False and report["heard"] == "set a timer"
        prefill.release.release()
        drain(worker)
        assert prefill.cancelled == [False]                  # ran to the end: its prefix helps
        assert report["prefills"] == 1 and report["tokens"] == 5   # filled in afterwards


def test_nothing_is_reported_when_no_local_model_could_prefill():
    prefill = ScriptedPrefill(tokens=None)                   # a remote will answer
    prefill.release.release()
    with ThreadPoolExecutor(1) as worker:
        spec = Speculator(prefill, worker)
        spec.heard("tell me a story")
        drain(worker)
        assert spec.take("tell me a story", asr_final=1e9) is None


def test_cancel_stops_a_running_prefill():
    prefill = ScriptedPrefill()
    with ThreadPoolExecutor(1) as worker:
        spec = Speculator(prefill, worker)
        spec.heard("hello")
        assert prefill.entered.acquire(timeout=5)
        spec.cancel()
        prefill.release.release()
        drain(worker)
        assert prefill.cancelled == [True]


def test_a_running_prefill_that_cannot_add_a_word_of_the_final_is_stopped():
    # Partials said "meters", the final says "years": finishing that prefill only delays the turn.
    prefill = ScriptedPrefill()
    with ThreadPoolExecutor(1) as worker:
        spec = Speculator(prefill, worker)
        spec.heard("go forward ten")
        assert prefill.entered.acquire(timeout=5)
        spec.heard("go forward ten meters")
        prefill.release.release()
        assert prefill.entered.acquire(timeout=5)          # 'go forward ten meters' runs
        report = spec.take("go forward ten years", asr_final=1e9)
        prefill.release.release()
        drain(worker)
        assert prefill.cancelled == [False, True]
        assert report["stopped_stale"] is True and report["matched"] is False


def test_shared_words():
    assert shared_words("go forward ten meters", "go forward ten years") == 3
    assert shared_words("", "hello") == 0
    assert shared_words("set a timer", "set a timer for ten minutes") == 3
