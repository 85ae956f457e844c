"""``independent``: seeds and sweeps, members never interact.

Sweeps need nothing here: the per-member values (fixed lists, grids given as
lists, random draws from distributions) are drawn by ``populax.hparams`` from
the run's seed. What this module adds is what happens to a member that fails
(NaN/Inf parameters or losses): it is re-initialised (fresh networks and
optimizer states, same hyperparameters, replay buffer kept) or frozen (its
last finite state is kept and no longer changes), and the run goes on.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

ON_FAILURE = ("reinit", "freeze")


def where_members(mask: np.ndarray, new: Any, old: Any) -> Any:
    """Per member: ``new`` where ``mask`` else ``old`` (both stacked pytrees)."""
    mask = jnp.asarray(mask)

    def pick(a, b):
        return jnp.where(mask.reshape((-1,) + (1,) * (a.ndim - 1)), a, b)

    return jax.tree.map(pick, new, old)


def rollback_data(population: Any, previous: Any, failed: np.ndarray) -> Any:
    """Failed members get back their pre-chunk environments and replay buffer.

    Once a member's parameters are NaN, its actions are NaN: the transitions
    and environment states of the failing chunk are poisoned too, and a fresh
    or copied agent that learned from them would fail again.
    """
    fields = ("buffer", "env_state", "obs", "episode_return", "last_episode_return")
    restored = where_members(failed, {f: getattr(previous, f) for f in fields}, {f: getattr(population, f) for f in fields})
    return population.replace(**restored)


def reinitialise(population: Any, fresh_agents: Any, members: np.ndarray) -> Any:
    """Members ``members`` get the agent states ``fresh_agents`` (stacked over all members).

    Environments, replay buffer, counters and hyperparameters are kept: the
    transitions are still valid data, and the member keeps its place in the run.
    """
    mask = np.zeros(len(np.asarray(population.env_steps)), bool)
    mask[members] = True
    return population.replace(agent=where_members(mask, fresh_agents, population.agent))


def freeze(population: Any, previous: Any, frozen: np.ndarray) -> Any:
    """Frozen members are put back to their state before the chunk (their last finite one)."""
    return where_members(frozen, previous, population)
