"""A barge-in's words, as the recognizer should hear them: echo subtracted, not suppressed.

AEC3 decides whether anyone speaks (it never lets the agent's own voice start a turn), but while
the speaker plays it also suppresses a person talking over the answer for their first few
hundred ms, and the utterance starts late: the first words are gone before the recognizer gets
any audio. ``BargeInWords`` keeps the last seconds of the microphone, the far end lined up with
it and AEC3's output. When an utterance starts while the far end is audible, it fits a linear
echo filter (``edgevoice.ear.linear_echo``) in one burst on the seconds before the talker (where
AEC3 first let them through, less a margin: AEC3 passes them late), so what it
learnt is the echo path of right now (whatever the alignment did between answers), and from then
on the recognizer hears the microphone minus that echo. It also looks back from the utterance's
start on that signal, where nothing suppresses the talker, for where the words really began, so
the first word is not cut. No echo around: the audio passes as AEC3 gave it, at no cost.
Where the fit does not learn the echo (``MIN_ERLE_DB``) or no talker stands out of what it
leaves, the recognizer hears AEC3's output as before: the linear output would be mostly the
agent's own voice, and it must never hear that.
"""

from __future__ import annotations

import logging
import time
from typing import Optional

import numpy as np

from edgevoice.audio.format import AudioChunk
from edgevoice.ear.linear_echo import LinearEchoFilter

log = logging.getLogger(__name__)

KEEP_S = 6.0
FIT_S = 2.0
"""The stretch the filter is fitted on: the last seconds before the talker (``GUARD_MS``)."""
MIN_FIT_S = 0.75
"""Less echo than this before the talker (they spoke at once): nothing is fitted."""
PASSES = 2
"""Times the fit goes over that stretch: one pass from nothing leaves ~5 dB of ERLE on the
table in the simulated rooms."""
GUARD_MS = 300
"""The fit ends this long before AEC3 first let the talker through (it suppresses their first
few hundred ms): learnt as echo, a talker would be subtracted from themselves."""
PASS_DB = -10.0
"""A frame AEC3 keeps this much of the microphone's energy in is near-end sound (echo alone
comes out 30-60 dB down)."""
REACH_MS = 900
"""How far before the utterance's start (its pre-roll included) the words may have begun: the
onset the ear's VAD sees comes 150-1400 ms late under AEC3's suppression."""
FRAME_MS = 30
WORDS_OVER_DB = 8.0
"""A frame of the linear output this far above the residual echo (its 95th percentile over the
fit's stretch) is the talker."""
GAP_MS = 240
"""Looking back, the words go on through gaps up to this long (between words, a stop consonant)."""
LEAD_MS = 120
"""Kept before the first frame found (a soft onset, like the endpointer's pre-roll)."""
MAX_LAG_MS = 500
"""The echo is looked for up to this late behind the far end as PortAudio's timing places it."""
MARGIN_MS = 20
"""The far end is taken so that the echo's direct sound comes this late in the filter's taps."""
LAG_SHARPNESS = 6.0
"""A clear echo peak: this many times the cross-correlation's RMS."""
PASS_GAP_MS = 300
"""Frames AEC3 lets through belong to one stretch across gaps up to this long."""
RECENT_MS = 300
"""An utterance starting this long after the speaker went quiet is not over an answer: AEC3's
output is whole there (no double talk), and nothing is fitted."""
MIN_LOUD_FRAMES = 3
"""Frames of the talker needed around the start (and in the onset the ear heard after it)."""
MIN_ERLE_DB = 10.0
"""The fit's ERLE (its last pass over the stretch) from which its output is trusted."""
AUDIBLE_RMS = 30.0
"""The far end's level (int16 RMS per 10 ms) from which there is echo to take out (about -61 dBFS,
as ``edgevoice.ear.echo``'s FAR_SILENT_RMS)."""


class BargeInWords:
    """The recognizer's view of the microphone when echo cancellation runs.

    ``add`` is given every chunk as the source processed it (its first sample's position on the
    microphone's sample timeline, the microphone, the far end lined up with it, what AEC3 made
    of it). The transcriber calls ``audio`` for each chunk of an utterance, ``first`` for its
    first; the chunk comes back as the recognizer should hear it, the first possibly longer,
    reaching back to where the words began."""

    def __init__(self, rate: int = 16000, keep_s: float = KEEP_S) -> None:
        self.rate = rate
        size = int(rate * keep_s)
        self._near = np.zeros(size, dtype=np.int16)
        self._far = np.zeros(size, dtype=np.int16)
        self._clean = np.zeros(size, dtype=np.int16)
        self._hi = 0  # one past the newest position held
        self._filter: Optional[LinearEchoFilter] = None  # fitted for the current utterance
        self._next = -1  # the position the words continue from
        self._done = 0  # the position the filter has run to
        self._ahead = np.zeros(0, np.int16)  # its output not yet given, from ``_ahead_at``
        self._ahead_at = 0
        self._shift = 0  # samples the far end is taken earlier (``_bulk_lag``)
        self.fits = 0
        self.used = 0  # fits the recognizer heard (a talker stood out of the residual echo)
        self.fit_cpu_s = 0.0  # CPU time of the fits (the benchmark's figure)
        self.reached_ms: list[float] = []  # per fit: how far before the start the words began

    def add(self, start: int, near: np.ndarray, far: np.ndarray, cleaned: np.ndarray) -> None:
        n = len(near)
        if n > len(self._near):
            start, near, far, cleaned = start + n - len(self._near), near[-len(self._near):], \
                far[-len(self._near):], cleaned[-len(self._near):]
            n = len(near)
        if start > self._hi:  # a gap (overflow): silence, nothing played
            self._put(self._hi, np.zeros(min(start - self._hi, len(self._near)), np.int16))
        at = start % len(self._near)
        first = min(n, len(self._near) - at)  # the ring wraps after this many
        for ring, x in ((self._near, near), (self._far, far), (self._clean, cleaned)):
            ring[at:at + first] = x[:first]
            ring[:n - first] = x[first:]
        self._hi = max(self._hi, start + n)

    def _put(self, start: int, zeros: np.ndarray) -> None:
        idx = np.arange(start, start + len(zeros)) % len(self._near)
        self._near[idx] = self._far[idx] = self._clean[idx] = 0

    def _get(self, ring: np.ndarray, lo: int, hi: int) -> np.ndarray:
        lo = max(lo, self._hi - len(ring), 0)
        return ring[np.arange(lo, max(lo, hi)) % len(ring)]

    def _position(self, chunk: AudioChunk) -> int:
        return int(round(chunk.start_ms * self.rate / 1000))

    def audio(self, chunk: AudioChunk, first: bool) -> AudioChunk:
        if chunk.format.rate != self.rate:
            return chunk
        start = self._position(chunk)
        end = start + len(chunk.data) // 2
        if end > self._hi or start < self._hi - len(self._near):
            return chunk  # not (or no longer) held: as it came
        if first:
            self._filter = None
            if self._audible(start - int(RECENT_MS * self.rate / 1000), end):
                return self._begin(chunk, start, end)
            return chunk
        if self._filter is None or start != self._next:
            return chunk
        return AudioChunk.from_samples(self._take(start, end), self.rate, chunk.start_ms)

    def _passed_from(self) -> int:
        """Where the stretch AEC3 lets through (``PASS_DB`` of the microphone kept) that the
        newest audio belongs to began: the talker, heard late. The fit must end before it,
        since a filter cannot yet tell a talker from echo while it learns."""
        frame = self.rate * FRAME_MS // 1000
        lo = max(self._hi - len(self._near), 0)
        count = (self._hi - lo) // frame
        if count == 0:
            return self._hi
        lo = self._hi - count * frame
        near = self._get(self._near, lo, self._hi).astype(np.float64).reshape(count, frame)
        clean = self._get(self._clean, lo, self._hi).astype(np.float64).reshape(count, frame)
        passed = (clean**2).sum(axis=1) >= 10 ** (PASS_DB / 10) * (near**2).sum(axis=1) + 1.0
        gap_frames = max(1, PASS_GAP_MS // FRAME_MS)
        first, quiet = None, 0
        for i in range(count - 1, -1, -1):
            if passed[i]:
                first, quiet = i, 0
            elif first is not None:
                quiet += 1
                if quiet > gap_frames:
                    break
        return self._hi if first is None else lo + first * frame

    def _audible(self, lo: int, hi: int) -> bool:
        far = self._get(self._far, lo, hi).astype(np.float64)
        block = self.rate // 100
        if len(far) < block:
            return False
        energy = (far[: len(far) // block * block].reshape(-1, block) ** 2).mean(axis=1)
        return bool((energy >= AUDIBLE_RMS**2).any())

    def _begin(self, chunk: AudioChunk, start: int, end: int) -> AudioChunk:
        began = time.thread_time()
        f = LinearEchoFilter(self.rate)
        reach = int(REACH_MS * self.rate / 1000)
        fit_end = min(start, self._passed_from() - int(GUARD_MS * self.rate / 1000))
        lo = max(fit_end - int(FIT_S * self.rate), self._hi - len(self._near), 0)
        if fit_end - lo < int(MIN_FIT_S * self.rate):
            log.info("barge-in words: too little echo without the talker before them to learn "
                     "it from; the recognizer hears AEC3's output")
            return chunk
        fit_end -= (fit_end - lo) % f.block  # whole blocks
        near = self._get(self._near, lo, fit_end)
        self._shift = 0  # the lag is measured on the far end as the timing placed it
        self._shift = self._bulk_lag(near, self._far_at(lo, fit_end), f)
        far = self._far_at(lo, fit_end)
        history = max(0, lo - f.partitions * f.block)
        for _ in range(PASSES):
            f.restart()
            f.run(self._get(self._near, history, lo), self._far_at(history, lo))
            residual = f.fit(near, far)  # the last pass: what the filter leaves of the echo
        # its output from the reach on (its far history primed just before), up to the newest
        # audio held: the utterance's onset frames, which the ear has already heard
        look = max(start - reach, lo + int(0.05 * self.rate))
        look -= (look - lo) % f.block
        prime = max(lo, look - f.partitions * f.block)
        f.restart()
        f.run(self._get(self._near, prime, look), self._far_at(prime, look))
        self._filter, self._done, self._ahead = f, look, np.zeros(0, np.int16)
        self._filter_to(self._hi - (self._hi - look) % f.block)
        lin = self._ahead
        words_at = self._words_start(lin, start - look, residual)
        self.fits += 1
        self.fit_cpu_s += time.thread_time() - began
        used = f.fit_erle_db >= MIN_ERLE_DB and words_at is not None
        self.reached_ms.append(1000 * (start - look - words_at) / self.rate if used else 0.0)
        log.info("barge-in words: linear filter fitted in %.0f ms CPU (ERLE %.1f dB, echo %.0f "
                 "ms behind the timing): %s", 1000 * (time.thread_time() - began), f.fit_erle_db,
                 1000 * self._shift / self.rate,
                 f"the words begin {self.reached_ms[-1]:.0f} ms before the utterance's start"
                 if used else ("the echo is not learnt well enough" if words_at is not None
                               else "no talker stands out of what it leaves of the echo")
                 + ", so the recognizer hears AEC3's output")
        if not used:
            # Without a clear talker over a well-learnt echo, the linear output is mostly the
            # agent's own voice: the recognizer must not hear it (it would answer itself).
            self._filter = None
            return chunk
        assert words_at is not None
        self.used += 1
        self._ahead, self._ahead_at = lin, look
        out = self._take(look + words_at, end)
        return AudioChunk.from_samples(out, self.rate, (look + words_at) * 1000 / self.rate)

    def _filter_to(self, hi: int) -> None:
        """Run the filter on from where it stopped to ``hi`` (whole blocks), output kept."""
        f = self._filter
        assert f is not None
        if hi > self._done:
            out = f.run(self._get(self._near, self._done, hi), self._far_at(self._done, hi))
            self._ahead = np.concatenate((self._ahead, out))
            self._done = hi

    def _take(self, lo: int, hi: int) -> np.ndarray:
        """The linear output for ``lo``..``hi`` (kept ahead, or filtered now); what is past
        the last whole block comes as the microphone heard it, and the filter stops there."""
        f = self._filter
        assert f is not None
        self._filter_to(self._done + (hi - self._done) // f.block * f.block)
        at = self._ahead_at
        out = self._ahead[lo - at:hi - at]
        self._ahead, self._ahead_at = self._ahead[hi - at:], hi
        if len(out) < hi - lo:  # a part block (not at 16 kHz / 10 ms): raw, and no more
            out = np.concatenate((out, self._get(self._near, lo + len(out), hi)))
            self._filter = None
        self._next = hi
        return out

    def _far_at(self, lo: int, hi: int) -> np.ndarray:
        """The far end for microphone positions ``lo``..``hi``, taken ``_shift`` earlier."""
        far = self._get(self._far, lo - self._shift, hi - self._shift)
        return np.concatenate((np.zeros(hi - lo - len(far), np.int16), far))

    def _bulk_lag(self, near: np.ndarray, far: np.ndarray, f: LinearEchoFilter) -> int:
        """How much earlier to take the far end so that the echo's direct sound comes
        ``MARGIN_MS`` into the filter's taps: the echo may come later than PortAudio's timing
        says (a sound server's buffers), beyond what the taps cover, which AEC3's own delay
        estimator follows but a linear filter must be told. GCC-PHAT (whitened cross-
        correlation: it peaks at the delay, not at the voice's pitch period); 0 without a clear
        peak."""
        max_lag = int(MAX_LAG_MS * self.rate / 1000)
        if len(near) < 2 * max_lag:
            return 0
        size = 1 << int(np.ceil(np.log2(2 * len(near))))
        cross = np.fft.rfft(near.astype(np.float64), size) * np.conj(
            np.fft.rfft(far.astype(np.float64), size))
        r = np.fft.irfft(cross / (np.abs(cross) + 1e-9), size)[: max_lag + 1]
        lag = int(np.argmax(r))
        if r[lag] < LAG_SHARPNESS * float(np.sqrt(np.mean(r**2))):
            return 0
        margin = int(MARGIN_MS * self.rate / 1000)
        return max(0, lag - margin) // f.block * f.block

    def _words_start(self, lin: np.ndarray, start: int, residual: np.ndarray
                     ) -> Optional[int]:
        """Where, in ``lin`` (the linear output from the reach on, up to the newest audio),
        the words began: at most ``start`` (the utterance's own start); None when no talker
        stands out near the start or in the onset after it. ``residual``: the filter's output
        over its fit, before the reach (echo only, unless the talker began that early)."""
        frame = self.rate * FRAME_MS // 1000
        count = len(residual) // frame
        if count < 5 or start < frame:
            return None
        r = residual[: count * frame].astype(np.float64).reshape(count, frame)
        ref = float(np.percentile(10 * np.log10((r * r).mean(axis=1) + 1.0), 95))
        offset = start % frame  # frames laid so that one begins at the start
        count = (len(lin) - offset) // frame
        x = lin[offset:offset + count * frame].astype(np.float64).reshape(count, frame)
        loud = 10 * np.log10((x * x).mean(axis=1) + 1.0) >= ref + WORDS_OVER_DB
        at = (start - offset) // frame  # the frame that begins at the start
        gap_frames = max(1, GAP_MS // FRAME_MS)
        after = np.flatnonzero(loud[max(0, at - gap_frames):])
        if len(after) < MIN_LOUD_FRAMES:
            return None
        first = max(0, at - gap_frames) + int(after[0])
        if first >= at:
            return start  # the talker begins after the start: the pre-roll covers them
        quiet, ended = 0, False
        for i in range(first - 1, -1, -1):  # back, through short gaps
            if loud[i]:
                first, quiet = i, 0
            else:
                quiet += 1
                if quiet > gap_frames:
                    ended = True
                    break
        if not ended:
            return start  # loud all the way back: where the words began cannot be seen
        lead = self.rate * LEAD_MS // 1000
        return max(0, offset + first * frame - lead)

