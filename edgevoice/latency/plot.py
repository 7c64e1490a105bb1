"""The PNG of a run: a per-turn waterfall of the agent's stages (each bar starts where the
previous stage ended, from the agent's own end of speech) with the V2V measured at the speaker
marked on it, and the V2V distribution per configuration. Needs matplotlib (the `bench` extra)."""

from __future__ import annotations

from pathlib import Path

from edgevoice.errors import UserError

STAGES = ("asr_final", "llm_first_token", "first_clause", "tts_first_audio", "first_audio")
COLOURS = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#bbbbbb")


def check_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UserError("the plot needs matplotlib: pip install 'edgevoice[bench]' "
                        "(or leave the plot out with --no-plot)") from None


def write_png(result: dict, path: Path) -> Path:
    check_matplotlib()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    turns = result["turns"]
    labels = [c["label"] for c in result["configs"]]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(13, max(4.0, 0.32 * len(turns) + 1.5)),
                                 gridspec_kw={"width_ratios": [3, 1.2]})
    named: set[str] = set()

    def once(name: str):  # each legend entry once, from the first bar that has it
        if name in named:
            return None
        named.add(name)
        return name

    for y, r in enumerate(turns):
        st = r["stages_ms"]
        prev = 0.0
        for k, stage in enumerate(STAGES):
            v = st.get(stage)
            if v is None:
                continue
            ax.barh(y, max(v - prev, 0.0), left=prev, color=COLOURS[k], height=0.7,
                    label=once(stage))
            prev = max(prev, v)
        if r["v2v_ms"] is not None:
            if r["v2v_ms"] > prev:
                ax.barh(y, r["v2v_ms"] - prev, left=prev, color=COLOURS[-1], height=0.7,
                        hatch="//", label=once("unseen by the agent"))
            ax.plot([r["v2v_ms"]], [y], marker="|", color="black", markersize=12)
        if r["cut_off"]:
            ax.text(0, y, " cut-off", va="center", fontsize=7, color="red")
    ax.set_yticks(range(len(turns)))
    ax.set_yticklabels([f"{r['turn']} {r['config']} {r['clip'][:22]}" for r in turns],
                       fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("ms after the end of speech (stages: the agent's; | = V2V at the speaker)")
    ax.set_title("per-turn stages")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=6,
              frameon=False)
    data = [[r["v2v_ms"] for r in turns if r["config"] == lab and r["v2v_ms"] is not None
             and not r["cut_off"]] for lab in labels]
    if any(data):
        bx.boxplot([d or [0.0] for d in data], showfliers=False)
        for i, d in enumerate(data, 1):
            bx.scatter([i] * len(d), d, s=12, color="black", zorder=3)
        bx.set_xticks(range(1, len(labels) + 1))
        bx.set_xticklabels(labels)
    bx.set_ylabel("V2V at the speaker (ms)")
    bx.set_title("V2V distribution")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
