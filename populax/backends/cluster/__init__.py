"""``--executor ray``: blocks of members on Ray workers, under the one driver loop.

The unit of work is a *block*: W Ray actors (``--workers``) each hold about
N/W members and run the compiled backend's chunk program over them, on their
own devices (``--worker-gpus 1``: Ray gives each actor one GPU through
CUDA_VISIBLE_DEVICES). The driver (``populax.runtime.driver``) is unchanged:
it owns the run directory, the strategy over the whole population, logging,
progress and checkpoints, and sees this backend through the same interface as
the others (``populax.backends``). What crosses the network:

=========================  =========================================================
per chunk                  each member's light fields back to the driver (agent
                           state, hyperparameters, observation stats, counters,
                           keys) and its metrics; replay buffers and env states
                           stay on the workers
per exploit / re-init      the edited members' light fields to their worker; with
                           ``--pbt-copy-buffer`` the source's buffer from its worker
per checkpoint             every block whole, to the driver (which writes it)
=========================  =========================================================

Every transfer is counted in ``RUN/ray.jsonl`` (bytes, milliseconds) and
summed in summary.json. A worker process that dies is restarted by Ray
(``max_restarts``); its block reloads from the run's last checkpoint (or its
initial state before the first one) and the chunk is run again on it; the
restart goes to ray.jsonl and one ``block_reload`` event per member to
lineage.jsonl. A killed driver is resumed with ``populax resume RUN``.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from populax.agents import Algorithm
from populax.backends.cluster.worker import BlockWorker, from_wire, light, take_rows, to_wire, wire_bytes
from populax.backends.compiled import eval_keys, make_compiled_backend
from populax.envs.host_envs import EnvChoice
from populax.errors import ConfigError
from populax.hparams import member_hparams
from populax.population import vmap_executor
from populax.run.config import TrainConfig, config_to_dict
from populax.runtime.member import Member, member_steps
from populax.strategies.plots import read_jsonl

MAX_RESTARTS = 3
"""Times Ray restarts one worker before the run gives up."""
RESTART_WAIT_S = 300.0
"""Longest wait for a restarted worker to answer."""
FAILURE_KINDS = ("replace_failed", "reinit")
"""Lineage events of members that failed in the chunk: their buffers and envs roll back on the worker."""


def block_members(pop: int, workers: int) -> list[np.ndarray]:
    """Global member indices of each worker's block: contiguous, sizes differing by at most one."""
    return np.array_split(np.arange(pop), workers)


def check_ray_config(config: TrainConfig, algorithm: Algorithm, choice: EnvChoice) -> None:
    """ConfigError naming the setting for what ``--executor ray`` does not run."""
    if algorithm.coupled:
        raise ConfigError(f"--executor ray: {config.algo} couples its members (state shared by all of them), "
                          "which blocks on separate workers cannot share; use another executor")
    if choice.kind == "gymnasium":
        raise ConfigError(f"--executor ray: runs compiled (gymnax, brax:) environments only so far; {config.env!r} "
                          "is a host environment (use --executor auto)")
    if config.workers > config.pop:
        raise ConfigError(f"--workers {config.workers}: more workers than members (--pop {config.pop})")
    if config.strategy == "independent" and config.on_failure == "freeze":
        raise ConfigError("--on-failure freeze: not supported with --executor ray (use reinit)")
    try:
        import ray  # noqa: F401
    except ImportError:
        raise ConfigError("--executor ray: Ray is not installed; pip install 'populax[ray]'") from None


def concat_members(parts: list[Any]) -> Any:
    """Stack blocks (pytrees with a leading member axis) back into one population."""
    return jax.tree.map(lambda *xs: jnp.concatenate(xs), *parts)


class Traffic:
    """Bytes and milliseconds moved between the driver and the workers: lines of RUN/ray.jsonl."""

    def __init__(self, path: Path):
        self.path = path

    def log(self, kind: str, nbytes: int, seconds: float, **fields: Any) -> None:
        """Append one transfer to ray.jsonl."""
        self.note({"event": kind, "bytes": nbytes, "ms": round(1000 * seconds, 3), **fields})

    def note(self, record: dict) -> None:
        """Append one record to ray.jsonl (when the run directory exists)."""
        if self.path.parent.is_dir():
            with self.path.open("a") as file:
                file.write(json.dumps(record) + "\n")

    def totals(self) -> dict[str, dict[str, float]]:
        """Count, bytes and seconds by kind over the whole run (every session of it, redone work included)."""
        totals: dict[str, dict[str, float]] = {}
        for record in read_jsonl(self.path):
            if "bytes" in record:
                total = totals.setdefault(record["event"], {"count": 0, "bytes": 0, "seconds": 0.0})
                total["count"] += 1
                total["bytes"] += record["bytes"]
                total["seconds"] += record["ms"] / 1000
        return totals


class RayBackend:
    """Blocks of members on Ray actors, each running the compiled backend (see the module docstring)."""

    kind = "compiled"

    def __init__(self, config: TrainConfig, algorithm: Algorithm, env_id: str, run_dir: Path | None):
        self.config = config
        # On the driver only for what needs no training: shapes, fresh agents (re-init), `populax eval`.
        self.local = make_compiled_backend(config, algorithm, env_id, vmap_executor)
        self.chunk_steps, self.num_chunks = self.local.chunk_steps, self.local.num_chunks
        self.blocks = block_members(config.pop, config.workers)
        self.block_of = np.concatenate([np.full(len(b), i) for i, b in enumerate(self.blocks)])
        self.run_dir = Path(run_dir) if run_dir is not None else Path(".")
        self.traffic = Traffic(self.run_dir / "ray.jsonl")
        self.workers: list[Any] = []
        self.pids: list[int] = []
        self.events: list[dict] = []
        self.template: Any = None
        self.initial: tuple[Any, Any] | None = None
        self.population: Member | None = None

    # -- Ray: connect, start the workers, survive their deaths ----------------------------

    def _connect(self) -> None:
        import ray

        if ray.is_initialized():
            return
        config = self.config
        if config.ray_address:
            ray.init(address=config.ray_address, logging_level="warning", log_to_driver=False)
        else:  # a private instance on loopback, sized for the workers
            # Ray starts workers at nice 15 (for its own daemons' sake); here the workers *are* the training,
            # and on a shared machine nice 15 starves them (measured: minutes per chunk beside other jobs).
            os.environ.setdefault("RAY_worker_niceness", "0")
            ray.init(num_cpus=max(1, math.ceil(config.workers * config.worker_cpus)), include_dashboard=False,
                     _node_ip_address="127.0.0.1", logging_level="warning", log_to_driver=False)

    def _start_workers(self) -> None:
        if self.workers:
            return
        import ray

        self._connect()
        config = self.config
        actor = ray.remote(BlockWorker).options(
            num_cpus=config.worker_cpus, num_gpus=config.worker_gpus, max_restarts=MAX_RESTARTS, max_task_retries=0,
            # one XLA device per worker: the block is its unit of work (on GPUs Ray picks the device)
            runtime_env={"env_vars": {"XLA_FLAGS": "--xla_force_host_platform_device_count=1"}},
        )
        settings = config_to_dict(config)
        self.workers = [actor.remote(settings, [int(m) for m in members]) for members in self.blocks]
        self.pids = ray.get([worker.pid.remote() for worker in self.workers])
        self._write_pids()

    def _write_pids(self) -> None:
        if self.run_dir.is_dir():
            (self.run_dir / "ray_workers.json").write_text(json.dumps({"pids": self.pids}))

    def _call_all(self, method: str, args: list[tuple], blocks: list[int] | None = None, retry: bool = True) -> list[Any]:
        """``method(*args[i])`` on workers ``blocks`` (default: all) at once.

        A worker that died is restarted and reloaded (``_reload``) and, with
        ``retry``, asked again: a chunk or an evaluation runs again on the
        reloaded block; an edit is not re-applied to it (its members are the
        checkpoint's now, not the ones the edit was made for).
        """
        import ray
        from ray.exceptions import RayActorError

        blocks = list(range(len(self.workers))) if blocks is None else blocks
        pending = [getattr(self.workers[b], method).remote(*a) for b, a in zip(blocks, args)]
        results = []
        for block, ref, arguments in zip(blocks, pending, args):
            try:
                results.append(ray.get(ref))
            except RayActorError as error:
                self._reload(block, error)
                results.append(ray.get(getattr(self.workers[block], method).remote(*arguments)) if retry else None)
        return results

    def _await_restart(self, block: int) -> int:
        """The pid of worker ``block`` once Ray has restarted it."""
        import ray
        from ray.exceptions import RayActorError

        deadline = time.monotonic() + RESTART_WAIT_S
        while True:
            try:
                return ray.get(self.workers[block].pid.remote())
            except RayActorError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def _reload(self, block: int, error: Exception) -> None:
        """Worker ``block`` died: wait for Ray's restart, reload its members from the last checkpoint."""
        import ray

        from populax.run.checkpoint import latest_checkpoint, list_checkpoints
        from populax.runtime.driver import refill_point

        old_pid, start = self.pids[block], time.perf_counter()
        self.pids[block] = self._await_restart(block)
        members = self.blocks[block]
        if list_checkpoints(self.run_dir):
            checkpoint = latest_checkpoint(self.run_dir, self.template)
            rows = take_rows(checkpoint.population, members)
            if not checkpoint.manifest.get("buffer_saved", True) and rows.experience is not None:
                rows = refill_point(self.config, rows)
            source, restored_step, hparams = checkpoint.path.name, checkpoint.manifest["env_step"], rows.hparams
            ray.get(self.workers[block].load_block.remote(to_wire(rows)))
        else:  # before the first checkpoint: the block's initial state
            keys, initial_hparams = self.initial
            hparams = take_rows(initial_hparams, members)
            ray.get(self.workers[block].init_block.remote(to_wire(keys[members]), to_wire(hparams)))
            source, restored_step = "init", 0
        self._write_pids()
        self.traffic.note({"event": "worker_restart", "worker": block, "error": type(error).__name__,
                           "old_pid": old_pid, "new_pid": self.pids[block], "reloaded_from": source,
                           "restored_env_step": restored_step, "members": [int(m) for m in members],
                           "seconds": round(time.perf_counter() - start, 3)})
        now = member_steps(self.population) if self.population is not None else 0
        for local, member in enumerate(members):
            old = member_hparams(self.population.hparams, int(member)) if self.population is not None else None
            self.events.append({
                "event": "block_reload", "env_step": now, "member": int(member), "source": None,
                "old_hparams": old, "new_hparams": member_hparams(hparams, local),
                "fitness": None, "source_fitness": None,
                "worker": block, "reloaded_from": source, "restored_env_step": int(restored_step),
            })

    # -- what the driver calls -------------------------------------------------------------

    def init_population(self, keys: jax.Array, hparams: Any) -> Member:
        """Each worker initialises its own block; the driver gets the light fields.

        Under ``jax.eval_shape`` (a checkpoint's template) this is the local,
        abstract initialisation: no worker is involved.
        """
        if isinstance(keys, jax.core.Tracer):
            return self.local.init_population(keys, hparams)
        self.template = jax.eval_shape(self.local.init_population, keys, hparams)
        self.initial = (keys, hparams)
        self._start_workers()
        parts = self._call_all("init_block", [(to_wire(keys[m]), to_wire(take_rows(hparams, m))) for m in self.blocks])
        return concat_members([from_wire(part) for part in parts])

    def init_agents(self, keys: jax.Array, hparams: Any) -> Any:
        """Fresh agent states (re-initialisation), made on the driver and pushed by ``members_changed``."""
        return self.local.init_agents(keys, hparams)

    def start(self, population: Member, extra: Any = None) -> None:
        """Start the workers; a resumed run's whole members (from its checkpoint) go to their blocks."""
        self._start_workers()
        if population.env is not None:
            import ray

            self.template = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), population)
            begin = time.perf_counter()
            rows = [to_wire(take_rows(population, members)) for members in self.blocks]
            ray.get([worker.load_block.remote(part) for worker, part in zip(self.workers, rows)])
            self.traffic.log("load_blocks", sum(map(wire_bytes, rows)), time.perf_counter() - begin)
        self._write_pids()

    def advance(self, population: Member, chunk: int, should_stop: Any = None) -> tuple[Member, dict[str, Any]]:
        """One compiled chunk on every block at once; the light fields and metrics come back."""
        self.population = population
        begin = time.perf_counter()
        parts = self._call_all("advance", [()] * len(self.workers))
        seconds = time.perf_counter() - begin
        self.traffic.log("chunk", sum(wire_bytes(p) for p in parts), seconds, chunk=chunk)
        population = concat_members([from_wire(block) for block, _ in parts])
        metrics = {name: np.concatenate([np.asarray(m[name]) for _, m in parts]) for name in parts[0][1]}
        return population, metrics

    def evaluate(self, population: Member, chunk: int) -> np.ndarray:
        """Each block evaluates its members with their share of the run's evaluation keys."""
        keys = eval_keys(self.config.seed, chunk, self.config.pop)
        parts = self._call_all("evaluate", [(to_wire(keys[members]),) for members in self.blocks])
        return np.concatenate([np.asarray(p) for p in parts])

    def members_changed(self, population: Member, mask: np.ndarray, events: list[dict] = ()) -> None:
        """Push edited members' light fields to their blocks; failed ones roll their buffers and envs back;
        with ``--pbt-copy-buffer`` a source's buffer is fetched from its worker first."""
        source_of = {e["member"]: e["source"] for e in events}
        failed = {e["member"] for e in events if e["event"] in FAILURE_KINDS}
        buffers = self._source_buffers(source_of) if self.config.pbt_copy_buffer else {}
        calls, begin = [], time.perf_counter()  # (block, edit arguments)
        for block, members in enumerate(self.blocks):
            edited = [int(m) for m in members if mask[m]]
            if not edited:
                continue
            local = [int(np.flatnonzero(members == m)[0]) for m in edited]
            rows = to_wire(take_rows(light(population), np.asarray(edited)))
            copied = None
            if buffers and all(m in buffers for m in edited):
                copied = to_wire(concat_members([from_wire(buffers[m]) for m in edited]))
            rollback = [i for i, m in zip(local, edited) if m in failed]
            calls.append((block, (local, rows, rollback, copied)))
            per_member = wire_bytes(rows) // len(edited)
            for m in edited:
                source = source_of.get(m)
                self.traffic.log("member_push", per_member + (wire_bytes(buffers[m]) if m in buffers else 0), 0.0,
                                 member=m, source=source, worker=block,
                                 cross_block=source is not None and int(self.block_of[source]) != block)
        self._call_all("edit", [a for _, a in calls], [b for b, _ in calls], retry=False)
        self.traffic.note({"event": "edits_applied", "members": int(mask.sum()),
                           "ms": round(1000 * (time.perf_counter() - begin), 3)})

    def _source_buffers(self, source_of: dict[int, int | None]) -> dict[int, Any]:
        """Each copying member's source replay buffer, fetched from the source's worker."""
        wanted = [(m, s) for m, s in source_of.items() if s is not None]
        blocks = [int(self.block_of[s]) for _, s in wanted]
        local = [int(np.flatnonzero(self.blocks[b] == s)[0]) for b, (_, s) in zip(blocks, wanted)]
        rows = self._call_all("rows", [([i], "experience") for i in local], blocks)
        return {m: row for (m, _), row in zip(wanted, rows)}

    def gather(self, population: Member) -> Member:
        """Whole members from every block (checkpoints, the run's result); counted as ``gather`` traffic."""
        if population.env is not None:
            return population
        begin = time.perf_counter()
        parts = self._call_all("gather", [()] * len(self.workers))
        self.traffic.log("gather", sum(map(wire_bytes, parts)), time.perf_counter() - begin)
        return concat_members([from_wire(part) for part in parts])

    def take_events(self) -> list[dict]:
        """Lineage events since the last call: one ``block_reload`` per member of a restarted worker."""
        events, self.events = self.events, []
        return events

    def extra_state(self) -> None:
        """The members hold everything."""
        return None

    def stop(self) -> None:
        """End the workers; a Ray instance this run started is shut down, a cluster's is left running."""
        import ray

        for worker in self.workers:
            ray.kill(worker, no_restart=True)
        self.workers = []
        if ray.is_initialized():
            ray.shutdown()

    def summary(self) -> dict[str, Any]:
        """The block layout, restarts, traffic by kind (from ray.jsonl) and the copies between blocks (lineage)."""
        return {"ray": {
            "workers": self.config.workers,
            "blocks": [[int(m) for m in members] for members in self.blocks],
            "address": self.config.ray_address or "local (loopback)",
            "restarts": sum(1 for r in read_jsonl(self.traffic.path) if r["event"] == "worker_restart"),
            "traffic": self.traffic.totals(),
            "cross_block_copies": sum(1 for e in read_jsonl(self.run_dir / "lineage.jsonl")
                                      if e.get("source") is not None and self.block_of[e["source"]] != self.block_of[e["member"]]),
        }}

    # -- one saved member (``populax eval``) -------------------------------------------------

    def member_returns(self, member: Member, member_index: int, chunk: int, episodes: int,
                       seed: int | None = None) -> np.ndarray:
        """As the compiled backend (on the driver)."""
        return self.local.member_returns(member, member_index, chunk, episodes, seed)

    def member_actor(self, member: Member) -> Any:
        """As the compiled backend (on the driver)."""
        return self.local.member_actor(member)


def make_ray_backend(config: TrainConfig, algorithm: Algorithm, choice: EnvChoice, run_dir: Path | None) -> RayBackend:
    """The Ray backend of a validated configuration (ConfigError for what it does not run)."""
    check_ray_config(config, algorithm, choice)
    return RayBackend(config, algorithm, choice.env_id, run_dir)


__all__ = ["RayBackend", "block_members", "make_ray_backend"]
