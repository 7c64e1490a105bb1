"""The turn manager: the one owner of conversation state, on an asyncio loop.

Engines run on their own single worker threads (ear = VAD + ASR, LLM, TTS) and talk to the loop
through ``call_soon_threadsafe``; the loop never blocks on an engine. Flow of a turn:

    utterance -> Brain.decide -> (intent text | LLM deltas on the LLM thread) -> ClauseSplitter
    -> TTS thread, one clause at a time -> AudioOutput schedule -> turn event

Barge-in (speech starting while thinking or speaking) cancels the LLM stream, the queued TTS and
the output buffer; the history keeps only what had been played. With
``agent.resume_false_barge_in`` the speaker stops at once but the turn only pauses until the
barge-in's words are known: words (a partial or a final) end it as before, none (a cough, a
door) or our own voice coming back play it on from the clause that was cut. A microphone
without echo cancellation on open speakers (``half_duplex``) takes no barge-in at all.

The answer starts before the decision (``agent.answer_at_pause``): the ear finishes the words at
each pause (``Pause.final``), and the whole turn runs on them at once -- model tokens, clauses,
their audio -- held back from the speaker. When the utterance ends with those very words the
audio plays at once; when the user goes on (``Resume``) the early turn is dropped, and the next
pause starts it again on the longer text. Speech that starts within ``agent.reopen_ms`` of an
answer (a false cut-off) stops it and joins the new words to the same turn: one reply to the
whole sentence, and the history never sees the abandoned start.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Optional, Protocol

from edgevoice import sdnotify
from edgevoice.agent.brain import Brain, Decision
from edgevoice.agent.intents import match_intent
from edgevoice.agent.outputs import AudioOutput, Scheduled
from edgevoice.agent.self_hearing import OwnVoice
from edgevoice.agent.speculation import Speculator
from edgevoice.agent.turn import Turn
from edgevoice.audio.format import AudioChunk
from edgevoice.config import ActivationConfig, AgentConfig
from edgevoice.ear.activation import Activation
from edgevoice.ear.clock import EarClock
from edgevoice.ear.endpoint import SpeechStart
from edgevoice.ear.transcriber import (
    NoWords,
    Partial,
    Pause,
    Resume,
    StreamingTranscriber,
    Utterance,
)
from edgevoice.errors import CommandError
from edgevoice.tts.clauses import ClauseSplitter
from edgevoice.tts.protocol import Synthesizer

log = logging.getLogger(__name__)

MAX_RESUMES = 2  # a turn paused by noise resumes at most this often (an echo must not loop)


class AudioSource(Protocol):
    overflows: int

    def read(self, timeout: float | None = None) -> AudioChunk | None: ...


@dataclass
class _Played:
    text: str
    slot: Scheduled
    audio: Optional[AudioChunk] = None  # kept to play it again after a false barge-in


@dataclass
class _ActiveTurn:
    turn: Turn
    decision: Decision
    task: Optional[asyncio.Task] = None
    played: list[_Played] = field(default_factory=list)
    # Audio reaches the speaker only once set: an early turn (started at a pause) waits for the
    # end of the utterance; every other turn is confirmed from the start.
    confirmed: asyncio.Event = field(default_factory=asyncio.Event)
    voice: bool = False  # answers speech (not `ctl say` / `ask`): may be reopened
    # Stopped by a barge-in whose words are not known yet (``agent.resume_false_barge_in``):
    # the monotonic time the output stopped, and how often it resumed already.
    paused_at: Optional[float] = None
    resumes: int = 0


@dataclass
class _Reopened:
    """A turn stopped by a false cut-off: its words start the next utterance's."""

    text: str
    at: float


class _InputEnded:
    pass


def spoken_text(played: list[_Played], at: float) -> str:
    """The words heard by ``at``: whole clauses that finished, and the played share of the one
    that was playing (cut at a word, proportionally to its duration)."""
    words: list[str] = []
    for item in played:
        clause_words = item.text.split()
        if at >= item.slot.end:
            words += clause_words
        elif at > item.slot.start:
            share = (at - item.slot.start) / max(item.slot.end - item.slot.start, 1e-6)
            words += clause_words[: int(len(clause_words) * share)]
            break
        else:
            break
    return " ".join(words)


class TurnManager:
    def __init__(
        self,
        *,
        source: AudioSource,
        transcriber: StreamingTranscriber,
        brain: Brain,
        synthesizer: Synthesizer,
        output: AudioOutput,
        agent: AgentConfig,
        emit: Callable[[dict], None],
        stop_at_input_end: bool = False,
        devices=None,
        first_clause_max_words: int = 0,
    ) -> None:
        self.source = source
        self.transcriber = transcriber
        self.brain = brain
        self.synth = synthesizer
        self.output = output
        self.cfg = agent
        self.emit = emit
        self.stop_at_input_end = stop_at_input_end
        self.origin: Optional[float] = None  # monotonic time of input sample 0
        self.state = ""
        self.turns: list[Turn] = []
        self._active: Optional[_ActiveTurn] = None
        self._llm = ThreadPoolExecutor(1, thread_name_prefix="edgevoice-llm")
        self._tts = ThreadPoolExecutor(1, thread_name_prefix="edgevoice-tts")
        self._stop = asyncio.Event()
        self._ear_stop = threading.Event()
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._input_ended = False
        self._deaf = False  # the current utterance began while we were talking (barge_in off)
        self.clock = EarClock()  # the ear's timeline on the monotonic clock; how far behind
        self.devices = devices  # edgevoice.audio.watch.DeviceWatch over the mic and speaker
        self._lost: dict[str, str] = {}  # "input"/"output" -> why, while that device is lost
        self._activity = ""  # the state without the devices' (listening, thinking, ...)
        self._speculator = Speculator(self.brain.prefill, self._llm)
        self.first_clause_max_words = first_clause_max_words
        self._early: Optional[_ActiveTurn] = None  # started at a pause, not yet confirmed
        self._reopened: Optional[_Reopened] = None
        self._own_voice = OwnVoice()  # what the speaker played: never answered as a request
        self._control_init()

    # -- lifecycle -------------------------------------------------------------------------

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        ear = threading.Thread(target=self._ear, name="edgevoice-ear", daemon=True)
        ear.start()
        self._set_state("listening")
        sdnotify.ready()
        keepalive = asyncio.get_running_loop().create_task(self._watchdog())
        if self.devices is not None:
            post = self._loop.call_soon_threadsafe
            self.devices.start(lambda change: post(self._on_device, change))
        try:
            await self._stop.wait()
        finally:
            sdnotify.stopping()
            keepalive.cancel()
            if self.devices is not None:
                self.devices.close()
            self._ear_stop.set()
            self._speculator.cancel()
            self._drop_early("shutdown")
            if self._active is not None:
                self._interrupt("shutdown")
            await asyncio.get_running_loop().run_in_executor(None, ear.join, 2.0)
            self._llm.shutdown(wait=True, cancel_futures=True)
            self._tts.shutdown(wait=True, cancel_futures=True)

    def stop(self) -> None:
        self._stop.set()

    async def _watchdog(self) -> None:
        """systemd keep-alives from the loop that owns the turns: a stuck loop stops them, and
        so does a lost microphone or speaker (a deaf or mute daemon must not look healthy)."""
        interval = sdnotify.watchdog_interval()
        if interval is None:
            return
        while True:
            if not self._lost:
                sdnotify.watchdog()
            await asyncio.sleep(interval)

    # -- the ear thread: VAD + ASR, nothing else -------------------------------------------

    def _ear(self) -> None:
        post = self._loop.call_soon_threadsafe
        restarts = 0
        try:
            while not self._ear_stop.is_set():
                asked = time.monotonic()
                chunk = self.source.read(timeout=0.2)
                got = time.monotonic()
                if getattr(self.source, "restarts", 0) != restarts:  # the mic was reopened
                    restarts = self.source.restarts
                    dropped = [e for e in self.transcriber.flush() if isinstance(e, Utterance)]
                    if dropped:
                        log.info("dropped an utterance cut by the lost microphone: %r",
                                 dropped[0].text)
                if chunk is None:
                    if getattr(self.source, "finished", False):
                        for event in self.transcriber.flush():
                            post(self._on_ear_event, event)
                        post(self._on_ear_event, _InputEnded())
                        return
                    continue
                if self.origin is None:
                    # The block was just captured: its last sample is "now".
                    self.origin = time.monotonic() - chunk.end_ms / 1000
                    post(self._on_origin, self.origin)
                self._keep_time(chunk, got, got - asked, post)
                for event in self.transcriber.feed(chunk):
                    post(self._on_ear_event, event)
        except Exception as exc:  # a dead ear must not leave a silent, hung daemon
            log.exception("audio input failed")
            post(self._fail, exc)

    def _keep_time(self, chunk: AudioChunk, now: float, waited: float, post) -> None:
        """How far behind real time the ear reads (``ear/clock.py``); say so, rate-limited."""
        report = self.clock.read(chunk.end_ms, now, waited, chunk.duration_ms)
        if report is None:
            return
        if report.caught_up:
            log.info("the ear has caught up with real time")
        else:
            log.warning("the ear is %.1f s behind real time (the machine is too busy): answers "
                        "come late, and an utterance still unheard %.0f s after it ended is not "
                        "answered (agent.stale_s)", report.behind_s, self.cfg.stale_s)
        post(self.emit, {"event": "behind", "behind_s": round(report.behind_s, 2)})

    def _fail(self, exc: Exception) -> None:
        self.emit({"event": "error", "message": f"audio input failed: {exc}"})
        self.stop()

    def _on_origin(self, origin: float) -> None:
        if hasattr(self.output, "origin"):
            self.output.origin = origin

    # -- events on the loop ------------------------------------------------------------------

    def _set_state(self, state: str) -> None:
        """The state shown: a lost device (no-microphone, no-speaker) outranks the activity."""
        self._activity = state
        if "input" in self._lost:
            state = "no-microphone"
        elif "output" in self._lost:
            state = "no-speaker"
        if state != self.state:
            self.state = state
            sdnotify.status(state)
            self.emit({"event": "state", "state": state})

    def _on_device(self, change) -> None:
        """A microphone or speaker was lost or is back (``edgevoice.audio.watch``)."""
        if change.ok:
            self._lost.pop(change.kind, None)
            log.info("%s", change.message)
            if change.kind == "input":
                self._deaf = False  # the utterance that set it was cut off
            self.emit({"event": "device", "device": change.kind, "ok": True,
                       "message": change.message})
        else:
            self._lost[change.kind] = change.message
            log.warning("%s", change.message)
            self.emit({"event": "error", "device": change.kind, "message": change.message})
        self._set_state(self._activity)

    def _on_ear_event(self, event) -> None:
        if isinstance(event, SpeechStart):
            self._speculator.cancel()  # words from an utterance that ended without any
            self._on_speech_start()
        elif isinstance(event, Partial):
            if event.text.strip():
                self._words_came()
            self.emit({"event": "partial", "text": event.text})
            self._speculate(self._joined(event.text))
        elif isinstance(event, Pause):
            if event.final and self.cfg.answer_at_pause:
                self._answer_early(event)
            else:
                self._speculate(self._joined(event.text))
        elif isinstance(event, Resume):
            self._drop_early("you went on")
        elif isinstance(event, Utterance):
            self._on_utterance(event)
        elif isinstance(event, NoWords):
            self._on_no_words()
        elif isinstance(event, _InputEnded):
            self._input_ended = True
            self._maybe_finish_input()
        else:
            self._on_control_ear_event(event)

    def _on_speech_start(self) -> None:
        self._drop_early("a new utterance")  # (its utterance ended without words)
        now = time.monotonic()
        talking = self._active is not None or self.output.idle_at() > now
        if not talking:
            return
        active = self._active
        if self.cfg.barge_in and not self.half_duplex:
            if active is not None and active.paused_at is not None:
                return  # stopped already: waiting for this speech's words
            if active is not None and self._may_reopen(active, now):
                self._reopen(active, now)
            elif active is not None:
                log.info("barge-in: the user spoke over turn %d", active.turn.id)
                if self._may_resume(active):
                    self._pause(active)
                else:
                    self._interrupt("barge-in")
            else:
                self._clear_output()
        else:
            # Half duplex: speech that starts while we talk is likely our own echo.
            self._deaf = True

    @property
    def llm_worker(self) -> ThreadPoolExecutor:
        """The one thread that runs the language model: other front ends of the same agent
        (Wyoming's handle) submit their turns here, so one llama.cpp model sees one thread."""
        return self._llm

    @property
    def half_duplex(self) -> bool:
        """The microphone hears the speaker and nothing removes it (echo cancellation could not
        run): speech during the answer is not taken as a barge-in."""
        return bool(getattr(self.source, "half_duplex", False))

    # -- barge-in that may turn out to be noise ------------------------------------------------

    def _may_resume(self, active: _ActiveTurn) -> bool:
        return (self.cfg.resume_false_barge_in and active.confirmed.is_set()
                and active.resumes < MAX_RESUMES)

    def _pause(self, active: _ActiveTurn) -> None:
        """Stop the speaker now; the turn waits to know whether the speech had words."""
        active.paused_at = self._clear_output()
        active.confirmed.clear()  # _speak holds its next clause
        self._set_state("listening")

    def _words_came(self) -> None:
        """The barge-in had words: the paused answer ends here, as an interrupted turn."""
        active = self._active
        if active is not None and active.paused_at is not None:
            self._interrupt("barge-in")

    def _resume(self, active: _ActiveTurn, why: str) -> None:
        """Play the paused answer on from the clause that was cut (it starts again whole)."""
        at, active.paused_at = active.paused_at, None
        active.resumes += 1
        kept = [p for p in active.played if p.slot.end <= at]
        again = [p for p in active.played if p.slot.end > at]
        active.played = kept
        for item in again:
            if item.audio is None:
                continue
            slot = self.output.play(item.audio)
            self._own_voice.played(slot.start, slot.end, item.text)
            active.played.append(_Played(item.text, slot, item.audio))
        log.info("turn %d resumed (%s): the barge-in had no words", active.turn.id, why)
        self.emit({"event": "resumed", "id": active.turn.id, "reason": why})
        active.confirmed.set()
        self._set_state("speaking" if again else "thinking")

    def _speculate(self, text: str) -> None:
        """Let the local model read the words heard so far (see ``agent/speculation.py``)."""
        if (self.cfg.speculate and self._active is None and not self._deaf
                and self.brain.wants_llm(text)):
            self._speculator.heard(text)

    def _joined(self, text: str) -> str:
        """The words of this utterance with those of a reopened turn in front."""
        reopened = self._reopened
        if reopened is None or not text:
            return text
        if match_intent(text) is not None:
            return text  # "stop", "mute", ...: a command of its own, not the sentence's end
        return f"{reopened.text} {text}"

    def _answer_early(self, pause: Pause) -> None:
        """Start the whole turn on the words final at this pause; it plays if the utterance
        ends with them (``_on_utterance``), and is dropped if the user goes on."""
        if self._active is not None and self._active.paused_at is not None:
            self._words_came()
        if self._active is not None or self._deaf or "input" in self._lost:
            return
        text = self._joined(pause.text)
        now = time.monotonic()
        if self._own_voice.is_echo(pause.text, self.clock.at(pause.start_ms) or now,
                                   self.clock.at(pause.speech_end_ms) or now):
            return
        if not self.brain.wants_llm(text):
            return  # intents answer at once anyway (and some have side effects: mute)
        decision = self.brain.decide(text)
        self._drop_early("newer words")
        self._speculator.cancel()  # the early turn evaluates the prompt itself
        now = time.monotonic()
        turn = Turn(text)
        turn.metrics.speech_end = self.clock.at(pause.speech_end_ms) or now
        turn.metrics.mark("asr_final", now)
        turn.metrics.target, turn.metrics.route_reason = decision.target, decision.reason
        active = _ActiveTurn(turn, decision, voice=True)
        self._early = active
        active.task = asyncio.get_running_loop().create_task(self._run_turn(active))
        active.task.add_done_callback(lambda task: self._turn_done(active, task))
        log.debug("turn %d started at a pause on %r", turn.id, text)

    def _drop_early(self, why: str) -> None:
        early, self._early = self._early, None
        if early is None:
            return
        early.turn.cancel.set()
        if early.task is not None:
            early.task.cancel()
        log.debug("dropped the answer started at a pause (%s): %r", why, early.turn.transcript)

    def _on_utterance(self, utt: Utterance) -> None:
        now = time.monotonic()
        speech_end = self.clock.at(utt.end_ms) or now  # when it was said, on the clock
        if self._deaf:
            self._deaf = False
            self._drop_early("heard while speaking")
            log.info("ignored, began while speaking (barge_in off): %r", utt.text)
            return
        paused = self._active if self._active is not None and \
            self._active.paused_at is not None else None
        if now - speech_end > self.cfg.stale_s:
            self._drop_early("stale")
            self._ignore_stale(utt, now - speech_end)
            if paused is not None:
                self._interrupt("barge-in")
            return
        if self._own_voice.is_echo(utt.text, self.clock.at(utt.start_ms) or now, speech_end):
            self._ignore_own_voice(utt)
            if paused is not None:
                self._resume(paused, "it was my own voice")
            return
        if paused is not None:
            self._interrupt("barge-in")
        text = self._joined(utt.text)
        self._reopened = None
        early, self._early = self._early, None
        if early is not None and early.turn.transcript == text and self._active is None:
            self._confirm(early, utt, now)
            return
        if early is not None:
            self._early = early
            self._drop_early("the final words differ")
        self._start_turn(text, utt.start_ms, utt.end_ms, speech_end, now)

    def _confirm(self, active: _ActiveTurn, utt: Utterance, now: float) -> None:
        """The early turn answers what was said: it becomes the turn, its audio plays now."""
        turn = active.turn
        turn.metrics.speech_end = self.clock.at(utt.end_ms) or turn.metrics.speech_end
        turn.metrics.mark("end_of_turn", now)
        ahead = round((now - turn.metrics.asr_final) * 1000, 1)
        turn.metrics.speculation = {"answer_at_pause": True, "ahead_ms": ahead}
        self._speculator.cancel()
        self._emit_transcript(turn, utt.start_ms, utt.end_ms)
        self._active = active
        self.turns.append(turn)
        active.confirmed.set()
        self._set_state("thinking")

    def _start_turn(self, text: str, start_ms: float, end_ms: float, speech_end: float,
                    now: float) -> None:
        if self._active is not None:
            self._interrupt("new utterance")
        turn = Turn(text)
        turn.metrics.speech_end = speech_end
        turn.metrics.mark("asr_final", now)
        turn.metrics.mark("end_of_turn", now)
        turn.metrics.speculation = self._speculator.take(text, now)
        decision = self.brain.decide(text)
        turn.metrics.target, turn.metrics.route_reason = decision.target, decision.reason
        self._emit_transcript(turn, start_ms, end_ms)
        if decision.kind == "ignore":
            self.emit({"event": "ignored", "id": turn.id, "reason": decision.reason})
            return
        active = _ActiveTurn(turn, decision, voice=True)
        active.confirmed.set()
        self._active = active
        self.turns.append(turn)
        active.task = asyncio.get_running_loop().create_task(self._run_turn(active))
        active.task.add_done_callback(lambda task: self._turn_done(active, task))

    def _emit_transcript(self, turn: Turn, start_ms: float, end_ms: float) -> None:
        self.emit({"event": "transcript", "id": turn.id, "text": turn.transcript,
                   "start": round(start_ms / 1000, 3), "end": round(end_ms / 1000, 3)})

    # -- false cut-offs ----------------------------------------------------------------------

    def _may_reopen(self, active: _ActiveTurn, now: float) -> bool:
        """Speech this soon after the answer began means the user had not finished."""
        if not (active.voice and self.cfg.reopen_ms > 0 and active.turn.transcript):
            return False
        m = active.turn.metrics
        began = m.playback_start if m.playback_start is not None and m.playback_start < now \
            else m.end_of_turn
        return began is not None and now - began <= self.cfg.reopen_ms / 1000

    def _reopen(self, active: _ActiveTurn, now: float) -> None:
        """Stop the answer; the next utterance's words join this turn's (one reply to the
        whole sentence). The abandoned answer never reaches the history."""
        turn = active.turn
        turn.cancel.set()
        stopped = self._clear_output()
        if active.task is not None:
            active.task.cancel()
        turn.interrupted = True
        turn.reopened = True
        turn.spoken = spoken_text(active.played, stopped)
        log.info("turn %d reopened: you went on %.0f ms into the answer", turn.id,
                 (now - (turn.metrics.end_of_turn or now)) * 1000)
        self._reopened = _Reopened(turn.transcript, now)
        self._active = None
        self.emit(turn.to_event())
        self._set_state("listening")

    def _on_no_words(self) -> None:
        """The utterance that reopened a turn had no words (a cough, a door): answer the
        reopened words after all."""
        active = self._active
        if active is not None and active.paused_at is not None:
            self._resume(active, "no words")
            return
        reopened, self._reopened = self._reopened, None
        if reopened is None or self._active is not None:
            return
        now = time.monotonic()
        log.info("the speech after the answer had no words: answering %r", reopened.text)
        self._start_turn(reopened.text, 0.0, 0.0, reopened.at, now)

    def _clear_output(self) -> float:
        """Stop the speaker now; what was scheduled after this was never played."""
        stopped = self.output.clear()
        self._own_voice.cut(stopped)
        return stopped

    def _ignore_own_voice(self, utt: Utterance) -> None:
        """The agent's own words came back through the microphone: reported, never answered
        (answering them is a loop that never ends by itself)."""
        self._drop_early("own voice")
        turn = Turn(utt.text)
        log.warning("not answering %r: it is what I was just saying (my own voice came back "
                    "through the microphone)", utt.text)
        self._emit_transcript(turn, utt.start_ms, utt.end_ms)
        self.emit({"event": "ignored", "id": turn.id, "reason": "own voice"})
        if self._reopened is not None:
            # The "speech" that stopped the answer was our own echo. Saying it again from the
            # start could echo again (a loop): drop it, and say so.
            log.warning("my own voice stopped the answer to %r (an echo reached the "
                        "microphone): not repeating it", self._reopened.text)
            self._reopened = None

    def _ignore_stale(self, utt: Utterance, late_s: float) -> None:
        """Heard too late to answer: reported, never answered (nor does it stop a reply)."""
        self._speculator.cancel()
        turn = Turn(utt.text)
        log.warning("not answering %r: its transcript was ready %.1f s after you stopped "
                    "speaking (agent.stale_s is %.1f s; the machine is too busy)", utt.text,
                    late_s, self.cfg.stale_s)
        self.emit({"event": "transcript", "id": turn.id, "text": utt.text,
                   "start": round(utt.start_ms / 1000, 3), "end": round(utt.end_ms / 1000, 3)})
        self.emit({"event": "ignored", "id": turn.id, "reason": "stale",
                   "late_s": round(late_s, 2)})

    # -- one turn ---------------------------------------------------------------------------

    async def _run_turn(self, active: _ActiveTurn) -> None:
        turn, decision = active.turn, active.decision
        loop = asyncio.get_running_loop()
        clauses: asyncio.Queue[Optional[str]] = asyncio.Queue()
        if active.confirmed.is_set():
            self._set_state("thinking")
        speaker = loop.create_task(self._speak(active, clauses))
        try:
            await self._produce_clauses(turn, decision, clauses)
        except asyncio.CancelledError:
            speaker.cancel()
            raise
        await speaker
        # An early turn whose answer had nothing to say ends only once it is the turn (else
        # nobody would finish it: it would stay "thinking").
        while True:  # a barge-in may pause it (and a resume play more) while it ends
            await active.confirmed.wait()
            wait = self.output.idle_at() - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if active.paused_at is None and active.confirmed.is_set():
                break
        turn.spoken = spoken_text(active.played, time.monotonic())
        self._finish(active)

    def _turn_done(self, active: _ActiveTurn, task: asyncio.Task) -> None:
        """A turn that failed (a TTS or output error) is reported and closed, never left hanging."""
        if task.cancelled() or task.exception() is None:
            return
        exc = task.exception()
        log.error("turn %d failed: %s", active.turn.id, exc, exc_info=exc)
        if self._early is active:  # nothing was played: the turn may still start afresh
            self._early = None
            return
        self.emit({"event": "error", "message": f"turn failed: {exc}"})
        active.turn.cancel.set()
        self._clear_output()
        active.turn.interrupted = True
        active.turn.spoken = spoken_text(active.played, time.monotonic())
        self._finish(active)

    async def _produce_clauses(self, turn: Turn, decision: Decision,
                               clauses: asyncio.Queue) -> None:
        try:
            splitter = ClauseSplitter(first_max_words=self.first_clause_max_words)
            async for delta in self._reply_deltas(turn, decision):
                turn.reply += delta
                for clause in splitter.push(delta):
                    turn.metrics.mark("first_clause")
                    clauses.put_nowait(clause)
            for clause in splitter.flush():
                turn.metrics.mark("first_clause")
                clauses.put_nowait(clause)
        finally:
            clauses.put_nowait(None)

    async def _reply_deltas(self, turn: Turn, decision: Decision):
        if decision.reply is not None:
            if decision.reply:
                yield decision.reply
            return
        loop = asyncio.get_running_loop()
        deltas: asyncio.Queue = asyncio.Queue()
        done = object()

        def produce() -> None:
            try:
                for delta in self.brain.llm_stream(turn):
                    loop.call_soon_threadsafe(deltas.put_nowait, delta)
            except Exception as exc:  # reported on the loop, turn ends gracefully
                loop.call_soon_threadsafe(deltas.put_nowait, exc)
            finally:
                loop.call_soon_threadsafe(deltas.put_nowait, done)

        self._llm.submit(produce)
        while True:
            item = await deltas.get()
            if item is done:
                return
            if isinstance(item, Exception):
                log.error("language model failed: %s", item)
                self.emit({"event": "error", "message": f"language model failed: {item}"})
                return
            yield item

    async def _speak(self, active: _ActiveTurn, clauses: asyncio.Queue) -> None:
        loop = asyncio.get_running_loop()
        turn = active.turn
        while (clause := await clauses.get()) is not None:
            audio = await loop.run_in_executor(self._tts, self.synth.synthesize, clause)
            if turn.cancel.is_set():
                return
            turn.metrics.mark("tts_first_audio")
            await active.confirmed.wait()  # an early turn: until the utterance ends
            if turn.cancel.is_set():
                return
            slot = self.output.play(audio)
            self._own_voice.played(slot.start, slot.end, clause)
            turn.metrics.mark("playback_start", slot.start)
            active.played.append(_Played(clause, slot, audio))
            self._set_state("speaking")

    def _interrupt(self, why: str) -> None:
        active = self._active
        if active is None:
            return
        active.turn.cancel.set()
        stopped = self._clear_output()
        if active.paused_at is not None:  # its output stopped then
            stopped = active.paused_at
        if active.task is not None:
            active.task.cancel()
        active.turn.interrupted = True
        active.turn.spoken = spoken_text(active.played, stopped)
        log.info("turn %d interrupted (%s); spoken: %r", active.turn.id, why, active.turn.spoken)
        self._finish(active)

    def _finish(self, active: _ActiveTurn) -> None:
        if self._active is not active:
            return
        self._active = None
        self.brain.finish(active.turn, active.decision)
        self.emit(active.turn.to_event())
        self._set_state("muted" if self.brain.muted else "listening")
        self._maybe_finish_input()

    def _maybe_finish_input(self) -> None:
        if self._input_ended and self._active is None and self.stop_at_input_end:
            self.stop()

    # -- control commands ----------------------------------------------------------------------
    # Verbs of the control API (edgevoice.control.server) and the push-to-talk signals. All run
    # on the loop; a command that can't be done now raises CommandError with the reason.

    def _control_init(self) -> None:
        self._control_sink = self.emit
        self._listeners: list[Callable[[dict], None]] = []
        self._waiters: dict[int, asyncio.Future] = {}
        self.emit = self._control_emit

    def _control_emit(self, event: dict) -> None:
        """The configured sink first, then listeners; a turn's end resolves its waiter."""
        self._control_sink(event)
        if event.get("event") in ("turn", "ignored"):
            waiter = self._waiters.pop(event.get("id"), None)
            if waiter is not None and not waiter.done():
                waiter.set_result(event)
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:  # a broken listener must not break the turn that emitted
                log.exception("event listener failed")

    def add_listener(self, listener: Callable[[dict], None]) -> None:
        self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[dict], None]) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def _on_control_ear_event(self, event) -> None:
        if isinstance(event, Activation):
            self.emit({"event": "activation", "mode": event.mode, "active": event.active,
                       "reason": event.reason, "at": round(event.at_ms / 1000, 3)})

    def activation_status(self) -> dict:
        mode = getattr(self.transcriber, "mode", "always")
        return {"mode": mode, "active": bool(getattr(self.transcriber, "active", True))}

    def status(self) -> dict:
        """What a tray or HMI shows: state, mute, policy, activation, last turn, targets."""
        router = self.brain.router
        current = self._active.turn if self._active is not None else None
        last = next((t for t in reversed(self.turns) if t is not current), None)
        return {
            "state": self.state,
            "lost_devices": dict(self._lost),
            "muted": self.brain.muted,
            "policy": router.policy,
            "activation": self.activation_status(),
            "barge_in": self.cfg.barge_in,
            "turn_active": current is not None,
            "last_turn": None if last is None else {
                "id": last.id, "target": last.metrics.target,
                "interrupted": last.interrupted, "latency_ms": last.metrics.latency_ms()},
            "targets": [{"name": info.name, "kind": info.kind, "model": info.model,
                         "device": info.device}
                        for info in (t.describe() for t in router.targets.values())],
        }

    def set_muted(self, muted: bool) -> None:
        """Muted: only the spoken "unmute" is answered (as the voice intent)."""
        self.brain.muted = muted
        self.emit({"event": "muted", "muted": muted})
        if self._active is None:
            self._set_state("muted" if muted else "listening")

    def set_policy(self, policy: str) -> None:
        from edgevoice.llm.router import POLICIES

        if policy not in POLICIES:
            raise CommandError(f"policy must be one of {', '.join(POLICIES)}, not {policy!r}")
        self.brain.router.policy = policy
        self.emit({"event": "policy", "policy": policy})

    def push_to_talk(self, pressed: bool) -> None:
        """Press: stop any reply at once (the button is explicit, whatever barge_in says) and
        open the gate; release: the utterance ends now."""
        mode = self.activation_status()["mode"]
        if mode != "push_to_talk":
            raise CommandError(f"push-to-talk is off: activation.mode is {mode} (set it to "
                               "push_to_talk in the config and reload)")
        if pressed:
            if self._active is not None:
                self._interrupt("push-to-talk")
            elif self.output.idle_at() > time.monotonic():
                self._clear_output()
            self.transcriber.press()
        else:
            self.transcriber.release()

    def push_to_talk_signal(self, pressed: bool) -> None:
        """SIGUSR1 / SIGUSR2 (a steering-wheel button): like the command, but never raises."""
        try:
            self.push_to_talk(pressed)
        except CommandError as exc:
            log.warning("ignored push-to-talk signal: %s", exc)

    def cancel_turn(self) -> bool:
        """Stop the current reply (like the spoken "stop"); False when nothing was playing."""
        if self._active is not None:
            self._interrupt("cancelled")
            return True
        if self.output.idle_at() > time.monotonic():
            self._clear_output()
            return True
        return False

    def say(self, text: str) -> asyncio.Future:
        """Speak ``text`` as a turn, no model involved; resolves to the turn event."""
        return self._text_turn("", Decision("intent", "say", "control: say", text))

    def ask(self, text: str) -> asyncio.Future:
        """A turn from text, as if it had been heard; resolves to the turn (or ignored) event."""
        return self._text_turn(text, None)

    def _text_turn(self, text: str, decision: Optional[Decision]) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        self._drop_early("a request from the control API")
        if self._active is not None:
            self._interrupt("new request")
        elif self.output.idle_at() > now:
            self._clear_output()
        decision = decision or self.brain.decide(text)
        turn = Turn(text)
        turn.metrics.speech_end = now  # latency counts from the command
        turn.metrics.mark("asr_final", now)
        turn.metrics.mark("end_of_turn", now)
        turn.metrics.target, turn.metrics.route_reason = decision.target, decision.reason
        waiter = loop.create_future()
        self._waiters[turn.id] = waiter
        if text:
            self.emit({"event": "transcript", "id": turn.id, "text": text, "source": "control"})
        if decision.kind == "ignore":
            self.emit({"event": "ignored", "id": turn.id, "reason": decision.reason})
            return waiter
        active = _ActiveTurn(turn, decision)
        active.confirmed.set()
        self._active = active
        self.turns.append(turn)
        active.task = loop.create_task(self._run_turn(active))
        active.task.add_done_callback(lambda task: self._turn_done(active, task))
        return waiter

    def apply_config(self, agent: AgentConfig, activation: ActivationConfig,
                     spotter=None) -> None:
        """What `reload` can change live: the agent section and the activation mode."""
        reconfigure = getattr(self.transcriber, "reconfigure", None)
        if reconfigure is None and activation.mode != "always":
            raise CommandError("this agent was started without activation modes")
        self.cfg = agent
        if reconfigure is not None:
            reconfigure(activation, spotter)
