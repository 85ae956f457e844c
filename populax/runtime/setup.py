"""Resolve a configuration into a run: algorithm, backend, hyperparameters, strategy settings, run directory.

Everything is validated before anything is written (``prepare``), so a user's
mistake leaves no trace on disk. The environment id picks the backend:
gymnax ids the compiled one, Gymnasium/ALE ids the host one; nothing after
this point asks which.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np
import yaml

from populax.agents import BUILTIN, Algorithm, algorithm_setting, get_algorithm
from populax.agents.options import resolve_options
from populax.backends import Backend
from populax.backends.cohort_moves import can_distill
from populax.backends.cohorts import CohortBackend
from populax.backends.factory import make_local_backend
from populax.cohorts import (
    StaticSpace,
    constant_settings,
    initial_assignment,
    setting_flag,
    spec_text,
    split_static,
    static_space,
)
from populax.coupled.hparams import check_shared_hparams
from populax.envs.custom import OBJECT_PREFIX, env_setting
from populax.errors import ConfigError
from populax.hparams import Distribution, resolve_specs, sample_population, spec_to_text
from populax.importpath import PY_PREFIX
from populax.member import Member
from populax.memory import check_population_fits
from populax.population import executor_shards
from populax.run.config import FIELDS, TrainConfig, check_ranges, coerce_config, config_to_dict
from populax.strategies import check_strategy_config
from populax.strategies.runner import fresh_fields
from populax.strategies.space import Dim, make_space

HPARAM_KEY, INIT_KEY = 1, 2
"""fold_in constants of the run's key for hyperparameter draws and member init (3: evaluation, 4: strategy)."""


class RunSetup(NamedTuple):
    """A validated configuration and everything built from it (nothing on disk yet)."""

    config: TrainConfig
    algorithm: Algorithm
    backend: Backend
    specs: dict[str, Distribution]
    """Each traced hyperparameter's per-member specification (a value, a list, a distribution)."""
    hparams: Any
    """Stacked per-member hyperparameters drawn from the seed."""
    dims: list[Dim]
    """The hyperparameters a strategy explores (those given as distributions or lists)."""
    ready_interval: int
    """PBT/PB2: env steps per member between rounds."""
    run_dir: Path
    space: StaticSpace | None = None
    """Mixed-shape populations: the static settings that differ between members (None: one shape)."""
    assignment: np.ndarray | None = None
    """Mixed-shape populations: each member's initial cohort (an index into ``space.settings``)."""

    @property
    def num_chunks(self) -> int:
        """Chunks (evaluation periods) in the run."""
        return self.backend.num_chunks

    @property
    def chunk_steps(self) -> int:
        """Env steps per member per chunk."""
        return self.backend.chunk_steps


def default_run_dir(config: TrainConfig) -> Path:
    """runs/ALGO-ENV-TIMESTAMP."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    def clean(text: str) -> str:
        return text.replace("/", "_").replace(":", "_")

    return Path("runs") / f"{clean(config.algo)}-{clean(config.env)}-{stamp}"


def make_backend(config: TrainConfig, algorithm: Algorithm, run_dir: Path | None = None,
                 space: StaticSpace | None = None, assignment: np.ndarray | None = None) -> Backend:
    """The run's backend: ``--executor ray`` runs blocks of members on Ray workers (``populax.backends.cluster``),
    any other executor runs them on this machine (``populax.backends.factory``: compiled for gymnax and
    brax:NAME ids, host for Gymnasium/ALE ids); a mixed-shape population (``space``) one block per cohort
    (``populax.backends.cohorts``)."""
    cohorts = None
    if space is not None:
        check_mixed_config(config, algorithm, space)
        if config.executor != "ray":
            return CohortBackend(config, algorithm, space, assignment)
        # the driver's own, for what needs no training (shapes, `populax eval`): one plain vmap per cohort
        cohorts = CohortBackend(dataclasses.replace(config, executor="vmap"), algorithm, space, assignment)
    elif config.executor != "ray":
        return make_local_backend(config, algorithm)
    # Ray workers rebuild the run from its settings in their own processes: what only this process knows is refused.
    if config.algo not in BUILTIN and not config.algo.startswith(PY_PREFIX):
        raise ConfigError(f"--executor ray: {config.algo!r} was registered in this process only; Ray workers build "
                          f"the algorithm in their own processes: name it by import path (py:package.module:ALGORITHM)")
    if config.env.startswith(OBJECT_PREFIX):
        raise ConfigError("--executor ray: the environment is a Python object with no import path; Ray workers "
                          "build it in their own processes: pass env='py:package.module:attribute'")
    from populax.backends.cluster import make_ray_backend

    return make_ray_backend(config, algorithm, run_dir, cohorts, space, assignment)


def check_mixed_config(config: TrainConfig, algorithm: Algorithm, space: StaticSpace) -> None:
    """ConfigError (one line, naming the setting) for what a mixed-shape population does not run."""
    flag = setting_flag(space.names[0])
    if algorithm.coupled:
        raise ConfigError(f"{flag}: {config.algo} couples its members through state of one shape (a shared critic); "
                          "static settings cannot differ between its members")
    if config.executor == "sharded":
        raise ConfigError(f"--executor sharded: cohort sizes change as members move between cohorts ({flag}); "
                          "use auto, which shards a cohort whose size the devices divide")


def prepare(config: TrainConfig, new_run: bool = True) -> RunSetup:
    """Validate ``config`` and build the run's objects; raises ConfigError, writes nothing. ``new_run``: the
    run directory (``--out``) must be free for a new run (False: an existing run read back, ``load_setup``).

    ``config.env`` may be a user's environment object (the Python API): the run records its import path, or
    names it for this process only (``populax.envs.custom.env_setting``). Static settings given per member
    (``--hp.hidden choice:64x64,256x256``) make a mixed-shape population (``populax.cohorts``)."""
    config = coerce_config(with_object_settings(config))
    check_ranges(config)
    algorithm = get_algorithm(config.algo)
    if algorithm.coupled and config.obs_norm:  # one shared critic learns from every member's raw observations
        raise ConfigError(f"--obs-norm: {config.algo} does not normalise observations; leave it off")
    static, traced = split_static(config.hp, config.pop, FIELDS)
    config = dataclasses.replace(config, hp=traced, **constant_settings(static))
    check_ranges(config)
    space = static_space(static)
    assignment = None if space is None else initial_assignment(space, config.seed, config.pop)
    run_dir = Path(config.out) if config.out else default_run_dir(config)
    backend = make_backend(config, algorithm, run_dir, space, assignment)
    options = algorithm.options
    specs = resolve_specs(algorithm.hparams, config.hp, config.pop,
                          tuple(f.name for f in dataclasses.fields(options)) if dataclasses.is_dataclass(options) else ())
    hparams = sample_population(algorithm.hparams, specs, jax.random.fold_in(jax.random.key(config.seed), HPARAM_KEY),
                                config.pop)
    dims = make_space(algorithm.hparams, specs)
    ready = check_strategy_config(config, backend.chunk_steps, dims)
    if algorithm.coupled and config.strategy != "independent":
        raise ConfigError(f"--strategy: {config.algo} couples its members itself (shared critic); "
                          f"allowed: independent (got {config.strategy})")
    fresh_fields(config, algorithm.policy_fields, algorithm.optimizer_fields)  # --pbt-reset-optimizer refused early
    if algorithm.coupled:
        check_shared_hparams(hparams, config.algo, resolve_options(algorithm.options, config.algo_options, config.algo))
    # Before anything is allocated: N members' replay buffers must fit (shapes only, nothing is built).
    # Under Ray each worker holds its own block (the driver none); the blocks share one memory only on a
    # local CPU instance (this host's RAM): on a cluster's nodes or one GPU per worker, one block counts.
    ray = config.executor == "ray"
    shards = config.workers if ray else executor_shards(config.executor, config.pop)
    keys = member_keys(config.seed, config.pop)
    separate = ray and bool(config.ray_address or config.worker_gpus)
    if space is None:
        check_population_fits(backend.init_population, keys, hparams, shards=shards, donated=in_place(config),
                              separate_memories=separate)
    else:  # members move between cohorts: every cohort must hold the whole population
        check_cohorts_fit(backend.local if ray else backend, space, keys, hparams, in_place(config),
                          shards if ray else None, separate)
    if new_run:
        check_out_dir(run_dir, config.force)
    if config.pbt_cross_cohort == "distill" and space is not None and not can_distill((backend.local if ray else backend).agent_of(0)):
        how = ("on-policy members (OnPolicyAgent) have none" if algorithm.on_policy
               else "it declares no distillation (Agent.distill)")
        raise ConfigError(f"--pbt-cross-cohort distill: {config.algo} cannot distil: {how}; allowed: copy, fresh")
    return RunSetup(config, algorithm, backend, specs, hparams, dims, ready, run_dir, space, assignment)


def check_cohorts_fit(backend: CohortBackend, space: StaticSpace, keys: jax.Array, hparams: Any,
                      donated: bool, shards: int | None = None, separate_memories: bool = False) -> None:
    """The memory check of a mixed-shape population: all N members in any one cohort must fit (PBT may move
    every member to one shape), each cohort checked with its own settings; ``shards``: the blocks they are
    split into (Ray workers; default: the devices ``auto`` shards a cohort over)."""
    pop = int(keys.shape[0])
    for cohort, label in enumerate(space.labels):
        local = backend.backend(cohort, pop)
        check_population_fits(local.init_population, keys, hparams, donated=donated,
                              shards=executor_shards(backend.config.executor, pop) if shards is None else shards,
                              separate_memories=separate_memories,
                              settings=f"--buffer-size, --pop or {setting_flag(space.names[0])} ({label})")


def with_object_settings(config: TrainConfig) -> TrainConfig:
    """``config`` with an environment or algorithm object (the Python API) replaced by the string setting a run
    records; the one-line note for an object without an import path goes to stderr."""
    env, env_note = env_setting(config.env)
    algo, algo_note = algorithm_setting(config.algo)
    for note in (env_note, algo_note):
        if note:
            print(note, file=sys.stderr)
    if env is config.env and algo is config.algo:
        return config
    return dataclasses.replace(config, env=env, algo=algo)


def in_place(config: TrainConfig) -> bool:
    """Whether a chunk updates the population's state in place (donated): not when a Python loop runs the
    members one by one (``sequential``: the stacked input lives on). A Ray worker's block is updated in place
    (the worker keeps ``kept_before_chunk`` of it, as the driver does)."""
    return config.executor != "sequential"


RUN_KEYS = ("algo", "env", "pop", "total_steps", "executor")
"""Settings every populax config.yaml records: a directory whose config.yaml lacks them is not a run's (a
Hydra config, a project's root)."""


def is_run_dir(path: Path) -> bool:
    """Whether ``path`` is a populax run's directory: its config.yaml is a mapping of a run's settings."""
    try:
        recorded = yaml.safe_load((path / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(recorded, dict) and all(key in recorded for key in RUN_KEYS)


def check_replaceable(run_dir: Path) -> None:
    """ConfigError (one line) unless deleting ``run_dir`` loses nothing but an earlier run: not a link, not the
    current directory or one above it, and a populax run's directory (:func:`is_run_dir`)."""
    if run_dir.is_symlink():
        raise ConfigError(f"--out: {run_dir} is a symbolic link; --force replaces only a run's own directory: "
                          "name the directory itself")
    here = Path.cwd().resolve()
    if run_dir.resolve() in (here, *here.parents):
        raise ConfigError(f"--out: {run_dir} is the current directory or holds it; --force replaces only a run's own "
                          "directory: choose another")
    if not is_run_dir(run_dir):
        raise ConfigError(f"--out: {run_dir} is not a populax run directory (no config.yaml of a run) and --force "
                          "replaces only a run's directory, never other files: choose another directory")


def check_out_dir(run_dir: Path, force: bool) -> None:
    """ConfigError (one line) unless ``run_dir`` may become a new run's directory: a new path where a directory
    can be made, an empty directory, or under ``--force`` an earlier populax run's directory, which the run
    replaces. ``--force`` never deletes what is not a run (:func:`check_replaceable`): another directory's files
    (a user's module beside the command), the current directory or one above it, a file."""
    try:
        if not run_dir.exists():
            check_creatable(run_dir)
            return
        if not run_dir.is_dir():
            raise ConfigError(f"--out: {run_dir} is a file; choose a directory (new, empty, or an earlier run's)")
        if not any(run_dir.iterdir()):
            check_creatable(run_dir)
            return  # nothing in it to lose
    except PermissionError as error:  # a directory this user cannot list
        raise ConfigError(f"--out: cannot read {run_dir} ({error.strerror}); choose another directory") from None
    if not force:
        raise ConfigError(f"--out: {run_dir} already exists; choose another directory or pass --force to replace it")
    check_replaceable(run_dir)


def check_creatable(run_dir: Path) -> None:
    """ConfigError (one line) when the run could not write ``run_dir``: the nearest existing directory on its path
    is a file or not writable (found before the compile, not when the first file is written)."""
    existing = next(path for path in (run_dir, *run_dir.absolute().parents) if path.exists())
    if not existing.is_dir():
        raise ConfigError(f"--out: cannot create {run_dir}: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"--out: cannot create {run_dir}: {existing} is not writable; choose another directory")


def create_run_dir(setup: RunSetup) -> None:
    """Make the run directory (replacing an earlier run's: :func:`check_out_dir` refused anything else) and
    write config.yaml. A setup run twice replaces its own first run."""
    if setup.run_dir.exists() and any(setup.run_dir.iterdir()):
        check_replaceable(setup.run_dir)  # what is deleted, checked where it is deleted
        shutil.rmtree(setup.run_dir)
    try:
        setup.run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:  # what os.access could not foresee (a read-only mount, /sys, root squash)
        raise ConfigError(f"--out: cannot create {setup.run_dir} ({error.strerror}); choose another directory") from None
    resolved = config_to_dict(setup.config)
    resolved["out"] = str(setup.run_dir)
    resolved["force"] = False
    resolved["hp"] = {name.replace("_", "-"): spec_to_text(d) for name, d in setup.specs.items()}
    if setup.space is not None:  # the static settings given per member, as the user wrote them
        resolved["hp"].update({setting_flag(n)[5:]: spec_text(n, s) for n, s in setup.space.specs.items()})
    (setup.run_dir / "config.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False))


def device_layout(setup: RunSetup) -> dict[str, Any]:
    """The platform and the number of devices the run's executor splits its members over (``auto`` and ``sharded``
    use every local device: on a CPU one per core; a coupled algorithm's population program runs on one): what a
    checkpoint records, so a resume elsewhere can say its numbers will not be an uninterrupted run's."""
    config = setup.config
    devices = 1 if setup.algorithm.coupled else executor_shards(config.executor, config.pop)
    return {"platform": jax.default_backend(), "devices": devices}


def member_keys(seed: int, pop: int) -> jax.Array:
    """Every member's init key, from the run's seed."""
    return jax.random.split(jax.random.fold_in(jax.random.key(seed), INIT_KEY), pop)


def init_population(setup: RunSetup) -> Member:
    """Every member's initial state from the run's seed."""
    return setup.backend.init_population(member_keys(setup.config.seed, setup.config.pop), setup.hparams)
