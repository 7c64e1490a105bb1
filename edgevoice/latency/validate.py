"""`edgevoice bench latency --validate`: the method proved on a program whose delays are known.

The echo (echo.py) replays the microphone into the speaker with added delays; each clip's delay
is measured as the agent's replies are (the first audible sample on each channel, found on the
recording) and checked independently by cross-correlating the two channels. The echo's own I/O
floor is measured once, at the smallest delay, and every other delay must come out as delay +
floor within the tolerance: the floor is printed, never hidden.
"""

from __future__ import annotations

import queue
import time

import numpy as np

from edgevoice.errors import UserError
from edgevoice.latency import analysis as an
from edgevoice.latency.agent import Program
from edgevoice.latency.capture import BusClip, play
from edgevoice.latency.rig import RATE
from edgevoice.latency.run import Options, Progress, Session, _ms, _s, _stderr
from edgevoice.tray import python_main


def run_validation(opts: Options, progress: Progress = _stderr) -> dict:
    from edgevoice.latency import clips as clipmod

    delays = sorted(set(opts.delays_ms))
    if delays[0] < 0:
        raise UserError("--delays: delays are milliseconds >= 0")
    per_delay = max(1, opts.turns // len(delays))
    session = Session(opts, progress)
    try:
        entries = clipmod.find_clips(opts.clips)
        clips = clipmod.prepare(entries, session.workdir, per_delay, opts.seed, progress)
        session.start_rig(1)
        port = session.rig.ports[0]
        progress("starting the echo (parec -> queue -> pacat) in place of the agent")
        echo = Program(python_main("edgevoice.latency.echo"),
                       session.rig.env_for(port), session.workdir / "echo.stderr", stdin=True)
        session.stack.callback(echo.stop)
        _expect(echo, "ready", 15)
        time.sleep(0.5)
        session.measure_floor(1.0)
        rows = []
        for d in delays:
            assert echo.proc.stdin is not None
            echo.proc.stdin.write(f"delay {d}\n")
            echo.proc.stdin.flush()
            _expect(echo, f"delay {d}", 5)
            for k in range(per_delay):
                clip = clips[k % len(clips)]
                rows.append(_echo_turn(session, port.mic_sink, clip, d))
                r = rows[-1]
                progress(f"delay {d} ms, {clip.name}: measured "
                         + (f"{r['measured_ms']:.1f} ms (cross-correlation "
                            f"{r['xcorr_ms']:.1f} ms)" if r["measured_ms"] is not None
                            else f"nothing: {r.get('problem')}"))
        recording = session.save_recording()
    finally:
        session.close()
    base = [r["measured_ms"] - r["delay_ms"] for r in rows
            if r["delay_ms"] == delays[0] and r["measured_ms"] is not None]
    floor = float(np.median(base)) if base else None
    for r in rows:
        if floor is None or r["measured_ms"] is None:
            r.update(expected_ms=None, error_ms=None, xcorr_error_ms=None)
            continue
        r["expected_ms"] = round(r["delay_ms"] + floor, 1)
        r["error_ms"] = round(r["measured_ms"] - r["expected_ms"], 1)
        r["xcorr_error_ms"] = round(r["xcorr_ms"] - r["expected_ms"], 1)
    errors = [abs(r["error_ms"]) for r in rows if r.get("error_ms") is not None]
    ok = bool(rows) and len(errors) == len(rows) and max(errors) <= opts.tolerance_ms
    return {"mode": "validate", "floor_ms": None if floor is None else round(floor, 1),
            "tolerance_ms": opts.tolerance_ms, "delays_ms": delays, "rows": rows,
            "max_abs_error_ms": round(max(errors), 1) if errors else None, "ok": ok,
            "threshold_dbfs": round(20 * np.log10(session.threshold / 32768.0), 1),
            "recording": recording}


def _expect(prog: Program, word: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = prog.lines.get(timeout=max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            break
        if line is None:
            break
        if line.strip() == word:
            return
    raise UserError(f"the echo program did not say {word!r}: "
                    f"{prog.stderr_tail() or 'no message'}")


def _echo_turn(session: Session, sink: str, clip: BusClip, delay_ms: int) -> dict:
    rec = session.rec
    assert rec is not None
    lo = rec.now()
    play(session.rig.env, sink, clip.wav)
    played = rec.now()
    time.sleep(delay_ms / 1000 + 0.3)
    deadline = time.monotonic() + 10 + delay_ms / 1000
    while time.monotonic() < deadline and not session.right_quiet_for(max(session.opts.gap_s,
                                                                          0.8)):
        time.sleep(0.05)
    end = rec.now()
    data = rec.snapshot(0, end)
    left, right = data[:, 0], data[:, 1]
    at, peak = an.locate(clip.samples, left, lo - RATE // 10, played + RATE // 10)
    row = {"delay_ms": delay_ms, "clip": clip.name, "measured_ms": None, "xcorr_ms": None,
           "clip_match": round(peak, 3)}
    if at is None or peak < 0.3:  # L's onset is found on L itself: a rough place is enough
        row["problem"] = f"clip not found on the microphone channel (match {peak:.2f})"
        return row
    on_l = an.first_audible(left, session.threshold, at, at + len(clip.samples))
    on_r = an.first_audible(right, session.threshold, on_l or at, end) if on_l else None
    seg = len(clip.samples)
    max_lag = min(end - at - seg, int((delay_ms / 1000 + 2.0) * RATE))
    lag = an.xcorr_lag(left[at:at + seg], right[at:at + seg + max(0, max_lag)],
                       max(0, max_lag)) if max_lag > 0 else None
    row.update(measured_ms=_ms(on_r - on_l) if on_r is not None and on_l is not None else None,
               xcorr_ms=_ms(lag), clip_at_s=_s(at))
    if on_l is None or on_r is None:
        row["problem"] = "no onset on the " + ("microphone" if on_l is None else "speaker")
    return row
