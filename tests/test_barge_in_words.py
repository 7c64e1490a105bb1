"""A barge-in's words for the recognizer (edgevoice/ear/barge_in_words.py, linear_echo.py):
simulated rooms (devtools.room) with real clips as the answer and as the person talking over it,
through the real AEC3 source and, for the words, the real streaming transcriber."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("pywebrtc_audio", reason="pywebrtc-audio is not installed")

from echo_fakes import ArrayMic, ArraySpeaker  # noqa: E402

from edgevoice.audio.format import AudioChunk  # noqa: E402
from edgevoice.audio.resample import resample  # noqa: E402
from edgevoice.config import VadConfig  # noqa: E402
from edgevoice.devtools.pulse import read_wav  # noqa: E402
from edgevoice.devtools.room import RoomSetting, mix  # noqa: E402
from edgevoice.ear import echo  # noqa: E402
from edgevoice.ear.barge_in_words import BargeInWords  # noqa: E402
from edgevoice.ear.linear_echo import LinearEchoFilter  # noqa: E402
from edgevoice.ear.transcriber import StreamingTranscriber, Utterance  # noqa: E402
from edgevoice.evaluation import word_errors  # noqa: E402

RATE = 16000
FAR_CLIP = "pocketsphinx__librivox_sense_and_sensibility_0870.wav"
NEAR_CLIP = "speechbrain__spk1_snt1.wav"
NEAR_TEXT = "the child almost hurt the small dog"
ROOMS = [RoomSetting(60, -9),
         RoomSetting(150, -20, reflections=((35, -4), (90, -9), (140, -14)))]


def _clip(folder, name: str) -> np.ndarray:
    samples, r = read_wav(folder / name)
    return resample(samples, r, RATE) if r != RATE else samples


def _db(x: np.ndarray) -> float:
    x = np.asarray(x, dtype=np.float64)
    return float(10 * np.log10(np.mean(x * x) + 1e-9))


@pytest.mark.parametrize("room", ROOMS, ids=lambda r: r.label())
def test_the_filter_learns_the_echo_and_leaves_a_talker_whole(speech_folder, room):
    far = _clip(speech_folder, FAR_CLIP)
    talker = _clip(speech_folder, NEAR_CLIP)
    echo_only = room.apply(far, RATE)
    half = 4 * RATE
    f = LinearEchoFilter(RATE)
    for _ in range(2):
        f.restart()
        f.fit(mix(echo_only[:half]), far[:half])
    # the rest of the answer, with a person talking over it from 0.5 s on
    near = np.zeros(len(far) - half)
    at, n = RATE // 2, min(len(talker), len(far) - half - RATE // 2)
    near[at:at + n] = talker[:n]
    f.restart()
    f.run(mix(echo_only[half - 4000:half]), far[half - 4000:half])  # the far end's history
    out = f.run(mix(echo_only[half:], near), far[half:]).astype(np.float64)
    span = slice(at, at + n // 160 * 160)
    echo_part = slice(0, at)
    erle = _db(echo_only[half:][echo_part]) - _db(out[echo_part])
    # the reverberant room's last reflection (290 ms) lies beyond the 250 ms the filter learns
    assert erle >= (15.0 if room.delay_ms < 100 else 10.0), f"{room.label()}: ERLE {erle:.1f} dB"
    # what is left over the talker is them, not suppressed: the difference is far below them
    kept = _db(near[span]) - _db(out[span] - near[span])
    assert kept >= 10.0, f"{room.label()}: talker over what is left {kept:.1f} dB"
    assert f.erle_db >= 10.0  # over the whole fit, from nothing


def _transcribe(near: np.ndarray, far: np.ndarray, words: bool) -> tuple[str, BargeInWords]:
    from edgevoice.asr.pocketsphinx_backend import PocketsphinxRecognizer

    mic = ArrayMic(near)
    source = echo.EchoCancelledSource(mic, ArraySpeaker(mic, far))
    recognizer = PocketsphinxRecognizer()
    transcriber = StreamingTranscriber(VadConfig(), recognizer)
    if words:
        transcriber.words_audio = source.words.audio
    texts = []
    for _ in range(len(near) // 480):
        for event in transcriber.feed(source.read(0.1)):
            if isinstance(event, Utterance):
                texts.append(event.text)
    texts += [e.text for e in transcriber.flush() if isinstance(e, Utterance)]
    recognizer.close()
    return " ".join(texts), source.words


@pytest.mark.parametrize("room", ROOMS, ids=lambda r: r.label())
def test_a_barge_in_is_recognized_from_its_first_words(speech_folder, room):
    # The answer plays for 3 s (the canceller converges), a person talks over it, and the
    # speaker stops 0.4 s after they began (a barge-in). AEC3's output loses their first words;
    # the words' view gives the recognizer the microphone minus the echo from where they began.
    far = _clip(speech_folder, FAR_CLIP)
    talker = _clip(speech_folder, NEAR_CLIP)
    at = 3 * RATE
    onset = at + int(np.argmax(np.abs(talker) > 300))
    played = far.copy()
    played[onset + int(0.4 * RATE):] = 0
    near = np.zeros(len(far))
    n = min(len(talker), len(far) - at)
    near[at:at + n] = talker[:n]
    mic = mix(room.apply(played, RATE), near)
    aec3, _ = _transcribe(mic, played, words=False)
    heard, words = _transcribe(mic, played, words=True)
    alone, _ = _transcribe(mix(near), np.zeros(len(far), np.int16), words=True)
    errors = {k: word_errors(NEAR_TEXT, t)[0] for k, t in
              (("aec3", aec3), ("words", heard), ("alone", alone))}
    assert words.fits == 1  # one barge-in, one fit
    assert errors["words"] <= errors["alone"] + 1, (heard, alone)
    assert errors["words"] < errors["aec3"], (heard, aec3)


def test_with_nothing_played_the_words_are_the_ones_given_and_nothing_is_fitted():
    words = BargeInWords(RATE)
    rng = np.random.default_rng(1)
    for i in range(100):
        x = rng.normal(0, 1000, 480).astype(np.int16)
        words.add(i * 480, x, np.zeros(480, np.int16), x)
    chunk = AudioChunk.from_samples(np.zeros(480, np.int16), RATE, 99 * 30.0)
    assert words.audio(chunk, True) is chunk
    later = AudioChunk.from_samples(np.zeros(480, np.int16), RATE, 100 * 30.0)
    assert words.audio(later, False) is later  # not held yet: as it came
    assert words.fits == 0


class _Recorder:
    """A recognizer that keeps what it is given (the transcriber's side of the hook)."""

    name, sample_rate = "recorder", RATE

    def __init__(self) -> None:
        self.chunks: list[AudioChunk] = []

    def accept(self, chunk: AudioChunk) -> None:
        self.chunks.append(chunk)

    def partial(self) -> str:
        return ""

    def finish(self):
        from edgevoice.asr.protocol import Transcript

        return Transcript("words" if self.chunks else "", [])

    def reset(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_the_transcriber_asks_the_words_view_for_every_chunk_first_ones_marked(speech_folder):
    talker = _clip(speech_folder, NEAR_CLIP)
    gap = np.zeros(2 * RATE, np.int16)
    audio = np.concatenate([gap, talker, gap, talker, gap])
    rec = _Recorder()
    transcriber = StreamingTranscriber(VadConfig(pause_ms=0), rec, finals_at_pauses=False)
    calls: list[bool] = []
    lead = AudioChunk.from_samples(np.ones(160, np.int16), RATE, 0.0)

    def view(chunk: AudioChunk, first: bool) -> AudioChunk:
        calls.append(first)
        return lead if first else chunk

    transcriber.words_audio = view
    utterances = 0
    for i in range(0, len(audio) // 480 * 480, 480):
        chunk = AudioChunk.from_samples(audio[i:i + 480], RATE, i * 1000 / RATE)
        utterances += sum(isinstance(e, Utterance) for e in transcriber.feed(chunk))
    assert utterances == 2
    assert calls.count(True) == 2 and calls[0] is True
    assert len(calls) == len(rec.chunks)
    assert sum(c is lead for c in rec.chunks) == 2  # what the view gave is what was heard
