"""Compiled population programs of the coupled methods (CEM-RL, DvD-TD3) on JAX environments.

An independent member's program is written for ONE member and mapped over
the population by an executor (``program.py``). CEM-RL and DvD-TD3 couple
the members inside the update (one shared critic trained on everyone's
data; a distribution over all actors; a loss over all actors), so their
chunk is written for the whole population: ``train_chunk(population)``,
with ``jax.vmap`` over the members where they act alone (acting, env
steps, actor steps) and plain code where they meet (the critic, the CEM,
the kernel). Everything else is shared with the other algorithms: the
member layout (each member's actor, buffer shard, envs, key, counters in
``Member``; the critic, distribution and bandit in ``Member.shared``), the
driver, evaluation, failure handling, checkpoints and resume.

CEM-RL, one chunk = one generation::

    actors  = CEM.ask()                              # mirrored samples around the mean
    if learning has started:                         # S = updates-per-step x env steps of a generation (all actors)
        repeat S times:                              # lax.scan
            critic step on a shared-replay batch (TD target: grad actor k mod n_grad's target)
            every `delay` steps: each of the first pop/2 actors takes a TD3 actor step
    each actor runs generation_steps env iterations from a fresh reset, deterministic
        (from the first generation: learning_starts delays only the gradient steps); transitions go to the shared replay
    CEM.tell(actors, return of each actor's first episode in each env, averaged)
    evaluate the CEM mean actor -> mean_policy_return

DvD-TD3, one chunk = ``eval_every`` env steps, like TD3::

    repeat phases:
        every actor acts in its envs (Gaussian noise) -> shared replay
        repeat updates:
            critic step on one shared-replay batch per member (TD target: that member's target actor)
            every `delay` steps: the actors' joint step on  sum_i -Q(s, pi_i(s)) - lambda * log det K
    diversity (log det K, mean pairwise action distance) on a batch of states; bandit update -> next lambda

With ``--algo-opt.critics per-member`` each member's batch trains its own
critic (``ActorState.critic``, its own hyperparameters) and Q_i is its own.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from populax.agents import AgentSpec, Algorithm
from populax.agents.options import CEMRLOptions, DvDOptions, resolve_options
from populax.backends.compiled.episodes import evaluate_policy, reset_envs
from populax.backends.compiled.program import make_env_iteration, new_member
from populax.buffers import buffer_init
from populax.coupled.shared_td3 import ActorState, Nets, finite_rows, init_actor
from populax.envs.jax_envs import JaxEnv
from populax.errors import ConfigError
from populax.loop.coupled import deterministic_act, make_cemrl_steps, make_dvd_steps, noisy_act, own_critics, per_member
from populax.loop.offpolicy import example_transition
from populax.loop.shape import LoopShape, offpolicy_shape
from populax.member import Member, without_shared
from populax.population import init_members
from populax.run.config import EVAL_STEP_LIMIT, TrainConfig


class PopulationProgram(NamedTuple):
    """A coupled method's compiled program; ``train_chunk`` takes the whole population."""

    init_population: Any
    """``(keys [P], hparams [P]) -> Member`` (members stacked, ``shared`` set)."""
    init_agent: Any
    """``(key, hparams) -> ActorState`` of one member (re-initialising a failed one)."""
    train_chunk: Any
    """``population -> (population, per-member metrics [P])``."""
    evaluate: Any
    """``(member, key) -> mean return`` of one member's actor (mapped by the executor)."""
    policy: Any
    """``(actor state, obs_stats, obs) -> action``, deterministic (the coupled methods keep no statistics)."""


def member_init(nets: Nets, env: JaxEnv, buffer_size: int, envs: int, learning_starts: int,
                own_critic: bool = False):
    """``(key, hparams) -> Member``: a fresh actor (and critic, with ``own_critic``), an empty buffer shard,
    reset envs."""

    def init(key: jax.Array, hparams: Any) -> Member:
        actor_key, env_key, key = jax.random.split(key, 3)
        buffer = buffer_init(example_transition(env.obs_shape, jnp.float32, env.action), buffer_size)
        return new_member(init_actor(nets, actor_key, own_critic), hparams, buffer, reset_envs(env, env_key, envs),
                          learning_starts, key)

    return init


def actor_functions(config: TrainConfig, env: JaxEnv, nets: Nets, own_critic: bool):
    """(policy, evaluate, init_agent) of a coupled program's members: the deterministic actor, its mean
    evaluation return, and a fresh member state (re-initialising a failed one)."""

    def policy(state: ActorState, obs_stats: Any, obs: jax.Array) -> jax.Array:
        return nets.actor.apply(state.actor, obs)

    def evaluate(member: Member, key: jax.Array) -> jax.Array:
        return evaluate_policy(lambda state, obs: policy(state, None, obs), member.agent, env, config.eval_episodes,
                               key, config.eval_max_steps)

    def init_agent(key: jax.Array, hparams: Any) -> ActorState:
        return init_actor(nets, key, own_critic)

    return policy, evaluate, init_agent


def make_cemrl_program(config: TrainConfig, env: JaxEnv, options: CEMRLOptions,
                       nets: Nets) -> tuple[LoopShape, PopulationProgram]:
    """CEM-RL's generation as one compiled chunk (see the module docstring)."""
    envs = config.envs_per_member
    iterations = options.generation_steps or env.max_episode_steps
    if not options.generation_steps and iterations > EVAL_STEP_LIMIT:  # a limit of 10**9 (none, in effect) would make a generation of that many
        raise ConfigError(f"--algo-opt.generation-steps: {env.name}'s episodes last up to {env.max_episode_steps:,} "
                          "steps; set the generation length")
    # As the reference (apourchot/CEM-RL es_grad.py, start_steps): every sampled actor is evaluated with its own
    # parameters from the first generation, so the CEM is told the returns of the actors it sampled; the warm-up
    # (members' learn_from = learning_starts) gates only the critic and actor gradient steps.
    # A chunk is one generation: one phase of ``iterations`` env iterations, no random warm-up (learning_starts 0
    # in the shape), the gradient steps in ``begin`` (none in the phase).
    shape = LoopShape(envs_per_member=envs, iterations_per_phase=iterations, updates_per_phase=0,
                         phases_per_chunk=1, batch_size=config.batch_size,
                         buffer_size=min(config.buffer_size, config.total_steps), n_step=config.n_step,
                         eval_episodes=config.eval_episodes, eval_max_steps=config.eval_max_steps,
                         clip_rewards=config.clip_rewards)
    steps = make_cemrl_steps(config, nets, options, shape.chunk_steps)
    init_member = member_init(nets, env, shape.buffer_size, envs, config.learning_starts)
    env_iteration = make_env_iteration(deterministic_act(nets), env, shape, store=finite_rows)
    policy, evaluate, init_agent = actor_functions(config, env, nets, own_critic=False)

    def init_population(keys: jax.Array, hparams: Any) -> Member:
        members = init_members(init_member)(keys, hparams)
        return members.replace(shared=steps.init_shared(keys, members))

    def generation(member: Member) -> tuple[Member, jax.Array]:
        """One actor's generation_steps iterations from a fresh reset; fitness = its first episodes' return."""
        env_key, key = jax.random.split(member.key)
        member = member.replace(env=reset_envs(env, env_key, envs), key=key)

        def iteration(carry, _):
            member, first = carry
            member, _ = env_iteration(member, None)
            return (member, jnp.where(jnp.isnan(first), member.env.last_episode_return, first)), None

        (member, first), _ = jax.lax.scan(iteration, (member, jnp.full((envs,), jnp.nan)), length=iterations)
        return member, jnp.mean(jnp.where(jnp.isnan(first), member.env.episode_return, first))

    def train_chunk(population: Member) -> tuple[Member, dict[str, jax.Array]]:
        population, metrics = steps.begin(population)
        members, fitness = jax.vmap(generation)(without_shared(population))
        population, told = steps.finish(members.replace(shared=population.shared), fitness)
        key, mean_key = jax.random.split(population.shared.key)
        mean_return, _ = evaluate_policy(lambda state, obs: policy(state, None, obs),
                                         steps.mean_actor(population.shared), env, config.eval_episodes, mean_key,
                                         config.eval_max_steps)
        metrics.update(told, train_return=fitness, mean_policy_return=jnp.full((config.pop,), mean_return))
        return population.replace(shared=population.shared.replace(key=key)), metrics

    return shape, PopulationProgram(init_population, init_agent, train_chunk, evaluate, policy)


# --------------------------------------------------------------------------------------------- DvD-TD3


def make_dvd_program(config: TrainConfig, env: JaxEnv, options: DvDOptions, nets: Nets) -> tuple[LoopShape, PopulationProgram]:
    """DvD-TD3's chunk (see the module docstring)."""
    shape = offpolicy_shape(envs_per_member=config.envs_per_member, updates_per_step=config.updates_per_step,
                             eval_every=config.eval_every, learning_starts=config.learning_starts,
                             batch_size=config.batch_size, buffer_size=min(config.buffer_size, config.total_steps),
                             eval_episodes=config.eval_episodes, eval_max_steps=config.eval_max_steps,
                             clip_rewards=config.clip_rewards)
    steps = make_dvd_steps(config, nets, options)
    own = own_critics(options)
    init_member = member_init(nets, env, shape.buffer_size, config.envs_per_member, config.learning_starts, own)
    env_iteration = jax.vmap(lambda member: make_env_iteration(noisy_act(nets), env, shape, store=finite_rows)(
        member, None)[0])
    policy, evaluate, init_agent = actor_functions(config, env, nets, own)

    def init_population(keys: jax.Array, hparams: Any) -> Member:
        return init_members(init_member)(keys, hparams).replace(shared=steps.init_shared(keys))

    def phase(population: Member, _) -> tuple[Member, dict[str, jax.Array]]:
        members, _ = jax.lax.scan(lambda m, _: (env_iteration(m), None), without_shared(population),
                                  length=shape.iterations_per_phase)
        return jax.lax.scan(lambda p, _: steps.learn(p), members.replace(shared=population.shared),
                            length=shape.updates_per_phase)

    def train_chunk(population: Member) -> tuple[Member, dict[str, jax.Array]]:
        population, metrics = jax.lax.scan(phase, population, length=shape.phases_per_chunk)
        train_returns = jnp.nanmean(population.env.last_episode_return, axis=1)
        population, chunk_metrics = steps.finish(population, train_returns)
        return population, {**per_member(metrics, config.pop), **chunk_metrics, "train_return": train_returns}

    return shape, PopulationProgram(init_population, init_agent, train_chunk, evaluate, policy)


def build_coupled_program(algorithm: Algorithm, config: TrainConfig, env: JaxEnv) -> tuple[LoopShape, PopulationProgram]:
    """(shape, program) of the coupled ``algorithm`` (its ``make`` builds the networks)."""
    options = resolve_options(algorithm.options, config.algo_options, algorithm.name)
    nets = algorithm.make(AgentSpec(env.obs_shape, env.action, tuple(config.hidden), options))
    if algorithm.name == "cemrl":
        return make_cemrl_program(config, env, options, nets)
    return make_dvd_program(config, env, options, nets)


__all__ = ["PopulationProgram", "build_coupled_program"]
