"""The compiled training program of ONE member on a JAX environment.

``make_member_program`` returns pure functions over a :class:`MemberState`:
``init``, ``train_chunk`` (collect and learn for ``chunk_steps`` env steps in
nested ``lax.scan``s) and ``evaluate`` (fresh episodes, deterministic policy).
The trainer maps them over the population with an executor; nothing here
knows how many members there are.

One chunk, read top to bottom::

    repeat phases_per_chunk times:                # lax.scan
        repeat iterations_per_phase times:        # lax.scan
            act in E envs (random before learning_starts) -> env.step
            store (s, a, r, s_final, terminated) in the replay buffer
        repeat updates_per_phase times:           # lax.scan
            sample a batch -> agent.update        (skipped before learning_starts)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import struct

from populax.agents.base import ActionSpec, Agent, Transition, all_finite
from populax.buffers import ReplayBuffer, buffer_add, buffer_init, buffer_sample
from populax.envs.jax_envs import JaxEnv


@struct.dataclass
class MemberState:
    """Everything one member carries from chunk to chunk."""

    agent: Any
    """The algorithm's state (parameters, targets, optimizer states, counters)."""
    hparams: Any
    """This member's traced hyperparameters."""
    buffer: ReplayBuffer
    env_state: Any
    """States of this member's E environments."""
    obs: jax.Array
    """Current observations of the E environments."""
    episode_return: jax.Array
    """Return so far of each environment's running episode."""
    last_episode_return: jax.Array
    """Return of each environment's most recently finished episode (NaN before one)."""
    env_steps: jax.Array
    """Env steps this member has taken, summed over its environments."""
    key: jax.Array


class Schedule(NamedTuple):
    """Static shape of the loop, derived from the user's settings."""

    envs_per_member: int
    iterations_per_phase: int
    """Env iterations (each steps all E envs once) between update phases."""
    updates_per_phase: int
    phases_per_chunk: int
    learning_starts: int
    batch_size: int
    buffer_size: int
    eval_episodes: int

    @property
    def steps_per_phase(self) -> int:
        """Env steps a member takes per phase."""
        return self.iterations_per_phase * self.envs_per_member

    @property
    def chunk_steps(self) -> int:
        """Env steps a member takes per compiled chunk."""
        return self.phases_per_chunk * self.steps_per_phase

    @property
    def updates_per_chunk(self) -> int:
        """Gradient updates a member does per chunk (once learning has started)."""
        return self.phases_per_chunk * self.updates_per_phase


def make_schedule(
    *,
    envs_per_member: int,
    updates_per_step: float,
    eval_every: int,
    learning_starts: int,
    batch_size: int,
    buffer_size: int,
    eval_episodes: int,
) -> Schedule:
    """Turn an update-to-data ratio and an eval period into whole scan lengths.

    With E envs an iteration yields E transitions, so ``E * updates_per_step``
    updates follow each iteration; below one, updates happen every
    ``round(1 / (E * updates_per_step))`` iterations instead (e.g. DQN's
    learning every 4 steps).
    """
    per_iteration = envs_per_member * updates_per_step
    if per_iteration >= 1:
        iterations, updates = 1, round(per_iteration)
    else:
        iterations, updates = max(1, round(1 / per_iteration)), 1
    steps_per_phase = iterations * envs_per_member
    # Round the buffer to whole iterations so batched inserts never straddle.
    buffer_size = max(envs_per_member, buffer_size - buffer_size % envs_per_member)
    return Schedule(
        envs_per_member=envs_per_member,
        iterations_per_phase=iterations,
        updates_per_phase=updates,
        phases_per_chunk=max(1, math.ceil(eval_every / steps_per_phase)),
        learning_starts=learning_starts,
        batch_size=batch_size,
        buffer_size=buffer_size,
        eval_episodes=eval_episodes,
    )


class MemberProgram(NamedTuple):
    """The pure functions of one member's training; see the module docstring."""

    init: Callable[[jax.Array, Any], MemberState]
    train_chunk: Callable[[MemberState], tuple[MemberState, dict[str, jax.Array]]]
    evaluate: Callable[[MemberState, jax.Array], jax.Array]
    policy: Callable[[Any, jax.Array], jax.Array]
    """The agent's deterministic policy ``(agent_state, obs) -> action`` (for `populax eval`)."""


def random_actions(key: jax.Array, spec: ActionSpec, count: int) -> jax.Array:
    """Uniform random actions for ``count`` envs (the warm-up policy)."""
    if spec.discrete:
        return jax.random.randint(key, (count,), 0, spec.size)
    return jax.random.uniform(key, (count, spec.size), minval=-1.0, maxval=1.0)


def example_transition(env: JaxEnv) -> Transition:
    """One zero transition with the environment's shapes and dtypes."""
    obs = jnp.zeros(env.obs_shape, jnp.float32)
    action = jnp.zeros((), jnp.int32) if env.action.discrete else jnp.zeros((env.action.size,), jnp.float32)
    return Transition(obs, action, jnp.float32(0), obs, jnp.float32(0))


def summarize_chunk(metrics: dict[str, jax.Array], member: Any) -> dict[str, jax.Array]:
    """What a chunk reports per member: mean update metrics over the chunk (NaN
    entries, e.g. skipped actor steps, ignored), the latest training episode
    returns, and whether every parameter is still finite (checked in-graph, so
    failing members are found without a host sync per step)."""
    summary = jax.tree.map(jnp.nanmean, metrics)
    summary["train_return"] = jnp.nanmean(member.last_episode_return)
    summary["finite"] = all_finite(member.agent)
    return summary


def evaluate_policy(policy: Callable, agent_state: Any, env: JaxEnv, episodes: int, key: jax.Array) -> jax.Array:
    """Mean undiscounted return of ``episodes`` fresh episodes under ``policy(agent_state, obs)``."""
    return jnp.mean(episode_returns(policy, agent_state, env, episodes, key))


def episode_returns(policy: Callable, agent_state: Any, env: JaxEnv, episodes: int, key: jax.Array) -> jax.Array:
    """Undiscounted return of each of ``episodes`` fresh episodes under ``policy(agent_state, obs)``."""
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
    keys = jax.random.split(run_key, env.max_episode_steps)
    (_, _, total, _), _ = jax.lax.scan(step, carry, keys)
    return total


def reset_envs(env: JaxEnv, key: jax.Array, count: int) -> tuple[jax.Array, Any]:
    """Reset ``count`` environments; returns (observations, env states) with strong types.

    Some environments start with weakly typed leaves that a step makes strong;
    fixing the types here keeps the second chunk from recompiling.
    """
    obs, env_state = jax.vmap(env.reset)(jax.random.split(key, count))
    return obs, jax.tree.map(lambda x: jnp.asarray(x, x.dtype), env_state)


def make_member_program(agent: Agent, env: JaxEnv, schedule: Schedule) -> MemberProgram:
    """Build ``init``, ``train_chunk`` and ``evaluate`` for one member."""
    num_envs = schedule.envs_per_member
    step_envs = jax.vmap(env.step)

    def init(key: jax.Array, hparams: Any) -> MemberState:
        agent_key, env_key, key = jax.random.split(key, 3)
        obs, env_state = reset_envs(env, env_key, num_envs)
        return MemberState(
            agent=agent.init(agent_key, hparams),
            hparams=hparams,
            buffer=buffer_init(example_transition(env), schedule.buffer_size),
            env_state=env_state,
            obs=obs,
            episode_return=jnp.zeros((num_envs,), jnp.float32),
            last_episode_return=jnp.full((num_envs,), jnp.nan, jnp.float32),
            env_steps=jnp.zeros((), jnp.int32),
            key=key,
        )

    def env_iteration(member: MemberState, _) -> tuple[MemberState, None]:
        key, act_key, random_key, step_key = jax.random.split(member.key, 4)
        learned = agent.act(member.agent, member.obs, act_key, member.hparams)
        warming_up = member.env_steps < schedule.learning_starts
        action = jnp.where(warming_up, random_actions(random_key, env.action, num_envs), learned)
        result = step_envs(jax.random.split(step_key, num_envs), member.env_state, action)
        transition = Transition(member.obs, action, result.reward, result.final_obs, result.terminated)
        episode_return = member.episode_return + result.reward
        ended = jnp.maximum(result.terminated, result.truncated) > 0
        member = member.replace(
            buffer=buffer_add(member.buffer, transition),
            env_state=result.state,
            obs=result.obs,
            episode_return=jnp.where(ended, 0.0, episode_return),
            last_episode_return=jnp.where(ended, episode_return, member.last_episode_return),
            env_steps=member.env_steps + num_envs,
            key=key,
        )
        return member, None

    def learn(member: MemberState, _) -> tuple[MemberState, dict[str, jax.Array]]:
        key, sample_key, update_key = jax.random.split(member.key, 3)
        batch = buffer_sample(member.buffer, sample_key, schedule.batch_size)

        def do_update(state):
            return agent.update(state, batch, update_key, member.hparams)

        def skip_update(state):
            metrics = jax.eval_shape(do_update, state)[1]
            return state, jax.tree.map(lambda m: jnp.full(m.shape, jnp.nan, m.dtype), metrics)

        started = member.env_steps > schedule.learning_starts
        agent_state, metrics = jax.lax.cond(started, do_update, skip_update, member.agent)
        return member.replace(agent=agent_state, key=key), metrics

    def phase(member: MemberState, _) -> tuple[MemberState, dict[str, jax.Array]]:
        member, _ = jax.lax.scan(env_iteration, member, length=schedule.iterations_per_phase)
        return jax.lax.scan(learn, member, length=schedule.updates_per_phase)

    def train_chunk(member: MemberState) -> tuple[MemberState, dict[str, jax.Array]]:
        member, metrics = jax.lax.scan(phase, member, length=schedule.phases_per_chunk)
        return member, summarize_chunk(metrics, member)

    def evaluate(member: MemberState, key: jax.Array) -> jax.Array:
        """Mean undiscounted return of fresh episodes under the deterministic policy."""
        return evaluate_policy(agent.policy, member.agent, env, schedule.eval_episodes, key)

    return MemberProgram(init=init, train_chunk=train_chunk, evaluate=evaluate, policy=agent.policy)
