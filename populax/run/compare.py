"""`populax compare RUN RUN ... --out DIR`: several runs side by side.

The question a population run answers is comparative: did PBT beat the random search of ``--strategy
independent``, in env steps and in wall time; does a seed change the ranking; what did a wider network buy. This
reads only the runs' files (metrics.jsonl, summary.json, config.yaml) and writes ``DIR/comparison.png`` (each
run's population median with its interquartile band, and the best member at each evaluation, against env steps
per member and against wall time) and ``DIR/comparison.md`` (what each run was and how it ended). Runs that differ only in their seed are
grouped (``seed_groups``): the page adds each setting's mean +- std over its seeds and ``DIR/seeds.png``. A run
still in progress (no summary.json) is shown with the evaluations it has so far.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import yaml

from populax.errors import ConfigError
from populax.run.config import TrainConfig, check_target_stat, config_to_dict
from populax.run.report import curves, line_colors, population_band, read_metrics

FIGURE = "comparison.png"
SEEDS_FIGURE = "seeds.png"
PAGE = "comparison.md"
NOT_IDENTITY = ("seed", "out", "force", "progress", "tensorboard", "checkpoint_every", "keep_checkpoints",
                "save_buffer", "executor", "workers", "worker_cpus", "worker_gpus", "ray_address")
"""config.yaml settings that do not make runs different experiments (the seed, where and how often a run was
written, how its members were run): runs that differ only in these are seeds of one setting (``seed_groups``).
``init_from`` is a setting: runs warm-started from different runs are different experiments."""


class RunCurves(NamedTuple):
    """One run as the comparison draws and tabulates it."""

    label: str
    run_dir: Path
    steps: np.ndarray
    """Env steps per member at each evaluation."""
    wall: np.ndarray
    """Wall seconds at each evaluation."""
    median: np.ndarray
    low: np.ndarray
    high: np.ndarray
    """Population median, 25th and 75th percentile of the evaluation return at each evaluation."""
    best: np.ndarray
    """The best member's return at each evaluation (whoever it was then)."""
    config: dict[str, Any]
    summary: dict[str, Any] | None
    """summary.json, or None for a run that has not finished."""


def run_labels(run_dirs: list[Path]) -> list[str]:
    """A short unique name per run: its directory name, with as many parent directories as tell them apart."""
    for depth in range(1, max(len(p.resolve().parts) for p in run_dirs) + 1):
        labels = ["/".join(p.resolve().parts[-depth:]) for p in run_dirs]
        if len(set(labels)) == len(labels):
            return labels
    raise ConfigError("RUN: a run directory is named twice")


def load_run(run_dir: Path, label: str) -> RunCurves:
    """The curves, configuration and summary of one run directory (ConfigError: not a run, or no evaluation yet)."""
    records = read_metrics(run_dir)
    if not records:
        raise ConfigError(f"RUN: {run_dir / 'metrics.jsonl'} has no records yet; nothing to compare")
    steps, wall, values = curves(records)
    median, low, high = population_band(values)
    with np.errstate(all="ignore"):
        finite = np.where(np.isfinite(values), values, -np.inf)
        best = np.where(np.isfinite(values).any(axis=0), finite.max(axis=0), np.nan)
    config_path, summary_path = run_dir / "config.yaml", run_dir / "summary.json"
    config = yaml.safe_load(config_path.read_text()) if config_path.is_file() else {}
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else None
    return RunCurves(label, run_dir, steps, wall, median, low, high, best, config or {}, summary)


def describe(run: RunCurves) -> str:
    """``td3 on Pendulum-v1, pbt, pop 8``: what a run was."""
    config = run.config
    return (f"{config.get('algo', '?')} on {config.get('env', '?')}, {config.get('strategy', '?')}, "
            f"pop {config.get('pop', '?')}")


def _number(value: float | None, digits: int = 1) -> str:
    return "-" if value is None or not np.isfinite(value) else f"{value:,.{digits}f}"


def first_reach(run: RunCurves, target: float, stat: str) -> tuple[float, float] | None:
    """(env steps per member, wall seconds) of the run's first evaluation whose ``stat`` (best or median
    return) reaches ``target``; None if none does."""
    values = run.best if stat == "best" else run.median
    reached = np.flatnonzero(np.nan_to_num(values, nan=-np.inf) >= target)
    return (float(run.steps[reached[0]]), float(run.wall[reached[0]])) if reached.size else None


def comparison_table(runs: list[RunCurves], target: float | None = None, stat: str = "best") -> list[str]:
    """A markdown table: one row per run, how it ended and how fast; with ``target``, when each run's ``stat``
    return first reached it (time to threshold)."""
    reach = [] if target is None else [f"{stat} >= {target:g} at env steps / member", f"{stat} >= {target:g} at wall (s)"]
    header = ["run", "algorithm, env, strategy, pop", "env steps / member", "final median", "final best", "peak best",
              "wall (s)", "env steps/s", *reach]
    lines = ["| " + " | ".join(header) + " |", "| --- | --- |" + " ---: |" * (len(header) - 2)]
    for run in runs:
        summary = run.summary or {}
        peak = float(np.nanmax(run.best)) if np.isfinite(run.best).any() else None
        state = "" if run.summary else " (running)"
        cells = [f"{run.label}{state}", describe(run), f"{run.steps[-1]:,.0f}", _number(run.median[-1]),
                 _number(run.best[-1]), _number(peak), _number(run.wall[-1], 0),
                 _number(summary.get("env_steps_per_s"), 0)]
        if target is not None:
            when = first_reach(run, target, stat)
            cells += ["not reached", "-"] if when is None else [f"{when[0]:,.0f}", _number(when[1], 0)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def seed_groups(runs: list[RunCurves]) -> list[tuple[str, list[RunCurves]]]:
    """The runs grouped by setting: runs whose config.yaml differ only in ``NOT_IDENTITY`` (the seed, where they
    were written) are seeds of one group, named by the settings that tell the groups apart
    (``strategy=pbt``), in the order of their first run."""
    defaults = config_to_dict(TrainConfig())  # a run written before a setting existed had its default
    names = sorted(({name for run in runs for name in run.config} | set(defaults)) - set(NOT_IDENTITY))
    value = lambda run, name: yaml.safe_dump(run.config.get(name, defaults.get(name)))  # noqa: E731  (lists, dicts too)
    differing = [name for name in names if len({value(run, name) for run in runs}) > 1]
    groups: dict[tuple[str, ...], list[RunCurves]] = {}
    for run in runs:
        groups.setdefault(tuple(value(run, name) for name in differing), []).append(run)
    def label(run: RunCurves) -> str:
        return ", ".join(f"{name}={run.config.get(name, defaults.get(name))}" for name in differing) or "all runs"
    return [(label(members[0]), members) for members in groups.values()]


def mean_std(values: list[float]) -> str:
    """``mean +- std (n)`` of the finite ``values`` (sample std, ddof 1)."""
    finite = np.asarray([v for v in values if v is not None and np.isfinite(v)], np.float64)
    if finite.size == 0:
        return "-"
    spread = f" +- {finite.std(ddof=1):,.1f}" if finite.size > 1 else ""
    return f"{finite.mean():,.1f}{spread} ({finite.size})"


def seeds_table(groups: list[tuple[str, list[RunCurves]]]) -> list[str]:
    """One row per group of seeds: its seeds, and the mean +- std over them of the final population median and
    final best member."""
    lines = ["| setting | seeds | env steps / member | final median, mean +- std (n) | final best, mean +- std (n) |",
             "| --- | --- | ---: | ---: | ---: |"]
    for label, members in groups:
        seeds = ", ".join(str(run.config.get("seed", "?")) for run in members)
        steps = sorted({int(run.steps[-1]) for run in members})
        lines.append(f"| {label} | {seeds} | {' / '.join(f'{s:,}' for s in steps)} | "
                     f"{mean_std([float(run.median[-1]) for run in members])} | "
                     f"{mean_std([float(run.best[-1]) for run in members])} |")
    return lines


def plot_seeds(groups: list[tuple[str, list[RunCurves]]], path: Path) -> None:
    """Each group's population median averaged over its seeds (line) with the seeds' lowest and highest median
    (band), at the evaluations every seed of the group has."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for (label, members), color in zip(groups, line_colors(len(groups))):
        steps = sorted(set.intersection(*(set(run.steps.tolist()) for run in members)))
        medians = np.array([[run.median[list(run.steps).index(s)] for s in steps] for run in members])
        with np.errstate(all="ignore"):
            ax.fill_between(steps, np.nanmin(medians, axis=0), np.nanmax(medians, axis=0), color=color, alpha=0.18,
                            lw=0)
            seeds = f"{len(members)} seed{'s' if len(members) > 1 else ''}"
            ax.plot(steps, np.nanmean(medians, axis=0), color=color, lw=2, label=f"{label} ({seeds})")
    ax.set_xlabel("env steps per member")
    ax.set_ylabel("population median return")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    ax.set_title("mean over seeds (line), lowest to highest seed (band)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_comparison(runs: list[RunCurves], path: Path, target: float | None = None) -> None:
    """Each run's median, interquartile band and best member, against env steps and against wall time; the
    ``target`` return (``--target``) as a horizontal line."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8), sharey=True)
    for ax, axis, name in ((axes[0], "steps", "env steps per member"), (axes[1], "wall", "wall time (s)")):
        for run, color in zip(runs, line_colors(len(runs))):
            x = getattr(run, axis)
            ax.fill_between(x, run.low, run.high, color=color, alpha=0.18, lw=0)
            ax.plot(x, run.median, color=color, lw=2, label=f"{run.label}: median")
            ax.plot(x, run.best, color=color, lw=1.2, ls="--", label=f"{run.label}: best member")
        if target is not None:
            ax.axhline(target, color="grey", lw=1, ls=":", label=f"target {target:g}")
        ax.set_xlabel(name)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("evaluation return")
    axes[0].legend(loc="best", fontsize=8)
    fig.suptitle("population median (line) with interquartile band, best member (dashed)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def compare_runs(run_dirs: list[str | Path], out: str | Path, target: float | None = None,
                 target_stat: str = "best") -> Path:
    """Write ``out/comparison.png`` and ``out/comparison.md`` for ``run_dirs`` (two or more); returns the page.
    With ``target``, the table adds when each run's ``target_stat`` (best or median) return first reached it,
    in env steps per member and wall seconds, and the page names the fastest.

    Every run is read before anything is written, so a mistake (a directory that is not a run) writes nothing."""
    import matplotlib

    matplotlib.use("Agg")
    check_target_stat(target_stat)
    if target is not None and not np.isfinite(target):
        raise ConfigError(f"--target: must be a finite number (got {target})")
    paths = [Path(p) for p in run_dirs]
    if len(paths) < 2:
        raise ConfigError(f"RUN: compare needs two or more run directories (got {len(paths)})")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out: {out} exists and is not a directory")
    runs = [load_run(path, label) for path, label in zip(paths, run_labels(paths))]
    out.mkdir(parents=True, exist_ok=True)
    plot_comparison(runs, out / FIGURE, target)
    lines = [f"# {len(runs)} runs compared", ""]
    envs = sorted({str(run.config.get("env")) for run in runs})
    if len(envs) > 1:
        lines += [f"*These runs are on different environments ({', '.join(envs)}): their returns are not on one "
                  "scale.*", ""]
    budgets = sorted({int(run.steps[-1]) for run in runs})
    if len(budgets) > 1:  # a final return after 8,000 steps is not comparable with one after 2,000
        lines += [f"*These runs ended at different env steps per member ({', '.join(f'{b:,}' for b in budgets)}): "
                  "compare their curves at equal steps (the figure's left panel), not their final returns.*", ""]
    lines += comparison_table(runs, target, target_stat) + [""]
    ranked = sorted(runs, key=lambda run: -np.inf if not np.isfinite(run.median[-1]) else run.median[-1], reverse=True)
    unequal = " (at unequal budgets)" if len(budgets) > 1 else ""
    lines += [f"Highest final population median{unequal}: **{ranked[0].label}** ({_number(ranked[0].median[-1])}).",
              ""]
    if target is not None:
        reached = [(when, run) for run in runs if (when := first_reach(run, target, target_stat)) is not None]
        if reached:
            (steps, wall), first = min(reached, key=lambda pair: pair[0])
            lines += [f"First to a {target_stat} return of {target:g}: **{first.label}** ({steps:,.0f} env steps per "
                      f"member, {wall:,.0f} s).", ""]
        else:
            lines += [f"No run's {target_stat} return reached {target:g}.", ""]
    lines += [f"![comparison]({FIGURE})", ""]
    groups = seed_groups(runs)
    if any(len(members) > 1 for _, members in groups):  # seeds of one setting: their spread, not one seed's luck
        plot_seeds(groups, out / SEEDS_FIGURE)
        lines += ["## Across seeds", "",
                  "Runs that differ only in `--seed` (and where they were written) are seeds of one setting:", "",
                  *seeds_table(groups), "", f"![seeds]({SEEDS_FIGURE})", ""]
    lines += ["Each run's own report (every member, hyperparameters): "
              + ", ".join(f"`{run.run_dir / 'report' / 'report.md'}`" for run in runs), ""]
    page = out / PAGE
    page.write_text("\n".join(lines))
    return page


__all__ = ["RunCurves", "load_run", "compare_runs"]
