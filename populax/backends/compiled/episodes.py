"""A member's JAX environments inside the compiled chunk: reset, one step's bookkeeping, evaluation episodes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from populax.envs.jax_envs import JaxEnv
from populax.member import EnvSlots
from populax.run.config import EVAL_STEP_LIMIT


def evaluate_policy(policy: Callable, agent_state: Any, env: JaxEnv, episodes: int, key: jax.Array,
                    max_steps: int = 0) -> tuple[jax.Array, jax.Array]:
    """(mean undiscounted return of ``episodes`` fresh episodes under ``policy(agent_state, obs)``, whether one
    of them was still running when ``episode_steps`` cut it)."""
    totals, running = episode_returns(policy, agent_state, env, episodes, key, max_steps)
    return jnp.mean(totals), jnp.any(running)


def episode_steps(env: JaxEnv, max_steps: int = 0) -> int:
    """Steps an evaluation episode may last: the env's limit, capped by ``max_steps`` when > 0, else by
    ``EVAL_STEP_LIMIT`` (as on the host)."""
    return min(env.max_episode_steps, max_steps if max_steps > 0 else EVAL_STEP_LIMIT)


def episode_returns(policy: Callable, agent_state: Any, env: JaxEnv, episodes: int, key: jax.Array,
                    max_steps: int = 0) -> tuple[jax.Array, jax.Array]:
    """(undiscounted return of each of ``episodes`` fresh episodes under ``policy(agent_state, obs)``, each cut
    after ``episode_steps(env, max_steps)`` steps; whether each was still running there, neither terminated
    nor truncated by the env)."""
    reset_key, run_key = jax.random.split(key)
    obs, env_state = jax.vmap(env.reset)(jax.random.split(reset_key, episodes))

    def step(carry, step_key):
        obs, env_state, total, alive = carry
        action = policy(agent_state, obs)
        result = jax.vmap(env.step)(jax.random.split(step_key, episodes), env_state, action)
        total = total + alive * result.reward
        alive = alive * (1.0 - jnp.maximum(result.terminated, result.truncated))
        return (result.obs, result.state, total, alive), None

    zeros = jnp.zeros((episodes,), jnp.float32)
    carry = (obs, env_state, zeros, zeros + 1.0)
    keys = jax.random.split(run_key, episode_steps(env, max_steps))
    (_, _, total, alive), _ = jax.lax.scan(step, carry, keys)
    return total, alive > 0


def cut_short(running: Any, max_steps: int) -> bool:
    """Whether an evaluation's episodes were cut by populax's own limit (``EVAL_STEP_LIMIT``; ``running``: whether
    each was still running at the end), not by a cut the user set (``--eval-max-steps``)."""
    return not max_steps and bool(np.any(np.asarray(running)))


def reset_envs(env: JaxEnv, key: jax.Array, count: int) -> EnvSlots:
    """Reset ``count`` environments, with strong types.

    Some environments start with weakly typed leaves that a step makes strong;
    fixing the types here keeps the second chunk from recompiling.
    """
    obs, env_state = jax.vmap(env.reset)(jax.random.split(key, count))
    return EnvSlots(
        state=jax.tree.map(lambda x: jnp.asarray(x, x.dtype), env_state),
        obs=obs,
        episode_return=jnp.zeros((count,), jnp.float32),
        last_episode_return=jnp.full((count,), jnp.nan, jnp.float32),
    )


def advance_episodes(slots: EnvSlots, result: Any) -> EnvSlots:
    """The env slots after one step of all E envs (returns of finished episodes recorded)."""
    episode_return = slots.episode_return + result.reward
    ended = jnp.maximum(result.terminated, result.truncated) > 0
    return EnvSlots(
        state=result.state,
        obs=result.obs,
        episode_return=jnp.where(ended, 0.0, episode_return),
        last_episode_return=jnp.where(ended, episode_return, slots.last_episode_return),
    )
