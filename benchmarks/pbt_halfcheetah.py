"""The paper's TD3-PBT experiment on Gymnasium HalfCheetah-v5, next to the same run without PBT.

Runs ``configs/td3-pbt-HalfCheetah-v5.yaml`` (the paper's PBT variant: the
bottom 40% copy a top member's policy and redraw every hyperparameter) and the
same recipe with ``--strategy independent`` (the same seed draws the same
initial hyperparameters), at a budget given on the command line, then writes

* ``OUT/pbt_vs_independent.png``: population median and best evaluation
  return over env steps per member, both runs;
* ``OUT/lineage.png``: the PBT run's lineage tree (copied from its report);
* a Markdown table (stdout): final median/best, exploit count, wall time.

Usage (the issue's reduced budget; hours on a 2-core CPU)::

    .venv/bin/python benchmarks/pbt_halfcheetah.py --pop 8 --total-steps 100000 --out docs/bench/pbt-halfcheetah
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from learning_curves import plot

from populax.run.config import build_config, load_recipe
from populax.run.recipes import resolve_config_path
from populax.runtime import prepare, run


def run_one(strategy: str, args: argparse.Namespace) -> tuple[Path, float]:
    """Train the recipe with ``strategy``; returns (run directory, wall seconds)."""
    out = args.out / f"run-{strategy}"
    overrides = {"pop": args.pop, "total_steps": args.total_steps, "hidden": args.hidden, "strategy": strategy,
                 "eval_every": args.eval_every, "eval_episodes": args.eval_episodes, "out": str(out), "force": True,
                 "progress": False, "tensorboard": False}
    for name in ("learning_starts", "ready_interval"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    config = build_config([load_recipe(resolve_config_path("td3-pbt-HalfCheetah-v5")), overrides])
    start = time.perf_counter()
    run(prepare(config))
    return out, time.perf_counter() - start


def main() -> None:
    """Run both strategies, draw the curves, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pop", type=int, default=8)
    parser.add_argument("--total-steps", type=int, default=100_000)
    parser.add_argument("--eval-every", type=int, default=10_000)
    parser.add_argument("--eval-episodes", type=int, default=5)
    parser.add_argument("--learning-starts", type=int, default=None, help="default: the recipe's (10000)")
    parser.add_argument("--ready-interval", type=int, default=None, help="default: the recipe's (50000)")
    parser.add_argument("--hidden", default="256,256")
    parser.add_argument("--out", type=Path, default=Path("docs/bench/pbt-halfcheetah"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    runs, walls = {}, {}
    for strategy in ("pbt", "independent"):
        runs[strategy], walls[strategy] = run_one(strategy, args)
    plot(runs, args.out / "pbt_vs_independent.png", "TD3 on HalfCheetah-v5: PBT (the paper's variant) vs independent")
    shutil.copy(runs["pbt"] / "report" / "lineage.png", args.out / "lineage.png")
    print("| strategy | final median | final best | exploits | wall time |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for strategy, run_dir in runs.items():
        summary = json.loads((run_dir / "summary.json").read_text())
        exploits = summary.get("lineage_events", {}).get("exploit", 0)
        print(f"| {strategy} | {summary['median_return']:.0f} | {summary['best_return']:.0f} | {exploits} | "
              f"{walls[strategy] / 60:.1f} min |")


if __name__ == "__main__":
    main()
