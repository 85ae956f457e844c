"""``--executor ray``: blocks of members on Ray workers, under the one driver loop.

The unit of work is a *block*: W Ray actors (``--workers``) each hold about
N/W members and run the compiled backend's chunk program over them, on their
own devices (``--worker-gpus 1``: Ray gives each actor one GPU through
CUDA_VISIBLE_DEVICES). The driver (``populax.runtime.driver``) is unchanged:
it owns the run directory, the strategy over the whole population, logging,
progress and checkpoints, and sees this backend through the same interface as
the others (``populax.backends``). What crosses the network:

=========================  =========================================================
per chunk                  to the driver: each member's step count,
                           hyperparameters, train metrics, ``finite`` flag and
                           evaluation return (a few hundred bytes per member); no
                           member state (agents, buffers, env states stay)
per strategy round         the strategy decides on the driver (returns,
                           hyperparameters); each worker applies the edits to its
                           own block (``edits.apply_edits``: rollback and
                           re-initialisation from its own copy from before the
                           chunk); only a copy whose source is in another block
                           moves a member state, once per (source, target block),
                           worker to worker through Ray's object store (the driver
                           routes the reference)
per checkpoint             every block whole, to the driver (which writes it);
                           replay buffers only with ``--save-buffer``
=========================  =========================================================

Every transfer is counted in ``RUN/ray.jsonl`` (bytes, milliseconds; one
``chunk`` record per chunk with its ``member_state_bytes``) and summed in
summary.json. A worker process that dies is restarted by Ray
(``max_restarts``); its block reloads from the run's last checkpoint (or the
run's start before the first one), runs the chunks since then again up to
where the other blocks stand, takes the round's edits again if they had been
made, and the call it died in is made again (an edit too: the caught-up
members are at the step the strategy decided on); the restart and the replay
go to ray.jsonl and one ``block_reload`` event per member to lineage.jsonl
(docs/scaling.md, "Faults"). A killed driver is resumed with ``populax resume RUN``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

from populax.agents import Algorithm
from populax.backends.cluster.blocks import block_extra, block_members, block_share, has_buffers, is_whole
from populax.backends.cluster.pool import MAX_RESTARTS, CallLost, WorkerPool
from populax.backends.cluster.traffic import Traffic
from populax.backends.cluster.worker import from_wire, to_wire, wire_bytes
from populax.backends.factory import make_local_backend
from populax.edits import MemberEdits, refill_point
from populax.errors import ConfigError, SaidOnce
from populax.hparams import member_hparams
from populax.member import (
    Cohorts,
    Member,
    concatenate_rows,
    driver_view,
    join_members,
    member_steps,
    select_members,
    take_rows,
)
from populax.population import vmap_executor
from populax.run.checkpoint import list_checkpoints
from populax.run.config import TrainConfig
from populax.run.logging import read_jsonl


def check_ray_config(config: TrainConfig, algorithm: Algorithm) -> None:
    """ConfigError naming the setting for what ``--executor ray`` does not run."""
    if algorithm.coupled:
        raise ConfigError(f"--executor ray: {config.algo} couples its members (state shared by all of them), "
                          "which blocks on separate workers cannot share; use another executor")
    if config.workers > config.pop:
        raise ConfigError(f"--workers {config.workers}: more workers than members (--pop {config.pop})")
    try:
        import ray  # noqa: F401
    except ImportError:
        raise ConfigError("--executor ray: Ray is not installed; pip install 'populax[ray]'") from None


class RayBackend:
    """Blocks of members on Ray actors, each running the compiled or host backend (see the module docstring)."""

    kind = "ray"
    """summary.json's ``backend``; the backend the workers run is ``inner_kind`` (summary.json's ``worker_backend``)."""

    def __init__(self, config: TrainConfig, local: Any, run_dir: Path | None, space: Any = None,
                 assignment: Any = None):
        """``local``: the backend of the whole run on the driver, used only for what needs no training
        (shapes, ``populax eval``, ``--video``); the workers build their own for their blocks. A mixed-shape
        population (``space``, ``assignment``: ``populax.cohorts``) has a cohort backend on each worker, over
        its block's members (a block holds part of each cohort; members move between cohorts, not blocks)."""
        self.config, self.local = config, local
        self.space, self.assignment = space, None if assignment is None else np.asarray(assignment)
        self.inner_kind: str = local.kind
        """The backend each worker runs over its block (and the driver-side ``local``): compiled or host."""
        self.chunk_steps, self.num_chunks = self.local.chunk_steps, self.local.num_chunks
        self.blocks = block_members(config.pop, config.workers)
        self.block_of = np.concatenate([np.full(len(b), i) for i, b in enumerate(self.blocks)])
        self.run_dir = Path(run_dir) if run_dir is not None else Path(".")
        self.traffic = Traffic(self.run_dir / "ray.jsonl")
        self.pool = WorkerPool(config, self.run_dir, self._reload)
        self.events: list[dict] = []
        self.said = SaidOnce()
        """The workers' EnvironmentWarnings said so far (each once per run)."""
        self.template: Any = None
        """The population's shapes (a reloaded block's checkpoint is read against it)."""
        self.initial: tuple[Any, Any] | None = None
        """(keys, hyperparameters) of the run's initial members: a block dead before the first checkpoint
        starts again from them (set by a real ``init_population``, not on resume)."""
        self.initial_hparams: Any = None
        """Hyperparameters a checkpoint written before one of them existed takes (``checkpoint.restore``): the
        initial draw, or on resume the resumed members' (which the resume filled the same way)."""
        self.population: Member | None = None
        """The driver's members (step counts, hyperparameters) before the current chunk."""
        self.chunk = -1
        self.results: dict[str, float] = {"bytes": 0, "advance_ms": 0.0}
        """What the current chunk brought back to the driver (advance and evaluation)."""
        self.version = 0
        """Counts changes of the blocks (chunks, edits, reloads): a gather is reused while it stays the same."""
        self.gathered: tuple[int, bool, Member] | None = None
        self.cohorts_at_stop: dict[str, Any] | None = None
        """A mixed-shape population's cohorts when the workers stopped (``summary``)."""
        self.extra: Any = None
        self.round_edits: MemberEdits | None = None
        """This chunk's edits once made (None from the next advance on): a block reloaded after them makes its
        share again."""
        self.start_members: tuple[Member | Cohorts, Any] | None = None
        """(whole members, extra) a run started from (a warm start's or a resume's) until its first checkpoint:
        what a block dying before it reloads (a warm start's members, not a fresh draw)."""
        self.stopping = False
        """Set by ``stop``: a worker reloaded then is not caught up (only its cohorts' summary is asked for)."""
        self.steps_due: np.ndarray | None = None
        """Each member's env steps where the driver stands (before a chunk's advance, after it once it has
        returned): what a reloaded block catches up to. None before the first chunk."""

    def _reload(self, block: int, error: Exception) -> None:
        """Worker ``block`` died: wait for Ray's restart, reload its members from the last checkpoint, run their
        chunks since then again up to where the other blocks stand (``_catch_up``) and, after this chunk's
        edits, make the block's share of them again (``_redo_edits``). A death meanwhile starts it over (Ray
        restarts a worker up to ``MAX_RESTARTS`` times)."""
        from ray.exceptions import RayActorError

        try:
            restored_step = self._restore_block(block, error)
            if not self.stopping:  # at the end of a run only its cohorts' summary is asked for
                self._catch_up(block, restored_step)
                self._redo_edits(block)
        except RayActorError as again:
            self._reload(block, again)

    def _restore_block(self, block: int, error: Exception) -> int:
        """Load worker ``block``'s members, once Ray restarted it, from the run's newest checkpoint, or before
        the first one from the run's start (the initial draw, or a warm start's members); log the restart
        (ray.jsonl) and one ``block_reload`` lineage event per member. Returns the env step restored."""
        import ray

        from populax.run.checkpoint import latest_checkpoint, list_checkpoints

        old_pid, start = self.pool.pids[block], time.perf_counter()
        self.pool.pids[block] = self.pool.await_restart(block)
        members = self.blocks[block]
        worker = self.pool.workers[block]
        if list_checkpoints(self.run_dir):
            checkpoint = latest_checkpoint(self.run_dir, self.template, initial_hparams=self.initial_hparams)
            rows = select_members(checkpoint.population, members)
            if not checkpoint.manifest.get("buffer_saved", True) and has_buffers(rows):
                rows = refill_point(self.config, rows)
            source, restored_step, hparams = checkpoint.path.name, checkpoint.manifest["env_step"], rows.hparams
            ray.get(worker.load_block.remote(to_wire(rows), block_extra(checkpoint.extra, members)))
        elif self.start_members is not None:  # a warm start (--init-from) before its first checkpoint
            population, extra = self.start_members
            rows = select_members(population, members)
            source, restored_step, hparams = "start", member_steps(population), rows.hparams
            ray.get(worker.load_block.remote(to_wire(rows), block_extra(extra, members)))
        else:  # before the first checkpoint: the block's initial state (a resumed run has a checkpoint)
            keys, initial_hparams = self.initial
            hparams = take_rows(initial_hparams, members)
            ray.get(worker.init_block.remote(to_wire(keys[members]), to_wire(hparams)))
            source, restored_step = "init", 0
        self.pool.write_pids()
        self.version += 1
        self.traffic.note({"event": "worker_restart", "worker": block, "error": type(error).__name__,
                           "old_pid": old_pid, "new_pid": self.pool.pids[block], "reloaded_from": source,
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
        return int(restored_step)

    def _catch_up(self, block: int, steps: int) -> None:
        """Run a reloaded block's chunks again, from its checkpoint's ``steps`` to where the driver stands.

        Members advance in lockstep, and a compiled chunk is a fixed number of
        steps: a block reloaded from a checkpoint some chunks old (the default
        cadence is every 2 minutes), or after the chunk it died in had run (in
        the evaluation, an edit, a checkpoint's gather), would stay behind the
        others for the rest of the run. The strategy's edits to these members
        between the checkpoint and this chunk are not replayed
        (``block_reload`` in lineage.jsonl says so). One ``block_replay``
        record per catch-up goes to ray.jsonl.
        """
        import ray

        target = int(np.max(self.steps_due[self.blocks[block]])) if self.steps_due is not None else 0
        begin, start, chunks = time.perf_counter(), steps, 0
        while steps < target:
            env_steps, _, _ = from_wire(ray.get(self.pool.workers[block].advance.remote(steps // self.chunk_steps)))
            reached = int(np.min(np.asarray(env_steps)))
            if reached <= steps:
                raise RuntimeError(f"worker {block}: a chunk from env step {steps} did not advance its block")
            steps, chunks = reached, chunks + 1
        if chunks:
            self.traffic.note({"event": "block_replay", "worker": block, "chunks": chunks, "from_env_step": start,
                               "to_env_step": steps, "seconds": round(time.perf_counter() - begin, 3)})

    def _redo_edits(self, block: int) -> None:
        """After this chunk's edits were made (a death in a checkpoint's gather, or between calls), make the
        reloaded block's share of them again on its caught-up members, with new exports from the source
        blocks: the members stand where the strategy decided on them, so the lineage holds. During
        ``apply_edits`` the edit loop makes them again itself."""
        edits = self.round_edits
        if edits is None or not edits.edited()[self.blocks[block]].any():
            return
        for _ in range(MAX_RESTARTS + 1):
            arguments, exports = self._block_edit(edits, block)
            (got,) = self.pool.call_all("edit", [arguments], [block], retry=False,
                                        depends=[[source for source, _, _ in exports]])
            if not isinstance(got, CallLost):
                self._log_copies(exports, got)
                self.version += 1
                return
            if got.reloaded:  # it died again: that reload made them
                return
        raise RuntimeError(f"worker {block}: its edits could not be made again (its copy sources kept dying)")

    def _log_copies(self, exports: list[tuple[int, int, list[int]]], sizes: list[int]) -> int:
        """One ray.jsonl ``member_copy`` record per export an edit read; returns the member-state bytes moved."""
        for (source_block, target_block, sources), nbytes in zip(exports, sizes):
            self.traffic.log("member_copy", nbytes, 0.0, chunk=self.chunk, sources=sources,
                             from_worker=source_block, to_worker=target_block, member_state_bytes=nbytes)
        return sum(sizes)

    # -- what the driver calls -------------------------------------------------------------

    def init_population(self, keys: jax.Array, hparams: Any) -> Member:
        """Each worker initialises its own block; the driver gets step counts and hyperparameters.

        Under ``jax.eval_shape`` (a checkpoint's template) this is the local,
        abstract initialisation: no worker is involved.
        """
        if isinstance(keys, jax.core.Tracer):
            return self.local.init_population(keys, hparams)
        self.template = self._template(jax.eval_shape(self.local.init_population, keys, hparams), hparams)
        self.initial, self.initial_hparams = (keys, hparams), hparams
        self.pool.start(self.blocks, self.space, self.assignment)
        parts = self.pool.call_all("init_block", [(to_wire(keys[m]), to_wire(take_rows(hparams, m))) for m in self.blocks])
        return driver_view(*concatenate_rows([from_wire(part) for part in parts]))

    def start(self, population: Member, extra: Any = None) -> None:
        """Start the workers; a resumed run's whole members (from its checkpoint) go to their blocks."""
        self.pool.start(self.blocks, self.space, self.assignment)
        if is_whole(population):  # a resumed run's (on either backend: host members have no env field)
            import ray

            self.template = self._template(jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), population),
                                           population.hparams)
            if self.initial_hparams is None:
                self.initial_hparams = population.hparams
            self.start_members = (population, extra)
            begin = time.perf_counter()
            rows = [to_wire(select_members(population, members)) for members in self.blocks]
            ray.get([worker.load_block.remote(part, block_extra(extra, members))
                     for worker, part, members in zip(self.pool.workers, rows, self.blocks)])
            self.traffic.log("load_blocks", sum(map(wire_bytes, rows)), time.perf_counter() - begin,
                             member_state_bytes=sum(map(wire_bytes, rows)))
            self.version += 1
        self.pool.write_pids()

    def _template(self, shapes: Member | Cohorts, hparams: Any) -> Any:
        """What a reloaded block's checkpoint is read against: the population's shapes, or of a mixed-shape
        one a function of the saved cohort assignment (members move between cohorts: the blocks' sizes are the
        checkpoint's), built from every member's ``hparams``."""
        if not isinstance(shapes, Cohorts):
            return shapes
        keys = jax.random.split(jax.random.key(0), self.config.pop)  # shapes only

        def template(assignment: np.ndarray) -> Cohorts:
            return jax.eval_shape(lambda: self.local.init_blocks(keys, hparams, assignment))

        return template

    def init_blocks(self, keys: jax.Array, hparams: Any, assignment: np.ndarray) -> Cohorts:
        """A mixed-shape population's members in the cohorts ``assignment`` says, as shapes (a checkpoint's
        template, ``populax resume``): the driver's local cohort backend, no worker."""
        return self.local.init_blocks(keys, hparams, assignment)

    def connect(self) -> None:
        """Join --ray-address's cluster or start the private instance, and check its resources (ConfigError
        before anything is written: an unreachable address or missing GPUs made Ray wait for ever)."""
        self.pool.connect()

    def advance(self, population: Member, chunk: int, should_stop: Any = None) -> tuple[Member, dict[str, Any]]:
        """One compiled chunk on every block at once; step counts, hyperparameters and metrics come back."""
        self.population, self.chunk, self.version = population, chunk, self.version + 1
        self.round_edits = None
        if self.start_members is not None and list_checkpoints(self.run_dir):
            self.start_members = None  # a reload reads the checkpoint from now on
        self.steps_due = np.asarray(population.env_steps)  # a block dying in this chunk catches up to its start
        begin = time.perf_counter()
        parts = self.pool.call_all("advance", [(chunk,)] * len(self.pool.workers))
        self.results = {"bytes": sum(map(wire_bytes, parts)), "advance_ms": 1000 * (time.perf_counter() - begin)}
        env_steps, hparams, metrics = concatenate_rows([from_wire(part) for part in parts])
        self.steps_due = np.asarray(env_steps)  # ... and after it, to its end
        return driver_view(env_steps, hparams), {name: np.asarray(value) for name, value in metrics.items()}

    def evaluate(self, population: Member, chunk: int) -> np.ndarray:
        """Each block evaluates its members with their share of the run's evaluation keys."""
        parts = self.pool.call_all("evaluate", [(chunk,)] * len(self.pool.workers))
        for message in (m for _, said in parts for m in said):  # the workers' output is not shown
            self.said.warn(message)
        returns = np.concatenate([np.asarray(p) for p, _ in parts])
        self.results["bytes"] += returns.nbytes
        return returns

    def apply_edits(self, population: Member, previous: Member, edits: MemberEdits) -> Member:
        """Each worker applies the strategy's edits to its own block (``BlockWorker.edit``).

        A copy whose source lives in another block takes the source's state
        straight from that worker: the driver asks the source worker to
        ``export`` the rows (once per source and target block) and hands the
        object reference to the target worker, which Ray resolves from the
        object store; the rows never pass through the driver. One ``chunk``
        record per chunk goes to ray.jsonl with the bytes of member state
        moved (0 without copies between blocks), one ``member_copy`` record
        per export. A source worker that dies before its export is read is
        reloaded (its failure, not the target's), and the healthy target's
        edit is made again with exports from the reloaded source; a target
        that dies is reloaded, caught up, and its edit made again.
        """
        population = population.replace(hparams=edits.hparams)
        begin, edited = time.perf_counter(), edits.edited()
        pushed, copied = 0, 0
        if edited.any():
            targets = [block for block, members in enumerate(self.blocks) if edited[members].any()]
            for _ in range(MAX_RESTARTS + 1):  # again only for targets whose copy source died meanwhile
                calls = [(block, *self._block_edit(edits, block)) for block in targets]  # all exports before any edit
                pushed += sum(wire_bytes(arguments[0]) for _, arguments, _ in calls)
                received = self.pool.call_all("edit", [arguments for _, arguments, _ in calls], targets, retry=False,
                                          depends=[[source for source, _, _ in exports] for _, _, exports in calls])
                for (_, _, exports), got in zip(calls, received):
                    copied += 0 if isinstance(got, CallLost) else self._log_copies(exports, got)
                # Again for every lost edit: a target reloaded (and caught up to this chunk's end) takes the edit
                # the strategy made for it, as a healthy target whose copy source died does, so lineage.jsonl
                # holds for every member.
                targets = [block for block, got in zip(targets, received) if isinstance(got, CallLost)]
                if not targets:
                    break
            else:
                raise RuntimeError(f"workers {targets}: the strategy's edits could not be made (workers kept dying)")
            self.version += 1
        self.round_edits = edits  # what a worker dying before the next chunk makes again once reloaded
        self.traffic.log("chunk", self.results["bytes"] + pushed, self.results["advance_ms"] / 1000, chunk=self.chunk,
                         member_state_bytes=copied, edited=int(edited.sum()),
                         edit_ms=round(1000 * (time.perf_counter() - begin), 3))
        return population

    def _block_edit(self, edits: MemberEdits, block: int) -> tuple[tuple, list[tuple[int, int, list[int]]]]:
        """Worker ``block``'s share of ``edits`` (``blocks.block_share``) and the exports its copies need.

        Returns the ``edit`` call's arguments (edits, local sources, each copy's
        row among local then imported sources, the export references) and
        (source block, target block, global source members) per export.
        """
        share = block_share(edits, self.blocks, self.block_of, block, mixed=self.space is not None)
        refs, exports = [], []
        for source_block, wanted in share.imports.items():
            start = int(self.blocks[source_block][0])
            refs.append(self.pool.workers[source_block].export.remote([s - start for s in wanted], share.edits.copy_fields,
                                                                 share.edits.copy_experience))
            exports.append((source_block, block, wanted))
        return (to_wire(share.edits), share.own_sources, share.index, *refs), exports

    def gather(self, population: Member, experience: bool = True) -> Member:
        """Whole members from every block (checkpoints, the run's result), replay buffers only with
        ``experience``; fetched once per state of the blocks (the last checkpoint's gather serves the result)."""
        if is_whole(population):  # a resumed run before its first chunk: the checkpoint's members
            return population
        cached = self.gathered
        if cached is not None and cached[0] == self.version and (cached[1] or not experience):
            return cached[2]
        begin = time.perf_counter()
        parts = self.pool.call_all("gather", [(experience,)] * len(self.pool.workers))
        nbytes = sum(wire_bytes(block) for block, _ in parts)
        self.traffic.log("gather", nbytes, time.perf_counter() - begin, chunk=self.chunk, experience=experience,
                         member_state_bytes=nbytes)
        gathered = join_members([from_wire(block) for block, _ in parts])
        extras = [extra for _, extra in parts]
        self.extra = None if extras[0] is None else concatenate_rows(extras)
        self.gathered = (self.version, experience, gathered)
        return gathered

    def take_events(self) -> list[dict]:
        """Lineage events since the last call: one ``block_reload`` per member of a restarted worker; of a
        mixed-shape population with the ``cohort`` its worker holds it in now (the checkpoint's, and the moves
        made again since), which the strategy takes (``StrategyRunner.record``): moves made after the
        checkpoint and before the chunk the worker died in are lost with their edits."""
        events, self.events = self.events, []
        reloaded = sorted({e["worker"] for e in events if e["event"] == "block_reload"})
        if self.space is not None and reloaded:
            parts = self.pool.call_all("cohort_summary", [()] * len(reloaded), reloaded)
            label_of = {m: label for part in parts for label, ids in part["members"].items() for m in ids}
            for event in events:
                if event["event"] == "block_reload":
                    event["cohort"] = label_of[event["member"]]
        return events

    def extra_state(self) -> Any:
        """The blocks' extra state of the last ``gather`` (host: every member's collector keys; compiled: None)."""
        return self.extra

    def stop(self) -> None:
        """End the workers (host blocks close their envs first); a Ray instance this run started is shut down,
        a cluster's is left running."""
        import ray

        self.stopping = True
        if self.pool.workers and self.space is not None:  # the summary is written after the workers are gone
            self.cohorts_at_stop = self._cohort_summary()
        if self.pool.workers:
            ray.wait([worker.stop.remote() for worker in self.pool.workers], num_returns=len(self.pool.workers), timeout=30)
        for worker in self.pool.workers:
            ray.kill(worker, no_restart=True)
        self.pool.workers = []
        if ray.is_initialized():
            ray.shutdown()

    def summary(self) -> dict[str, Any]:
        """The backend the workers run (``worker_backend``), the block layout, restarts, traffic by kind (from
        ray.jsonl) and the copies between blocks (lineage); of a mixed-shape population, the cohorts as one
        machine reports them (programs: compiled on all workers together; ``programs_per_worker``)."""
        summary = {} if self.space is None else {
            "cohorts": self._cohort_summary() if self.pool.workers else self.cohorts_at_stop}
        return {**summary, "worker_backend": self.inner_kind, "ray": {
            "workers": self.config.workers,
            "blocks": [[int(m) for m in members] for members in self.blocks],
            "address": self.config.ray_address or "local (loopback)",
            "restarts": sum(1 for r in read_jsonl(self.traffic.path) if r["event"] == "worker_restart"),
            "traffic": self.traffic.totals(),
            "cross_block_copies": sum(1 for e in read_jsonl(self.run_dir / "lineage.jsonl")
                                      if e.get("source") is not None and self.block_of[e["source"]] != self.block_of[e["member"]]),
        }}

    def _cohort_summary(self) -> dict[str, Any]:
        """Every worker's cohorts (``CohortBackend.summary``) as one: members by cohort, moves and
        distillations added up."""
        parts = self.pool.call_all("cohort_summary", [()] * len(self.pool.workers))
        labels = self.space.labels
        members = {label: sorted(m for part in parts for m in part["members"].get(label, [])) for label in labels}
        return {
            "settings": parts[0]["settings"],
            "members": {label: ids for label, ids in members.items() if ids},
            "programs": sum(part["programs"] for part in parts),
            "programs_per_worker": [part["programs"] for part in parts],
            "program_sizes": {label: sorted({size for part in parts for size in part["program_sizes"][label]})
                              for label in labels},
            "moves": {kind: sum(part["moves"][kind] for part in parts) for kind in parts[0]["moves"]},
            "distillations": [d for part in parts for d in part["distillations"]],
        }

    # -- one saved member (``populax eval``) -------------------------------------------------

    def member_returns(self, member: Member, member_index: int, chunk: int, episodes: int,
                       seed: int | None = None) -> np.ndarray:
        """As the run's backend on one machine (on the driver)."""
        return self.local.member_returns(member, member_index, chunk, episodes, seed)

    def member_actor(self, member: Member) -> Any:
        """As the run's backend on one machine (on the driver)."""
        return self.local.member_actor(member)


def make_ray_backend(config: TrainConfig, algorithm: Algorithm, run_dir: Path | None,
                     local: Any = None, space: Any = None, assignment: Any = None) -> RayBackend:
    """The Ray backend of a validated configuration (ConfigError for what it does not run); ``local``: the
    driver's backend of the whole run where the caller built it (a mixed-shape population's cohort backend,
    with its ``space`` and initial ``assignment``)."""
    check_ray_config(config, algorithm)
    if local is None:
        local = make_local_backend(config, algorithm, vmap_executor, donate=False)
    return RayBackend(config, local, run_dir, space, assignment)

