"""Training throughput vs population size on gymnax Pendulum-v1 (issue: core).

Measures env steps per second summed over members for whole compiled training
chunks (act + env step + buffer + updates), for several population sizes.
Compilation is excluded. Chunks of the different sizes are timed round-robin
in one process, so a noisy machine affects every size alike, and the printed
ratios are the meaningful numbers.

    .venv/bin/python benchmarks/throughput.py --pops 1,8,32 --hidden 64,64
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax

from populax.run.config import TrainConfig
from populax.trainer import init_population, prepare


def build(pop: int, args: argparse.Namespace):
    """A compiled chunk function and an initial population for ``pop`` members."""
    config = TrainConfig(
        env=args.env, pop=pop, hidden=args.hidden, executor=args.executor, eval_every=args.chunk_steps,
        total_steps=args.chunk_steps * 100, learning_starts=0, out="unused",
    )
    setup = prepare(config)
    chunk = setup.executor(setup.program.train_chunk)
    population = init_population(setup)
    start = time.perf_counter()
    population, _ = chunk(population)  # compile + first chunk
    jax.block_until_ready(population)
    return chunk, population, time.perf_counter() - start


def main() -> None:
    """Parse flags, time chunks round-robin, print a table of throughputs and ratios."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="Pendulum-v1")
    parser.add_argument("--pops", default="1,8,32", help="population sizes, comma-separated")
    parser.add_argument("--hidden", default="64,64", type=lambda s: tuple(int(v) for v in s.split(",")))
    parser.add_argument("--executor", default="auto")
    parser.add_argument("--chunk-steps", type=int, default=500, help="env steps per member per timed chunk")
    parser.add_argument("--rounds", type=int, default=5, help="timed chunks per population size")
    args = parser.parse_args()
    pops = [int(p) for p in args.pops.split(",")]

    programs = {pop: build(pop, args) for pop in pops}
    times: dict[int, list[float]] = {pop: [] for pop in pops}
    for _ in range(args.rounds):
        for pop in pops:
            chunk, population, _ = programs[pop]
            start = time.perf_counter()
            population, _ = chunk(population)
            jax.block_until_ready(population)
            times[pop].append(time.perf_counter() - start)
            programs[pop] = (chunk, population, programs[pop][2])

    base = pops[0]
    base_rate = base * args.chunk_steps / statistics.median(times[base])
    print(f"env={args.env} hidden={args.hidden} executor={args.executor} chunk={args.chunk_steps} steps/member, "
          f"{args.rounds} rounds, devices={jax.devices()}")
    print(f"{'pop':>5} {'compile+1st (s)':>16} {'median chunk (s)':>17} {'env steps/s':>12} {'x pop ' + str(base):>10} {'per-member cost':>16}")
    for pop in pops:
        median = statistics.median(times[pop])
        rate = pop * args.chunk_steps / median
        print(f"{pop:>5} {programs[pop][2]:>16.1f} {median:>17.3f} {rate:>12,.0f} {rate / base_rate:>10.2f} "
              f"{(median / pop) / (statistics.median(times[base]) / base):>16.2f}")


if __name__ == "__main__":
    main()
