"""`populax.train(config)`: the host loop around the compiled population program.

Everything is validated before anything is written (``prepare``), so a user's
mistake leaves no trace on disk. The host sees the population only between
chunks: to evaluate, log, and (later) apply a population strategy.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import yaml

from populax.agents import Algorithm, get_algorithm
from populax.envs.host_envs import resolve_env
from populax.envs.jax_envs import JaxEnv, describe_action, gymnax_ids, make_jax_env
from populax.errors import ConfigError
from populax.hparams import (
    Distribution,
    member_hparams,
    resolve_specs,
    sample_population,
    spec_to_text,
)
from populax.loops import MemberProgram, MemberState, Schedule, make_member_program, make_schedule
from populax.population import make_executor
from populax.run.config import TrainConfig, check_ranges, config_to_dict
from populax.run.logging import RunLogger


class Setup(NamedTuple):
    """A validated configuration and everything built from it (nothing on disk yet)."""

    config: TrainConfig
    algorithm: Algorithm
    env: JaxEnv
    specs: dict[str, Distribution]
    hparams: Any
    """Stacked per-member hyperparameters drawn from the seed."""
    schedule: Schedule
    program: MemberProgram
    executor: Callable
    run_dir: Path
    num_chunks: int


@dataclass
class TrainResult:
    """What :func:`train` returns."""

    population: MemberState
    """Final stacked state of every member (parameters, buffers, hyperparameters...)."""
    returns: np.ndarray
    """Final evaluation return per member."""
    run_dir: Path
    summary: dict[str, Any]
    """The content of summary.json."""


def default_run_dir(config: TrainConfig) -> Path:
    """runs/ALGO-ENV-TIMESTAMP."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{config.algo}-{config.env.replace('/', '_').replace(':', '_')}-{stamp}"


def prepare(config: TrainConfig) -> Setup:
    """Validate ``config`` and build the run's objects; raises ConfigError, writes nothing.

    Host (Gymnasium/ALE) ids return a ``populax.host_loop.HostSetup`` instead.
    """
    check_ranges(config)
    choice = resolve_env(config.env, gymnax_ids())
    if choice.kind == "gymnasium":
        from populax.host_loop import prepare_host

        setup = prepare_host(config, choice.env_id, Path(config.out) if config.out else default_run_dir(config))
        if setup.run_dir.exists() and not config.force:
            raise ConfigError(f"--out: {setup.run_dir} already exists; choose another directory or pass --force to replace it")
        return setup
    algorithm = get_algorithm(config.algo)
    env = make_jax_env(choice.env_id)
    if env.action.discrete and not algorithm.discrete or not env.action.discrete and not algorithm.continuous:
        needs = "continuous (Box)" if algorithm.continuous else "discrete"
        raise ConfigError(
            f"--env: {config.algo} needs a {needs} action space; {config.env} has "
            f"{describe_action(env.action)}"
        )
    executor = make_executor(config.executor, config.pop)
    specs = resolve_specs(algorithm.hparams, config.hp, config.pop)
    hp_key = jax.random.fold_in(jax.random.key(config.seed), 1)
    hparams = sample_population(algorithm.hparams, specs, hp_key, config.pop)
    schedule = make_schedule(
        envs_per_member=config.envs_per_member,
        updates_per_step=config.updates_per_step,
        eval_every=config.eval_every,
        learning_starts=config.learning_starts,
        batch_size=config.batch_size,
        buffer_size=min(config.buffer_size, config.total_steps),
        eval_episodes=config.eval_episodes,
    )
    agent = algorithm.make(env.obs_shape, env.action, tuple(config.hidden))
    program = make_member_program(agent, env, schedule)
    run_dir = Path(config.out) if config.out else default_run_dir(config)
    if run_dir.exists() and not config.force:
        raise ConfigError(f"--out: {run_dir} already exists; choose another directory or pass --force to replace it")
    return Setup(
        config=config,
        algorithm=algorithm,
        env=env,
        specs=specs,
        hparams=hparams,
        schedule=schedule,
        program=program,
        executor=executor,
        run_dir=run_dir,
        num_chunks=math.ceil(config.total_steps / schedule.chunk_steps),
    )


def create_run_dir(setup: Setup) -> None:
    """Make the run directory (replacing it under --force) and write config.yaml."""
    if setup.run_dir.exists():
        shutil.rmtree(setup.run_dir)
    setup.run_dir.mkdir(parents=True)
    resolved = config_to_dict(setup.config)
    resolved["out"] = str(setup.run_dir)
    resolved["force"] = False
    resolved["hp"] = {name.replace("_", "-"): spec_to_text(d) for name, d in setup.specs.items()}
    (setup.run_dir / "config.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False))


def init_population(setup: Setup) -> MemberState:
    """Every member's initial state from the run's seed."""
    member_keys = jax.random.split(jax.random.fold_in(jax.random.key(setup.config.seed), 2), setup.config.pop)
    return setup.executor(setup.program.init)(member_keys, setup.hparams)


def eval_keys(seed: int, chunk: int, pop: int) -> jax.Array:
    """Keys of the evaluation after ``chunk``: fixed by seed, separate from training."""
    base = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), 3), chunk)
    return jax.random.split(base, pop)


class Progress:
    """Counters a progress display reads after each chunk."""

    def __init__(self, setup: Setup):
        self.total_steps = setup.num_chunks * setup.schedule.chunk_steps
        self.env_steps = 0
        self.best_return = -math.inf
        self.first_chunk_s: float | None = None


def train(config: TrainConfig, on_chunk: Callable[[Progress], None] | None = None) -> TrainResult:
    """Train a population as ``config`` says; the run directory holds the results.

    ``on_chunk`` is called after every chunk with the current :class:`Progress`
    (the CLI draws its progress bar from it).
    """
    return run(prepare(config), on_chunk)


def run(setup: Setup, on_chunk: Callable[[Progress], None] | None = None) -> TrainResult:
    """Train from a validated :class:`Setup` (see :func:`train`)."""
    if not isinstance(setup, Setup):  # a host-environment run
        from populax.host_loop import run_host

        return run_host(setup, on_chunk)
    config = setup.config
    create_run_dir(setup)
    logger = RunLogger(setup.run_dir, tensorboard=config.tensorboard)
    train_chunk = setup.executor(setup.program.train_chunk)
    evaluate = setup.executor(setup.program.evaluate)
    progress = Progress(setup)
    start = time.perf_counter()
    population = init_population(setup)
    returns = np.full(config.pop, np.nan)
    for chunk in range(setup.num_chunks):
        chunk_start = time.perf_counter()
        population, metrics = train_chunk(population)
        returns = np.asarray(evaluate(population, eval_keys(config.seed, chunk, config.pop)))
        if progress.first_chunk_s is None:
            progress.first_chunk_s = time.perf_counter() - chunk_start
        progress.env_steps = int(np.asarray(population.env_steps)[0])
        progress.best_return = float(np.nanmax(returns)) if np.isfinite(returns).any() else -math.inf
        log_chunk(logger, population, metrics, returns, progress.env_steps, time.perf_counter() - start)
        if on_chunk is not None:
            on_chunk(progress)
    jax.block_until_ready(population)
    wall = time.perf_counter() - start
    logger.close()
    summary = write_summary(setup, population, returns, wall, progress.first_chunk_s or 0.0)
    return TrainResult(population=population, returns=returns, run_dir=setup.run_dir, summary=summary)


def log_chunk(logger: RunLogger, population: MemberState, metrics: dict, returns: np.ndarray, step: int, wall: float) -> None:
    """One metrics.jsonl record per member, plus population scalars."""
    metrics = {name: np.asarray(value) for name, value in metrics.items()}
    for member, value in enumerate(returns):
        record = {"env_step": step, "member": member, "return": float(value), "wall_time_s": wall}
        record.update({name: float(v[member]) for name, v in metrics.items()})
        record["hparams"] = member_hparams(population.hparams, member)
        logger.log_member(record)
    finite = returns[np.isfinite(returns)]
    if finite.size:
        logger.log_population(step, {"median_return": float(np.median(finite)), "best_return": float(finite.max())})
    logger.flush()


def write_summary(setup: Setup, population: MemberState, returns: np.ndarray, wall: float, first_chunk_s: float) -> dict:
    """summary.json: members, best member, throughput."""
    pop = setup.config.pop
    steps_per_member = int(np.asarray(population.env_steps)[0])
    updates_per_member = int(np.asarray(getattr(population.agent, "updates", jnp.zeros(pop)))[0])
    finite = np.where(np.isfinite(returns), returns, -np.inf)
    summary = {
        "algo": setup.config.algo,
        "env": setup.config.env,
        "pop": pop,
        "members": [
            {"id": i, "hparams": member_hparams(population.hparams, i), "final_return": float(returns[i])}
            for i in range(pop)
        ],
        "best_member": int(np.argmax(finite)),
        "best_return": float(np.max(finite)),
        "median_return": float(np.median(returns)),
        "env_steps_per_member": steps_per_member,
        "wall_time_s": wall,
        "first_chunk_s": first_chunk_s,
        "env_steps_per_s": pop * steps_per_member / wall,
        "updates_per_s": pop * updates_per_member / wall,
        "executor": setup.config.executor,
        "devices": [str(d) for d in jax.devices()],
    }
    (setup.run_dir / "summary.json").write_text(json.dumps(summary, indent=2, allow_nan=False, default=_json_default))
    return summary


def _json_default(value: Any) -> Any:
    return float(value)
