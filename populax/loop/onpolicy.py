"""The on-policy member loop (PPO, or a user's on-policy algorithm), written once for ONE member.

Three pure functions over an :class:`~populax.agents.base.OnPolicyAgent`, the same on both backends (the
compiled chunk calls them per env step and per rollout; the host learner on each block, which is one rollout)::

    act(agent, obs, key) -> (action, log_prob, value)
    observe(agent, obs, action, log_prob, value, reward, terminated, truncated, final_obs, gamma) -> Rollout
        # one step (any batch shape): truncations bootstrapped with V(final obs), GAE stops at every end
    learn(agent, rollout [T, E], last_obs, hparams, key) -> (agent, key, metrics)
        # GAE from V(last_obs), then the algorithm's epochs of minibatch updates
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from populax.agents.base import Array, Key, OnPolicyAgent, Rollout


class OnPolicyLoop(NamedTuple):
    """One on-policy member's loop; see the module docstring."""

    act: Callable[..., tuple[Array, Array, Array]]
    observe: Callable[..., Rollout]
    learn: Callable[..., tuple[Any, Key, dict[str, Array]]]


def gae(reward: Array, value: Array, done: Array, last_value: Array, gamma: Array, lam: Array) -> tuple[Array, Array]:
    """Generalised advantage estimates and returns over a [T, E] rollout.

    delta_t = r_t + gamma * (1 - done_t) * V(s_{t+1}) - V(s_t);
    A_t = delta_t + gamma * lambda * (1 - done_t) * A_{t+1}; returns = A + V.
    """
    next_value = jnp.concatenate([value[1:], last_value[None]], axis=0)
    delta = reward + gamma * (1.0 - done) * next_value - value

    def backward(advantage, step):
        d, not_done = step
        advantage = d + gamma * lam * not_done * advantage
        return advantage, advantage

    _, advantages = jax.lax.scan(backward, jnp.zeros_like(last_value), (delta, 1.0 - done), reverse=True)
    return advantages, advantages + value


def bootstrap_truncated(reward: Array, terminated: Array, truncated: Array, final_value: Array, gamma: Array) -> Array:
    """The reward with ``gamma * V(final obs)`` folded in where an episode was truncated, not terminated.

    Truncation is not a real end: the return goes on past the time limit, so
    its value is bootstrapped here and GAE may then stop at every episode end.
    """
    return reward + truncated * (1.0 - terminated) * gamma * final_value


def learn_rollout(agent: OnPolicyAgent, state: Any, rollout: Rollout, last_value: Array, key: Key,
                  hparams: Any) -> tuple[Any, dict[str, Array]]:
    """GAE over a [T, E] rollout (``hparams.gamma``, ``hparams.gae_lambda``), then the agent's update."""
    advantages, returns = gae(rollout.reward, rollout.value, rollout.done, last_value, hparams.gamma, hparams.gae_lambda)
    return agent.update(state, rollout, advantages, returns, key, hparams)


def make_onpolicy_loop(agent: OnPolicyAgent) -> OnPolicyLoop:
    """The loop of one member of ``agent``; see the module docstring."""

    def observe(agent_state: Any, obs: Array, action: Array, log_prob: Array, value: Array, reward: Array,
                terminated: Array, truncated: Array, final_obs: Array, gamma: Array) -> Rollout:
        final_value = agent.value(agent_state, final_obs)
        reward = bootstrap_truncated(reward, terminated, truncated, final_value, gamma)
        return Rollout(obs, action, log_prob, value, reward, jnp.maximum(terminated, truncated))

    def learn(agent_state: Any, rollout: Rollout, last_obs: Array, hparams: Any,
              key: Key) -> tuple[Any, Key, dict[str, Array]]:
        key, update_key = jax.random.split(key)
        last_value = agent.value(agent_state, last_obs)
        state, metrics = learn_rollout(agent, agent_state, rollout, last_value, update_key, hparams)
        return state, key, metrics

    return OnPolicyLoop(act=agent.act, observe=observe, learn=learn)
