"""Training a population on host (Gymnasium / ALE) environments.

Host environments cannot run inside ``jit``, so the loop is split like the
paper's actor/learner design, with both halves reusing the one-member pieces
of the compiled path (Agent, replay buffer, executors):

* the **collector** (``populax.host_collector``) steps ONE Gymnasium vector env holding all N x E
  environments; every env step, all members act in ONE jitted executor call
  over the stacked agent states and observations;
* the **learner** inserts each block of transitions into the stacked
  per-member replay buffers (one executor call) and runs compiled chunks of
  ``update_chunk`` updates per member until the update-to-data ratio is met
  (the per-member steps are in ``populax.host_member``).

With ``overlap`` the collector runs in a background thread (JAX releases the
GIL while it computes, Gymnasium's MuJoCo/ALE steps release it in C), so env
stepping and updates proceed at the same time. Two rules keep it honest:

1. update-to-data ratio: after each block the learner catches up to
   ``floor(updates_per_step * (steps - learning_starts))`` updates per member,
   so the ratio holds on average (exactly, at the end of the run);
2. bounded staleness: the collector may act at most ``max_policy_lag`` env
   steps per member past the data the acting parameters were published
   after; beyond that it waits for the learner.

Without ``overlap`` the two alternate in one thread (collect a block, learn on
it) and a run is reproducible from its seed. See docs/host_envs.md.

Checkpoints hold what the learner has consumed (the population, the collector
RNG keys of its last block, counters, metrics not yet logged); Gymnasium cannot
save its envs' internal state, so a resumed run resets them with a seed derived
from the run's seed and the checkpoint's step, losing the episodes in flight.
"""

from __future__ import annotations

import json
import math
import queue
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from populax.agents import AgentSpec, Algorithm, get_algorithm
from populax.agents.options import resolve_options
from populax.envs.host_envs import (
    VECTOR_MODES,
    HostEnvSpec,
    make_host_spec,
)
from populax.envs.jax_envs import describe_action
from populax.errors import ConfigError
from populax.host_collector import (
    Block,
    Collector,
    collector_keys,
    eval_seed,
    evaluate,
    resume_reset_seed,
)
from populax.host_member import HostFunctions, HostMember, HostPlan, make_functions, make_plan
from populax.hparams import Distribution, resolve_specs, sample_population
from populax.population import make_executor
from populax.run.checkpoint import Checkpoint, config_hash, save_checkpoint
from populax.run.config import TrainConfig, check_ranges


class HostSetup(NamedTuple):
    """A validated host-environment run (nothing on disk yet); the host twin of trainer.Setup."""

    config: TrainConfig
    algorithm: Algorithm
    spec: HostEnvSpec
    specs: dict[str, Distribution]
    hparams: Any
    plan: HostPlan
    functions: HostFunctions
    run_dir: Path


def prepare_host(config: TrainConfig, env_id: str, run_dir: Path) -> HostSetup:
    """Validate a host-environment run; raises ConfigError, writes nothing."""
    check_ranges(config)
    if config.vector_env not in VECTOR_MODES:
        raise ConfigError(f"--vector-env: unknown mode {config.vector_env!r}; allowed: {', '.join(VECTOR_MODES)}")
    if config.max_episode_steps < 0:
        raise ConfigError(f"--max-episode-steps must be >= 0 (0: the environment's own limit; got {config.max_episode_steps})")
    algorithm = get_algorithm(config.algo)
    if algorithm.on_policy:
        raise ConfigError(f"--algo: {config.algo} is on-policy; host environments train off-policy algorithms only for now")
    spec = make_host_spec(env_id, terminal_on_life_loss=config.terminal_on_life_loss,
                          max_episode_steps=config.max_episode_steps or None)
    if spec.action.discrete and not algorithm.discrete or not spec.action.discrete and not algorithm.continuous:
        needs = "continuous (Box)" if algorithm.continuous else "discrete"
        raise ConfigError(f"--env: {config.algo} needs a {needs} action space; {env_id} has {describe_action(spec.action)}")
    plan = make_plan(config)
    executor = make_executor(config.executor, config.pop)
    specs = resolve_specs(algorithm.hparams, config.hp, config.pop)
    hparams = sample_population(algorithm.hparams, specs, jax.random.fold_in(jax.random.key(config.seed), 1), config.pop)
    options = resolve_options(algorithm.options, config.algo_options, algorithm.name)
    total_steps = plan.total_iterations * plan.envs_per_member
    agent = algorithm.make(AgentSpec(
        spec.obs_shape, spec.action, tuple(config.hidden), options,
        steps_per_update=1.0 / plan.updates_per_step,
        total_updates=max(1, plan.target_updates(total_steps)),
    ))
    functions = make_functions(agent, spec, plan, executor, config.obs_norm)
    return HostSetup(config, algorithm, spec, specs, hparams, plan, functions, run_dir)


def init_host_population(setup: HostSetup) -> HostMember:
    """Every member's initial learner state from the run's seed."""
    member_keys = jax.random.split(jax.random.fold_in(jax.random.key(setup.config.seed), 2), setup.config.pop)
    return setup.functions.init(member_keys, setup.hparams)


class HostProgress:
    """Counters the progress display reads after each evaluation (same fields as trainer.Progress)."""

    def __init__(self, setup: HostSetup):
        self.total_steps = setup.plan.total_iterations * setup.plan.envs_per_member
        self.env_steps = 0
        self.best_return = -math.inf
        self.first_chunk_s: float | None = None


class Learner:
    """The learner's side: insert blocks, keep the update-to-data ratio, publish parameters."""

    def __init__(self, setup: HostSetup, population: HostMember, keys: jax.Array, updates: int = 0,
                 metrics: list[dict[str, Any]] | None = None):
        """``keys``: the collector keys the data consumed so far ended with; ``updates``/``metrics`` when resuming."""
        self.setup, self.population = setup, population
        self.updates = updates
        self.busy_s = 0.0
        self.metrics: list[dict[str, Any]] = list(metrics or [])
        self.collector_keys = keys

    @property
    def steps(self) -> int:
        """Env steps per member consumed so far."""
        return int(np.asarray(self.population.env_steps)[0])

    def consume(self, block: Block, collector: Collector) -> None:
        """Insert ``block``, run the updates it makes owed, publish the new parameters."""
        plan, functions = self.setup.plan, self.setup.functions
        start = time.perf_counter()
        self.population = functions.insert(self.population, block.transitions, block.stats)
        self.collector_keys = block.keys
        steps = self.steps
        pop = self.setup.config.pop
        while self.updates < plan.target_updates(steps):
            count = min(plan.update_chunk, plan.target_updates(steps) - self.updates)
            self.population, metrics = functions.learn(self.population, jnp.full((pop,), count, jnp.int32))
            self.metrics.append(metrics)
            self.updates += count
        jax.block_until_ready(self.population.agent)
        self.busy_s += time.perf_counter() - start
        collector.publish(self.population.agent, self.population.hparams, steps)

    def take_metrics(self) -> dict[str, np.ndarray]:
        """Mean of the learner metrics since the last call (per member)."""
        if not self.metrics:
            return {}
        names = self.metrics[0].keys()
        out = {n: np.nanmean(np.stack([np.asarray(m[n], np.float64) for m in self.metrics]), axis=0) for n in names}
        out["finite"] = np.all(np.stack([np.asarray(m["finite"]) for m in self.metrics]), axis=0).astype(np.float64)
        self.metrics = []
        return out

    def pending_metrics(self) -> dict[str, np.ndarray]:
        """The metrics not yet logged, stacked to [chunks, N] per name (what a checkpoint stores)."""
        if not self.metrics:
            return {}
        return {n: np.stack([np.asarray(m[n]) for m in self.metrics]) for n in self.metrics[0]}


@dataclass
class HostLoopState:
    """Where the host loop stands beyond the population; checkpoints save it next to the members."""

    next_eval: int
    """Env steps per member at which the next evaluation is due."""
    returns: np.ndarray
    """Each member's return at the last evaluation (NaN before the first)."""
    episode_returns: list[list[float]]
    """Returns of the training episodes each member finished since the last evaluation."""
    evaluation: int = 0
    """Evaluations done so far (numbers the evaluation seeds)."""
    first_chunk_s: float | None = None
    """Wall time to the first evaluation."""
    max_lag: int = 0
    """Largest policy lag seen (env steps per member)."""
    eval_s: float = 0.0
    """Wall time spent evaluating."""
    elapsed_s: float = 0.0
    """Wall time of the run before this session (resumed runs)."""


class HostStart(NamedTuple):
    """Everything the host loop starts from: a fresh run's initial state or a checkpoint's."""

    population: HostMember
    loop: HostLoopState
    keys: jax.Array
    """Collector RNG keys."""
    updates: int
    """Updates per member done so far."""
    metrics: list[dict[str, Any]]
    """Learner metrics not yet logged."""


def host_start(setup: HostSetup, checkpoint: Checkpoint | None) -> HostStart:
    """The state a run starts from: initial when ``checkpoint`` is None, else the checkpoint's."""
    config = setup.config
    if checkpoint is None:
        loop = HostLoopState(next_eval=config.eval_every, returns=np.full(config.pop, np.nan),
                             episode_returns=[[] for _ in range(config.pop)])
        return HostStart(init_host_population(setup), loop, collector_keys(config.seed, config.pop), 0, [])
    manifest, extra = checkpoint.manifest, checkpoint.extra
    if manifest.get("kind") != "host" or extra is None:
        raise ConfigError(f"RUN: {checkpoint.path} is not a host-environment checkpoint")
    loop = HostLoopState(
        next_eval=manifest["next_eval"], returns=np.asarray(manifest["returns"], float),
        episode_returns=[[float(r) for r in member] for member in extra["episode_returns"]],
        evaluation=manifest["evaluation"], first_chunk_s=manifest["first_chunk_s"],
        max_lag=manifest["max_policy_lag_seen"], eval_s=manifest["eval_s"], elapsed_s=manifest["wall_time_s"],
    )
    pending = extra["pending_metrics"] or {}
    count = len(next(iter(pending.values()))) if pending else 0
    metrics = [{name: values[i] for name, values in pending.items()} for i in range(count)]
    keys = jax.random.wrap_key_data(jnp.asarray(extra["collector_keys"]))
    return HostStart(checkpoint.population, loop, keys, int(manifest["updates"]), metrics)


def block_number(plan: HostPlan, steps: int) -> int:
    """0-based index of the block that brought the run to ``steps`` env steps per member (names checkpoints)."""
    return math.ceil(steps / plan.block_steps) - 1


def save_host_checkpoint(setup: HostSetup, learner: Learner, loop: HostLoopState, metrics_offset: int,
                         wall: float) -> Path:
    """Checkpoint what the learner has consumed (blocks collected but not learned on are left out)."""
    config = setup.config
    manifest = {
        "kind": "host",
        "env_step": learner.steps,
        "metrics_offset": metrics_offset,
        "wall_time_s": wall,
        "first_chunk_s": loop.first_chunk_s,
        "returns": [float(r) for r in loop.returns],
        "evaluation": loop.evaluation,
        "next_eval": loop.next_eval,
        "updates": learner.updates,
        "max_policy_lag_seen": loop.max_lag,
        "eval_s": loop.eval_s,
        "populax_version": version("populax"),
        "config_hash": config_hash(setup.run_dir),
    }
    extra = {"collector_keys": learner.collector_keys, "episode_returns": loop.episode_returns,
             "pending_metrics": learner.pending_metrics()}
    return save_checkpoint(setup.run_dir, learner.population, chunk=block_number(setup.plan, learner.steps),
                           manifest=manifest, save_buffer=config.save_buffer, keep=config.keep_checkpoints, extra=extra)


def run_host(setup: HostSetup, on_chunk: Callable[[HostProgress], None] | None = None,
             start: Checkpoint | None = None):
    """Train on host environments (from ``start`` when resuming); writes the same run directory as the compiled path.

    Checkpoints land every ``checkpoint_every`` env steps (whole blocks), at the
    end, and when SIGINT/SIGTERM asks the run to stop (after the current
    block); a stopped run returns with ``interrupted=True``.
    """
    from populax.run.logging import RunLogger
    from populax.run.report import write_report
    from populax.trainer import (
        CheckpointPolicy,
        StopSignals,
        TrainResult,
        create_run_dir,
        log_chunk,
        truncate_metrics,
        write_summary,
    )

    config, plan = setup.config, setup.plan
    initial = host_start(setup, start)
    loop = initial.loop
    if start is None:
        create_run_dir(setup)
    else:
        truncate_metrics(setup.run_dir, start.manifest["metrics_offset"])
    first_step = int(np.asarray(initial.population.env_steps)[0])
    logger = RunLogger(setup.run_dir, tensorboard=config.tensorboard, purge_step=first_step + 1 if start else None)
    progress = HostProgress(setup)
    progress.env_steps, progress.first_chunk_s = first_step, loop.first_chunk_s
    session_start = time.perf_counter()
    begin = session_start - loop.elapsed_s
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Gymnasium/MuJoCo deprecation chatter at env creation
        collector = Collector(setup.spec, plan, setup.functions, initial.population, config.pop, config.vector_env,
                              seed=config.seed if start is None else resume_reset_seed(config.seed, first_step),
                              keys=initial.keys, iterations=first_step // plan.envs_per_member)
    learner = Learner(setup, initial.population, initial.keys, initial.updates, initial.metrics)
    blocks: queue.Queue = queue.Queue()
    failure: list[BaseException] = []

    def produce():
        try:
            while (block := collector.collect_block()) is not None:
                blocks.put(block)
        except BaseException as error:  # surfaced in the main thread
            failure.append(error)
        finally:
            blocks.put(None)

    thread = threading.Thread(target=produce, name="populax-collector", daemon=True) if config.overlap else None
    policy = CheckpointPolicy(config.checkpoint_every, plan.block_steps)
    steady = None  # steady state: from this session's first evaluation on (compilation done)
    interrupted = False
    with StopSignals() as stop:
        if thread is not None:
            thread.start()
        try:
            while True:
                block = blocks.get() if thread is not None else collector.collect_block()
                if block is None:
                    break
                learner.consume(block, collector)
                loop.max_lag = max(loop.max_lag, block.acted_lag)
                for member, finished in enumerate(block.episode_returns):
                    loop.episode_returns[member].extend(finished)
                steps = learner.steps
                last = steps >= progress.total_steps
                if steps >= loop.next_eval or last:
                    eval_start = time.perf_counter()
                    loop.returns = evaluate(setup.spec, setup.functions, learner.population, config.eval_episodes,
                                            seed=eval_seed(config.seed, loop.evaluation))
                    loop.eval_s += time.perf_counter() - eval_start
                    if steady is None:
                        steady = (time.perf_counter(), steps, learner.busy_s, loop.eval_s)
                    metrics = learner.take_metrics()
                    metrics["train_return"] = np.array([np.mean(r) if r else np.nan for r in loop.episode_returns])
                    loop.episode_returns = [[] for _ in range(config.pop)]
                    if loop.first_chunk_s is None:
                        loop.first_chunk_s = progress.first_chunk_s = time.perf_counter() - begin
                    progress.env_steps = steps
                    finite = np.isfinite(loop.returns)
                    progress.best_return = float(np.nanmax(loop.returns)) if finite.any() else -math.inf
                    log_chunk(logger, learner.population, metrics, loop.returns, steps, time.perf_counter() - begin)
                    if on_chunk is not None:
                        on_chunk(progress)
                    loop.next_eval += config.eval_every
                    loop.evaluation += 1
                interrupted = stop.requested and not last
                if last or stop.requested or policy.due(block_number(plan, steps)):
                    logger.flush()
                    save_host_checkpoint(setup, learner, loop, logger.path.stat().st_size, time.perf_counter() - begin)
                    policy.saved()
                if interrupted:
                    break
        finally:
            collector.stop()
            if thread is not None:
                thread.join()
            collector.close()
            logger.close()
    if failure:
        raise failure[0]
    population = learner.population
    if interrupted:
        return TrainResult(population=population, returns=loop.returns, run_dir=setup.run_dir, summary={},
                           interrupted=True)
    wall = time.perf_counter() - begin
    session = time.perf_counter() - session_start
    summary = write_summary(setup, population, loop.returns, wall, loop.first_chunk_s or 0.0)
    steady_s = steady_steps = 0.0
    if steady is not None:
        steady_s = time.perf_counter() - steady[0] - (loop.eval_s - steady[3])
        steady_steps = learner.steps - steady[1]
    summary["host"] = {
        "vector_env": config.vector_env,
        "overlap": config.overlap,
        "learner_busy_fraction": learner.busy_s / session,
        "collector_wait_s": collector.wait_s,
        "max_policy_lag_seen": loop.max_lag,
        "updates_per_member": learner.updates,
        "eval_s": loop.eval_s,
        # After the first evaluation, evaluation time excluded: what the benchmark reports.
        "steady_env_steps_per_s": config.pop * steady_steps / steady_s if steady_s > 0 else None,
        "steady_learner_busy_fraction": (learner.busy_s - steady[2]) / steady_s if steady_s > 0 else None,
    }
    (setup.run_dir / "summary.json").write_text(json.dumps(summary, indent=2, allow_nan=False, default=float))
    write_report(setup.run_dir)  # `populax train` prints its path, as for compiled runs
    return TrainResult(population=population, returns=loop.returns, run_dir=setup.run_dir, summary=summary)
