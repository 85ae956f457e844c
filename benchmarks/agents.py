"""Benchmark SAC, DQN and PPO populations: returns over env steps and wall time, pop 1 vs 8 throughput.

Each case trains with its tuned recipe (configs/ALGO-ENV.yaml, or library
defaults when there is none) and prints markdown for docs/benchmarks.md.

    python benchmarks/agents.py --cases sac:Pendulum-v1 ppo:CartPole-v1 --pop 8 --steps 20000
    python benchmarks/agents.py --cases ppo:Breakout-MinAtar --pop 8 --png-dir docs/img

``--png-dir`` keeps each run's learning-curve figure (the run's
report/learning_curves.png) as DIR/ALGO-ENV-popN.png. For population 1 vs N
throughput with compilation excluded use benchmarks/throughput.py.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

import populax
from populax.run.config import build_config
from populax.run.recipes import recipe_layer


def run_case(algo: str, env: str, pop: int, steps: int | None, eval_every: int | None, out: Path) -> dict:
    """Train one population with the recipe; return its curve and summary."""
    _, recipe = recipe_layer(algo, env)
    overrides = {"algo": algo, "env": env, "pop": pop, "out": str(out), "force": True,
                 "progress": False, "tensorboard": False, "seed": 0}
    if steps:
        overrides["total_steps"] = steps
    if eval_every:
        overrides["eval_every"] = eval_every
    result = populax.train(build_config([recipe, overrides]))
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    curve: dict[int, list] = {}
    for record in records:
        curve.setdefault(record["env_step"], []).append((record["return"], record["wall_time_s"]))
    rows = [(step, float(np.median([r for r, _ in v])), max(w for _, w in v)) for step, v in sorted(curve.items())]
    return {"curve": rows, "summary": result.summary}


def main() -> None:
    """Run the cases given on the command line and print markdown."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cases", nargs="+", default=["sac:Pendulum-v1", "dqn:CartPole-v1", "ppo:CartPole-v1"])
    parser.add_argument("--pop", type=int, default=8)
    parser.add_argument("--steps", type=int, default=None, help="env steps per member (default: the recipe's)")
    parser.add_argument("--eval-every", type=int, default=None)
    parser.add_argument("--throughput-steps", type=int, default=0,
                        help="if > 0, also time pop 1 vs --pop for this many steps (includes compilation; see throughput.py)")
    parser.add_argument("--png-dir", type=Path, default=None, help="copy each run's learning-curve PNG here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for case in args.cases:
            algo, env = case.split(":")
            result = run_case(algo, env, args.pop, args.steps, args.eval_every, Path(tmp) / case.replace(":", "-"))
            s = result["summary"]
            print(f"\n### {algo} on {env}, population {args.pop}\n")
            print("| env steps / member | median return | wall time (s) |\n| --- | --- | --- |")
            for step, ret, wall in result["curve"]:
                print(f"| {step} | {ret:.1f} | {wall:.0f} |")
            if args.png_dir:
                args.png_dir.mkdir(parents=True, exist_ok=True)
                png = args.png_dir / f"{algo}-{env}-pop{args.pop}.png"
                shutil.copyfile(Path(tmp) / case.replace(":", "-") / "report" / "learning_curves.png", png)
                print(f"\nlearning curves: {png}")
            print(f"\nload average at the end: {os.getloadavg()[0]:.1f}")
            print(f"\nfinal returns: {[round(m['final_return'], 1) for m in s['members']]}; "
                  f"{s['env_steps_per_s']:.0f} env steps/s total, first chunk (compile) {s['first_chunk_s']:.0f} s")
            if args.throughput_steps:
                rates = {}
                for pop in (1, args.pop):
                    r = run_case(algo, env, pop, args.throughput_steps, args.throughput_steps, Path(tmp) / f"{case}-{pop}")
                    rates[pop] = r["summary"]["env_steps_per_s"]
                print(f"\nthroughput ({args.throughput_steps} steps/member, incl. compile): pop 1 {rates[1]:.0f} env steps/s, "
                      f"pop {args.pop} {rates[args.pop]:.0f} env steps/s, ratio {rates[args.pop] / rates[1]:.2f}x")


if __name__ == "__main__":
    main()
