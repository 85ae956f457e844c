"""A trained member as a plain function: ``populax.load_policy(RUN)``.

After a run, the member a researcher wants is usually the best one, in their own evaluation harness, a robot
loop or a notebook, without populax's training machinery. :func:`load_policy` reads the run directory's
newest good checkpoint (the one ``populax resume`` and ``populax eval`` use) and returns a :class:`Policy`:

* ``policy(obs)`` maps one observation to one action, ``policy.batch(obs)`` a batch to a batch. Actions are
  what the environment's ``step`` takes (continuous ones clipped and rescaled from the agent's [-1, 1] to the
  action space's bounds; discrete ones integers), and observations are standardised with the member's saved
  statistics under ``--obs-norm``: exactly what the run's own evaluation does, so a seeded episode in
  :meth:`Policy.make_env` scores what ``populax eval --seed`` reports.
* ``policy.make_env()`` builds the environment the policy was trained for as a Gymnasium environment: for a
  Gymnasium/ALE run the same wrappers (Atari preprocessing, frame stack, time limit), for a gymnax run its
  Gymnasium twin (same dynamics, observations and actions; :data:`GYMNASIUM_TWINS`). A brax or other JAX
  environment has none: step it with its own API, the policy's actions are what its adapter hands it.

Which member: ``member=K``, or by default the best of the checkpoint's last evaluation (at the end of a run,
``summary.json``'s ``best_member``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

from populax.errors import ConfigError
from populax.run.config import TrainConfig
from populax.runtime.loading import warn_on_stderr

GYMNASIUM_TWINS = {
    "Pendulum-v1": "Pendulum-v1",
    "CartPole-v1": "CartPole-v1",
    "Acrobot-v1": "Acrobot-v1",
    "MountainCar-v0": "MountainCar-v0",
    "MountainCarContinuous-v0": "MountainCarContinuous-v0",
}
"""gymnax id -> the Gymnasium id with the same dynamics, observations, actions and episode limit (checked step
by step in tests/test_video.py)."""


class GymnasiumSource(NamedTuple):
    """The Gymnasium environment that stands for a run's environment, and whether it is a gymnax env's twin."""

    gymnasium_id: str
    twin_of: str | None
    """The gymnax id whose Gymnasium twin this is, or None for a host (Gymnasium/ALE) run."""


def gymnasium_source(env: str, setting: str) -> GymnasiumSource:
    """The Gymnasium environment of a run on ``env`` (``--env`` as configured); ConfigError naming ``setting``
    (what asked for it: ``--video``, ``make_env``) when there is none."""
    from populax.envs.jax_envs import gymnax_ids
    from populax.envs.routing import resolve_env

    choice = resolve_env(env, gymnax_ids())
    if choice.kind == "gymnasium":
        return GymnasiumSource(choice.env_id, None)
    if choice.kind == "gymnax" and choice.env_id in GYMNASIUM_TWINS:
        return GymnasiumSource(GYMNASIUM_TWINS[choice.env_id], choice.env_id)
    what = {"gymnax": "gymnax's", "brax": "brax's"}.get(choice.kind, "the JAX environment")
    raise ConfigError(f"{setting}: {what} {choice.env_id} has no Gymnasium twin (only Gymnasium/ALE runs and "
                      f"gymnax {', '.join(GYMNASIUM_TWINS)} have a Gymnasium environment)")


def make_gymnasium_env(config: TrainConfig, render_mode: str | None = None,
                       setting: str = "make_env") -> tuple[Any, GymnasiumSource]:
    """One Gymnasium environment of a run configured as ``config``: a host run's with its training wrappers, a
    gymnax run's twin (ConfigError naming ``setting`` when it has none); and where it comes from."""
    from populax.envs.host_envs import make_host_spec

    source = gymnasium_source(config.env, setting)
    host = source.twin_of is None
    spec = make_host_spec(source.gymnasium_id, render_mode=render_mode,
                          terminal_on_life_loss=config.terminal_on_life_loss if host else False,
                          max_episode_steps=(config.max_episode_steps or None) if host else None)
    return spec.make(), source


@dataclass(frozen=True)
class Policy:
    """One saved member's deterministic policy: observations in, environment actions out."""

    member: int
    """The member's index in the run."""
    run_dir: Path
    checkpoint: Path
    """The checkpoint directory the parameters come from."""
    env: str
    """The run's ``--env``."""
    env_steps: int
    """Env steps the member had taken at the checkpoint."""
    last_return: float | None
    """The member's return at the checkpoint's last evaluation (None: not finite, or none yet)."""
    hparams: dict[str, float]
    """The member's traced hyperparameters at the checkpoint (after any PBT/PB2 explore), keyed by CLI name."""
    cohort: str | None
    """Mixed-shape populations: the member's static settings (its cohort's label); None otherwise."""
    config: TrainConfig = field(repr=False)
    """The run's configuration."""
    act_batch: Callable[[np.ndarray], np.ndarray] = field(repr=False)
    """Observations [B, ...] -> actions [B, ...] (the backend's ``member_actor``)."""

    def __call__(self, obs: Any) -> np.ndarray:
        """The action for one observation (a discrete action as a 0-d integer array, ``int(...)`` it)."""
        return self.act_batch(np.asarray(obs)[None])[0]

    def batch(self, obs: Any) -> np.ndarray:
        """Actions for a batch of observations (leading axis), e.g. of a Gymnasium vector env."""
        return self.act_batch(np.asarray(obs))

    def make_env(self, render_mode: str | None = None) -> Any:
        """A Gymnasium environment this policy acts in: the run's own (same wrappers and time limit) for a
        Gymnasium/ALE run, the twin of a gymnax one; ConfigError for brax and other JAX environments."""
        return make_gymnasium_env(self.config, render_mode)[0]


def load_policy(run_dir: str | Path, member: int | None = None,
                warn: Callable[[str], None] = warn_on_stderr) -> Policy:
    """The deterministic policy of ``member`` (default: the best of the last evaluation) as saved in the run's
    newest good checkpoint. Works for every backend (compiled, host, Ray: loaded in this process), algorithm
    and strategy, and for mixed-shape populations."""
    from populax.hparams import member_hparams
    from populax.member import Cohorts, member_row
    from populax.run.resume import check_member
    from populax.runtime.loading import checkpoint_best_member, load_checkpoint, load_config, load_setup

    config = load_config(run_dir)
    if member is not None:
        check_member(config, member)
    setup = load_setup(run_dir)
    checkpoint = load_checkpoint(setup, warn)
    returns = checkpoint.manifest.get("returns")
    if member is None:
        member = checkpoint_best_member(checkpoint)
    population = checkpoint.population
    state = member_row(population, member)
    last = float(returns[member]) if returns and returns[member] is not None else math.nan
    return Policy(
        member=member,
        run_dir=Path(run_dir),
        checkpoint=checkpoint.path,
        env=config.env,
        env_steps=int(np.asarray(state.env_steps)),
        last_return=last if math.isfinite(last) else None,
        hparams=member_hparams(jax.tree.map(lambda x: np.asarray(x)[None], state.hparams), 0),
        cohort=population.locate(member)[0] if isinstance(population, Cohorts) else None,
        config=config,
        act_batch=setup.backend.member_actor(state),
    )


__all__ = ["GYMNASIUM_TWINS", "GymnasiumSource", "Policy", "gymnasium_source", "load_policy", "make_gymnasium_env"]
