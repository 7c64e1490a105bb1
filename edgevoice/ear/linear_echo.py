"""A linear echo filter: the speaker's echo subtracted, a person talking over it left whole.

AEC3 (``edgevoice.ear.echo``) removes echo so well that the agent never hears itself, but for the
first few hundred ms of someone talking over the answer its suppressor takes them for echo too
(simulated, 60 ms -9 dB: 16-34 dB of a barge-in's first 300 ms removed; 48-65 dB with the
double-talk guard), and the first words of a barge-in are lost ("go forward" -> "forward"). A
linear adaptive filter only subtracts its estimate of the echo: near-end speech passes untouched,
with a residual of echo some 10-30 dB down. ``edgevoice.ear.barge_in_words`` fits one in a burst
just before a barge-in and gives the recognizer its output.

The filter is a partitioned-block frequency-domain NLMS (overlap-save, one partition per 10 ms
block): the textbook form of Speex's MDF. While fitting, a block whose error is far above what a
converged filter leaves of the echo is someone talking: the filter does not learn from it.
"""

from __future__ import annotations

from collections import deque

import numpy as np

BLOCK_MS = 10
TAPS_MS = 250
"""The echo path it can learn: a room's direct sound up to ~150 ms late plus its reverb (the
alignment by PortAudio's timing leaves the room's own delay to the filter)."""
STEP = 0.5
"""NLMS step size (0..1): from nothing to 15-30 dB in about 1.5 s of speech at -3 to -20 dB
coupling (simulated rooms)."""
CONVERGED_DB = 10.0
"""ERLE from which the filter's own double-talk test is trusted while fitting."""
TALK_OVER = 8.0
"""While fitting: a block whose error energy is this many times (9 dB) over what the filter
expects to leave of the echo (and over the noise floor) is near-end talk, not learnt from."""
ERLE_BLOCKS = 300  # 3 s
_REGULARIZE = 1e6  # keeps the step finite on silent far-end bins (int16 scale, 2N-point FFT)


class LinearEchoFilter:
    """PBFDAF NLMS on int16 near (microphone) and far (speaker) signals, already lined up.

    ``fit`` learns the echo path from a stretch of both; ``run`` subtracts the learnt echo from
    the next stretch without learning (a barge-in is double talk: nothing there is to be learnt).
    Both continue the far end's history from the previous call, so consecutive stretches are one
    signal."""

    def __init__(self, rate: int = 16000, taps_ms: int = TAPS_MS, step: float = STEP) -> None:
        self.rate = rate
        self.block = n = rate * BLOCK_MS // 1000
        self.partitions = max(1, -(-taps_ms // BLOCK_MS))
        self.step = step
        self._w = np.zeros((self.partitions, n + 1), complex)  # the echo path, per partition
        self._power = np.zeros(n + 1)
        self._zeros = np.zeros(n)
        self._learnt = 0  # blocks learnt from
        self._erle, self._erle_at = 0.0, None  # erle_db, and at how many blocks it was taken
        self._turn = 0  # the partition constrained next
        self.restart()
        # (microphone energy, ERLE dB) of the blocks learnt from
        self._block_erle: deque[tuple[float, float]] = deque(maxlen=ERLE_BLOCKS)
        self.talk_blocks = 0  # blocks the fit did not learn from (near-end talk)
        self.fit_erle_db = 0.0
        """ERLE over the last ``fit`` call's blocks with echo and no talk (a second pass over
        the same stretch: how well the path is known there)."""

    @property
    def erle_db(self) -> float:
        """Echo removed: the median over the louder half of the last blocks learnt from (0
        before any). A median, not a ratio of sums: a talker's blocks the double-talk test let
        through (before it trusts itself) are a minority and do not drag it down; the louder
        half: in a noisy room the quiet blocks are the noise, which no filter removes."""
        if self._erle_at is None or self._learnt - self._erle_at >= 10:  # every 100 ms
            self._erle, self._erle_at = _loud_median(self._block_erle), self._learnt
        return self._erle

    def restart(self) -> None:
        """Forget the far end's history (the next call starts a new, unrelated stretch); the
        learnt path is kept. Give it the far end before the stretch first (``run`` over the
        taps' length): the step is normalized by the power the history holds, and after a
        history of zeros the first steps are many times too large (a fit that starts in the
        middle of speech diverges)."""
        # Far spectra, newest first, as the window ``_x[_head:_head + partitions]`` of a buffer
        # twice as long: each spectrum is written at two rows, so the window is always a view.
        m = self.partitions
        self._x = np.zeros((2 * m, self.block + 1), complex)
        self._head = 0  # row of the newest far spectrum (and of its copy, + partitions)
        self._held_power = np.zeros(self.block + 1)  # sum of |X|^2 over the window
        self._prev = np.zeros(self.block)

    def fit(self, near: np.ndarray, far: np.ndarray) -> np.ndarray:
        """Learn from whole blocks of ``near``/``far`` (int16, same length); the error as it
        learnt (int16)."""
        return self._blocks(near, far, learn=True)

    def run(self, near: np.ndarray, far: np.ndarray) -> np.ndarray:
        """``near`` minus the echo estimate (int16, whole blocks), learning nothing."""
        return self._blocks(near, far, learn=False)

    def _blocks(self, near: np.ndarray, far: np.ndarray, learn: bool) -> np.ndarray:
        if len(near) != len(far):
            raise ValueError(f"near and far differ in length ({len(near)} vs {len(far)})")
        n = self.block
        count = len(near) // n
        out = np.empty(count * n, dtype=np.int16)
        floor = np.inf
        fitted: list[tuple[float, float]] = []
        for i in range(count):
            d = near[i * n:(i + 1) * n].astype(np.float64)
            x = far[i * n:(i + 1) * n].astype(np.float64)
            e, echo = self._step(d, x)
            err_e, near_e = float(e @ e), float(d @ d)
            if learn and (float(x @ x) > 0 or echo > 0):
                floor = min(floor, err_e)
                expected = echo * 10 ** (-min(self.erle_db, 25.0) / 10) + floor
                talking = self.erle_db >= CONVERGED_DB and err_e > TALK_OVER * expected
                if talking:
                    self.talk_blocks += 1
                else:
                    erle = 10 * np.log10((near_e + 1.0) / (err_e + 1.0))
                    self._block_erle.append((near_e, erle))
                    self._learnt += 1
                    fitted.append((near_e, erle))
                    self._learn(e)
            if err_e > near_e:  # never louder than the microphone (a stale estimate)
                e = d
            out[i * n:(i + 1) * n] = np.clip(np.round(e), -32768, 32767)
        if learn and fitted:
            self.fit_erle_db = _loud_median(fitted)
        return out

    def _step(self, d: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, float]:
        """One block: the far spectrum joins the history; (error, echo estimate energy)."""
        n = self.block
        m = self.partitions
        spectrum = np.fft.rfft(np.concatenate((self._prev, x)))
        self._prev = x
        h = self._head = (self._head - 1) % m
        oldest = self._x[h]  # m blocks old: its rows are overwritten now
        self._held_power += spectrum.real**2 + spectrum.imag**2 - oldest.real**2 - oldest.imag**2
        np.maximum(self._held_power, 0.0, out=self._held_power)  # rounding
        self._x[h] = self._x[h + m] = spectrum
        self._window = self._x[self._head:self._head + m]
        self._power = 0.7 * self._power + 0.3 * self._held_power
        y = np.fft.irfft((self._w * self._window).sum(axis=0))[n:]
        return d - y, float(y @ y)

    def _learn(self, e: np.ndarray) -> None:
        n = self.block
        error = np.fft.rfft(np.concatenate((self._zeros, e)))
        self._w += self.step * (np.conj(self._window) * (error / (self._power + _REGULARIZE)))
        # The gradient constraint (each partition's taps stay linear, not circular), on one
        # partition per block in turn, as Speex's MDF does: all of them every block costs ~5x
        # the CPU for the same convergence.
        j = self._turn = (self._turn + 1) % self.partitions
        taps = np.fft.irfft(self._w[j])
        taps[n:] = 0.0
        self._w[j] = np.fft.rfft(taps)


def _loud_median(blocks) -> float:
    """The median ERLE of the blocks at or above the median microphone energy."""
    if not blocks:
        return 0.0
    energy = np.array([e for e, _ in blocks])
    erle = np.array([r for _, r in blocks])
    return float(np.median(erle[energy >= np.median(energy)]))
