"""`edgevoice bench latency`: the analysis on synthetic signals with known offsets, the method's
validation for real (an echo with known delays on a private PulseAudio bus), and short real runs
of the agent on the tiny model (the structure of --json and the PNG, never speed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from edgevoice.errors import UserError
from edgevoice.latency import analysis as an
from edgevoice.latency import report
from edgevoice.latency.clips import find_clips
from edgevoice.latency.rig import check_tools

R = an.RATE
THR = an.audible_threshold(0.0)


def tone(seconds: float, freq: float = 440.0, dbfs: float = -12.0) -> np.ndarray:
    t = np.arange(int(seconds * R)) / R
    return (an.dbfs_to_rms(dbfs) * np.sqrt(2) * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def noise(seconds: float, dbfs: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(rng.standard_normal(int(seconds * R)) * an.dbfs_to_rms(dbfs),
                   -32768, 32767).astype(np.int16)


def place(total_s: float, parts: list[tuple[float, np.ndarray]], base=None) -> np.ndarray:
    out = (np.zeros(int(total_s * R), np.int32) if base is None else base.astype(np.int32))
    for at_s, x in parts:
        i = int(round(at_s * R))
        out[i:i + len(x)] += x
    return np.clip(out, -32768, 32767).astype(np.int16)


# -- onsets, silences, alignment --------------------------------------------------------------


@pytest.mark.parametrize("at_s", [0.1, 0.5, 1.2345])
def test_first_audible_finds_a_tone_to_the_sample(at_s):
    x = place(2.0, [(at_s, tone(0.3, 1000, -20))])
    onset = an.first_audible(x, THR)
    assert onset is not None and abs(onset - int(round(at_s * R))) <= 24  # 0.5 ms


def test_first_audible_over_a_noise_floor_and_not_on_a_click():
    floor = noise(3.0, -50)
    click = np.full(24, 20000, np.int16)  # 0.5 ms
    x = place(3.0, [(0.5, click), (1.5, tone(0.5, 300, -20))], base=floor)
    thr = an.audible_threshold(an.noise_floor(x[: R // 2]))
    assert thr > an.dbfs_to_rms(-50)
    onset = an.first_audible(x, thr)
    assert onset is not None and abs(onset - int(1.5 * R)) <= int(0.002 * R)


def test_first_audible_window_and_nothing():
    x = place(2.0, [(0.2, tone(0.2)), (1.0, tone(0.2))])
    assert abs(an.first_audible(x, THR, start=int(0.5 * R)) - R) <= 24
    assert an.first_audible(x, THR, start=int(0.5 * R), stop=int(0.9 * R)) is None
    assert an.first_audible(np.zeros(R, np.int16), THR) is None


def test_silent_from_the_end_of_a_sound():
    x = place(3.0, [(0.5, tone(1.0, 500, -20)), (2.2, tone(0.3))])
    quiet = an.silent_from(x, THR, start=int(0.7 * R))
    assert quiet is not None and abs(quiet - int(1.5 * R)) <= int(0.001 * R)
    # a 100 ms gap is not silence when 300 ms are asked for
    y = place(3.0, [(0.5, tone(0.5)), (1.1, tone(0.5))])
    assert abs(an.silent_from(y, THR, start=int(0.6 * R)) - int(1.6 * R)) <= int(0.001 * R)
    assert an.silent_from(x, THR, start=int(0.5 * R), stop=int(1.4 * R)) is None
    assert an.silent_from(x, THR, start=int(1.6 * R)) == int(1.6 * R)


def test_locate_a_clip_at_a_known_offset_in_noise():
    clip = np.concatenate([noise(0.2, -60, 1), tone(0.3, 220, -15), noise(0.4, -25, 2)])
    sig = place(5.0, [(2.345, clip)], base=noise(5.0, -70, 3))
    at, peak = an.locate(clip, sig, int(1.0 * R), int(3.0 * R))
    assert at == int(round(2.345 * R)) and peak > 0.99
    at, peak = an.locate(clip, sig, int(3.0 * R), int(4.0 * R))  # not in that window
    assert peak < 0.5


def test_xcorr_lag_is_the_delay():
    a = noise(0.5, -20, 4)
    b = place(1.5, [(0.3217, a)])
    assert an.xcorr_lag(place(1.5, [(0.0, a)]), b, R) == int(round(0.3217 * R))


# -- one turn ---------------------------------------------------------------------------------


def _turn(reply_at_s: float | None, clip_at_s: float = 1.0):
    clip = np.concatenate([np.zeros(R // 10, np.int16), noise(1.0, -20, 5),
                           np.zeros(R // 5, np.int16)])
    span = an.SpeechSpan(0.1, 1.1, "test")
    left = place(6.0, [(clip_at_s, clip)])
    right = place(6.0, [] if reply_at_s is None else [(reply_at_s, tone(1.0, 300, -18))])
    return an.measure_turn(left, right, clip, span, int(0.5 * R), int(2.0 * R), 6 * R, THR)


def test_v2v_from_the_last_speech_sample_to_the_first_reply_sample():
    t = _turn(3.0)
    assert t.clip_at == R and t.speech_end == int(2.1 * R)
    assert t.v2v_ms == pytest.approx(900.0, abs=0.5) and not t.cut_off


def test_a_reply_before_the_user_finished_is_a_false_cut_off():
    t = _turn(1.6)
    assert t.cut_off and t.v2v_ms == pytest.approx(-500.0, abs=0.5)


def test_an_earlier_answer_still_playing_is_no_cut_off():
    clip = np.concatenate([np.zeros(R // 10, np.int16), noise(1.0, -20, 5)])
    left = place(6.0, [(1.0, clip)])
    right = place(6.0, [(0.2, tone(1.3)), (3.0, tone(1.0))])  # leftover until 1.5 s
    t = an.measure_turn(left, right, clip, an.SpeechSpan(0.1, 1.1, "test"), int(0.5 * R),
                        int(2.0 * R), 6 * R, THR)
    assert t.overlap and not t.cut_off and t.v2v_ms == pytest.approx(900.0, abs=0.5)


def test_no_reply_and_a_clip_not_found():
    t = _turn(None)
    assert t.reply_onset is None and t.v2v_ms is None and not t.cut_off
    t = _turn(3.0, clip_at_s=4.0)  # outside the search window
    assert t.clip_at is None


def test_a_playback_glitch_does_not_move_the_speech_end():
    """An underrun that inserted 40 ms of silence mid-clip: the end is found where it is."""
    clip = np.concatenate([np.zeros(R // 10, np.int16), noise(2.0, -20, 6),
                           np.zeros(R // 5, np.int16)])
    heard = np.concatenate([clip[: R // 2], np.zeros(int(0.04 * R), np.int16), clip[R // 2:]])
    left = place(6.0, [(1.0, heard)])
    right = place(6.0, [(4.0, tone(1.0))])
    t = an.measure_turn(left, right, clip, an.SpeechSpan(0.1, 2.1, "test"), int(0.5 * R),
                        int(2.0 * R), 6 * R, THR)
    assert abs(t.clip_at - R) <= int(0.04 * R) and t.speech_end == int(3.14 * R)
    assert t.v2v_ms == pytest.approx(860.0, abs=0.5)


def test_barge_in_stop_time():
    reply = place(6.0, [(1.0, tone(3.0, 300, -18))])
    stopped = reply.copy()
    stopped[int(2.75 * R):] = 0
    assert an.barge_stop_ms(stopped, int(2.5 * R), THR, 6 * R) == (pytest.approx(250, abs=1),
                                                                   "stopped")
    assert an.barge_stop_ms(reply, int(4.5 * R), THR, 6 * R)[1] == "reply ended first"
    assert an.barge_stop_ms(reply, int(2.5 * R), THR, int(3.5 * R))[1] == "kept playing"


def test_speech_span_of_a_synthetic_utterance():
    rate = 16000
    t = np.arange(int(1.2 * rate)) / rate
    word = (3000 * np.sin(2 * np.pi * 180 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t)))
    rng = np.random.default_rng(0)
    x = np.concatenate([np.zeros(int(0.4 * rate)), word, np.zeros(int(0.6 * rate))])
    x = (x + rng.standard_normal(len(x)) * 20).astype(np.int16)
    span = an.speech_span(x, rate, use_vad=False)
    assert span is not None
    assert span.start_s == pytest.approx(0.4, abs=0.02)
    assert span.end_s == pytest.approx(1.6, abs=0.02)
    assert an.speech_span(np.zeros(rate, np.int16), rate) is None


def test_speech_end_agrees_with_the_labels_of_the_shared_clips(speech_folder):
    """The energy+VAD end against the hand/aligner labels of the clips that have them (used
    instead of it when present): median within 60 ms."""
    from edgevoice.latency.capture import read_mono

    diffs = []
    for path, _, end in find_clips(speech_folder):
        if end is None:
            continue
        samples, rate = read_mono(path)
        diffs.append(abs(an.speech_span(samples, rate).end_s - end))
    assert len(diffs) >= 3
    assert float(np.median(diffs)) <= 0.060, diffs


def test_percentiles_and_summary():
    assert an.pct([], 0.5) is None
    assert an.summarize([3.0, None, 1.0, 2.0]) == {"n": 3, "p50": 2.0, "p95": 3.0, "max": 3.0}


def _fake_result() -> dict:
    def row(i, cfg, v2v, fa, cut=False):
        return {"turn": i, "config": cfg, "clip": f"c{i}.wav", "v2v_ms": v2v, "cut_off": cut,
                "no_reply": v2v is None, "cpu_s": 0.5,
                "stages_ms": {"asr_final": 600.0, "llm_first_token": 620.0,
                              "first_clause": 630.0, "tts_first_audio": 650.0,
                              "first_audio": fa},
                "unseen_ms": None if (v2v is None or cut) else v2v - fa, "turns_seen": 1}
    return {"configs": [{"label": "A", "config": "a.yaml", "model": None, "remote": None},
                        {"label": "B", "config": "b.yaml", "model": None, "remote": None}],
            "turns": [row(1, "A", 1000.0, 800.0), row(2, "B", 500.0, 400.0),
                      row(3, "A", 1200.0, 900.0), row(4, "B", -200.0, 300.0, cut=True)],
            "barge_in": [{"config": "A", "stop_ms": 120.0}], "idle_cpu_percent": {"A": 2.0}}


def test_summary_ratio_and_tables(capsys):
    result = _fake_result()
    result["summary"] = s = report.summarize_run(result)
    assert s["A"]["v2v_ms"] == {"n": 2, "p50": 1000.0, "p95": 1200.0, "max": 1200.0}
    assert s["B"]["cut_offs"] == 1 and s["B"]["v2v_ms"]["n"] == 1  # a cut-off is no V2V
    assert s["ratio_p50"]["v2v_ms"] == 0.5
    assert s["A"]["barge_stop_ms"]["p50"] == 120.0
    report.print_turns(result)
    report.print_summary(result)
    out = capsys.readouterr().out
    assert "CUT-OFF" in out and "ratio of p50s, B / A" in out and "V2V at the speaker" in out


def test_plot_is_a_png(tmp_path):
    pytest.importorskip("matplotlib", reason="matplotlib is in the test extra")
    from edgevoice.latency.plot import write_png

    path = write_png(_fake_result(), tmp_path / "x.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# -- user-facing errors -----------------------------------------------------------------------


def test_missing_pulseaudio_names_the_apt_line(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(UserError, match="apt-get install pulseaudio pulseaudio-utils"):
        check_tools()


def test_clips_without_the_shared_folder_ask_for_clips(monkeypatch, tmp_path):
    monkeypatch.setattr("edgevoice.latency.clips.default_folder", lambda: None)
    with pytest.raises(UserError, match="--clips DIR"):
        find_clips(None)
    with pytest.raises(UserError, match="no WAV"):
        find_clips(tmp_path)


def test_bench_targets_still_parses_beside_latency():
    from edgevoice.cli import build_parser

    args = build_parser().parse_args(["bench", "targets", "-n", "2"])
    assert args.requests == 2 and args.func.__name__ == "cmd_bench_targets"
    args = build_parser().parse_args(["bench", "latency", "--turns", "3", "--compare", "a",
                                      "b", "--delays", "0,100"])
    assert args.turns == 3 and args.delays == (0, 100) and len(args.compare) == 2


# -- for real, on PulseAudio ------------------------------------------------------------------


@pytest.fixture
def pulse_tools():
    try:
        check_tools()
    except UserError as exc:
        pytest.skip(str(exc))


def bench(*args: str, timeout: float = 400, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgevoice", "bench", "latency", *args],
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def test_validation_measures_known_delays_within_10_ms(pulse_tools, speech_folder):
    out = bench("--validate", "--turns", "6", "--delays", "0,250,500", "--json")
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout)
    assert result["ok"] and result["floor_ms"] > 0
    assert [r["delay_ms"] for r in result["rows"]] == [0, 0, 250, 250, 500, 500]
    for r in result["rows"]:
        assert abs(r["measured_ms"] - (r["delay_ms"] + result["floor_ms"])) <= 10.0, r
        assert abs(r["xcorr_ms"] - r["measured_ms"]) <= 10.0, r  # onsets agree with xcorr


def test_validation_on_a_running_server_unloads_its_modules(pulse, speech_folder):
    """--use-running-server: the bus goes onto an existing server (a private one standing in
    for the user's) and is gone from it afterwards."""
    env = {k: pulse.env[k] for k in ("PULSE_SERVER", "PULSE_CLIENTCONFIG")}
    out = bench("--validate", "--use-running-server", "--turns", "1", "--json", env=env)
    assert out.returncode == 2 and "already has sinks named vmic, vspk" in out.stderr
    pulse.pactl("unload-module", "module-null-sink")  # the fixture's own vmic / vspk
    out = bench("--validate", "--use-running-server", "--turns", "2", "--delays", "0,300",
                "--json", env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout)["ok"]
    modules = pulse.pactl("list", "short", "modules")
    assert "null-sink" not in modules and "remap-sink" not in modules  # all unloaded


def test_a_real_run_on_the_tiny_model(pulse_tools, speech_folder, tmp_path):
    png = tmp_path / "latency.png"
    out = bench("--turns", "2", "--barge-in", "1", "--idle-s", "2", "--gap-s", "1.0",
                "--plot", str(png), "--json")
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and result["plot"] == str(png)
    assert [c["label"] for c in result["configs"]] == ["A"]
    assert len(result["turns"]) == 2
    for r in result["turns"]:
        assert r["clip_at_s"] is not None and r["speech_end_s"] > r["clip_at_s"]
        assert r["turns_seen"] >= 1 and r["target"] == "local"
        assert set(r["stages_ms"]) == {"asr_final", "llm_first_token", "first_clause",
                                       "tts_first_audio", "first_audio"}
        assert r["cpu_s"] > 0
        if not r["cut_off"] and r["v2v_ms"] is not None:
            assert r["v2v_ms"] > 0 and r["unseen_ms"] is not None
    assert any(r["v2v_ms"] is not None for r in result["turns"]), "no reply was heard"
    s = result["summary"]["A"]
    assert {"v2v_ms", "unseen_ms", "cpu_s", "cut_offs", "barge_stop_ms",
            "idle_cpu_percent"} <= set(s)
    assert s["idle_cpu_percent"] is not None and s["idle_cpu_percent"] >= 0
    assert len(result["barge_in"]) == 1 and "outcome" in result["barge_in"][0]
    assert "turn 1/2 [A]" in out.stderr  # progress


def test_compare_with_llama_cpp_server_as_the_remote(pulse_tools, speech_folder, tmp_path):
    pytest.importorskip("llama_cpp.server", reason="llama-cpp-python[server] (test extra)")
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("llm:\n  max_tokens: 8\n  temperature: 0.0\n")
    b.write_text("llm:\n  max_tokens: 8\n  temperature: 0.0\nvad:\n  hangover_ms: 400\n")
    out = bench("--compare", str(a), str(b), "--remote-server", "--turns", "1", "--idle-s",
                "1", "--gap-s", "1.0", "--no-plot", "--json")
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout)
    assert [c["label"] for c in result["configs"]] == ["A", "B"]
    assert all(c["remote"].startswith("http://127.0.0.1:") for c in result["configs"])
    assert sorted(r["config"] for r in result["turns"]) == ["A", "B"]
    assert {r["clip"] for r in result["turns"]} == {result["turns"][0]["clip"]}  # paired
    assert all(r["target"] == "remote" for r in result["turns"] if r["turns_seen"])
    assert "ratio_p50" in result["summary"]


def test_an_agent_that_fails_to_start_is_reported_with_its_stderr(pulse_tools, tmp_path,
                                                                   speech_folder):
    bad = tmp_path / "bad.yaml"
    bad.write_text("vad:\n  hangover_ms: 1\n")  # below the minimum: a config error
    out = bench("--config", str(bad), "--turns", "1", "--no-plot", timeout=120)
    assert out.returncode == 2
    assert "the agent (A) failed to start" in out.stderr and "hangover_ms" in out.stderr
    assert "Traceback" not in out.stderr
