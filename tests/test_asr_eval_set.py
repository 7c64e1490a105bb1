"""The evaluation set's long continuous utterances (``long_run``): 10-18 s of speech in one go."""

from __future__ import annotations

import csv

import numpy as np
import soundfile

from edgevoice.devtools import asr_eval_set as S

RATE = S.RATE


def _clip(words: int, seed: int) -> np.ndarray:
    """A fake clip: 0.5 s of silence, then ``words`` 0.6 s bursts with 0.9 s silences between
    (longer than any pause the endpointer bridges), then 0.5 s of silence."""
    rng = np.random.default_rng(seed)
    parts = [np.zeros(RATE // 2, np.float32)]
    for i in range(words):
        if i:
            parts.append(np.zeros(int(0.9 * RATE), np.float32))
        parts.append((0.2 * rng.standard_normal(int(0.6 * RATE))).astype(np.float32))
    parts.append(np.zeros(RATE // 2, np.float32))
    return np.concatenate(parts)


def _quiet_runs_s(x: np.ndarray) -> list[float]:
    frames = x[: len(x) // 480 * 480].reshape(-1, 480)
    loud = (frames.astype(np.float64) ** 2).mean(axis=1) > 1e-6
    runs, run, seen = [], 0, False
    for is_loud in loud:
        if is_loud:
            if run and seen:
                runs.append(run * 0.03)
            run, seen = 0, True
        else:
            run += 1
    return runs  # quiet stretches between loud frames (the lead and tail are not counted)


def test_trim_to_speech_cuts_the_ends_and_shortens_the_gaps_inside():
    x = _clip(3, 1)
    y = S.trim_to_speech(x)
    assert abs(len(y) / RATE - (3 * 0.6 + 2 * 0.15)) < 0.1
    assert max(_quiet_runs_s(y)) <= 0.15 + 1e-9
    assert np.abs(y[:480]).max() > 0.05 and np.abs(y[-480:]).max() > 0.05  # speech at both ends


def test_long_runs_are_one_long_stretch_of_each_splits_own_real_speech(tmp_path):
    pools = {
        "tuning": [(_clip(4, i), f"tune {i}", f"tune{i}.wav") for i in range(6)]
        + [(_clip(4, 9), "espeak words", "text:espeak words")],
        "heldout": [(_clip(5, 10 + i), f"held {i}", f"held{i}.wav") for i in range(5)],
    }
    w = S._Writer(tmp_path)
    S._long_runs(w, pools)
    rows = [r for r in w.rows if r["kind"] == "long_run"]
    assert [r["split"] for r in rows] == ["tuning", "tuning", "heldout", "heldout"]
    for row in rows:
        sources = row["source"].split("+")
        prefix = "tune" if row["split"] == "tuning" else "held"
        assert sources and all(s.startswith(prefix) and s.endswith(".wav") for s in sources)
        # the reference is the sources' references, in the order they were joined
        assert row["reference"] == " ".join(f"{prefix} {s[4:-4]}" for s in sources)
        x, rate = soundfile.read(str(tmp_path / row["file"]), dtype="float32")
        assert rate == RATE
        gaps = _quiet_runs_s(x)
        assert max(gaps) <= 0.18 + 0.03  # never a pause the endpointer would take (210 ms)
        speech_s = len(S.trim_to_speech(x)) / RATE
        assert S.LONG_RUN_S[0] <= speech_s <= S.LONG_RUN_S[1] + 0.2
    with open(tmp_path / "check.tsv", "w", newline="") as fh:  # the rows fit the manifest
        csv.DictWriter(fh, fieldnames=S.FIELDS, delimiter="\t").writerows(rows)
