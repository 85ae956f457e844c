"""Ray Tune's PBT (one trial per member) next to populax's Ray executor (blocks of members), same budget (issue 13).

Both tune the same population: TD3 on gymnax Pendulum-v1, N members, the same
env steps per member, evaluation period, PBT round interval, prior
(lr-actor loguniform 1e-4..1e-2), bottom/top quantile 25% and resample
probability 0.25, on a local Ray instance with the same CPUs, in a network
namespace holding only ``lo``. Tune's trial is populax's compiled backend for
ONE member (the same chunk program, pop 1), reporting after each evaluation
and checkpointing its member (msgpack, populax's checkpoint format) for
Tune's exploit. Printed side by side: wall time, final best and median return.

    .venv/bin/python benchmarks/tune_pbt.py --pop 8 --steps 4000 --out docs/bench/tune_pbt.json
    (needs ray[tune]: pip install 'populax[tune]')
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
PRIOR = (1e-4, 1e-2)


def member_config(args: argparse.Namespace, lr_actor: float, seed: int):
    """One Tune trial's populax configuration: a population of one."""
    from populax.run.config import TrainConfig

    return TrainConfig(pop=1, seed=seed, total_steps=args.steps, eval_every=args.chunk, eval_episodes=args.eval_episodes,
                       hidden=tuple(map(int, args.hidden.split(","))), learning_starts=args.learning_starts,
                       executor="vmap", hp={"lr-actor": str(lr_actor)}, out=os.path.join(tempfile.gettempdir(), "unused"))


def trainable(config: dict) -> None:
    """A Tune function trainable: populax's compiled chunk for one member, reporting after each evaluation."""
    from ray import tune

    from populax.run.checkpoint import list_checkpoints, restore, save_checkpoint
    from populax.runtime import init_population, prepare

    args = argparse.Namespace(**config["args"])
    setup = prepare(member_config(args, config["lr_actor"], config["seed"]))
    population, first = init_population(setup), 0
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:  # Tune's exploit (or a resume): the source's member, this trial's hyperparameters
        with checkpoint.as_directory() as directory:
            saved = restore(list_checkpoints(Path(directory))[-1], population)
        population, first = saved.population.replace(hparams=setup.hparams), saved.manifest["chunks_done"]
    for chunk in range(first, setup.num_chunks):
        population, _ = setup.backend.advance(population, chunk)
        returns = setup.backend.evaluate(population, chunk)
        with tempfile.TemporaryDirectory() as directory:
            save_checkpoint(Path(directory), population, chunk=chunk, manifest={"chunks_done": chunk + 1}, keep=1)
            tune.report({"return": float(returns[0]), "env_step": (chunk + 1) * setup.chunk_steps},
                        checkpoint=tune.Checkpoint.from_directory(directory))


def run_tune(args: argparse.Namespace) -> dict:
    """Ray Tune PBT over ``args.pop`` one-member trials; wall time and final returns."""
    import ray
    from ray import tune
    from ray.tune.schedulers import PopulationBasedTraining

    # address="local": a new instance even when `ray start` left a cluster on the machine (see WorkerPool.connect)
    ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, _node_ip_address="127.0.0.1",
             logging_level="warning")
    scheduler = PopulationBasedTraining(
        time_attr="env_step", perturbation_interval=args.ready, quantile_fraction=0.25, resample_probability=0.25,
        hyperparam_mutations={"lr_actor": tune.loguniform(*PRIOR)}, synch=True)
    space = {"lr_actor": tune.loguniform(*PRIOR), "seed": tune.randint(0, 2**31 - 1), "args": vars(args)}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as storage:
        tuner = tune.Tuner(
            tune.with_resources(trainable, {"cpu": 1}), param_space=space,
            tune_config=tune.TuneConfig(num_samples=args.pop, scheduler=scheduler, metric="return", mode="max"),
            run_config=tune.RunConfig(storage_path=storage, stop={"env_step": args.steps}, verbose=0))
        results = tuner.fit()
        finals = [r.metrics["return"] for r in results]
    wall = time.perf_counter() - start
    ray.shutdown()
    return {"system": "ray-tune-pbt", "wall_s": wall, "best_return": max(finals), "median_return": float(np.median(finals))}


def run_populax(args: argparse.Namespace, out: Path) -> dict:
    """populax's Ray executor, the same population and budget; wall time and final returns."""
    argv = [sys.executable, "-m", "populax.cli", "train", "--env", "Pendulum-v1", "--algo", "td3", "--pop", str(args.pop),
            "--total-steps", str(args.steps), "--eval-every", str(args.chunk), "--eval-episodes", str(args.eval_episodes),
            "--hidden", args.hidden, "--learning-starts", str(args.learning_starts), "--strategy", "pbt",
            "--ready-interval", str(args.ready), "--pbt-bottom", "0.25", "--pbt-top", "0.25",
            "--pbt-resample-prob", "0.25", "--hp.lr-actor", f"loguniform:{PRIOR[0]},{PRIOR[1]}", "--executor", "ray",
            "--workers", str(args.cpus), "--no-recipe", "--no-progress", "--no-tensorboard", "--out", str(out)]
    start = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True)  # main() put this process in the loopback namespace
    wall = time.perf_counter() - start
    summary = json.loads((out / "summary.json").read_text())
    sys.path.insert(0, str(Path(__file__).parent))
    from scaling import ray_traffic

    return {"system": "populax-ray", "wall_s": wall, "best_return": summary["best_return"],
            "median_return": summary["median_return"], "traffic": ray_traffic(out / "ray.jsonl")}


def main() -> None:
    """Run both, print them side by side, write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pop", type=int, default=8)
    parser.add_argument("--steps", type=int, default=4000, help="env steps per member")
    parser.add_argument("--chunk", type=int, default=500, help="env steps per member between evaluations")
    parser.add_argument("--ready", type=int, default=1000, help="env steps per member between PBT rounds")
    parser.add_argument("--hidden", default="64,64")
    parser.add_argument("--learning-starts", type=int, default=500)
    parser.add_argument("--eval-episodes", type=int, default=2)
    parser.add_argument("--cpus", type=int, default=2, help="Ray CPUs: Tune's concurrent trials, populax's workers")
    parser.add_argument("--in-namespace", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if not args.in_namespace:  # the whole comparison in a loopback-only namespace
        os.environ.update(RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0", RAY_worker_niceness="0",
                          XLA_FLAGS="--xla_force_host_platform_device_count=1",
                          PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
        command = shlex.join([sys.executable, *sys.argv, "--in-namespace"])
        sys.exit(subprocess.run(["unshare", "-n", "sh", "-c", f"ip link set lo up; exec {command}"]).returncode)
    with tempfile.TemporaryDirectory() as root:
        rows = [run_populax(args, Path(root) / "populax"), run_tune(args)]
    for row in rows:
        print(f"{row['system']:>14}: wall {row['wall_s']:7.1f} s   best {row['best_return']:8.1f}   median {row['median_return']:8.1f}")
    if args.out:
        Path(args.out).write_text(json.dumps({"command": " ".join(sys.argv[:-1]), "args": vars(args), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
