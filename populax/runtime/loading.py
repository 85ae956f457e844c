"""A run directory read back: its configuration, its setup, its newest good checkpoint (``populax resume``,
``eval``, ``load_policy``, and ``--init-from``, which starts a new run from another's members). Below the
driver, so the driver can read another run without an import circle."""

from __future__ import annotations

import dataclasses
import json
import math
import re
import sys
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np

from populax.errors import ConfigError
from populax.member import Cohorts
from populax.population import executor_shards, members_sharding
from populax.run.checkpoint import (
    MANIFEST_FILE,
    Checkpoint,
    Placement,
    config_hash,
    latest_checkpoint,
    list_checkpoints,
)
from populax.run.config import TrainConfig, build_config, load_recipe
from populax.runtime.setup import RunSetup, device_layout, init_population, member_keys, prepare


def warn_on_stderr(message: str) -> None:
    """The default ``warn`` of the loaders: one line on stderr, flushed (it may precede a long compile)."""
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
    """Rebuild a run's :class:`RunSetup` from RUN/config.yaml. A user's environment or algorithm that does not
    import here is named as the run's (no ``--env`` was given to resume, eval or report)."""
    config = load_config(run_dir)
    try:
        return prepare(config, new_run=False)
    except ConfigError as error:
        if str(error).startswith(f"--algo: unknown algorithm {config.algo!r}"):  # a name registered elsewhere
            raise ConfigError(f"RUN: {run_dir}'s algo {config.algo!r} was a name given to populax.register_algorithm "
                              "in the process that trained it; register it here too (Python API), or train with "
                              "--algo py:module:NAME, which any process finds") from None
        recorded = re.fullmatch(r"--(env|algo): (cannot import .*)", str(error))
        if recorded is None:
            raise
        setting, reason = recorded.groups()
        raise ConfigError(f"RUN: {run_dir}'s {setting} {getattr(config, setting)}: {reason}; run populax in the "
                          "directory the run was trained in, or put that module on PYTHONPATH") from None


def member_placement(setup: RunSetup) -> Placement | None:
    """Where the run's init puts a block of members, and so where its checkpoint is read to: split over the
    devices its executor splits that many members over (``executor_shards``; each cohort of a mixed-shape
    population on its own), so a resumed run's first chunk finds them where it runs and no device ever holds
    all of them. None (the first device) for a coupled algorithm, whose init runs on one device."""
    if setup.algorithm.coupled:
        return None
    executor = setup.config.executor
    return lambda members: members_sharding(executor_shards(executor, members))


def newest_manifest(run_dir: Path) -> tuple[Path, dict] | None:
    """(path, manifest) of the run's newest checkpoint when its manifest reads; None when there is none or it
    is damaged (``latest_checkpoint`` then says so and falls back)."""
    checkpoints = list_checkpoints(run_dir)
    if not checkpoints:
        return None
    try:
        return checkpoints[-1], json.loads((checkpoints[-1] / MANIFEST_FILE).read_text())
    except (OSError, ValueError):
        return None


def config_changed(setup: RunSetup, checkpoint: Path) -> None:
    """The one-line refusal of a run whose config.yaml was edited after ``checkpoint`` was written."""
    raise ConfigError(f"RUN: {setup.run_dir / 'config.yaml'} changed since {checkpoint.name} was written; restore "
                      "it, or start a new run (to train longer: restore it, then populax train --init-from RUN "
                      "--total-steps N --out NEW)")


def load_checkpoint(setup: RunSetup, warn: Callable[[str], None] = warn_on_stderr) -> Checkpoint:
    """The newest good checkpoint of the run, checked against its configuration, its members placed as the
    run's init places them (:func:`member_placement`)."""
    shapes = jax.eval_shape(lambda: init_population(setup))
    template = shapes
    if isinstance(shapes, Cohorts):  # members moved between cohorts: the blocks' sizes are the checkpoint's
        def template(assignment: np.ndarray) -> Cohorts:
            keys = member_keys(setup.config.seed, setup.config.pop)
            return jax.eval_shape(lambda: setup.backend.init_blocks(keys, setup.hparams, assignment))
    expected = config_hash(setup.run_dir)
    newest = newest_manifest(setup.run_dir)
    if newest is not None and newest[1].get("config_hash") != expected:  # before the restore: an edit that
        # changes shapes (total_steps sizes the replay) would read as damaged checkpoints, not as the edit
        config_changed(setup, newest[0])
    checkpoint = latest_checkpoint(setup.run_dir, template, warn=warn, initial_hparams=setup.hparams,
                                   placement=member_placement(setup))
    if checkpoint.manifest.get("config_hash") != expected:
        config_changed(setup, checkpoint.path)
    if not checkpoint.manifest.get("buffer_saved", True) and jax.tree.leaves(shapes.experience):
        config = setup.config
        warn(f"populax: this checkpoint has no replay buffers (--save-buffer false, or over 2 GB); they refill first: "
             f"no updates until each holds {max(config.batch_size, config.learning_starts):,} new transitions "
             "(max of batch size and learning starts), so the resumed run will not match an uninterrupted one")
    return checkpoint


def layout_change(setup: RunSetup, checkpoint: Checkpoint) -> str | None:
    """What a resume from ``checkpoint`` says when the run's members are laid out otherwise here than where it
    was trained (``device_layout``: the platform, the devices its executor splits them over): its numbers will not
    equal an uninterrupted run's. None when the layout is the same, or the checkpoint predates the record."""
    saved, here = checkpoint.manifest.get("layout"), device_layout(setup)
    if saved is None or saved == here:
        return None
    if saved["devices"] == here["devices"]:  # the same split on another platform: other floating-point kernels
        return (f"populax: this run was trained on {saved['platform']} and resumes on {here['platform']}: the "
                "numbers will not equal an uninterrupted run's")
    return (f"populax: this run was trained with its members split over {saved['devices']} {saved['platform']} "
            f"device(s) and resumes over {here['devices']} {here['platform']}: --executor {setup.config.executor} "
            "lays them out differently here, so the numbers will not equal an uninterrupted run's (--executor vmap "
            "lays them out alike on every machine)")


def checkpoint_best_member(checkpoint: Checkpoint, setting: str = "--member") -> int:
    """The member with the highest finite return of the checkpoint's last evaluation (at a run's end:
    summary.json's ``best_member``); ConfigError naming ``setting`` when no member has one."""
    returns = checkpoint.manifest.get("returns") or []
    values = np.array([math.nan if r is None else float(r) for r in returns], np.float64)
    if not np.isfinite(values).any():
        raise ConfigError(f"{setting}: no member has a finite evaluation return in {checkpoint.path}; name one")
    return int(np.argmax(np.where(np.isfinite(values), values, -np.inf)))
