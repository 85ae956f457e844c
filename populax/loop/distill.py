"""Distillation of one member into a network of another shape (``--pbt-cross-cohort distill``, BG-PBT).

A member that moves to another cohort of a mixed-shape population (``populax.cohorts``) cannot take its
source's weights when the widths differ; instead a fresh network of the new shape is taught to answer like
the source on the source's replay states, for a bounded number of steps. Read top to bottom::

    repeat steps times:                                  # lax.scan
        batch    = uniform sample of the teacher's replay buffer (its states and stored actions),
                   standardised with the teacher's statistics under --obs-norm (the student inherits them)
        targets  = teacher_agent.distill.outputs(teacher, batch)   # e.g. TD3: actions, both critics' Q
        student  = student_agent.distill.imitate(student, batch, targets)   # one Adam step on the MSE

The teacher's outputs come from the teacher's own agent functions (its networks have the teacher's widths),
the step from the student's. The student then carries the teacher's update counter (policy delay, target
syncs, learning-rate annealing continue where the source's are).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from populax.agents.base import Agent
from populax.buffers import buffer_sample
from populax.loop.offpolicy import PrepareObs, prepare_batch

Distill = Callable[[Any, Any, Any, Any, jax.Array], tuple[Any, jax.Array]]


def make_distill(student_agent: Agent, teacher_agent: Agent, steps: int, batch_size: int,
                 prepare_obs: PrepareObs | None = None) -> Distill:
    """``distill(student, teacher, replay, obs_stats, key) -> (student, losses [steps])`` for ONE member (not
    jitted). ``prepare_obs``: as in the off-policy loop; under ``--obs-norm`` the replay holds raw
    observations and the teacher acts on them standardised with its statistics ``obs_stats``, which the
    student inherits, so both see the batch standardised with them."""

    def distill(student: Any, teacher: Any, replay: Any, obs_stats: Any, key: jax.Array) -> tuple[Any, jax.Array]:
        def step(state: Any, step_key: jax.Array) -> tuple[Any, jax.Array]:
            batch = prepare_batch(buffer_sample(replay, step_key, batch_size), prepare_obs, obs_stats)
            targets = jax.lax.stop_gradient(teacher_agent.distill.outputs(teacher, batch))
            return student_agent.distill.imitate(state, batch, targets)

        student, losses = jax.lax.scan(step, student, jax.random.split(key, steps))
        if hasattr(student, "updates") and hasattr(teacher, "updates"):
            student = student.replace(updates=jnp.asarray(teacher.updates, jnp.asarray(student.updates).dtype))
        return student, losses

    return distill


def output_distance(agent_a: Agent, state_a: Any, agent_b: Agent, state_b: Any, batch: Any) -> jax.Array:
    """Mean squared difference of two members' distillation outputs on ``batch`` (tests, the benchmark)."""
    a, b = agent_a.distill.outputs(state_a, batch), agent_b.distill.outputs(state_b, batch)
    return sum(jnp.mean((x - y) ** 2) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
