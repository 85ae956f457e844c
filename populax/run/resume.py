"""Load a run directory back: its configuration, its newest good checkpoint, a member's policy.

``populax resume RUN`` continues a stopped run from its newest checkpoint that
verifies. With JAX environments every random draw comes from keys stored in
the checkpoint (training) or derived from the seed and chunk index
(evaluation), and metrics.jsonl is cut back to the checkpoint's offset, so the
resumed run ends with the same parameters and metrics as one never stopped.
Host-environment (Gymnasium/ALE) runs resume from what their learner had
consumed, with fresh env episodes: see populax/host_loop.py and docs/host_envs.md.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np

from populax.errors import ConfigError
from populax.host_loop import HostSetup, init_host_population
from populax.loops import episode_returns as loop_episode_returns
from populax.population import select_member
from populax.run.checkpoint import Checkpoint, config_hash, latest_checkpoint
from populax.run.config import TrainConfig, build_config, load_recipe
from populax.trainer import Progress, Setup, TrainResult, eval_keys, init_population, prepare, run


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


def load_setup(run_dir: str | Path) -> Setup | HostSetup:
    """Rebuild a run's :class:`Setup` (a ``HostSetup`` for Gymnasium/ALE runs) from RUN/config.yaml."""
    return prepare(load_config(run_dir))


def initial_population(setup: Setup | HostSetup) -> Any:
    """The run's members as initialised from its seed (compiled or host path)."""
    return init_population(setup) if isinstance(setup, Setup) else init_host_population(setup)


def load_checkpoint(setup: Setup | HostSetup, warn: Callable[[str], None] = _stderr) -> Checkpoint:
    """The newest good checkpoint of the run, checked against its configuration."""
    template = jax.eval_shape(lambda: initial_population(setup))
    checkpoint = latest_checkpoint(setup.run_dir, template, warn=warn)
    expected = config_hash(setup.run_dir)
    if checkpoint.manifest.get("config_hash") != expected:
        raise ConfigError(f"RUN: {setup.run_dir / 'config.yaml'} changed since {checkpoint.path.name} was written; "
                          "restore it or start a new run")
    if not checkpoint.manifest.get("buffer_saved", True):
        warn("populax: this checkpoint has no replay buffers (--no-save-buffer); they refill from scratch, "
             "so the resumed run will not match an uninterrupted one exactly")
    return checkpoint


def resume(
    run_dir: str | Path,
    on_chunk: Callable[[Progress], None] | None = None,
    warn: Callable[[str], None] = _stderr,
) -> TrainResult:
    """Continue the run in ``run_dir`` from its newest good checkpoint."""
    setup = load_setup(run_dir)
    return run(setup, on_chunk, start=load_checkpoint(setup, warn))


def episode_returns(setup: Setup, agent_state: Any, key: jax.Array, episodes: int) -> np.ndarray:
    """Undiscounted return of ``episodes`` fresh episodes under the deterministic policy.

    Draws exactly as the trainer's evaluation does, so with the trainer's key
    and its episode count the mean equals the logged evaluation return.
    """
    rollout = jax.jit(lambda state, k: loop_episode_returns(setup.program.policy, state, setup.env, episodes, k))
    return np.asarray(rollout(agent_state, key))


def evaluate_saved_member(
    run_dir: str | Path, member: int, episodes: int, seed: int | None = None,
    warn: Callable[[str], None] = _stderr,
) -> tuple[np.ndarray, Checkpoint]:
    """Per-episode returns of ``member`` as saved in the run's newest good checkpoint.

    Without ``seed`` the episodes are those of the run's evaluation at that
    checkpoint (host runs: of its last evaluation before it); a seed draws others.
    """
    setup = load_setup(run_dir)
    check_member(setup.config, member)
    if episodes < 1:
        raise ConfigError(f"--episodes must be >= 1 (got {episodes})")
    checkpoint = load_checkpoint(setup, warn)
    if not isinstance(setup, Setup):
        return host_member_returns(setup, checkpoint, member, episodes, seed), checkpoint
    if seed is None:
        key = eval_keys(setup.config.seed, checkpoint.manifest["chunk"], setup.config.pop)[member]
    else:
        key = jax.random.key(seed)
    state = select_member(checkpoint.population, member)
    return episode_returns(setup, state.agent, key, episodes), checkpoint


def check_member(config: TrainConfig, member: int) -> None:
    """ConfigError unless ``member`` names a member of the run."""
    if not 0 <= member < config.pop:
        raise ConfigError(f"--member must be between 0 and {config.pop - 1} (got {member})")


def host_member_returns(setup: HostSetup, checkpoint: Checkpoint, member: int, episodes: int,
                        seed: int | None) -> np.ndarray:
    """Per-episode returns of a host run's saved ``member``.

    Without ``seed``, the episodes start like those of the run's last
    evaluation before the checkpoint (the same env seeds, as many as it ran).
    """
    from populax.host_collector import eval_seed, member_returns

    if seed is None:
        evaluation = max(0, checkpoint.manifest["evaluation"] - 1)
        seed = eval_seed(setup.config.seed, evaluation) + member * setup.config.eval_episodes
    state = select_member(checkpoint.population, member)
    return member_returns(setup.spec, setup.functions, state, episodes, seed)
