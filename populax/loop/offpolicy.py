"""The off-policy member loop (TD3, SAC, DQN, a user's DDPG), written once for ONE member.

Three pure functions over an :class:`~populax.agents.base.Agent`, the same on both backends (the compiled
chunk calls them inside its scans; the host learner maps them over the population with the executor)::

    act(agent, obs, hparams, warming, act_key, random_key) -> action     # uniform random while warming up
    observe(replay, transition) -> replay                                  # store E env steps
    learn(agent, replay, hparams, obs_stats, key, enabled)                 # sample a batch -> agent.update
        -> (agent, key, metrics)                                           #   (NaN metrics where not enabled)

The backends only decide *when*: the compiled chunk learns ``updates_per_phase`` times after each phase once
``env_steps > learn_from``; the host learner runs the updates its blocks owe (``LoopShape.owed_updates``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from populax.agents.base import ActionSpec, Agent, Transition
from populax.buffers import buffer_add, buffer_sample
from populax.loop.shape import LoopShape

PrepareObs = Callable[[Any, jax.Array], jax.Array]
"""``(obs_stats, obs) -> network input`` (``--obs-norm``'s standardisation with the member's statistics)."""


class OffPolicyLoop(NamedTuple):
    """One off-policy member's loop; see the module docstring."""

    act: Callable[..., jax.Array]
    observe: Callable[[Any, Transition], Any]
    learn: Callable[..., tuple[Any, jax.Array, dict[str, jax.Array]]]


def random_actions(key: jax.Array, spec: ActionSpec, count: int) -> jax.Array:
    """Uniform random actions for ``count`` envs (the warm-up policy)."""
    if spec.discrete:
        return jax.random.randint(key, (count,), 0, spec.size)
    return jax.random.uniform(key, (count, spec.size), minval=-1.0, maxval=1.0)


def example_transition(obs_shape: tuple[int, ...], obs_dtype: Any, action: ActionSpec) -> Transition:
    """One zero transition with the environment's shapes and dtypes."""
    obs = jnp.zeros(obs_shape, obs_dtype)
    act = jnp.zeros((), jnp.int32) if action.discrete else jnp.zeros((action.size,), jnp.float32)
    return Transition(obs, act, jnp.float32(0), obs, jnp.float32(0))


def nan_metrics(fn: Callable, state: Any) -> Any:
    """NaN metrics shaped like ``fn(state)[1]`` (the output of a skipped update)."""
    metrics = jax.eval_shape(fn, state)[1]
    return jax.tree.map(lambda m: jnp.full(m.shape, jnp.nan, m.dtype), metrics)


def exploring(agent_act: Callable, action: ActionSpec) -> Callable[..., jax.Array]:
    """``act(agent, obs, hparams, warming, act_key, random_key)``: ``agent_act``'s exploratory actions, uniform
    random ones while ``warming`` (before ``learning_starts``)."""

    def act(agent_state: Any, obs: jax.Array, hparams: Any, warming: jax.Array, act_key: jax.Array,
            random_key: jax.Array) -> jax.Array:
        learned = agent_act(agent_state, obs, act_key, hparams)
        return jnp.where(warming, random_actions(random_key, action, obs.shape[0]), learned)

    return act


def observe(replay: Any, transitions: Transition) -> Any:
    """``replay`` with ``transitions`` (one per env of the member, leading axis E) stored, the oldest overwritten."""
    return buffer_add(replay, transitions)


def prepare_batch(batch: Transition, prepare_obs: PrepareObs | None, obs_stats: Any) -> Transition:
    """``batch`` with its observations turned into network inputs (``prepare_obs``; None: as stored)."""
    if prepare_obs is None:
        return batch
    return batch._replace(obs=prepare_obs(obs_stats, batch.obs), next_obs=prepare_obs(obs_stats, batch.next_obs))


def make_offpolicy_loop(agent: Agent, action: ActionSpec, shape: LoopShape,
                        prepare_obs: PrepareObs | None = None) -> OffPolicyLoop:
    """The loop of one member of ``agent`` in loops of ``shape``; ``prepare_obs`` turns stored observations into
    network inputs (None: as stored)."""

    def learn(agent_state: Any, replay: Any, hparams: Any, obs_stats: Any, key: jax.Array,
              enabled: jax.Array) -> tuple[Any, jax.Array, dict[str, jax.Array]]:
        key, sample_key, update_key = jax.random.split(key, 3)
        batch = prepare_batch(buffer_sample(replay, sample_key, shape.batch_size, shape.n_step, hparams.gamma,
                                            shape.envs_per_member), prepare_obs, obs_stats)

        def do_update(state):
            return agent.update(state, batch, update_key, hparams)

        state, metrics = jax.lax.cond(enabled, do_update, lambda s: (s, nan_metrics(do_update, s)), agent_state)
        return state, key, metrics

    return OffPolicyLoop(act=exploring(agent.act, action), observe=observe, learn=learn)
