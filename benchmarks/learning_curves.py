"""Population learning curves and run costs, from finished run directories.

For each run (``LABEL=RUN_DIR``): the population's median and best evaluation
return over env steps per member (one PNG for all runs), and a table of final
median / best, wall time, compile time and the cost in seconds per member per
million env steps (wall time / (members x million steps each)), the unit the
issue's rejax anchor is quoted in.

    .venv/bin/python benchmarks/learning_curves.py pbt=runs/a independent=runs/b --out OUT --title "TD3, brax halfcheetah"

writes ``OUT/curves.png`` and ``OUT/learning.json`` and prints a Markdown table.
benchmarks/pbt_halfcheetah.py and benchmarks/gpu_study.sh use it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def population_curves(run_dir: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(env steps per member, median return, best return) at each evaluation of ``run_dir``/metrics.jsonl."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = sorted({r["env_step"] for r in records if "member" in r})
    by_step = [[r["return"] for r in records if r.get("env_step") == s and "member" in r] for s in steps]
    return np.asarray(steps), np.asarray([np.nanmedian(v) for v in by_step]), np.asarray([np.nanmax(v) for v in by_step])


def partial_summary(run_dir: Path) -> dict:
    """What summary.json would hold, from metrics.jsonl alone: a run cut short (a stage's time limit) has no
    summary, but every evaluation it finished is in its metrics (``wall_time_s``: since the run started)."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    last = max(r["env_step"] for r in records if "member" in r)
    final = [r for r in records if r.get("env_step") == last and "member" in r]
    returns = [r["return"] for r in final]
    lineage = run_dir / "lineage.jsonl"
    events = [json.loads(line) for line in lineage.read_text().splitlines()] if lineage.is_file() else []
    return {"pop": len(final), "env_steps_per_member": last, "median_return": float(np.nanmedian(returns)),
            "best_return": float(np.nanmax(returns)), "wall_time_s": max(r["wall_time_s"] for r in final),
            "lineage_events": {"exploit": sum(e.get("event") == "exploit" for e in events)}, "finished": False}


def run_costs(run_dir: Path) -> dict:
    """Final returns and costs of one run (its summary.json; metrics.jsonl for a run cut short)."""
    path = run_dir / "summary.json"
    summary = json.loads(path.read_text()) if path.is_file() else partial_summary(run_dir)
    pop, steps = summary["pop"], summary["env_steps_per_member"]
    member_millions = pop * steps / 1e6
    return {
        "pop": pop,
        "env_steps_per_member": steps,
        "updates_per_member": summary.get("updates_per_member"),
        "median_return": summary["median_return"],
        "best_return": summary["best_return"],
        "exploits": summary.get("lineage_events", {}).get("exploit", 0),
        "wall_time_s": summary["wall_time_s"],
        "compile_s": summary.get("compile_s"),
        "env_steps_per_s": summary.get("env_steps_per_s"),
        "s_per_member_per_million_steps": summary["wall_time_s"] / member_millions,
        "s_per_member_per_million_steps_after_compile":
            (summary["wall_time_s"] - (summary.get("compile_s") or 0.0)) / member_millions,
        "devices": summary.get("devices"),
        "finished": summary.get("finished", True),
    }


def plot(runs: dict[str, Path], path: Path, title: str) -> None:
    """Median (solid) and best (dashed) return over env steps per member, one colour per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    colors = ("tab:blue", "tab:orange", "tab:green", "tab:red")
    # Distinct dash styles: an unreplaced best member trains identically in two runs, so the lines can coincide.
    for (label, run_dir), color, dashes in zip(runs.items(), colors, ("--", ":", "-.", "--")):
        steps, median, best = population_curves(run_dir)
        ax.plot(steps, median, color=color, marker="o", markersize=3, label=f"{label}: median")
        ax.plot(steps, best, color=color, linestyle=dashes, linewidth=2, marker="o", markersize=3, label=f"{label}: best")
    ax.set_xlabel("env steps per member")
    ax.set_ylabel("evaluation return")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def markdown_table(costs: dict[str, dict]) -> str:
    """One row per run: final median/best, exploits, wall and compile time, s per member per 1M steps."""
    lines = ["| run | pop | steps/member | final median | final best | exploits | wall | compile | s / member / 1M steps |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for label, c in costs.items():
        name = label if c["finished"] else f"{label} (cut short)"
        lines.append(f"| {name} | {c['pop']} | {c['env_steps_per_member']:,} | {c['median_return']:.0f} | "
                     f"{c['best_return']:.0f} | {c['exploits']} | {c['wall_time_s']:.0f} s | {c['compile_s'] or 0:.0f} s | "
                     f"{c['s_per_member_per_million_steps']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    """Read the runs named on the command line, write the plot and the JSON, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", metavar="LABEL=RUN_DIR")
    parser.add_argument("--out", type=Path, required=True, help="folder for curves.png and learning.json")
    parser.add_argument("--title", default="population learning curves")
    args = parser.parse_args()
    runs = {}
    for item in args.runs:
        label, _, path = item.partition("=")
        if not path:
            parser.error(f"runs: expected LABEL=RUN_DIR, got {item!r}")
        if not (Path(path) / "metrics.jsonl").is_file():
            print(f"skipped {label}: {path} has no metrics.jsonl (the run did not evaluate once)")
            continue
        runs[label] = Path(path)
    if not runs:
        raise SystemExit("no finished run to report")
    args.out.mkdir(parents=True, exist_ok=True)
    plot(runs, args.out / "curves.png", args.title)
    costs = {label: run_costs(run_dir) for label, run_dir in runs.items()}
    curves = {label: dict(zip(("env_steps", "median", "best"), (a.tolist() for a in population_curves(run_dir))))
              for label, run_dir in runs.items()}
    (args.out / "learning.json").write_text(json.dumps({"runs": costs, "curves": curves}, indent=2))
    print(markdown_table(costs))


if __name__ == "__main__":
    main()
