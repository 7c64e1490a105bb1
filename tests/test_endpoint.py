"""Endpointing: the pure state machine on scripted flags, the segmenter on odd chunkings, and the
real detector (webrtcvad + noise gate + neural VAD) on real clips and generated noise."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgevoice.audio.format import PCM16_MONO_16K, AudioChunk, AudioFormat
from edgevoice.audio.wavfile import read_audio
from edgevoice.config import VadConfig
from edgevoice.devtools.speech_labels import (
    frame_labels,
    labelled_clips,
    spoken_clips,
    synthetic_noise,
)
from edgevoice.ear.endpoint import (
    Endpointer,
    SpeechAudio,
    SpeechEnd,
    SpeechPause,
    SpeechResume,
    SpeechStart,
    UtteranceSegmenter,
)
from edgevoice.ear.gate import WARMUP_MS, NoiseGate, SpeechDetector

RATE = 16000
FRAME_MS = 30
N = RATE * FRAME_MS // 1000
# The cheap stages alone (webrtcvad + noise gate): the synthetic vowels below test the segmenter's
# mechanics, and the neural VAD rightly calls them no speech (tests/test_neural_vad.py).
CHEAP = VadConfig(neural="off")

# --------------------------------------------------------------------------- pure Endpointer


def cfg(**kw) -> VadConfig:
    base = dict(onset_ms=90, hangover_ms=300, preroll_ms=150, max_utterance_s=20.0, pause_ms=0)
    base.update(kw)
    return VadConfig(**base)


def frame(i: int, start_ms: float | None = None) -> AudioChunk:
    """Frame ``i``: every sample holds ``i``, so content can be traced back to frames."""
    start = i * FRAME_MS if start_ms is None else start_ms
    return AudioChunk(np.full(N, i, dtype=np.int16).tobytes(), PCM16_MONO_16K, float(start))


def ids(chunk: AudioChunk) -> list[int]:
    return [int(v) for v in chunk.samples().reshape(-1, N)[:, 0]]


def drive(c: VadConfig, flags: str, flush: bool = False) -> list[tuple[int, object]]:
    """Run flags ('S' speech, '.' not) through an Endpointer; (frame index, event) pairs."""
    ep = Endpointer(c, FRAME_MS)
    out = [(i, ev) for i, f in enumerate(flags) for ev in ep.process(frame(i), f == "S")]
    if flush:
        out += [(len(flags), ev) for ev in ep.flush()]
    return out


def utterances(events) -> list[dict]:
    """Group events into utterances: start, audio frame ids, end."""
    utts: list[dict] = []
    for i, ev in events:
        if isinstance(ev, SpeechStart):
            utts.append({"start": ev, "frames": [], "end": None, "at": i})
        elif isinstance(ev, SpeechAudio):
            utts[-1]["frames"] += ids(ev.chunk)
        elif isinstance(ev, SpeechPause):
            utts[-1].setdefault("pauses", []).append(ev)
        elif isinstance(ev, SpeechResume):
            utts[-1].setdefault("resumes", []).append(ev)
        else:
            utts[-1]["end"] = ev
    return utts


def test_no_utterance_without_enough_consecutive_speech():
    assert drive(cfg(), "SS.SS.S.SS." * 5, flush=True) == []


def test_onset_starts_on_its_last_frame_with_preroll_first():
    events = drive(cfg(), "." * 10 + "SSS")
    assert [i for i, _ in events] == [12, 12]
    start, audio = events[0][1], events[1][1]
    assert start == SpeechStart(150.0)  # onset run 10..12, pre-roll 150 ms = frames 5..9
    assert audio.chunk.start_ms == 150.0
    assert ids(audio.chunk) == list(range(5, 13))


def test_preroll_is_limited_by_the_start_of_the_stream():
    (_, start), (_, audio) = drive(cfg(), ".SSS")
    assert start.start_ms == 0.0
    assert ids(audio.chunk) == [0, 1, 2, 3]


def test_zero_onset_starts_on_the_first_speech_frame():
    events = drive(cfg(onset_ms=0, preroll_ms=0), "..S")
    assert [(i, type(ev)) for i, ev in events] == [(2, SpeechStart), (2, SpeechAudio)]


def test_hangover_ends_after_enough_silence_and_a_short_pause_does_not():
    hang = 10  # 300 ms
    flags = "." * 5 + "S" * 5 + "." * (hang - 1) + "SS" + "." * hang + "." * 5
    events = drive(cfg(), flags)
    (utt,) = utterances(events)
    last_speech = 5 + 5 + (hang - 1) + 1
    assert utt["end"] == SpeechEnd(frame(last_speech).end_ms, "silence")
    end_at = [i for i, ev in events if isinstance(ev, SpeechEnd)]
    assert end_at == [last_speech + hang]
    # audio: pre-roll through the hangover, each frame once, in order
    assert utt["frames"] == list(range(0, last_speech + hang + 1))


def test_a_pause_comes_once_per_silence_run_before_the_hangover():
    # 90 ms of silence marks a pause; the 300 ms hangover ends the utterance.
    flags = "SSSSS" + "..." + "SS" + ".." + "S" + "." * 10
    events = drive(cfg(pause_ms=90), flags)
    pauses = [(i, ev) for i, ev in events if isinstance(ev, SpeechPause)]
    assert [i for i, _ in pauses] == [7, 15]     # after frames 4 and 12, not after the 2-frame gap
    assert pauses[0][1] == SpeechPause(frame(4).end_ms, frame(7).end_ms)
    end_at = [i for i, ev in events if isinstance(ev, SpeechEnd)]
    assert end_at == [22] and pauses[-1][0] < end_at[0]
    assert not [ev for _, ev in drive(cfg(pause_ms=300), flags) if isinstance(ev, SpeechPause)]
    # speech after each pause but the last says the pause was not the end, before its audio
    resumes = [(i, k, ev) for k, (i, ev) in enumerate(events) if isinstance(ev, SpeechResume)]
    assert [(i, ev) for i, _, ev in resumes] == [(8, SpeechResume(frame(8).start_ms))]
    _, k, _ = resumes[0]
    assert isinstance(events[k + 1][1], SpeechAudio) and ids(events[k + 1][1].chunk) == [8]


def test_end_turn_closes_the_utterance_at_its_last_speech_and_a_new_onset_follows():
    ep = Endpointer(cfg(pause_ms=90), FRAME_MS)
    events = [ev for i, f in enumerate("SSSSS...") for ev in ep.process(frame(i), f == "S")]
    assert isinstance(events[-1], SpeechPause)
    assert ep.end_turn("turn_complete") == [SpeechEnd(frame(4).end_ms, "turn_complete")]
    assert not ep.in_speech and ep.end_turn("again") == []
    later = [ev for i, f in enumerate("SSSS", start=8) for ev in ep.process(frame(i), f == "S")]
    assert isinstance(later[0], SpeechStart) and later[0].start_ms == frame(8).start_ms


def test_end_ms_is_the_end_of_the_last_speech_frame_even_when_flags_flicker():
    events = drive(cfg(), "SSS.S..S" + "." * 10)
    (utt,) = utterances(events)
    assert utt["end"].end_ms == frame(7).end_ms


def test_max_length_cuts_and_a_new_utterance_follows_without_overlap():
    max_frames = 50  # 1.5 s
    events = drive(cfg(max_utterance_s=1.5), "." * 10 + "S" * 200, flush=True)
    utts = utterances(events)
    assert [u["end"].reason for u in utts[:-1]] == ["max_length"] * (len(utts) - 1)
    assert utts[-1]["end"].reason == "end_of_stream"
    assert all(len(u["frames"]) <= max_frames for u in utts)
    assert len(utts[0]["frames"]) == max_frames
    first_end = utts[0]["frames"][-1]
    assert utts[0]["end"].end_ms == frame(first_end).end_ms
    # the next one needs a fresh onset; its pre-roll cannot reach into audio already sent
    assert utts[1]["start"].start_ms == frame(first_end + 1).start_ms
    everything = [f for u in utts for f in u["frames"]]
    assert everything == list(range(5, 210))


def test_flush_closes_an_open_utterance_once():
    ep = Endpointer(cfg(), FRAME_MS)
    for i, f in enumerate("..SSSSS.."):
        ep.process(frame(i), f == "S")
    assert ep.in_speech
    assert ep.flush() == [SpeechEnd(frame(6).end_ms, "end_of_stream")]
    assert not ep.in_speech
    assert ep.flush() == []


def test_flush_drops_an_unfinished_onset():
    assert drive(cfg(), "..SS", flush=True) == []


def test_a_frame_of_the_wrong_length_is_refused():
    ep = Endpointer(cfg(), FRAME_MS)
    with pytest.raises(ValueError, match="30 ms frame"):
        ep.process(AudioChunk(bytes(2 * 160), PCM16_MONO_16K), True)


def test_a_gap_in_the_timeline_drops_the_preroll():
    ep = Endpointer(cfg(), FRAME_MS)
    for i in range(4):
        assert ep.process(frame(i), False) == []
    events = []
    for k in range(3):  # speech resumes 10 s later
        events += ep.process(frame(100 + k, start_ms=10_000 + k * FRAME_MS), True)
    assert events[0] == SpeechStart(10_000.0)
    assert ids(events[1].chunk) == [100, 101, 102]


@settings(max_examples=300, deadline=None)
@given(
    flags=st.lists(st.booleans(), max_size=400),
    onset=st.integers(0, 300),
    hangover=st.integers(90, 600),
    preroll=st.integers(0, 600),
    max_s=st.floats(1.0, 3.0),
    pause=st.integers(0, 700),
)
def test_endpointer_invariants(flags, onset, hangover, preroll, max_s, pause):
    c = cfg(onset_ms=onset, hangover_ms=hangover, preroll_ms=preroll, max_utterance_s=max_s,
            pause_ms=pause)
    onset_n, hang_n = max(1, -(-onset // FRAME_MS)), -(-hangover // FRAME_MS)
    pause_n = max(1, -(-pause // FRAME_MS)) if pause else 0
    text = "".join("S" if f else "." for f in flags)
    events = drive(c, text, flush=True)
    kinds = "".join({SpeechStart: "s", SpeechAudio: "a", SpeechPause: "p", SpeechResume: "r",
                     SpeechEnd: "e"}[type(ev)] for _, ev in events)
    assert re.fullmatch(r"(sa(a|p|ra)*e)*", kinds), kinds
    # a resume comes only after a pause, once, on the first speech frame after it
    paused = False
    for k in kinds:
        assert k != "r" or paused, kinds
        paused = (paused or k == "p") and k not in "rse"
    for i, ev in events:
        if isinstance(ev, SpeechResume):
            assert flags[i] and ev.at_ms == frame(i).start_ms
    pauses = [i for i, ev in events if isinstance(ev, SpeechPause)]
    if not pause_n or pause_n >= hang_n:
        assert pauses == []
    for i, ev in events:
        if isinstance(ev, SpeechPause):  # exactly pause_n silent frames after speech
            assert flags[i - pause_n] and not any(flags[i - pause_n + 1:i + 1])
            assert ev.speech_end_ms == frame(i - pause_n).end_ms
            assert ev.at_ms == frame(i).end_ms
    for i, ev in events:
        if isinstance(ev, SpeechStart):
            run = flags[i - onset_n + 1:i + 1]
            assert len(run) == onset_n and all(run), "started without a full onset run"
    utts = utterances(events)
    sent = [f for u in utts for f in u["frames"]]
    assert sent == sorted(set(sent)), "audio sent twice or out of order"
    for u in utts:
        fr = u["frames"]
        assert fr == list(range(fr[0], fr[-1] + 1)), "gap inside an utterance"
        assert u["start"].start_ms == frame(fr[0]).start_ms
        assert len(fr) <= int(max_s * 1000 // FRAME_MS)
        last_speech = max(i for i in fr if flags[i])
        assert u["end"].end_ms == frame(last_speech).end_ms
        if u["end"].reason == "silence":
            assert fr[-1] - last_speech == hang_n
        if 0 < pause_n < hang_n:  # every long enough silence run inside it has its pause
            expected = [j for j in fr if j - pause_n >= u["at"] and flags[j - pause_n]
                        and not any(flags[j - pause_n + 1:j + 1])]
            assert [p.at_ms for p in u.get("pauses", [])] == [frame(j).end_ms for j in expected]
            assert not any(flags[last_speech + 1:fr[-1] + 1])
    # every frame of a run of >= onset speech frames is in some utterance
    covered = set(sent)
    i = 0
    while i < len(flags):
        j = i
        while j < len(flags) and flags[j]:
            j += 1
        if j - i >= onset_n:
            assert set(range(i, j)) <= covered
        i = max(j, i + 1)


# --------------------------------------------------------------------------- segmenter


def voiced(seconds: float, f0: float = 140.0, level: float = 8000.0) -> np.ndarray:
    """A vowel-like harmonic signal with a gliding pitch (webrtcvad and the gate call it speech)."""
    t = np.arange(int(seconds * RATE)) / RATE
    phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.15 * np.sin(2 * np.pi * 1.3 * t))) / RATE
    x = sum(np.sin(k * phase) / k for k in range(1, 40) if k * f0 < 7000)
    x = x * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
    return x / np.abs(x).max() * level


def quiet(seconds: float, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(int(seconds * RATE)) * 3.0  # ~ -80 dBFS


BURSTS = [(0.6, 1.8), (3.0, 3.9)]


@pytest.fixture(scope="module")
def synthetic_stream() -> AudioChunk:
    x = np.concatenate([quiet(0.6, 1), voiced(1.2), quiet(1.2, 2), voiced(0.9, 180.0),
                        quiet(0.9, 3)])
    return AudioChunk.from_samples(np.round(x).astype(np.int16), RATE)


def feed_in(seg: UtteranceSegmenter, audio: AudioChunk, sizes: list[int]) -> list:
    """Feed ``audio`` cut at the given byte sizes (cycled), then flush."""
    events, offset, k = [], 0, 0
    while offset < len(audio.data):
        size = sizes[k % len(sizes)] if sizes else len(audio.data)
        k += 1
        piece = audio.data[offset:offset + size]
        events += seg.feed(AudioChunk(piece, audio.format,
                                      audio.start_ms + audio.format.ms_for_bytes(offset)))
        offset += size
    return events + list(seg.flush())


def test_segmenter_finds_the_voiced_bursts(synthetic_stream):
    events = feed_in(UtteranceSegmenter(CHEAP), synthetic_stream, [960])
    starts = [ev.start_ms for ev in events if isinstance(ev, SpeechStart)]
    ends = [ev for ev in events if isinstance(ev, SpeechEnd)]
    assert len(starts) == len(ends) == len(BURSTS)
    for (a, b), s, e in zip(BURSTS, starts, ends, strict=True):
        assert a * 1000 - 400 <= s <= a * 1000
        assert abs(e.end_ms - b * 1000) <= 60
        assert e.reason == "silence"


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sizes=st.lists(st.integers(1, 2500).map(lambda n: 2 * n), min_size=1, max_size=20))
def test_chunk_sizes_do_not_change_the_events(synthetic_stream, sizes):
    reference = feed_in(UtteranceSegmenter(CHEAP), synthetic_stream, [960])
    assert sum(isinstance(ev, SpeechStart) for ev in reference) == len(BURSTS)
    assert feed_in(UtteranceSegmenter(CHEAP), synthetic_stream, sizes) == reference


def test_timestamps_follow_the_stream_timeline(synthetic_stream):
    base = feed_in(UtteranceSegmenter(CHEAP), synthetic_stream, [1000])
    later = dataclasses.replace(synthetic_stream, start_ms=12_345.0)
    shifted = feed_in(UtteranceSegmenter(CHEAP), later, [1000])
    assert [ev.start_ms + 12_345.0 for ev in base if isinstance(ev, SpeechStart)] == \
        [ev.start_ms for ev in shifted if isinstance(ev, SpeechStart)]
    assert [ev.end_ms + 12_345.0 for ev in base if isinstance(ev, SpeechEnd)] == \
        [ev.end_ms for ev in shifted if isinstance(ev, SpeechEnd)]


def test_a_forward_gap_moves_the_timeline(synthetic_stream):
    seg = UtteranceSegmenter(CHEAP)
    half = len(synthetic_stream.data) // 2 // 960 * 960 + 100  # mid-frame cut
    list(seg.feed(AudioChunk(synthetic_stream.data[:half], PCM16_MONO_16K, 0.0)))
    events = list(seg.feed(AudioChunk(synthetic_stream.data[half:], PCM16_MONO_16K, 60_000.0)))
    events += seg.flush()
    audio = [ev.chunk for ev in events if isinstance(ev, SpeechAudio)]
    assert audio and all(c.start_ms >= 60_000.0 for c in audio)
    assert all(a.end_ms == b.start_ms for a, b in zip(audio, audio[1:], strict=False))


def test_feed_works_without_iterating_and_flush_closes(synthetic_stream):
    seg = UtteranceSegmenter(CHEAP)
    cut = PCM16_MONO_16K.bytes_for_ms(1500)  # inside the first burst
    seg.feed(AudioChunk(synthetic_stream.data[:cut], PCM16_MONO_16K))  # result not consumed
    assert seg.in_speech
    (end,) = seg.flush()
    assert end.reason == "end_of_stream" and not seg.in_speech
    # a new stream starts a new timeline
    events = list(seg.feed(AudioChunk(synthetic_stream.data, PCM16_MONO_16K, 500.0)))
    assert isinstance(events[0], SpeechStart) and events[0].start_ms >= 500.0


def test_reset_drops_an_open_utterance_silently(synthetic_stream):
    seg = UtteranceSegmenter(CHEAP)
    seg.feed(AudioChunk(synthetic_stream.data[: PCM16_MONO_16K.bytes_for_ms(1500)]))
    seg.reset()
    assert not seg.in_speech and list(seg.flush()) == []


def test_format_is_checked():
    with pytest.raises(ValueError, match="mono int16"):
        UtteranceSegmenter(VadConfig(), AudioFormat(16000, channels=2))
    with pytest.raises(ValueError, match="rate"):
        UtteranceSegmenter(VadConfig(), AudioFormat(22050))
    seg = UtteranceSegmenter(CHEAP)
    with pytest.raises(ValueError, match="format"):
        seg.feed(AudioChunk(bytes(960), AudioFormat(8000)))


# --------------------------------------------------------------------------- detector and gate


def test_detector_checks_the_frame_length():
    with pytest.raises(ValueError, match="960 bytes"):
        SpeechDetector(VadConfig()).is_speech(bytes(640))


def test_detector_ignores_the_warmup_of_webrtcvad():
    x = np.round(voiced(1.0)).astype(np.int16)
    det = SpeechDetector(CHEAP)
    decisions = [det.is_speech(x[i * N:(i + 1) * N].tobytes()) for i in range(len(x) // N)]
    warm = -(-WARMUP_MS // FRAME_MS)
    assert not any(decisions[:warm])
    assert all(decisions[warm:])


def frames_of(x: np.ndarray) -> list[np.ndarray]:
    return [x[i * N:(i + 1) * N] for i in range(len(x) // N)]


@pytest.mark.parametrize("kind", ["white", "pink", "brown"])
def test_flatness_is_high_for_noise_of_any_colour(kind):
    gate = NoiseGate(-55.0, 0.45, N, RATE)
    flat = [gate.features(f).flatness for f in frames_of(synthetic_noise(kind, 3.0, -30.0))]
    assert 0.5 < float(np.median(flat)) < 0.62
    assert min(flat) > 0.45


def test_flatness_is_low_for_voiced_sound_and_the_energy_floor_holds():
    gate = NoiseGate(-55.0, 0.45, N, RATE)
    loud = frames_of(np.round(voiced(1.0, level=8000)).astype(np.int16))
    faint = frames_of(np.round(voiced(1.0, level=20)).astype(np.int16))  # ~ -67 dBFS
    assert max(gate.features(f).flatness for f in loud) < 0.2
    assert all(gate.passes(f) for f in loud)
    assert not any(gate.passes(f) for f in faint)


def segment_count(c: VadConfig, x: np.ndarray) -> int:
    seg = UtteranceSegmenter(c)
    events = list(seg.feed(AudioChunk.from_samples(x, RATE))) + list(seg.flush())
    return sum(isinstance(ev, SpeechStart) for ev in events)


def without_gate(c: VadConfig) -> VadConfig:
    """webrtcvad alone: no noise gate, no neural VAD."""
    return dataclasses.replace(c, gate_min_dbfs=-100.0, gate_max_flatness=1.0, neural="off")


@pytest.mark.parametrize("kind", ["white", "pink", "brown"])
@pytest.mark.parametrize("level", [-50.0, -35.0, -20.0, -10.0])
def test_generated_noise_is_never_an_utterance(kind, level):
    assert segment_count(VadConfig(), synthetic_noise(kind, 6.0, level, seed=int(-level))) == 0


def test_the_gate_is_what_keeps_loud_noise_out():
    x = synthetic_noise("white", 3.0, -20.0)
    gated, alone = SpeechDetector(CHEAP), SpeechDetector(without_gate(VadConfig()))
    fr = [f.tobytes() for f in frames_of(x)]
    assert np.mean([alone.is_speech(f) for f in fr]) > 0.5  # webrtcvad alone: "speech"
    assert not any(gated.is_speech(f) for f in fr)
    assert segment_count(without_gate(VadConfig()), x) >= 1


# --------------------------------------------------------------------------- real clips


def test_real_noise_clip_is_never_an_utterance(speech_folder):
    x = read_audio(speech_folder / "koala__noise.wav").samples()
    assert segment_count(VadConfig(), x) == 0
    assert segment_count(without_gate(VadConfig()), x) >= 1  # what webrtcvad alone does


def real_utterances(path, c: VadConfig | None = None, noise=None, snr_db=None, spans=()):
    x = read_audio(path).samples()
    if noise is not None:
        x = mixed(x, noise, spans, snr_db)
    seg = UtteranceSegmenter(c or VadConfig())
    starts, out = {}, []
    for ev in list(seg.feed(AudioChunk.from_samples(x, RATE))) + list(seg.flush()):
        if isinstance(ev, SpeechStart):
            starts = ev.start_ms / 1000
        elif isinstance(ev, SpeechEnd):
            out.append((starts, ev.end_ms / 1000))
    return x, out


def mixed(x: np.ndarray, noise: np.ndarray, spans, snr_db: float) -> np.ndarray:
    s = x.astype(np.float64)
    p_speech = np.mean(s[frame_labels(spans, len(s), 1 / RATE)] ** 2)
    n = np.resize(noise.astype(np.float64), len(s))
    n *= np.sqrt(p_speech / np.mean(n**2) / 10 ** (snr_db / 10))
    return np.clip(np.round(s + n), -32768, 32767).astype(np.int16)


def check_coverage(lc, x, utts, min_recall=0.9, min_precision=0.8) -> list[str]:
    """Problems with how ``utts`` cover the labelled spans (the tolerances of pocketsphinx's own
    endpointer test: 0.3 s at the start, 0.8 s at the end)."""
    problems = []
    name = lc.path.name
    r0, r1 = lc.region
    for a, b in lc.spans:
        if not any(s <= a + 0.3 and e > a for s, e in utts):
            problems.append(f"{name}: no utterance starts by {a + 0.3:.2f} s")
        if not any(s < b and e >= b - 0.8 for s, e in utts):
            problems.append(f"{name}: no utterance reaches {b - 0.8:.2f} s")
    preroll = VadConfig().preroll_ms / 1000
    for s, e in utts:
        if s + preroll < r1 and not any(s < b and e > a for a, b in lc.spans):
            problems.append(f"{name}: utterance {s:.2f}-{e:.2f} s has no labelled speech")
    n = int(len(x) / RATE * 100)
    ref = frame_labels(lc.spans, n, 0.01)
    pred = frame_labels(utts, n, 0.01)
    inside = (np.arange(n) + 0.5) * 0.01 < r1
    tp = np.sum(ref & pred & inside)
    recall, precision = tp / max(np.sum(ref & inside), 1), tp / max(np.sum(pred & inside), 1)
    if recall < min_recall:
        problems.append(f"{name}: frame recall {recall:.3f} < {min_recall}")
    if precision < min_precision:
        problems.append(f"{name}: frame precision {precision:.3f} < {min_precision}")
    return problems


def test_labelled_speech_is_covered(speech_folder):
    clips = labelled_clips(speech_folder)
    assert len(clips) >= 6, "expected the labelled clips of shared/speech/MANIFEST.tsv"
    problems = []
    for lc in clips:
        x, utts = real_utterances(lc.path)
        problems += check_coverage(lc, x, utts)
    assert not problems, "\n".join(problems)


def test_every_speech_clip_gives_an_utterance(speech_folder):
    missed = [c.path.name for c in spoken_clips(speech_folder) if not real_utterances(c.path)[1]]
    assert not missed


def test_speech_in_real_noise_is_still_found(speech_folder):
    noise = read_audio(speech_folder / "koala__noise.wav").samples()
    (lc,) = [c for c in labelled_clips(speech_folder) if "0870" in c.path.name]
    x, utts = real_utterances(lc.path, noise=noise, snr_db=10.0, spans=lc.spans)
    assert not check_coverage(lc, x, utts, min_recall=0.85)
