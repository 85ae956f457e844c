"""`populax report RUN`: figures and a page that show at a glance who won, when, and how.

Reads only files of the run directory (metrics.jsonl, summary.json, config.yaml) and writes
``RUN/report/``: ``learning_curves.png`` (every member, population median and
interquartile band, against env steps and against wall time),
``best_member.png``, ``hparams.png`` (per-member hyperparameter trajectories,
when any differ), ``sensitivity.png`` (return against each varying
hyperparameter: the sweep plot) and ``report.md``, which shows them with the summary table and
also embeds any other PNG found there (PBT lineage, benchmark timing).

A mixed-shape run (issue 25: members differ in static settings such as
``--hp.hidden``) also gets each member's final static settings in the member
table and, per static setting, a table of its values: who ended with it, their
returns, and the moves between cohorts into and out of it (lineage.jsonl).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from populax.coupled.plots import write_coupled_plots
from populax.errors import ConfigError
from populax.run.logging import read_jsonl

REPORT_DIR = "report"
OWN_FIGURES = ("learning_curves.png", "best_member.png", "hparams.png", "sensitivity.png")


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


def read_config(run_dir: Path) -> dict[str, Any]:
    """The run's config.yaml (empty when absent or unreadable): a stopped run's report takes its title from it."""
    import yaml

    try:
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return config if isinstance(config, dict) else {}


def log_scales(config: dict[str, Any]) -> dict[str, bool]:
    """Hyperparameter (CLI name) -> whether the report draws it on a log axis: the algorithm's declaration
    (``hparam(..., log=True)``: learning rates, tau), or a ``loguniform:`` spec of the run (config.yaml records
    ``--hp.NAME search`` of a logarithmic hyperparameter so). A name left out (config.yaml absent, an algorithm
    this process cannot load) is decided by the values' spread (:func:`log_axis`)."""
    scales: dict[str, bool] = {}
    if config.get("algo"):
        try:
            from populax.agents import get_algorithm
            from populax.hparams import cli_name, hparam_infos

            infos = hparam_infos(get_algorithm(str(config["algo"])).hparams)
            scales = {cli_name(name): info.log for name, info in infos.items()}
        except Exception:  # noqa: BLE001 - a registered or py: algorithm missing here: the spread decides
            scales = {}
    for name, spec in (config.get("hp") or {}).items():
        if isinstance(spec, str) and spec.strip().startswith("loguniform:"):
            scales[str(name)] = True
    return scales


def log_axis(name: str, values: list[float], scales: dict[str, bool]) -> bool:
    """Whether to draw hyperparameter ``name`` with ``values`` on a log axis: as ``scales`` says (the
    declaration), else when they spread over more than a factor of 20; never with a value <= 0."""
    if not values or min(values) <= 0:
        return False
    if name in scales:
        return scales[name]
    return max(values) / min(values) > 20


def log_ticks(lo: float, hi: float) -> list[float]:
    """A few major tick values within [lo, hi] on a log axis: decades when three or more fit, else 1-2-5 steps,
    else 1..9 multiples of powers of ten, else (a narrow range) evenly spaced round values; at most 6."""
    from matplotlib.ticker import MaxNLocator

    if lo >= hi:
        return [lo]
    first, last = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    inside = (lo * (1 - 1e-9), hi * (1 + 1e-9))
    for subs, enough in (((1,), 3), ((1, 2, 5), 3), (tuple(range(1, 10)), 2)):
        ticks = [s * 10.0 ** e for e in range(first, last + 1) for s in subs]
        ticks = [t for t in ticks if inside[0] <= t <= inside[1]]
        if len(ticks) >= enough:
            return ticks[:: math.ceil(len(ticks) / 6)]
    ticks = [float(t) for t in MaxNLocator(nbins=3).tick_values(lo, hi) if inside[0] <= t <= inside[1]]
    return ticks or [lo]


def set_log_axis(ax: Any, which: str, values: list[float]) -> None:
    """Log-scale ``ax``'s ``which`` (``x`` or ``y``) axis with readable labels: a few major ticks (:func:`log_ticks`)
    as plain numbers, minor ticks unlabelled (matplotlib labels them where fewer than two decades show, and
    ``2×10⁻³3×10⁻³4×10⁻³`` run together)."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    getattr(ax, f"set_{which}scale")("log")
    axis = getattr(ax, f"{which}axis")
    axis.set_major_locator(FixedLocator(log_ticks(min(values), max(values))))
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_minor_formatter(NullFormatter())


def in_force(points: list[tuple[float, float]]) -> tuple[list[float], list[float]]:
    """A member's (env step, value) records, in step order -> the corners of a step line drawn
    ``where="post"`` that holds each value over the steps it was in force. metrics.jsonl logs a chunk's
    hyperparameters before the strategy edits them (runtime/driver.py), so a record's value trained the period
    that ended at its step: from the previous record's step (the first from 0, where every run's member steps
    start). A PBT/PB2 change made at step S so shows from S, where lineage.jsonl and lineage.png put it."""
    if not points:
        return [], []
    values = [value for _, value in points]
    return [0.0, *(float(step) for step, _ in points)], [*values, values[-1]]


def parse_cohort_label(label: str) -> dict[str, str]:
    """``hidden=64x64 batch-size=32`` -> ``{"hidden": "64x64", "batch-size": "32"}``: the inverse of
    ``populax.cohorts.StaticSpace.label`` (values never hold spaces or ``=``)."""
    return {name: value for name, _, value in (part.partition("=") for part in label.split())}


def member_static(summary: dict[str, Any] | None) -> dict[int, dict[str, str]]:
    """Member id -> its static settings at the end of a mixed-shape run (its final cohort's, CLI names as
    keys), read from summary.json's ``cohorts``; empty for an ordinary run (or no summary)."""
    cohorts = (summary or {}).get("cohorts") or {}
    # The cohorts' membership is the backend's own record of where each member ended, so it is read
    # rather than the lineage's last event (a member never copied has no event).
    return {int(member): parse_cohort_label(label)
            for label, members in cohorts.get("members", {}).items() for member in members}


def cohort_moves(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The lineage events that moved their member to another cohort (``old_static != new_static``; only a
    mixed-shape run's events carry them). A failed member replaced from another cohort moves too."""
    return [e for e in events
            if e.get("old_static") is not None and e.get("new_static") is not None and e["old_static"] != e["new_static"]]


def _return_text(value: float | None) -> str:
    """A return as the tables show it; ``-`` for none (no member, or only failed ones)."""
    return "-" if value is None else f"{value:.1f}"


def static_tables(summary: dict[str, Any], events: list[dict[str, Any]]) -> list[str]:
    """Markdown: one table per static setting of a mixed-shape run, a row per value: the members that ended
    with it, their best and median final return, and the moves between cohorts into and out of it (a member
    that moved twice counts twice). Empty for an ordinary run."""
    final = member_static(summary)
    if not final:
        return []
    returns = {m["id"]: m["final_return"] for m in summary["members"]}
    moves = cohort_moves(events)
    names = list(dict.fromkeys(name for settings in final.values() for name in settings))
    lines = ["## Static settings", "",
             "Members that differ in static settings run as cohorts (one compiled program each). Per setting: "
             "the members that ended with each value and the moves between cohorts into and out of it "
             "(lineage.jsonl; a member that moved twice counts twice; a failed member's final return is not "
             "counted).", ""]
    for name in names:
        ended: dict[str, list[int]] = {}
        for member in sorted(final):
            ended.setdefault(final[member][name], []).append(member)
        moved_in: dict[str, int] = {}
        moved_out: dict[str, int] = {}
        for e in moves:
            old, new = e["old_static"].get(name), e["new_static"].get(name)
            if old != new:  # the move may have changed another setting only
                moved_out[old] = moved_out.get(old, 0) + 1
                moved_in[new] = moved_in.get(new, 0) + 1
        # Values members left and none ended with still get a row: where the population moved away from.
        values = list(dict.fromkeys([*ended, *moved_out, *moved_in]))
        header = [name, "members at the end", "member ids", "best final return", "median final return",
                  "moved in", "moved out"]
        lines += [f"### {name}", "", "| " + " | ".join(header) + " |", "|" + " ---: |" * len(header)]
        for value in values:
            members = ended.get(value, [])
            finals = [returns[m] for m in members if returns.get(m) is not None]
            best = max(finals) if finals else None
            median = float(np.median(finals)) if finals else None
            cells = [value, str(len(members)), ", ".join(map(str, members)) or "-", _return_text(best),
                     _return_text(median), str(moved_in.get(value, 0)), str(moved_out.get(value, 0))]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return lines


FAILURE_EVENTS = {"reinit": "re-initialised", "freeze": "frozen at its state before the chunk",
                  "replace_failed": "replaced by a copy of member {source}"}
"""The lineage events of a member that failed (its parameters, a loss or its return not finite after a chunk),
and what each did to it."""


def failure_note(events: list[dict[str, Any]]) -> str | None:
    """One line on the members that failed in one chunk (``events``: that chunk's lineage events), or None."""
    failed = [e for e in events if e["event"] in FAILURE_EVENTS]
    if not failed:
        return None
    what = "; ".join(f"member {e['member']} {FAILURE_EVENTS[e['event']].format(**e)}" for e in failed)
    return (f"failed in the chunk to env step {failed[0]['env_step']:,} (parameters, a loss or the return not "
            f"finite): {what}")


def failure_lines(events: list[dict[str, Any]]) -> list[str]:
    """The report's paragraph on failed members (from lineage.jsonl's events), or none."""
    failed = [e for e in events if e["event"] in FAILURE_EVENTS]
    if not failed:
        return []
    per_member = Counter(e["member"] for e in failed)
    members = ", ".join(f"member {m} {n}x" if n > 1 else f"member {m}" for m, n in sorted(per_member.items()))
    return [f"**Failures:** {len(failed)} time{'s' if len(failed) > 1 else ''} a member's parameters, a loss or its "
            f"return were not finite after a chunk ({members}; first at {failed[0]['env_step']:,} env steps per "
            f"member); each is a `{'`/`'.join(sorted({e['event'] for e in failed}))}` event in lineage.jsonl.", ""]


def target_outcome(target: dict[str, Any]) -> tuple[str, str]:
    """(``reached`` or ``not reached``, what happened) of summary.json's ``target`` entry (--target-return), as
    the report and the CLI say it."""
    if target["reached"]:
        return "reached", (f"{target['stat']} return {target['value']:.1f} >= {target['return']:g} at "
                           f"{target['env_step']:,} env steps per member ({target['wall_time_s']:.0f} s); "
                           "the run ended there")
    return "not reached", f"no evaluation's {target['stat']} return reached {target['return']:g}"


def line_colors(count: int) -> list[Any]:
    """One color per line (a member, or a run in ``populax compare``); tab10 without its red, which marks the
    best member."""
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
        for member, color in zip(range(len(values)), line_colors(len(values))):
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


def plot_hparams(records: list[dict[str, Any]], names: list[str], best: int, path: Path,
                 scales: dict[str, bool] | None = None) -> None:
    """One panel per varying hyperparameter: each member's value over the env steps it was in force
    (:func:`in_force`); ``scales``: which to draw on a log axis (:func:`log_scales`)."""
    import matplotlib.pyplot as plt

    members = sorted({r["member"] for r in records})
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(max(7.0, 4.6 * cols), 3.4 * rows), squeeze=False)
    colors = line_colors(len(members))
    for ax, name in zip(axes.flat, names):
        for member, color in zip(members, colors):
            xs, ys = in_force(sorted((r["env_step"], r["hparams"][name]) for r in records if r["member"] == member))
            is_best = member == best
            ax.step(xs, ys, where="post", color="crimson" if is_best else color, lw=2.5 if is_best else 1,
                    alpha=1 if is_best else 0.7, label=f"member {member}" + (" (best)" if is_best else ""))
        values = [r["hparams"][name] for r in records]
        if log_axis(name, values, scales or {}):
            set_log_axis(ax, "y", values)
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


def fixed_per_member(records: list[dict[str, Any]], name: str) -> bool:
    """True when every member keeps one value of ``name`` all run long (a sweep; PBT/PB2 explore changes it)."""
    seen: dict[int, float] = {}
    return all(seen.setdefault(r["member"], r["hparams"][name]) == r["hparams"][name] for r in records)


def final_records(records: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """Member -> its last evaluation record."""
    return {r["member"]: r for r in records}


def finals_by_value(last: dict[int, dict[str, Any]], name: str) -> dict[float, list[float | None]]:
    """Value of ``name`` -> the final returns of the members that ended with it (None: a failed member)."""
    grouped: dict[float, list[float | None]] = {}
    for record in last.values():
        grouped.setdefault(record["hparams"][name], []).append(record["return"] if has_return(record) else None)
    return grouped


def has_return(record: dict[str, Any]) -> bool:
    """True when the evaluation scored a finite return (a failed member's is NaN or missing)."""
    return record.get("return") is not None and math.isfinite(record["return"])


def value_text(value: float) -> str:
    """A hyperparameter value as the report's tables show it."""
    return f"{value:.4g}"


def sweep_tables(records: list[dict[str, Any]], names: list[str]) -> list[str]:
    """Markdown: per hyperparameter that each member kept all run and that several members share a value of
    (a grid with repeats, e.g. seeds per learning rate), a row per value: how many members, their median,
    best and worst final return. Empty when no such hyperparameter (every value tried once: the member table
    already says it)."""
    last = final_records(records)
    lines: list[str] = []
    for name in names:
        by_value = finals_by_value(last, name)
        if not fixed_per_member(records, name) or len(by_value) == len(last):
            continue
        header = [name, "members", "median final return", "best final return", "worst final return"]
        lines += [f"### {name}", "", "| " + " | ".join(header) + " |", "|" + " ---: |" * len(header)]
        for value in sorted(by_value):
            finals = [v for v in by_value[value] if v is not None]
            cells = [value_text(value), str(len(by_value[value])),
                     _return_text(float(np.median(finals)) if finals else None),
                     _return_text(max(finals) if finals else None), _return_text(min(finals) if finals else None)]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    if lines:
        lines = ["## Sweep", "", "Members that share a hyperparameter value (it never changed in the run), "
                 "grouped by it; failed members' returns are not counted.", "", *lines]
    return lines


def plot_sensitivity(records: list[dict[str, Any]], names: list[str], best: int, path: Path,
                     scales: dict[str, bool] | None = None) -> None:
    """One panel per varying hyperparameter: the return of every evaluation against the value that produced
    it (colored by env steps: yellow = late in the run), each member's last evaluation ringed, the best
    member's a red star, and for a hyperparameter each member kept whose values repeat, the median final
    return per value; ``scales``: which to draw on a log axis (:func:`log_scales`)."""
    import matplotlib.pyplot as plt

    last = final_records(records)
    scored = [r for r in records if has_return(r)]
    steps = [r["env_step"] for r in scored]
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(max(7.0, 4.6 * cols + 1.2), 3.6 * rows), squeeze=False,
                             layout="constrained")  # constrained: room for the shared colorbar and every label
    points = None
    for ax, name in zip(axes.flat, names):
        xs = [r["hparams"][name] for r in scored]
        points = ax.scatter(xs, [r["return"] for r in scored], c=steps, cmap="viridis", s=12, alpha=0.55,
                            vmin=min(steps, default=0), vmax=max(steps, default=1), lw=0)
        ends = [r for m, r in last.items() if m != best and has_return(r)]
        ax.scatter([r["hparams"][name] for r in ends], [r["return"] for r in ends], s=42, facecolors="none",
                   edgecolors="black", lw=1.1, label="a member's last evaluation")
        if best in last and has_return(last[best]):
            ax.scatter([last[best]["hparams"][name]], [last[best]["return"]], s=150, marker="*", color="crimson",
                       edgecolors="black", lw=0.6, zorder=3, label=f"best: member {best}")
        scored_finals = {value: [v for v in finals if v is not None]
                         for value, finals in finals_by_value(last, name).items()}
        scored_finals = {value: finals for value, finals in scored_finals.items() if finals}
        if fixed_per_member(records, name) and 1 < len(scored_finals) < len(last):
            values = sorted(scored_finals)
            ax.plot(values, [float(np.median(scored_finals[v])) for v in values], color="black", lw=1.5,
                    label="median final return per value")
        values = [r["hparams"][name] for r in records]
        if log_axis(name, values, scales or {}):
            set_log_axis(ax, "x", values)
        ax.set_xlabel(name)
        ax.grid(alpha=0.3)
    for ax in axes[:, 0]:
        ax.set_ylabel("evaluation return")
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    axes.flat[0].legend(loc="best", fontsize=7)
    if points is not None and steps:
        fig.colorbar(points, ax=list(axes.flat), label="env steps per member", shrink=0.9)
    fig.suptitle("return vs hyperparameter: every evaluation, each member's last ringed")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def member_table(records: list[dict[str, Any]], names: list[str], best: int,
                 static: dict[int, dict[str, str]] | None = None) -> list[str]:
    """Markdown rows: member, its final static settings (``static``: mixed-shape runs), its varying
    hyperparameters (last value), final and peak return."""
    steps, _, values = curves(records)
    last_hp = {r["member"]: r["hparams"] for r in records}
    static = static or {}
    settings = list(dict.fromkeys(name for row in static.values() for name in row))
    header = ["member", *settings, *names, "final return", "peak return", "peak at step"]
    rows = ["| " + " | ".join(header) + " |", "|" + " ---: |" * len(header)]
    order = sorted(range(len(values)), key=lambda m: -np.nan_to_num(values[m][-1], nan=-np.inf))
    for m in order:
        finite = np.isfinite(values[m])
        peak = int(np.nanargmax(values[m])) if finite.any() else None
        cells = [f"**{m}** (best)" if m == best else str(m)]
        cells += [static.get(m, {}).get(n, "-") for n in settings]
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
    static = member_static(summary)
    names = varying_hparams(records)
    best_hp = [r for r in records if r["member"] == best][-1].get("hparams", {})
    config = read_config(run_dir)
    # A stopped run has no summary.json yet; config.yaml, written when it started, names the same algo and env.
    algo = (summary or config).get("algo") or "run"
    env = (summary or config).get("env") or run_dir.name
    title = f"{algo} on {env}"
    plot_learning_curves(records, best, out / "learning_curves.png", title)
    plot_best_member(records, best, out / "best_member.png", best_hp)
    if names:
        scales = log_scales(config)
        plot_hparams(records, names, best, out / "hparams.png", scales)
        plot_sensitivity(records, names, best, out / "sensitivity.png", scales)
    else:  # a resumed run's report is rewritten whole: no figure of an earlier report stays behind
        for stale in ("hparams.png", "sensitivity.png"):
            (out / stale).unlink(missing_ok=True)

    steps, _, values = curves(records)
    peak = int(np.nanargmax(values[best])) if np.isfinite(values[best]).any() else len(steps) - 1
    lines = [f"# {title}: population of {len(values)}", ""]
    if summary is None:
        lines += ["*The run has not finished (no summary.json): this shows the evaluations so far.*", ""]
    lines += [
        f"**Winner: member {best}**, final return {values[best][-1]:.1f} "
        f"(peak {values[best][peak]:.1f} at {steps[peak]:,.0f} env steps per member), with "
        + ", ".join([*(f"{n}={v}" for n, v in static.get(best, {}).items()),
                     *(f"{n}={v:.4g}" for n, v in best_hp.items())]) + ".",
        "",
    ]
    if summary is not None:
        lines += [
            f"Population median final return {_return_text(summary['median_return'])}; "
            f"{summary['env_steps_per_member']:,} env steps per member in {summary['wall_time_s']:.0f} s "
            f"({summary['env_steps_per_s']:,.0f} env steps/s, "
            + ("" if summary.get("updates_per_s") is None else f"{summary['updates_per_s']:,.0f} updates/s, ")
            + f"executor `{summary['executor']}`).",
            "",
        ]
    if summary is not None and "mean_policy_return" in summary:  # CEM-RL's product: the distribution's mean
        lines += [f"**CEM mean actor:** return {summary['mean_policy_return']:.1f} at the last generation (the "
                  "mean of the population's CEM distribution; the members above are its samples).", ""]
    events = read_jsonl(run_dir / "lineage.jsonl")
    lines += failure_lines(events)
    target = (summary or {}).get("target")
    if target:
        status, detail = target_outcome(target)
        lines += [f"**Target {status}:** {detail} (`--target-return`).", ""]
    lines += ["## Members", "", *member_table(records, names, best, static), ""]
    if not names:
        lines += ["All members share the same hyperparameters"
                  + (" (their static settings differ: below)." if static else "."), ""]
    if summary is not None:
        lines += static_tables(summary, events)
    lines += ["## Learning curves", "", "![learning curves](learning_curves.png)", "",
              "## Best member", "", "![best member](best_member.png)", ""]
    if names:
        lines += ["## Hyperparameters", "", "![hyperparameters](hparams.png)", "",
                  "## Sensitivity", "", "Return against each traced hyperparameter that varied: every evaluation "
                  "(colored by env steps, yellow = late), each member's last ringed, the best member's a red star.", "",
                  "![sensitivity](sensitivity.png)", "", *sweep_tables(records, names)]
    write_coupled_plots(records, out)  # CEM-RL / DvD-TD3 figures, when the run logged their fields
    others = sorted(p.name for p in out.glob("*.png") if p.name not in OWN_FIGURES)
    for name in others:  # figures other parts of populax put here (PBT lineage, benchmark timing)
        heading = Path(name).stem.replace("_", " ").capitalize().replace("Cem ", "CEM ")  # cem_mean_vs_best.png
        lines += [f"## {heading}", "", f"![{Path(name).stem}]({name})", ""]
    page = out / "report.md"
    page.write_text("\n".join(lines))
    return page
