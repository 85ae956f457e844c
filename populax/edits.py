"""The edits strategies and failure handling make to members, written once over :mod:`populax.member`'s layout.

A strategy decides on returns and hyperparameters; :class:`MemberEdits` says
what it decided for the members' states, and :func:`apply_edits` applies it
wherever a backend keeps them (the driver's population, a Ray worker's block,
each cohort of a mixed-shape population). Failure handling keeps
:func:`kept_before_chunk` before every chunk and rolls back, re-initialises
or freezes from it.
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from populax.agents.base import all_finite
from populax.buffers import buffer_rewind_to, buffer_size, buffer_without_transitions
from populax.member import Cohorts, Member, map_blocks, set_rows, take_rows, where_members, without_shared

if TYPE_CHECKING:
    from populax.run.config import TrainConfig


def kept_before_chunk(population: Member | Cohorts) -> Member | Cohorts:
    """A copy of what failure handling restores, taken before a chunk that updates the population in place.

    Everything but the replay buffers' transitions: agents, hyperparameters,
    statistics, env states, counters, keys, the shared state, and each
    buffer's write position and size (enough to drop a failed chunk's
    transitions again, ``buffer_rewind_to``). The transitions are most of a
    member's memory: keeping them too would hold every buffer twice.
    """
    def small(members: Member) -> Member:
        experience = members.experience
        return members.replace(experience=None if experience is None else buffer_without_transitions(experience))

    return jax.tree.map(jnp.copy, map_blocks(small, population))


def drop_chunk_transitions(population: Member, kept: Member, members: np.ndarray, refill: int) -> Member:
    """Members ``members`` (a mask) lose the transitions of the last chunk from their buffers.

    What they held before it and the chunk did not overwrite stays
    (``buffer_rewind_to``); where that is fewer than ``refill`` transitions
    (max(batch size, learning_starts)), the member learns again only once its
    buffer has refilled, as after a resume without buffers.
    """
    index = np.flatnonzero(members)
    if population.experience is None or index.size == 0:
        return population
    rows = jnp.asarray(index)
    written = (population.env_steps - kept.env_steps)[rows]
    experience = _rewind_rows(population.experience, rows, jax.tree.map(lambda x: x[rows], kept.experience), written)
    refilled = population.env_steps[rows] + refill - jax.vmap(buffer_size)(experience)[rows]
    learn_from = population.learn_from.at[rows].max(refilled.astype(population.learn_from.dtype))
    return population.replace(experience=experience, learn_from=learn_from)


def refill_point(config: TrainConfig, population: Member | Cohorts) -> Member | Cohorts:
    """After a resume without replay buffers (the driver's, or a Ray block reloaded from such a checkpoint): no
    updates until each buffer holds max(batch, learning_starts) transitions (on-policy members are unchanged)."""
    def refill(members: Member) -> Member:
        if members.experience is None:
            return members
        steps = jnp.asarray(members.env_steps)
        return members.replace(learn_from=steps + max(config.batch_size, config.learning_starts))

    return map_blocks(refill, population)


@partial(jax.jit, donate_argnums=0)
def _rewind_rows(experience: Any, rows: jax.Array, kept: Any, written: jax.Array) -> Any:
    rewound = jax.vmap(buffer_rewind_to)(jax.tree.map(lambda x: x[rows], experience), kept, written)
    return jax.tree.map(lambda x, new: x.at[rows].set(new), experience, rewound)


def rollback_data(population: Member, kept: Member, failed: np.ndarray, refill: int) -> Member:
    """Failed members get back their environments from before the chunk and lose the chunk's transitions.

    Once a member's parameters are NaN its actions are NaN: the transitions
    and environment states of the failing chunk are poisoned too, and a fresh
    or copied agent that learned from them would fail again. ``kept`` is
    :func:`kept_before_chunk` of the population before the chunk; the buffers
    themselves were updated in place, so the chunk's transitions are dropped
    (:func:`drop_chunk_transitions`) rather than the old buffer restored.
    """
    env = where_members(failed, kept.env, population.env)
    # A coupled algorithm's shared state (critic, distribution) goes back too if the failure reached it.
    shared = population.shared if bool(all_finite(population.shared)) else kept.shared
    return drop_chunk_transitions(population.replace(env=env, shared=shared), kept, failed, refill)


def reinitialise(population: Member, fresh_agents: Any, members: np.ndarray) -> Member:
    """Members ``members`` get the agent states ``fresh_agents`` (stacked over those members only).

    Experience, environments, counters and hyperparameters are kept: the
    transitions are still valid data, and the member keeps its place in the run.
    """
    index = jnp.asarray(members, jnp.int32)
    agent = jax.tree.map(lambda all_, fresh: all_.at[index].set(fresh), population.agent, fresh_agents)
    return population.replace(agent=agent)


def freeze(population: Member, kept: Member, frozen: np.ndarray, refill: int,
           rewind: np.ndarray | None = None) -> Member:
    """Frozen members are put back to their state before the chunk (their last finite one); steps still count.

    ``kept``: :func:`kept_before_chunk` of the population before the chunk.
    Their buffers lose the chunk's transitions (``rewind``: the members whose
    buffers still hold them, default all frozen ones; a member rolled back
    by :func:`rollback_data` this chunk has lost them already).
    """
    def small(members: Member) -> Member:
        return without_shared(members).replace(experience=None)

    back = where_members(frozen, small(kept), small(population))
    back = back.replace(env_steps=population.env_steps, shared=population.shared, experience=population.experience)
    return drop_chunk_transitions(back, kept, frozen if rewind is None else rewind, refill)


@struct.dataclass
class MemberEdits:
    """What a strategy decided for the members' states after one chunk, in member indices.

    The strategy decides on returns and hyperparameters (which the driver
    holds); the states it edits live wherever the backend keeps them: the
    driver's population (compiled, host) or a Ray worker's block, each
    applying :func:`apply_edits` to its own members. Applied in this order:
    rollback, re-initialisation, copies, hyperparameters, freeze.
    """

    hparams: Any
    """Every member's hyperparameters after the edits (copied from sources, explored)."""
    rollback: np.ndarray
    """bool [N]: members that failed in the chunk; their experience and envs go back to before it."""
    reinit: np.ndarray
    """int [R]: members whose agents are re-initialised (fresh networks and optimizer states)."""
    reinit_keys: Any
    """[R] keys of the fresh agents, or None when R = 0."""
    targets: np.ndarray
    """int [C]: members that take a copy of another member's state (PBT exploit)."""
    sources: np.ndarray
    """int [C]: the member each target copies."""
    whole: np.ndarray
    """bool [C]: the copy takes the whole agent (a failed target), not only ``policy_fields``."""
    frozen: np.ndarray
    """bool [N]: members put back to their state before the chunk (independent, --on-failure freeze)."""
    cohorts: Any = None
    """int [N]: each member's cohort after the edits, in a mixed-shape population (``populax.cohorts``; a copy
    from another cohort moves its target there), else None."""
    policy_fields: tuple[str, ...] | None = struct.field(pytree_node=False, default=None)
    """Agent fields a policy-only copy takes (None: every copy takes the whole agent)."""
    fresh_fields: tuple[str, ...] = struct.field(pytree_node=False, default=())
    """Agent fields a copy's target takes fresh (a new member's) instead of from its source: the optimizer
    states it copied, under ``--pbt-reset-optimizer``."""
    copy_experience: bool = struct.field(pytree_node=False, default=False)
    """Copies take their source's replay buffer too (``--pbt-copy-buffer``)."""
    refill: int = struct.field(pytree_node=False, default=0)
    """Transitions a rolled-back member's buffer must hold before it learns again (max(batch, learning_starts))."""

    @property
    def copy_fields(self) -> tuple[str, ...] | None:
        """Agent fields the copies need from their sources: all (None) when any copy takes the whole agent."""
        return None if bool(np.any(self.whole)) else self.policy_fields

    def edited(self) -> np.ndarray:
        """bool [N]: members whose state or hyperparameters the edits change."""
        mask = np.asarray(self.rollback, bool) | np.asarray(self.frozen, bool)
        mask[np.asarray(self.reinit, int)] = True
        mask[np.asarray(self.targets, int)] = True
        return mask


def no_edits(hparams: Any, pop: int, policy_fields: tuple[str, ...] | None = None,
             copy_experience: bool = False, refill: int = 0) -> MemberEdits:
    """Edits that change nothing: every member keeps its state and ``hparams``."""
    none = np.zeros(0, np.int64)
    return MemberEdits(hparams=hparams, rollback=np.zeros(pop, bool), reinit=none, reinit_keys=None, targets=none,
                       sources=none, whole=np.zeros(0, bool), frozen=np.zeros(pop, bool),
                       policy_fields=policy_fields, copy_experience=copy_experience, refill=refill)


def agent_part(agent: Any, fields: tuple[str, ...] | None) -> Any:
    """The agent state with only ``fields`` (the others None), or whole when ``fields`` is None."""
    if fields is None:
        return agent
    return agent.replace(**{f.name: None for f in dataclasses.fields(agent) if f.name not in fields})


def copy_sources(population: Member, index: Any, fields: tuple[str, ...] | None, experience: bool) -> Member:
    """What a copy takes from members ``index``: agent (or its ``fields``), observation statistics,
    and with ``experience`` the replay buffer and the step it may learn from (the buffer's refill point);
    nothing else (a Member whose other fields are None)."""
    return Member(agent=agent_part(take_rows(population.agent, index), fields),
                  hparams=None, obs_stats=take_rows(population.obs_stats, index),
                  experience=take_rows(population.experience, index) if experience else None,
                  env=None, env_steps=None, key=None,
                  learn_from=take_rows(population.learn_from, index) if experience else None)


def copy_rows(population: Member, edits: MemberEdits, rows: Member) -> Member:
    """Targets take their sources' ``rows`` (from :func:`copy_sources`, stacked over the copies): the whole
    agent or its policy fields, observation statistics, and with ``copy_experience`` the buffer and its
    ``learn_from`` (members step in lockstep, so the source's refill point is the copied buffer's: a failed
    target whose rollback moved its own ``learn_from`` does not wait to refill a buffer it no longer has)."""
    targets, whole = jnp.asarray(edits.targets), np.asarray(edits.whole, bool)
    agent = population.agent
    if whole.any():
        agent = set_rows(agent, targets[whole], take_rows(rows.agent, np.flatnonzero(whole)))
    if (~whole).any():
        part = np.flatnonzero(~whole)
        agent = agent.replace(**{name: set_rows(getattr(agent, name), targets[~whole],
                                                take_rows(getattr(rows.agent, name), part))
                                 for name in edits.policy_fields})
    experience, learn_from = population.experience, population.learn_from
    if edits.copy_experience and experience is not None:  # only the copied rows, in the donated buffers
        experience = _set_rows_in_place(experience, targets, rows.experience)
        learn_from = set_rows(learn_from, targets, rows.learn_from)
    return population.replace(agent=agent, obs_stats=set_rows(population.obs_stats, targets, rows.obs_stats),
                              experience=experience, learn_from=learn_from)


def fresh_rows(population: Member, edits: MemberEdits, init_agents: Any) -> Member:
    """The copies' targets with ``edits.fresh_fields`` as a new member's (optimizer states: Adam's moments at 0
    and its step count at 0, whatever the parameters; the new parameters ``init_agents`` draws for it, from a
    fixed key, are thrown away)."""
    targets = jnp.asarray(edits.targets)
    keys = jax.random.split(jax.random.key(0), len(edits.targets))
    fresh = init_agents(keys, take_rows(edits.hparams, targets))
    agent = population.agent.replace(**{name: set_rows(getattr(population.agent, name), targets, getattr(fresh, name))
                                        for name in edits.fresh_fields})
    return population.replace(agent=agent)


@partial(jax.jit, donate_argnums=0)
def _set_rows_in_place(stacked: Any, index: jax.Array, rows: Any) -> Any:
    return set_rows(stacked, index, rows)


def apply_edits(population: Member, kept: Member, edits: MemberEdits, init_agents: Any,
                rows: Member | None = None) -> Member:
    """The members after a strategy's ``edits`` (see :class:`MemberEdits`), written once for every backend.

    ``kept``: :func:`kept_before_chunk` of the members before the chunk (rollback, freeze);
    ``init_agents(keys, hparams)``: fresh agent states (re-initialisation); ``rows``: the copies' source
    states when they live elsewhere (a Ray block copying from another block), else taken from ``population``.
    """
    failed = np.asarray(edits.rollback, bool)
    if failed.any():
        population = rollback_data(population, kept, failed, edits.refill)
    if np.size(edits.reinit):
        fresh = init_agents(edits.reinit_keys, take_rows(edits.hparams, jnp.asarray(edits.reinit)))
        population = reinitialise(population, fresh, np.asarray(edits.reinit))
    if np.size(edits.targets):
        if rows is None:
            rows = copy_sources(population, jnp.asarray(edits.sources), edits.copy_fields, edits.copy_experience)
        population = copy_rows(population, edits, rows)
        if edits.fresh_fields:
            population = fresh_rows(population, edits, init_agents)
    population = population.replace(hparams=edits.hparams)
    frozen = np.asarray(edits.frozen, bool)
    if frozen.any():  # a member rolled back this chunk has lost the chunk's transitions already
        population = freeze(population, kept, frozen, edits.refill, rewind=frozen & ~failed)
    return population
