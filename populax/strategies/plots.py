"""The lineage tree of a run: ``RUN/report/lineage.png`` from ``lineage.jsonl``.

Each member is a horizontal line over env steps, coloured by its evaluation
return (from ``metrics.jsonl``); an arrow from (step, source) to (step, member)
marks every copy, a cross a failure. Reading right to left from the best member
traces its ancestry.

A mixed-shape run (issue 25) also shows its cohorts: each member's label names
the static settings it ended with (summary.json), and a copy that moved its
member to another cohort is an orange dashed arrow, labelled with the settings it
moved to, under the legend entry "moved between cohorts".
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

from populax.run.logging import read_jsonl
from populax.run.report import cohort_moves, member_static

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

COPY_GID = "copy"
MOVE_GID = "cohort-move"
"""Artist ids of the arrows: a copy within a cohort, and one that moved its member to another cohort."""
MOVE_COLOR = "darkorange"
MOVE_LABEL = "moved between cohorts"


def lineage_figure(events: list[dict[str, Any]], metrics: list[dict[str, Any]],
                   static: dict[int, dict[str, str]] | None = None) -> Figure | None:
    """The lineage figure from lineage.jsonl's ``events`` and metrics.jsonl's records; None when both are empty.

    ``static``: a mixed-shape run's final static settings per member (``populax.run.report.member_static``),
    shown beside each member's id. Arrows carry the gid ``copy`` or ``cohort-move`` (the events of
    ``cohort_moves``), so the figure can be checked artist by artist."""
    if not events and not metrics:
        return None
    static = static or {}
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
    moves = {id(e) for e in cohort_moves(events)}
    seen: dict[int, int] = {}
    for e in events:
        # Copies at the same step are nudged apart so overlapping arrows stay readable.
        k = seen[e["env_step"]] = seen.get(e["env_step"], -1) + 1
        x = e["env_step"] + k * nudge
        moved = id(e) in moves
        if e["source"] is not None:
            color = "crimson" if e["event"] == "replace_failed" else MOVE_COLOR if moved else "black"
            arrow = ax.annotate(
                "", xy=(x, e["member"]), xytext=(x, e["source"]),
                arrowprops={"arrowstyle": "->", "color": color, "lw": 1.6 if moved else 1,
                            "linestyle": "--" if moved else "-"},
            )
            arrow.set_gid(MOVE_GID if moved else COPY_GID)
        if moved:  # where it moved to: only the settings that changed, to keep the label short
            changed = {n: v for n, v in e["new_static"].items() if e["old_static"].get(n) != v}
            ax.annotate(" ".join(f"{n}={v}" for n, v in changed.items()), (x, e["member"]),
                        textcoords="offset points", xytext=(3, 4), fontsize=7, color=MOVE_COLOR)
        if e["event"] != "exploit":
            ax.plot(x, e["member"], "x", color="crimson", ms=9, mew=2)
    ax.set_yticks(members)
    if static:  # the cohort each member ended in
        ax.set_yticklabels([f"{m}  {' '.join(f'{n}={v}' for n, v in static.get(m, {}).items())}".rstrip()
                            for m in members], fontsize=8)
    ax.set_ylim(min(members) - 0.7, max(members) + 0.7)
    ax.set_xlabel("env steps per member")
    ax.set_ylabel("member (static settings at the end)" if static else "member")
    ax.set_title("Population lineage (arrow: copy source -> member; x: failure)")
    if moves:  # only mixed runs whose members changed cohort: an ordinary run's figure is as it was
        ax.legend(handles=[Line2D([], [], color="black", lw=1, label="copy"),
                           Line2D([], [], color=MOVE_COLOR, lw=1.6, ls="--", label=MOVE_LABEL)],
                  loc="best", fontsize=8)
    fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label="evaluation return")
    fig.tight_layout()
    return fig


def write_lineage_plot(run_dir: str | Path) -> Path | None:
    """Draw ``report/lineage.png`` for the run in ``run_dir``; None when it has no lineage."""
    run_dir = Path(run_dir)
    summary = read_json(run_dir / "summary.json")
    fig = lineage_figure(read_jsonl(run_dir / "lineage.jsonl"), read_jsonl(run_dir / "metrics.jsonl"),
                         member_static(summary))
    if fig is None:
        return None
    out = run_dir / "report" / "lineage.png"
    out.parent.mkdir(exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON file's content, None when it does not exist (a run that has not finished has no summary)."""
    return json.loads(path.read_text()) if path.is_file() else None
