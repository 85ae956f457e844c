"""The compiled training program of ONE on-policy member (PPO) on a JAX environment.

Same interface as ``populax.loops`` (a :class:`~populax.loops.MemberProgram`
of ``init``, ``train_chunk``, ``evaluate``), so the trainer, executors and
logging drive it unchanged; only the shape of a chunk differs::

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
from flax import struct

from populax.agents.ppo import OnPolicyAgent, Rollout, gae
from populax.envs.jax_envs import JaxEnv
from populax.loops import MemberProgram, evaluate_policy, reset_envs, summarize_chunk


@struct.dataclass
class OnPolicyMemberState:
    """Everything one on-policy member carries from chunk to chunk (no replay buffer)."""

    agent: Any
    hparams: Any
    env_state: Any
    obs: jax.Array
    episode_return: jax.Array
    last_episode_return: jax.Array
    """Return of each environment's most recently finished episode (NaN before one)."""
    env_steps: jax.Array
    key: jax.Array


class OnPolicySchedule(NamedTuple):
    """Static shape of the on-policy loop."""

    envs_per_member: int
    rollout_len: int
    """Env iterations per rollout (each steps all E envs once)."""
    phases_per_chunk: int
    """Rollout + update phases per compiled chunk."""
    eval_episodes: int

    @property
    def chunk_steps(self) -> int:
        """Env steps a member takes per compiled chunk."""
        return self.phases_per_chunk * self.rollout_len * self.envs_per_member


def make_onpolicy_schedule(*, envs_per_member: int, rollout_len: int, eval_every: int, eval_episodes: int) -> OnPolicySchedule:
    """Whole rollouts per evaluation period (rounded up)."""
    per_rollout = rollout_len * envs_per_member
    return OnPolicySchedule(envs_per_member, rollout_len, max(1, math.ceil(eval_every / per_rollout)), eval_episodes)


def make_onpolicy_program(agent: OnPolicyAgent, env: JaxEnv, schedule: OnPolicySchedule) -> MemberProgram:
    """Build ``init``, ``train_chunk`` and ``evaluate`` for one on-policy member."""
    num_envs = schedule.envs_per_member
    step_envs = jax.vmap(env.step)

    def init(key: jax.Array, hparams: Any) -> OnPolicyMemberState:
        agent_key, env_key, key = jax.random.split(key, 3)
        obs, env_state = reset_envs(env, env_key, num_envs)
        return OnPolicyMemberState(
            agent=agent.init(agent_key, hparams),
            hparams=hparams,
            env_state=env_state,
            obs=obs,
            episode_return=jnp.zeros((num_envs,), jnp.float32),
            last_episode_return=jnp.full((num_envs,), jnp.nan, jnp.float32),
            env_steps=jnp.zeros((), jnp.int32),
            key=key,
        )

    def collect(member: OnPolicyMemberState, _):
        key, act_key, step_key = jax.random.split(member.key, 3)
        action, log_prob, value = agent.act(member.agent, member.obs, act_key)
        env_action = action if env.action.discrete else jnp.clip(action, -1.0, 1.0)
        result = step_envs(jax.random.split(step_key, num_envs), member.env_state, env_action)
        # Truncation is not a real end: fold gamma * V(final obs) into the reward,
        # then let GAE stop at every episode boundary.
        bootstrap = member.hparams.gamma * agent.value(member.agent, result.final_obs)
        reward = result.reward + result.truncated * (1.0 - result.terminated) * bootstrap
        done = jnp.maximum(result.terminated, result.truncated)
        episode_return = member.episode_return + result.reward
        step = Rollout(member.obs, action, log_prob, value, reward, done)
        member = member.replace(
            env_state=result.state,
            obs=result.obs,
            episode_return=jnp.where(done > 0, 0.0, episode_return),
            last_episode_return=jnp.where(done > 0, episode_return, member.last_episode_return),
            env_steps=member.env_steps + num_envs,
            key=key,
        )
        return member, step

    def phase(member: OnPolicyMemberState, _):
        member, rollout = jax.lax.scan(collect, member, length=schedule.rollout_len)
        hp = member.hparams
        last_value = agent.value(member.agent, member.obs)
        advantages, returns = gae(rollout.reward, rollout.value, rollout.done, last_value, hp.gamma, hp.gae_lambda)
        key, update_key = jax.random.split(member.key)
        agent_state, metrics = agent.update(member.agent, rollout, advantages, returns, update_key, hp)
        return member.replace(agent=agent_state, key=key), metrics

    def train_chunk(member: OnPolicyMemberState):
        member, metrics = jax.lax.scan(phase, member, length=schedule.phases_per_chunk)
        return member, summarize_chunk(metrics, member)

    def evaluate(member: OnPolicyMemberState, key: jax.Array) -> jax.Array:
        """Mean undiscounted return of fresh episodes under the deterministic policy."""
        return evaluate_policy(agent.policy, member.agent, env, schedule.eval_episodes, key)

    return MemberProgram(init=init, train_chunk=train_chunk, evaluate=evaluate, policy=agent.policy)
