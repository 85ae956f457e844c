"""`populax.train(config)`: the host loop around the compiled population program.

Everything is validated before anything is written (``prepare``), so a user's
mistake leaves no trace on disk. The host sees the population only between
chunks: to evaluate, log, and (later) apply a population strategy.
"""

from __future__ import annotations

import json
import math
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from importlib.metadata import version
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
from populax.loops import MemberProgram, MemberState, Schedule
from populax.population import init_members, make_executor
from populax.programs import build_program
from populax.run.checkpoint import Checkpoint, config_hash, save_checkpoint
from populax.run.compile_clock import CompileClock
from populax.run.config import TrainConfig, check_ranges, config_to_dict
from populax.run.logging import RunLogger
from populax.run.report import write_report
from populax.strategies import check_strategy_config, make_strategy
from populax.strategies.plots import write_lineage_plot
from populax.strategies.space import make_space


class Setup(NamedTuple):
    """A validated configuration and everything built from it (nothing on disk yet)."""

    config: TrainConfig
    algorithm: Algorithm
    env: JaxEnv
    specs: dict[str, Distribution]
    hparams: Any
    """Stacked per-member hyperparameters drawn from the seed."""
    schedule: Schedule
    """The loop's static shape (an ``OnPolicySchedule`` for on-policy algorithms)."""
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
    """The content of summary.json (empty when interrupted)."""
    interrupted: bool = False
    """True when SIGINT/SIGTERM stopped the run early; `populax resume RUN` continues it."""


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
    schedule, program = build_program(algorithm, config, env)
    check_strategy_config(config, schedule.chunk_steps, make_space(algorithm.hparams, specs))
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
    return init_members(setup.program.init)(member_keys, setup.hparams)


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
        self.compile_s: float | None = None
        """Seconds spent compiling before the first chunk ran (from JAX's compile events)."""
        self.first_step_s: float | None = None
        """Seconds from the start of the run to its first training step (compilation done)."""


def train(config: TrainConfig, on_chunk: Callable[[Progress], None] | None = None) -> TrainResult:
    """Train a population as ``config`` says; the run directory holds the results.

    ``on_chunk`` is called after every chunk with the current :class:`Progress`
    (the CLI draws its progress bar from it).
    """
    return run(prepare(config), on_chunk)


def run(setup: Setup, on_chunk: Callable[[Progress], None] | None = None, start: Checkpoint | None = None) -> TrainResult:
    """Train from a validated :class:`Setup` (see :func:`train`); from ``start`` when resuming.

    Checkpoints land every ``checkpoint_every`` steps, at the end, and when
    SIGINT/SIGTERM asks the run to stop (after the current chunk); a stopped
    run returns with ``interrupted=True``.
    """
    if not isinstance(setup, Setup):  # a host-environment run
        from populax.host_loop import run_host

        return run_host(setup, on_chunk, start)
    config = setup.config
    train_chunk = setup.executor(setup.program.train_chunk)
    evaluate = setup.executor(setup.program.evaluate)
    progress = Progress(setup)
    # PBT/PB2/failure handling between chunks; its state is checkpointed with the members.
    strategy = make_strategy(setup, setup.run_dir)
    if start is None:
        create_run_dir(setup)
        population, first_chunk, elapsed = init_population(setup), 0, 0.0
        returns = np.full(config.pop, np.nan)
    else:
        population, first_chunk, elapsed, returns = start.population, start.manifest["chunk"] + 1, start.manifest["wall_time_s"], np.asarray(start.manifest["returns"], float)
        if start.strategy is not None:
            strategy.load_state_dict(start.strategy)
            strategy.rewrite_lineage()  # drop events logged after the checkpoint
        progress.first_chunk_s = start.manifest["first_chunk_s"]
        progress.compile_s, progress.first_step_s = start.manifest.get("compile_s"), start.manifest.get("first_step_s")
        progress.env_steps = start.manifest["env_step"]
        truncate_metrics(setup.run_dir, start.manifest["metrics_offset"])
    logger = RunLogger(setup.run_dir, tensorboard=config.tensorboard, purge_step=progress.env_steps + 1 if start else None)
    policy = CheckpointPolicy(config.checkpoint_every, setup.schedule.chunk_steps)
    begin = time.perf_counter() - elapsed
    interrupted = False
    with StopSignals() as stop:
        for chunk in range(first_chunk, setup.num_chunks):
            chunk_start = time.perf_counter()
            previous = population
            if progress.first_chunk_s is None:
                with CompileClock(begin) as clock:
                    population, metrics = jax.block_until_ready(train_chunk(population))
                progress.compile_s, progress.first_step_s = clock.compile_s, clock.first_step_s or 0.0
            else:
                population, metrics = train_chunk(population)
            returns = np.asarray(evaluate(population, eval_keys(config.seed, chunk, config.pop)))
            if progress.first_chunk_s is None:
                progress.first_chunk_s = time.perf_counter() - chunk_start
            progress.env_steps = int(np.asarray(population.env_steps)[0])
            progress.best_return = float(np.nanmax(returns)) if np.isfinite(returns).any() else -math.inf
            log_chunk(logger, population, metrics, returns, progress.env_steps, time.perf_counter() - begin)
            # After logging, so each record pairs a return with the hyperparameters that produced it.
            population, returns, _ = strategy.update(population, previous, returns, metrics, chunk)
            interrupted = stop.requested and chunk < setup.num_chunks - 1
            if chunk == setup.num_chunks - 1 or stop.requested or policy.due(chunk):
                manifest = {
                    "env_step": progress.env_steps,
                    "metrics_offset": logger.path.stat().st_size,
                    "wall_time_s": time.perf_counter() - begin,
                    "first_chunk_s": progress.first_chunk_s,
                    "compile_s": progress.compile_s,
                    "first_step_s": progress.first_step_s,
                    "returns": [float(r) for r in returns],
                    "populax_version": version("populax"),
                    "config_hash": config_hash(setup.run_dir),
                }
                save_checkpoint(setup.run_dir, population, chunk=chunk, manifest=manifest, strategy=strategy.state_dict(),
                                save_buffer=config.save_buffer, keep=config.keep_checkpoints)
                policy.saved()
            if on_chunk is not None:
                on_chunk(progress)
            if interrupted:
                break
    jax.block_until_ready(population)
    wall = time.perf_counter() - begin
    logger.close()
    if interrupted:
        return TrainResult(population=population, returns=returns, run_dir=setup.run_dir, summary={}, interrupted=True)
    timing = {"compile_s": progress.compile_s, "first_step_s": progress.first_step_s}
    summary = write_summary(setup, population, returns, wall, progress.first_chunk_s or 0.0, strategy, timing)
    if strategy.events:
        write_lineage_plot(setup.run_dir)
    write_report(setup.run_dir)
    return TrainResult(population=population, returns=returns, run_dir=setup.run_dir, summary=summary)


def truncate_metrics(run_dir: Path, offset: int) -> None:
    """Drop metrics.jsonl records written after a checkpoint (they will be written again)."""
    with open(run_dir / "metrics.jsonl", "r+b") as file:
        file.truncate(offset)


class CheckpointPolicy:
    """When to checkpoint: every N env steps, or (0) once 2+ minutes passed since the last one."""

    AUTO_SECONDS = 120.0

    def __init__(self, every_steps: int, chunk_steps: int):
        self.every_chunks = math.ceil(every_steps / chunk_steps) if every_steps else 0
        self.last = time.perf_counter()

    def due(self, chunk: int) -> bool:
        """Whether to checkpoint after ``chunk`` (0-based)."""
        if self.every_chunks:
            return (chunk + 1) % self.every_chunks == 0
        return time.perf_counter() - self.last >= self.AUTO_SECONDS

    def saved(self) -> None:
        """Note that a checkpoint was just written."""
        self.last = time.perf_counter()


class StopSignals:
    """Turn the first SIGINT/SIGTERM into a request to stop after the current chunk.

    A second SIGINT raises KeyboardInterrupt as usual (abort without a new
    checkpoint; the previous one stays valid). Handlers are only installed in
    the main thread, where Python delivers signals.
    """

    def __init__(self):
        self.requested = False
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        print(f"populax: {signal.Signals(signum).name} received; stopping after the current chunk and writing a checkpoint",
              file=sys.stderr, flush=True)

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


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


def write_summary(
    setup: Setup, population: MemberState, returns: np.ndarray, wall: float, first_chunk_s: float, strategy: Any = None,
    timing: dict[str, float | None] | None = None,
) -> dict:
    """summary.json: members, best member, throughput (and the strategy's lineage summary).

    ``timing``: extra timing fields (compile_s, first_step_s) copied in as they are.
    """
    pop = setup.config.pop
    steps_per_member = int(np.asarray(population.env_steps)[0])
    updates_per_member = int(np.asarray(getattr(population.agent, "updates", jnp.zeros(pop)))[0])
    finite = np.where(np.isfinite(returns), returns, -np.inf)
    summary = {
        "algo": setup.config.algo,
        "env": setup.config.env,
        "pop": pop,
        "members": [
            # null: the member failed in the last chunk (NaN/Inf), see lineage.jsonl
            {"id": i, "hparams": member_hparams(population.hparams, i),
             "final_return": float(returns[i]) if np.isfinite(returns[i]) else None}
            for i in range(pop)
        ],
        "best_member": int(np.argmax(finite)),
        "best_return": float(np.max(finite)),
        "median_return": float(np.nanmedian(returns)) if np.isfinite(returns).any() else math.nan,
        "env_steps_per_member": steps_per_member,
        "wall_time_s": wall,
        "first_chunk_s": first_chunk_s,
        **(timing or {}),
        "env_steps_per_s": pop * steps_per_member / wall,
        "updates_per_s": pop * updates_per_member / wall,
        "executor": setup.config.executor,
        "devices": [str(d) for d in jax.devices()],
    }
    if strategy is not None:
        summary.update(strategy.summary(summary["best_member"]))
    (setup.run_dir / "summary.json").write_text(json.dumps(json_safe(summary), indent=2, allow_nan=False))
    return summary


def json_safe(value: Any) -> Any:
    """Replace NaN/Inf (a diverged member) by None, recursively: JSON has no NaN."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
