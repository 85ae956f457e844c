"""The `populax` command: a thin layer over the Python API.

    populax train [--env ID] [--algo td3|sac|dqn|ppo|cemrl|dvd-td3] [--pop N] [--hp.NAME VALUE] [--algo-opt.NAME VALUE] ...
    populax resume RUN
    populax report RUN
    populax compare RUN RUN ... [--out DIR]
    populax eval RUN [--member K|all] [--episodes E] [--seed S] [--video PATH]
    populax envs
    populax algos [ALGO]
    populax bench update-step [--algo td3] [--pop 1,2,4,...] [--impl all] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import signal
import sys
import warnings
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from populax.arguments import CommandParser
from populax.devices import use_all_cores
from populax.docstrings import field_docs
from populax.errors import ConfigError
from populax.run.config import FIELDS, TrainConfig, build_config, load_recipe
from populax.run.progress import ProgressDisplay
from populax.run.recipes import resolve_config_path, with_tuned_recipe

console = Console(stderr=True, soft_wrap=True)  # a notice is one line, also in a pipe (no wrapping at 80 columns)
FLAG_FIELDS = [name for name in FIELDS if name not in ("hp", "algo_options", "force", "tensorboard", "progress", "save_buffer")]


def table_console() -> Console:
    """Where tables go: the terminal's width there, 200 columns in a pipe or file (rich's 80 would cut ids
    short, and a copied id must be whole)."""
    return Console() if sys.stdout.isatty() else Console(width=200)


def train_parser() -> argparse.ArgumentParser:
    """Flags of `populax train`, generated from TrainConfig and its docstrings."""
    docs = field_docs(TrainConfig)
    parser = CommandParser(
        prog="populax train",
        description="Train a population of agents. Per-member hyperparameters: --hp.NAME VALUE, "
        "where VALUE is a number, N comma-separated numbers, uniform:LO,HI, loguniform:LO,HI, choice:A,B,... "
        "or search (the algorithm's declared search range: populax algos ALGO)",
        argument_default=argparse.SUPPRESS,
    )
    parser.add_argument("--config", metavar="RECIPE.yaml", help="YAML recipe; flags override it.")
    for name in FLAG_FIELDS:
        default = getattr(TrainConfig(), name)
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, metavar=name.upper(), help=f"{docs[name]} (default: {shown})")
    parser.add_argument("--no-recipe", dest="recipe", action="store_false",
                        help="Ignore the tuned recipe configs/ALGO-ENV.yaml (used as defaults when it exists).")
    parser.add_argument("--force", action="store_true", help=docs["force"])
    parser.add_argument("--no-tensorboard", dest="tensorboard", action="store_false", help="Do not write TensorBoard files.")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="No live progress bar.")
    parser.add_argument("--save-buffer", dest="save_buffer", action=argparse.BooleanOptionalAction, help=docs["save_buffer"])
    return parser


def split_hp_flags(argv: list[str], prefix: str = "--hp.") -> tuple[list[str], dict[str, str]]:
    """Take `--hp.NAME VALUE` / `--hp.NAME=VALUE` (or another ``prefix``) out of argv."""
    rest, hp = [], {}
    args = iter(argv)
    for arg in args:
        if arg.startswith(prefix):
            name, eq, value = arg[len(prefix):].partition("=")
            if not eq:
                value = next(args, None)
                if value is None:
                    raise ConfigError(f"{prefix}{name}: needs a value")
            # the last one given wins, as for every other flag (a script's base arguments, then an override);
            # lr_actor and lr-actor are one setting
            hp = {given: text for given, text in hp.items() if given.replace("_", "-") != name.replace("_", "-")}
            hp[name] = value
        else:
            rest.append(arg)
    return rest, hp


def parse_train_args(argv: list[str]) -> TrainConfig:
    """argv of `populax train` -> TrainConfig (defaults < tuned recipe < --config < flags)."""
    argv, hp = split_hp_flags(argv)
    argv, algo_options = split_hp_flags(argv, "--algo-opt.")
    flags: dict[str, Any] = vars(train_parser().parse_args(argv))
    layers = []
    use_tuned = flags.pop("recipe", True)
    recipe = flags.pop("config", None)
    if recipe is not None:
        layers.append(load_recipe(resolve_config_path(recipe)))
    if hp:
        flags["hp"] = hp
    if algo_options:
        flags["algo_options"] = algo_options
    layers.append(flags)
    if use_tuned:
        layers, path = with_tuned_recipe(layers)
        if path is not None:
            console.print(f"using tuned recipe {path.parent.name}/{path.name} as defaults (--no-recipe to opt out)")
    return build_config(layers)


def print_members(result) -> None:
    """The final table: one row per member, best first marked; a mixed-shape run's members with a column per
    static setting (the cohort each ended in)."""
    summary = result.summary
    members = summary["members"]
    names = [n for n in members[0]["hparams"] if len({m["hparams"][n] for m in members}) > 1]
    shared = {n: v for n, v in members[0]["hparams"].items() if n not in names}
    # Only a mixed-shape run's members carry "static"; an ordinary run's table is as before.
    settings = list(dict.fromkeys(n for m in members for n in m.get("static", {})))
    table = Table()  # the title is printed above it: rich wraps a title to the table's width, a few columns here
    table.add_column("member", justify="right")
    for name in [*settings, *names]:
        table.add_column(name, justify="right")
    table.add_column("final return", justify="right")
    for m in sorted(members, key=lambda m: -m["final_return"] if m["final_return"] is not None else 1e30):
        mark = " *" if m["id"] == summary["best_member"] else ""
        final = "failed" if m["final_return"] is None else f"{m['final_return']:.1f}"
        table.add_row(f"{m['id']}{mark}", *[m.get("static", {}).get(n, "-") for n in settings],
                      *[f"{m['hparams'][n]:.4g}" for n in names], final)
    out = table_console()
    out.print(f"{summary['algo']} on {summary['env']}: population of {summary['pop']}", markup=False, highlight=False)
    out.print(table)
    if shared:
        out.print("same for all members: " + ", ".join(f"{n}={v:.4g}" for n, v in shared.items()))
    out.print(
        (f"best member {summary['best_member']} (return {summary['best_return']:.1f}); "
         if summary["best_return"] is not None else
         "every member failed in the last chunk (lineage.jsonl); ")
        + f"{summary['env_steps_per_s']:,.0f} env steps/s, {summary['wall_time_s']:.0f}s wall"
    )
    if "mean_policy_return" in summary:
        out.print(f"CEM mean actor (the distribution's mean): return {summary['mean_policy_return']:.1f}")
    if "target" in summary:
        from populax.run.report import target_outcome

        status, detail = target_outcome(summary["target"])
        out.print(f"target {status}: {detail}")
    out.print(f"run directory: {result.run_dir}")


def run_with_progress(total_steps: int, pop: int, enabled: bool, start: Callable[[Callable], Any],
                      start_steps: int = 0) -> Any:
    """Run ``start(on_chunk)`` under the progress display (populax.run.progress); ``start_steps``: steps per
    member a resumed run had done before this session."""
    with ProgressDisplay(pop, total_steps, console, enabled, start_steps) as display:
        return start(display.update)


def finish(result) -> int:
    """Print the outcome of a train or resume: the member table, or how to continue."""
    if result.interrupted:
        print(f"populax: stopped; checkpoint saved. Continue with: populax resume {result.run_dir}", file=sys.stderr)
        return 0
    print_members(result)
    print(f"report: {result.run_dir / 'report' / 'report.md'}", file=sys.stderr)
    return 0


def cmd_train(argv: list[str]) -> int:
    """`populax train`."""
    from populax.runtime import prepare, run
    from populax.runtime.unused import run_unused_settings

    setup = prepare(parse_train_args(argv))  # every check before anything is drawn or written
    for line in run_unused_settings(setup):
        print(f"populax: warning: {line}", file=sys.stderr)
    config = setup.config
    return finish(run_with_progress(config.total_steps, config.pop, config.progress, lambda cb: run(setup, on_chunk=cb)))


def run_dir_parser(prog: str, description: str, hints: dict[str, str] | None = None) -> argparse.ArgumentParser:
    """A parser whose first argument is a run directory (``hints``: see :class:`CommandParser`)."""
    parser = CommandParser(prog=prog, description=description, hints=hints)
    parser.add_argument("run", metavar="RUN", help="run directory")
    return parser


def finished(manifest: dict, num_chunks: int) -> bool:
    """Whether a checkpoint's manifest is a run's end: every chunk done, or its --target-return reached."""
    from populax.runtime.target import reached_from_manifest

    done = manifest.get("chunks_done", manifest["chunk"] + 1) >= num_chunks
    return done or reached_from_manifest(manifest) is not None


def cmd_resume(argv: list[str]) -> int:
    """`populax resume RUN`: continue a stopped run from its newest good checkpoint."""
    from populax.run.resume import layout_change, load_checkpoint, load_setup
    from populax.runtime import run

    parser = run_dir_parser("populax resume", "Continue a stopped run from its newest good checkpoint.",
                            hints={"--total-steps": "a run's budget is fixed (its replay capacity and schedules "
                                                    "follow it); to train on: populax train --init-from RUN "
                                                    "--total-steps N --out NEW"})
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="No live progress bar.")
    args = parser.parse_args(argv)
    setup = load_setup(args.run)
    # The newest *good* checkpoint decides: a finished run whose last checkpoint is damaged resumes from the one
    # before and trains its last chunk again (its manifest alone would still say finished).
    checkpoint = load_checkpoint(setup, warn=lambda line: print(line, file=sys.stderr, flush=True))
    if (setup.run_dir / "summary.json").is_file() and finished(checkpoint.manifest, setup.num_chunks):
        print(f"populax: {setup.run_dir} is finished ({checkpoint.manifest['env_step']:,} env steps per member); "
              "nothing to resume. populax report/eval read it; populax train --init-from RUN trains on from it",
              file=sys.stderr)
        return 0
    print(f"populax: resuming {setup.run_dir} from {checkpoint.path.name} "
          f"({checkpoint.manifest['env_step']:,} env steps per member)", file=sys.stderr, flush=True)
    change = layout_change(setup, checkpoint)
    if change:
        print(change, file=sys.stderr, flush=True)
    config = setup.config
    return finish(run_with_progress(config.total_steps, config.pop, args.progress and config.progress,
                                    lambda cb: run(setup, on_chunk=cb, start=checkpoint),
                                    start_steps=checkpoint.manifest["env_step"]))


def cmd_report(argv: list[str]) -> int:
    """`populax report RUN`: figures and report.md in RUN/report/."""
    from pathlib import Path

    from populax.run.report import write_report

    args = run_dir_parser("populax report", "Write learning curves, hyperparameter trajectories and report.md.").parse_args(argv)
    if not (Path(args.run) / "metrics.jsonl").is_file():
        raise ConfigError(f"RUN: {args.run} is not a populax run directory (no metrics.jsonl)")
    page = write_report(args.run)
    print(page)
    return 0


def cmd_compare(argv: list[str]) -> int:
    """`populax compare RUN RUN ... --out DIR`: runs side by side (medians, bands, best members; a table)."""
    from populax.run.compare import compare_runs

    parser = CommandParser(prog="populax compare", description="Compare runs: population median and "
                                     "interquartile band, best member, against env steps and wall time.")
    parser.add_argument("runs", metavar="RUN", nargs="+", help="run directories (two or more)")
    parser.add_argument("--out", default="comparison", help="directory for comparison.md and comparison.png "
                        "(default: ./comparison)")
    parser.add_argument("--target", type=float, default=None, help="a return: the table adds when each run's "
                        "--target-stat return first reached it (env steps per member, wall seconds)")
    parser.add_argument("--target-stat", default="best", help="best (any member) or median (default: best)")
    args = parser.parse_args(argv)
    page = compare_runs(args.runs, args.out, args.target, args.target_stat)
    print(page.read_text().split("![")[0].strip())
    print(f"comparison: {page}", file=sys.stderr)
    return 0


def cmd_eval(argv: list[str]) -> int:
    """`populax eval RUN --member K --episodes E`: mean and std return of a saved member (or `--video PATH`)."""
    from populax.run.resume import evaluate_saved_member, evaluate_saved_members

    parser = run_dir_parser("populax eval", "Evaluate a saved member with its deterministic policy.")
    parser.add_argument("--member", type=member_choice, default=None,
                        help="member id (see summary.json / report.md; default: the best of the checkpoint's last "
                             "evaluation), or all: every member, ranked by the mean of these episodes")
    parser.add_argument("--episodes", type=int, default=10, help="episodes to run (default: 10)")
    parser.add_argument("--seed", type=int, default=None,
                        help="seed of the episodes (default: the episodes of the run's evaluation at the checkpoint)")
    parser.add_argument("--video", metavar="PATH", default=None,
                        help="instead, write an mp4 of one episode (Gymnasium/ALE runs; gymnax runs with a Gymnasium twin)")
    args = parser.parse_args(argv)

    def warn(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    if args.member == "all":
        if args.video is not None:
            raise ConfigError("--video: records one member; name it with --member K (or leave --member out: the best)")
        print_ranking(evaluate_saved_members(args.run, args.episodes, args.seed, warn=warn))
        return 0
    if args.video is not None:
        from populax.run.video import record_member_video

        video, policy = record_member_video(args.run, args.member, args.video, args.seed, warn=warn)
        twin = (f"; gymnax does not render, so replayed in Gymnasium's {video.source.gymnasium_id} (same dynamics)"
                if video.source.twin_of else "")
        print(f"member {policy.member} ({best_note(args.member)}{policy.checkpoint.name}, {policy.env_steps:,} env "
              f"steps): one episode, return {video.episode_return:.2f} in {video.steps} steps, video {video.path}{twin}")
        return 0
    returns, checkpoint, member = evaluate_saved_member(args.run, args.member, args.episodes, args.seed, warn=warn)
    print(f"member {member} ({best_note(args.member)}{checkpoint.path.name}, {checkpoint.manifest['env_step']:,} env "
          f"steps): mean return {returns.mean():.2f} +- {returns.std():.2f} over {len(returns)} episodes")
    return 0


def member_choice(text: str) -> int | str:
    """``--member``: a member id, or ``all``."""
    if text == "all":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a member id or all (got {text!r})") from None


def print_ranking(evaluations: list[Any]) -> None:
    """`populax eval --member all`: every member's mean and std over the episodes, ranked, beside the return
    its checkpoint's last evaluation logged."""
    import numpy as np

    checkpoint = evaluations[0].checkpoint
    logged = checkpoint.manifest.get("returns") or [None] * len(evaluations)
    episodes = len(evaluations[0].returns)
    table = Table(title=f"{checkpoint.path.name} ({checkpoint.manifest['env_step']:,} env steps): every member over "
                        f"{episodes} episodes")
    for column in ("rank", "member", "mean return", "std", "last evaluation"):
        table.add_column(column, justify="right")
    ranked = sorted(evaluations, key=lambda e: -e.returns.mean() if np.isfinite(e.returns.mean()) else np.inf)
    for rank, evaluation in enumerate(ranked, 1):
        last = logged[evaluation.member]
        table.add_row(str(rank), str(evaluation.member), f"{evaluation.returns.mean():.2f}",
                      f"{evaluation.returns.std():.2f}", "-" if last is None else f"{last:.2f}")
    table_console().print(table)
    print(f"best over these {episodes} episodes: member {ranked[0].member} "
          f"(mean return {ranked[0].returns.mean():.2f})")


def best_note(member: int | None) -> str:
    """What `populax eval` adds after the member it chose itself."""
    return "the best of the last evaluation; " if member is None else ""


def cmd_envs(argv: list[str]) -> int:
    """`populax envs`: every environment id and which algorithms can train on it."""
    from populax.agents import ALGORITHMS
    from populax.envs import describe_action, gymnax_ids, make_jax_env
    from populax.envs.spaces import UnusableSpaces

    table = Table(title="Environments (gymnax, compiled end to end)")
    for column in ("id", "observation", "action", "algorithms"):
        table.add_column(column, overflow="fold" if column == "id" else "ellipsis")  # an id is copied whole
    for env_id in gymnax_ids():
        try:
            env = make_jax_env(env_id)
        except UnusableSpaces as error:  # e.g. FrozenLake-misc's Discrete observations
            table.add_row(env_id, "-", "-", f"not trainable: {error.what}")
            continue
        except Exception as error:  # an env gymnax lists but cannot build here (MNISTBandit downloads its data)
            table.add_row(env_id, "-", "-", f"unavailable ({type(error).__name__})")
            continue
        algos = [a.name for a in ALGORITHMS.values() if (a.discrete if env.action.discrete else a.continuous)]
        table.add_row(env_id, str(env.obs_shape), describe_action(env.action), ", ".join(algos) or "-")
    table_console().print(table)
    print_brax_envs([a.name for a in ALGORITHMS.values() if a.continuous])
    print_host_envs()
    return 0


def print_brax_envs(continuous_algos: list[str]) -> None:
    """The brax tasks (compiled end to end; physics on the accelerator where there is one)."""
    from populax.envs.jax_envs import brax_ids, brax_installed

    status = "available" if brax_installed() else "needs populax[brax]"
    table = Table(title="Environments (brax physics, compiled end to end; episodes of 1000 steps)")
    for column in ("id", "action", "algorithms", "status"):
        table.add_column(column, overflow="fold" if column == "id" else "ellipsis")  # an id is copied whole
    for env_id in brax_ids():
        table.add_row(env_id, "continuous", ", ".join(continuous_algos), status)
    table_console().print(table)


def print_host_envs() -> None:
    """The Gymnasium/ALE ids (host path): ids gymnax also has go to gymnax unless prefixed gymnasium:."""
    from populax.envs import gymnax_ids
    from populax.envs.host_envs import host_env_rows

    compiled = set(gymnax_ids())
    table = Table(title="Environments (Gymnasium / ALE on the CPU; prefix gymnasium: for ids gymnax also has)")
    for column in ("id", "family", "status"):
        table.add_column(column, overflow="fold" if column == "id" else "ellipsis")  # an id is copied whole
    for env_id, family, status in host_env_rows():
        table.add_row(f"gymnasium:{env_id}" if env_id in compiled else env_id, family, escape(status))  # [extra]
    table_console().print(table)


def cmd_algos(argv: list[str]) -> int:
    """`populax algos`: every algorithm in one table; `populax algos ALGO`: its hyperparameters and options."""
    from populax.agents import ALGORITHMS, get_algorithm
    from populax.agents.describe import action_kinds, hparam_rows, learner_kind

    if len(argv) > 1 or any(arg.startswith("-") for arg in argv):
        raise ConfigError("usage: populax algos [ALGO] (ALGO: a name, or py:package.module:ALGORITHM)")
    if argv:
        print_algorithm(get_algorithm(argv[0]), argv[0])
        return 0
    table = Table(title="Algorithms (`populax algos ALGO` lists one's hyperparameters and options)")
    for column in ("algo", "kind", "actions", "hyperparameters (--hp.NAME)", "tuned recipes (--config)"):
        table.add_column(column)
    for name, algorithm in ALGORITHMS.items():
        names = ", ".join(row.name for row in hparam_rows(algorithm))
        table.add_row(name, learner_kind(algorithm), action_kinds(algorithm), names, ", ".join(recipes_of(name)) or "-")
    table_console().print(table)
    return 0


def recipes_of(algo: str) -> list[str]:
    """The packaged recipes written for ``algo`` (named ALGO-ENV or ALGO-pbt-ENV)."""
    from populax.agents import ALGORITHMS
    from populax.run.recipes import packaged_recipes

    # dvd-td3-... starts with td3's name too: a recipe belongs to the longest algorithm name it starts with.
    def owner(recipe: str) -> str | None:
        matches = [name for name in ALGORITHMS if recipe.startswith(f"{name}-")]
        return max(matches, key=len) if matches else None

    return [recipe for recipe in packaged_recipes() if owner(recipe) == algo]


def print_algorithm(algorithm: Any, given: str) -> None:
    """`populax algos ALGO`: what it is, its traced hyperparameters and its static options."""
    from populax.agents.describe import action_kinds, copied_by_policy_exploit, hparam_rows, learner_kind, option_rows

    out = table_console()
    out.print(f"[bold]{given}[/bold]: {learner_kind(algorithm)}, {action_kinds(algorithm)} actions; "
              f"--pbt-copy policy copies: {copied_by_policy_exploit(algorithm)}")
    table = Table(title="Hyperparameters (--hp.NAME VALUE: traced, may differ per member, PBT/PB2 explore them; "
                        "--hp.NAME search draws from the search range)")
    for column in ("name", "default", "valid", "search range", "meaning"):
        table.add_column(column, overflow="fold")
    for row in hparam_rows(algorithm):
        table.add_row(*row)
    out.print(table)
    options = option_rows(algorithm)
    if options:
        table = Table(title="Options (--algo-opt.NAME VALUE: static, one value for the whole run)")
        for column in ("name", "default", "type", "meaning"):
            table.add_column(column, overflow="fold")
        for row in options:
            table.add_row(*row)
        out.print(table)
    else:
        out.print("No options (--algo-opt): it declares none.")
    recipes = recipes_of(given)
    if recipes:
        out.print("Tuned recipes: " + ", ".join(f"--config {name}" for name in recipes))


def cmd_bench(argv: list[str]) -> int:
    """`populax bench update-step`: the paper's timing study (populax/bench/)."""
    from populax.bench.cli import cmd_bench as run

    return run(argv)


COMMANDS = {"train": cmd_train, "resume": cmd_resume, "report": cmd_report, "compare": cmd_compare, "eval": cmd_eval,
            "envs": cmd_envs, "algos": cmd_algos, "bench": cmd_bench}


def print_environment_warnings() -> None:
    """Show an EnvironmentWarning as ``populax: warning: ...``, as the unused-settings lines are (not Python's
    ``file:line: category: message`` form); every other warning as before."""
    from populax.errors import EnvironmentWarning

    shown_before = warnings.showwarning
    if getattr(shown_before, "populax", False):  # main() called again in one process: installed already
        return

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, EnvironmentWarning):
            print(f"populax: warning: {message}", file=sys.stderr)
        else:
            shown_before(message, category, filename, lineno, file, line)

    show.populax = True
    warnings.showwarning = show


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `populax` command."""
    from_command_line = argv is None
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print(__doc__.strip() if argv and argv[0] in ("-h", "--help") or not argv else f"populax: error: unknown command {argv[0]!r}; allowed: {', '.join(COMMANDS)}", file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    use_all_cores()  # before any JAX computation: one CPU device per core for the auto executor
    print_environment_warnings()
    try:
        return COMMANDS[argv[0]](argv[1:])
    except ConfigError as error:
        print(f"populax: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C before a run installs its handler (imports, the first compile), or twice
        if from_command_line:  # a further Ctrl-C while JAX shuts down: the same exit (not in a caller's process)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        runs = argv[0] in ("train", "resume")
        print("populax: interrupted" + ("; checkpoints written before are intact (populax resume RUN continues "
                                        "from the newest; a run stopped before its first has none)" if runs else ""),
              file=sys.stderr)
        return 130


if __name__ == "__main__":  # python -m populax.cli
    sys.exit(main())
