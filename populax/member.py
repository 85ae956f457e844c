"""The one declared layout of a population member, and rows of stacked members.

Every backend stores its members as a :class:`Member` (stacked over the
population: every leaf has a leading member axis). Strategies, failure
handling and checkpoints touch members only through the fields below, so
exploit, rollback and re-initialisation are written once for off-policy and
on-policy members and for compiled and host environments:

=============== ==================================================== =====================
field           what it holds                                        exploit copies it?
=============== ==================================================== =====================
``agent``       the algorithm's state (parameters, targets,          all of it, or the
                optimizer states, counters)                          agent's policy fields
``hparams``     traced per-member hyperparameters                    yes (explore edits it)
``obs_stats``   observation normalisation (None when unused)         yes (the policy's input)
``experience``  replay buffer (off-policy) or None (on-policy:       only with copy_buffer
                a rollout never outlives its chunk)
``env``         compiled backend: the member's env states and        never (a copy does not
                running episodes; host backend: None (Gymnasium      replay its source's
                envs live in the collector)                          episodes)
``env_steps``   env steps taken                                      never
``learn_from``  updates run once ``env_steps > learn_from``          only with copy_buffer
                (learning_starts; moved on a resume without          (it goes with the buffer)
                buffers or a rollback that left too few rows)
``key``         the member's RNG key                                 never
``shared``      population-level state WITHOUT a member axis         never (one for all)
                (coupled algorithms: CEM-RL's shared critic and CEM
                distribution, DvD-TD3's shared critic and bandit);
                None for the independent algorithms
=============== ==================================================== =====================

Which agent fields make up the *policy* (for ``--pbt-copy policy``) is
declared by each algorithm (``Algorithm.policy_fields``), never guessed.
The edits themselves (exploit copies, rollback, re-initialisation, freeze)
are :mod:`populax.edits`, written over this layout.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from populax.agents.base import all_finite


@struct.dataclass
class EnvSlots:
    """A member's E environments inside a compiled chunk (JAX environments only)."""

    state: Any
    """States of the member's E environments."""
    obs: jax.Array
    """Current observations of the E environments."""
    episode_return: jax.Array
    """Return so far of each environment's running episode."""
    last_episode_return: jax.Array
    """Return of each environment's most recently finished episode (NaN before one)."""


@struct.dataclass
class Member:
    """Everything one member carries from chunk to chunk (see the module docstring)."""

    agent: Any
    """The algorithm's state."""
    hparams: Any
    """This member's traced hyperparameters."""
    obs_stats: Any
    """Running observation statistics the policy normalises with, or None."""
    experience: Any
    """Replay buffer (off-policy algorithms) or None (on-policy)."""
    env: Any
    """``EnvSlots`` on the compiled backend, None on the host backend."""
    env_steps: jax.Array
    """Env steps this member has taken, summed over its environments."""
    learn_from: jax.Array
    """Gradient updates run only once ``env_steps`` exceeds this (learning_starts, or a refill point)."""
    key: jax.Array
    """The member's RNG key (exploration, minibatches)."""
    shared: Any = None
    """Population-level state of a coupled algorithm (no member axis; see the module docstring), or None."""


@struct.dataclass
class Cohorts:
    """A population whose members differ in static settings (issue 25: ``populax.cohorts``): one stacked
    :class:`Member` block per cohort, as checkpoints and a run's result hold it (one stack cannot: the
    blocks' arrays have different shapes)."""

    blocks: dict[str, Member]
    """Cohort label -> its members, stacked in member order (a cohort without members is absent)."""
    assignment: Any
    """int [N]: each member's cohort, an index into ``labels``."""
    labels: tuple[str, ...] = struct.field(pytree_node=False, default=())
    """Cohort index -> label (every cohort of the run, with or without members)."""

    def members(self, label: str) -> np.ndarray:
        """Member indices of cohort ``label``, in the order of its block's rows."""
        return np.flatnonzero(np.asarray(self.assignment) == self.labels.index(label))

    def locate(self, member: int) -> tuple[str, int]:
        """(cohort label, row in its block) of ``member``."""
        label = self.labels[int(np.asarray(self.assignment)[member])]
        return label, int(np.searchsorted(self.members(label), member))

    def in_member_order(self, part: Any) -> Any:
        """``part(block)`` of every block, stacked in member order (a pytree with a leading axis of N)."""
        order = np.concatenate([self.members(label) for label in self.blocks])
        stacked = concatenate_rows([part(block) for block in self.blocks.values()])
        return jax.tree.map(lambda x: x[np.argsort(order)], stacked)

    @property
    def env_steps(self) -> Any:
        """Every member's env steps, in member order."""
        return self.in_member_order(lambda block: block.env_steps)

    @property
    def hparams(self) -> Any:
        """Every member's hyperparameters, in member order (one algorithm: one hyperparameter type)."""
        return self.in_member_order(lambda block: block.hparams)

    @property
    def experience(self) -> Any:
        """The blocks' replay buffers by label (None values for on-policy members)."""
        return {label: block.experience for label, block in self.blocks.items()}


def map_blocks(fn: Any, population: Member | Cohorts) -> Member | Cohorts:
    """``fn`` of a population, or of each cohort's block of a mixed-shape one."""
    if isinstance(population, Cohorts):
        return population.replace(blocks={label: fn(block) for label, block in population.blocks.items()})
    return fn(population)


def concatenate_rows(parts: list[Any]) -> Any:
    """Pytrees with matching structure joined along their leading axis, on the first device: blocks of
    different cohorts may live on different devices (a cohort's program shards its block where it runs
    several members per device), and one concatenation needs its inputs in one place."""
    first = jax.devices()[0]
    return jax.tree.map(lambda *xs: jnp.concatenate([jax.device_put(x, first) for x in xs]), *parts)


def select_members(population: Member | Cohorts, members: Any) -> Member | Cohorts:
    """Members ``members`` (ascending) of a population, as a population of their own: rows of a stack, or of
    a mixed-shape one the rows of each cohort's block and their part of the assignment (a Ray block's share
    of a checkpoint)."""
    members = np.asarray(members, np.int64)
    if not isinstance(population, Cohorts):
        return take_rows(population, members)
    blocks = {}
    for label, block in population.blocks.items():
        own = population.members(label)
        wanted = members[np.isin(members, own)]
        if wanted.size:
            blocks[label] = take_rows(block, np.searchsorted(own, wanted))
    return population.replace(blocks=blocks, assignment=jnp.asarray(np.asarray(population.assignment)[members]))


def join_members(parts: list[Member | Cohorts]) -> Member | Cohorts:
    """Populations of consecutive members joined into one (the inverse of :func:`select_members` over
    consecutive ranges): stacks concatenated; mixed-shape ones per cohort, their assignments end to end."""
    if not isinstance(parts[0], Cohorts):
        return concatenate_rows(parts)
    blocks = {}
    for label in parts[0].labels:
        held = [part.blocks[label] for part in parts if label in part.blocks]
        if held:  # consecutive ranges: each cohort's rows stay in member order
            blocks[label] = concatenate_rows(held)
    assignment = np.concatenate([np.asarray(part.assignment) for part in parts])
    return parts[0].replace(blocks=blocks, assignment=jnp.asarray(assignment))


def member_row(population: Member | Cohorts, member: int) -> Member:
    """One member's state without the member axis (in a mixed-shape population: from its cohort's block), on
    the first device (a block split over several devices leaves a row on one of them, where a plain jit over
    it and another member's row would refuse the mix)."""
    if isinstance(population, Cohorts):
        label, member = population.locate(member)
        population = population.blocks[label]
    return jax.device_put(jax.tree.map(lambda x: x[member], without_shared(population)), jax.devices()[0])


def driver_view(env_steps: Any, hparams: Any) -> Member:
    """What the driver holds of members that live elsewhere (Ray workers, the cohorts of a mixed-shape
    population): step counts and hyperparameters; every state field is None."""
    return Member(agent=None, hparams=hparams, obs_stats=None, experience=None, env=None, env_steps=env_steps,
                  learn_from=None, key=None)


def without_shared(population: Member) -> Member:
    """The member-axis part of the population (what ``jax.vmap`` over members, or selecting one, may see)."""
    return population.replace(shared=None)


def where_members(mask: np.ndarray, new: Any, old: Any) -> Any:
    """Per member: ``new`` where ``mask`` else ``old`` (both stacked pytrees of one structure)."""
    mask = jnp.asarray(mask)

    def pick(a, b):
        return jnp.where(mask.reshape((-1,) + (1,) * (a.ndim - 1)), a, b)

    return jax.tree.map(pick, new, old)


def take_rows(stacked: Any, index: Any) -> Any:
    """Members ``index`` of a stacked pytree."""
    return jax.tree.map(lambda x: x[index], stacked)


def set_rows(stacked: Any, index: Any, rows: Any) -> Any:
    """``stacked`` with members ``index`` replaced by ``rows`` (stacked over ``index``)."""
    return jax.tree.map(lambda all_, new: all_.at[index].set(new), stacked, rows)


@jax.jit
def finite_members(agent: Any) -> jax.Array:
    """Per member: True when every leaf of its agent state is free of NaN and Inf."""
    return jax.vmap(all_finite)(agent)


@jax.jit
def finite_population(population: Member) -> jax.Array:
    """Per member: its agent state is finite, and so is the population's shared state (when there is one)."""
    return finite_members(population.agent) & all_finite(population.shared)


def member_steps(population: Member) -> int:
    """Env steps per member (members advance in lockstep)."""
    return int(np.max(np.asarray(population.env_steps)))


def slowest_member_steps(population: Member) -> int:
    """Env steps of the member that has taken fewest: members advance in lockstep within a chunk, but a stop
    request inside one may come before some cohorts of a mixed-shape population ran theirs."""
    return int(np.min(np.asarray(population.env_steps)))
