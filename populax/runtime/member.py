"""The one declared layout of a population member, and the edits strategies make to it.

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
``learn_from``  updates run once ``env_steps > learn_from``          never
                (learning_starts; moved on a resume without buffers)
``key``         the member's RNG key                                 never
``shared``      population-level state WITHOUT a member axis         never (one for all)
                (coupled algorithms: CEM-RL's shared critic and CEM
                distribution, DvD-TD3's shared critic and bandit);
                None for the independent algorithms
=============== ==================================================== =====================

Which agent fields make up the *policy* (for ``--pbt-copy policy``) is
declared by each algorithm (``Algorithm.policy_fields``), never guessed.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from populax.agents.base import all_finite
from populax.population import copy_members


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


def without_shared(population: Member) -> Member:
    """The member-axis part of the population (what ``jax.vmap`` over members, or selecting one, may see)."""
    return population.replace(shared=None)


def where_members(mask: np.ndarray, new: Any, old: Any) -> Any:
    """Per member: ``new`` where ``mask`` else ``old`` (both stacked pytrees of one structure)."""
    mask = jnp.asarray(mask)

    def pick(a, b):
        return jnp.where(mask.reshape((-1,) + (1,) * (a.ndim - 1)), a, b)

    return jax.tree.map(pick, new, old)


def copy_agent(agent: Any, sources: jax.Array, fields: tuple[str, ...] | None) -> Any:
    """The agent states with member i taken from ``sources[i]``: all fields, or only ``fields``."""
    if fields is None:
        return copy_members(agent, sources)
    return agent.replace(**{name: copy_members(getattr(agent, name), sources) for name in fields})


def exploit(population: Member, sources: jax.Array, policy_fields: tuple[str, ...] | None,
            copy_experience: bool = False) -> Member:
    """PBT's exploit: member i takes member ``sources[i]``'s agent (or its policy fields),
    hyperparameters and observation statistics, and with ``copy_experience`` its replay
    buffer. Env states, counters and keys stay the member's own."""
    return population.replace(
        agent=copy_agent(population.agent, sources, policy_fields),
        hparams=copy_members(population.hparams, sources),
        obs_stats=copy_members(population.obs_stats, sources),
        experience=copy_members(population.experience, sources) if copy_experience else population.experience,
    )


def rollback_data(population: Member, previous: Member, failed: np.ndarray) -> Member:
    """Failed members get back their experience and environments from before the chunk.

    Once a member's parameters are NaN its actions are NaN: the transitions
    and environment states of the failing chunk are poisoned too, and a fresh
    or copied agent that learned from them would fail again.
    """
    restored = where_members(failed, (previous.experience, previous.env), (population.experience, population.env))
    # A coupled algorithm's shared state (critic, distribution) goes back too if the failure reached it.
    shared = population.shared if bool(all_finite(population.shared)) else previous.shared
    return population.replace(experience=restored[0], env=restored[1], shared=shared)


def reinitialise(population: Member, fresh_agents: Any, members: np.ndarray) -> Member:
    """Members ``members`` get the agent states ``fresh_agents`` (stacked over those members only).

    Experience, environments, counters and hyperparameters are kept: the
    transitions are still valid data, and the member keeps its place in the run.
    """
    index = jnp.asarray(members, jnp.int32)
    agent = jax.tree.map(lambda all_, fresh: all_.at[index].set(fresh), population.agent, fresh_agents)
    return population.replace(agent=agent)


def freeze(population: Member, previous: Member, frozen: np.ndarray) -> Member:
    """Frozen members are put back to their state before the chunk (their last finite one); steps still count."""
    kept = where_members(frozen, without_shared(previous), without_shared(population))
    return kept.replace(env_steps=population.env_steps, shared=population.shared)


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
    policy_fields: tuple[str, ...] | None = struct.field(pytree_node=False, default=None)
    """Agent fields a policy-only copy takes (None: every copy takes the whole agent)."""
    copy_experience: bool = struct.field(pytree_node=False, default=False)
    """Copies take their source's replay buffer too (``--pbt-copy-buffer``)."""

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
             copy_experience: bool = False) -> MemberEdits:
    """Edits that change nothing: every member keeps its state and ``hparams``."""
    none = np.zeros(0, np.int64)
    return MemberEdits(hparams=hparams, rollback=np.zeros(pop, bool), reinit=none, reinit_keys=None, targets=none,
                       sources=none, whole=np.zeros(0, bool), frozen=np.zeros(pop, bool),
                       policy_fields=policy_fields, copy_experience=copy_experience)


def take_rows(stacked: Any, index: Any) -> Any:
    """Members ``index`` of a stacked pytree."""
    return jax.tree.map(lambda x: x[index], stacked)


def set_rows(stacked: Any, index: Any, rows: Any) -> Any:
    """``stacked`` with members ``index`` replaced by ``rows`` (stacked over ``index``)."""
    return jax.tree.map(lambda all_, new: all_.at[index].set(new), stacked, rows)


def agent_part(agent: Any, fields: tuple[str, ...] | None) -> Any:
    """The agent state with only ``fields`` (the others None), or whole when ``fields`` is None."""
    if fields is None:
        return agent
    return agent.replace(**{f.name: None for f in dataclasses.fields(agent) if f.name not in fields})


def copy_sources(population: Member, index: Any, fields: tuple[str, ...] | None, experience: bool) -> Member:
    """What a copy takes from members ``index``: agent (or its ``fields``), observation statistics,
    and with ``experience`` the replay buffer; nothing else (a Member whose other fields are None)."""
    return Member(agent=agent_part(take_rows(population.agent, index), fields),
                  hparams=None, obs_stats=take_rows(population.obs_stats, index),
                  experience=take_rows(population.experience, index) if experience else None,
                  env=None, env_steps=None, learn_from=None, key=None)


def copy_rows(population: Member, edits: MemberEdits, rows: Member) -> Member:
    """Targets take their sources' ``rows`` (from :func:`copy_sources`, stacked over the copies): the whole
    agent or its policy fields, observation statistics, and the buffer with ``copy_experience``."""
    targets, whole = jnp.asarray(edits.targets), np.asarray(edits.whole, bool)
    agent = population.agent
    if whole.any():
        agent = set_rows(agent, targets[whole], take_rows(rows.agent, np.flatnonzero(whole)))
    if (~whole).any():
        part = np.flatnonzero(~whole)
        agent = agent.replace(**{name: set_rows(getattr(agent, name), targets[~whole],
                                                take_rows(getattr(rows.agent, name), part))
                                 for name in edits.policy_fields})
    experience = population.experience
    if edits.copy_experience:
        experience = set_rows(experience, targets, rows.experience)
    return population.replace(agent=agent, obs_stats=set_rows(population.obs_stats, targets, rows.obs_stats),
                              experience=experience)


def apply_edits(population: Member, previous: Member, edits: MemberEdits, init_agents: Any,
                rows: Member | None = None) -> Member:
    """The members after a strategy's ``edits`` (see :class:`MemberEdits`), written once for every backend.

    ``previous``: the members before the chunk (rollback, freeze); ``init_agents(keys, hparams)``: fresh
    agent states (re-initialisation); ``rows``: the copies' source states when they live elsewhere (a Ray
    block copying from another block), else taken from ``population``.
    """
    if np.any(edits.rollback):
        population = rollback_data(population, previous, np.asarray(edits.rollback, bool))
    if np.size(edits.reinit):
        fresh = init_agents(edits.reinit_keys, take_rows(edits.hparams, jnp.asarray(edits.reinit)))
        population = reinitialise(population, fresh, np.asarray(edits.reinit))
    if np.size(edits.targets):
        if rows is None:
            rows = copy_sources(population, jnp.asarray(edits.sources), edits.copy_fields, edits.copy_experience)
        population = copy_rows(population, edits, rows)
    population = population.replace(hparams=edits.hparams)
    if np.any(edits.frozen):
        population = freeze(population, previous, np.asarray(edits.frozen, bool))
    return population


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
