"""One member on host environments: its learner-side state and the per-member
steps (act, insert, learn, policy) the host loop maps over the population.

Written for ONE member, like ``populax.loops``; ``make_functions`` maps each
step with the run's executor. The static sizes come from :class:`HostPlan`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import struct

from populax.agents.base import Agent, Transition, all_finite
from populax.buffers import ReplayBuffer, buffer_add, buffer_init, buffer_sample
from populax.envs.host_envs import (
    HostEnvSpec,
)
from populax.errors import ConfigError
from populax.loops import random_actions
from populax.obs_norm import RunningStats, normalize, stats_init, stats_update
from populax.population import init_members
from populax.run.config import TrainConfig


@struct.dataclass
class HostMember:
    """One member's learner-side state (stacked over members by the executor)."""

    agent: Any
    hparams: Any
    buffer: ReplayBuffer
    obs_stats: RunningStats
    """Observation statistics the acting and learning use (unused unless obs_norm)."""
    env_steps: jax.Array
    """Env steps of this member inserted into its buffer so far."""
    key: jax.Array


class HostPlan(NamedTuple):
    """Static sizes of the host loop, derived from the configuration."""

    envs_per_member: int
    block_iterations: int
    """Env iterations (each steps all N x E envs once) per block handed to the learner."""
    update_chunk: int
    """Updates per member in one compiled learner call."""
    total_iterations: int
    learning_starts: int
    updates_per_step: float
    max_policy_lag: int
    batch_size: int
    buffer_size: int

    @property
    def block_steps(self) -> int:
        """Env steps per member in one block."""
        return self.block_iterations * self.envs_per_member

    def target_updates(self, steps: int) -> int:
        """Updates per member owed once ``steps`` env steps per member are in the buffer."""
        return math.floor(self.updates_per_step * max(0, steps - self.learning_starts) + 1e-9)


def make_plan(config: TrainConfig) -> HostPlan:
    """Blocks of half the policy lag (so one block is collected while the last is learned on)."""
    e = config.envs_per_member
    if config.max_policy_lag < e:
        raise ConfigError(
            f"--max-policy-lag must be >= --envs-per-member ({e}) so that one env iteration fits (got {config.max_policy_lag})"
        )
    block_iterations = max(1, config.max_policy_lag // (2 * e))
    block_steps = block_iterations * e
    total_iterations = math.ceil(config.total_steps / e)
    return HostPlan(
        envs_per_member=e,
        block_iterations=block_iterations,
        update_chunk=max(1, math.ceil(config.updates_per_step * block_steps)),
        total_iterations=total_iterations,
        learning_starts=config.learning_starts,
        updates_per_step=config.updates_per_step,
        max_policy_lag=config.max_policy_lag,
        batch_size=config.batch_size,
        buffer_size=max(block_steps, min(config.buffer_size, total_iterations * e)),
    )


class HostFunctions(NamedTuple):
    """The population-level (executor-mapped) functions of the host loop."""

    init: Callable
    act: Callable
    """(agent, stats, hparams, obs[N,E,...], keys, warming[N], obs_norm) -> (actions, stats, keys)."""
    insert: Callable
    """(HostMember, Transition[N, B*E, ...], stats) -> HostMember."""
    learn: Callable
    """(HostMember, count[N]) -> (HostMember, metrics)."""
    policy: Callable
    """(agent, stats, obs[N, M, ...]) -> actions (deterministic, evaluation)."""
    member_policy: Callable
    """(agent, stats, obs[M, ...]) -> actions of ONE member (jitted, no executor; `populax eval`)."""


def make_functions(agent: Agent, spec: HostEnvSpec, plan: HostPlan, executor: Callable, obs_norm: bool) -> HostFunctions:
    """Write each step for ONE member, then map it over the population with the executor."""

    def prepare_obs(stats, obs):
        return normalize(stats, obs) if obs_norm else obs.astype(jnp.float32)

    def init(key, hparams):
        agent_key, key = jax.random.split(key)
        obs = jnp.zeros(spec.obs_shape, spec.obs_dtype)
        action = jnp.zeros((), jnp.int32) if spec.action.discrete else jnp.zeros((spec.action.size,), jnp.float32)
        example = Transition(obs, action, jnp.float32(0), obs, jnp.float32(0))
        return HostMember(
            agent=agent.init(agent_key, hparams),
            hparams=hparams,
            buffer=buffer_init(example, plan.buffer_size),
            obs_stats=stats_init(spec.obs_shape),
            env_steps=jnp.zeros((), jnp.int32),
            key=key,
        )

    def act(agent_state, stats, hparams, obs, key, warming):
        key, act_key, random_key = jax.random.split(key, 3)
        if obs_norm:
            stats = stats_update(stats, obs)
        learned = agent.act(agent_state, prepare_obs(stats, obs), act_key, hparams)
        action = jnp.where(warming, random_actions(random_key, spec.action, obs.shape[0]), learned)
        return action, stats, key

    def insert(member, batch, stats):
        return member.replace(
            buffer=buffer_add(member.buffer, batch),
            obs_stats=stats,
            env_steps=member.env_steps + batch.reward.shape[0],
        )

    def learn(member, count):
        def one_update(carry, index):
            state, key = carry
            key, sample_key, update_key = jax.random.split(key, 3)
            batch = buffer_sample(member.buffer, sample_key, plan.batch_size)
            batch = batch._replace(obs=prepare_obs(member.obs_stats, batch.obs),
                                   next_obs=prepare_obs(member.obs_stats, batch.next_obs))

            def do_update(s):
                return agent.update(s, batch, update_key, member.hparams)

            def skip_update(s):  # the tail of the run's last chunk only
                metrics = jax.eval_shape(do_update, s)[1]
                return s, jax.tree.map(lambda m: jnp.full(m.shape, jnp.nan, m.dtype), metrics)

            state, metrics = jax.lax.cond(index < count, do_update, skip_update, state)
            return (state, key), metrics

        (state, key), metrics = jax.lax.scan(one_update, (member.agent, member.key), jnp.arange(plan.update_chunk))
        summary = jax.tree.map(jnp.nanmean, metrics)
        summary["finite"] = all_finite(state)
        return member.replace(agent=state, key=key), summary

    def policy(agent_state, stats, obs):
        return agent.policy(agent_state, prepare_obs(stats, obs))

    return HostFunctions(
        init=init_members(init), act=executor(act), insert=executor(insert), learn=executor(learn), policy=executor(policy),
        member_policy=jax.jit(policy),
    )


