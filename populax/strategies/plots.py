"""The lineage tree of a run: ``RUN/report/lineage.png`` from ``lineage.jsonl``.

Each member is a horizontal line over env steps, coloured by its evaluation
return (from ``metrics.jsonl``); an arrow from (step, source) to (step, member)
marks every copy, a cross a failure. Reading right to left from the best member
traces its ancestry.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

from populax.run.logging import read_jsonl

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402


def write_lineage_plot(run_dir: str | Path) -> Path | None:
    """Draw ``report/lineage.png`` for the run in ``run_dir``; None when it has no lineage."""
    run_dir = Path(run_dir)
    events = read_jsonl(run_dir / "lineage.jsonl")
    metrics = read_jsonl(run_dir / "metrics.jsonl")
    if not events and not metrics:
        return None
    members = sorted({m["member"] for m in metrics} | {e["member"] for e in events})
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(members) + 2))
    returns = [m["return"] for m in metrics if m.get("return") is not None]
    norm = plt.Normalize(min(returns), max(returns)) if returns else plt.Normalize(0, 1)
    cmap = plt.get_cmap("viridis")
    for member in members:
        rows = sorted((m["env_step"], m.get("return")) for m in metrics if m["member"] == member)
        for (s0, r0), (s1, _) in zip(rows, rows[1:]):
            color = cmap(norm(r0)) if r0 is not None else "lightgrey"
            ax.plot([s0, s1], [member, member], color=color, lw=4, solid_capstyle="butt")
    steps = [m["env_step"] for m in metrics] or [e["env_step"] for e in events]
    nudge = 0.008 * (max(steps) - min(steps) or 1)
    seen: dict[int, int] = {}
    for e in events:
        # Copies at the same step are nudged apart so overlapping arrows stay readable.
        k = seen[e["env_step"]] = seen.get(e["env_step"], -1) + 1
        x = e["env_step"] + k * nudge
        if e["source"] is not None:
            ax.annotate(
                "", xy=(x, e["member"]), xytext=(x, e["source"]),
                arrowprops={"arrowstyle": "->", "color": "crimson" if e["event"] == "replace_failed" else "black", "lw": 1},
            )
        if e["event"] != "exploit":
            ax.plot(x, e["member"], "x", color="crimson", ms=9, mew=2)
    ax.set_yticks(members)
    ax.set_ylim(min(members) - 0.7, max(members) + 0.7)
    ax.set_xlabel("env steps per member")
    ax.set_ylabel("member")
    ax.set_title("Population lineage (arrow: copy source -> member; x: failure)")
    fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label="evaluation return")
    out = run_dir / "report" / "lineage.png"
    out.parent.mkdir(exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out

