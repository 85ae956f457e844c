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

from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np

from populax.errors import ConfigError
from populax.member import member_row
from populax.run.checkpoint import Checkpoint
from populax.run.config import TrainConfig
from populax.runtime.driver import Progress, TrainResult, run
from populax.runtime.loading import (
    checkpoint_best_member,
    layout_change,
    load_checkpoint,
    load_setup,
    warn_on_stderr,
)
from populax.runtime.setup import RunSetup


def resume(
    run_dir: str | Path,
    on_chunk: Callable[[Progress], None] | None = None,
    warn: Callable[[str], None] = warn_on_stderr,
) -> TrainResult:
    """Continue the run in ``run_dir`` from its newest good checkpoint."""
    setup = load_setup(run_dir)
    checkpoint = load_checkpoint(setup, warn)
    change = layout_change(setup, checkpoint)
    if change:
        warn(change)
    return run(setup, on_chunk, start=checkpoint)


def load_run_checkpoint(run_dir: str | Path, warn: Callable[[str], None] = warn_on_stderr) -> Checkpoint:
    """The newest good checkpoint of the run in ``run_dir``, read back as the run holds it: ``population`` is every
    member's state stacked on the member axis (``agent``: networks, targets, optimizer states; ``hparams``;
    ``experience``: replay buffers if saved; ``obs_stats``; a mixed-shape run's ``Cohorts``), ``manifest`` the
    checkpoint's facts (``env_step``, ``returns``...). No pickle: the file is msgpack, checked by its sha256."""
    return load_checkpoint(load_setup(run_dir), warn)


class SavedEvaluation(NamedTuple):
    """What ``populax eval`` measured of a saved member."""

    returns: np.ndarray
    """Per-episode returns."""
    checkpoint: Checkpoint
    member: int
    """The member evaluated (the best of the last evaluation when none was named)."""


def evaluate_saved_member(
    run_dir: str | Path, member: int | None, episodes: int, seed: int | None = None,
    warn: Callable[[str], None] = warn_on_stderr,
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
                           warn: Callable[[str], None] = warn_on_stderr) -> list[SavedEvaluation]:
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


def check_member(config: TrainConfig, member: int) -> None:
    """ConfigError unless ``member`` names a member of the run."""
    if not 0 <= member < config.pop:
        raise ConfigError(f"--member must be between 0 and {config.pop - 1} (got {member})")
