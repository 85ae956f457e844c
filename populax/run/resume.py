"""Load a run directory back: its configuration, its newest good checkpoint, a member's policy.

``populax resume RUN`` continues a stopped run from its newest checkpoint that
verifies, on either backend. With JAX environments every random draw comes
from keys stored in the checkpoint (training) or derived from the seed and
chunk index (evaluation), and metrics.jsonl is cut back to the checkpoint's
offset, so the resumed run ends with the same parameters and metrics as one
never stopped. Host-environment (Gymnasium/ALE) runs resume from what their
learner had consumed, with fresh env episodes: see populax/backends/host and
docs/host_envs.md.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np

from populax.errors import ConfigError
from populax.member import Cohorts, member_row
from populax.run.checkpoint import Checkpoint, config_hash, latest_checkpoint
from populax.run.config import TrainConfig, build_config, load_recipe
from populax.runtime.driver import Progress, TrainResult, run
from populax.runtime.setup import RunSetup, init_population, member_keys, prepare


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def load_config(run_dir: str | Path) -> TrainConfig:
    """RUN/config.yaml as a TrainConfig pointing at ``run_dir`` (nothing built or checked beyond parsing)."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise ConfigError(f"RUN: {run_dir} is not a populax run directory (no config.yaml)")
    config = build_config([load_recipe(run_dir / "config.yaml")])
    # The directory exists by definition here; nothing is replaced (no create_run_dir).
    return dataclasses.replace(config, out=str(run_dir), force=True)


def load_setup(run_dir: str | Path) -> RunSetup:
    """Rebuild a run's :class:`RunSetup` from RUN/config.yaml."""
    return prepare(load_config(run_dir))


def load_checkpoint(setup: RunSetup, warn: Callable[[str], None] = _stderr) -> Checkpoint:
    """The newest good checkpoint of the run, checked against its configuration."""
    shapes = jax.eval_shape(lambda: init_population(setup))
    template = shapes
    if isinstance(shapes, Cohorts):  # members moved between cohorts: the blocks' sizes are the checkpoint's
        def template(assignment: np.ndarray) -> Cohorts:
            keys = member_keys(setup.config.seed, setup.config.pop)
            return jax.eval_shape(lambda: setup.backend.init_blocks(keys, setup.hparams, assignment))
    checkpoint = latest_checkpoint(setup.run_dir, template, warn=warn, initial_hparams=setup.hparams)
    expected = config_hash(setup.run_dir)
    if checkpoint.manifest.get("config_hash") != expected:
        raise ConfigError(f"RUN: {setup.run_dir / 'config.yaml'} changed since {checkpoint.path.name} was written; "
                          "restore it or start a new run")
    if not checkpoint.manifest.get("buffer_saved", True) and jax.tree.leaves(shapes.experience):
        config = setup.config
        warn(f"populax: this checkpoint has no replay buffers (--save-buffer false, or over 2 GB); they refill first: "
             f"no updates until each holds {max(config.batch_size, config.learning_starts):,} new transitions "
             "(max of batch size and learning starts), so the resumed run will not match an uninterrupted one")
    return checkpoint


def resume(
    run_dir: str | Path,
    on_chunk: Callable[[Progress], None] | None = None,
    warn: Callable[[str], None] = _stderr,
) -> TrainResult:
    """Continue the run in ``run_dir`` from its newest good checkpoint."""
    setup = load_setup(run_dir)
    return run(setup, on_chunk, start=load_checkpoint(setup, warn))


class SavedEvaluation(NamedTuple):
    """What ``populax eval`` measured of a saved member."""

    returns: np.ndarray
    """Per-episode returns."""
    checkpoint: Checkpoint
    member: int
    """The member evaluated (the best of the last evaluation when none was named)."""


def evaluate_saved_member(
    run_dir: str | Path, member: int | None, episodes: int, seed: int | None = None,
    warn: Callable[[str], None] = _stderr,
) -> SavedEvaluation:
    """Per-episode returns of ``member`` (None: the best of the checkpoint's last evaluation) as saved in the run's
    newest good checkpoint.

    Without ``seed`` the episodes are those of the run's evaluation at that
    checkpoint (the same keys or env seeds); a seed draws others.
    """
    setup = load_setup(run_dir)
    if member is not None:
        check_member(setup.config, member)
    check_episodes(episodes)
    checkpoint = load_checkpoint(setup, warn)
    return saved_member_returns(setup, checkpoint, checkpoint_best_member(checkpoint) if member is None else member,
                                episodes, seed)


def evaluate_saved_members(run_dir: str | Path, episodes: int, seed: int | None = None,
                           warn: Callable[[str], None] = _stderr) -> list[SavedEvaluation]:
    """:func:`evaluate_saved_member` of every member of the run, from one load of its checkpoint: more episodes
    than the run's evaluation used rank the members with less noise than the run's own best member did."""
    setup = load_setup(run_dir)
    check_episodes(episodes)
    checkpoint = load_checkpoint(setup, warn)
    return [saved_member_returns(setup, checkpoint, member, episodes, seed) for member in range(setup.config.pop)]


def check_episodes(episodes: int) -> None:
    """ConfigError unless at least one episode is asked for."""
    if episodes < 1:
        raise ConfigError(f"--episodes must be >= 1 (got {episodes})")


def saved_member_returns(setup: RunSetup, checkpoint: Checkpoint, member: int, episodes: int,
                         seed: int | None) -> SavedEvaluation:
    """Per-episode returns of ``member`` of a loaded checkpoint (see :func:`evaluate_saved_member`)."""
    state = member_row(checkpoint.population, member)
    # The run's last evaluation: of the last finished chunk (a host checkpoint may be taken inside a chunk).
    manifest = checkpoint.manifest
    evaluated = max(0, manifest.get("chunks_done", manifest["chunk"] + 1) - 1)
    returns = setup.backend.member_returns(state, member, evaluated, episodes, seed)
    return SavedEvaluation(returns, checkpoint, member)


def checkpoint_best_member(checkpoint: Checkpoint) -> int:
    """The member with the highest finite return of the checkpoint's last evaluation (at a run's end:
    summary.json's ``best_member``); ConfigError when no member has one."""
    returns = checkpoint.manifest.get("returns") or []
    values = np.array([math.nan if r is None else float(r) for r in returns], np.float64)
    if not np.isfinite(values).any():
        raise ConfigError(f"--member: no member has a finite evaluation return in {checkpoint.path}; name one")
    return int(np.argmax(np.where(np.isfinite(values), values, -np.inf)))


def check_member(config: TrainConfig, member: int) -> None:
    """ConfigError unless ``member`` names a member of the run."""
    if not 0 <= member < config.pop:
        raise ConfigError(f"--member must be between 0 and {config.pop - 1} (got {member})")
