"""One member on host environments: the per-member steps (act, insert, learn) the host
backend maps over the population, and the static sizes of the host loop.

Written for ONE member, like the compiled programs; ``make_functions`` maps
each step with the run's executor. Off-policy members insert blocks into their
replay buffer and run compiled chunks of updates; on-policy members (PPO)
learn from each block as one rollout.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from populax.agents.ppo import Rollout, bootstrap_truncated, learn_rollout
from populax.backends.compiled.offpolicy import example_transition, random_actions, update_phase
from populax.buffers import buffer_add, buffer_sample, replay_init
from populax.envs.host_envs import HostEnvSpec
from populax.errors import ConfigError
from populax.member import Member
from populax.obs_norm import normalize, stats_init, stats_update
from populax.population import init_members, quiet_donation
from populax.run.config import TrainConfig


class HostPlan(NamedTuple):
    """Static sizes of the host loop, derived from the configuration."""

    envs_per_member: int
    block_iterations: int
    """Env iterations (each steps all N x E envs once) per block handed to the learner."""
    chunk_blocks: int
    """Blocks per chunk (one evaluation period of whole blocks and whole update phases)."""
    update_chunk: int
    """Most updates per member in one compiled learner call."""
    iterations_per_phase: int
    """Off-policy: env iterations per ``updates_per_phase`` updates (the exact update-to-data ratio)."""
    updates_per_phase: int
    learning_starts: int
    max_policy_lag: int
    batch_size: int
    buffer_size: int
    on_policy: bool
    n_step: int = 1
    """Off-policy: env steps per TD target (n-step returns, made when sampling)."""
    random_warmup: bool = True
    """Off-policy: act uniformly at random before ``learning_starts`` (CEM-RL: False, its sampled actors act
    from the first generation and the warm-up only delays the gradient steps)."""

    @property
    def random_steps(self) -> int:
        """Env steps per member acted uniformly at random before the agents act."""
        return self.learning_starts if self.random_warmup else 0

    @property
    def block_steps(self) -> int:
        """Env steps per member in one block."""
        return self.block_iterations * self.envs_per_member

    @property
    def chunk_steps(self) -> int:
        """Env steps per member in one chunk."""
        return self.chunk_blocks * self.block_steps

    @property
    def phase_steps(self) -> int:
        """Env steps per member of one update phase."""
        return self.iterations_per_phase * self.envs_per_member

    def owed_updates(self, before: int, after: int, learn_from: int) -> int:
        """Updates per member owed for the env steps from ``before`` to ``after``.

        Every whole phase that ends past ``learn_from`` owes ``updates_per_phase``
        updates: the compiled backend's rule, so both backends do the same count.
        """
        def phases(steps: int) -> int:
            return max(0, steps // self.phase_steps - learn_from // self.phase_steps)

        return self.updates_per_phase * (phases(after) - phases(before))


def make_plan(config: TrainConfig, on_policy: bool, rollout_len: int = 0) -> HostPlan:
    """Blocks of half the policy lag (one block is collected while the last is learned on); a rollout for on-policy."""
    e = config.envs_per_member
    if on_policy:
        iterations, updates, block_iterations = 1, 1, rollout_len
    else:
        if config.max_policy_lag < e:
            raise ConfigError(
                f"--max-policy-lag must be >= --envs-per-member ({e}) so that one env iteration fits "
                f"(got {config.max_policy_lag})"
            )
        iterations, updates = update_phase(e, config.updates_per_step)
        block_iterations = max(1, config.max_policy_lag // (2 * e))
    block_steps = block_iterations * e
    # A chunk is whole blocks and whole update phases, so evaluations see an exact update count.
    unit = math.lcm(block_steps, iterations * e)
    chunk_steps = max(1, math.ceil(config.eval_every / unit)) * unit
    total_steps = math.ceil(config.total_steps / chunk_steps) * chunk_steps
    return HostPlan(
        envs_per_member=e,
        block_iterations=block_iterations,
        chunk_blocks=chunk_steps // block_steps,
        update_chunk=max(1, math.ceil(block_steps * updates / (iterations * e))),
        iterations_per_phase=iterations,
        updates_per_phase=updates,
        learning_starts=0 if on_policy else config.learning_starts,
        # On-policy: each rollout is acted by the newest parameters, so the lag is the rollout itself.
        max_policy_lag=block_steps if on_policy else config.max_policy_lag,
        batch_size=config.batch_size,
        buffer_size=max(block_steps, min(config.buffer_size, total_steps)),
        on_policy=on_policy,
        n_step=config.n_step,
    )


class HostFunctions(NamedTuple):
    """The population-level (executor-mapped) functions of the host backend."""

    init: Callable
    """(keys[N], hparams) -> Member (a compiled loop over members)."""
    init_agents: Callable
    """(keys[K], hparams[K]) -> fresh agent states of K members."""
    act: Callable
    """(agent, stats, hparams, obs[N,E,...], keys, warming[N]) -> (actions, extras, stats, keys)."""
    insert: Callable
    """Off-policy: (Member, Transition[N, B*E, ...], stats) -> Member; the buffers are updated in place
    (the input member's buffers are donated: use the returned member)."""
    learn: Callable
    """Off-policy: (Member, count[N]) -> (Member without its buffers (None), metrics): the buffers are only
    read, and returning them would copy every one (put them back with ``replace``)."""
    learn_rollout: Callable
    """On-policy: (Member, rows, truncated, last_obs) -> (Member, metrics)."""
    policy: Callable
    """(agent, stats, obs[N, M, ...]) -> actions (deterministic, evaluation)."""
    member_policy: Callable
    """(agent, stats, obs[M, ...]) -> actions of ONE member (jitted, no executor; `populax eval`)."""


def nan_metrics(fn: Callable, state: Any) -> Any:
    """NaN metrics shaped like ``fn(state)[1]`` (the output of a skipped update)."""
    metrics = jax.eval_shape(fn, state)[1]
    return jax.tree.map(lambda m: jnp.full(m.shape, jnp.nan, m.dtype), metrics)


def make_functions(agent: Any, spec: HostEnvSpec, plan: HostPlan, executor: Callable, obs_norm: bool) -> HostFunctions:
    """Write each step for ONE member, then map it over the population with the executor."""
    e = plan.envs_per_member

    def prepare_obs(stats, obs):
        return normalize(stats, obs) if obs_norm else obs.astype(jnp.float32)

    def init(key, hparams):
        agent_key, key = jax.random.split(key)
        # Atari's uint8 stacks get frame storage (buffers.FrameBuffer: each frame once, ~8x smaller).
        buffer = None if plan.on_policy else replay_init(example_transition(spec.obs_shape, spec.obs_dtype, spec.action),
                                                         plan.buffer_size, e)
        return Member(agent=agent.init(agent_key, hparams), hparams=hparams, obs_stats=stats_init(spec.obs_shape),
                      experience=buffer, env=None, env_steps=jnp.zeros((), jnp.int32),
                      learn_from=jnp.asarray(plan.learning_starts, jnp.int32), key=key)

    def act(agent_state, stats, hparams, obs, key, warming):
        key, act_key, random_key = jax.random.split(key, 3)
        if plan.on_policy:
            # Statistics stay fixed for a rollout (the learner updates them after it), so the log-probs and
            # values recorded here are those the learner recomputes with the same normalisation.
            action, log_prob, value = agent.act(agent_state, prepare_obs(stats, obs), act_key)
            return action, {"log_prob": log_prob, "value": value}, stats, key
        if obs_norm:
            stats = stats_update(stats, obs)
        learned = agent.act(agent_state, prepare_obs(stats, obs), act_key, hparams)
        action = jnp.where(warming, random_actions(random_key, spec.action, obs.shape[0]), learned)
        return action, {}, stats, key

    add_rows = executor(buffer_add, donate=True)

    def insert(population, rows, stats):
        with quiet_donation():
            experience = add_rows(population.experience, rows)
        return population.replace(experience=experience, obs_stats=stats,
                                  env_steps=population.env_steps + rows.reward.shape[1])

    def learn(member, count):
        def one_update(carry, index):
            state, key = carry
            key, sample_key, update_key = jax.random.split(key, 3)
            batch = buffer_sample(member.experience, sample_key, plan.batch_size, plan.n_step, member.hparams.gamma,
                                  plan.envs_per_member)
            batch = batch._replace(obs=prepare_obs(member.obs_stats, batch.obs),
                                   next_obs=prepare_obs(member.obs_stats, batch.next_obs))

            def do_update(s):
                return agent.update(s, batch, update_key, member.hparams)

            state, metrics = jax.lax.cond(index < count, do_update, lambda s: (s, nan_metrics(do_update, s)), state)
            return (state, key), metrics

        (state, key), metrics = jax.lax.scan(one_update, (member.agent, member.key), jnp.arange(plan.update_chunk))
        return member.replace(agent=state, key=key, experience=None), jax.tree.map(jnp.nanmean, metrics)

    def learn_from_rollout(member, rows, truncated, last_obs):
        """PPO on one block: rows [T*E, ...] in iteration-major order become a [T, E] rollout.

        Observations are normalised with the statistics the rollout was acted
        with (``member.obs_stats``); the block's observations update them afterwards.
        """
        stats = member.obs_stats
        def steps_first(x):
            return x.reshape(plan.block_iterations, e, *x.shape[1:])

        hp = member.hparams
        final_value = steps_first(agent.value(member.agent, prepare_obs(stats, rows.next_obs)))  # networks take [B, ...]
        data, truncated = jax.tree.map(steps_first, rows), steps_first(truncated)
        reward = bootstrap_truncated(data.reward, data.terminated, truncated, final_value, hp.gamma)
        rollout = Rollout(prepare_obs(stats, data.obs), data.action, data.log_prob, data.value, reward,
                          jnp.maximum(data.terminated, truncated))
        key, update_key = jax.random.split(member.key)
        last_value = agent.value(member.agent, prepare_obs(stats, last_obs))
        state, metrics = learn_rollout(agent, member.agent, rollout, last_value, update_key, hp)
        if obs_norm:
            stats = stats_update(stats, rows.obs)
        member = member.replace(agent=state, obs_stats=stats, key=key,
                                env_steps=member.env_steps + plan.block_steps)
        return member, metrics

    def policy(agent_state, stats, obs):
        return agent.policy(agent_state, prepare_obs(stats, obs))

    return HostFunctions(
        init=init_members(init), init_agents=init_members(agent.init), act=executor(act), insert=insert,
        learn=executor(learn), learn_rollout=executor(learn_from_rollout), policy=executor(policy),
        member_policy=jax.jit(policy),
    )


class RolloutRows(NamedTuple):
    """What an on-policy block records per env step (leaves [N, T*E, ...])."""

    obs: jax.Array
    action: jax.Array
    log_prob: jax.Array
    value: jax.Array
    reward: jax.Array
    next_obs: jax.Array
    """The observation each step really led to (the final one where an episode ended)."""
    terminated: jax.Array


__all__ = ["HostFunctions", "HostPlan", "RolloutRows", "make_functions", "make_plan"]
