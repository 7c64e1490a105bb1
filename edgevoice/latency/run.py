"""`edgevoice bench latency`: voice-to-voice at the speaker, on one PulseAudio clock.

The orchestration: a rig (rig.py), a recording of the whole bus for the whole run (capture.py),
the agent(s) or the echo (agent.py, echo.py), clips played one turn at a time with quiet gaps,
each turn measured on the recording as soon as it is over (analysis.py), then tables, JSON and a
PNG (report.py, plot.py).

``--compare A.yaml B.yaml`` runs both agents at once, each on its own microphone/speaker pair of
the same bus, and speaks to them in turn (same clip to both, the order swapped every pair): one
run, one machine state, warm caches on both sides, no restarts between blocks. The idle agent
hears digital silence meanwhile; its idle cost (measured and printed) is the price of that.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from edgevoice.errors import UserError
from edgevoice.latency import analysis as an
from edgevoice.latency.agent import Agent, agent_config, cpu_seconds
from edgevoice.latency.capture import BusClip, BusRecorder, play, play_async, write_wav
from edgevoice.latency.rig import RATE, Rig

STAGES = ("asr_final", "llm_first_token", "first_clause", "tts_first_audio", "first_audio")


@dataclass
class Options:
    configs: list[Optional[Path]] = field(default_factory=lambda: [None])
    turns: int = 10
    gap_s: float = 1.5
    clips: Optional[Path] = None
    llm_model: Optional[Path] = None
    remote_server: Optional[str] = None  # a GGUF path, or "tiny"
    use_running_server: bool = False
    barge_in: int = 0
    idle_s: float = 10.0
    turn_timeout_s: float = 45.0
    start_timeout_s: float = 180.0
    validate: bool = False
    delays_ms: tuple[int, ...] = (0, 250, 500, 1000)
    tolerance_ms: float = 10.0
    plot: Optional[Path] = None
    recording: Optional[Path] = None
    seed: int = 0


Progress = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _ms(samples: Optional[int]) -> Optional[float]:
    return None if samples is None else round(samples * 1000.0 / RATE, 1)


def _s(index: Optional[int]) -> Optional[float]:
    return None if index is None else round(index / RATE, 3)


class Session:
    """Everything a run holds, closed in reverse order whatever happens."""

    def __init__(self, opts: Options, progress: Progress) -> None:
        self.opts, self.say = opts, progress
        self.stack = contextlib.ExitStack()
        self.workdir = Path(tempfile.mkdtemp(prefix="evlat-"))
        self.stack.callback(shutil.rmtree, self.workdir, True)
        self.rig: Optional[Rig] = None
        self.rec: Optional[BusRecorder] = None
        self.threshold = an.audible_threshold(0.0)
        self.floor_rms = 0.0

    def close(self) -> None:
        self.stack.close()

    def start_rig(self, ports: int) -> None:
        self.say("starting the sound rig: "
                 + ("the running server" if self.opts.use_running_server else
                    "a private PulseAudio server") + f", one 48 kHz stereo bus, {ports} "
                 "microphone/speaker pair" + ("s" if ports > 1 else ""))
        self.rig = Rig(ports, use_running=self.opts.use_running_server,
                       root=self.workdir / "pulse")
        self.rig.start()
        self.stack.callback(self.rig.close)
        self.rec = BusRecorder(self.rig.env)
        self.rec.start()
        self.stack.callback(self.rec.stop)

    def measure_floor(self, seconds: float = 1.0) -> None:
        """The speaker channel's noise floor with nothing playing, and the audible threshold."""
        assert self.rec is not None
        end = self.rec.now()
        time.sleep(seconds)
        quiet = self.rec.snapshot(end)
        self.floor_rms = an.noise_floor(quiet[:, 1]) if len(quiet) else 0.0
        self.threshold = an.audible_threshold(self.floor_rms)

    def right_quiet_for(self, seconds: float) -> bool:
        assert self.rec is not None
        n = int(seconds * RATE)
        now = self.rec.now()
        if now < n:
            return False
        tail = self.rec.snapshot(now - n, now)
        return an.first_audible(tail[:, 1], self.threshold, hold_ms=an.FRAME_MS) is None \
            and an.first_audible(tail[:, 0], self.threshold, hold_ms=an.FRAME_MS) is None

    def save_recording(self) -> Optional[str]:
        if self.opts.recording is None or self.rec is None:
            return None
        data = self.rec.snapshot()
        write_wav(self.opts.recording, data.reshape(-1), RATE, channels=2)
        return str(self.opts.recording)


# -- agent runs -----------------------------------------------------------------------------


def _config_names_model(path: Optional[Path]) -> bool:
    if path is None:
        return False
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return False  # agent_config reports it
    return bool(isinstance(data, dict) and (data.get("llm") or {}).get("model"))


def _tiny_model(workdir: Path) -> Path:
    from edgevoice.devtools.gguf_model import write_tiny_gemma2

    try:
        import gguf  # noqa: F401
    except ImportError:
        raise UserError("the default tiny test model needs the gguf package: pip install "
                        "'edgevoice[bench]' (or give --llm-model / a config with llm.model)"
                        ) from None
    # Word pieces only: the bare-character runs of the plain tiny model are one long "word"
    # that the clause splitter must hold to the end, which would time the splitter, not us.
    return write_tiny_gemma2(workdir / "tiny-gemma2.gguf", spaced_words=True)


def _remote_server(session: Session, spec: str, tiny: Callable[[], Path]) -> tuple[str, str]:
    from edgevoice.devtools.fault_server import llama_server, llama_server_missing

    missing = llama_server_missing()
    if missing:
        raise UserError(missing)
    model = tiny() if spec == "tiny" else Path(spec)
    if not model.is_file():
        raise UserError(f"--remote-server {spec}: no such model file")
    session.say(f"starting llama.cpp's OpenAI-compatible server on loopback ({model.name})")
    # The tiny model stands in for a remote that costs this machine nothing: one thread, so
    # its prompt reads do not stall on a core the agent's ear holds (ggml's threads wait on
    # each other; at the server's default two, a first token took 90-390 ms instead of ~10
    # whenever the turn detector was running).
    extra = ("--n_threads", "1", "--n_threads_batch", "1") if spec == "tiny" else ()
    try:
        srv = session.stack.enter_context(llama_server(model, "bench", n_ctx=4096,
                                                       extra_args=extra))
    except RuntimeError as exc:
        raise UserError(f"llama.cpp's server did not start: {exc}") from None
    return srv.url, srv.model


def _label(i: int) -> str:
    return "AB"[i] if i < 2 else str(i)


def _wait_turn_over(session: Session, agent: Agent, deadline: float) -> bool:
    """Wait until the agent has answered (a turn or ignored event), says it is listening, and
    both channels have been quiet for the gap. False at the deadline."""
    got = False
    while time.monotonic() < deadline:
        event = agent.poll(0.05)
        if event is not None and event.get("event") in ("turn", "ignored"):
            got = True
        last = agent.events[-1]["_t"] if agent.events else 0.0
        if (got and agent.state in ("listening", "muted")
                and time.monotonic() - last >= min(session.opts.gap_s, 1.0)
                and session.right_quiet_for(session.opts.gap_s)):
            return True
    return False


def _wait_quiet(session: Session, agent: Agent, deadline: float) -> bool:
    """Wait until the agent is listening (or muted) and both channels are quiet."""
    while time.monotonic() < deadline:
        agent.poll(0.1)
        if agent.state in ("listening", "muted") and session.right_quiet_for(
                session.opts.gap_s):
            return True
    return False


def _turn_events(agent: Agent, first: int) -> list[dict]:
    """The turn events since ``first`` that answer what was heard since then: a late turn of an
    earlier clip (finished, or interrupted, only now) is not this clip's."""
    events = agent.events[first:]
    heard = {e.get("id") for e in events if e.get("event") == "transcript"}
    return [e for e in events if e.get("event") == "turn" and e.get("id") in heard]


def _one_turn(session: Session, agent: Agent, clip: BusClip, number: int, total: int) -> dict:
    rec = session.rec
    assert rec is not None
    agent.drain()
    first_event = len(agent.events)
    cpu0, t0 = cpu_seconds(agent.pid), time.monotonic()
    lo = rec.now()
    play(session.rig.env, agent.port.mic_sink, clip.wav)
    played = rec.now()
    finished = _wait_turn_over(session, agent, time.monotonic() + session.opts.turn_timeout_s)
    if not finished:  # never let the next clip start over this one's (late) answer
        session.say(f"turn {number}/{total} [{agent.label}]: no finished answer within "
                    f"{session.opts.turn_timeout_s:.0f} s; waiting for the agent to go quiet")
        _wait_quiet(session, agent, time.monotonic() + 2 * session.opts.turn_timeout_s)
    cpu1, t1 = cpu_seconds(agent.pid), time.monotonic()
    end = rec.now()
    data = rec.snapshot(0, end)
    timing = an.measure_turn(data[:, 0], data[:, 1], clip.samples,
                             an.SpeechSpan(clip.start_s, clip.end_s, clip.span_source),
                             lo - RATE // 10, played + RATE // 10, end, session.threshold)
    turns = _turn_events(agent, first_event)
    late = sum(e.get("event") == "turn" for e in agent.events[first_event:]) - len(turns)
    transcripts = [e.get("text", "") for e in agent.events[first_event:]
                   if e.get("event") == "transcript"]
    ev = turns[0] if turns else {}
    lat = ev.get("latency_ms") or {}
    stages = {k: lat.get(k) for k in STAGES}
    v2v = timing.v2v_ms
    row = {
        "turn": number, "config": agent.label, "clip": clip.name,
        "clip_at_s": _s(timing.clip_at), "speech_end_s": _s(timing.speech_end),
        "speech_end_source": clip.span_source, "reply_onset_s": _s(timing.reply_onset),
        "v2v_ms": v2v, "cut_off": timing.cut_off, "overlap": timing.overlap,
        "no_reply": timing.reply_onset is None,
        "stages_ms": stages, "latency_ms": lat,
        "unseen_ms": (round(v2v - stages["first_audio"], 1)
                      if v2v is not None and stages["first_audio"] is not None
                      and not timing.cut_off else None),
        "cpu_s": round(cpu1 - cpu0, 3), "turn_s": round(t1 - t0, 2),
        "turns_seen": len(turns), "late_turns": late, "transcripts": transcripts,
        "target": ev.get("target"), "interrupted": bool(ev.get("interrupted")),
        "reply_chars": len(ev.get("reply") or ""), "error": ev.get("error"),
        "speakable": any(ch.isalnum() for ch in (ev.get("reply") or "")),
        "ear_behind_s": max([float(e.get("behind_s") or 0) for e in agent.events[first_event:]
                             if e.get("event") == "behind"], default=0.0),
        "events": [{k: v for k, v in e.items() if k != "_t" and k != "latency_ms"}
                   for e in agent.events[first_event:] if e.get("event") != "partial"],
        "finished": finished, "clip_match": round(timing.match, 3),
    }
    if timing.clip_at is None:
        row["problem"] = "clip not found on the microphone channel"
    elif timing.overlap:
        row["problem"] = "an earlier answer was still playing when the clip began"
    elif not finished:
        row["problem"] = f"no finished answer within {session.opts.turn_timeout_s:.0f} s"
    note = ("FALSE CUT-OFF" if timing.cut_off else "no reply heard" if v2v is None
            else f"V2V {v2v:.0f} ms")
    fa = stages["first_audio"]
    session.say(f"turn {number}/{total} [{agent.label}] {clip.name}: {note}"
                + (f" (agent's first_audio {fa:.0f} ms)" if fa is not None else "")
                + f", cpu {row['cpu_s']:.2f} s")
    return row


def _barge_trial(session: Session, agent: Agent, question: BusClip, barge: BusClip,
                 number: int, total: int) -> dict:
    rec = session.rec
    assert rec is not None
    agent.drain()
    first_event = len(agent.events)
    lo = rec.now()
    play(session.rig.env, agent.port.mic_sink, question.wav)
    # wait until the reply has been audible for 0.25 s
    deadline = time.monotonic() + session.opts.turn_timeout_s
    heard_at = None
    while time.monotonic() < deadline:
        agent.poll(0.02)
        now = rec.now()
        if heard_at is None:
            tail = rec.snapshot(lo, now)
            onset = an.first_audible(tail[:, 1], session.threshold) if len(tail) else None
            if onset is not None:
                heard_at = lo + onset
        elif now - heard_at >= int(0.25 * RATE):
            break
    row: dict = {"trial": number, "config": agent.label, "question": question.name,
                 "barge": barge.name}
    if heard_at is None:
        row.update(stop_ms=None, outcome="no reply to interrupt")
        session.say(f"barge-in {number}/{total} [{agent.label}]: no reply to interrupt")
        _wait_turn_over(session, agent, time.monotonic() + session.opts.turn_timeout_s)
        return row
    lo_b = rec.now()
    proc = play_async(session.rig.env, agent.port.mic_sink, barge.wav)
    proc.wait(120)
    played = rec.now()
    _wait_turn_over(session, agent, time.monotonic() + session.opts.turn_timeout_s)
    end = rec.now()
    data = rec.snapshot(0, end)
    at, peak = an.locate(barge.samples, data[:, 0], lo_b - RATE // 10, played + RATE // 10)
    turns = _turn_events(agent, first_event)
    interrupted = bool(turns and turns[0].get("interrupted"))
    row["reply_onset_s"] = _s(heard_at)
    row["transcripts"] = [e.get("text", "") for e in agent.events[first_event:]
                          if e.get("event") == "transcript"]
    if at is None or peak < 0.5:
        row.update(stop_ms=None, outcome="barge-in clip not found on the microphone channel")
    else:
        onset = at + int(round(barge.start_s * RATE))
        stop_ms, outcome = an.barge_stop_ms(data[:, 1], onset, session.threshold, end)
        if outcome == "stopped" and not interrupted:
            outcome = "not interrupted (the reply ran to its end)"
            stop_ms = None
        row.update(barge_onset_s=_s(onset), stop_ms=stop_ms, outcome=outcome)
    row["interrupted"] = interrupted
    session.say(f"barge-in {number}/{total} [{agent.label}]: "
                + (f"speaker silent {row['stop_ms']:.0f} ms after the speech began"
                   if row.get("stop_ms") is not None else row["outcome"]))
    return row


def run_agents(opts: Options, progress: Progress = _stderr) -> dict:
    from edgevoice.latency import clips as clipmod

    session = Session(opts, progress)
    try:
        entries = clipmod.find_clips(opts.clips)
        clips = clipmod.prepare(entries, session.workdir, max(opts.turns, 2), opts.seed,
                                progress)
        tiny_path: list[Path] = []

        def tiny() -> Path:
            if not tiny_path:
                tiny_path.append(_tiny_model(session.workdir))
            return tiny_path[0]

        n = len(opts.configs)
        session.start_rig(n)
        remote: Optional[tuple[str, str]] = None
        if opts.remote_server is not None:
            remote = _remote_server(session, opts.remote_server, tiny)
        agents: list[Agent] = []
        described = []
        for i, cfg in enumerate(opts.configs):
            label = _label(i)
            port = session.rig.ports[i]
            path = agent_config(cfg, port, session.workdir / f"agent-{label}.yaml", remote)
            extra: list[str] = []
            model = opts.llm_model
            if model is None and not _config_names_model(cfg):
                model = tiny()
            if model is not None:
                extra += ["--llm-model", str(model)]
            progress(f"starting the agent {label} ({cfg or 'default config'}"
                     + (", tiny test model" if tiny_path and model == tiny_path[0] else
                        f", {model}" if model else "") + (", remote" if remote else "") + ")")
            agent = Agent(label, path, port, session.rig.env_for(port), session.workdir, extra)
            session.stack.callback(agent.stop)
            agent.wait_ready(opts.start_timeout_s)
            agents.append(agent)
            is_tiny = bool(tiny_path) and model == tiny_path[0]
            described.append({"label": label, "config": str(cfg) if cfg else None,
                              "model": ("tiny test model (generated)" if is_tiny
                                        else str(model) if model else None),
                              "remote": remote[0] if remote else None})
        progress("settling 2 s, then the speaker channel's noise floor")
        time.sleep(1.0)
        session.measure_floor(1.0)
        idle = _idle_cpu(session, agents, opts.idle_s, progress)
        rows = []
        total = opts.turns * n
        number = 0
        for k in range(opts.turns):
            clip = clips[k % len(clips)]
            order = agents if k % 2 == 0 else list(reversed(agents))
            for agent in order:
                number += 1
                agent.drain()
                rows.append(_one_turn(session, agent, clip, number, total))
        barges = []
        if opts.barge_in:
            number = 0
            # speech over the answer: the clips whose speech begins soonest (least lead-in)
            quick = sorted(clips, key=lambda c: c.start_s)
            for k in range(opts.barge_in):
                for agent in agents:
                    number += 1
                    b = quick[k % max(1, len(quick) // 2)]
                    q = next(c for c in clips[k % len(clips):] + clips if c is not b)
                    barges.append(_barge_trial(session, agent, q, b, number,
                                               opts.barge_in * n))
        for agent in agents:
            agent.drain()
        recording = session.save_recording()
        for agent, d in zip(agents, described, strict=True):
            d["stderr_tail"] = agent.stderr_tail(20).split(" | ")
        result = {
            "mode": "agent", "configs": described,
            "server": session.rig.server_name or "pulseaudio (private)",
            "bus": {"rate": RATE, "channels": 2, "left": "microphone", "right": "speaker"},
            "threshold_dbfs": round(20 * np.log10(session.threshold / 32768.0), 1),
            "gap_s": opts.gap_s,
            "clips": [{"name": c.name, "speech_start_s": c.start_s, "speech_end_s": c.end_s,
                       "source": c.span_source, "duration_s": round(c.duration_s, 3)}
                      for c in clips[:opts.turns]],
            "turns": rows, "barge_in": barges, "idle_cpu_percent": idle,
            "recording": recording,
        }
        from edgevoice.latency.report import summarize_run

        result["summary"] = summarize_run(result)
        for agent in agents:
            agent.stop()
        return result
    finally:
        session.close()


def _idle_cpu(session: Session, agents: list[Agent], seconds: float,
              progress: Progress) -> dict:
    if seconds <= 0:
        return {}
    progress(f"idle CPU: {seconds:.0f} s of silence")
    c0 = {a.label: cpu_seconds(a.pid) for a in agents}
    t0 = time.monotonic()
    end = t0 + seconds
    while time.monotonic() < end:
        for a in agents:
            a.poll(0.02)
    dt = time.monotonic() - t0
    return {a.label: round(100 * (cpu_seconds(a.pid) - c0[a.label]) / dt, 2) for a in agents}
