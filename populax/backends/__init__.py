"""Experience backends: how a chunk of experience and updates is produced.

The driver (``populax.runtime.driver``) is written once; what differs between
a compiled JAX environment and a host (Gymnasium/ALE) environment lives
behind this small interface:

==================================  ==================================================
``chunk_steps``, ``num_chunks``     env steps per member per chunk (one evaluation
                                    period), and chunks in the run
``init_population(keys, hparams)``  every member's initial :class:`Member`
``init_agents(keys, hparams)``      fresh agent states for some members (re-init)
``start(population, extra)``        open envs / threads (``extra``: a checkpoint's)
``advance(population, chunk, stop)`` -> (population, per-member train metrics); may end
                                    early when ``stop()`` (host: after a block)
``evaluate(population, chunk)``     -> per-member mean return of fresh episodes
``members_changed(population, m, e)`` a strategy edited members ``m`` with lineage events
                                    ``e`` (host: re-publish; Ray: push to the blocks)
``gather(population)``              the complete members (Ray: fetch what workers hold)
``take_events()``                   lineage events of the backend itself since the last
                                    call (Ray: a worker restarted, its block reloaded)
``extra_state()``                   what a checkpoint holds beyond the members
``stop()``, ``summary()``           close resources; backend facts for summary.json
``member_returns(...)``             one saved member's episodes (``populax eval``)
``member_actor(...)``               obs -> action of one member (``--video``)
==================================  ==================================================

* ``compiled`` (``backends/compiled``): JAX environments; one jitted chunk per
  executor, acting, stepping, buffer and updates all inside it.
* ``host`` (``backends/host``): Gymnasium/ALE; a collector steps all N x E envs
  with one batched acting call per step, a learner inserts blocks and runs
  compiled update chunks.
* ``ray`` (``backends/cluster``): ``--executor ray``; Ray actors each hold a
  block of members and run the compiled backend's chunk on it; only agent
  states and metrics come back per chunk (buffers and env states stay).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from populax.runtime.member import Member


class Backend(Protocol):
    """What the driver needs from a way of producing experience (see the module docstring)."""

    kind: str
    chunk_steps: int
    num_chunks: int

    def init_population(self, keys: Any, hparams: Any) -> Member: ...

    def init_agents(self, keys: Any, hparams: Any) -> Any: ...

    def start(self, population: Member, extra: Any = None) -> None: ...

    def advance(self, population: Member, chunk: int,
                should_stop: Callable[[], bool] | None = None) -> tuple[Member, dict[str, Any]]: ...

    def evaluate(self, population: Member, chunk: int) -> np.ndarray: ...

    def members_changed(self, population: Member, mask: np.ndarray, events: list[dict] = ()) -> None: ...

    def gather(self, population: Member) -> Member: ...

    def take_events(self) -> list[dict]: ...

    def extra_state(self) -> Any: ...

    def stop(self) -> None: ...

    def summary(self) -> dict[str, Any]: ...
