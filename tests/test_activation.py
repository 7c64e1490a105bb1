"""Activation modes on real speech: push-to-talk windows and wake-phrase gating."""

from __future__ import annotations

import signal
import time

import pytest
from _daemon import Daemon, compose

from edgevoice.asr.pocketsphinx_backend import PocketsphinxRecognizer
from edgevoice.audio.wavfile import iter_chunks, read_audio
from edgevoice.config import ActivationConfig, Config
from edgevoice.ear.activation import ActivatedTranscriber, Activation, make_spotter
from edgevoice.ear.transcriber import Utterance
from edgevoice.errors import ConfigError
from edgevoice.evaluation import speech_dir

SPEECH = speech_dir()
pytestmark = pytest.mark.skipif(SPEECH is None, reason="speech clips not found")
VAD = Config().vad


def _run(transcriber: ActivatedTranscriber, wav, actions: dict[float, str] | None = None):
    """Feed ``wav`` in 30 ms blocks; ``actions`` maps a time in s to "press" / "release"."""
    pending = sorted((actions or {}).items())
    events = []
    for chunk in iter_chunks(read_audio(wav, 16000), 30):
        while pending and pending[0][0] * 1000 <= chunk.start_ms:
            getattr(transcriber, pending.pop(0)[1])()
        events += transcriber.feed(chunk)
    return events + list(transcriber.flush())


def test_push_to_talk_takes_only_the_window_and_ends_at_release(tmp_path):
    wav = tmp_path / "in.wav"
    (a0, a1), (b0, b1), _ = compose([(SPEECH / "pocketsphinx__goforward.wav", 2.0),
                                     (SPEECH / "speechbrain__spk1_snt1.wav", 3.0),
                                     (None, 0.0)], wav)
    ptt = ActivatedTranscriber(VAD, PocketsphinxRecognizer(), 250,
                               ActivationConfig(mode="push_to_talk"))
    release = b1 + 0.3
    events = _run(ptt, wav, {b0 - 0.3: "press", release: "release"})
    utterances = [e for e in events if isinstance(e, Utterance)]
    assert len(utterances) == 1
    utt = utterances[0]
    assert "child" in utt.text or "dog" in utt.text
    assert "forward" not in utt.text and utt.reason == "push_to_talk"
    assert utt.end_ms == pytest.approx(release * 1000, abs=31)  # no hangover wait
    flags = [(e.active, e.reason) for e in events if isinstance(e, Activation)]
    assert flags == [(True, "push-to-talk pressed"), (False, "push-to-talk released")]
    # nothing pressed: nothing heard
    assert not [e for e in _run(ActivatedTranscriber(
        VAD, PocketsphinxRecognizer(), 250, ActivationConfig(mode="push_to_talk")), wav)
        if isinstance(e, Utterance)]


def _wake(phrase: str = "hey mycroft", threshold: float = -20.0) -> ActivatedTranscriber:
    cfg = ActivationConfig(mode="wake_word", wake_phrase=phrase, wake_threshold=threshold)
    return ActivatedTranscriber(VAD, PocketsphinxRecognizer(), 250, cfg, make_spotter(cfg))


def test_wake_word_gates_utterances(tmp_path):
    plain = tmp_path / "plain.wav"
    compose([(SPEECH / "pocketsphinx__goforward.wav", 1.5),
             (SPEECH / "speechbrain__spk1_snt1.wav", 1.5),
             (SPEECH / "speechbrain__spk2_snt2.wav", 1.0)], plain)
    events = _run(_wake(), plain)
    assert not [e for e in events if isinstance(e, (Utterance, Activation))]

    woken = tmp_path / "woken.wav"
    compose([(SPEECH / "voice2json__hey_mycroft_wakeword.wav", 0.8),
             (SPEECH / "pocketsphinx__goforward.wav", 1.5),
             (SPEECH / "speechbrain__spk1_snt1.wav", 1.5)], woken)
    events = _run(_wake(), woken)
    utterances = [e for e in events if isinstance(e, Utterance)]
    assert len(utterances) == 1 and "forward" in utterances[0].text  # the one after the phrase
    flags = [(e.active, e.reason) for e in events if isinstance(e, Activation)]
    assert flags == [(True, "wake phrase 'hey mycroft'"), (False, "request heard")]


def test_wake_phrase_outside_the_dictionary_is_a_config_error():
    with pytest.raises(ConfigError, match="edgevoice not in the pronunciation dictionary"):
        make_spotter(ActivationConfig(mode="wake_word", wake_phrase="hey edgevoice"))
    cfg = ActivationConfig(mode="wake_word", wake_phrase="hey edgy",
                           wake_pronunciations="edgy: EH JH IY")
    assert make_spotter(cfg).phrase == "hey edgy"


def test_daemon_push_to_talk_by_control_api_and_signal(tmp_path):
    """SIGUSR1 presses, `ctl ptt-stop` releases: only the speech inside becomes a turn."""
    wav = tmp_path / "in.wav"
    spans = compose([(None, 2.0), (SPEECH / "pocketsphinx__goforward.wav", 4.0),
                     (SPEECH / "speechbrain__spk1_snt1.wav", 4.0)], wav)
    (b0, b1) = spans[2]
    # stale_s: a loaded machine must not turn this push-to-talk check into a stale-turn one
    daemon = Daemon(wav, "activation:\n  mode: push_to_talk\nagent:\n  stale_s: 60\n")
    try:
        daemon.wait_for(lambda e: e.get("state") == "listening")
        t0 = time.monotonic()
        time.sleep(max(0.0, b0 - 1.0 - (time.monotonic() - t0)))
        daemon.proc.send_signal(signal.SIGUSR1)
        time.sleep(max(0.0, b1 + 1.0 - (time.monotonic() - t0)))
        out = daemon.ctl("ptt-stop")
        assert out.returncode == 0, out.stderr
        code, err = daemon.finish(60)
    finally:
        daemon.proc.kill()
    assert code == 0, err
    while not daemon.events.empty():
        event = daemon.events.get()
        if event is not None:
            daemon.seen.append(event)
    transcripts = [e["text"] for e in daemon.seen if e["event"] == "transcript"]
    assert len(transcripts) == 1 and ("child" in transcripts[0] or "dog" in transcripts[0])
    assert [e["active"] for e in daemon.seen if e["event"] == "activation"] == [True, False]
    assert [e for e in daemon.seen if e["event"] == "turn"], [
        e for e in daemon.seen if e["event"] != "partial"]
