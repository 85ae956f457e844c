"""Training throughput vs population size, compile excluded (any algorithm on a gymnax env).

Measures env steps per second summed over members for whole compiled training
chunks (act + env step + buffer + updates, or rollouts + PPO epochs), for
several population sizes. Compilation (with the first chunk) is timed
separately. Chunks of the different sizes are timed round-robin in one
process, so a noisy machine affects every size alike, and the printed ratios
are the meaningful numbers.

    .venv/bin/python benchmarks/throughput.py --pops 1,8,32 --hidden 64,64            # TD3 Pendulum
    .venv/bin/python benchmarks/throughput.py --algo dqn --env CartPole-v1 --pops 1,8 # with its recipe
    .venv/bin/python benchmarks/throughput.py --env brax:halfcheetah --pops 1,8 --out tp.json  # physics compiled too

With ``--algo`` other than td3 the tuned recipe (configs/ALGO-ENV.yaml), if any,
gives every setting not set here; learning starts at once so every timed chunk
learns (steady state).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import time
from pathlib import Path

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
    parser.add_argument("--out", default=None, help="also write the table as JSON (and CSV beside it)")
    args = parser.parse_args()
    pops = [int(p) for p in args.pops.split(",")]

    load_start = os.getloadavg()[0]
    programs = {}
    for pop in pops:  # reported as each is built: a run cut by a time limit still says how far it got
        programs[pop] = build(pop, args)
        print(f"pop {pop}: built, compiled and ran its first chunk in {programs[pop][2]:.1f}s", flush=True)
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
    print(f"{'pop':>5} {'compile+1st (s)':>16} {'median chunk (s)':>17} {'env steps/s':>12} {'x pop ' + str(base):>10} "
          f"{'time / pop ' + str(base):>12} {'per-member cost':>16}")
    rows = []
    for pop in pops:
        median = statistics.median(times[pop])
        rate = pop * steps / median
        row = {"pop": pop, "compile_and_first_chunk_s": programs[pop][2], "median_chunk_s": median,
               "env_steps_per_s": rate, "throughput_vs_base": rate / base_rate,
               "time_vs_base": median / statistics.median(times[base]),
               "per_member_cost_vs_base": (median / pop) / (statistics.median(times[base]) / base)}
        rows.append(row)
        print(f"{pop:>5} {row['compile_and_first_chunk_s']:>16.1f} {median:>17.3f} {rate:>12,.0f} "
              f"{row['throughput_vs_base']:>10.2f} {row['time_vs_base']:>12.2f} {row['per_member_cost_vs_base']:>16.2f}")
    if args.out:
        write_table(Path(args.out), vars(args), steps, rows, load_start)


def write_table(out: Path, settings: dict, steps: int, rows: list[dict], load_start: float) -> None:
    """The table as JSON (settings, devices, rows) and the rows as CSV beside it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    machine = {"devices": [str(d) for d in jax.devices()], "device_kind": jax.devices()[0].device_kind,
               "jax": jax.__version__, "load_average_at_start": load_start, "load_average_at_end": os.getloadavg()[0]}
    out.write_text(json.dumps({"settings": settings, "chunk_steps_per_member": steps, "machine": machine,
                               "rows": rows}, indent=2))
    with out.with_suffix(".csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


if __name__ == "__main__":
    main()
