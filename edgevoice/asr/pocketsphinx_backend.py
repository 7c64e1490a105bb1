"""pocketsphinx backend: the zero-download default, using the en-US model bundled in its wheel."""

from __future__ import annotations

import logging
import re

from edgevoice.asr.protocol import Transcript, Word
from edgevoice.audio.format import AudioChunk

log = logging.getLogger(__name__)

_FRAMES_PER_SECOND = 100  # pocketsphinx's default frame rate (10 ms frames)
_ALT_PRONUNCIATION = re.compile(r"\(\d+\)$")


def _is_filler(word: str) -> bool:
    return word.startswith(("<", "[", "++")) or word in ("", "<sil>")


class PocketsphinxRecognizer:
    """Streams audio into a pocketsphinx ``Decoder``; partials from ``hyp()``."""

    name = "pocketsphinx"

    def __init__(self, sample_rate: int = 16000) -> None:
        import pocketsphinx

        self.sample_rate = sample_rate
        # No second (flat-lexicon) pass: it made finish() take ~1 s on a 20 s utterance, all of
        # it after the user stopped talking, and measured no better here (benchmarks/asr_eval.py).
        # The lattice best path stays: median 17 ms per utterance on our clips (0.5 s on 14 s of
        # speech) for streaming WER 0.256 instead of 0.277.
        self._decoder = pocketsphinx.Decoder(samprate=sample_rate, loglevel="FATAL", fwdflat=False)
        self._in_utterance = False

    def accept(self, chunk: AudioChunk) -> None:
        if chunk.format.rate != self.sample_rate or chunk.format.channels != 1:
            raise ValueError(f"pocketsphinx expects {self.sample_rate} Hz mono, got {chunk.format}")
        if not self._in_utterance:
            self._decoder.start_utt()
            self._in_utterance = True
        self._decoder.process_raw(chunk.data, False, False)

    def partial(self) -> str:
        if not self._in_utterance:
            return ""
        hyp = self._decoder.hyp()
        return hyp.hypstr if hyp is not None else ""

    def finish(self) -> Transcript:
        if not self._in_utterance:
            return Transcript("", is_final=True)
        self._decoder.end_utt()
        self._in_utterance = False
        words = tuple(
            Word(
                text=_ALT_PRONUNCIATION.sub("", seg.word),
                start=seg.start_frame / _FRAMES_PER_SECOND,
                end=(seg.end_frame + 1) / _FRAMES_PER_SECOND,
            )
            for seg in self._decoder.seg()
            if not _is_filler(seg.word)
        )
        return Transcript(" ".join(w.text for w in words), is_final=True, words=words)

    def reset(self) -> None:
        if self._in_utterance:
            self._decoder.end_utt()
            self._in_utterance = False

    def close(self) -> None:
        self.reset()
