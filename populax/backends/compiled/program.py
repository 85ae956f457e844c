"""Pick and build the member program of an algorithm: off-policy (replay) or on-policy (rollouts)."""

from __future__ import annotations

import math
from typing import Any

from populax.agents import AgentSpec, Algorithm
from populax.agents.options import resolve_options
from populax.backends.compiled.offpolicy import MemberProgram, make_offpolicy_program, make_schedule
from populax.backends.compiled.onpolicy import make_onpolicy_program, make_onpolicy_schedule
from populax.envs.jax_envs import JaxEnv
from populax.hparams import zero_hparams
from populax.run.config import TrainConfig


def build_program(algorithm: Algorithm, config: TrainConfig, env: JaxEnv) -> tuple[Any, MemberProgram]:
    """(schedule, member program) for ``algorithm`` as ``config`` says; ConfigError on bad options."""
    options = resolve_options(algorithm.options, config.algo_options, algorithm.name)
    if algorithm.coupled:  # one program over the whole population (shared critic)
        from populax.backends.compiled.coupled import build_coupled_program

        return build_coupled_program(algorithm, config, env, options)
    hidden = tuple(config.hidden)
    if algorithm.on_policy:
        schedule = make_onpolicy_schedule(
            envs_per_member=config.envs_per_member,
            rollout_len=options.rollout_len,
            eval_every=config.eval_every,
            eval_episodes=config.eval_episodes,
            eval_max_steps=config.eval_max_steps,
        )
        rollouts = math.ceil(config.total_steps / schedule.chunk_steps) * schedule.phases_per_chunk
        spec = AgentSpec(env.obs_shape, env.action, hidden, options,
                         total_updates=rollouts * options.epochs * options.minibatches)
        return schedule, make_onpolicy_program(algorithm.make(spec), env, schedule)
    schedule = make_schedule(
        envs_per_member=config.envs_per_member,
        updates_per_step=config.updates_per_step,
        eval_every=config.eval_every,
        learning_starts=config.learning_starts,
        batch_size=config.batch_size,
        buffer_size=min(config.buffer_size, config.total_steps),
        eval_episodes=config.eval_episodes,
        eval_max_steps=config.eval_max_steps,
        n_step=config.n_step,
    )
    steps_per_update = schedule.steps_per_phase / schedule.updates_per_phase
    total_steps = math.ceil(config.total_steps / schedule.chunk_steps) * schedule.chunk_steps
    spec = AgentSpec(env.obs_shape, env.action, hidden, options, steps_per_update=steps_per_update,
                     total_updates=max(1, round((total_steps - config.learning_starts) / steps_per_update)),
                     zero_hparams=zero_hparams(algorithm.hparams, config.hp, config.pop))
    return schedule, make_offpolicy_program(algorithm.make(spec), env, schedule)
