"""Echo cancellation (edgevoice/ear/echo.py) on simulated rooms: real speech clips as the far end
(what the speaker played) and as the near-end talker, the echo made by ``devtools.room``."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("pywebrtc_audio", reason="pywebrtc-audio is not installed")

from echo_fakes import ArrayMic, ArraySpeaker  # noqa: E402

from edgevoice.audio.resample import resample  # noqa: E402
from edgevoice.devtools.pulse import read_wav  # noqa: E402
from edgevoice.devtools.room import RoomSetting, mix  # noqa: E402
from edgevoice.ear import echo  # noqa: E402

RATE = 16000
FAR_CLIP = "pocketsphinx__librivox_sense_and_sensibility_0870.wav"
NEAR_CLIP = "speechbrain__spk1_snt1.wav"


def _clip(folder, name: str, rate: int = RATE) -> np.ndarray:
    samples, r = read_wav(folder / name)
    return resample(samples, r, rate) if r != rate else samples


def _db(x: np.ndarray) -> float:
    x = np.asarray(x, dtype=np.float64)
    return float(10 * np.log10(np.mean(x * x) + 1e-9))


def _cancel(near: np.ndarray, far: np.ndarray, block: int = 480, **kw) -> np.ndarray:
    aec = echo.EchoCanceller(RATE, **kw)
    n = len(near) // block * block
    return np.concatenate([aec.process(near[i:i + block], far[i:i + block])
                           for i in range(0, n, block)])


def _erle(echo_only: np.ndarray, cleaned: np.ndarray, a: float, b: float) -> float:
    lo, hi = int(a * RATE), int(b * RATE)
    return _db(echo_only[lo:hi]) - _db(cleaned[lo:hi])


@pytest.mark.parametrize("room", [
    RoomSetting(60, -9),
    RoomSetting(150, -3, noise_dbfs=-65),
    RoomSetting(30, -20, reflections=((11, -6), (40, -12))),
], ids=lambda r: r.label())
def test_echo_is_reduced_after_convergence(speech_folder, room):
    far = _clip(speech_folder, FAR_CLIP)
    heard = room.apply(far, RATE)
    cleaned = _cancel(mix(heard), far)
    erle = _erle(room.apply(far, RATE) if room.noise_dbfs is None
                 else RoomSetting(room.delay_ms, room.gain_db, room.reflections).apply(far, RATE),
                 cleaned, 1.5, len(cleaned) / RATE)
    assert erle >= 20.0, f"{room.label()}: ERLE {erle:.1f} dB"


def test_speech_over_the_echo_survives_and_the_echo_alone_is_not_speech(speech_folder):
    far = _clip(speech_folder, FAR_CLIP)
    talker = _clip(speech_folder, NEAR_CLIP)
    room = RoomSetting(60, -9)
    at = 3 * RATE
    near_only = np.zeros(len(far))
    near_only[at:at + len(talker)] = talker[: len(far) - at]
    heard = mix(room.apply(far, RATE), near_only)
    cleaned = _cancel(heard, far)
    span = slice(at, min(len(cleaned), at + len(talker)))
    # the talker keeps (nearly) all of its level while the speaker plays over it
    assert abs(_db(cleaned[span]) - _db(near_only[span])) < 3.0

    from edgevoice.config import VadConfig
    from edgevoice.ear.gate import SpeechDetector

    def speech_share(x: np.ndarray) -> float:
        """The ear's own per-frame decision (webrtcvad and the noise gate)."""
        detector = SpeechDetector(VadConfig(neural="off"), RATE)
        frames = x[: len(x) // 480 * 480].astype("<i2").reshape(-1, 480)
        return float(np.mean([detector.is_speech(f.tobytes()) for f in frames]))

    echo_part = slice(RATE, at)  # after a second of convergence, before the talker
    assert speech_share(heard[echo_part]) > 0.5  # the echo is speech to a VAD, uncancelled
    assert speech_share(cleaned[echo_part]) < 0.1
    voiced = np.sqrt(np.mean(near_only[span].reshape(-1, 160) ** 2, axis=1)) > 300
    talk = cleaned[span][: len(voiced) * 160].reshape(-1, 160)[voiced].reshape(-1)
    assert speech_share(talk) > 0.6


def test_blocks_that_are_not_whole_frames_lag_one_frame_and_still_cancel(speech_folder):
    far = _clip(speech_folder, FAR_CLIP)
    room = RoomSetting(60, -9)
    heard = mix(room.apply(far, RATE))
    cleaned = _cancel(heard, far, block=400)  # 25 ms blocks: not whole 10 ms frames
    assert len(cleaned) == len(heard) // 400 * 400
    assert not cleaned[:160].any()  # the one-frame lag, once, at the start
    assert _erle(room.apply(far, RATE)[: len(cleaned) - 160], cleaned[160:], 1.5, 6.5) >= 20.0


def test_far_reference_lines_blocks_up_by_their_dac_time(speech_folder):
    dev_rate = 22050
    far_dev = _clip(speech_folder, FAR_CLIP, dev_rate)[: 3 * dev_rate]
    ref = echo.FarReference(RATE)
    t0 = 1000.0
    block = dev_rate // 50  # 20 ms blocks at the device rate
    for k in range(0, len(far_dev) - block, block):
        ref.add(t0 + k / dev_rate, far_dev[k:k + block], dev_rate)
    expected = resample(far_dev, dev_rate, RATE)
    got = ref.take(t0 + 1.0, RATE)  # one second, from 1 s into the playback
    want = expected[RATE:2 * RATE].astype(np.float64)
    lags = range(-80, 81)
    score = [np.dot(np.roll(got.astype(np.float64), -lag), want) for lag in lags]
    lag = list(lags)[int(np.argmax(score))]
    assert abs(lag) <= 16, f"far reference off by {lag / 16:.1f} ms"
    # before anything was played, and after it ended: silence
    assert not ref.take(t0 - 0.5, 800).any()
    assert not ref.take(t0 + 3.5, 800).any()
    # playback that restarts later (clear() aborts and restarts the stream) lands at its time
    ref.add(t0 + 5.0, far_dev[:block], dev_rate)
    assert ref.reanchors == 1
    assert not ref.take(t0 + 4.0, 800).any()


def test_steady_takes_ride_out_clock_jitter_follow_drift_and_jump_with_lost_blocks():
    # The microphone's clock is a fitted line that wanders by a sample or so per block: taken
    # as it is, the far end would slip back and forth between blocks (a linear filter cannot
    # learn through that). Steady takes move on by the block and follow only real changes.
    ref = echo.FarReference(RATE)
    ref.add(1000.0, np.ones(480, np.int16), RATE)  # anything played: the timeline exists
    rng = np.random.default_rng(3)
    t, n, starts = 1000.0, 480, []
    for _ in range(100):  # 3 s of blocks, the clock jittering by +-0.5 ms
        starts.append(ref.steady(t + rng.uniform(-0.0005, 0.0005), n))
        t += n / RATE
    assert np.all(np.diff(starts) == n)  # continuous: no slips at all
    for _ in range(300):  # then a clock 500 ppm fast (beyond the dead band after ~6 s)
        starts.append(ref.steady(t, n))
        t += n / RATE * (1 + 500e-6)
    steps = np.diff(starts[100:]) - n
    assert set(steps.tolist()) <= {0, 1}  # one sample at a time, never back
    assert abs(ref._index(t) - (starts[-1] + n)) <= echo.STEADY_MS * RATE / 1000 + 2
    lost = ref.steady(t + 0.03, n)  # a block was lost (the clock jumped by 30 ms)
    assert lost == ref._index(t + 0.03)


def test_the_whole_path_at_other_rates_and_block_sizes(speech_folder):
    """The speaker at 48 kHz in 20 ms blocks, the microphone at 16 kHz in 30 ms blocks,
    aligned only by their timestamps (the mic started 0.37 s before the speaker)."""
    dev_rate = 48000
    far_dev = _clip(speech_folder, FAR_CLIP, dev_rate)
    far16 = resample(far_dev, dev_rate, RATE)
    room = RoomSetting(45, -6)
    t_play, t_mic = 50.0, 49.63
    lead = int(round((t_play - t_mic) * RATE))
    echo_only = np.zeros(len(far16) + lead)
    echo_only[lead:] = room.apply(far16, RATE)
    heard = mix(echo_only)
    ref = echo.FarReference(RATE)
    aec = echo.EchoCanceller(RATE)
    fb, nb = dev_rate // 50, 480
    k = 0
    out = []
    for j in range(0, len(heard) - nb, nb):
        t = t_mic + j / RATE
        while k < len(far_dev) - fb and t_play + k / dev_rate < t + 0.1:  # played ahead
            ref.add(t_play + k / dev_rate, far_dev[k:k + fb], dev_rate)
            k += fb
        out.append(aec.process(heard[j:j + nb], ref.take(t, nb)))
    cleaned = np.concatenate(out)
    erle = _erle(echo_only[: len(cleaned)], cleaned, 2.0, len(cleaned) / RATE - 0.5)
    assert erle >= 20.0, f"ERLE {erle:.1f} dB"


def test_it_reconverges_within_two_seconds_when_the_delay_changes(speech_folder):
    more = "pocketsphinx__librivox_sense_and_sensibility_0880.wav"
    far = np.concatenate([_clip(speech_folder, FAR_CLIP), _clip(speech_folder, more)])
    switch = 5.0
    a, b = RoomSetting(60, -9), RoomSetting(140, -9)
    cut = int(switch * RATE)
    echo_only = np.concatenate([a.apply(far, RATE)[:cut], b.apply(far, RATE)[cut:]])
    cleaned = _cancel(mix(echo_only), far)
    after = _erle(echo_only, cleaned, switch + 2.0, len(cleaned) / RATE)
    assert after >= 18.0, f"ERLE {after:.1f} dB from 2 s after the delay changed"


def _ear_share(x: np.ndarray, mask: np.ndarray | None = None) -> float:
    """The ear's speech share (webrtcvad + noise gate) over 30 ms frames (those ``mask``, per
    10 ms frame, keeps whole)."""
    from edgevoice.config import VadConfig
    from edgevoice.ear.gate import SpeechDetector

    detector = SpeechDetector(VadConfig(neural="off"), RATE)
    frames = x[: len(x) // 480 * 480].astype("<i2").reshape(-1, 480)
    keep = np.ones(len(frames), bool) if mask is None else mask[: len(frames) * 3].reshape(
        -1, 3).all(axis=1)
    votes = [detector.is_speech(f.tobytes()) for f, k in zip(frames, keep, strict=True) if k]
    return float(np.mean(votes))


@pytest.mark.parametrize("room", [RoomSetting(60, -9), RoomSetting(30, -3)],
                         ids=lambda r: r.label())
def test_the_double_talk_guard_keeps_echo_out_of_the_ear_and_the_talker_in(speech_folder,
                                                                          room):
    far = _clip(speech_folder, FAR_CLIP)
    talker = _clip(speech_folder, NEAR_CLIP)
    echo_only = room.apply(far, RATE)
    near = np.zeros(len(far))
    near[3 * RATE:3 * RATE + len(talker)] = talker[: len(far) - 3 * RATE]
    heard = mix(echo_only, near)
    frames = near[: len(near) // 160 * 160].reshape(-1, 160)
    voiced = np.sqrt(np.mean(frames**2, axis=1)) > 300
    results = {}
    for guard in (False, True):
        cleaned = _cancel(heard, far, guard=guard)
        results[guard] = (_db(cleaned[RATE // 2:3 * RATE]),
                          _ear_share(cleaned[RATE // 2:3 * RATE]), _ear_share(cleaned, voiced))
    off, on = results[False], results[True]
    assert on[0] <= off[0] + 0.5, f"residual echo {off[0]:.1f} -> {on[0]:.1f} dB"
    assert on[1] <= off[1] and on[1] < 0.05, f"echo heard as speech {off[1]} -> {on[1]}"
    assert on[2] >= off[2] - 0.1 and on[2] > 0.6, f"talker heard as speech {off[2]} -> {on[2]}"


def test_plan_says_when_and_why():
    assert echo.plan("off", True, True) == (False, "off (audio.echo_cancel: off)")
    on, why = echo.plan("auto", False, True)
    assert not on and "does not both play" in why
    on, why = echo.plan("auto", True, True)
    assert on and "AEC3" in why


def test_echo_later_than_the_timing_says_is_found_and_lined_up(speech_folder):
    """Half a second more than PortAudio's timing knows (a sound server's or Bluetooth
    buffers): AEC3 alone does not reach that far; the delay tracker finds it and the far end is
    taken that much earlier."""
    names = [FAR_CLIP, "pocketsphinx__librivox_sense_and_sensibility_0880.wav",
             "pocketsphinx__librivox_sense_and_sensibility_0920.wav"]
    far = np.concatenate([_clip(speech_folder, n) for n in names])
    hidden = 0.55
    room = RoomSetting(40 + hidden * 1000, -9)
    echo_only = room.apply(far, RATE)
    heard = mix(echo_only)
    ref = echo.FarReference(RATE)
    t0 = 10.0
    block = RATE // 50
    tracker = echo.DelayTracker(RATE)
    aec = echo.EchoCanceller(RATE)
    out = []
    k = 0
    for j in range(0, len(heard) - 480, 480):
        t = t0 + j / RATE
        while k < len(far) - block and t0 + k / RATE < t + 0.1:  # played a little ahead
            ref.add(t0 + k / RATE, far[k:k + block], RATE)
            k += block
        near = heard[j:j + 480]
        if tracker.add(near, ref.take(t, 480)):
            aec.reset()  # what it learnt at the wrong delay is of no use
        shift = tracker.lag_s - echo.LEAD_S if tracker.lag_s > echo.SHIFT_ABOVE_S else 0.0
        out.append(aec.process(near, ref.take(t - shift, 480)))
    cleaned = np.concatenate(out)
    assert abs(tracker.lag_s - (hidden + 0.04)) < 0.01, tracker.lag_s
    assert _erle(echo_only, cleaned, 8.0, len(cleaned) / RATE - 0.5) >= 20.0


def test_without_the_library_auto_falls_back_to_half_duplex_and_says_so(monkeypatch, caplog):
    import dataclasses
    import logging
    import sys

    from edgevoice.config import Config
    from edgevoice.doctor import check_echo_cancel
    from edgevoice.errors import UserError

    monkeypatch.setitem(sys.modules, "pywebrtc_audio", None)  # import fails, as where not built
    assert "pip install pywebrtc-audio" in echo.available()
    mic, speaker = object(), object()
    with caplog.at_level(logging.WARNING, logger="edgevoice.ear.echo"):
        source = echo.cancel_echo("auto", mic, speaker, records_from_device=True)
    assert isinstance(source, echo.HalfDuplexSource) and source.half_duplex
    assert "half duplex" in caplog.text and "pip install pywebrtc-audio" in caplog.text
    with pytest.raises(UserError, match="pip install pywebrtc-audio"):
        echo.cancel_echo("on", mic, speaker, records_from_device=True)
    assert echo.cancel_echo("off", mic, speaker, records_from_device=True) is mic
    assert echo.cancel_echo("auto", mic, None, records_from_device=True) is mic  # a file out
    cfg = Config()
    (check,) = check_echo_cancel(cfg)
    assert check.status == "warn" and "half duplex" in check.detail
    on = dataclasses.replace(cfg, audio=dataclasses.replace(cfg.audio, echo_cancel="on"))
    assert check_echo_cancel(on)[0].status == "fail"


class _UntimedMic:
    """A capture backend that gives no ADC times (PortAudio leaves them 0 on some host APIs;
    none does here): the reading interface of devices.Microphone."""

    rate, timed, chunk_time = RATE, False, None

    def read(self, timeout=None):
        from edgevoice.audio.format import AudioChunk

        return AudioChunk.from_samples(np.full(480, 1000, np.int16), RATE)


class _TimedSpeaker:
    timed = True

    def played_after(self, cursor):
        return cursor, []


def test_a_backend_without_stream_timing_turns_it_half_duplex(caplog):
    import logging

    stage = echo.EchoCancelledSource(_UntimedMic(), _TimedSpeaker())
    with caplog.at_level(logging.WARNING, logger="edgevoice.ear.echo"):
        chunk = stage.read(0.1)
    assert stage.half_duplex
    assert "no input stream timing" in caplog.text and "half duplex" in caplog.text
    assert (chunk.samples() == 1000).all()  # passed on as it came


class _ClockedMic:
    """A timed capture stream on a made-up clock: 30 ms chunks of a steady tone."""

    rate, timed = RATE, True

    def __init__(self) -> None:
        self.chunk_time = 100.0

    def read(self, timeout=None):
        from edgevoice.audio.format import AudioChunk

        self.chunk_time += 0.03
        t = np.arange(480) / RATE
        return AudioChunk.from_samples((np.sin(2 * np.pi * 300 * t) * 3000).astype(np.int16),
                                       RATE)


class _ScriptedSpeaker:
    """Plays silence (with the +-1 a resampler leaves) except where ``loud`` says, 50 ms ahead
    of the microphone as a real output's latency puts it."""

    timed = True

    def __init__(self, mic: _ClockedMic) -> None:
        self.mic, self.loud = mic, False

    def played_after(self, cursor):
        from edgevoice.audio.devices import PlayedBlock

        level = 4000 if self.loud else 1
        samples = (np.random.default_rng(cursor).standard_normal(480) * level).astype(np.int16)
        return cursor + 1, [PlayedBlock(self.mic.chunk_time + 0.05, samples, RATE)]


def test_a_quiet_speaker_costs_no_cancelling_and_the_next_answer_is_cancelled_again():
    # Idle CPU (issue 11/12): with nothing audible played for IDLE_AFTER_S the microphone passes
    # as it came; the first audible block brings the canceller back, and it stays on through the
    # echo's tail after the speaker goes quiet again.
    mic = _ClockedMic()
    speaker = _ScriptedSpeaker(mic)
    stage = echo.EchoCancelledSource(mic, speaker)
    raw = mic.read().samples()
    mic.chunk_time -= 0.03
    for _ in range(20):
        chunk = stage.read(0.1)
    assert stage.bypassed == 20 and (chunk.samples() == raw).all()
    speaker.loud = True
    for _ in range(10):
        stage.read(0.1)
    assert stage.bypassed == 20  # playing: every chunk goes through AEC3
    speaker.loud = False
    tail = int(echo.IDLE_AFTER_S / 0.03)
    for _ in range(tail - 3):
        stage.read(0.1)
    assert stage.bypassed == 20  # the echo's tail is still cancelled
    for _ in range(10):
        stage.read(0.1)
    assert stage.bypassed > 20  # then it rests again


def _through_source(near: np.ndarray, far: np.ndarray) -> tuple[np.ndarray, echo.EchoPath]:
    mic = ArrayMic(near)
    stage = echo.EchoCancelledSource(mic, ArraySpeaker(mic, far))
    out = np.concatenate([stage.read(0.1).samples() for _ in range(len(near) // 480)])
    return out, stage.path


def test_with_no_echo_path_a_person_talking_over_the_answer_is_heard(speech_folder):
    # A headset (or a muted speaker): nothing of the answer reaches the microphone. AEC3 alone
    # then takes the person talking over the answer for echo and suppresses them; the ear
    # finds that no echo comes back (while they listen to the answer's start) and passes the
    # microphone as it came.
    far = _clip(speech_folder, FAR_CLIP)
    talker = _clip(speech_folder, NEAR_CLIP)
    at = int(1.5 * RATE)
    near = np.zeros(len(far), dtype=np.int16)
    n = min(len(talker), len(far) - at)
    near[at:at + n] = talker[:n]
    span = slice(at, at + n // 480 * 480)
    alone = _cancel(near, far, guard=False)
    assert _db(alone[span]) - _db(near[span]) < -10  # what AEC3 does to them without this
    out, path = _through_source(near, far)
    assert path.absent
    assert abs(_db(out[span]) - _db(near[span])) < 0.5  # heard as they spoke


@pytest.mark.parametrize("room", [
    RoomSetting(30, -3),
    RoomSetting(60, -9),
    RoomSetting(150, -20, noise_dbfs=-70),
    RoomSetting(100, -30, reflections=((40, -6), (90, -12))),
], ids=lambda r: r.label())
@pytest.mark.parametrize("talking", [False, True], ids=["listening", "talking"])
def test_a_room_with_echo_is_never_taken_for_one_without(speech_folder, room, talking):
    far = _clip(speech_folder, FAR_CLIP)
    heard = [room.apply(far, RATE)]
    if talking:
        talker = _clip(speech_folder, NEAR_CLIP)
        heard.append(np.concatenate([np.zeros(RATE), talker]).astype(np.float64))
    near = mix(*heard)[: len(far)]
    _, path = _through_source(near, far)
    assert not path.absent and path.decisions == 0
