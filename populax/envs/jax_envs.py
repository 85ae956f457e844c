"""gymnax environments behind a small adapter the compiled loop understands.

The adapter bakes the environment parameters in, rescales continuous actions
from the agent's [-1, 1] to the environment's bounds, and reports termination
and truncation separately together with the true final observation (gymnax
auto-resets, so the returned observation after an episode end is already the
next episode's first one).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from populax.agents.base import ActionSpec
from populax.errors import ConfigError


class StepResult(NamedTuple):
    """One vectorised environment step as the training loop consumes it."""

    obs: jax.Array
    """Observation to act on next (first one of a new episode after an end)."""
    state: Any
    reward: jax.Array
    terminated: jax.Array
    truncated: jax.Array
    final_obs: jax.Array
    """The observation the transition really led to (use it for bootstrapping)."""


class JaxEnv(NamedTuple):
    """A gymnax environment with its parameters bound, for one env instance."""

    name: str
    obs_shape: tuple[int, ...]
    action: ActionSpec
    max_episode_steps: int
    reset: Callable[[jax.Array], tuple[jax.Array, Any]]
    step: Callable[[jax.Array, Any, jax.Array], StepResult]


def _import_gymnax():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import gymnax
    return gymnax


def gymnax_ids() -> list[str]:
    """All environment ids gymnax registers."""
    return list(_import_gymnax().registered_envs)


def make_jax_env(env_id: str) -> JaxEnv:
    """Build the adapter for gymnax id ``env_id`` (ConfigError if unknown)."""
    gymnax = _import_gymnax()
    if env_id not in gymnax.registered_envs:
        raise ConfigError(
            f"--env: unknown environment {env_id!r}; run `populax envs` for the list"
        )
    env, params = gymnax.make(env_id)
    space = env.action_space(params)
    obs_shape = tuple(int(d) for d in env.observation_space(params).shape)
    if hasattr(space, "n"):
        action = ActionSpec(discrete=True, size=int(space.n))
        low = high = None
    else:
        action = ActionSpec(discrete=False, size=int(np.prod(space.shape)))
        low = jnp.broadcast_to(jnp.asarray(space.low, jnp.float32), space.shape)
        high = jnp.broadcast_to(jnp.asarray(space.high, jnp.float32), space.shape)

    def to_env_action(action_in):
        if action.discrete:
            return action_in
        return low + (action_in + 1.0) * 0.5 * (high - low)

    def reset(key):
        obs, state = env.reset(key, params)
        return obs.astype(jnp.float32), state

    def step(key, state, action_in):
        obs, state, reward, terminated, truncated, info = env.step(
            key, state, to_env_action(action_in), params
        )
        return StepResult(
            obs=obs.astype(jnp.float32),
            state=state,
            reward=jnp.asarray(reward, jnp.float32),
            terminated=jnp.asarray(terminated, jnp.float32),
            truncated=jnp.asarray(truncated, jnp.float32),
            final_obs=info["final_observation"].astype(jnp.float32),
        )

    return JaxEnv(
        name=env_id,
        obs_shape=obs_shape,
        action=action,
        max_episode_steps=int(params.max_steps_in_episode),
        reset=reset,
        step=step,
    )


def describe_action(spec: ActionSpec) -> str:
    """Human text for an action spec, for error messages and `populax envs`."""
    return f"Discrete({spec.size})" if spec.discrete else f"Box({spec.size},)"
