"""Summaries and printed tables of a latency run (the JSON holds the same figures)."""

from __future__ import annotations

import sys
from typing import Optional, TextIO

from edgevoice.latency.analysis import summarize

STAGES = ("asr_final", "llm_first_token", "first_clause", "tts_first_audio", "first_audio")
METRICS = ("v2v_ms", *STAGES, "unseen_ms", "cpu_s")


def summarize_run(result: dict) -> dict:
    """Per configuration: p50/p95/max of V2V, each stage, the unseen output path, CPU per turn;
    counts of cut-offs and unanswered turns; barge-in stop times; idle CPU."""
    out: dict = {}
    for cfg in result["configs"]:
        label = cfg["label"]
        rows = [r for r in result["turns"] if r["config"] == label]
        ok = [r for r in rows if not r["cut_off"] and not r.get("overlap")]
        s: dict = {"turns": len(rows)}
        s["v2v_ms"] = summarize([r["v2v_ms"] for r in ok])
        for st in STAGES:
            s[st] = summarize([r["stages_ms"].get(st) for r in ok])
        s["unseen_ms"] = summarize([r["unseen_ms"] for r in ok])
        s["cpu_s"] = summarize([r["cpu_s"] for r in rows], digits=3)
        s["cut_offs"] = sum(r["cut_off"] for r in rows)
        s["overlaps"] = sum(bool(r.get("overlap")) for r in rows)
        s["no_reply"] = sum(r["no_reply"] for r in rows)
        barges = [b for b in result.get("barge_in", []) if b["config"] == label]
        s["barge_stop_ms"] = summarize([b.get("stop_ms") for b in barges])
        s["barge_trials"] = len(barges)
        s["idle_cpu_percent"] = (result.get("idle_cpu_percent") or {}).get(label)
        out[label] = s
    labels = [c["label"] for c in result["configs"]]
    if len(labels) == 2:
        a, b = out[labels[0]], out[labels[1]]
        out["ratio_p50"] = {m: _ratio(b[m]["p50"], a[m]["p50"]) for m in METRICS}
    return out


def _ratio(b: Optional[float], a: Optional[float]) -> Optional[float]:
    if a is None or b is None or a == 0:
        return None
    return round(b / a, 3)


def _f(v, digits: int = 0) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else ""
    return f"{v:.{digits}f}"


def print_turns(result: dict, out: Optional[TextIO] = None) -> None:
    out = out or sys.stdout
    head = ["turn", "cfg", "clip", "V2V", "asr_fin", "llm_1st", "clause1", "tts_1st",
            "1st_aud", "unseen", "cpu_s", "note"]
    rows = []
    for r in result["turns"]:
        st = r["stages_ms"]
        note = "CUT-OFF" if r["cut_off"] else "no reply" if r["no_reply"] else ""
        if r["no_reply"] and r.get("reply_chars") and not r.get("speakable", True):
            note += " (the reply had nothing to say aloud)"
        if r.get("ear_behind_s", 0) >= 0.5:
            note = (note + f" ear {r['ear_behind_s']:.1f} s behind").strip()
        if r.get("interrupted"):
            note = (note + " interrupted").strip()
        if r.get("error"):
            note = (note + f" ({r['error']})").strip()
        if r.get("turns_seen", 1) > 1:
            note = (note + f" {r['turns_seen']} answers").strip()
        if r.get("problem"):
            note = (note + " " + r["problem"]).strip()
        rows.append([str(r["turn"]), r["config"], r["clip"][:34], _f(r["v2v_ms"]),
                     *[_f(st.get(k)) for k in STAGES], _f(r["unseen_ms"]),
                     _f(r["cpu_s"], 2), note])
    _table(head, rows, out)


def print_summary(result: dict, out: Optional[TextIO] = None) -> None:
    out = out or sys.stdout
    summary = result["summary"]
    labels = [c["label"] for c in result["configs"]]
    for cfg in result["configs"]:
        s = summary[cfg["label"]]
        what = cfg["config"] or "default config"
        print(f"\n[{cfg['label']}] {what}"
              + (f", model {cfg['model']}" if cfg.get("model") else "")
              + (f", remote {cfg['remote']}" if cfg.get("remote") else ""), file=out)
        rows = []
        for m, name in (("v2v_ms", "V2V at the speaker (ms)"),
                        *((st, f"agent {st} (ms)") for st in STAGES),
                        ("unseen_ms", "V2V - first_audio (ms)"),
                        ("cpu_s", "CPU per turn (s)"),
                        ("barge_stop_ms", "barge-in -> silent (ms)")):
            v = s[m]
            d = 2 if m == "cpu_s" else 0
            rows.append([name, str(v["n"]), _f(v["p50"], d), _f(v["p95"], d),
                         _f(v["max"], d)])
        _table(["figure", "n", "p50", "p95", "max"], rows, out)
        idle = s["idle_cpu_percent"]
        print(f"false cut-offs: {s['cut_offs']} of {s['turns']} turns; no reply heard: "
              f"{s['no_reply']}; "
              + (f"clips spoken over an earlier answer (left out): {s['overlaps']}; "
                 if s["overlaps"] else "") + "idle CPU: "
              + (f"{idle:.2f} % of one core" if idle is not None else "not measured"),
              file=out)
    if "ratio_p50" in summary:
        r = summary["ratio_p50"]
        print(f"\nratio of p50s, {labels[1]} / {labels[0]}: "
              + ", ".join(f"{m} {_f(r[m], 3)}" for m in ("v2v_ms", *STAGES, "unseen_ms",
                                                          "cpu_s")), file=out)


def print_validation(result: dict, out: Optional[TextIO] = None) -> None:
    out = out or sys.stdout
    head = ["delay", "clip", "measured", "expected", "error", "xcorr", "xcorr_err"]
    rows = [[str(r["delay_ms"]), r["clip"][:34], _f(r["measured_ms"], 1),
             _f(r.get("expected_ms"), 1), _f(r.get("error_ms"), 1), _f(r["xcorr_ms"], 1),
             _f(r.get("xcorr_error_ms"), 1)] for r in result["rows"]]
    _table(head, rows, out)
    floor = result["floor_ms"]
    print(f"\necho I/O floor (measured at {result['delays_ms'][0]} ms added): "
          + (f"{floor:.1f} ms" if floor is not None else "not measured")
          + f"; expected = delay + floor; largest error {_f(result['max_abs_error_ms'], 1)} ms"
          f" (tolerance ±{result['tolerance_ms']:g} ms): "
          + ("PASS" if result["ok"] else "FAIL"), file=out)


def _table(head: list[str], rows: list[list[str]], out: TextIO) -> None:
    """Columns padded to their widest cell: text columns (clip, cfg, note, figure) to the
    left, numbers to the right."""
    text = {"cfg", "clip", "note", "figure"}
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(head)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if h in text else c.rjust(w)
                         for h, c, w in zip(head, cells, widths, strict=True)).rstrip()

    print(line(head), file=out)
    for r in rows:
        print(line(r), file=out)
