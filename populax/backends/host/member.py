"""One member on host environments: the member loop's steps (``populax.loop``: act, observe, learn) on the
host's blocks, mapped over the population by the run's executor, and the static sizes of the host loop.

The loop itself is the compiled chunk's: off-policy members store each block in their replay and run the
updates it owes in compiled chunks of updates; on-policy members learn from each block as one rollout. What
is the host's own is the blocks (the collector's unit) and observation normalisation (``--obs-norm``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from populax.buffers import replay_init
from populax.envs.host_envs import HostEnvSpec
from populax.errors import ConfigError
from populax.loop.offpolicy import example_transition, make_offpolicy_loop, observe
from populax.loop.onpolicy import make_onpolicy_loop
from populax.loop.shape import LoopShape, update_phase
from populax.member import Member
from populax.obs_norm import normalize, stats_init, stats_update
from populax.population import init_members, quiet_donation
from populax.run.config import TrainConfig


class HostPlan(NamedTuple):
    """The host loop: the member loop's shape (``loop``, the same ``LoopShape`` as the compiled chunk's) and how
    the host collects it (blocks of env iterations handed to the learner)."""

    loop: LoopShape
    """The member loop's phases: env iterations, then learning steps (``populax.loop.shape``)."""
    block_iterations: int
    """Env iterations (each steps all N x E envs once) per block handed to the learner."""
    chunk_blocks: int
    """Blocks per chunk (one evaluation period of whole blocks and whole update phases)."""
    update_chunk: int
    """Most updates per member in one compiled learner call."""
    max_policy_lag: int
    random_warmup: bool = True
    """Off-policy: act uniformly at random before ``learning_starts`` (CEM-RL: False, its sampled actors act
    from the first generation and the warm-up only delays the gradient steps)."""

    @property
    def envs_per_member(self) -> int:
        """Envs each member steps (E)."""
        return self.loop.envs_per_member

    @property
    def on_policy(self) -> bool:
        """Each block is one rollout (no replay)."""
        return self.loop.on_policy

    @property
    def random_steps(self) -> int:
        """Env steps per member acted uniformly at random before the agents act."""
        return self.loop.learning_starts if self.random_warmup else 0

    @property
    def block_steps(self) -> int:
        """Env steps per member in one block."""
        return self.block_iterations * self.envs_per_member

    @property
    def chunk_steps(self) -> int:
        """Env steps per member in one chunk."""
        return self.chunk_blocks * self.block_steps


def make_plan(config: TrainConfig, on_policy: bool, rollout_len: int = 0) -> HostPlan:
    """Blocks of half the policy lag (one block is collected while the last is learned on); a rollout for on-policy."""
    e = config.envs_per_member
    if on_policy:
        iterations, updates, block_iterations = rollout_len, 1, rollout_len
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
    loop = LoopShape(envs_per_member=e, iterations_per_phase=iterations, updates_per_phase=updates,
                     phases_per_chunk=chunk_steps // (iterations * e),
                     learning_starts=0 if on_policy else config.learning_starts,
                     batch_size=0 if on_policy else config.batch_size,
                     buffer_size=0 if on_policy else max(block_steps, min(config.buffer_size, total_steps)),
                     n_step=config.n_step, eval_episodes=config.eval_episodes, eval_max_steps=config.eval_max_steps,
                     clip_rewards=config.clip_rewards)
    return HostPlan(
        loop=loop,
        block_iterations=block_iterations,
        chunk_blocks=chunk_steps // block_steps,
        update_chunk=max(1, math.ceil(block_steps * updates / (iterations * e))),
        # On-policy: each rollout is acted by the newest parameters, so the lag is the rollout itself.
        max_policy_lag=block_steps if on_policy else config.max_policy_lag,
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


def make_functions(agent: Any, spec: HostEnvSpec, plan: HostPlan, executor: Callable, obs_norm: bool,
                   shards: int = 1) -> HostFunctions:
    """The member loop's steps (``populax.loop``) for ONE member on host data, mapped over the population with the
    executor. Observations are normalised with the member's running statistics (``--obs-norm``) before they
    reach a network; the replay stores them raw. ``shards``: the devices the executor splits the members over
    (the init places each member's state on its own)."""
    e = plan.envs_per_member

    def prepare_obs(stats, obs):
        return normalize(stats, obs) if obs_norm else obs.astype(jnp.float32)

    if plan.on_policy:
        rollout_loop = make_onpolicy_loop(agent)
    else:
        replay_loop = make_offpolicy_loop(agent, spec.action, plan.loop, prepare_obs)

    def init(key, hparams):
        agent_key, key = jax.random.split(key)
        # Atari's uint8 stacks get frame storage (buffers.FrameBuffer: each frame once, ~8x smaller).
        buffer = None if plan.on_policy else replay_init(example_transition(spec.obs_shape, spec.obs_dtype, spec.action),
                                                         plan.loop.buffer_size, e)
        return Member(agent=agent.init(agent_key, hparams), hparams=hparams, obs_stats=stats_init(spec.obs_shape),
                      experience=buffer, env=None, env_steps=jnp.zeros((), jnp.int32),
                      learn_from=jnp.asarray(plan.loop.learning_starts, jnp.int32), key=key)

    def act(agent_state, stats, hparams, obs, key, warming):
        key, act_key, random_key = jax.random.split(key, 3)
        if plan.on_policy:
            # Statistics stay fixed for a rollout (the learner updates them after it), so the log-probs and
            # values recorded here are those the learner recomputes with the same normalisation.
            action, log_prob, value = rollout_loop.act(agent_state, prepare_obs(stats, obs), act_key)
            return action, {"log_prob": log_prob, "value": value}, stats, key
        if obs_norm:
            stats = stats_update(stats, obs)
        action = replay_loop.act(agent_state, prepare_obs(stats, obs), hparams, warming, act_key, random_key)
        return action, {}, stats, key

    add_rows = executor(observe, donate=True)

    def insert(population, rows, stats):
        with quiet_donation():
            experience = add_rows(population.experience, rows)
        return population.replace(experience=experience, obs_stats=stats,
                                  env_steps=population.env_steps + rows.reward.shape[1])

    def learn(member, count):
        def one_update(carry, index):
            state, key = carry
            state, key, metrics = replay_loop.learn(state, member.experience, member.hparams, member.obs_stats, key,
                                                    index < count)
            return (state, key), metrics

        (state, key), metrics = jax.lax.scan(one_update, (member.agent, member.key), jnp.arange(plan.update_chunk))
        return member.replace(agent=state, key=key, experience=None), jax.tree.map(jnp.nanmean, metrics)

    def learn_from_rollout(member, rows, truncated, last_obs):
        """The member loop's rollout learning on one block: rows [T*E, ...] in iteration-major order become a
        [T, E] rollout. Observations are normalised with the statistics the rollout was acted with
        (``member.obs_stats``); the block's observations update them afterwards."""
        stats = member.obs_stats
        steps = rollout_loop.observe(member.agent, prepare_obs(stats, rows.obs), rows.action, rows.log_prob,
                                     rows.value, rows.reward, rows.terminated, truncated,
                                     prepare_obs(stats, rows.next_obs), member.hparams.gamma)
        rollout = jax.tree.map(lambda x: x.reshape(plan.block_iterations, e, *x.shape[1:]), steps)
        state, key, metrics = rollout_loop.learn(member.agent, rollout, prepare_obs(stats, last_obs), member.hparams,
                                                 member.key)
        if obs_norm:
            stats = stats_update(stats, rows.obs)
        member = member.replace(agent=state, obs_stats=stats, key=key, env_steps=member.env_steps + plan.block_steps)
        return member, metrics

    def policy(agent_state, stats, obs):
        return agent.policy(agent_state, prepare_obs(stats, obs))

    return HostFunctions(
        init=init_members(init, shards), init_agents=init_members(agent.init), act=executor(act), insert=insert,
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
