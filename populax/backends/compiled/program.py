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
from populax.loop.offpolicy import PrepareObs, example_transition, exploring, make_offpolicy_loop, observe
from populax.loop.onpolicy import make_onpolicy_loop
from populax.loop.shape import LoopShape, agent_spec, learning_rewards, offpolicy_shape, onpolicy_shape
from populax.member import EnvSlots, Member
from populax.obs_norm import normalize, stats_init, stats_update
from populax.run.config import TrainConfig


class MemberProgram(NamedTuple):
    """The pure functions of one member's compiled training; see the module docstring."""

    init: Callable[[jax.Array, Any], Member]
    init_agent: Callable[[jax.Array, Any], Any]
    """``(key, hparams) -> agent state`` alone (re-initialising a failed member allocates nothing else)."""
    train_chunk: Callable[[Member], tuple[Member, dict[str, jax.Array]]]
    evaluate: Callable[[Member, jax.Array], jax.Array]
    policy: Callable[[Any, Any, jax.Array], jax.Array]
    """The agent's deterministic policy ``(agent_state, obs_stats, obs) -> action`` on raw observations, normalised
    with the member's statistics under ``--obs-norm`` (for `populax eval`)."""
    agent: Any = None
    """The member's agent functions (``Agent`` or ``OnPolicyAgent``; distillation between cohorts reads them)."""


def new_member(agent_state: Any, hparams: Any, experience: Any, env: EnvSlots, learning_starts: int,
               key: jax.Array, obs_stats: Any = None) -> Member:
    """A member at env step 0 (``obs_stats``: its observation statistics under ``--obs-norm``, else None)."""
    return Member(agent=agent_state, hparams=hparams, obs_stats=obs_stats, experience=experience, env=env,
                  env_steps=jnp.zeros((), jnp.int32), learn_from=jnp.asarray(learning_starts, jnp.int32), key=key)


def obs_preparation(obs_norm: bool) -> PrepareObs:
    """``(obs_stats, obs) -> network input``: observations standardised by the member's running statistics
    (``--obs-norm``, as on the host), else as the environment gives them."""
    if obs_norm:
        return normalize
    return lambda stats, obs: obs


def summarize_chunk(metrics: dict[str, jax.Array], member: Member) -> dict[str, jax.Array]:
    """What a chunk reports per member: mean update metrics over the chunk (NaN
    entries, e.g. skipped actor steps, ignored) and the latest training episode returns."""
    summary = jax.tree.map(jnp.nanmean, metrics)
    summary["train_return"] = jnp.nanmean(member.env.last_episode_return)
    return summary


def make_env_iteration(act: Callable, env: JaxEnv, shape: Any,
                       store: Callable[[Transition], Transition] = lambda t: t, obs_norm: bool = False) -> Callable:
    """One member's off-policy env iteration ``(member, _) -> (member, None)``: act in its E envs with the agent's
    ``act`` (uniform random before ``shape.learning_starts``), step them, store ``store(transition)`` in its
    replay buffer (the coupled methods' actors use it too). ``obs_norm``: the member's statistics take in the
    observations first and the agent acts on them standardised (as the host collector does); the replay
    stores them raw, so a resume or a copy re-normalises with whatever statistics the learner has then."""
    num_envs = shape.envs_per_member
    step_envs = jax.vmap(env.step)
    explore = exploring(act, env.action)
    prepare_obs = obs_preparation(obs_norm)

    def env_iteration(member: Member, _) -> tuple[Member, None]:
        key, act_key, random_key, step_key = jax.random.split(member.key, 4)
        warming_up = member.env_steps < shape.learning_starts
        stats = stats_update(member.obs_stats, member.env.obs) if obs_norm else member.obs_stats
        action = explore(member.agent, prepare_obs(stats, member.env.obs), member.hparams, warming_up, act_key,
                         random_key)
        result = step_envs(jax.random.split(step_key, num_envs), member.env.state, action)
        transition = Transition(member.env.obs, action, learning_rewards(result.reward, shape), result.final_obs,
                                result.terminated)
        member = member.replace(
            obs_stats=stats,
            experience=observe(member.experience, store(transition)),
            env=advance_episodes(member.env, result),
            env_steps=member.env_steps + num_envs,
            key=key,
        )
        return member, None

    return env_iteration


def initial_stats(env: JaxEnv, obs_norm: bool) -> Any:
    """A new member's observation statistics: none without ``--obs-norm``."""
    return stats_init(env.obs_shape) if obs_norm else None


def make_offpolicy_program(agent: Agent, env: JaxEnv, shape: LoopShape, obs_norm: bool = False) -> MemberProgram:
    """Build ``init``, ``train_chunk`` and ``evaluate`` for one off-policy member (``obs_norm``: see
    ``make_env_iteration``; updates standardise the sampled batch with the member's current statistics)."""
    loop = make_offpolicy_loop(agent, env.action, shape, normalize if obs_norm else None)
    env_iteration = make_env_iteration(agent.act, env, shape, obs_norm=obs_norm)

    def init(key: jax.Array, hparams: Any) -> Member:
        agent_key, env_key, key = jax.random.split(key, 3)
        buffer = buffer_init(example_transition(env.obs_shape, jnp.float32, env.action), shape.buffer_size)
        return new_member(agent.init(agent_key, hparams), hparams, buffer,
                          reset_envs(env, env_key, shape.envs_per_member), shape.learning_starts, key,
                          initial_stats(env, obs_norm))

    def learn(member: Member, _) -> tuple[Member, dict[str, jax.Array]]:
        started = member.env_steps > member.learn_from
        agent_state, key, metrics = loop.learn(member.agent, member.experience, member.hparams, member.obs_stats,
                                               member.key, started)
        return member.replace(agent=agent_state, key=key), metrics

    def phase(member: Member, _) -> tuple[Member, dict[str, jax.Array]]:
        member, _ = jax.lax.scan(env_iteration, member, length=shape.iterations_per_phase)
        return jax.lax.scan(learn, member, length=shape.updates_per_phase)

    return chunked_program(agent, env, shape, init, phase, obs_norm)


def make_onpolicy_program(agent: OnPolicyAgent, env: JaxEnv, shape: LoopShape, obs_norm: bool = False) -> MemberProgram:
    """Build ``init``, ``train_chunk`` and ``evaluate`` for one on-policy member: a phase is one rollout.
    ``obs_norm``: as on the host, the statistics stay fixed during a rollout (the log-probs and values recorded
    while acting are those the learner recomputes) and take in the rollout's observations after it."""
    loop = make_onpolicy_loop(agent)
    num_envs = shape.envs_per_member
    step_envs = jax.vmap(env.step)
    prepare_obs = obs_preparation(obs_norm)

    def init(key: jax.Array, hparams: Any) -> Member:
        agent_key, env_key, key = jax.random.split(key, 3)
        return new_member(agent.init(agent_key, hparams), hparams, None, reset_envs(env, env_key, num_envs), 0, key,
                          initial_stats(env, obs_norm))

    def collect(member: Member, _):
        key, act_key, step_key = jax.random.split(member.key, 3)
        obs = prepare_obs(member.obs_stats, member.env.obs)
        action, log_prob, value = loop.act(member.agent, obs, act_key)
        env_action = action if env.action.discrete else jnp.clip(action, -1.0, 1.0)
        result = step_envs(jax.random.split(step_key, num_envs), member.env.state, env_action)
        step = loop.observe(member.agent, obs, action, log_prob, value, learning_rewards(result.reward, shape),
                            result.terminated, result.truncated, prepare_obs(member.obs_stats, result.final_obs),
                            member.hparams.gamma)
        acted_on = member.env.obs  # raw: what the statistics take in after the rollout
        member = member.replace(env=advance_episodes(member.env, result), env_steps=member.env_steps + num_envs, key=key)
        return member, (step, acted_on)

    def phase(member: Member, _):
        member, (rollout, acted_on) = jax.lax.scan(collect, member, length=shape.iterations_per_phase)
        agent_state, key, metrics = loop.learn(member.agent, rollout, prepare_obs(member.obs_stats, member.env.obs),
                                               member.hparams, member.key)
        member = member.replace(agent=agent_state, key=key)
        if obs_norm:
            stats = stats_update(member.obs_stats, acted_on.reshape((-1, *acted_on.shape[2:])))
            member = member.replace(obs_stats=stats)
        return member, metrics

    return chunked_program(agent, env, shape, init, phase, obs_norm)


def chunked_program(agent: Any, env: JaxEnv, shape: LoopShape, init: Callable, phase: Callable,
                    obs_norm: bool = False) -> MemberProgram:
    """The member program whose chunk is ``shape.phases_per_chunk`` scanned ``phase``s (both families share it)."""
    prepare_obs = obs_preparation(obs_norm)

    def policy(agent_state: Any, obs_stats: Any, obs: jax.Array) -> jax.Array:
        return agent.policy(agent_state, prepare_obs(obs_stats, obs))

    def train_chunk(member: Member) -> tuple[Member, dict[str, jax.Array]]:
        member, metrics = jax.lax.scan(phase, member, length=shape.phases_per_chunk)
        return member, summarize_chunk(metrics, member)

    def evaluate(member: Member, key: jax.Array) -> jax.Array:
        """Mean undiscounted return of fresh episodes under the deterministic policy."""
        return evaluate_policy(lambda state, obs: policy(state, member.obs_stats, obs), member.agent, env,
                               shape.eval_episodes, key, shape.eval_max_steps)

    return MemberProgram(init=init, init_agent=agent.init, train_chunk=train_chunk, evaluate=evaluate,
                         policy=policy, agent=agent)


def build_program(algorithm: Algorithm, config: TrainConfig, env: JaxEnv) -> tuple[LoopShape, MemberProgram]:
    """(loop shape, member program) of one member of ``algorithm`` (not coupled: see ``coupled.py``) as ``config``
    says; ConfigError on bad options."""
    options = resolve_options(algorithm.options, config.algo_options, algorithm.name)
    if algorithm.on_policy:
        shape = onpolicy_shape(envs_per_member=config.envs_per_member, rollout_len=options.rollout_len,
                                       eval_every=config.eval_every, eval_episodes=config.eval_episodes,
                                       eval_max_steps=config.eval_max_steps, clip_rewards=config.clip_rewards)
    else:
        shape = offpolicy_shape(envs_per_member=config.envs_per_member, updates_per_step=config.updates_per_step,
                              eval_every=config.eval_every, learning_starts=config.learning_starts,
                              batch_size=config.batch_size, buffer_size=min(config.buffer_size, config.total_steps),
                              eval_episodes=config.eval_episodes, eval_max_steps=config.eval_max_steps,
                              clip_rewards=config.clip_rewards,
                              n_step=config.n_step)
    total_steps = math.ceil(config.total_steps / shape.chunk_steps) * shape.chunk_steps
    agent = algorithm.make(agent_spec(algorithm, config, env.obs_shape, env.action, options, shape, total_steps))
    make = make_onpolicy_program if algorithm.on_policy else make_offpolicy_program
    return shape, make(agent, env, shape, config.obs_norm)
