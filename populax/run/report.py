"""`populax report RUN`: figures and a page that show at a glance who won, when, and how.

Reads only files of the run directory (metrics.jsonl, summary.json) and writes
``RUN/report/``: ``learning_curves.png`` (every member, population median and
interquartile band, against env steps and against wall time),
``best_member.png``, ``hparams.png`` (per-member hyperparameter trajectories,
when any differ) and ``report.md``, which shows them with the summary table and
also embeds any other PNG found there (PBT lineage, benchmark timing).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from populax.coupled.plots import write_coupled_plots
from populax.errors import ConfigError

REPORT_DIR = "report"
OWN_FIGURES = ("learning_curves.png", "best_member.png", "hparams.png")


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The records of metrics.jsonl (a torn last line, from a kill, is skipped)."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        raise ConfigError(f"RUN: {run_dir} has no metrics.jsonl; is it a populax run directory?")
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def curves(records: list[dict[str, Any]], field: str = "return") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(env steps [T], wall seconds [T], values [members, T]) with NaN where missing."""
    steps = sorted({r["env_step"] for r in records})
    members = sorted({r["member"] for r in records})
    column = {s: i for i, s in enumerate(steps)}
    values = np.full((len(members), len(steps)), np.nan)
    wall = np.full(len(steps), np.nan)
    for r in records:
        value = r.get(field)
        values[members.index(r["member"]), column[r["env_step"]]] = np.nan if value is None else value
        wall[column[r["env_step"]]] = r.get("wall_time_s", np.nan)
    return np.asarray(steps, float), wall, values


def population_band(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Median, 25th and 75th percentile over members at each evaluation (NaN-aware)."""
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return tuple(np.nanpercentile(values, q, axis=0) for q in (50, 25, 75))


def best_member(records: list[dict[str, Any]], summary: dict[str, Any] | None) -> int:
    """The summary's best member, else the one with the highest last return."""
    if summary and "best_member" in summary:
        return int(summary["best_member"])
    _, _, values = curves(records)
    last = np.where(np.isfinite(values[:, -1]), values[:, -1], -np.inf)
    return int(np.argmax(last))


def varying_hparams(records: list[dict[str, Any]]) -> list[str]:
    """Hyperparameters that differ between members or change over time."""
    names = list(records[0].get("hparams", {})) if records else []
    return [n for n in names if len({r["hparams"][n] for r in records}) > 1]


def _colors(count: int) -> list[Any]:
    """One color per member; tab10 without its red, which marks the best member."""
    import matplotlib

    if count <= 9:
        palette = [c for i, c in enumerate(matplotlib.colormaps["tab10"].colors) if i != 3]
        return palette[:count]
    cmap = matplotlib.colormaps["viridis"]
    return [cmap(i / max(1, count - 1)) for i in range(count)]


def plot_learning_curves(records: list[dict[str, Any]], best: int, path: Path, title: str) -> None:
    """Returns of every member, population median and IQR, vs env steps and vs wall time."""
    import matplotlib.pyplot as plt

    steps, wall, values = curves(records)
    median, low, high = population_band(values)
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8), sharey=True)
    for ax, x, label in ((axes[0], steps, "env steps per member"), (axes[1], wall, "wall time (s)")):
        ax.fill_between(x, low, high, color="0.6", alpha=0.35, label="population IQR", lw=0)
        for member, color in zip(range(len(values)), _colors(len(values))):
            if member != best:
                shown = f"member {member}" if len(values) <= 9 else None
                ax.plot(x, values[member], color=color, lw=1, alpha=0.6, label=shown)
        ax.plot(x, median, color="black", lw=2, label="population median")
        ax.plot(x, values[best], color="crimson", lw=2.5, marker="o", ms=3, label=f"best: member {best}")
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("evaluation return")
    axes[0].legend(loc="best", fontsize=8, ncol=2)
    fig.suptitle(f"{title}: every member (thin), median and interquartile band")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_best_member(records: list[dict[str, Any]], best: int, path: Path, hparams: dict[str, float]) -> None:
    """The best member's evaluation and training returns, its peak marked, its hyperparameters listed."""
    import matplotlib.pyplot as plt

    steps, _, values = curves(records)
    _, _, train = curves(records, "train_return")
    fig, ax = plt.subplots(figsize=(8.5, 4.8))
    ax.plot(steps, values[best], color="crimson", lw=2.5, marker="o", ms=4, label="evaluation return")
    if np.isfinite(train[best]).any():
        ax.plot(steps, train[best], color="tab:blue", lw=1.2, alpha=0.8, label="training episode return")
    if np.isfinite(values[best]).any():
        peak = int(np.nanargmax(values[best]))
        ax.annotate(f"peak {values[best][peak]:.1f}\nat {steps[peak]:,.0f} steps", (steps[peak], values[best][peak]),
                    textcoords="offset points", xytext=(-60, -40), arrowprops={"arrowstyle": "->"}, fontsize=9)
    text = "\n".join(f"{name} = {value:.4g}" for name, value in hparams.items())
    ax.text(1.02, 1.0, text, transform=ax.transAxes, va="top", fontsize=9, family="monospace")
    ax.set_xlabel("env steps per member")
    ax.set_ylabel("return")
    ax.set_title(f"best member {best}")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_hparams(records: list[dict[str, Any]], names: list[str], best: int, path: Path) -> None:
    """One panel per varying hyperparameter: each member's value over env steps."""
    import matplotlib.pyplot as plt

    members = sorted({r["member"] for r in records})
    steps = sorted({r["env_step"] for r in records})
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(max(7.0, 4.6 * cols), 3.4 * rows), squeeze=False)
    colors = _colors(len(members))
    for ax, name in zip(axes.flat, names):
        table = {(r["member"], r["env_step"]): r["hparams"][name] for r in records}
        for member, color in zip(members, colors):
            ys = [table.get((member, s), np.nan) for s in steps]
            is_best = member == best
            ax.step(steps, ys, where="post", color="crimson" if is_best else color, lw=2.5 if is_best else 1,
                    alpha=1 if is_best else 0.7, label=f"member {member}" + (" (best)" if is_best else ""))
        values = [v for v in table.values() if v > 0]
        if values and max(values) / min(values) > 20:
            ax.set_yscale("log")
        ax.set_title(name)
        ax.set_xlabel("env steps per member")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if len(members) <= 12:
        fig.legend(handles, labels, loc="upper center", ncol=min(len(members), 6), fontsize=8, bbox_to_anchor=(0.5, 1.0))
        fig.tight_layout(rect=(0, 0, 1, 0.92 if rows == 1 else 0.95))
    else:
        fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def member_table(records: list[dict[str, Any]], names: list[str], best: int) -> list[str]:
    """Markdown rows: member, its varying hyperparameters (last value), final and peak return."""
    steps, _, values = curves(records)
    last_hp = {r["member"]: r["hparams"] for r in records}
    header = ["member", *names, "final return", "peak return", "peak at step"]
    rows = ["| " + " | ".join(header) + " |", "|" + " ---: |" * len(header)]
    order = sorted(range(len(values)), key=lambda m: -np.nan_to_num(values[m][-1], nan=-np.inf))
    for m in order:
        finite = np.isfinite(values[m])
        peak = int(np.nanargmax(values[m])) if finite.any() else None
        cells = [f"**{m}** (best)" if m == best else str(m)]
        cells += [f"{last_hp[m][n]:.4g}" for n in names]
        cells += [f"{values[m][-1]:.1f}",
                  f"{values[m][peak]:.1f}" if peak is not None else "-",
                  f"{steps[peak]:,.0f}" if peak is not None else "-"]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def write_report(run_dir: str | Path) -> Path:
    """Write RUN/report/ (figures and report.md) from the run's files; returns report.md's path."""
    import matplotlib

    matplotlib.use("Agg")
    run_dir = Path(run_dir)
    records = read_metrics(run_dir)
    if not records:
        raise ConfigError(f"RUN: {run_dir / 'metrics.jsonl'} has no records yet; nothing to report")
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else None
    out = run_dir / REPORT_DIR
    out.mkdir(exist_ok=True)
    best = best_member(records, summary)
    names = varying_hparams(records)
    best_hp = [r for r in records if r["member"] == best][-1].get("hparams", {})
    algo = summary["algo"] if summary else "run"
    env = summary["env"] if summary else run_dir.name
    title = f"{algo} on {env}"
    plot_learning_curves(records, best, out / "learning_curves.png", title)
    plot_best_member(records, best, out / "best_member.png", best_hp)
    if names:
        plot_hparams(records, names, best, out / "hparams.png")
    elif (out / "hparams.png").exists():
        (out / "hparams.png").unlink()

    steps, _, values = curves(records)
    peak = int(np.nanargmax(values[best])) if np.isfinite(values[best]).any() else len(steps) - 1
    lines = [f"# {title}: population of {len(values)}", ""]
    if summary is None:
        lines += ["*The run has not finished (no summary.json): this shows the evaluations so far.*", ""]
    lines += [
        f"**Winner: member {best}**, final return {values[best][-1]:.1f} "
        f"(peak {values[best][peak]:.1f} at {steps[peak]:,.0f} env steps per member), with "
        + ", ".join(f"{n}={v:.4g}" for n, v in best_hp.items()) + ".",
        "",
    ]
    if summary is not None:
        lines += [
            f"Population median final return {summary['median_return']:.1f}; "
            f"{summary['env_steps_per_member']:,} env steps per member in {summary['wall_time_s']:.0f} s "
            f"({summary['env_steps_per_s']:,.0f} env steps/s, {summary['updates_per_s']:,.0f} updates/s, "
            f"executor `{summary['executor']}`).",
            "",
        ]
    lines += ["## Members", "", *member_table(records, names, best), ""]
    if not names:
        lines += ["All members share the same hyperparameters.", ""]
    lines += ["## Learning curves", "", "![learning curves](learning_curves.png)", "",
              "## Best member", "", "![best member](best_member.png)", ""]
    if names:
        lines += ["## Hyperparameters", "", "![hyperparameters](hparams.png)", ""]
    write_coupled_plots(records, out)  # CEM-RL / DvD-TD3 figures, when the run logged their fields
    others = sorted(p.name for p in out.glob("*.png") if p.name not in OWN_FIGURES)
    for name in others:  # figures other parts of populax put here (PBT lineage, benchmark timing)
        lines += [f"## {Path(name).stem.replace('_', ' ').capitalize()}", "", f"![{Path(name).stem}]({name})", ""]
    page = out / "report.md"
    page.write_text("\n".join(lines))
    return page
