"""One Ray worker: a block of members and its backend (compiled, or host for Gymnasium/ALE) over it.

The worker is a plain class; ``populax.backends.cluster`` wraps it with
``ray.remote``. It holds its block whole (agents, replay buffers, env states,
keys, and ``kept_before_chunk`` of it: the chunk updates the block in place) between calls and answers with
what the driver needs: step counts, hyperparameters and metrics after a
chunk, evaluation returns; member states leave it only as copy sources for
other blocks (``export``, straight to the other worker) and for checkpoints
(``gather``). The strategy's edits are applied here, with the same function
as on one machine (``edits.apply_edits``). Arrays travel as numpy;
typed PRNG keys as :class:`WireKey`.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from populax.edits import MemberEdits, copy_sources, kept_before_chunk
from populax.errors import EnvironmentWarning
from populax.member import Member, concatenate_rows, take_rows


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


class BlockWorker:
    """A block of members (global indices ``members``) trained with the compiled backend of ``config``."""

    def __init__(self, config: dict, members: list[int], space: Any = None, assignment: Any = None):
        """``config``: the run's settings (``config_to_dict``); the block runs on the backend its environment
        picks (compiled or host) with executor ``auto``, as members ``members`` of the whole run. A mixed-shape
        population's block (``space``: its ``StaticSpace``; ``assignment``: the block's members' initial
        cohorts) holds a cohort backend over its members (``populax.backends.cohorts``): part of each cohort."""
        from populax.agents import get_algorithm
        from populax.backends.factory import make_local_backend
        from populax.run.config import build_config

        run_config = build_config([config])
        self.members = np.asarray(members)
        block_config = dataclasses.replace(run_config, pop=len(members), executor="auto")
        self.mixed = space is not None
        if self.mixed:
            from populax.backends.cohorts import CohortBackend

            self.backend = CohortBackend(block_config, get_algorithm(run_config.algo), space, np.asarray(assignment))
        else:
            self.backend = make_local_backend(block_config, get_algorithm(run_config.algo))
        self.backend.run_block(members, run_config.pop)
        self.block: Member | None = None
        self.previous: Member | None = None

    def pid(self) -> int:
        """This worker's process id (fault tests kill it)."""
        return os.getpid()

    def init_block(self, keys: Any, hparams: Any) -> tuple[Any, Any]:
        """Initialise the block's members from their keys and hyperparameters; return their step counts
        and hyperparameters."""
        self._take(self.backend.init_population(from_wire(keys), from_wire(hparams)))
        return to_wire((self.block.env_steps, self.block.hparams))

    def load_block(self, block: Any, extra: Any = None) -> None:
        """Take whole members (a checkpoint's rows) as the block; ``extra``: the backend's part of the
        checkpoint for them (host: collector keys)."""
        self._take(from_wire(block), extra)

    def _take(self, block: Member, extra: Any = None) -> None:
        self.backend.stop()  # a host block's envs are opened again for the new members
        # a cohort backend keeps its own copies per cohort (the block here is the driver's view of it)
        self.block, self.previous = block, None if self.mixed else kept_before_chunk(block)
        self.backend.start(block, extra)

    def advance(self, chunk: int) -> tuple[Any, Any, dict]:
        """Chunk ``chunk`` of the block; its step counts, hyperparameters and the chunk's metrics
        (``finite`` among them): no member state leaves the worker."""
        # What failure handling restores, as the driver of one machine keeps it (the chunk updates the block in place).
        self.previous = None if self.mixed else kept_before_chunk(self.block)
        self.block, metrics = self.backend.advance(self.block, chunk)
        return to_wire((self.block.env_steps, self.block.hparams, metrics))

    def evaluate(self, chunk: int) -> tuple[np.ndarray, list[str]]:
        """Evaluation returns of the block after ``chunk`` (the run's keys or env seeds for these members), and
        the EnvironmentWarnings it gave (episodes cut), for the driver to say: a worker's output is not shown."""
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", EnvironmentWarning)
            returns = np.asarray(self.backend.evaluate(self.block, chunk))
        said = []
        for warning in caught:
            if issubclass(warning.category, EnvironmentWarning):
                said.append(str(warning.message))
            else:  # as if not caught
                warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno)
        return returns, said

    def export(self, index: list[int], fields: tuple[str, ...] | None, experience: bool) -> Member:
        """What copies in other blocks take from local members ``index`` (``edits.copy_sources``); of a
        mixed-shape block, (cohort, whole member) per source (``CohortBackend.export_rows``)."""
        if self.mixed:
            return [(cohort, to_wire(row)) for cohort, row in self.backend.export_rows(index)]
        return to_wire(copy_sources(self.block, np.asarray(index), fields, experience))

    def edit(self, edits: MemberEdits, local_sources: list[int], index: list[int], *imported: Member) -> list[int]:
        """Apply a strategy's ``edits`` (local member indices) to the block with ``edits.apply_edits``.

        Rollback and freeze use the worker's own copy of the block from before
        the chunk (``kept_before_chunk``). A copy's source is row ``index[c]`` of: this
        block's members ``local_sources``, then the ``imported`` rows (other
        workers' ``export``, resolved by Ray from the object store). Returns
        the bytes of each imported part (what crossed between workers).
        """
        edits = from_wire(edits)
        if self.mixed:  # sources beyond the block's members are the imported ones, in order
            rows = [(cohort, from_wire(row)) for part in imported for cohort, row in part]
            self.block = self.backend.apply_edits(self.block, None, edits, rows)
            return [sum(wire_bytes(row) for _, row in part) for part in imported]
        rows = None
        if np.size(edits.targets):
            parts = [copy_sources(self.block, np.asarray(local_sources, int), edits.copy_fields,
                                  edits.copy_experience), *map(from_wire, imported)]
            rows = take_rows(concatenate_rows(parts), np.asarray(index, int))
        self.block = self.backend.apply_edits(self.block, self.previous, edits, rows)
        return [wire_bytes(part) for part in imported]

    def gather(self, experience: bool) -> tuple[Member, Any]:
        """The whole block (a checkpoint, the run's result), the replay buffers only with ``experience``,
        and the backend's extra state (host: collector keys; compiled: None)."""
        if self.mixed:
            block = self.backend.gather(self.block, experience)
        else:
            block = self.block if experience else self.block.replace(experience=None)
        extra = self.backend.extra_state()
        return to_wire(block), None if extra is None else {k: np.asarray(v) for k, v in extra.items()}

    def cohort_summary(self) -> dict:
        """A mixed-shape block's cohorts (``CohortBackend.summary``), its members by their run indices."""
        summary = self.backend.summary()["cohorts"]
        summary["members"] = {label: self.members[members].tolist() for label, members in summary["members"].items()}
        return summary

    def stop(self) -> None:
        """Close the block's environments (host) before the worker ends."""
        self.backend.stop()
