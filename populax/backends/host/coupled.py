"""CEM-RL and DvD-TD3 on host environments: the compiled backend's population steps around the host collector.

The per-member parts (init, acting, inserting blocks, the deterministic
policy) are the host backend's own ``make_functions`` with the coupled
methods' actor as the agent; the population-level parts are the same
``CEMRLSteps`` / ``DvDSteps`` as on gymnax (``populax/loop/coupled.py``):

* DvD-TD3: ``learn`` runs the owed updates of a block as DvD steps (shared
  critic + joint actor step); at the chunk's end ``finish`` measures the
  diversity and lets the bandit choose the next lambda from the chunk's
  training returns.
* CEM-RL: a chunk is one generation of exactly ``generation-steps`` env
  iterations per member (default the env's time limit), collected as one
  block (``generation_plan``), as on gymnax: ``begin`` asks the CEM and runs
  the gradient phase, then every env is reset and the collector acts with the
  new actors (no overlap, no random warm-up: every step of a generation is
  acted by its sampled actor); the fitness of an actor is, per env, the
  return of the first episode it finished in the generation (the running
  episode's where none finished), averaged over its envs, so it comes from
  episodes that actor acted from start to end; ``finish`` tells the CEM and
  the mean actor is evaluated on fresh episodes.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from populax.agents import AgentSpec, Algorithm
from populax.agents.base import Agent
from populax.backends.host.collector import member_returns
from populax.backends.host.member import HostFunctions, HostPlan, make_functions, make_plan
from populax.coupled.shared_td3 import init_actor, skip_or
from populax.envs.host_envs import HostEnvSpec, time_limit_of
from populax.errors import ConfigError
from populax.loop.coupled import deterministic_act, make_cemrl_steps, make_dvd_steps, noisy_act, own_critics
from populax.loop.shape import LoopShape
from populax.member import Member, without_shared
from populax.population import select_member
from populax.run.config import TrainConfig

MEAN_ACTOR_SEED = 1_000_003
"""Offset of the mean actor's evaluation seeds from the members' (other episodes, same chunk)."""


class CoupledHooks(NamedTuple):
    """What the host backend calls around a chunk of a coupled method (None: nothing)."""

    begin: Any
    """``population -> (population, metrics)`` before the chunk's first block (CEM-RL: ask + gradient phase)."""
    finish: Any
    """``(population, fitness [P], train returns [P]) -> (population, metrics)`` after its last block."""
    overlap: bool
    """Whether the collector may act a block ahead with the previous parameters."""
    mean_actor: Any = None
    """CEM-RL: ``shared -> ActorState`` of the CEM mean (evaluated after each generation)."""
    fresh_episodes: bool = False
    """Reset every env at the chunk's start (CEM-RL: a generation's actors are scored on episodes they acted
    from the first step; the fitness is ``Collector.first_episode_returns``)."""


def time_limit(spec: HostEnvSpec) -> int:
    """The environment's episode step limit (one env is made to read it)."""
    env = spec.make()
    try:
        limit = time_limit_of(env)  # a user's class under --max-episode-steps: TimeLimit, no spec
    finally:
        env.close()
    if not limit:
        raise ConfigError(f"--algo-opt.generation-steps: {spec.name} has no time limit; set the generation length")
    return int(limit)


def make_coupled_host(config: TrainConfig, algorithm: Algorithm, options: Any, spec: HostEnvSpec, plan: HostPlan,
                      executor: Any) -> tuple[HostFunctions, CoupledHooks]:
    """(host functions, chunk hooks) of the coupled ``algorithm`` (``plan`` from ``coupled_plan_config``)."""
    name = algorithm.name
    nets = algorithm.make(AgentSpec(spec.obs_shape, spec.action, tuple(config.hidden), options))
    cemrl = name == "cemrl"
    own_critic = own_critics(options)
    actor = Agent(init=lambda key, hparams: init_actor(nets, key, own_critic),
                  act=deterministic_act(nets) if cemrl else noisy_act(nets),
                  policy=lambda state, obs: nets.actor.apply(state.actor, obs), update=None)
    base = make_functions(actor, spec, plan, executor, obs_norm=False)

    if cemrl:
        steps = make_cemrl_steps(config, nets, options, plan.chunk_steps)

        @jax.jit
        def init(keys: jax.Array, hparams: Any) -> Member:
            members = base.init(keys, hparams)
            return members.replace(shared=steps.init_shared(keys, members))

        def learn(population: Member, count: jax.Array) -> tuple[Member, dict]:
            return population, {}  # CEM-RL learns at the start of a generation (``begin``)

        finish_jit = jax.jit(steps.finish)

        def finish(population: Member, fitness: np.ndarray, train_returns: np.ndarray) -> tuple[Member, dict]:
            return finish_jit(population, jnp.asarray(fitness, jnp.float32))

        hooks = CoupledHooks(begin=jax.jit(steps.begin), finish=finish, overlap=False,
                             mean_actor=jax.jit(steps.mean_actor), fresh_episodes=True)
        return base._replace(init=init, learn=learn), hooks

    steps = make_dvd_steps(config, nets, options)

    @jax.jit
    def init(keys: jax.Array, hparams: Any) -> Member:
        return base.init(keys, hparams).replace(shared=steps.init_shared(keys))

    @jax.jit
    def learn(population: Member, count: jax.Array) -> tuple[Member, dict]:
        """``count[0]`` DvD updates (the members move in lockstep), in a scan of ``plan.update_chunk``."""

        def one(population, index):
            return skip_or(index < count[0], steps.learn, population)

        population, metrics = jax.lax.scan(one, population, jnp.arange(plan.update_chunk))
        # The buffers are only read: not returned (a returned buffer is a copy).
        return population.replace(experience=None), jax.tree.map(lambda m: jnp.nanmean(m, axis=0), metrics)

    finish_jit = jax.jit(steps.finish)

    def finish(population: Member, fitness: np.ndarray, train_returns: np.ndarray) -> tuple[Member, dict]:
        return finish_jit(population, jnp.asarray(train_returns, jnp.float32))

    hooks = CoupledHooks(begin=None, finish=finish, overlap=config.overlap)
    return base._replace(init=init, learn=learn), hooks


def coupled_plan(config: TrainConfig, name: str, options: Any, spec: HostEnvSpec) -> HostPlan:
    """The host plan of a coupled method: DvD-TD3's is TD3's; CEM-RL's is one generation per chunk."""
    if name != "cemrl":
        return make_plan(config, False)
    if options.generation_steps < 0:
        raise ConfigError(f"--algo-opt.generation-steps must be >= 0 (got {options.generation_steps})")
    return generation_plan(config, options.generation_steps or time_limit(spec))


def generation_plan(config: TrainConfig, iterations: int) -> HostPlan:
    """CEM-RL's host plan: a chunk is one generation of exactly ``iterations`` env iterations per member, as one
    block. The gradient steps run in ``begin``, not per block (no update phases, ``--updates-per-step`` only
    sets their count), and nothing overlaps, so neither the policy lag nor a phase rounds the generation up
    (which would shift episodes against generations)."""
    steps = iterations * config.envs_per_member
    total_steps = math.ceil(config.total_steps / steps) * steps
    loop = LoopShape(envs_per_member=config.envs_per_member, iterations_per_phase=iterations, updates_per_phase=0,
                     phases_per_chunk=1, learning_starts=config.learning_starts, batch_size=config.batch_size,
                     buffer_size=max(steps, min(config.buffer_size, total_steps)), n_step=config.n_step,
                     eval_episodes=config.eval_episodes, eval_max_steps=config.eval_max_steps,
                     clip_rewards=config.clip_rewards)
    return HostPlan(loop=loop, block_iterations=iterations, chunk_blocks=1, update_chunk=1, max_policy_lag=steps,
                    random_warmup=False)


def mean_policy_return(spec: HostEnvSpec, functions: HostFunctions, hooks: CoupledHooks, population: Member,
                       episodes: int, seed: int, max_steps: int) -> float:
    """Mean return of the CEM mean actor over ``episodes`` fresh episodes (seeds apart from the members'), each
    cut at ``max_steps`` as the members' evaluation episodes are."""
    member = select_member(without_shared(population), 0).replace(agent=hooks.mean_actor(population.shared))
    return float(np.mean(member_returns(spec, functions, member, episodes, seed + MEAN_ACTOR_SEED, max_steps)))
