"""Echo cancellation figures per room setting: ERLE after convergence, convergence time, CPU,
re-convergence after a delay change, and the near-end talker's WER with and without echo.

    python benchmarks/echo_eval.py            # simulated rooms (devtools/room.py), ~2 min,
                                              # with a closed-loop barge-in through the ear
                                              # (ear_barge_in_*: a quick proxy for --agent)
    python benchmarks/echo_eval.py --near held-out  # the same with talkers not tuned on
    python benchmarks/echo_eval.py --live     # also on a private PulseAudio server: the real
                                              # Speaker/Microphone, the speaker looped back
                                              # into the microphone by devtools.room.LiveRoom
    python benchmarks/echo_eval.py --agent 20 # also `edgevoice run` in that room: 20 answers
                                              # (self-interruptions, own words transcribed),
                                              # 5 barge-ins (stop time, WER), the same 5
                                              # with audio.barge_in_words: false, and 5
                                              # answers with audio.echo_cancel: off

The far end (what the agent says) and the near-end talkers are real recordings; this benchmark
uses other clips than tests/test_echo.py (which tuned nothing, but held those fixed). ERLE is
10 log10 of the echo's energy over what is left of it; convergence is the time from the first
far-end audio until ERLE over 250 ms windows first reaches 15 dB.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from edgevoice.audio.resample import resample
from edgevoice.devtools.pulse import read_wav
from edgevoice.devtools.room import RoomSetting, mix
from edgevoice.evaluation import corpus_wer, read_manifest, speech_dir

RATE = 16000
BARGE_S = 0.3  # the answer stops this long after a person starts speaking over it (issue 13)
FAR = ["pocketsphinx__librivox_sense_and_sensibility_0920.wav",
       "pocketsphinx__librivox_sense_and_sensibility_0930.wav",
       "deepspeech__arctic_a0024.wav"]
NEAR = ["pocketsphinx__goforward.wav", "speechbrain__spk2_snt2.wav",
        "pocketsphinx__librivox_sense_and_sensibility_0880.wav"]
# Talkers no threshold was tuned on (``--near held-out``): barge_in_words.py's were chosen on
# NEAR in the simulated rooms.
HELD_OUT_NEAR = ["pocketsphinx__cards_001.wav", "speechbrain__spk1_snt3.wav",
                 "speechbrain__spk1_snt4.wav", "speechbrain__example1.wav",
                 "speechbrain__example2.wav"]
ROOMS = [
    RoomSetting(30, -3, name="30 ms, -3 dB (laptop)"),
    RoomSetting(60, -9, name="60 ms, -9 dB (desk)"),
    RoomSetting(100, -12, noise_dbfs=-60, name="100 ms, -12 dB, noise -60 dBFS (car)"),
    RoomSetting(150, -20, reflections=((35, -4), (90, -9), (140, -14)),
                name="150 ms, -20 dB, reverberant"),
]


def clip(folder: Path, name: str, rate: int = RATE) -> np.ndarray:
    samples, r = read_wav(folder / name)
    return resample(samples, r, rate) if r != rate else samples


def db(x: np.ndarray) -> float:
    x = np.asarray(x, dtype=np.float64)
    return float(10 * np.log10(np.mean(x * x) + 1e-9))


def windowed_erle(echo_only: np.ndarray, cleaned: np.ndarray, win: int = RATE // 4
                  ) -> np.ndarray:
    n = min(len(echo_only), len(cleaned)) // win
    e = np.asarray(echo_only[: n * win], np.float64).reshape(n, win)
    c = np.asarray(cleaned[: n * win], np.float64).reshape(n, win)
    return 10 * np.log10(((e**2).mean(1) + 1e-9) / ((c**2).mean(1) + 1e-9))


def active_windows(echo_only: np.ndarray, win: int = RATE // 4) -> np.ndarray:
    n = len(echo_only) // win
    e = np.asarray(echo_only[: n * win], np.float64).reshape(n, win)
    return np.sqrt((e**2).mean(1)) > 100  # the speaker's echo is there


def convergence_s(erle: np.ndarray, active: np.ndarray, start_s: float, win_s: float = 0.25,
                  target_db: float = 15.0) -> float | None:
    for i, (value, on) in enumerate(zip(erle, active, strict=False)):
        if on and i * win_s >= start_s and value >= target_db:
            return i * win_s - start_s
    return None


def cancel(near: np.ndarray, far: np.ndarray, block: int = 480, guard: bool = True
           ) -> tuple[np.ndarray, float]:
    from edgevoice.ear.echo import EchoCanceller

    aec = EchoCanceller(RATE, guard=guard)
    out, cpu = [], 0.0
    for i in range(0, len(near) // block * block, block):
        t = time.thread_time()
        out.append(aec.process(near[i:i + block], far[i:i + block]))
        cpu += time.thread_time() - t
    cleaned = np.concatenate(out)
    return cleaned, cpu / (len(cleaned) / RATE)  # CPU seconds per second of audio


class Transcriber:
    """pocketsphinx's own batch decoding, one utterance per clip."""

    def __init__(self) -> None:
        from pocketsphinx import Decoder

        self.decoder = Decoder(samprate=RATE, loglevel="FATAL")

    def __call__(self, samples: np.ndarray) -> str:
        d = self.decoder
        d.start_utt()
        d.process_raw(np.asarray(samples, "<i2").tobytes(), full_utt=True)
        d.end_utt()
        hyp = d.hyp()
        return hyp.hypstr if hyp is not None else ""


STOP_S = 0.08  # from the ear's SpeechStart until the speaker is silent (clear() and the device)


def _ear_pass(aec, mic: np.ndarray, far: np.ndarray, recognizer=None, block: int = 480,
              words: bool = True) -> tuple[list[float], list[str]]:
    """``mic``/``far`` through ``aec`` and the ear (VAD, endpointer, and with a recognizer the
    streaming transcriber, hearing the barge-in words' view as ``edgevoice run`` does unless
    ``words`` is False) in 30 ms blocks: (when each SpeechStart was known, in ms of the input;
    the utterances' text)."""
    from edgevoice.audio.format import AudioChunk
    from edgevoice.config import VadConfig
    from edgevoice.ear.barge_in_words import BargeInWords
    from edgevoice.ear.endpoint import SpeechStart, UtteranceSegmenter
    from edgevoice.ear.transcriber import StreamingTranscriber, Utterance

    ear = (UtteranceSegmenter(VadConfig()) if recognizer is None
           else StreamingTranscriber(VadConfig(), recognizer))
    view = BargeInWords(RATE)
    if recognizer is not None and words:
        ear.words_audio = view.audio
    known, texts = [], []
    for i in range(0, len(mic) // block * block, block):
        out = aec.process(mic[i:i + block], far[i:i + block])
        view.add(i, mic[i:i + block], far[i:i + block], out)
        for event in ear.feed(AudioChunk.from_samples(out, RATE, i * 1000 / RATE)):
            if isinstance(event, SpeechStart):
                known.append((i + block) * 1000 / RATE)
            elif isinstance(event, Utterance):
                texts.append(event.text)
    texts += [e.text for e in ear.flush() if isinstance(e, Utterance)]
    return known, texts


def ear_alone_wer(far: np.ndarray, talkers: list[np.ndarray], refs: list[str]) -> float:
    """The same clips, placed as in ``ear_barge_in``, to the ear with no echo (any room)."""
    from edgevoice.asr.pocketsphinx_backend import PocketsphinxRecognizer
    from edgevoice.ear.echo import EchoCanceller

    recognizer = PocketsphinxRecognizer()
    at, pairs = int(1.5 * RATE), []
    for talker, ref in zip(talkers, refs, strict=True):
        near = np.zeros(len(far))
        near[at:at + len(talker)] = talker[: len(far) - at]
        _, texts = _ear_pass(EchoCanceller(RATE), mix(near), np.zeros(len(far), np.int16),
                             recognizer)
        pairs.append((ref, " ".join(texts)))
    recognizer.close()
    return round(corpus_wer(pairs), 3)


def ear_barge_in(room: RoomSetting, far: np.ndarray, talkers: list[np.ndarray],
                 refs: list[str]) -> dict:
    """A barge-in in closed loop, simulated: the canceller has heard one answer already; a
    talker starts 1.5 s into the next; the speaker goes silent ``STOP_S`` after the ear's
    SpeechStart; the ear transcribes the utterance as ``edgevoice run`` does. Gives the
    SpeechStart's delay after the talker's onset and the WER, as shipped (the barge-in words'
    view) and with AEC3's output alone (compare ``ear_alone_wer``; a few seconds per room; a
    quick proxy for ``--agent``)."""
    from edgevoice.asr.pocketsphinx_backend import PocketsphinxRecognizer
    from edgevoice.ear.echo import EchoCanceller

    recognizer = PocketsphinxRecognizer()
    echo_only = room.apply(far, RATE)

    def warmed() -> EchoCanceller:  # made anew each time: AEC3's state cannot be copied
        aec = EchoCanceller(RATE)
        _ear_pass(aec, mix(echo_only), far)  # the previous answer
        return aec

    delays, over, over_aec3 = [], [], []
    at = int(1.5 * RATE)
    for talker, ref in zip(talkers, refs, strict=True):
        near = np.zeros(len(far))
        near[at:at + len(talker)] = talker[: len(far) - at]
        onset_ms = (at / RATE + _onset_s(talker, RATE)) * 1000
        known, _ = _ear_pass(warmed(), mix(echo_only, near), far)
        known = [t for t in known if t > onset_ms - 300]
        heard_ms = known[0] if known else onset_ms + 1000
        delays.append(heard_ms - onset_ms)
        cut = far.copy()
        cut[int((heard_ms / 1000 + STOP_S) * RATE):] = 0
        heard = mix(room.apply(cut, RATE), near)
        _, texts = _ear_pass(warmed(), heard, cut, recognizer)
        over.append((ref, " ".join(texts)))
        _, texts = _ear_pass(warmed(), heard, cut, recognizer, words=False)
        over_aec3.append((ref, " ".join(texts)))
    recognizer.close()
    return {"ear_barge_in_heard_ms": [round(d) for d in delays],
            "ear_barge_in_wer": round(corpus_wer(over), 3),
            "ear_barge_in_wer_aec3_only": round(corpus_wer(over_aec3), 3),
            "ear_barge_in_transcripts": [t for _, t in over]}


def simulate(folder: Path, talker_names: list[str] = NEAR) -> list[dict]:
    refs = {c.path.name: c.reference for c in read_manifest(folder)}
    far = np.concatenate([clip(folder, f) for f in FAR])
    talkers = [clip(folder, n) for n in talker_names]
    asr = Transcriber()
    alone = ear_alone_wer(far, talkers, [refs[n] for n in talker_names])
    rows = []
    for room in ROOMS:
        echo_only = room.apply(far, RATE)
        noise_free = RoomSetting(room.delay_ms, room.gain_db, room.reflections).apply(far, RATE)
        cleaned, cpu = cancel(mix(echo_only), far, guard=False)  # AEC3 alone
        erle = windowed_erle(noise_free, cleaned)
        guarded, _ = cancel(mix(echo_only), far)
        active = active_windows(noise_free)
        t0 = float(np.argmax(np.abs(far) > 300)) / RATE
        conv = convergence_s(erle, active, t0)
        settled = erle[(np.arange(len(erle)) * 0.25 >= 2.0) & active]
        # the delay changes by +60 ms half way (the output device's latency changed)
        switch = len(far) // 2
        moved = RoomSetting(room.delay_ms + 60, room.gain_db, room.reflections)
        echo2 = np.concatenate([noise_free[:switch], moved.apply(far, RATE)[switch:]])
        cleaned2, _ = cancel(mix(echo2), far, guard=False)
        erle2 = windowed_erle(echo2, cleaned2)
        reconv = convergence_s(erle2, active_windows(echo2), switch / RATE)
        # near-end talkers over the echo, 1.5 s into it: WER alone, over the echo cancelled
        # when the answer stops BARGE_S after their onset (a barge-in), and over it throughout
        pairs_clean, pairs_barge, pairs_echo = [], [], []
        for name, talker in zip(talker_names, talkers, strict=True):
            at = int(1.5 * RATE)
            near = np.zeros(len(far))
            near[at:at + len(talker)] = talker[: len(far) - at]
            span = slice(at - RATE // 4, at + len(talker) + RATE // 4)
            out, _ = cancel(mix(echo_only, near), far)
            cut = far.copy()
            cut[at + int(BARGE_S * RATE):] = 0  # the speaker stops: the far end goes silent
            out_cut, _ = cancel(mix(room.apply(cut, RATE), near), cut)
            pairs_clean.append((refs[name], asr(talker)))
            pairs_barge.append((refs[name], asr(out_cut[span])))
            pairs_echo.append((refs[name], asr(out[span])))
        rows.append({
            "room": room.label(),
            "erle_db_median": round(float(np.median(settled)), 1),
            "erle_db_p10": round(float(np.percentile(settled, 10)), 1),
            "with_guard_db_median": round(float(np.median(np.minimum(
                windowed_erle(noise_free, guarded)[(np.arange(len(erle)) * 0.25 >= 2.0)
                                                   & active], 99.0))), 1),
            "convergence_s": None if conv is None else round(conv, 2),
            "reconvergence_s": None if reconv is None else round(reconv, 2),
            "cpu_percent_of_one_core": round(100 * cpu, 2),
            "wer_alone": round(corpus_wer(pairs_clean), 3),
            "wer_barge_in": round(corpus_wer(pairs_barge), 3),
            "wer_double_talk_throughout": round(corpus_wer(pairs_echo), 3),
            **ear_barge_in(room, far, talkers, [refs[n] for n in talker_names]),
            "ear_alone_wer": alone,
        })
    return rows


# -- live: a private PulseAudio server -----------------------------------------------------------

def live_child(setting: dict, far_path: str, seconds: float) -> dict:
    """Runs with the private server's environment: plays ``far_path`` through the real Speaker,
    the room loops it into the microphone, the ear reads it through EchoCancelledSource."""
    from edgevoice.audio.devices import Microphone, Speaker
    from edgevoice.audio.format import AudioChunk
    from edgevoice.devtools.room import LiveRoom, pactl_for
    from edgevoice.ear.echo import EchoCancelledSource, EchoCanceller

    room = RoomSetting(setting["delay_ms"], setting["gain_db"],
                       tuple(tuple(r) for r in setting["reflections"]), setting["noise_dbfs"])
    far, rate = read_wav(far_path)
    raw, cleaned, aec_only = [], [], []
    bare = EchoCanceller(RATE, guard=False)  # the same input without the double-talk guard
    with LiveRoom(pactl_for(dict(os.environ)), room, noise_wav=setting.get("noise_wav"),
                  env=dict(os.environ)) as live_room, Speaker("vspk", rate=rate) as spk, \
            Microphone("vmic.monitor", rate=RATE, block_ms=30) as mic:
        stage = EchoCancelledSource(mic, spk)
        t_end = time.monotonic() + 2.5  # null sinks start in 2 s blocks
        while time.monotonic() < t_end:
            stage.read(0.2)
        far = np.concatenate((far, far))  # the delay changes half way
        written = time.monotonic()
        import threading  # Speaker.write blocks while its 2 s buffer is full

        threading.Thread(target=spk.write, args=(AudioChunk.from_samples(far, rate),),
                         daemon=True).start()
        change = setting.get("change_ms")
        change_time = written + len(far) / rate / 2
        changed_at = None
        captured = []
        while time.monotonic() < written + len(far) / rate + 1.0:
            if change and changed_at is None and time.monotonic() >= change_time:
                changed_at = -1.0
                live_room.set_delay(room.delay_ms + change)
            chunk = stage.read(0.5)
            if chunk is None:
                continue
            raw.append(stage.last_near)
            cleaned.append(chunk.samples())
            captured.append(mic.chunk_time or 0.0)
            aec_only.append(bare.process(stage.last_near, stage.last_far))
        if changed_at is not None:  # where the change is on the recording
            changed_at = float(np.searchsorted(np.array(captured), change_time)) * 0.03
        timed = (mic.timed, spk.timed)
        cpu = stage.cpu_s
    raw_a, clean_a = np.concatenate(raw), np.concatenate(cleaned)
    erle = windowed_erle(raw_a, np.concatenate(aec_only))
    guarded = windowed_erle(raw_a, clean_a)
    active = active_windows(raw_a)
    t0 = float(np.argmax(active)) * 0.25 if active.any() else 0.0
    conv = convergence_s(erle, active, t0)
    t = np.arange(len(erle)) * 0.25
    end = changed_at if changed_at is not None else t[-1] + 1
    keep = (t >= t0 + 2.0) & (t < end) & active
    settled = erle[keep]
    row = {"timing_from_portaudio": bool(timed[0] and timed[1]),
           "erle_db_median": round(float(np.median(settled)), 1) if len(settled) else None,
           "erle_db_p10": round(float(np.percentile(settled, 10)), 1) if len(settled) else None,
           "with_guard_db_median": round(float(np.median(np.minimum(guarded[keep], 99.0))), 1)
           if keep.any() else None,
           "delay_found_ms": round(stage.delay.lag_s * 1000),
           "convergence_s": None if conv is None else round(conv, 2),
           "cpu_percent_of_one_core": round(100 * cpu / (len(clean_a) / RATE), 2)}
    if changed_at is not None:
        re = convergence_s(erle, active, changed_at)
        row["reconvergence_s"] = None if re is None else round(re, 2)
        after = erle[(t >= changed_at + 2.0) & active]
        row["erle_db_2s_after_change"] = round(float(np.median(after)), 1) if len(after) \
            else None
        row["active_s_after_change"] = float(active[t >= changed_at].sum()) * 0.25
    return row


# -- the agent in the room: self-interruptions, barge-in stop time, WER ---------------------------

ANSWERS = [
    "Here is the weather for today. It will be sunny in the morning and cloudy later on.",
    "Your meeting with the design team starts at three o'clock in the small room.",
    "I have set a timer for ten minutes. I will tell you when it is done.",
    "The nearest pharmacy is two streets away, on the left, next to the bakery.",
    "Traffic is light on the way home: about twenty five minutes by the ring road.",
]
LONG = ("Once upon a time there was a little village by the sea, where the fishermen went out "
        "every morning before the sun came up, and came back every evening with their boats "
        "full of silver fish, singing the songs their fathers had taught them long ago.")


class _Agent:
    """`edgevoice run --json` on the private server; its events collected by a thread."""

    def __init__(self, env: dict[str, str], config: Path) -> None:
        import queue
        import threading

        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edgevoice", "-v", "--config", str(config), "run", "--json"],
            env=env, stdout=subprocess.PIPE, stderr=open(config.parent / "agent.log", "w"),
            text=True)
        self.events: queue.Queue = queue.Queue()
        self.seen: list[dict] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        for line in self.proc.stdout:
            self.events.put(json.loads(line))

    def wait_for(self, pred, timeout: float = 60.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            event = self.events.get(timeout=max(0.01, deadline - time.monotonic()))
            self.seen.append(event)
            if pred(event):
                return event

    def idle(self, timeout: float = 60.0, quiet_s: float = 1.0) -> None:
        """Until the last state shown is ``listening`` and nothing happened for ``quiet_s``."""
        import queue

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.seen.append(self.events.get(timeout=quiet_s))
            except queue.Empty:
                states = [e["state"] for e in self.seen if e.get("event") == "state"]
                if states and states[-1] == "listening":
                    return
        raise TimeoutError("the agent never went back to listening")

    def drain(self) -> list[dict]:
        import queue

        while True:
            try:
                self.seen.append(self.events.get_nowait())
            except queue.Empty:
                return self.seen

    def stop(self) -> None:
        end_process(self.proc, 15)


def end_process(proc, timeout):
    from edgevoice.devtools.pulse import end_process as end

    end(proc, timeout)


def _say(sock: Path, text: str) -> dict:
    from edgevoice.control.client import ControlClient

    with ControlClient(sock, timeout=120) as client:
        return client.request("say", text=text, timeout=120)


def _onset_s(samples: np.ndarray, rate: int) -> float:
    hop = rate // 100
    frames = samples[: len(samples) // hop * hop].reshape(-1, hop).astype(np.float64)
    return float(np.argmax(np.sqrt((frames**2).mean(axis=1)) > 300)) / 100


def echo_stop_after_onset_s(mic: np.ndarray, talker: np.ndarray, rate: int = RATE) -> float:
    """From the microphone's recording alone: the talker's onset (the clip found by
    cross-correlation) to the end of the answer's echo (what is left once the talker, fitted by
    least squares, is taken out goes quiet for 300 ms). This is the speaker's stop plus the
    room's delay: an upper bound by that much, on one clock."""
    x, t = mic.astype(np.float64), talker.astype(np.float64)
    if len(x) < len(t):
        return float("nan")
    size = 1 << int(np.ceil(np.log2(len(x) + len(t))))
    corr = np.fft.irfft(np.fft.rfft(x, size) * np.conj(np.fft.rfft(t, size)), size)
    at = int(np.argmax(corr[: len(x) - len(t) + 1]))
    span = x[at:at + len(t)]
    gain = float(np.dot(span, t) / np.dot(t, t))
    rest = x.copy()
    rest[at:at + len(t)] -= gain * t
    onset = at / rate + _onset_s(talker, rate)
    hop = rate // 50
    frames = rest[: len(rest) // hop * hop].reshape(-1, hop)
    loud = np.sqrt((frames**2).mean(axis=1)) > 300
    quiet = np.convolve(~loud, np.ones(15), mode="valid") == 15
    start = int((onset - 0.1) * 50)
    gaps = np.flatnonzero(quiet[max(0, start):])
    return max(0.0, (max(0, start) + gaps[0]) / 50 - onset) if len(gaps) else float("nan")


def agent_in_room(folder: Path, answers: int, barge_ins: int, echo_cancel: str,
                  barge_in_words: bool = True) -> dict:
    """(a) self-interruptions and own words transcribed over ``answers`` answers; (b) stop time
    and WER of ``barge_ins`` real clips spoken over a long answer, and the same clips' WER when
    spoken to the idle agent; ``barge_in_words``: the config key of that name (the linear
    filter's view for the recognizer, or AEC3's output only)."""
    import threading

    from edgevoice.control.client import ControlClient, NoDaemon
    from edgevoice.devtools.pulse import PulseServer
    from edgevoice.devtools.room import LiveRoom

    refs = {c.path.name: c.reference for c in read_manifest(folder)}
    root = Path(tempfile.mkdtemp(prefix="evroom-"))
    sock = root / "c.sock"
    cfg = root / "agent.yaml"
    cfg.write_text(f"control:\n  socket: {sock}\naudio:\n  echo_cancel: {echo_cancel}\n"
                   f"  barge_in_words: {str(barge_in_words).lower()}\n")
    row: dict = {"echo_cancel": echo_cancel, "barge_in_words": barge_in_words}
    with PulseServer(root) as pulse, LiveRoom(pulse.pactl, RoomSetting(60, -9)):
        agent = _Agent(pulse.env, cfg)
        try:
            agent.wait_for(lambda e: e.get("state") == "listening")
            deadline = time.monotonic() + 30
            while True:
                try:
                    ControlClient(sock).close()
                    break
                except NoDaemon:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
            time.sleep(2.5)
            turns = [_say(sock, ANSWERS[i % len(ANSWERS)]) for i in range(answers)]
            time.sleep(2.0)
            events = agent.drain()
            row["answers"] = answers
            row["self_interruptions"] = sum(1 for t in turns if t.get("interrupted"))
            row["own_words_transcribed"] = sum(1 for e in events if e["event"] == "transcript")
            stops, pairs_over, pairs_alone, missed, texts = [], [], [], 0, []
            for k in range(barge_ins):
                name = NEAR[k % len(NEAR)]
                talker, r = read_wav(folder / name)
                # One clock: what the microphone heard (vmic's monitor) holds the talker and
                # the room's echo of the answer; the echo stops a room delay after the speaker.
                with pulse.recorder("vmic.monitor", rate=RATE) as rec:
                    th = threading.Thread(target=_say, args=(sock, LONG), daemon=True)
                    th.start()
                    agent.wait_for(lambda e: e.get("state") == "speaking")
                    time.sleep(1.5)
                    pulse.play(folder / name, sink="vmic")
                    try:
                        heard = agent.wait_for(lambda e: e["event"] == "transcript", timeout=30)
                    except Exception:  # noqa: BLE001 - queue.Empty: nothing was heard
                        heard = {"text": ""}
                        missed += 1
                    th.join(60)
                    time.sleep(0.5)
                    out = rec.stop()
                stops.append(echo_stop_after_onset_s(out, resample(talker, r, RATE)
                                                     if r != RATE else talker))
                texts.append({"clip": name, "over_answer": heard["text"]})
                pairs_over.append((refs[name], heard["text"]))
                agent.idle()
                pulse.play(folder / name, sink="vmic")  # the same clip, the agent idle
                try:
                    alone = agent.wait_for(lambda e: e["event"] == "transcript", timeout=30)
                except Exception:  # noqa: BLE001 - queue.Empty: nothing was heard
                    alone = {"text": ""}
                pairs_alone.append((refs[name], alone["text"]))
                texts[-1]["alone"] = alone["text"]
                agent.idle()
            if barge_ins:
                row["barge_ins"] = barge_ins
                row["barge_ins_not_transcribed"] = missed
                row["log"] = str(root / "agent.log")
                row["stop_after_onset_ms_median"] = round(1000 * float(np.nanmedian(stops)))
                row["stop_after_onset_ms_max"] = round(1000 * float(np.nanmax(stops)))
                row["wer_over_answer"] = round(corpus_wer(pairs_over), 3)
                row["wer_alone"] = round(corpus_wer(pairs_alone), 3)
                row["transcripts"] = texts
                fits = [float(m) for m in re.findall(r"linear filter fitted in (\d+) ms CPU",
                                                      (root / "agent.log").read_text())]
                if fits:
                    row["words_fits"] = len(fits)
                    row["words_fit_cpu_ms_max"] = max(fits)
        finally:
            agent.stop()
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--live", action="store_true", help="also on a private PulseAudio")
    parser.add_argument("--agent", type=int, metavar="N", default=0,
                        help="also `edgevoice run` in the room: N answers, barge-ins, and a "
                             "control run without echo cancellation")
    parser.add_argument("--skip-simulated", action="store_true")
    parser.add_argument("--near", choices=["tuning", "held-out"], default="tuning",
                        help="the simulated rooms' near-end talkers: the clips the barge-in "
                             "words' thresholds were tuned on, or others")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        spec = json.loads(args.child)
        print(json.dumps(live_child(spec["room"], spec["far"], spec["seconds"])))
        return 0
    folder = speech_dir()
    if folder is None:
        print("speech clips not found: set EDGEVOICE_SPEECH_DIR", file=sys.stderr)
        return 2
    near = NEAR if args.near == "tuning" else HELD_OUT_NEAR
    result = {} if args.skip_simulated else {"simulated": simulate(folder, near)}
    if args.live:
        result["live"] = live(folder)
    if args.agent:
        result["agent_in_room"] = [agent_in_room(folder, args.agent, 5, "auto"),
                                   agent_in_room(folder, 0, 5, "auto", barge_in_words=False),
                                   agent_in_room(folder, min(args.agent, 5), 0, "off")]
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for part, rows in result.items():
            print(f"== {part}")
            for row in rows:
                print("  " + ", ".join(f"{k}={v}" for k, v in row.items()))
    return 0


def live(folder: Path) -> list[dict]:
    from edgevoice.devtools.pulse import PulseServer, write_wav

    rows = []
    root = Path(tempfile.mkdtemp(prefix="evecho-"))
    far = np.concatenate([clip(folder, f) for f in FAR])
    far_path = root / "far.wav"
    write_wav(far_path, far, RATE)
    with PulseServer(root) as pulse:
        for room in ROOMS:
            spec = {"room": {"delay_ms": room.delay_ms, "gain_db": room.gain_db,
                             "reflections": room.reflections, "noise_dbfs": room.noise_dbfs,
                             "change_ms": 60, "noise_wav": str(folder / "koala__noise.wav")},
                    "far": str(far_path), "seconds": len(far) / RATE}
            out = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)],
                                 env=pulse.env, capture_output=True, text=True, timeout=120)
            if out.returncode != 0:
                rows.append({"room": room.label(), "error": out.stderr.strip()[-300:]})
                continue
            rows.append({"room": room.label(), **json.loads(out.stdout)})
    return rows


if __name__ == "__main__":
    sys.exit(main())
