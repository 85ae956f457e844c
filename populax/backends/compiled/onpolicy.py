"""The compiled training program of ONE on-policy member (PPO) on a JAX environment.

Same interface as ``offpolicy`` (a :class:`~populax.backends.compiled.offpolicy.MemberProgram`),
on the same :class:`~populax.member.Member` layout with no experience
store (a rollout never outlives its phase); only the shape of a chunk differs::

    repeat phases_per_chunk times:               # lax.scan
        repeat rollout_len times:                # lax.scan
            sample actions in E envs -> env.step -> record (s, a, log pi, V, r, done)
        GAE over the rollout -> epochs x minibatches of PPO updates
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from populax.agents.ppo import OnPolicyAgent, Rollout, bootstrap_truncated, learn_rollout
from populax.backends.compiled.offpolicy import (
    MemberProgram,
    advance_episodes,
    chunked_program,
    new_member,
    reset_envs,
)
from populax.envs.jax_envs import JaxEnv
from populax.member import Member


class OnPolicySchedule(NamedTuple):
    """Static shape of the on-policy loop."""

    envs_per_member: int
    rollout_len: int
    """Env iterations per rollout (each steps all E envs once)."""
    phases_per_chunk: int
    """Rollout + update phases per compiled chunk."""
    eval_episodes: int
    eval_max_steps: int = 0
    """Most steps per evaluation episode (0: the environment's own limit)."""

    @property
    def chunk_steps(self) -> int:
        """Env steps a member takes per compiled chunk."""
        return self.phases_per_chunk * self.rollout_len * self.envs_per_member


def make_onpolicy_schedule(*, envs_per_member: int, rollout_len: int, eval_every: int, eval_episodes: int,
                           eval_max_steps: int = 0) -> OnPolicySchedule:
    """Whole rollouts per evaluation period (rounded up)."""
    per_rollout = rollout_len * envs_per_member
    return OnPolicySchedule(envs_per_member, rollout_len, max(1, math.ceil(eval_every / per_rollout)), eval_episodes,
                            eval_max_steps)


def make_onpolicy_program(agent: OnPolicyAgent, env: JaxEnv, schedule: OnPolicySchedule) -> MemberProgram:
    """Build ``init``, ``train_chunk`` and ``evaluate`` for one on-policy member."""
    num_envs = schedule.envs_per_member
    step_envs = jax.vmap(env.step)

    def init(key: jax.Array, hparams: Any) -> Member:
        agent_key, env_key, key = jax.random.split(key, 3)
        return new_member(agent.init(agent_key, hparams), hparams, None, reset_envs(env, env_key, num_envs), 0, key)

    def collect(member: Member, _):
        key, act_key, step_key = jax.random.split(member.key, 3)
        action, log_prob, value = agent.act(member.agent, member.env.obs, act_key)
        env_action = action if env.action.discrete else jnp.clip(action, -1.0, 1.0)
        result = step_envs(jax.random.split(step_key, num_envs), member.env.state, env_action)
        final_value = agent.value(member.agent, result.final_obs)
        reward = bootstrap_truncated(result.reward, result.terminated, result.truncated, final_value, member.hparams.gamma)
        done = jnp.maximum(result.terminated, result.truncated)
        step = Rollout(member.env.obs, action, log_prob, value, reward, done)
        member = member.replace(env=advance_episodes(member.env, result), env_steps=member.env_steps + num_envs, key=key)
        return member, step

    def phase(member: Member, _):
        member, rollout = jax.lax.scan(collect, member, length=schedule.rollout_len)
        key, update_key = jax.random.split(member.key)
        last_value = agent.value(member.agent, member.env.obs)
        agent_state, metrics = learn_rollout(agent, member.agent, rollout, last_value, update_key, member.hparams)
        return member.replace(agent=agent_state, key=key), metrics

    return chunked_program(agent, env, schedule, init, phase)
