"""The compiled training program of ONE member on a JAX environment: the member loop (``populax.loop``) inside
nested ``lax.scan``s.

``build_program`` returns pure functions over a :class:`~populax.member.Member`: ``init``, ``train_chunk``
(collect and learn for ``chunk_steps`` env steps) and ``evaluate`` (fresh episodes, deterministic policy). The
compiled backend maps them over the population with an executor; nothing here knows how many members there
are. One chunk, read top to bottom::

    repeat phases_per_chunk times:                      # lax.scan
        repeat iterations_per_phase times:              # lax.scan
            loop.act in E envs -> env.step -> loop.observe
        off-policy: repeat updates_per_phase times:     # lax.scan
            loop.learn (skipped until env_steps > learn_from)
        on-policy:  loop.learn on the phase's rollout
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from populax.agents import Algorithm
from populax.agents.base import Agent, OnPolicyAgent, Transition
from populax.agents.options import resolve_options
from populax.backends.compiled.episodes import advance_episodes, evaluate_policy, reset_envs
from populax.buffers import buffer_init
from populax.envs.jax_envs import JaxEnv
from populax.loop.offpolicy import example_transition, exploring, make_offpolicy_loop, observe
from populax.loop.onpolicy import make_onpolicy_loop
from populax.loop.shape import LoopShape, agent_spec, offpolicy_shape, onpolicy_shape
from populax.member import EnvSlots, Member
from populax.run.config import TrainConfig


class MemberProgram(NamedTuple):
    """The pure functions of one member's compiled training; see the module docstring."""

    init: Callable[[jax.Array, Any], Member]
    init_agent: Callable[[jax.Array, Any], Any]
    """``(key, hparams) -> agent state`` alone (re-initialising a failed member allocates nothing else)."""
    train_chunk: Callable[[Member], tuple[Member, dict[str, jax.Array]]]
    evaluate: Callable[[Member, jax.Array], jax.Array]
    policy: Callable[[Any, jax.Array], jax.Array]
    """The agent's deterministic policy ``(agent_state, obs) -> action`` (for `populax eval`)."""
    agent: Any = None
    """The member's agent functions (``Agent`` or ``OnPolicyAgent``; distillation between cohorts reads them)."""


def new_member(agent_state: Any, hparams: Any, experience: Any, env: EnvSlots, learning_starts: int,
               key: jax.Array) -> Member:
    """A member at env step 0."""
    return Member(agent=agent_state, hparams=hparams, obs_stats=None, experience=experience, env=env,
                  env_steps=jnp.zeros((), jnp.int32), learn_from=jnp.asarray(learning_starts, jnp.int32), key=key)


def summarize_chunk(metrics: dict[str, jax.Array], member: Member) -> dict[str, jax.Array]:
    """What a chunk reports per member: mean update metrics over the chunk (NaN
    entries, e.g. skipped actor steps, ignored) and the latest training episode returns."""
    summary = jax.tree.map(jnp.nanmean, metrics)
    summary["train_return"] = jnp.nanmean(member.env.last_episode_return)
    return summary


def make_env_iteration(act: Callable, env: JaxEnv, shape: Any,
                       store: Callable[[Transition], Transition] = lambda t: t) -> Callable:
    """One member's off-policy env iteration ``(member, _) -> (member, None)``: act in its E envs with the agent's
    ``act`` (uniform random before ``shape.learning_starts``), step them, store ``store(transition)`` in its
    replay buffer (the coupled methods' actors use it too)."""
    num_envs = shape.envs_per_member
    step_envs = jax.vmap(env.step)
    explore = exploring(act, env.action)

    def env_iteration(member: Member, _) -> tuple[Member, None]:
        key, act_key, random_key, step_key = jax.random.split(member.key, 4)
        warming_up = member.env_steps < shape.learning_starts
        action = explore(member.agent, member.env.obs, member.hparams, warming_up, act_key, random_key)
        result = step_envs(jax.random.split(step_key, num_envs), member.env.state, action)
        transition = Transition(member.env.obs, action, result.reward, result.final_obs, result.terminated)
        member = member.replace(
            experience=observe(member.experience, store(transition)),
            env=advance_episodes(member.env, result),
            env_steps=member.env_steps + num_envs,
            key=key,
        )
        return member, None

    return env_iteration


def make_offpolicy_program(agent: Agent, env: JaxEnv, shape: LoopShape) -> MemberProgram:
    """Build ``init``, ``train_chunk`` and ``evaluate`` for one off-policy member."""
    loop = make_offpolicy_loop(agent, env.action, shape)
    env_iteration = make_env_iteration(agent.act, env, shape)

    def init(key: jax.Array, hparams: Any) -> Member:
        agent_key, env_key, key = jax.random.split(key, 3)
        buffer = buffer_init(example_transition(env.obs_shape, jnp.float32, env.action), shape.buffer_size)
        return new_member(agent.init(agent_key, hparams), hparams, buffer,
                          reset_envs(env, env_key, shape.envs_per_member), shape.learning_starts, key)

    def learn(member: Member, _) -> tuple[Member, dict[str, jax.Array]]:
        started = member.env_steps > member.learn_from
        agent_state, key, metrics = loop.learn(member.agent, member.experience, member.hparams, None, member.key,
                                               started)
        return member.replace(agent=agent_state, key=key), metrics

    def phase(member: Member, _) -> tuple[Member, dict[str, jax.Array]]:
        member, _ = jax.lax.scan(env_iteration, member, length=shape.iterations_per_phase)
        return jax.lax.scan(learn, member, length=shape.updates_per_phase)

    return chunked_program(agent, env, shape, init, phase)


def make_onpolicy_program(agent: OnPolicyAgent, env: JaxEnv, shape: LoopShape) -> MemberProgram:
    """Build ``init``, ``train_chunk`` and ``evaluate`` for one on-policy member: a phase is one rollout."""
    loop = make_onpolicy_loop(agent)
    num_envs = shape.envs_per_member
    step_envs = jax.vmap(env.step)

    def init(key: jax.Array, hparams: Any) -> Member:
        agent_key, env_key, key = jax.random.split(key, 3)
        return new_member(agent.init(agent_key, hparams), hparams, None, reset_envs(env, env_key, num_envs), 0, key)

    def collect(member: Member, _):
        key, act_key, step_key = jax.random.split(member.key, 3)
        action, log_prob, value = loop.act(member.agent, member.env.obs, act_key)
        env_action = action if env.action.discrete else jnp.clip(action, -1.0, 1.0)
        result = step_envs(jax.random.split(step_key, num_envs), member.env.state, env_action)
        step = loop.observe(member.agent, member.env.obs, action, log_prob, value, result.reward, result.terminated,
                            result.truncated, result.final_obs, member.hparams.gamma)
        member = member.replace(env=advance_episodes(member.env, result), env_steps=member.env_steps + num_envs, key=key)
        return member, step

    def phase(member: Member, _):
        member, rollout = jax.lax.scan(collect, member, length=shape.iterations_per_phase)
        agent_state, key, metrics = loop.learn(member.agent, rollout, member.env.obs, member.hparams, member.key)
        return member.replace(agent=agent_state, key=key), metrics

    return chunked_program(agent, env, shape, init, phase)


def chunked_program(agent: Any, env: JaxEnv, shape: LoopShape, init: Callable, phase: Callable) -> MemberProgram:
    """The member program whose chunk is ``shape.phases_per_chunk`` scanned ``phase``s (both families share it)."""

    def train_chunk(member: Member) -> tuple[Member, dict[str, jax.Array]]:
        member, metrics = jax.lax.scan(phase, member, length=shape.phases_per_chunk)
        return member, summarize_chunk(metrics, member)

    def evaluate(member: Member, key: jax.Array) -> jax.Array:
        """Mean undiscounted return of fresh episodes under the deterministic policy."""
        return evaluate_policy(agent.policy, member.agent, env, shape.eval_episodes, key, shape.eval_max_steps)

    return MemberProgram(init=init, init_agent=agent.init, train_chunk=train_chunk, evaluate=evaluate,
                         policy=agent.policy, agent=agent)


def build_program(algorithm: Algorithm, config: TrainConfig, env: JaxEnv) -> tuple[LoopShape, MemberProgram]:
    """(loop shape, member program) of one member of ``algorithm`` (not coupled: see ``coupled.py``) as ``config``
    says; ConfigError on bad options."""
    options = resolve_options(algorithm.options, config.algo_options, algorithm.name)
    if algorithm.on_policy:
        shape = onpolicy_shape(envs_per_member=config.envs_per_member, rollout_len=options.rollout_len,
                                       eval_every=config.eval_every, eval_episodes=config.eval_episodes,
                                       eval_max_steps=config.eval_max_steps)
    else:
        shape = offpolicy_shape(envs_per_member=config.envs_per_member, updates_per_step=config.updates_per_step,
                              eval_every=config.eval_every, learning_starts=config.learning_starts,
                              batch_size=config.batch_size, buffer_size=min(config.buffer_size, config.total_steps),
                              eval_episodes=config.eval_episodes, eval_max_steps=config.eval_max_steps,
                              n_step=config.n_step)
    total_steps = math.ceil(config.total_steps / shape.chunk_steps) * shape.chunk_steps
    agent = algorithm.make(agent_spec(algorithm, config, env.obs_shape, env.action, options, shape, total_steps))
    make = make_onpolicy_program if algorithm.on_policy else make_offpolicy_program
    return shape, make(agent, env, shape)
