"""pocketsphinx backend: the zero-download default, using the en-US model bundled in its wheel."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np

from edgevoice.asr.protocol import Transcript, Word
from edgevoice.audio.format import AudioChunk

log = logging.getLogger(__name__)

_FRAMES_PER_SECOND = 100  # pocketsphinx's default frame rate (10 ms frames)
_ALT_PRONUNCIATION = re.compile(r"\(\d+\)$")
_ESTIMATOR_DICT = Path(__file__).with_name("cmn_estimator.dict")  # the CMN estimator's one word
# Audio held back at the start of each utterance to estimate its cepstral mean (see the class
# docstring). Counted from the utterance's first audio, i.e. including the endpointer's pre-roll
# and onset (390 ms with the default config). Tuned on the tuning half of
# `python -m edgevoice.devtools.asr_eval_set` with benchmarks/asr_eval.py --lookahead-ms.
LOOKAHEAD_MS = 1000
# Leading audio quieter than this (or 30 dB under the loudest frame so far) is not counted in
# the window beyond this much of it, e.g. the silence after a push-to-talk press: a mean measured
# on silence alone is worse than none. The gate's floor: quieter frames are never speech.
_QUIET_DBFS = -55.0
_QUIET_KEEP_MS = 300
MAX_HOLD_MS = 3000  # decode anyway after this much audio, speech found or not


def _is_filler(word: str) -> bool:
    return word.startswith(("<", "[", "++")) or word in ("", "<sil>")


class PocketsphinxRecognizer:
    """Streams audio into a pocketsphinx ``Decoder``; partials from ``hyp()``.

    Cepstral mean normalization (CMN) is per utterance. Streaming (``full_utt=False``) switches
    pocketsphinx to *live* CMN for good: it starts from the model's fixed ``cmninit`` guess
    (weighted as 500 frames), adapts only after ~800 frames, and carries the adapted mean into
    the next utterance -- so the first second of every utterance was decoded with the wrong
    mean and the same file gave different text depending on what was decoded before it. Here
    the first ``lookahead_ms`` of each utterance is held back, its batch mean is computed by a
    second decoder that is never fed live (features only, no search), and the main decoder
    starts the utterance from that mean (``set_cmn``), then streams as usual. Nothing carries
    from one utterance to the next. Partials are empty until the lookahead is released: when it
    fills, at a pause (``speech_paused``, called by the transcriber) or at ``finish``. Quiet audio
    leading the utterance (beyond the endpointer's usual pre-roll, e.g. after a push-to-talk
    press) does not count towards the window, nor into the mean, up to ``MAX_HOLD_MS``.

    Pauses: ``checkpoint`` gives the words so far as the final would have them, without ending
    the utterance -- the decoder goes on through the pause, with its language-model history,
    acoustic state and running mean, as a whole-file decode does. (The first pass's best path at
    a frame is what ``end_utt`` returns when only silence follows: the same text on every tuning
    file checked. Ending and restarting the utterance at each pause lost words at the cuts: "four
    of | clubs" became "four of loads".) ``reset`` abandons an
    utterance; its ``end_utt`` (tens to hundreds of ms) is left to the next utterance's first
    audio, which is held back (the lookahead) anyway, so it never delays a final.
    """

    name = "pocketsphinx"

    def __init__(self, sample_rate: int = 16000, lookahead_ms: int = LOOKAHEAD_MS,
                 **decoder_options) -> None:
        import pocketsphinx

        self.sample_rate = sample_rate
        # The final is the first (tree) pass's own best path, as the partials are: no second
        # (flat-lexicon) pass, no lattice best path. Both run after the user stopped talking:
        # fwdflat ~0.6 s per 7 s of speech, the lattice search ~50 ms (several hundred in noise,
        # its lattices are bigger). On the tuning half of the evaluation set
        # (benchmarks/asr_eval.py --decoder fwdflat=true / bestpath=true) fwdflat gained 0.008
        # WER on its noisy and quiet files at 3x the finish time, and the best path lost 0.017
        # WER; with the whole file's mean given, our streaming decode equals batch decoding.
        # ``decoder_options`` override these (pocketsphinx config keys; for benchmarks).
        options = {"samprate": sample_rate, "loglevel": "FATAL", "fwdflat": False,
                   "bestpath": False}
        options.update(decoder_options)
        self._decoder = pocketsphinx.Decoder(**options)
        # The CMN estimator: features only (no search), whole buffers with full_utt=True. Any
        # call leaves its front end in live-CMN mode, so it is re-made (reinit_feat, ~0.1 ms)
        # before each estimate. A keyphrase search is the cheapest to load (no LM), and a
        # one-word dictionary keeps it from loading cmudict's 135,000 words: ~6 MB instead of
        # ~28 MB (the features, and so the mean, do not depend on the dictionary).
        self._estimator = pocketsphinx.Decoder(
            samprate=sample_rate, loglevel="FATAL", keyphrase="oh", kws_threshold=1e-30,
            dict=str(_ESTIMATOR_DICT),
        )
        self._lookahead = max(0, int(lookahead_ms * sample_rate / 1000)) * 2  # int16 bytes
        self._max_hold = max(self._lookahead, int(MAX_HOLD_MS * sample_rate / 1000) * 2)
        self._frame = sample_rate // 100 * 2  # 10 ms, in bytes
        self._pending = bytearray()  # this utterance's audio not yet given to the decoder
        self._in_utterance = False  # audio of an utterance has been accepted
        self._decoding = False  # ... and the decoder has started it (lookahead released)
        self._abandoned = False  # the decoder's utterance was reset; end_utt still to do

    def accept(self, chunk: AudioChunk) -> None:
        if chunk.format.rate != self.sample_rate or chunk.format.channels != 1:
            raise ValueError(f"pocketsphinx expects {self.sample_rate} Hz mono, got {chunk.format}")
        self._in_utterance = True
        if self._decoding:
            self._feed(chunk.data)
            return
        self._end_abandoned()  # at the utterance's first audio, long before its first pause
        self._pending += chunk.data
        if len(self._pending) >= self._max_hold or (
            len(self._pending) - self._quiet_lead(self._pending) >= self._lookahead
        ):
            self._release()

    def speech_paused(self) -> None:
        """The speaker paused: decode what is held back now, so ``partial`` has the words."""
        if self._in_utterance and not self._decoding:
            self._release()

    def partial(self) -> str:
        if not self._decoding:
            return ""
        hyp = self._decoder.hyp()
        return hyp.hypstr if hyp is not None else ""

    def checkpoint(self) -> Transcript:
        """The final transcript of the audio so far, should no more speech come, without
        ending the utterance (sub-millisecond: the first pass's best path, which is what
        ``finish`` returns when only silence follows)."""
        if not self._in_utterance:
            return Transcript("", is_final=True)
        self.speech_paused()
        return self._transcript()

    def finish(self) -> Transcript:
        if not self._in_utterance:
            return Transcript("", is_final=True)
        if not self._decoding:
            self._release()
        self._decoder.end_utt()
        self._in_utterance = self._decoding = False
        return self._transcript()

    def reset(self) -> None:
        self._abandoned = self._abandoned or self._decoding
        self._pending.clear()
        self._in_utterance = self._decoding = False

    def close(self) -> None:
        self.reset()
        self._end_abandoned()

    def _transcript(self) -> Transcript:
        words = tuple(
            Word(
                text=_ALT_PRONUNCIATION.sub("", seg.word),
                start=seg.start_frame / _FRAMES_PER_SECOND,
                end=(seg.end_frame + 1) / _FRAMES_PER_SECOND,
            )
            for seg in self._decoder.seg() or ()  # None while it has no hypothesis yet
            if not _is_filler(seg.word)
        )
        return Transcript(" ".join(w.text for w in words), is_final=True, words=words)

    def _end_abandoned(self) -> None:
        if self._abandoned:
            self._abandoned = False
            self._decoder.end_utt()

    def _quiet_lead(self, data: bytes | bytearray) -> int:
        """Bytes of ``data`` before its first loud frame, less ``_QUIET_KEEP_MS``."""
        n = len(data) // self._frame
        if n == 0:
            return 0
        x = np.frombuffer(bytes(data), dtype="<i2", count=n * self._frame // 2)
        energy = (x.reshape(n, -1).astype(np.float64) ** 2).mean(axis=1) / 32768.0**2
        floor = max(10 ** (_QUIET_DBFS / 10), float(energy.max()) * 1e-3)
        loud = np.flatnonzero(energy >= floor)
        first = int(loud[0]) if len(loud) else n  # all quiet: wait (up to the hold limit)
        keep = _QUIET_KEEP_MS * self._frame // 10
        return max(0, first * self._frame - keep)

    def _release(self) -> None:
        data = bytes(self._pending)
        self._pending.clear()
        self._start(self._estimate_cmn(data[self._quiet_lead(data):]), data)

    def _start(self, cmn: str, data: bytes) -> None:
        # A fresh front end per utterance: its noise estimate and CMN state adapt within an
        # utterance and would otherwise carry into the next one; the mean is given.
        self._end_abandoned()
        self._decoder.reinit_feat()
        self._decoder.set_cmn(cmn)
        self._decoder.start_utt()
        self._decoding = True
        if data:
            self._feed(data)

    def _feed(self, data: bytes) -> None:
        self._decoder.process_raw(data, False, False)
        self._decoder.get_cmn(True)  # follow this utterance's running mean, not the window

    def _estimate_cmn(self, data: bytes) -> str:
        """The batch cepstral mean of ``data`` (pocketsphinx's own full_utt normalization)."""
        est = self._estimator
        est.reinit_feat()
        est.start_utt()
        if data:
            est.process_raw(data, True, True)
        cmn = est.get_cmn(False)
        est.end_utt()
        return cmn
