"""CEM-RL and DvD-TD3 on host environments: the compiled backend's population steps around the host collector.

The per-member parts (init, acting, inserting blocks, the deterministic
policy) are the host backend's own ``make_functions`` with the coupled
methods' actor as the agent; the population-level parts are the same
``CEMRLSteps`` / ``DvDSteps`` as on gymnax (``backends/compiled/coupled.py``):

* DvD-TD3: ``learn`` runs the owed updates of a block as DvD steps (shared
  critic + joint actor step); at the chunk's end ``finish`` measures the
  diversity and lets the bandit choose the next lambda from the chunk's
  training returns.
* CEM-RL: a chunk is one generation (``generation-steps`` env steps per
  member, default the env's time limit): ``begin`` asks the CEM and runs the
  gradient phase before the collector acts with the new actors (no overlap:
  every step of a generation is acted by its sampled actor); the fitness is
  the return of each member's first episode that ended during the generation
  (host envs are not reset between generations, so with early terminations
  that episode may have begun under the previous actor); ``finish`` tells the
  CEM and the mean actor is evaluated on fresh episodes.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from populax.agents import AgentSpec, Algorithm
from populax.agents.base import Agent
from populax.backends.compiled.coupled import (
    deterministic_act,
    make_cemrl_steps,
    make_dvd_steps,
    noisy_act,
    own_critics,
)
from populax.backends.host.collector import member_returns
from populax.backends.host.member import HostFunctions, HostPlan, make_functions
from populax.coupled.shared_td3 import init_actor, skip_or
from populax.envs.host_envs import HostEnvSpec
from populax.errors import ConfigError
from populax.population import select_member
from populax.run.config import TrainConfig
from populax.runtime.member import Member, without_shared

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


def time_limit(spec: HostEnvSpec) -> int:
    """The environment's episode step limit (one env is made to read it)."""
    env = spec.make()
    try:
        limit = getattr(getattr(env, "spec", None), "max_episode_steps", None)
    finally:
        env.close()
    if not limit:
        raise ConfigError(f"--algo-opt.generation-steps: {spec.name} has no time limit; set the generation length")
    return int(limit)


def make_coupled_host(config: TrainConfig, algorithm: Algorithm, options: Any, spec: HostEnvSpec, plan: HostPlan,
                      executor: Any) -> tuple[HostFunctions, CoupledHooks]:
    """(host functions, chunk hooks) of the coupled ``algorithm`` (``plan`` from ``coupled_plan_config``)."""
    name = algorithm.name
    if config.obs_norm:
        raise ConfigError(f"--obs-norm: {name} does not normalise observations; leave it off")
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
                             mean_actor=jax.jit(steps.mean_actor))
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


def coupled_plan_config(config: TrainConfig, name: str, options: Any, spec: HostEnvSpec) -> TrainConfig:
    """The configuration the host plan is made from: CEM-RL's chunk is one generation."""
    if name != "cemrl":
        return config
    if options.generation_steps < 0:
        raise ConfigError(f"--algo-opt.generation-steps must be >= 0 (got {options.generation_steps})")
    generation = (options.generation_steps or time_limit(spec)) * config.envs_per_member
    return dataclasses.replace(config, eval_every=generation)


def mean_policy_return(spec: HostEnvSpec, functions: HostFunctions, hooks: CoupledHooks, population: Member,
                       episodes: int, seed: int) -> float:
    """Mean return of the CEM mean actor over ``episodes`` fresh episodes (seeds apart from the members')."""
    member = select_member(without_shared(population), 0).replace(agent=hooks.mean_actor(population.shared))
    return float(np.mean(member_returns(spec, functions, member, episodes, seed + MEAN_ACTOR_SEED)))
