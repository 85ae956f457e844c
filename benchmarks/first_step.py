"""Time to the first training step of `populax train` for every algorithm (issue 7, item 4).

    python benchmarks/first_step.py [--pop 8]

Runs each algorithm's recipe for one short chunk through the real CLI (a
fresh process each, so nothing is cached) and prints the compile seconds and
the moment the first training step started, as the progress bar shows them
(``compile_s`` / ``first_step_s`` in summary.json).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CASES = (("td3", "Pendulum-v1"), ("sac", "Pendulum-v1"), ("dqn", "CartPole-v1"), ("ppo", "CartPole-v1"),
         ("dqn", "Breakout-MinAtar"), ("ppo", "Breakout-MinAtar"))


def first_step(algo: str, env: str, pop: int, steps: int, out: Path) -> dict:
    """compile_s and first_step_s of one short run."""
    subprocess.run([sys.executable, "-m", "populax.cli", "train", "--algo", algo, "--env", env, "--pop", str(pop),
                    "--total-steps", str(steps), "--eval-every", str(steps), "--learning-starts", "0",
                    "--no-progress", "--no-tensorboard", "--out", str(out)], check=True, capture_output=True)
    summary = json.loads((out / "summary.json").read_text())
    return {k: summary[k] for k in ("compile_s", "first_step_s", "first_chunk_s")}


def main() -> None:
    """Print one row per algorithm and environment."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pop", type=int, default=8)
    parser.add_argument("--steps", type=int, default=2048, help="env steps per member of the one chunk")
    args = parser.parse_args()
    print(f"| algo | env | pop | compile (s) | first step at (s) | first chunk of {args.steps} steps (s) |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    with tempfile.TemporaryDirectory() as tmp:
        for i, (algo, env) in enumerate(CASES):
            r = first_step(algo, env, args.pop, args.steps, Path(tmp) / str(i))
            print(f"| {algo} | {env} | {args.pop} | {r['compile_s']:.1f} | {r['first_step_s']:.1f} | {r['first_chunk_s']:.1f} |",
                  flush=True)


if __name__ == "__main__":
    main()
