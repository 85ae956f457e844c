"""TD3 on Gymnasium HalfCheetah-v5 (host path): population 1 vs 4 vs 8.

For each population size N it measures

* raw stepping: the same vector env (N x E HalfCheetah-v5, same mode) stepped
  with random actions and no learning, in env steps/s;
* training: ``populax train`` with the overlapped collector, in env steps/s
  (all members, steady state: after the first evaluation, evaluation time
  excluded), the learner's busy fraction (share of that wall time spent
  inserting and updating), and the ratio of training to raw stepping speed.

Usage::

    .venv/bin/python benchmarks/host_halfcheetah.py --pops 1,4,8 --total-steps 4000

Prints a Markdown table (docs/benchmarks.md records one).
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings

import numpy as np

import populax
from populax.envs.host_envs import make_host_spec, make_vector_env


def raw_steps_per_s(num_envs: int, mode: str, seconds: float = 10.0) -> float:
    """Env steps/s of ``num_envs`` HalfCheetah-v5 in one vector env, random actions."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        spec = make_host_spec("HalfCheetah-v5")
        envs = make_vector_env(spec, num_envs, mode)
    envs.reset(seed=0)
    rng = np.random.default_rng(0)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        envs.step(rng.uniform(-1, 1, size=(num_envs, spec.action.size)))
        steps += num_envs
    elapsed = time.perf_counter() - start
    envs.close()
    return steps / elapsed


def train_rates(pop: int, args: argparse.Namespace) -> dict:
    """Steady-state training throughput and learner busy fraction for population ``pop``."""
    with tempfile.TemporaryDirectory() as out:
        config = populax.TrainConfig(
            env="HalfCheetah-v5", algo="td3", pop=pop, envs_per_member=args.envs_per_member,
            total_steps=args.total_steps, eval_every=args.eval_every, learning_starts=args.learning_starts,
            eval_episodes=1, hidden=tuple(args.hidden), vector_env=args.vector_env, overlap=not args.no_overlap,
            max_episode_steps=args.eval_every, out=out, force=True, progress=False, tensorboard=False, seed=0,
        )
        result = populax.train(config)
    return result.summary["host"]


def main() -> None:
    """Run the benchmark and print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pops", default="1,4,8")
    parser.add_argument("--total-steps", type=int, default=4000)
    parser.add_argument("--eval-every", type=int, default=1000)
    parser.add_argument("--learning-starts", type=int, default=1000)
    parser.add_argument("--envs-per-member", type=int, default=1)
    parser.add_argument("--hidden", type=lambda s: [int(v) for v in s.split(",")], default=[256, 256])
    parser.add_argument("--vector-env", default="sync")
    parser.add_argument("--no-overlap", action="store_true")
    args = parser.parse_args()
    print("| pop | raw env steps/s | train env steps/s (all members) | per member | learner busy | train / raw |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for pop in (int(p) for p in args.pops.split(",")):
        raw = raw_steps_per_s(pop * args.envs_per_member, args.vector_env)
        host = train_rates(pop, args)
        rate = host["steady_env_steps_per_s"]
        print(f"| {pop} | {raw:,.0f} | {rate:,.0f} | {rate / pop:,.0f} | "
              f"{host['steady_learner_busy_fraction']:.0%} | {rate / raw:.2f} |", flush=True)


if __name__ == "__main__":
    main()
