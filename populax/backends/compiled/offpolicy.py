"""The compiled training program of ONE off-policy member (TD3, SAC, DQN) on a JAX environment.

``make_offpolicy_program`` returns pure functions over a
:class:`~populax.member.Member`: ``init``, ``train_chunk`` (collect
and learn for ``chunk_steps`` env steps in nested ``lax.scan``s) and
``evaluate`` (fresh episodes, deterministic policy). The compiled backend maps
them over the population with an executor; nothing here knows how many
members there are.

One chunk, read top to bottom::

    repeat phases_per_chunk times:                # lax.scan
        repeat iterations_per_phase times:        # lax.scan
            act in E envs (random before learning_starts) -> env.step
            store (s, a, r, s_final, terminated) in the replay buffer
        repeat updates_per_phase times:           # lax.scan
            sample a batch -> agent.update        (skipped until env_steps > learn_from)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from fractions import Fraction
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from populax.agents.base import ActionSpec, Agent, Transition
from populax.buffers import buffer_add, buffer_init, buffer_sample
from populax.envs.jax_envs import JaxEnv
from populax.errors import ConfigError
from populax.member import EnvSlots, Member

MAX_PHASE_ITERATIONS = 100
"""Longest run of env iterations between two update bursts that ``update_phase`` accepts."""


class Schedule(NamedTuple):
    """Static shape of the off-policy loop, derived from the user's settings."""

    envs_per_member: int
    iterations_per_phase: int
    """Env iterations (each steps all E envs once) between update phases."""
    updates_per_phase: int
    phases_per_chunk: int
    learning_starts: int
    batch_size: int
    buffer_size: int
    eval_episodes: int
    eval_max_steps: int = 0
    """Most steps per evaluation episode (0: the environment's own limit)."""
    n_step: int = 1
    """Env steps per TD target (n-step returns, made when sampling: ``buffers.n_step_fold``)."""

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


def update_phase(envs_per_member: int, updates_per_step: float) -> tuple[int, int]:
    """(env iterations, updates) of the shortest phase whose update-to-data ratio is exactly ``updates_per_step``.

    With E envs an iteration yields E transitions, so a phase of k iterations
    owes ``k * E * ratio`` updates; k is the denominator of ``E * ratio`` as a
    fraction (E=1, 0.25: 4 iterations then 1 update; E=5, 0.5: 2 iterations
    then 5 updates). Both backends use it, so one config trains the same way on
    both. A ratio that needs more than ``MAX_PHASE_ITERATIONS`` iterations is
    refused in one line naming the nearest ratios that work.
    """
    exact = envs_per_member * updates_per_step
    per_iteration = Fraction(exact).limit_denominator(MAX_PHASE_ITERATIONS)
    if per_iteration == 0 or abs(float(per_iteration) - exact) > 1e-9 * max(1.0, exact):
        below = Fraction(math.floor(exact * MAX_PHASE_ITERATIONS), MAX_PHASE_ITERATIONS).limit_denominator(10)
        near = sorted({float(f) / envs_per_member for f in (per_iteration, below) if f > 0})
        raise ConfigError(
            f"--updates-per-step {updates_per_step:g} with --envs-per-member {envs_per_member} cannot be run exactly "
            f"(updates per env iteration {exact:g} is not a fraction with denominator <= {MAX_PHASE_ITERATIONS}); "
            f"nearest that work: {', '.join(f'{v:.10g}' for v in near)}"
        )
    return per_iteration.denominator, per_iteration.numerator


def make_schedule(
    *,
    envs_per_member: int,
    updates_per_step: float,
    eval_every: int,
    learning_starts: int,
    batch_size: int,
    buffer_size: int,
    eval_episodes: int,
    eval_max_steps: int = 0,
    n_step: int = 1,
) -> Schedule:
    """Turn an update-to-data ratio and an eval period into whole scan lengths (see ``update_phase``)."""
    iterations, updates = update_phase(envs_per_member, updates_per_step)
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
        eval_max_steps=eval_max_steps,
        n_step=n_step,
    )


class MemberProgram(NamedTuple):
    """The pure functions of one member's compiled training; see the module docstring."""

    init: Callable[[jax.Array, Any], Member]
    init_agent: Callable[[jax.Array, Any], Any]
    """``(key, hparams) -> agent state`` alone (re-initialising a failed member allocates nothing else)."""
    train_chunk: Callable[[Member], tuple[Member, dict[str, jax.Array]]]
    evaluate: Callable[[Member, jax.Array], jax.Array]
    policy: Callable[[Any, jax.Array], jax.Array]
    """The agent's deterministic policy ``(agent_state, obs) -> action`` (for `populax eval`)."""


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


def summarize_chunk(metrics: dict[str, jax.Array], member: Member) -> dict[str, jax.Array]:
    """What a chunk reports per member: mean update metrics over the chunk (NaN
    entries, e.g. skipped actor steps, ignored) and the latest training episode returns."""
    summary = jax.tree.map(jnp.nanmean, metrics)
    summary["train_return"] = jnp.nanmean(member.env.last_episode_return)
    return summary


def evaluate_policy(policy: Callable, agent_state: Any, env: JaxEnv, episodes: int, key: jax.Array,
                    max_steps: int = 0) -> jax.Array:
    """Mean undiscounted return of ``episodes`` fresh episodes under ``policy(agent_state, obs)``."""
    return jnp.mean(episode_returns(policy, agent_state, env, episodes, key, max_steps))


def episode_steps(env: JaxEnv, max_steps: int = 0) -> int:
    """Steps an evaluation episode may last: the env's limit, capped by ``max_steps`` when > 0."""
    return min(env.max_episode_steps, max_steps) if max_steps > 0 else env.max_episode_steps


def episode_returns(policy: Callable, agent_state: Any, env: JaxEnv, episodes: int, key: jax.Array,
                    max_steps: int = 0) -> jax.Array:
    """Undiscounted return of each of ``episodes`` fresh episodes under ``policy(agent_state, obs)``,
    each cut after ``episode_steps(env, max_steps)`` steps."""
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
    (_, _, total, _), _ = jax.lax.scan(step, carry, keys)
    return total


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


def new_member(agent_state: Any, hparams: Any, experience: Any, env: EnvSlots, learning_starts: int,
               key: jax.Array) -> Member:
    """A member at env step 0."""
    return Member(agent=agent_state, hparams=hparams, obs_stats=None, experience=experience, env=env,
                  env_steps=jnp.zeros((), jnp.int32), learn_from=jnp.asarray(learning_starts, jnp.int32), key=key)


def make_env_iteration(act: Callable, env: JaxEnv, schedule: Any,
                       store: Callable[[Transition], Transition] = lambda t: t) -> Callable:
    """One member's env iteration ``(member, _) -> (member, None)``: act in its E envs (uniform random
    before ``learning_starts``), step them, store ``store(transition)`` in its replay buffer."""
    num_envs = schedule.envs_per_member
    step_envs = jax.vmap(env.step)

    def env_iteration(member: Member, _) -> tuple[Member, None]:
        key, act_key, random_key, step_key = jax.random.split(member.key, 4)
        learned = act(member.agent, member.env.obs, act_key, member.hparams)
        warming_up = member.env_steps < schedule.learning_starts
        action = jnp.where(warming_up, random_actions(random_key, env.action, num_envs), learned)
        result = step_envs(jax.random.split(step_key, num_envs), member.env.state, action)
        transition = Transition(member.env.obs, action, result.reward, result.final_obs, result.terminated)
        member = member.replace(
            experience=buffer_add(member.experience, store(transition)),
            env=advance_episodes(member.env, result),
            env_steps=member.env_steps + num_envs,
            key=key,
        )
        return member, None

    return env_iteration


def make_offpolicy_program(agent: Agent, env: JaxEnv, schedule: Schedule) -> MemberProgram:
    """Build ``init``, ``train_chunk`` and ``evaluate`` for one off-policy member."""
    num_envs = schedule.envs_per_member

    def init(key: jax.Array, hparams: Any) -> Member:
        agent_key, env_key, key = jax.random.split(key, 3)
        buffer = buffer_init(example_transition(env.obs_shape, jnp.float32, env.action), schedule.buffer_size)
        return new_member(agent.init(agent_key, hparams), hparams, buffer, reset_envs(env, env_key, num_envs),
                          schedule.learning_starts, key)

    env_iteration = make_env_iteration(agent.act, env, schedule)

    def learn(member: Member, _) -> tuple[Member, dict[str, jax.Array]]:
        key, sample_key, update_key = jax.random.split(member.key, 3)
        batch = buffer_sample(member.experience, sample_key, schedule.batch_size, schedule.n_step,
                              member.hparams.gamma, num_envs)

        def do_update(state):
            return agent.update(state, batch, update_key, member.hparams)

        def skip_update(state):
            metrics = jax.eval_shape(do_update, state)[1]
            return state, jax.tree.map(lambda m: jnp.full(m.shape, jnp.nan, m.dtype), metrics)

        started = member.env_steps > member.learn_from
        agent_state, metrics = jax.lax.cond(started, do_update, skip_update, member.agent)
        return member.replace(agent=agent_state, key=key), metrics

    def phase(member: Member, _) -> tuple[Member, dict[str, jax.Array]]:
        member, _ = jax.lax.scan(env_iteration, member, length=schedule.iterations_per_phase)
        return jax.lax.scan(learn, member, length=schedule.updates_per_phase)

    return chunked_program(agent, env, schedule, init, phase)


def chunked_program(agent: Any, env: JaxEnv, schedule: Any, init: Callable, phase: Callable) -> MemberProgram:
    """The member program whose chunk is ``schedule.phases_per_chunk`` scanned ``phase``s (both loops share it)."""

    def train_chunk(member: Member) -> tuple[Member, dict[str, jax.Array]]:
        member, metrics = jax.lax.scan(phase, member, length=schedule.phases_per_chunk)
        return member, summarize_chunk(metrics, member)

    def evaluate(member: Member, key: jax.Array) -> jax.Array:
        """Mean undiscounted return of fresh episodes under the deterministic policy."""
        return evaluate_policy(agent.policy, member.agent, env, schedule.eval_episodes, key, schedule.eval_max_steps)

    return MemberProgram(init=init, init_agent=agent.init, train_chunk=train_chunk, evaluate=evaluate,
                         policy=agent.policy)
