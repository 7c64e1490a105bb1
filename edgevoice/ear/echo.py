"""Echo cancellation: the first stage after the microphone, so the ear hears the room, not us.

With open speakers the microphone picks up the agent's own voice; left in, it starts turns and
barge-ins of its own (a loop that never ends). WebRTC's AEC3 (``pywebrtc-audio``) removes it,
given exactly what the speaker played. Four parts, each with one job:

- ``FarReference``: the speaker's played blocks (``devices.Speaker.played_after``, each with the
  PortAudio DAC time of its first sample) re-timed onto the microphone's timeline and resampled
  to the processing rate, so far and near line up by PortAudio's own clock. What is left (the
  room's acoustic delay, clock drift, a latency change) AEC3's delay estimator tracks.
- ``DelayTracker``: finds echo that comes later than that timing says (buffers PortAudio does
  not see), beyond AEC3's reach, and has the far end taken that much earlier.
- ``EchoCanceller``: AEC3 over aligned near/far arrays of any length (10 ms framing kept across
  calls), plus a double-talk guard: while the speaker plays, a frame from which cancellation
  removed nearly everything (``GATE_DB``) is echo, and what is left of it is pushed far below
  the VAD's floor (a loud speaker's residual can reach it); a person talking over the answer
  keeps most of the frame's energy and passes.
- ``EchoPath``: tells whether the speaker reaches the microphone at all (a headset, a muted
  speaker). Where it does not, AEC3 has nothing to remove, yet while the far end plays it
  suppresses a person talking by 20-60 dB; the microphone then passes as it came.
- ``EchoCancelledSource``: wraps a ``devices.Microphone`` with the same reading interface.

When cancellation cannot run (no library, a backend without stream timing) the source says so in
``half_duplex`` and the turn manager then stops listening for barge-in while it talks.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import Any, Literal, Optional, Protocol

import numpy as np

from edgevoice.audio.format import AudioChunk
from edgevoice.audio.resample import StreamResampler
from edgevoice.ear.barge_in_words import BargeInWords

log = logging.getLogger(__name__)

Mode = Literal["auto", "on", "off"]
INSTALL_HINT = "pip install pywebrtc-audio"
HALF_DUPLEX = ("the agent runs half duplex: speech that starts while it speaks is ignored (say "
               "\"stop\" after it, use push-to-talk, or a headset with audio.echo_cancel: off)")

FRAME_MS = 10
# Double-talk guard: while the speaker plays, a frame that kept less than GATE_DB of its energy
# after cancellation is echo; it is attenuated by SUPPRESS_DB more. AEC3 leaves echo-only frames
# 30-60 dB down, near-end speech over echo mostly within a few dB (tests/test_echo.py checks that
# the ear's VAD still hears the talker as well as without the guard).
GATE_DB = -20.0
SUPPRESS_DB = -30.0
FAR_WINDOW_MS = 400  # echo arrives after it is played: the far level is looked at over this
FAR_SILENT_RMS = 30.0  # about -61 dBFS: below this the speaker is silent
# Until AEC3 has seen this much far-end audio (its first convergence) a frame counts as near-end
# speech only when it is louder than the far end itself (Geigel's test at 0 dB coupling).
WARMUP_MS = 500
# AEC3's own delay estimator follows echo up to ~0.5 s behind the far end (measured on simulated
# rooms: 40-60 dB ERLE at 10-500 ms, none at 700 ms). Beyond SHIFT_ABOVE_S the far end is taken
# earlier, so that LEAD_S is left for AEC3 to find.
SHIFT_ABOVE_S = 0.3
LEAD_S = 0.05
STEADY_MS = 3.0  # FarReference.steady: the far end follows the mic's clock beyond this
FOLLOW_MS = 15.0  # ... and jumps to it beyond this (the clock's own CLOCK_JUMP_S)
REANCHOR_MS = 30.0  # a played block this far from where the previous one ended starts anew
IDLE_AFTER_S = 1.5
"""This long after the last audible block the speaker played (beyond any room's echo tail), the
microphone passes unprocessed and the speaker's silence is not resampled: listening to a quiet
room costs no AEC3. The canceller keeps what it learnt and takes up again with the next answer's
first audible block (its DAC time is ahead of the microphone's, so nothing of it is missed)."""


def available() -> Optional[str]:
    """None when AEC3 can be loaded; else why not, with the command that installs it."""
    try:
        import pywebrtc_audio  # noqa: F401
    except ImportError:
        return f"pywebrtc-audio is not installed ({INSTALL_HINT})"
    except OSError as exc:  # a wheel for another libc/CPU
        return f"pywebrtc-audio cannot load here ({exc})"
    return None


class FarReference:
    """What the speaker played, on the monotonic clock at ``rate``: ``take(t, n)`` gives the
    ``n`` samples that left the DAC from time ``t`` (zeros where nothing was played)."""

    def __init__(self, rate: int = 16000, keep_s: float = 4.0) -> None:
        self.rate = rate
        self._ring = np.zeros(int(rate * keep_s), dtype=np.int16)
        self._epoch: Optional[float] = None  # monotonic time of index 0
        self._hi = 0  # one past the highest index written
        self._next: Optional[int] = None  # where the next contiguous block goes
        self._resampler: Optional[StreamResampler] = None
        self._in_t = 0.0  # DAC time of the first block since the last anchor
        self._in_n = 0  # device-rate samples added since then
        self.reanchors = 0
        self._cursor: Optional[int] = None  # where the next steady take starts

    def _index(self, t: float) -> int:
        assert self._epoch is not None
        return int(round((t - self._epoch) * self.rate))

    def add(self, t: float, samples: np.ndarray, rate: int) -> None:
        """A played block whose first sample reached the DAC at ``t`` (``time.monotonic()``)."""
        if self._epoch is None:
            self._epoch = t - 1.0
        at = self._index(t)
        rs = self._resampler
        if rs is None or rs.from_rate != rate:
            rs = self._resampler = StreamResampler(rate, self.rate)
            self._next = None
        # Blocks that follow on from the last one (by their input samples) are placed right
        # after it: the resampler's output is continuous, and DAC-time jitter never tears it.
        expected = None if self._next is None else self._in_t + self._in_n / rate
        if expected is None or abs(t - expected) * 1000 > REANCHOR_MS:
            if self._next is not None:
                self.reanchors += 1
                if at < self._hi:  # played again over audio that never left (clear()): drop it
                    self._zero(at, self._hi)
                    self._hi = at
                rs = self._resampler = StreamResampler(rate, self.rate)
            self._next, self._in_t, self._in_n = at, t, 0
        out = rs.process(np.ascontiguousarray(samples, dtype=np.int16))
        self._in_n += len(samples)
        self._write(self._next, out)
        self._next += len(out)

    def _write(self, at: int, data: np.ndarray) -> None:
        size = len(self._ring)
        if at > self._hi:  # a gap nothing was played in: silence
            self._zero(self._hi, at)
        if len(data) > size:
            at, data = at + len(data) - size, data[-size:]
        idx = np.arange(at, at + len(data)) % size
        self._ring[idx] = data
        self._hi = max(self._hi, at + len(data))

    def _zero(self, lo: int, hi: int) -> None:
        size = len(self._ring)
        lo = max(lo, hi - size)
        if hi > lo:
            self._ring[np.arange(lo, hi) % size] = 0

    def steady(self, t: float, n: int) -> Optional[int]:
        """Where the ``n`` samples from time ``t`` start, kept continuous from one call to the
        next: the microphone's capture clock is a line fitted to ADC times that jitter by ~7 ms,
        and it wanders by a sample or so per block. Taken as it is, the far end slips back and
        forth by samples between blocks, which a linear filter (``barge_in_words``) cannot
        learn through. So the position moves on by ``n`` per call; it follows the clock by one
        sample per call once they differ by more than ``STEADY_MS`` (drift between two clocks),
        and jumps to it beyond ``FOLLOW_MS`` (blocks were lost). None before anything was
        played."""
        if self._epoch is None:
            return None
        lo = self._index(t)
        if self._cursor is None or abs(lo - self._cursor) > FOLLOW_MS * self.rate / 1000:
            self._cursor = lo
        elif abs(lo - self._cursor) > STEADY_MS * self.rate / 1000:
            self._cursor += 1 if lo > self._cursor else -1
        at, self._cursor = self._cursor, self._cursor + n
        return at

    def take(self, t: float, n: int) -> np.ndarray:
        if self._epoch is None:
            return np.zeros(n, dtype=np.int16)
        return self.take_index(self._index(t), n)

    def take_index(self, lo: int, n: int) -> np.ndarray:
        """``n`` samples from index ``lo`` (``steady``), zeros where nothing was played."""
        out = np.zeros(n, dtype=np.int16)
        size = len(self._ring)
        a, b = max(lo, self._hi - size, 0), min(lo + n, self._hi)
        if b > a:
            out[a - lo:b - lo] = self._ring[np.arange(a, b) % size]
        return out


class DelayTracker:
    """Finds how much later than PortAudio's timing says the echo really arrives.

    The DAC and ADC times miss what lies beyond PortAudio: the sound server's own buffers, a
    Bluetooth link, a USB DAC (measured here through ALSA's pulse plugin: ~0.45 s), more than
    AEC3's own delay estimator covers (a few hundred ms). Every ``every_s`` of far-end audio the
    last ``span_s`` of microphone and lined-up far end are cross-correlated (at a quarter of the
    rate); a clear peak seen twice in a row at the same lag becomes the new ``lag_s``, by which
    the far end is then taken earlier.
    """

    DECIMATE = 4
    MIN_CORR = 0.3  # normalized cross-correlation of a clear echo path (a room: 0.5-0.9)
    AGREE_S = 0.008

    def __init__(self, rate: int = 16000, max_lag_s: float = 1.0, span_s: float = 3.0,
                 every_s: float = 1.0) -> None:
        self.rate = rate
        self.max_lag = int(max_lag_s * rate) // self.DECIMATE
        self.span = int(span_s * rate)
        self.every = int(every_s * rate)
        self.lag_s = 0.0
        self.estimates = 0
        self._chunks: deque[tuple[np.ndarray, np.ndarray]] = deque()
        self._held = 0  # samples in _chunks
        self._since = 0
        self._candidate: Optional[float] = None
        self.echo_seen = False  # the latest estimate found the far end in the microphone

    def add(self, near: np.ndarray, far: np.ndarray) -> bool:
        """The microphone's chunk and the far end taken for it; True when ``lag_s`` changed.
        ``echo_seen`` says whether this call's estimate (if one ran) found the far end."""
        self.echo_seen = False
        keep = self.span + self.max_lag * self.DECIMATE
        self._chunks.append((near, far))
        self._held += len(near)
        while self._held - len(self._chunks[0][0]) >= keep:
            self._held -= len(self._chunks.popleft()[0])
        if np.abs(far).max(initial=0) > FAR_SILENT_RMS:
            self._since += len(near)
        if self._since < self.every or self._held < keep:
            return False
        self._since = 0
        found = self.estimate()
        self.echo_seen = found is not None
        if found is None:
            return False
        lag, _corr = found
        if self._candidate is None or abs(lag - self._candidate) > self.AGREE_S:
            self._candidate = lag
            return False
        if abs(lag - self.lag_s) <= self.AGREE_S:
            return False
        self.lag_s = lag
        self.estimates += 1
        return True

    def estimate(self) -> Optional[tuple[float, float]]:
        """(extra lag of the echo behind the far end in s, its correlation), or None."""
        d = self.DECIMATE
        near_all = np.concatenate([c[0] for c in self._chunks]).astype(np.float64)
        far_all = np.concatenate([c[1] for c in self._chunks]).astype(np.float64)
        n = len(near_all) // d * d
        near = near_all[-n:].reshape(-1, d).mean(axis=1)
        far = far_all[-n:].reshape(-1, d).mean(axis=1)
        seg = near[self.max_lag:]  # the echo of far[i] is near[i + lag]
        m = len(seg)
        size = 1 << int(np.ceil(np.log2(len(far) + m)))
        # dots[s] = sum_j seg[j] * far[s + j], s = max_lag - lag
        dots = np.fft.irfft(np.fft.rfft(far, size) * np.conj(np.fft.rfft(seg, size)),
                            size)[: self.max_lag + 1]
        cum = np.concatenate(([0.0], np.cumsum(far * far)))
        starts = np.arange(self.max_lag + 1)
        far_energy = cum[starts + m] - cum[starts]
        corr = dots / np.sqrt(far_energy * float(np.dot(seg, seg)) + 1e-9)
        s = int(np.argmax(corr))
        if corr[s] < self.MIN_CORR:
            return None
        return (self.max_lag - s) * d / self.rate, float(corr[s])


def _energy(frames: np.ndarray) -> np.ndarray:
    x = frames.astype(np.float64)
    return (x * x).mean(axis=1)


class EchoCanceller:
    """AEC3 on aligned near (microphone) and far (speaker) int16 signals at ``rate``, with the
    double-talk guard. ``process`` returns as many samples as it is given; when blocks are not
    whole 10 ms frames the output lags by one frame, once, from the start."""

    def __init__(self, rate: int = 16000, delay_hint_ms: int = 0, guard: bool = True) -> None:
        from pywebrtc_audio import EchoCanceller as Aec3

        self.rate = rate
        self.frame = rate * FRAME_MS // 1000
        self._aec = Aec3(sample_rate=rate, num_channels=1, stream_delay_ms=delay_hint_ms)
        self.guard = guard
        self._near = np.zeros(0, dtype=np.int16)
        self._far = np.zeros(0, dtype=np.int16)
        self._out = np.zeros(0, dtype=np.int16)
        window = max(1, FAR_WINDOW_MS // FRAME_MS)
        self._far_levels: deque[float] = deque([0.0] * window, maxlen=window)
        self.far_ms = 0.0  # far-end audio seen so far (the guard's warm-up)
        self.gated_frames = 0  # frames the guard judged echo
        self.frames = 0
        self.last_gated = np.zeros(0, dtype=bool)  # per frame of the latest process() call

    def reset(self) -> None:
        """Start over (the delay jumped beyond what the estimator follows)."""
        self._aec.reset()
        self.far_ms = 0.0

    def drained(self) -> bool:
        """No partial frame is held back: passing a block unprocessed keeps the timeline."""
        return not len(self._near) and not len(self._out)

    def process(self, near: np.ndarray, far: np.ndarray) -> np.ndarray:
        if len(near) != len(far):
            raise ValueError(f"near and far differ in length ({len(near)} vs {len(far)})")
        self._near = np.concatenate((self._near, np.asarray(near, dtype=np.int16)))
        self._far = np.concatenate((self._far, np.asarray(far, dtype=np.int16)))
        whole = len(self._near) // self.frame * self.frame
        if whole:
            n, f = self._near[:whole], self._far[:whole]
            self._near, self._far = self._near[whole:], self._far[whole:]
            cleaned = np.asarray(self._aec.process(n, f), dtype=np.int16)
            self.last_gated = np.zeros(0, dtype=bool)
            if self.guard:
                cleaned = self._guard(n, f, cleaned)
            self._out = np.concatenate((self._out, cleaned))
        want = len(near)
        if len(self._out) < want:  # blocks that are not whole frames: lag by one frame
            self._out = np.concatenate((np.zeros(want - len(self._out), np.int16), self._out))
        out, self._out = self._out[:want], self._out[want:]
        return out

    def _guard(self, near: np.ndarray, far: np.ndarray, cleaned: np.ndarray) -> np.ndarray:
        k = self.frame
        en, ef, ec = (_energy(x.reshape(-1, k)) for x in (near, far, cleaned))
        out = cleaned.reshape(-1, k).copy()
        gated = np.zeros(len(en), dtype=bool)
        keep = 10 ** (GATE_DB / 10)
        cut = 10 ** (SUPPRESS_DB / 20)
        for i in range(len(en)):
            self.frames += 1
            self._far_levels.append(ef[i])
            far_level = max(self._far_levels)
            if far_level < FAR_SILENT_RMS**2:
                continue
            if ef[i] >= FAR_SILENT_RMS**2:
                self.far_ms += FRAME_MS
            warm = self.far_ms >= WARMUP_MS
            near_talk = ec[i] >= keep * en[i] and (warm or en[i] > far_level)
            if not near_talk:
                out[i] = np.round(out[i] * cut).astype(np.int16)
                self.gated_frames += 1
                gated[i] = True
        self.last_gated = gated
        return out.reshape(-1)


class EchoPath:
    """Whether any echo reaches the microphone, from what it hears while the speaker plays.

    Without an acoustic path (a headset, a muted speaker, a microphone in another room) AEC3 is
    worse than nothing: with no echo to find, it takes a person's speech during the answer for
    echo and suppresses it by 20-60 dB (measured: tests/test_echo.py), so they can never talk
    over the answer. The evidence: once the speaker has played for ``RUN_MS`` without a break,
    any echo path (delay up to AEC3's reach, coupling down to -30 dB) fills every microphone
    frame; frames that stay quiet (``QUIET_DBFS``, and ``QUIET_DB`` under the far end) say
    nothing came back. ``absent`` becomes True when at least ``MIN_QUIET`` of the recent
    ``WINDOW`` such frames, and ``QUIET_SHARE`` of them, were quiet (0.5-1.2 s into the first
    answer while the user listens, a median 2.9 s while they talk over it from its first word:
    ``benchmarks/echo_path_eval.py``); it becomes False again when
    the echo tracker finds an echo path, or ``WINDOW`` such frames in a row had none quiet. A
    microphone noisier than ``QUIET_DBFS`` never shows the evidence: cancellation stays on.
    """

    RUN_MS = 300
    FAR_ACTIVE_RMS = 103.0  # -50 dBFS: the speaker is playing, not fading out
    QUIET_DBFS = -61.0
    QUIET_DB = -40.0
    WINDOW = 300
    MIN_QUIET = 10
    QUIET_SHARE = 0.2

    def __init__(self, frame: int = 160) -> None:
        self.frame = frame
        self.absent = False
        self.decisions = 0  # times ``absent`` changed
        self._run = 0  # far frames in a row above FAR_ACTIVE_RMS
        self._far = deque([0.0] * (self.RUN_MS // FRAME_MS), maxlen=self.RUN_MS // FRAME_MS)
        self._seen: deque[bool] = deque(maxlen=self.WINDOW)  # eligible frames: quiet or not
        self._near = np.zeros(0, dtype=np.int16)
        self._far_rest = np.zeros(0, dtype=np.int16)

    def echo_found(self) -> None:
        """The delay tracker saw the far end in the microphone: there is an echo path."""
        self._seen.clear()
        self._set(False)

    def add(self, near: np.ndarray, far: np.ndarray) -> bool:
        """The microphone's samples and the far end lined up with them; True when ``absent``
        changed."""
        near = np.concatenate((self._near, near))
        far = np.concatenate((self._far_rest, far))
        whole = len(near) // self.frame * self.frame
        self._near, self._far_rest = near[whole:], far[whole:]
        if not whole:
            return False
        en = _energy(near[:whole].reshape(-1, self.frame))
        ef = _energy(far[:whole].reshape(-1, self.frame))
        quiet_abs = (32768 * 10 ** (self.QUIET_DBFS / 20)) ** 2
        quiet_rel = 10 ** (self.QUIET_DB / 10)
        for e_near, e_far in zip(en, ef, strict=True):
            self._run = self._run + 1 if e_far >= self.FAR_ACTIVE_RMS**2 else 0
            self._far.append(e_far)
            if self._run * FRAME_MS < self.RUN_MS:
                continue
            mean_far = sum(self._far) / len(self._far)
            self._seen.append(bool(e_near < quiet_abs and e_near < quiet_rel * mean_far))
        quiet = sum(self._seen)
        was = self.absent
        if not was and quiet >= self.MIN_QUIET and quiet >= self.QUIET_SHARE * len(self._seen):
            self._set(True)
        elif was and len(self._seen) == self.WINDOW and quiet == 0:
            self._set(False)
        return self.absent != was

    def _set(self, absent: bool) -> None:
        if absent != self.absent:
            self.absent = absent
            self.decisions += 1
            if absent:
                log.info("no echo reaches the microphone (a headset?): it passes as it came, "
                         "so you can talk over the answer")
            else:
                log.info("echo reaches the microphone: cancelling it")


class Reference(Protocol):
    """What ``EchoCancelledSource`` needs from the speaker (``devices.Speaker``)."""

    timed: Optional[bool]

    def played_after(self, cursor: int) -> tuple[int, list[Any]]: ...


class EchoCancelledSource:
    """A microphone with the speaker's echo removed: same ``read`` interface, same timeline.

    ``half_duplex`` becomes True when cancellation had to stop (PortAudio gave no stream timing,
    so far and near cannot be aligned): audio then passes as it came, and the turn manager does
    not take speech during its own answer as a barge-in.
    """

    def __init__(self, mic: Any, speaker: Reference, delay_hint_ms: int = 0,
                 canceller: Optional[EchoCanceller] = None) -> None:
        self.mic = mic
        self.speaker = speaker
        self.canceller = canceller or EchoCanceller(mic.rate, delay_hint_ms)
        self.far = FarReference(mic.rate)
        self.delay = DelayTracker(mic.rate)
        self.path = EchoPath(mic.rate * FRAME_MS // 1000)
        self.words = BargeInWords(mic.rate)
        """The recognizer's view (``edgevoice.ear.barge_in_words``): a barge-in's first words
        with the echo subtracted, not suppressed; the transcriber's ``words_audio``."""
        self.half_duplex = False
        self.cpu_s = 0.0  # CPU time spent cancelling (the benchmark's figure)
        self.last_far: Optional[np.ndarray] = None  # the far end lined up with the last chunk
        self.last_near: Optional[np.ndarray] = None  # the last chunk as the microphone heard it
        self._cursor = 0
        self._checked = False
        self._loud_until: Optional[float] = None  # DAC time just past the last audible block
        self.bypassed = 0  # chunks passed unprocessed because nothing was played (idle)

    def __getattr__(self, name: str) -> Any:  # overflows, restarts, finished, start_time...
        return getattr(self.__dict__["mic"], name)

    def _check_timing(self) -> None:
        mic_timed = getattr(self.mic, "timed", None)
        spk_timed = getattr(self.speaker, "timed", None)
        if mic_timed is None or spk_timed is None:
            return  # not known before each stream delivered once
        self._checked = True
        if not (mic_timed and spk_timed):
            which = "input" if not mic_timed else "output"
            self.half_duplex = True
            log.warning("echo cancellation stopped: the audio backend gives no %s stream timing, "
                        "so the speaker's audio cannot be lined up with the microphone's; %s",
                        which, HALF_DUPLEX)

    def read(self, timeout: Optional[float] = None) -> Optional[AudioChunk]:
        chunk = self.mic.read(timeout)
        if chunk is None or self.half_duplex:
            return chunk
        if not self._checked:
            self._check_timing()
            if self.half_duplex:
                return chunk
        began = time.thread_time()
        self._cursor, blocks = self.speaker.played_after(self._cursor)
        for block in blocks:
            if len(block.samples) and int(np.abs(block.samples).max()) > FAR_SILENT_RMS:
                end = block.time + len(block.samples) / block.rate
                self._loud_until = end if self._loud_until is None else max(self._loud_until, end)
        at = getattr(self.mic, "chunk_time", None)
        if at is not None and self._resting(at):
            self.bypassed += 1  # its silent blocks are not kept: a gap reads as silence
            self.last_near = chunk.samples()
            self.last_far = np.zeros(len(self.last_near), dtype=np.int16)
            self._keep_words(chunk, self.last_near, self.last_far, self.last_near)
            self.cpu_s += time.thread_time() - began
            return chunk
        for block in blocks:
            self.far.add(block.time, block.samples, block.rate)
        near = self.last_near = chunk.samples()
        if at is None:
            return chunk
        pos = self.far.steady(at, len(near))
        timed_far = (np.zeros(len(near), np.int16) if pos is None
                     else self.far.take_index(pos, len(near)))
        if self.delay.add(near, timed_far):
            shifting = self.delay.lag_s > SHIFT_ABOVE_S
            log.info("echo arrives %.0f ms later than the audio backend's timing says%s",
                     self.delay.lag_s * 1000, ": the far end is lined up by that"
                     if shifting else "")
            if shifting:
                self.canceller.reset()  # what it learnt at the old delay is of no use
        lag = self.delay.lag_s
        shift = lag - LEAD_S if lag > SHIFT_ABOVE_S else 0.0
        far = (self.far.take_index(pos - int(round(shift * self.far.rate)), len(near))
               if shift and pos is not None else timed_far)
        cleaned = self.canceller.process(near, far)  # runs on: ready when echo appears
        if self.delay.echo_seen:
            self.path.echo_found()
        self.path.add(near, far)
        self.cpu_s += time.thread_time() - began
        self.last_far = far
        if self.path.absent:  # no echo: the words are the microphone's
            self._keep_words(chunk, near, np.zeros(len(near), np.int16), near)
            return chunk
        self._keep_words(chunk, near, far, cleaned)
        return AudioChunk.from_samples(cleaned, chunk.format.rate, chunk.start_ms)

    def _keep_words(self, chunk: AudioChunk, near: np.ndarray, far: np.ndarray,
                    cleaned: np.ndarray) -> None:
        self.words.add(int(round(chunk.start_ms * chunk.format.rate / 1000)), near, far, cleaned)

    def _resting(self, at: float) -> bool:
        """Nothing audible was played for ``IDLE_AFTER_S`` before ``at`` (and none of it is
        pending in the canceller's frame buffers, so the timeline does not step): no echo."""
        if self._loud_until is not None and at - self._loud_until < IDLE_AFTER_S + self.delay.lag_s:
            return False
        return self.canceller.drained()


class HalfDuplexSource:
    """A microphone that could not get echo cancellation: audio unchanged, ``half_duplex``."""

    half_duplex = True

    def __init__(self, mic: Any) -> None:
        self.mic = mic

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["mic"], name)

    def read(self, timeout: Optional[float] = None) -> Optional[AudioChunk]:
        return self.mic.read(timeout)


def plan(mode: Mode, plays_to_device: bool, records_from_device: bool) -> tuple[bool, str]:
    """Whether to cancel echo, and why (for the log and ``doctor``)."""
    if mode == "off":
        return False, "off (audio.echo_cancel: off)"
    if not (plays_to_device and records_from_device):
        return False, "not needed: the agent does not both play to and record from a device"
    why_not = available()
    if why_not is not None:
        return False, f"cannot run: {why_not}"
    return True, "on (WebRTC AEC3, aligned by PortAudio's stream timing)"


def cancel_echo(mode: Mode, source: Any, speaker: Optional[Reference],
                records_from_device: bool) -> Any:
    """The ear's input: ``source`` itself, wrapped with echo cancellation, or (when it should
    run but cannot) marked half duplex; the decision is logged. Under ``on`` a missing library
    is a ``UserError`` naming the command that installs it."""
    enabled, why = plan(mode, speaker is not None, records_from_device)
    if enabled:
        log.info("echo cancellation %s", why)
        return EchoCancelledSource(source, speaker)
    if why.startswith("cannot run"):
        if mode == "on":
            from edgevoice.errors import UserError

            raise UserError(f"audio.echo_cancel is on but echo cancellation {why}; or set "
                            "audio.echo_cancel: auto to run half duplex without it")
        log.warning("echo cancellation %s; %s", why, HALF_DUPLEX)
        return HalfDuplexSource(source)
    if mode == "on":
        log.warning("audio.echo_cancel is on, but echo cancellation is %s", why)
    else:
        log.debug("echo cancellation %s", why)
    return source
