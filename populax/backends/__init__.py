"""Experience backends: how a chunk of experience and updates is produced.

The driver (``populax.runtime.driver``) is written once; what differs between
a compiled JAX environment and a host (Gymnasium/ALE) environment lives
behind this small interface:

==================================  ==================================================
``chunk_steps``, ``num_chunks``     env steps per member per chunk (one evaluation
                                    period), and chunks in the run
``init_population(keys, hparams)``  every member's initial :class:`Member`
``start(population, extra)``        open envs / threads (``extra``: a checkpoint's)
``advance(population, chunk, stop)`` -> (population, per-member train metrics, with
                                    ``finite``: the member's state has no NaN/Inf); may
                                    end early when ``stop()`` (host: after a block)
``evaluate(population, chunk)``     -> per-member mean return of fresh episodes
``apply_edits(population, prev, e)`` -> population after a strategy's ``MemberEdits``, applied
                                    where the members live (``edits.apply_edits``;
                                    host: then re-publish; Ray: on each worker, copies
                                    between blocks worker to worker)
``gather(population, experience)``  the complete members, replay buffers only with
                                    ``experience`` (Ray: fetched from the workers)
``take_events()``                   lineage events of the backend itself since the last
                                    call (Ray: a worker restarted, its block reloaded)
``extra_state()``                   what a checkpoint holds beyond the members
``stop()``, ``summary()``           close resources; backend facts for summary.json
``member_returns(...)``             one saved member's episodes (``populax eval``)
``member_actor(...)``               observations -> env actions of one saved member
                                    (``populax.load_policy``, ``--video``)
==================================  ==================================================

A backend that a Ray worker wraps around a block of members (``BlockBackend``: compiled and host) also has
``run_block(members, run_pop)`` (the block's members in the run, for their keys) and ``init_agents(keys,
hparams)`` (fresh agents only: a failed member's re-initialisation). ``tests/test_backends.py`` checks that every
backend class has every method of its protocol, with the protocol's parameters.

* ``compiled`` (``backends/compiled``): JAX environments; one jitted chunk per
  executor, acting, stepping, buffer and updates all inside it.
* ``host`` (``backends/host``): Gymnasium/ALE; a collector steps all N x E envs
  with one batched acting call per step, a learner inserts blocks and runs
  compiled update chunks.
* ``ray`` (``backends/cluster``): ``--executor ray``; Ray actors each hold a
  block of members and run the compiled backend's chunk on it; per chunk only
  step counts, hyperparameters, metrics and returns come back; member states
  move only for copies between blocks, checkpoints and the final result.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

from populax.edits import MemberEdits
from populax.member import Member


class Backend(Protocol):
    """What the driver needs from a way of producing experience (see the module docstring)."""

    kind: str
    """"compiled", "host" or "ray" (summary.json's ``backend``; a Ray backend's workers run ``inner_kind``)."""
    chunk_steps: int
    num_chunks: int

    def init_population(self, keys: Any, hparams: Any) -> Member: ...

    def start(self, population: Member, extra: Any = None) -> None: ...

    def advance(self, population: Member, chunk: int,
                should_stop: Callable[[], bool] | None = None) -> tuple[Member, dict[str, Any]]: ...

    def evaluate(self, population: Member, chunk: int) -> np.ndarray: ...

    def apply_edits(self, population: Member, previous: Member, edits: MemberEdits) -> Member: ...

    def gather(self, population: Member, experience: bool = True) -> Member: ...

    def take_events(self) -> list[dict]: ...

    def extra_state(self) -> Any: ...

    def stop(self) -> None: ...

    def summary(self) -> dict[str, Any]: ...

    def member_returns(self, member: Member, member_index: int, chunk: int, episodes: int,
                       seed: int | None = None) -> np.ndarray: ...

    def member_actor(self, member: Member) -> Callable[[np.ndarray], np.ndarray]: ...


class BlockBackend(Backend, Protocol):
    """A backend that runs a block of a run's members on a Ray worker (``backends/cluster/worker.py``)."""

    def run_block(self, members: Sequence[int], run_pop: int) -> None: ...

    def init_agents(self, keys: Any, hparams: Any) -> Any: ...
