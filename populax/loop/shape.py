"""The static shape of one member's loop, the same on both backends, and the loop facts an algorithm is built with.

A member's loop is phases: ``iterations_per_phase`` env iterations (each steps the member's E envs once), then
``updates_per_phase`` learning steps (off-policy: one sampled batch each; on-policy: one whole rollout, so 1).
The compiled backend scans ``phases_per_chunk`` phases per compiled chunk; the host backend collects the same
phases in blocks from a Gymnasium vector env. Both derive the phase from :func:`update_phase`, count the
updates of a run with :meth:`LoopShape.owed_updates` and build the algorithm with :func:`agent_spec`, so one
config trains the same way on both.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np

from populax.agents import AgentSpec, Algorithm
from populax.agents.base import ActionSpec
from populax.errors import ConfigError
from populax.hparams import zero_hparams
from populax.run.config import TrainConfig

MAX_PHASE_ITERATIONS = 100
"""Longest run of env iterations between two update bursts that ``update_phase`` accepts."""


class LoopShape(NamedTuple):
    """Static shape of one member's loop (changing a field changes the compiled program)."""

    envs_per_member: int
    iterations_per_phase: int
    """Env iterations (each steps all E envs once) per phase: off-policy, between update bursts; on-policy, the
    rollout length."""
    updates_per_phase: int
    """Learning steps per phase: sampled batches (off-policy); 1 (on-policy: the rollout's epochs)."""
    phases_per_chunk: int
    """Phases per chunk (one evaluation period)."""
    learning_starts: int = 0
    """Off-policy: env steps per member before the first update (acted uniformly at random)."""
    batch_size: int = 0
    """Off-policy: transitions per sampled batch."""
    buffer_size: int = 0
    """Off-policy: replay capacity per member (0: no replay, on-policy)."""
    n_step: int = 1
    """Off-policy: env steps per TD target (n-step returns, made when sampling: ``buffers.n_step_fold``)."""
    eval_episodes: int = 10
    """Fresh episodes per member and evaluation."""
    eval_max_steps: int = 0
    """Most steps per evaluation episode (0: the environment's own limit)."""
    clip_rewards: bool = False
    """The learner sees each reward as its sign (``--clip-rewards``: ``learning_rewards``); episode returns and
    evaluations keep the environment's."""

    @property
    def on_policy(self) -> bool:
        """True when the loop learns from rollouts (no replay)."""
        return self.buffer_size == 0

    @property
    def steps_per_phase(self) -> int:
        """Env steps a member takes per phase."""
        return self.iterations_per_phase * self.envs_per_member

    @property
    def chunk_steps(self) -> int:
        """Env steps a member takes per chunk."""
        return self.phases_per_chunk * self.steps_per_phase

    @property
    def updates_per_chunk(self) -> int:
        """Learning steps a member does per chunk (once learning has started)."""
        return self.phases_per_chunk * self.updates_per_phase

    def owed_updates(self, before: int, after: int, learn_from: int) -> int:
        """Learning steps per member owed for the env steps from ``before`` to ``after``: every whole phase that
        ends past ``learn_from`` owes ``updates_per_phase`` (the compiled chunk's rule; the host learner counts
        with it, so both backends do the same number)."""
        def phases(steps: int) -> int:
            return max(0, steps // self.steps_per_phase - learn_from // self.steps_per_phase)

        return self.updates_per_phase * (phases(after) - phases(before))


def learning_rewards(reward: Any, shape: LoopShape) -> Any:
    """The rewards a member learns from: the environment's, or their sign with ``shape.clip_rewards`` (numpy on
    the host, jax in the compiled chunk; the training returns reported are summed from the environment's)."""
    if not shape.clip_rewards:
        return reward
    return np.sign(reward) if isinstance(reward, np.ndarray) else jnp.sign(reward)


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


def offpolicy_shape(
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
    clip_rewards: bool = False,
) -> LoopShape:
    """The off-policy loop of the compiled chunk: an update-to-data ratio and an eval period as whole scan lengths
    (see ``update_phase``); the buffer rounded to whole iterations so batched inserts never straddle its end."""
    iterations, updates = update_phase(envs_per_member, updates_per_step)
    return LoopShape(
        envs_per_member=envs_per_member,
        iterations_per_phase=iterations,
        updates_per_phase=updates,
        phases_per_chunk=max(1, math.ceil(eval_every / (iterations * envs_per_member))),
        learning_starts=learning_starts,
        batch_size=batch_size,
        buffer_size=max(envs_per_member, buffer_size - buffer_size % envs_per_member),
        n_step=n_step,
        eval_episodes=eval_episodes,
        eval_max_steps=eval_max_steps,
        clip_rewards=clip_rewards,
    )


def onpolicy_shape(*, envs_per_member: int, rollout_len: int, eval_every: int, eval_episodes: int,
                           eval_max_steps: int = 0, clip_rewards: bool = False) -> LoopShape:
    """The on-policy loop: a phase is one rollout of ``rollout_len`` iterations and one learning step on it;
    whole rollouts per evaluation period (rounded up)."""
    per_rollout = rollout_len * envs_per_member
    return LoopShape(envs_per_member=envs_per_member, iterations_per_phase=rollout_len, updates_per_phase=1,
                     phases_per_chunk=max(1, math.ceil(eval_every / per_rollout)), eval_episodes=eval_episodes,
                     eval_max_steps=eval_max_steps, clip_rewards=clip_rewards)


def agent_spec(algorithm: Algorithm, config: TrainConfig, obs_shape: tuple[int, ...], action: ActionSpec,
               options: Any, shape: LoopShape, total_steps: int) -> AgentSpec:
    """What ``algorithm.make`` gets for a run of ``total_steps`` env steps per member (whole chunks) in loops of
    ``shape``: the gradient steps of the whole run (learning-rate annealing) and, off-policy, env steps per
    update (DQN's epsilon clock) and the traced hyperparameters that are 0 all run."""
    hidden = tuple(config.hidden)
    if shape.on_policy:
        rollouts = total_steps // shape.steps_per_phase
        # PPO's options: epochs x minibatches gradient steps per rollout (an algorithm without them: 1).
        per_rollout = getattr(options, "epochs", 1) * getattr(options, "minibatches", 1)
        return AgentSpec(obs_shape, action, hidden, options, total_updates=rollouts * per_rollout)
    return AgentSpec(obs_shape, action, hidden, options,
                     steps_per_update=shape.steps_per_phase / shape.updates_per_phase,
                     total_updates=max(1, shape.owed_updates(0, total_steps, config.learning_starts)),
                     zero_hparams=zero_hparams(algorithm.hparams, config.hp))
