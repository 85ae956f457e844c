"""The `populax` command: a thin layer over the Python API.

    populax train [--env ID] [--algo NAME] [--pop N] [--hp.NAME VALUE] ...
    populax envs
    populax bench update-step [--algo td3] [--pop 1,2,4,...] [--impl all] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from populax.errors import ConfigError
from populax.run.config import FIELDS, TrainConfig, build_config, field_docs, load_recipe

console = Console(stderr=True)
FLAG_FIELDS = [name for name in FIELDS if name not in ("hp", "force", "tensorboard", "progress")]


def train_parser() -> argparse.ArgumentParser:
    """Flags of `populax train`, generated from TrainConfig and its docstrings."""
    docs = field_docs(TrainConfig)
    parser = argparse.ArgumentParser(
        prog="populax train",
        description="Train a population of agents. Per-member hyperparameters: --hp.NAME VALUE, "
        "where VALUE is a number, N comma-separated numbers, uniform:LO,HI, loguniform:LO,HI or choice:A,B,...",
        argument_default=argparse.SUPPRESS,
    )
    parser.add_argument("--config", metavar="RECIPE.yaml", help="YAML recipe; flags override it.")
    for name in FLAG_FIELDS:
        default = getattr(TrainConfig(), name)
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, metavar=name.upper(), help=f"{docs[name]} (default: {shown})")
    parser.add_argument("--force", action="store_true", help=docs["force"])
    parser.add_argument("--no-tensorboard", dest="tensorboard", action="store_false", help="Do not write TensorBoard files.")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="No live progress bar.")
    return parser


def split_hp_flags(argv: list[str]) -> tuple[list[str], dict[str, str]]:
    """Take `--hp.NAME VALUE` / `--hp.NAME=VALUE` out of argv."""
    rest, hp = [], {}
    args = iter(argv)
    for arg in args:
        if arg.startswith("--hp."):
            name, eq, value = arg[len("--hp."):].partition("=")
            if not eq:
                value = next(args, None)
                if value is None:
                    raise ConfigError(f"--hp.{name}: needs a value")
            hp[name] = value
        else:
            rest.append(arg)
    return rest, hp


def parse_train_args(argv: list[str]) -> TrainConfig:
    """argv of `populax train` -> TrainConfig (defaults < recipe < flags)."""
    argv, hp = split_hp_flags(argv)
    flags: dict[str, Any] = vars(train_parser().parse_args(argv))
    layers = []
    recipe = flags.pop("config", None)
    if recipe is not None:
        layers.append(load_recipe(recipe))
    if hp:
        flags["hp"] = hp
    layers.append(flags)
    return build_config(layers)


class ProgressBar:
    """A rich progress bar fed by the trainer after every chunk."""

    def __init__(self, total_steps: int, enabled: bool):
        self.start = time.perf_counter()
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed:,.0f}/{task.total:,.0f} steps/member"),
            TextColumn("{task.fields[rate]}"),
            TextColumn("{task.fields[best]}"),
            TimeElapsedColumn(),
            console=console,
            disable=not enabled,
        )
        self.task = self.progress.add_task("compiling", total=total_steps, rate="", best="")
        self.pop = 1

    def update(self, state) -> None:
        """Called by the trainer with its Progress counters."""
        elapsed = time.perf_counter() - self.start
        self.progress.update(
            self.task,
            completed=state.env_steps,
            total=state.total_steps,
            description=f"training (first step after {state.first_chunk_s:.1f}s)",
            rate=f"{self.pop * state.env_steps / elapsed:,.0f} env steps/s",
            best=f"best return {state.best_return:.1f}",
        )


def print_members(result) -> None:
    """The final table: one row per member, best first marked."""
    summary = result.summary
    members = summary["members"]
    names = [n for n in members[0]["hparams"] if len({m["hparams"][n] for m in members}) > 1]
    shared = {n: v for n, v in members[0]["hparams"].items() if n not in names}
    table = Table(title=f"{summary['algo']} on {summary['env']}: population of {summary['pop']}")
    table.add_column("member", justify="right")
    for name in names:
        table.add_column(name, justify="right")
    table.add_column("final return", justify="right")
    for m in sorted(members, key=lambda m: -m["final_return"] if m["final_return"] == m["final_return"] else 1e30):
        mark = " *" if m["id"] == summary["best_member"] else ""
        table.add_row(f"{m['id']}{mark}", *[f"{m['hparams'][n]:.4g}" for n in names], f"{m['final_return']:.1f}")
    out = Console()
    out.print(table)
    if shared:
        out.print("same for all members: " + ", ".join(f"{n}={v:.4g}" for n, v in shared.items()))
    out.print(
        f"best member {summary['best_member']} (return {summary['best_return']:.1f}); "
        f"{summary['env_steps_per_s']:,.0f} env steps/s, {summary['wall_time_s']:.0f}s wall"
    )
    out.print(f"run directory: {result.run_dir}")


def cmd_train(argv: list[str]) -> int:
    """`populax train`."""
    from populax.trainer import prepare, run

    setup = prepare(parse_train_args(argv))  # every check before anything is drawn or written
    bar = ProgressBar(setup.config.total_steps, setup.config.progress)
    bar.pop = setup.config.pop
    with bar.progress:
        result = run(setup, on_chunk=bar.update)
    print_members(result)
    return 0


def cmd_envs(argv: list[str]) -> int:
    """`populax envs`: every environment id and which algorithms can train on it."""
    from populax.agents import ALGORITHMS
    from populax.envs import describe_action, gymnax_ids, make_jax_env

    table = Table(title="Environments (gymnax, compiled end to end)")
    for column in ("id", "observation", "action", "algorithms"):
        table.add_column(column)
    for env_id in gymnax_ids():
        try:
            env = make_jax_env(env_id)
        except Exception as error:  # an env gymnax lists but cannot build here
            table.add_row(env_id, "-", "-", f"unavailable ({type(error).__name__})")
            continue
        algos = [a.name for a in ALGORITHMS.values() if (a.discrete if env.action.discrete else a.continuous)]
        table.add_row(env_id, str(env.obs_shape), describe_action(env.action), ", ".join(algos) or "-")
    Console().print(table)
    return 0


def cmd_bench(argv: list[str]) -> int:
    """`populax bench update-step`: the paper's timing study (populax/bench/)."""
    from populax.bench.cli import cmd_bench as run

    return run(argv)


COMMANDS = {"train": cmd_train, "envs": cmd_envs, "bench": cmd_bench}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `populax` command."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print(__doc__.strip() if argv and argv[0] in ("-h", "--help") or not argv else f"populax: error: unknown command {argv[0]!r}; allowed: {', '.join(COMMANDS)}", file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    try:
        return COMMANDS[argv[0]](argv[1:])
    except ConfigError as error:
        print(f"populax: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # python -m populax.cli
    sys.exit(main())
