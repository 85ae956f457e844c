"""Training throughput vs population size, compile excluded (any algorithm on a gymnax env).

Measures env steps per second summed over members for whole compiled training
chunks (act + env step + buffer + updates, or rollouts + PPO epochs), for
several population sizes. Compilation (with the first chunk) is timed
separately. Chunks of the different sizes are timed round-robin in one
process, so a noisy machine affects every size alike, and the printed ratios
are the meaningful numbers.

    .venv/bin/python benchmarks/throughput.py --pops 1,8,32 --hidden 64,64            # TD3 Pendulum
    .venv/bin/python benchmarks/throughput.py --algo dqn --env CartPole-v1 --pops 1,8 # with its recipe

With ``--algo`` other than td3 the tuned recipe (configs/ALGO-ENV.yaml), if any,
gives every setting not set here; learning starts at once so every timed chunk
learns (steady state).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import jax

from populax.run.config import build_config
from populax.run.recipes import recipe_layer
from populax.runtime import init_population, prepare


def build(pop: int, args: argparse.Namespace):
    """A compiled chunk function, an initial population and the compile+first-chunk seconds for ``pop`` members."""
    _, recipe = recipe_layer(args.algo, args.env) if args.recipe else (None, {})
    layer = {"algo": args.algo, "env": args.env, "pop": pop, "executor": args.executor, "eval_every": args.chunk_steps,
             "total_steps": args.chunk_steps * 100, "learning_starts": 0, "out": "unused"}
    if args.hidden:
        layer["hidden"] = args.hidden
    setup = prepare(build_config([recipe, layer]))
    backend = setup.backend

    def chunk(population):
        return backend.advance(population, 0)

    population = init_population(setup)
    start = time.perf_counter()
    population, _ = chunk(population)  # compile + first chunk
    jax.block_until_ready(population)
    return chunk, population, time.perf_counter() - start, setup.chunk_steps


def main() -> None:
    """Parse flags, time chunks round-robin, print a table of throughputs and ratios."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algo", default="td3", help="td3, sac, dqn, ppo")
    parser.add_argument("--env", default="Pendulum-v1")
    parser.add_argument("--pops", default="1,8,32", help="population sizes, comma-separated")
    parser.add_argument("--hidden", default=None, help="network widths, e.g. 64,64 (default: the recipe's, else 256,256)")
    parser.add_argument("--no-recipe", dest="recipe", action="store_false", help="ignore configs/ALGO-ENV.yaml")
    parser.add_argument("--executor", default="auto")
    parser.add_argument("--chunk-steps", type=int, default=500,
                        help="env steps per member per timed chunk (on-policy: rounded up to whole rollouts)")
    parser.add_argument("--rounds", type=int, default=5, help="timed chunks per population size")
    args = parser.parse_args()
    pops = [int(p) for p in args.pops.split(",")]

    load_start = os.getloadavg()[0]
    programs = {pop: build(pop, args) for pop in pops}
    times: dict[int, list[float]] = {pop: [] for pop in pops}
    for _ in range(args.rounds):
        for pop in pops:
            chunk, population, compile_s, steps = programs[pop]
            start = time.perf_counter()
            population, _ = chunk(population)
            jax.block_until_ready(population)
            times[pop].append(time.perf_counter() - start)
            programs[pop] = (chunk, population, compile_s, steps)

    steps = programs[pops[0]][3]
    base = pops[0]
    base_rate = base * steps / statistics.median(times[base])
    print(f"algo={args.algo} env={args.env} hidden={args.hidden or 'recipe'} executor={args.executor} chunk={steps} "
          f"steps/member, {args.rounds} rounds, devices={jax.devices()}, load average {load_start:.1f} at start, {os.getloadavg()[0]:.1f} at end")
    print(f"{'pop':>5} {'compile+1st (s)':>16} {'median chunk (s)':>17} {'env steps/s':>12} {'x pop ' + str(base):>10} {'per-member cost':>16}")
    for pop in pops:
        median = statistics.median(times[pop])
        rate = pop * steps / median
        print(f"{pop:>5} {programs[pop][2]:>16.1f} {median:>17.3f} {rate:>12,.0f} {rate / base_rate:>10.2f} "
              f"{(median / pop) / (statistics.median(times[base]) / base):>16.2f}")


if __name__ == "__main__":
    main()
