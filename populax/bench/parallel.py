"""``jax-parallel``: one OS process per member, as the paper's "parallel" baseline.

Each member lives in its own spawned process with its own JAX runtime and a
jitted single-member update; all processes share the machine's cores. On each
round the parent asks every worker for the same number of calls; the workers
time their own calls concurrently and the population's time for call i is
the slowest worker's call i (the population step is done when every member is).
"""

from __future__ import annotations

import multiprocessing as mp
import time
from typing import Any

import numpy as np


def worker(conn: Any, algo: str, pop: int, member: int, seed: int, steps_at_once: int, overrides: dict) -> None:
    """Process body: build member ``member`` of the population, then serve timing requests."""
    import jax

    from populax.bench.cases import make_case
    from populax.bench.impls import member_update, timed_calls
    from populax.population import select_member

    case = make_case(algo, pop, seed, **overrides)
    state, *args = select_member((case.state, case.batch, case.keys, case.hparams), member)
    start = time.perf_counter()
    compiled = jax.jit(member_update(case, steps_at_once)).lower(state, *args).compile()
    conn.send(time.perf_counter() - start)
    while (calls := conn.recv()) is not None:
        if calls == "result":
            conn.send(jax.tree.map(np.asarray, state))
            continue

        def call():
            nonlocal state
            state = jax.block_until_ready(compiled(state, *args))

        conn.send(timed_calls(call, calls))
    conn.close()


class ParallelPopulation:
    """N worker processes, one member each, timed concurrently."""

    max_pop = 8
    """Largest population run this way (each process holds a full JAX runtime)."""

    def __init__(self, case: Any, steps_at_once: int):
        from populax.bench.impls import Skipped

        if case.pop > self.max_pop:
            raise Skipped(f"one process per member is capped at {self.max_pop} members")
        context = mp.get_context("spawn")  # fork after JAX initialised is unsafe
        overrides = {"hidden": tuple(case.shapes["hidden"]), "batch": case.shapes["batch"]}
        self.conns, self.procs = [], []
        for member in range(case.pop):
            parent, child = context.Pipe()
            proc = context.Process(target=worker, args=(child, case.algo, case.pop, member, case.seed, steps_at_once, overrides), daemon=True)
            proc.start()
            self.conns.append(parent)
            self.procs.append(proc)
        # compile time: the slowest member's (they compile concurrently)
        self.compile_s = max(conn.recv() for conn in self.conns)

    def run(self, calls: int) -> list[float]:
        """Time ``calls`` population steps: per call, the slowest worker's time."""
        for conn in self.conns:
            conn.send(calls)
        per_worker = np.array([conn.recv() for conn in self.conns])
        return list(per_worker.max(axis=0))

    def result(self) -> Any:
        """The members' states, stacked (fetched from the workers)."""
        from populax.population import stack_members

        states = []
        for conn in self.conns:
            conn.send("result")
            states.append(conn.recv())
        return stack_members(states)

    def close(self) -> None:
        """Stop the workers."""
        for conn, proc in zip(self.conns, self.procs):
            conn.send(None)
            proc.join(timeout=30)
            if proc.is_alive():
                proc.terminate()
