"""`populax.train(config)`: the run driver, written once for every backend.

One chunk, read top to bottom::

    previous            = what failure handling restores (a copy; no buffers' transitions)
    population, metrics = backend.advance(population, chunk)   # compiled chunk, host blocks, Ray blocks;
                                                               # in place; metrics["finite"] per member
    returns             = backend.evaluate(population, chunk)  # fresh episodes per member
    log (metrics.jsonl, TensorBoard), progress
    reached             = check_target(config, returns, ...)   # --target-return: end after this chunk
    edits, events       = strategy.update(...)                 # failures, PBT/PB2 rounds: decided on
                                                               # returns and hyperparameters
    population          = backend.apply_edits(population, previous, edits)  # where the members live
    checkpoint(backend.gather(population) + backend.extra_state() + strategy state), when due
                                                               # (always at the end: last chunk or target)

The driver knows nothing of the backend beyond that interface
(``populax.backends``), so strategies, failure handling, checkpoints,
logging, progress and the summary work the same on compiled and host
environments.
"""

from __future__ import annotations

import json
import math
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np

from populax._version import __version__
from populax.edits import kept_before_chunk, refill_point
from populax.errors import UnusedSettingWarning
from populax.hparams import member_hparams
from populax.member import Member, member_row, member_steps, slowest_member_steps
from populax.run.checkpoint import Checkpoint, config_hash, save_checkpoint
from populax.run.compile_clock import CompileClock
from populax.run.config import TrainConfig
from populax.run.logging import RunLogger, write_hparams_sessions
from populax.run.report import failure_note, member_static, write_report
from populax.runtime.setup import RunSetup, create_run_dir, device_layout, init_population, prepare
from populax.runtime.target import TargetReached, check_target, reached_from_manifest, target_summary
from populax.runtime.unused import run_unused_settings
from populax.runtime.warm_start import load_warm_start, warm_started
from populax.strategies import make_strategy
from populax.strategies.plots import write_lineage_plot


@dataclass
class TrainResult:
    """What :func:`train` returns."""

    population: Member
    """Final stacked state of every member (parameters, buffers, hyperparameters...); under ``--executor ray``
    with ``--no-save-buffer`` without the replay buffers (they stay on the workers)."""
    returns: np.ndarray
    """Final evaluation return per member."""
    run_dir: Path
    summary: dict[str, Any]
    """The content of summary.json (empty when interrupted)."""
    interrupted: bool = False
    """True when SIGINT/SIGTERM stopped the run early; `populax resume RUN` continues it."""


class FailureNotes:
    """Say on stderr which members failed in a chunk and what was done (lineage.jsonl has every one): a NaN in
    a user's own update must not pass unseen. After ``LIMIT`` chunks with failures, one line says the rest
    are only in the files (an algorithm that fails every chunk would fill the terminal)."""

    LIMIT = 5

    def __init__(self):
        self.chunks = 0

    def say(self, events: list[dict]) -> None:
        """Print the line for one chunk's lineage ``events``, if any member failed in it."""
        note = failure_note(events)
        if note is None:
            return
        self.chunks += 1
        if self.chunks <= self.LIMIT:
            print(f"populax: warning: {note}", file=sys.stderr, flush=True)
        elif self.chunks == self.LIMIT + 1:
            print(f"populax: warning: members failed in more than {self.LIMIT} chunks; the later failures are only "
                  "in lineage.jsonl (summary.json's lineage_events counts them)", file=sys.stderr, flush=True)


class Progress:
    """Counters a progress display reads after each chunk."""

    def __init__(self, setup: RunSetup):
        self.total_steps = setup.num_chunks * setup.chunk_steps
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
    (the CLI draws its progress bar from it). A setting changed from its default that the run never reads
    gets an :class:`~populax.errors.UnusedSettingWarning`.
    """
    setup = prepare(config)
    for line in run_unused_settings(setup):
        warnings.warn(line, UnusedSettingWarning, stacklevel=2)
    return run(setup, on_chunk)


def run(
    setup: RunSetup,
    on_chunk: Callable[[Progress], None] | None = None,
    start: Checkpoint | None = None,
    before_chunk: Callable[[Member, int], Member] | None = None,
) -> TrainResult:
    """Train from a validated :class:`RunSetup` (see :func:`train`); from ``start`` when resuming.

    Checkpoints land every ``checkpoint_every`` steps, at the end, and when
    SIGINT/SIGTERM asks the run to stop (after the current chunk; host
    backends after the current block, inside the chunk); a stopped run
    returns with ``interrupted=True``. ``before_chunk(population, chunk)``
    may edit the members at the start of each chunk, as a fault inside the
    chunk would (fault injection in tests); it must not keep them (the chunk
    updates them in place: keep a copy).
    """
    config, backend = setup.config, setup.backend
    progress = Progress(setup)
    # PBT/PB2/failure handling between chunks; its state is checkpointed with the members.
    strategy = make_strategy(setup, setup.run_dir)
    reached: TargetReached | None = None  # --target-return: when the population reached it
    if start is None:
        warm = load_warm_start(setup)  # --init-from: read and checked before anything is written
        if config.executor == "ray":  # Ray reached, its resources checked, before --force replaces an earlier run
            backend.connect()
        create_run_dir(setup)
        population, first_chunk, elapsed, extra = init_population(setup), 0, 0.0, None
        if warm is not None:  # whole members (Ray: gathered; its `start` reloads them as on a resume)
            population = warm_started(backend.gather(population, experience=True), warm)
        init_from = None if warm is None else warm.record
        returns = np.full(config.pop, np.nan)
    else:
        # chunks_done: a host run stopped inside a chunk resumes that chunk where it stopped.
        first_chunk = start.manifest.get("chunks_done", start.manifest["chunk"] + 1)
        reached = reached_from_manifest(start.manifest)
        init_from = start.manifest.get("init_from")
        if reached is not None:  # the run ended at its target: nothing left to train, the end is written again
            first_chunk = setup.num_chunks
        population, elapsed = start.population, start.manifest["wall_time_s"]
        returns, extra = np.asarray(start.manifest["returns"], float), start.extra
        if start.strategy is not None:
            strategy.load_state_dict(start.strategy)
            strategy.rewrite_lineage()  # drop events logged after the checkpoint
        progress.first_chunk_s = start.manifest["first_chunk_s"]
        progress.compile_s, progress.first_step_s = start.manifest.get("compile_s"), start.manifest.get("first_step_s")
        progress.env_steps = start.manifest["env_step"]
        truncate_metrics(setup.run_dir, start.manifest["metrics_offset"])
        if not start.manifest.get("buffer_saved", True) and population.experience is not None:
            population = refill_point(config, population)
    logger = RunLogger(setup.run_dir, tensorboard=config.tensorboard, purge_step=progress.env_steps + 1 if start else None)
    policy = CheckpointPolicy(config.checkpoint_every, setup.chunk_steps)
    begin = time.perf_counter() - elapsed
    failures = FailureNotes()
    interrupted = False
    try:
        backend.start(population, extra)
        with StopSignals() as stop:

            def should_stop() -> bool:
                return stop.requested

            for chunk in range(first_chunk, setup.num_chunks):
                chunk_start = time.perf_counter()
                # What failure handling restores (not the buffers' transitions): the chunk updates the
                # population in place (donated), so its input is gone once it has run.
                previous = kept_before_chunk(population)
                if before_chunk is not None:  # as if inside the chunk: `previous` keeps the unedited members
                    population = before_chunk(population, chunk)
                if progress.first_chunk_s is None:
                    with CompileClock(begin) as clock:
                        population, metrics = jax.block_until_ready(backend.advance(population, chunk, should_stop))
                    progress.compile_s, progress.first_step_s = clock.compile_s, clock.first_step_s or 0.0
                else:
                    population, metrics = backend.advance(population, chunk, should_stop)
                if slowest_member_steps(population) < (chunk + 1) * setup.chunk_steps:
                    # A backend that stopped inside the chunk (host: after a block; mixed shapes: a cohort that had
                    # not run when the stop came): checkpoint where it stands. Without a stop request, members
                    # behind are a backend's fault, never a reason to end the run as if stopped.
                    if not stop.requested:
                        raise RuntimeError(f"chunk {chunk}: members stand at env steps "
                                           f"{np.asarray(population.env_steps).tolist()}, short of "
                                           f"{(chunk + 1) * setup.chunk_steps}, with no stop requested")
                    progress.env_steps = member_steps(population)
                    save_run_checkpoint(setup, population, chunk, progress, returns, strategy,
                                        logger.path.stat().st_size, time.perf_counter() - begin, complete=False,
                                        facts={"init_from": init_from})
                    interrupted = True
                    break
                returns = backend.evaluate(population, chunk)
                strategy.record(backend.take_events())  # e.g. a Ray worker restarted and its block reloaded
                if progress.first_chunk_s is None:
                    progress.first_chunk_s = time.perf_counter() - chunk_start
                progress.env_steps = member_steps(population)
                progress.best_return = float(np.nanmax(returns)) if np.isfinite(returns).any() else -math.inf
                log_chunk(logger, population, metrics, returns, progress.env_steps, time.perf_counter() - begin)
                # The returns as logged (before PBT's edits), so metrics.jsonl shows what ended the run.
                reached = check_target(config, returns, progress.env_steps, time.perf_counter() - begin)
                # After logging, so each record pairs a return with the hyperparameters that produced it.
                edits, returns, events = strategy.update(population, returns, metrics, chunk)
                failures.say(events)
                population = backend.apply_edits(population, previous, edits)
                strategy.record(backend.take_events())  # what happened while the edits were applied
                last = chunk == setup.num_chunks - 1 or reached is not None
                interrupted = stop.requested and not last
                if last or stop.requested or policy.due(chunk):
                    save_run_checkpoint(setup, population, chunk, progress, returns, strategy,
                                        logger.path.stat().st_size, time.perf_counter() - begin,
                                        facts={"target_reached": None if reached is None else reached._asdict(),
                                               "init_from": init_from})
                    policy.saved()
                if on_chunk is not None:
                    on_chunk(progress)
                if interrupted or reached is not None:
                    break
        # Ray: the members from the workers (the last checkpoint's gather); buffers only with --save-buffer.
        population = backend.gather(population, experience=config.save_buffer)
    finally:
        backend.stop()
        logger.close()
    jax.block_until_ready(population)
    wall = time.perf_counter() - begin
    if interrupted:
        return TrainResult(population=population, returns=returns, run_dir=setup.run_dir, summary={}, interrupted=True)
    timing = {"compile_s": progress.compile_s, "first_step_s": progress.first_step_s}
    facts = {**timing, **target_summary(config, reached), **({"init_from": init_from} if init_from else {})}
    summary = write_summary(setup, population, returns, wall, progress.first_chunk_s or 0.0, strategy, facts)
    if config.tensorboard:
        write_hparams_sessions(setup.run_dir, summary)
    if strategy.events:
        write_lineage_plot(setup.run_dir)
    write_report(setup.run_dir)
    return TrainResult(population=population, returns=returns, run_dir=setup.run_dir, summary=summary)


def save_run_checkpoint(setup: RunSetup, population: Member, chunk: int, progress: Progress, returns: np.ndarray,
                        strategy: Any, metrics_offset: int, wall: float, complete: bool = True,
                        facts: dict[str, Any] | None = None) -> Path:
    """Checkpoint after ``chunk`` (or inside it, ``complete=False``): members, strategy state, the backend's
    extra state, the driver's position; ``facts``: run-level records the manifest carries to a resume
    (``target_reached``: the run ends here at its --target-return; ``init_from``: the warm start's source)."""
    manifest = {
        "backend": setup.backend.kind,
        "chunks_done": chunk + 1 if complete else chunk,
        "env_step": progress.env_steps,
        "metrics_offset": metrics_offset,
        "wall_time_s": wall,
        "first_chunk_s": progress.first_chunk_s,
        "compile_s": progress.compile_s,
        "first_step_s": progress.first_step_s,
        "returns": [float(r) for r in returns],
        "populax_version": __version__,
        "config_hash": config_hash(setup.run_dir),
        "layout": device_layout(setup),
        **(facts or {}),
    }
    config = setup.config
    population = setup.backend.gather(population, experience=config.save_buffer)
    return save_checkpoint(setup.run_dir, population, chunk=chunk, manifest=manifest, strategy=strategy.state_dict(),
                           save_buffer=config.save_buffer, keep=config.keep_checkpoints,
                           extra=setup.backend.extra_state())


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
        print(f"populax: {signal.Signals(signum).name} received; stopping after the current chunk (host envs: block) and writing a checkpoint",
              file=sys.stderr, flush=True)

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def log_chunk(logger: RunLogger, population: Member, metrics: dict, returns: np.ndarray, step: int, wall: float) -> None:
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
    setup: RunSetup, population: Member, returns: np.ndarray, wall: float, first_chunk_s: float, strategy: Any = None,
    facts: dict[str, Any] | None = None,
) -> dict:
    """summary.json: members (a mixed-shape run's with their final static settings), best member, throughput,
    the strategy's lineage summary, backend facts.

    ``facts``: further top-level entries copied in as they are (compile_s, first_step_s, the --target-return
    entry, the --init-from source).
    """
    pop = setup.config.pop
    steps_per_member = member_steps(population)
    # An agent state's ``updates`` counter (every built-in's; a user's algorithm may keep one): None without one,
    # rather than a 0 that reads as "never learned".
    counter = getattr(member_row(population, 0).agent, "updates", None)
    updates_per_member = None if counter is None else int(np.asarray(counter))
    finite = np.where(np.isfinite(returns), returns, -np.inf)
    any_finite = bool(np.isfinite(returns).any())
    summary = {
        "algo": setup.config.algo,
        "env": setup.config.env,
        "backend": setup.backend.kind,
        "pop": pop,
        "members": [
            # null: the member failed in the last chunk (NaN/Inf), see lineage.jsonl
            {"id": i, "hparams": member_hparams(population.hparams, i),
             "final_return": float(returns[i]) if np.isfinite(returns[i]) else None}
            for i in range(pop)
        ],
        "best_member": int(np.argmax(finite)),
        # None when every member failed in the last chunk (as summary.json writes it: JSON has no NaN or Inf)
        "best_return": float(np.max(finite)) if any_finite else None,
        "median_return": float(np.nanmedian(returns)) if any_finite else None,
        "env_steps_per_member": steps_per_member,
        "updates_per_member": updates_per_member,
        "wall_time_s": wall,
        "first_chunk_s": first_chunk_s,
        **(facts or {}),
        "env_steps_per_s": pop * steps_per_member / wall,
        "updates_per_s": None if updates_per_member is None else pop * updates_per_member / wall,
        "executor": setup.config.executor,
        "devices": [str(d) for d in jax.devices()],
    }
    if strategy is not None:
        summary.update(strategy.summary(summary["best_member"]))
    summary.update(setup.backend.summary())
    # A mixed-shape run: each member's final static settings beside its hyperparameters (its cohort at the
    # end, as the backend's summary of the cohorts records it), for the CLI's table and the report.
    for member_id, settings in member_static(summary).items():
        summary["members"][member_id]["static"] = settings
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
