"""Tables and figures of the reduced MuJoCo comparisons of issue 12, from finished (or stopped) run directories.

* CEM-RL vs TD3 on Hopper-v5: the CEM mean actor's and the best sampled actor's returns per generation,
  TD3's evaluation return, all against *total* env steps (CEM-RL: steps per actor x population);
* DvD-TD3 vs ensemble TD3 (lambda 0, same shared critic) on HalfCheetah-v5: the population's best evaluation
  return, log det K and the mean pairwise action distance per evaluation, against total env steps.

The runs themselves are plain ``populax train`` commands (docs/benchmarks.md, "CEM-RL and DvD-TD3 on MuJoCo"):

    PYTHONPATH=. python benchmarks/coupled_mujoco.py --cemrl RUN --td3 RUN --dvd RUN --ensemble RUN --out docs/bench
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np


def per_step(run_dir: Path) -> tuple[int, dict[int, list[dict]]]:
    """(population size, env step per member -> that evaluation's member records) of a run."""
    grouped: dict[int, list[dict]] = defaultdict(list)
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if "member" in record:
            grouped[record["env_step"]].append(record)
    pop = max(len(records) for records in grouped.values())
    return pop, dict(sorted(grouped.items()))


def column(records: list[dict], name: str) -> np.ndarray:
    """One logged field over the members (None -> NaN)."""
    return np.array([np.nan if r.get(name) is None else r[name] for r in records], float)


def cem_rows(run_dir: Path) -> list[tuple[int, float, float]]:
    """(total env steps, CEM mean actor's return, best sampled actor's evaluation return) per generation."""
    pop, steps = per_step(run_dir)
    return [(step * pop, float(column(rs, "mean_policy_return")[0]), float(np.nanmax(column(rs, "return"))))
            for step, rs in steps.items()]


def best_rows(run_dir: Path, *fields: str) -> list[tuple]:
    """(total env steps, best member's evaluation return, population-level ``fields``...) per evaluation."""
    pop, steps = per_step(run_dir)
    return [(step * pop, float(np.nanmax(column(rs, "return"))), *(float(column(rs, f)[0]) for f in fields))
            for step, rs in steps.items()]


def at(rows: list[tuple], total: int) -> tuple | None:
    """The row logged at ``total`` env steps, if any."""
    return next((row for row in rows if row[0] == total), None)


def cemrl_table(cem: list[tuple], td3: list[tuple]) -> str:
    """Markdown table: CEM-RL's generations next to TD3 at the same total env steps."""
    lines = ["| total env steps | CEM mean actor | best sampled actor | TD3 |", "| --- | --- | --- | --- |"]
    for total, mean, best in cem:
        other = at(td3, total)
        lines.append(f"| {total:,} | {mean:.0f} | {best:.0f} | {'' if other is None else f'{other[1]:.0f}'} |")
    return "\n".join(lines)


def dvd_table(dvd: list[tuple], ensemble: list[tuple]) -> str:
    """Markdown table: best return, log det K and pairwise distance of both populations per evaluation."""
    lines = ["| total env steps | DvD best | ensemble best | DvD log det K | ensemble log det K "
             "| DvD pairwise dist. | ensemble pairwise dist. | DvD lambda |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for total, best, logdet, distance, lam in dvd:
        other = at(ensemble, total)
        theirs = ("", "", "") if other is None else (f"{other[1]:.0f}", f"{other[2]:.2f}", f"{other[3]:.3f}")
        lines.append(f"| {total:,} | {best:.0f} | {theirs[0]} | {logdet:.2f} | {theirs[1]} | {distance:.3f} "
                     f"| {theirs[2]} | {lam:g} |")
    return "\n".join(lines)


def plot(cem: list[tuple], td3: list[tuple], dvd: list[tuple], ensemble: list[tuple], out: Path) -> None:
    """docs/bench/cemrl_vs_td3_hopper.png and dvd_vs_ensemble_halfcheetah.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    ax.plot([r[0] for r in cem], [r[1] for r in cem], "k-o", ms=3, label="CEM-RL: CEM mean actor")
    ax.plot([r[0] for r in cem], [r[2] for r in cem], "-o", color="crimson", ms=3, label="CEM-RL: best sampled actor")
    ax.plot([r[0] for r in td3], [r[1] for r in td3], "-s", color="tab:blue", ms=3, label="TD3")
    ax.set(xlabel="total env steps", ylabel="evaluation return", title="Hopper-v5, seed 0, reduced budget")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "cemrl_vs_td3_hopper.png", dpi=110)
    plt.close(fig)

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for rows, name, color in ((dvd, "DvD-TD3 (bandit)", "tab:red"), (ensemble, "ensemble TD3 (lambda 0)", "tab:gray")):
        steps = [r[0] for r in rows]
        left.plot(steps, [r[1] for r in rows], "-o", ms=3, color=color, label=name)
        right.plot(steps, [r[3] for r in rows], "-o", ms=3, color=color, label=name)
    left.set(xlabel="total env steps", ylabel="best member's evaluation return", title="HalfCheetah-v5: best return")
    right.set(xlabel="total env steps", ylabel="mean pairwise action distance", title="diversity")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out / "dvd_vs_ensemble_halfcheetah.png", dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("cemrl", "td3", "dvd", "ensemble"):
        parser.add_argument(f"--{name}", type=Path, required=True, help=f"run directory of the {name} run")
    parser.add_argument("--out", type=Path, default=Path("docs/bench"))
    args = parser.parse_args()
    cem, td3 = cem_rows(args.cemrl), best_rows(args.td3)
    fields = ("dvd_logdet", "dvd_pairwise_distance", "dvd_lambda")
    dvd, ensemble = best_rows(args.dvd, *fields), best_rows(args.ensemble, *fields)
    print(cemrl_table(cem, td3), "\n")
    print(dvd_table(dvd, ensemble))
    args.out.mkdir(parents=True, exist_ok=True)
    plot(cem, td3, dvd, ensemble, args.out)


if __name__ == "__main__":
    main()
