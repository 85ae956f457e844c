"""Mixed-shape PBT vs PBT at each fixed shape vs Ray Tune's PBT over the same space, same budget (issue 25).

TD3-PBT on ``--env`` (default gymnax Pendulum-v1; a Gymnasium/MuJoCo id such as ``gymnasium:Hopper-v5`` runs
on the host, each cohort of a mixed run stepping its own members' envs), per seed, every run with the same
environment, population, env steps per member, evaluation period and episodes, PBT round interval,
bottom/top quantile 25%, resample probability 0.25 and learning-rate prior (lr-actor, lr-critic loguniform
1e-4..1e-2); everything else is populax's default (no tuned recipe), for every method alike:

* ``mixed``: one populax run whose members differ in ``--hp.hidden choice:64x64,256x256`` and
  ``--hp.batch-size choice:64,256`` (one compiled program per cohort, one PBT ranking, cross-cohort exploit
  ``--pbt-cross-cohort copy``: the loser takes the winner's shape and weights);
* ``fixed-HxH-bB``: four populax runs, one per (hidden, batch size), PBT over the learning rates only;
* ``tune``: Ray Tune's ``PopulationBasedTraining`` with one trial per member; a trial's hidden widths and
  batch size are sampled once in ``param_space`` and the learning rates are its ``hyperparam_mutations``.
  Tune's exploit clones the winner's config (the shape with it) and checkpoint, so a cross-shape exploit
  restores weights of the trial's new shape (what populax's ``copy`` does);
* ``tune-mutate`` (not in the default set): the same with hidden and batch size in ``hyperparam_mutations``
  too, so explore can change the shape after the checkpoint was cloned (ray-project/ray#5788): restoring
  the clone's weights into the new shape fails (the error is recorded); the trainable then reads the
  clone's state in the clone's shape, keeps its replay buffer, environments and step count and starts fresh
  networks of the new shape (what a Tune user has to write; populax's ``--pbt-cross-cohort fresh``).

Every populax run is a ``populax train`` process of its own (wall time includes importing JAX and
compiling); Tune runs on a private Ray instance with ``--cpus`` CPUs (trials of 1 CPU, that many at a
time), the whole benchmark in a network namespace holding only ``lo``. A Tune trial is populax's compiled
chunk for ONE member (pop 1) that reports after each evaluation and checkpoints its member (as
``benchmarks/tune_pbt.py``; on a host env the trial opens its envs at each start, a restart resetting them
as ``populax resume`` does, and closes them at its end). Each trial start is logged (process id, shape,
restored or not) to count exploits, cross-shape moves, processes and restarts. Printed: a table per run;
written: JSON with everything (``--out``).

    .venv/bin/python benchmarks/mixed_pbt.py --seeds 0 1 2 --steps 6000 --eval-every 1000 --ready 2000 --out docs/bench/mixed_pbt.json
    .venv/bin/python benchmarks/mixed_pbt.py --env gymnasium:Hopper-v5 --seeds 0 1 2 --steps 8000 --pop 8 \
        --eval-every 1000 --eval-episodes 5 --ready 2000 --out docs/bench/mixed_pbt_hopper.json
    (Tune needs ray[tune]: pip install -c constraints.txt -e '.[tune]')
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # imported in the functions that use them: Ray's trial processes import this module
    from populax.member import Member
    from populax.runtime import RunSetup

REPO = Path(__file__).resolve().parents[1]
PRIOR = (1e-4, 1e-2)
HIDDEN = ("64x64", "256x256")
BATCH = (64, 256)
FIXED = tuple(f"fixed-{h}-b{b}" for h in HIDDEN for b in BATCH)
METHODS = ("mixed", *FIXED, "tune", "tune-mutate")
DEFAULT_METHODS = ("mixed", *FIXED, "tune")


# -- populax ---------------------------------------------------------------------------------------------


def populax_argv(args: argparse.Namespace, method: str, seed: int, out: Path) -> list[str]:
    """The ``populax train`` command of one populax run (``mixed`` or ``fixed-HxH-bB``)."""
    argv = [sys.executable, "-m", "populax.cli", "train", "--env", args.env, "--algo", "td3",
            "--pop", str(args.pop), "--seed", str(seed), "--total-steps", str(args.steps),
            "--eval-every", str(args.eval_every), "--eval-episodes", str(args.eval_episodes),
            "--learning-starts", str(args.learning_starts), "--strategy", "pbt", "--ready-interval", str(args.ready),
            "--pbt-bottom", "0.25", "--pbt-top", "0.25", "--pbt-resample-prob", "0.25",
            "--hp.lr-actor", f"loguniform:{PRIOR[0]},{PRIOR[1]}", "--hp.lr-critic", f"loguniform:{PRIOR[0]},{PRIOR[1]}",
            "--no-recipe", "--no-progress", "--no-tensorboard", "--force", "--out", str(out)]
    if method == "mixed":
        return argv + ["--hp.hidden", "choice:" + ",".join(HIDDEN), "--hp.batch-size",
                       "choice:" + ",".join(map(str, BATCH)), "--pbt-cross-cohort", args.cross_cohort,
                       "--pbt-static-explore", str(args.static_explore)]
    _, hidden, batch = method.split("-")
    return argv + ["--hidden", hidden.replace("x", ","), "--batch-size", batch[1:]]


def run_populax(args: argparse.Namespace, method: str, seed: int, out: Path) -> dict:
    """One populax run in its own process: wall time, final returns, and a mixed run's cohorts summary."""
    argv = populax_argv(args, method, seed, out)
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        return {"method": method, "seed": seed, "error": done.stderr[-3000:], "wall_s": wall}
    summary = json.loads((out / "summary.json").read_text())
    members = summary["members"]
    members = members.values() if isinstance(members, dict) else members
    finals = [m["final_return"] for m in members]
    row = {"method": method, "seed": seed, "wall_s": wall, "run_wall_s": summary["wall_time_s"],
           "compile_s": summary.get("compile_s"), "best_return": float(np.max(finals)),
           "median_return": float(np.median(finals)), "final_returns": finals,
           "exploits": summary.get("lineage_events", {}).get("exploit", 0),
           "command": shlex.join(["populax", *argv[4:]])}
    if "cohorts" in summary:
        cohorts = summary["cohorts"]
        row["cohorts"] = cohorts
        row["final_members_per_cohort"] = {label: len(ids) for label, ids in cohorts["members"].items()}
        row["final_static"] = [m.get("static") for m in members]
        row["cross_cohort_exploits"] = sum(1 for event in read_jsonl(out / "lineage.jsonl")
                                           if event.get("event") == "exploit"
                                           and event.get("old_static") != event.get("new_static"))
    return row


def read_jsonl(path: Path) -> list[dict]:
    """The records of a JSON-lines file (none when it is missing)."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


# -- Ray Tune --------------------------------------------------------------------------------------------


def trial_config(config: dict):
    """One Tune trial's populax configuration: a population of one with the trial's shape and learning rates."""
    from populax.run.config import TrainConfig

    args = config["args"]
    return TrainConfig(env=args["env"], pop=1, seed=config["seed"], total_steps=args["steps"],
                       eval_every=args["eval_every"], eval_episodes=args["eval_episodes"],
                       learning_starts=args["learning_starts"],
                       hidden=tuple(int(w) for w in config["hidden"].split("x")), batch_size=int(config["batch_size"]),
                       executor="vmap", hp={"lr-actor": str(config["lr_actor"]), "lr-critic": str(config["lr_critic"])},
                       out=os.path.join(tempfile.gettempdir(), "unused"))


def trainable(config: dict) -> None:
    """A Tune function trainable: populax's compiled chunk for one member, reporting after each evaluation.

    On a start with a checkpoint (Tune's exploit: the clone's state) it restores the member with this trial's
    learning rates; where the checkpoint's weights do not fit this trial's shape (``tune-mutate``: explore
    changed the shape after the clone) it records the error and starts fresh networks of the new shape on
    the clone's buffer, environments and step count. Every start appends one line to ``config["log"]``."""
    from ray import tune

    from populax.run.checkpoint import list_checkpoints, restore
    from populax.runtime import init_population, prepare

    setup = prepare(trial_config(config))
    population, first, extra = init_population(setup), 0, None
    record = {"trial": tune.get_context().get_trial_id(), "pid": os.getpid(), "hidden": config["hidden"],
              "batch_size": int(config["batch_size"]), "lr_actor": config["lr_actor"],
              "lr_critic": config["lr_critic"], "restored": False, "error": None}
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        # Tune restarts every trial from a checkpoint after each synchronous round: its own (a resume) or,
        # when it exploits, a copy of the clone's (its path names the clone's trial)
        record["exploit"] = record["trial"] not in str(checkpoint.path)
        with checkpoint.as_directory() as directory:
            path = list_checkpoints(Path(directory))[-1]
            try:
                saved = restore(path, population)
                population = saved.population.replace(hparams=setup.hparams)
                record["restored"] = True
            except ValueError as error:  # the clone's weights are of another shape (ray#5788)
                record["error"] = str(error)[:300]
                # What a Tune user can do: read the clone's state in ITS shape, keep its replay buffer,
                # environments and step count, and start fresh networks of the new shape (populax's `fresh`).
                source = dict(config, hidden=read_manifest(path)["hidden"])
                saved = restore(path, init_population(prepare(trial_config(source))))
                population = saved.population.replace(agent=population.agent, hparams=setup.hparams)
            first, extra = saved.manifest["chunks_done"], saved.extra
            record.update(source_hidden=saved.manifest.get("hidden"),
                          source_batch_size=saved.manifest.get("batch_size"))
    record["env_step"] = first * setup.chunk_steps
    with open(config["log"], "a") as log:
        log.write(json.dumps(record) + "\n")
    # As populax's driver does: a host backend opens its envs (reset from the seed, or from the resume step)
    # and its collector here and closes them in stop(); a compiled backend has nothing to open or close.
    setup.backend.start(population, extra)
    try:
        train_member(setup, population, first, config)
    finally:
        setup.backend.stop()


def train_member(setup: RunSetup, population: Member, first: int, config: dict) -> None:
    """The trial's chunks from ``first`` on: advance, evaluate, report the return with a checkpoint of the
    member (a host backend's collector keys in its ``extra``, so a restart continues its exploration)."""
    from ray import tune

    from populax.run.checkpoint import save_checkpoint

    for chunk in range(first, setup.num_chunks):
        population, _ = setup.backend.advance(population, chunk)
        returns = setup.backend.evaluate(population, chunk)
        with tempfile.TemporaryDirectory() as directory:
            save_checkpoint(Path(directory), population, chunk=chunk, keep=1, extra=setup.backend.extra_state(),
                            manifest={"chunks_done": chunk + 1, "hidden": config["hidden"],
                                      "batch_size": int(config["batch_size"])})
            tune.report({"return": float(returns[0]), "env_step": (chunk + 1) * setup.chunk_steps},
                        checkpoint=tune.Checkpoint.from_directory(directory))


def read_manifest(path: Path) -> dict:
    """A populax checkpoint's manifest without reading its members into a template."""
    from populax.run.checkpoint import verify

    return verify(path)[0]


def tune_moves(log: list[dict]) -> dict:
    """What the trial starts say: starts and processes, resumes (the trial's own checkpoint), exploits (the
    clone's), exploits from a clone of another shape than the trial had (a cross-cohort exploit), exploits
    whose explore then changed the shape away from the clone's (``tune-mutate``), and restores that failed
    because the clone's weights do not fit the new shape (then fresh networks)."""
    last: dict[str, tuple] = {}
    moves = {"starts": len(log), "processes": len({r["pid"] for r in log}), "resumes": 0, "exploits": 0,
             "exploits_from_other_shape": 0, "explore_changed_shape": 0, "restore_failed_fresh_networks": 0,
             "errors": []}
    for record in log:
        shape = (record["hidden"], record["batch_size"])
        if record["trial"] in last and not record.get("exploit"):
            moves["resumes"] += 1
        elif record["trial"] in last:
            source = (record.get("source_hidden"), record.get("source_batch_size"))
            moves["exploits"] += 1
            moves["exploits_from_other_shape"] += source != last[record["trial"]]
            moves["explore_changed_shape"] += source != shape
            if record["error"]:
                moves["restore_failed_fresh_networks"] += 1
                moves["errors"].append(record["error"])
        last[record["trial"]] = shape
    moves["errors"] = sorted(set(moves["errors"]))[:3]
    return moves


def run_tune(args: argparse.Namespace, method: str, seed: int) -> dict:
    """Ray Tune PBT over ``args.pop`` one-member trials of the mixed space: wall time, final returns, moves."""
    import ray
    from ray import tune
    from ray.tune.schedulers import PopulationBasedTraining
    from ray.tune.search.basic_variant import BasicVariantGenerator

    random.seed(seed)  # PBT's choices of clones and explore draw from `random`
    np.random.seed(seed)
    shapes = {"hidden": list(HIDDEN), "batch_size": list(BATCH)}
    mutations = {"lr_actor": tune.loguniform(*PRIOR), "lr_critic": tune.loguniform(*PRIOR)}
    if method == "tune-mutate":
        mutations.update(shapes)
    start = time.perf_counter()
    # address="local": a new instance even when `ray start` left a cluster on the machine
    ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, _node_ip_address="127.0.0.1",
             logging_level="warning", log_to_driver=False)
    scheduler = PopulationBasedTraining(
        time_attr="env_step", perturbation_interval=args.ready, quantile_fraction=0.25, resample_probability=0.25,
        hyperparam_mutations=mutations, synch=True)
    with tempfile.TemporaryDirectory() as storage:
        log = Path(storage) / "starts.jsonl"
        space = {"lr_actor": tune.loguniform(*PRIOR), "lr_critic": tune.loguniform(*PRIOR),
                 "hidden": tune.choice(list(HIDDEN)), "batch_size": tune.choice(list(BATCH)),
                 "seed": tune.randint(0, 2**31 - 1), "args": vars(args), "log": str(log)}
        tuner = tune.Tuner(
            tune.with_resources(trainable, {"cpu": 1}), param_space=space,
            tune_config=tune.TuneConfig(num_samples=args.pop, scheduler=scheduler, metric="return", mode="max",
                                        search_alg=BasicVariantGenerator(random_state=seed)),
            run_config=tune.RunConfig(storage_path=storage, stop={"env_step": args.steps}, verbose=0))
        results = tuner.fit()
        finals = [r.metrics.get("return", float("nan")) for r in results]
        errors = [str(r.error)[:300] for r in results if r.error]
        final_shapes = [f"hidden={r.config['hidden']} batch-size={r.config['batch_size']}" for r in results]
        starts = read_jsonl(log)
    wall = time.perf_counter() - start
    ray.shutdown()
    per_shape = {label: final_shapes.count(label) for label in sorted(set(final_shapes))}
    return {"method": method, "seed": seed, "wall_s": wall, "best_return": float(np.nanmax(finals)),
            "median_return": float(np.nanmedian(finals)), "final_returns": finals, "trial_errors": errors,
            "final_members_per_shape": per_shape, "moves": tune_moves(starts), "starts": starts}


# -- the benchmark ---------------------------------------------------------------------------------------


def aggregate(rows: list[dict]) -> dict:
    """Per method over seeds: wall time mean, best and median final return mean and spread (min..max)."""
    table = {}
    for method in dict.fromkeys(r["method"] for r in rows):
        done = [r for r in rows if r["method"] == method and "error" not in r]
        if not done:
            continue
        entry = {"seeds": [r["seed"] for r in done]}
        for name in ("wall_s", "best_return", "median_return"):
            values = np.asarray([r[name] for r in done], float)
            entry[name] = {"mean": float(values.mean()), "std": float(values.std()), "min": float(values.min()),
                           "max": float(values.max()), "per_seed": values.tolist()}
        table[method] = entry
    fixed = [r for r in rows if r["method"] in FIXED and "error" not in r]
    seeds = sorted({r["seed"] for r in fixed})
    if fixed and all(sum(r["seed"] == s for r in fixed) == len(FIXED) for s in seeds):
        # all four fixed-shape runs of a seed together: 4x the budget of one population
        best = np.asarray([max(r["best_return"] for r in fixed if r["seed"] == s) for s in seeds])
        wall = np.asarray([sum(r["wall_s"] for r in fixed if r["seed"] == s) for s in seeds])
        table["fixed-all-4 (4x budget)"] = {
            "seeds": seeds, "wall_s": {"mean": float(wall.mean()), "per_seed": wall.tolist()},
            "best_return": {"mean": float(best.mean()), "std": float(best.std()), "min": float(best.min()),
                            "max": float(best.max()), "per_seed": best.tolist()}}
    return table


def main() -> None:
    """Run the chosen methods for every seed one after another, print a line per run, write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="Pendulum-v1",
                        help="every run's environment: a gymnax id (compiled) or e.g. gymnasium:Hopper-v5 (host)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=6000, help="env steps per member")
    parser.add_argument("--pop", type=int, default=8)
    parser.add_argument("--eval-every", type=int, default=1000, help="env steps per member between evaluations")
    parser.add_argument("--eval-episodes", type=int, default=5)
    parser.add_argument("--ready", type=int, default=2000, help="env steps per member between PBT rounds")
    parser.add_argument("--learning-starts", type=int, default=1000)
    parser.add_argument("--cross-cohort", default="copy", help="mixed: --pbt-cross-cohort")
    parser.add_argument("--static-explore", type=float, default=0.0, help="mixed: --pbt-static-explore")
    parser.add_argument("--cpus", type=int, default=2, help="Ray CPUs: Tune's concurrent trials")
    parser.add_argument("--only", default=",".join(DEFAULT_METHODS),
                        help=f"comma-separated methods among {', '.join(METHODS)}; 'fixed' = the four fixed shapes")
    parser.add_argument("--out", default=None, help="JSON file of every run and the table")
    parser.add_argument("--in-namespace", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    methods = [m for part in args.only.split(",") for m in (FIXED if part == "fixed" else [part.strip()])]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        parser.error(f"--only: unknown {unknown}; choose among {', '.join(METHODS)} or 'fixed'")
    if not args.in_namespace:  # everything in a loopback-only namespace, one XLA device per process
        os.environ.update(RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0", RAY_worker_niceness="0",
                          XLA_FLAGS="--xla_force_host_platform_device_count=1",
                          PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
        command = shlex.join([sys.executable, *sys.argv, "--in-namespace"])
        sys.exit(subprocess.run(["unshare", "-n", "sh", "-c", f"ip link set lo up; exec {command}"]).returncode)
    rows: list[dict] = []
    record = {"command": shlex.join(["benchmarks/mixed_pbt.py", *sys.argv[1:-1]]), "args": vars(args),
              "started": time.strftime("%Y-%m-%d %H:%M:%S"), "rows": rows}
    with tempfile.TemporaryDirectory() as root:
        for seed in args.seeds:
            for method in methods:
                load = os.getloadavg()[0]
                if method.startswith("tune"):
                    row = run_tune(args, method, seed)
                else:
                    row = run_populax(args, method, seed, Path(root) / f"{method}-{seed}")
                row["load_before"] = load
                rows.append(row)
                if "error" in row:
                    print(f"seed {seed} {method:>22}: FAILED after {row['wall_s']:.0f} s\n{row['error']}", flush=True)
                else:
                    extra = row.get("final_members_per_cohort") or row.get("final_members_per_shape") or ""
                    print(f"seed {seed} {method:>22}: wall {row['wall_s']:6.1f} s  best {row['best_return']:8.1f}  "
                          f"median {row['median_return']:8.1f}  {extra}", flush=True)
                record["table"] = aggregate(rows)
                if args.out:  # after every run, so a long benchmark leaves what it measured
                    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
                    Path(args.out).write_text(json.dumps(record, indent=1))
    for method, entry in record["table"].items():
        best, median = entry["best_return"], entry.get("median_return")
        text = f"{method:>24}: wall {entry['wall_s']['mean']:6.1f} s  best {best['mean']:8.1f} +- {best.get('std', 0):6.1f}"
        if median:
            text += f"  median {median['mean']:8.1f} +- {median['std']:6.1f}"
        print(text)


if __name__ == "__main__":
    main()
