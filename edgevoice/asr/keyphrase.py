"""Wake-phrase spotting with pocketsphinx's keyphrase search and its bundled en-US model.

The spotter sees only the audio the endpointer calls speech (one decoder utterance per
endpointed utterance), so silence costs nothing and the decoder's state never grows unbounded.
"""

from __future__ import annotations

import re

from edgevoice.errors import ConfigError

# Words a wake phrase is likely to use that the bundled dictionary lacks.
BUILTIN_PRONUNCIATIONS = {"mycroft": "M AY K R AO F T"}

_SEARCH = "wake"


def parse_pronunciations(text: str | None) -> dict[str, str]:
    """``"jeeves: JH IY V Z; edgy: EH JH IY"`` -> ``{"jeeves": "JH IY V Z", ...}``."""
    out: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in (text or "").split(";"))):
        word, sep, phones = item.partition(":")
        if not sep or not word.strip() or not phones.split():
            raise ConfigError(f"`activation.wake_pronunciations`: {item!r} is not `word: PHONES`")
        out[word.strip().lower()] = " ".join(phones.split()).upper()
    return out


class PocketsphinxSpotter:
    """``start()``, ``process(pcm) -> bool`` per block (True once the phrase was heard), ``end()``.

    Not thread-safe: built anywhere, then used by one thread at a time (the ear).
    """

    def __init__(self, phrase: str, threshold_log10: float, pronunciations: str | None = None,
                 sample_rate: int = 16000) -> None:
        import pocketsphinx

        words = re.findall(r"[a-z']+", phrase.lower())
        if not words:
            raise ConfigError("`activation.wake_phrase` is empty")
        self.phrase = " ".join(words)
        self.threshold = 10.0 ** threshold_log10
        extra = {**BUILTIN_PRONUNCIATIONS, **parse_pronunciations(pronunciations)}
        # Start from the full dictionary but no language model: the LM is 30 MB we don't need.
        self._decoder = pocketsphinx.Decoder(samprate=sample_rate, loglevel="FATAL", lm=None,
                                             kws_threshold=self.threshold)
        missing = []
        for word in words:
            if self._decoder.lookup_word(word) is not None:
                continue
            if word in extra:
                try:
                    self._decoder.add_word(word, extra[word], True)
                except Exception:
                    raise ConfigError(f"`activation.wake_pronunciations`: bad phones for {word!r} "
                                      f"({extra[word]!r})") from None
            else:
                missing.append(word)
        if missing:
            raise ConfigError(
                f"`activation.wake_phrase`: {', '.join(missing)} not in the pronunciation "
                f"dictionary; add it to `activation.wake_pronunciations` (e.g. "
                f"`{missing[0]}: <CMU phones>`) or choose another phrase")
        self._decoder.add_keyphrase(_SEARCH, self.phrase)
        self._decoder.activate_search(_SEARCH)
        self._in_utterance = False

    def start(self) -> None:
        if self._in_utterance:
            self._decoder.end_utt()
        self._decoder.start_utt()
        self._in_utterance = True

    def process(self, pcm: bytes) -> bool:
        if not self._in_utterance:
            self.start()
        self._decoder.process_raw(pcm, False, False)
        if self._decoder.hyp() is None:
            return False
        self.start()  # restart: a phrase is reported once
        return True

    def end(self) -> None:
        if self._in_utterance:
            self._decoder.end_utt()
            self._in_utterance = False
