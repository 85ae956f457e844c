"""One Ray worker: a block of members and the compiled backend's chunk program over it.

The worker is a plain class; ``populax.backends.cluster`` wraps it with
``ray.remote``. It holds its block whole (agents, replay buffers, env states,
keys) between calls and answers with what the driver needs: the *light*
fields of its members (agent, hyperparameters, observation statistics,
counters, keys) after a chunk, evaluation returns, or the whole block for a
checkpoint. Arrays travel as numpy; typed PRNG keys as :class:`WireKey`.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from populax.runtime.member import Member

HEAVY_FIELDS = ("experience", "env")
"""What stays on the worker between chunks: replay buffers and env states (the bulk of a member)."""


@dataclass
class WireKey:
    """Typed PRNG keys as their raw key data, for the trip between processes (a pytree leaf)."""

    data: np.ndarray


def to_wire(tree: Any) -> Any:
    """Numpy copy of a pytree: arrays become numpy arrays, typed keys :class:`WireKey`."""

    def convert(x: Any) -> Any:
        if jax.dtypes.issubdtype(getattr(x, "dtype", None), jax.dtypes.prng_key):
            return WireKey(np.asarray(jax.random.key_data(x)))
        return np.asarray(x)

    return jax.tree.map(convert, tree)


def from_wire(tree: Any) -> Any:
    """The inverse of :func:`to_wire`: jax arrays and typed keys."""

    def convert(x: Any) -> Any:
        return jax.random.wrap_key_data(jnp.asarray(x.data)) if isinstance(x, WireKey) else jnp.asarray(x)

    return jax.tree.map(convert, tree, is_leaf=lambda x: isinstance(x, WireKey))


def wire_bytes(tree: Any) -> int:
    """Bytes of the arrays in a wire tree (what crosses the network, before Ray's framing)."""
    leaves = jax.tree.leaves(tree, is_leaf=lambda x: isinstance(x, WireKey))
    return int(sum((x.data if isinstance(x, WireKey) else np.asarray(x)).nbytes for x in leaves))


def light(population: Member) -> Member:
    """The members without their replay buffers and env states (what the driver holds)."""
    return population.replace(**dict.fromkeys(HEAVY_FIELDS))


def set_rows(stacked: Any, index: np.ndarray, rows: Any) -> Any:
    """``stacked`` with members ``index`` replaced by ``rows`` (stacked over ``index``)."""
    return jax.tree.map(lambda all_, new: all_.at[index].set(new), stacked, rows)


def take_rows(stacked: Any, index: np.ndarray) -> Any:
    """Members ``index`` of a stacked pytree."""
    return jax.tree.map(lambda x: x[index], stacked)


class BlockWorker:
    """A block of members (global indices ``members``) trained with the compiled backend of ``config``."""

    def __init__(self, config: dict, members: list[int]):
        """``config``: the run's settings (``config_to_dict``); the block runs with executor ``auto``."""
        from populax.agents import get_algorithm
        from populax.backends.compiled import make_compiled_backend
        from populax.envs.host_envs import resolve_env
        from populax.envs.jax_envs import gymnax_ids
        from populax.population import make_executor
        from populax.run.config import build_config

        run_config = build_config([config])
        self.members = np.asarray(members)
        block_config = dataclasses.replace(run_config, pop=len(members), executor="auto")
        env_id = resolve_env(run_config.env, gymnax_ids()).env_id
        self.backend = make_compiled_backend(block_config, get_algorithm(run_config.algo), env_id,
                                             make_executor("auto", len(members)))
        self.block: Member | None = None
        self.previous: Member | None = None

    def pid(self) -> int:
        """This worker's process id (fault tests kill it)."""
        return os.getpid()

    def init_block(self, keys: Any, hparams: Any) -> Member:
        """Initialise the block's members from their keys and hyperparameters; return their light fields."""
        self.block = self.backend.init_population(from_wire(keys), from_wire(hparams))
        self.previous = self.block
        return to_wire(light(self.block))

    def load_block(self, block: Any) -> None:
        """Take whole members (a checkpoint's rows) as the block."""
        self.block = from_wire(block)
        self.previous = self.block

    def advance(self) -> tuple[Member, dict]:
        """One compiled chunk of the block; the light fields and the chunk's metrics."""
        self.previous = self.block  # a failed member's buffers and envs roll back to these
        self.block, metrics = self.backend.advance(self.block, 0)
        return to_wire(light(self.block)), to_wire(metrics)

    def evaluate(self, keys: Any) -> np.ndarray:
        """Evaluation returns of the block; member i's episodes from ``keys[i]``."""
        return self.backend.evaluate_with_keys(self.block, from_wire(keys))

    def rows(self, index: list[int], field: str) -> Any:
        """Field ``field`` of the block's members ``index`` (local), e.g. a copy source's replay buffer."""
        return to_wire(take_rows(getattr(self.block, field), np.asarray(index)))

    def edit(self, index: list[int], light_rows: Member, rollback: list[int], experience: Any = None) -> None:
        """Apply the driver's edits to local members ``index``.

        ``light_rows``: their new light fields (exploit, explore, re-init);
        ``rollback``: members whose buffers and envs go back to before the chunk
        (they failed in it); ``experience``: copied replay buffers for ``index``
        (``--pbt-copy-buffer``), or None.
        """
        index = np.asarray(index)
        block = self.block
        if rollback:
            back = np.asarray(rollback)
            block = block.replace(**{name: set_rows(getattr(block, name), back, take_rows(getattr(self.previous, name), back))
                                     for name in HEAVY_FIELDS})
        rows = from_wire(light_rows)
        block = block.replace(**{name: set_rows(getattr(block, name), index, getattr(rows, name))
                                 for name in ("agent", "hparams", "obs_stats")})
        if experience is not None:
            block = block.replace(experience=set_rows(block.experience, index, from_wire(experience)))
        self.block = block

    def gather(self) -> Member:
        """The whole block (for a checkpoint or the run's result)."""
        return to_wire(self.block)
