"""`populax bench update-step`: flags -> :class:`populax.bench.update_step.BenchConfig`."""

from __future__ import annotations

import argparse

from populax.arguments import CommandParser
from populax.bench.update_step import BenchConfig, parse_list


def bench_parser() -> argparse.ArgumentParser:
    """Flags of `populax bench update-step`."""
    from populax.bench.impls import IMPLS

    defaults = BenchConfig()
    parser = CommandParser(
        prog="populax bench update-step",
        description="Time one population-wide update step against population size for each implementation "
        "(the paper's Figure 2), interleaved in one run; writes JSON, CSV and PNG.",
    )
    parser.add_argument("--algo", default="td3", help="Comma-separated algorithms: td3, sac, dqn.")
    parser.add_argument("--pop", default=",".join(map(str, defaults.pops)), help="Comma-separated population sizes.")
    parser.add_argument("--impl", default="all", help=f"Comma-separated implementations or 'all': {', '.join(IMPLS)}.")
    parser.add_argument("--steps-at-once", default="1", help="Comma-separated updates per member per call (1, 50).")
    parser.add_argument("--calls", type=int, default=defaults.calls, help="Timed calls per point (>= 50 for the paper's study).")
    parser.add_argument("--rounds", type=int, default=defaults.rounds, help="Interleaving rounds over the implementations.")
    parser.add_argument("--hidden", default=None, help="Override network widths, e.g. 32,32 (default: the paper's).")
    parser.add_argument("--batch", type=int, default=None, help="Override the batch size (default: the paper's).")
    parser.add_argument("--seed", type=int, default=0, help="Seed of parameters, data and update keys.")
    parser.add_argument("--matmul-size", type=int, default=defaults.matmul_size, help="Side of the float32 matmul timed as peak.")
    parser.add_argument("--torch-device", default=defaults.torch_device,
                        help="Where the torch baselines run: auto (cuda when torch sees a GPU), cpu or cuda.")
    parser.add_argument("--out", default=defaults.out, help="JSON file; the CSV and PNG go beside it.")
    return parser


def parse_bench_args(argv: list[str]) -> BenchConfig:
    """argv after `populax bench update-step` -> BenchConfig (raises ConfigError)."""
    from populax.bench.impls import IMPLS
    from populax.bench.update_step import check_config

    args = bench_parser().parse_args(argv)
    config = BenchConfig(
        algos=parse_list("--algo", args.algo),
        pops=parse_list("--pop", args.pop, int),
        impls=IMPLS if args.impl == "all" else parse_list("--impl", args.impl),
        steps_at_once=parse_list("--steps-at-once", args.steps_at_once, int),
        calls=args.calls,
        rounds=args.rounds,
        hidden=parse_list("--hidden", args.hidden, int) if args.hidden else None,
        batch=args.batch,
        seed=args.seed,
        matmul_size=args.matmul_size,
        out=args.out,
        torch_device=args.torch_device,
    )
    check_config(config)
    return config


def cmd_bench(argv: list[str]) -> int:
    """`populax bench SUBCOMMAND ...`."""
    from populax.errors import ConfigError

    if not argv or argv[0] in ("-h", "--help"):
        print("populax bench update-step [--algo td3] [--pop 1,2,4,...] [--impl all] [--out FILE.json]")
        return 0 if argv else 2
    if argv[0] != "update-step":
        raise ConfigError(f"populax bench: unknown benchmark {argv[0]!r}; allowed: update-step")
    config = parse_bench_args(argv[1:])
    from populax.bench.update_step import run_bench

    report = run_bench(config, log=lambda line: print(line, flush=True))
    print(f"wrote {config.out} ({len(report['results'])} rows), its .csv and .png")
    return 0
