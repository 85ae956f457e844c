"""``jax-parallel``: one OS process per member, as the paper's "parallel" baseline.

Each member lives in its own spawned process with its own JAX runtime and a
jitted single-member update; all processes share the machine's cores. On each
round the parent asks every worker for the same number of calls; the workers
start together at an agreed instant and note when each of their calls ends
(``time.monotonic``, one clock for all processes on Linux). The population's
call i ends when the last worker's call i does, so the population step times
are the differences of those ends: they add up to the wall time of the round,
and a worker that starts late or runs alone cannot make the population look
faster than it is.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from typing import Any

import numpy as np


def worker(conn: Any, algo: str, pop: int, member: int, seed: int, steps_at_once: int, overrides: dict) -> None:
    """Process body: build member ``member`` of the population, then serve timing requests."""
    import jax

    from populax.bench.cases import make_case, member_update
    from populax.population import select_member

    case = make_case(algo, pop, seed, **overrides)
    state, *args = select_member((case.state, case.batch, case.keys, case.hparams), member)
    start = time.perf_counter()
    compiled = jax.jit(member_update(case, steps_at_once)).lower(state, *args).compile()
    conn.send(time.perf_counter() - start)
    while (request := conn.recv()) is not None:
        if request == "result":
            conn.send(jax.tree.map(np.asarray, state))
            continue
        calls, start_at = request
        time.sleep(max(0.0, start_at - time.monotonic()))
        ends = []
        for _ in range(calls):
            state = jax.block_until_ready(compiled(state, *args))
            ends.append(time.monotonic())
        conn.send(ends)
    conn.close()


class ParallelPopulation:
    """N worker processes, one member each, timed concurrently."""

    max_pop = 8
    """Largest population run this way (each process holds a full JAX runtime)."""
    START_DELAY_S = 0.05
    """How far ahead the common start instant is set (time for every worker to receive it)."""

    def __init__(self, case: Any, steps_at_once: int):
        from populax.bench.cases import Skipped

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
        """Time ``calls`` population steps, all workers starting at one instant (see the module doc)."""
        start_at = time.monotonic() + self.START_DELAY_S
        for conn in self.conns:
            conn.send((calls, start_at))
        population_ends = np.array([conn.recv() for conn in self.conns]).max(axis=0)
        return list(np.diff(np.concatenate([[start_at], population_ends])))

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
