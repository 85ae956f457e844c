"""Mixed-shape populations (issue 25): one compiled program per cohort, one ranked population.

Members that differ in a static setting (``--hp.hidden choice:64x64,256x256``, ``populax.cohorts``) cannot
share one compiled program, so this backend holds one *block* per cohort (the members sharing every static
setting, stacked) and runs each with the local backend built for that cohort's settings and size; the driver
sees one population of N members (``member.driver_view``: step counts and hyperparameters) and the strategy
ranks all N together. Per chunk, read top to bottom::

    for each cohort c:  block_c, metrics_c = backend(c, |c|).advance(block_c)      # one program per cohort
    returns            = each cohort's evaluation, placed at its members' indices (the run's eval keys)
    apply_edits:  1. in each cohort, the edits between its own members (rollback, re-init, copies, hparams)
                  2. a copy from another cohort (PBT's exploit across cohorts, or a static explore) re-creates
                     its target in the new cohort's shape: the source's weights (copy: the shapes match),
                     a fresh network distilled from the source (distill), or a fresh init (fresh)
                  3. the blocks of the cohorts whose members changed are rebuilt (rows gathered, in member order)
                  (the three as functions of the blocks: ``backends/cohort_moves.py``)

Programs are cached per (cohort, size): a cohort that returns to a size it had runs the program compiled then
(JAX's jit cache of that backend); a new size compiles once. No padding: a cohort of k members computes k
members. What a move costs (compiles, the rebuilt block's copy) is measured in docs/benchmarks.md.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from populax.agents import Algorithm
from populax.backends.cohort_moves import local_edits, rebuilt_blocks, recreated_member, same_shapes
from populax.backends.factory import make_local_backend
from populax.cohorts import CROSS_COHORT, StaticSpace
from populax.edits import MemberEdits, copy_sources, kept_before_chunk
from populax.errors import ConfigError
from populax.loop.distill import make_distill
from populax.member import Cohorts, Member, concatenate_rows, driver_view, take_rows
from populax.obs_norm import normalize
from populax.population import executor_shards, members_sharding
from populax.run.config import TrainConfig


def abstract_hparams(algorithm: Algorithm, count: int) -> Any:
    """``count`` members' hyperparameters as shapes only (templates of a cohort's member layout)."""
    names = [f.name for f in dataclasses.fields(algorithm.hparams)]
    return algorithm.hparams(**{name: jax.ShapeDtypeStruct((count,), jnp.float32) for name in names})


def merge_metrics(parts: list[tuple[np.ndarray, dict[str, Any]]], pop: int) -> dict[str, np.ndarray]:
    """Per-member chunk metrics of every cohort, placed at their members' indices."""
    merged: dict[str, np.ndarray] = {}
    for members, metrics in parts:
        for name, value in metrics.items():
            value = np.asarray(value)
            if name not in merged:
                merged[name] = np.zeros(pop, bool) if value.dtype == bool else np.full(pop, np.nan)
            merged[name][members] = value
    return merged


class CohortBackend:
    """Members in cohorts of one static shape each, one local backend per (cohort, size)."""

    def __init__(self, config: TrainConfig, algorithm: Algorithm, space: StaticSpace, assignment: np.ndarray):
        """``config``: the run's settings with only traced ``hp``; ``space``: the varying static settings;
        ``assignment``: each member's initial cohort. ConfigError for what cohorts cannot run."""
        self.config, self.algorithm, self.space = config, algorithm, space
        self.assignment = np.asarray(assignment, np.int64)
        self.configs = [space.config_for(config, c) for c in range(len(space.settings))]
        self.backends: dict[tuple[int, int], Any] = {}
        """(cohort, size) -> its backend: each keeps its compiled programs for the whole run."""
        probes = [self.backend(c, 1) for c in range(len(self.configs))]
        lengths = {c: probe.chunk_steps for c, probe in enumerate(probes)}
        if len(set(lengths.values())) > 1:
            detail = ", ".join(f"{space.labels[c]}: {steps}" for c, steps in lengths.items())
            raise ConfigError(f"--hp.envs-per-member: every cohort must evaluate after the same env steps, but the "
                              f"evaluation periods differ ({detail}); choose values that divide --eval-every")
        self.kind = probes[0].kind
        """"compiled" (JAX environments) or "host" (Gymnasium/ALE: each cohort's backend steps its members' envs)."""
        self.chunk_steps, self.num_chunks = probes[0].chunk_steps, probes[0].num_chunks
        self.blocks: dict[int, Member] = {}
        """Cohort -> its members' states, stacked in member order (only cohorts with members)."""
        self.previous: dict[int, Member] = {}
        self.distillers: dict[tuple[int, int], Callable] = {}
        self.moves: dict[str, int] = dict.fromkeys(CROSS_COHORT, 0)
        self.distilled: list[dict[str, float]] = []
        """Per distillation: the imitation loss of its first and last step."""
        self.ran: set[tuple[int, int]] = set()
        """(cohort, size) pairs whose chunk program ran: the programs this run compiled."""
        self.indices, self.run_pop = np.arange(config.pop), config.pop
        """The run's indices of these members and the run's size (a Ray block holds some of the run's members:
        their evaluation keys and env seeds are the run's)."""

    # -- cohorts and their backends -----------------------------------------------------------

    def backend(self, cohort: int, size: int) -> Any:
        """The local backend of ``size`` members of ``cohort`` (built once, kept with its programs)."""
        key = (cohort, size)
        if key not in self.backends:
            # Built once for the whole run, possibly first asked for inside a trace (a checkpoint's template under
            # jax.eval_shape): its constants (env parameters) must be arrays, not that trace's tracers.
            with jax.ensure_compile_time_eval():
                self.backends[key] = make_local_backend(dataclasses.replace(self.configs[cohort], pop=size),
                                                        self.algorithm)
        return self.backends[key]

    def members(self, cohort: int) -> np.ndarray:
        """Members of ``cohort`` now, in its block's row order."""
        return np.flatnonzero(self.assignment == cohort)

    def run_block(self, members: Any, run_pop: int) -> None:
        """These members are members ``members`` of a run of ``run_pop`` (a Ray block: the run's evaluation keys
        and env seeds for them)."""
        self.indices, self.run_pop = np.asarray(members, np.int64), run_pop

    def _placed(self, cohort: int) -> Any:
        """``cohort``'s backend for its current members (their evaluation keys are the run's)."""
        members = self.members(cohort)
        backend = self.backend(cohort, len(members))
        backend.run_block(self.indices[members], self.run_pop)
        return backend

    def _place(self, block: Any) -> Any:
        """``block`` on the devices its cohort's program runs on: split over all of them where ``auto`` shards
        that many members (``executor_shards``), else on the first. A rebuilt block mixes rows from programs
        on different devices, and a plain jit would partition its computation over whatever devices its input
        is on (other numerics than the program the cohort ran before, or a resumed run runs)."""
        size = int(jax.tree.leaves(block)[0].shape[0])  # a block's (or its hyperparameters') members
        return jax.device_put(block, members_sharding(executor_shards(self.config.executor, size)))

    def template(self, cohort: int) -> Member:
        """One member of ``cohort`` as shapes (leading axis 1)."""
        keys = jax.random.split(jax.random.key(0), 1)
        return jax.eval_shape(self.backend(cohort, 1).init_population, keys, abstract_hparams(self.algorithm, 1))

    def cohorts(self) -> Cohorts:
        """The current blocks as a :class:`Cohorts` (checkpoints, the result)."""
        labels = self.space.labels
        return Cohorts(blocks={labels[c]: self.blocks[c] for c in sorted(self.blocks)},
                       assignment=jnp.asarray(self.assignment, jnp.int32), labels=labels)

    def view(self) -> Member:
        """What the driver holds: every member's step count and hyperparameters, in member order."""
        cohorts = self.cohorts()
        return driver_view(cohorts.env_steps, cohorts.hparams)

    def init_blocks(self, keys: jax.Array, hparams: Any, assignment: np.ndarray) -> Cohorts:
        """Members initialised in the cohorts ``assignment`` says (under ``jax.eval_shape``: a checkpoint's
        template for that assignment)."""
        assignment = np.asarray(assignment, np.int64)
        blocks = {}
        for cohort in sorted(set(assignment.tolist())):
            members = np.flatnonzero(assignment == cohort)
            blocks[self.space.labels[cohort]] = self.backend(cohort, len(members)).init_population(
                keys[members], take_rows(hparams, members))
        return Cohorts(blocks=blocks, assignment=jnp.asarray(assignment, jnp.int32), labels=self.space.labels)

    # -- what the driver calls ------------------------------------------------------------------

    def init_population(self, keys: jax.Array, hparams: Any) -> Member:
        """Each cohort's members initialised by its backend; the driver gets step counts and hyperparameters
        (under ``jax.eval_shape``: the whole :class:`Cohorts`, the memory check's and checkpoints' template)."""
        cohorts = self.init_blocks(keys, hparams, self.assignment)
        if isinstance(keys, jax.core.Tracer):
            return cohorts
        self.blocks = {self.space.labels.index(label): block for label, block in cohorts.blocks.items()}
        return self.view()

    def start(self, population: Member | Cohorts, extra: Any = None) -> None:
        """A resumed run's members (its checkpoint's :class:`Cohorts`) become the blocks; each cohort's backend
        starts (host: opens its members' envs; ``extra``: the checkpoint's collector keys, in member order)."""
        if isinstance(population, Cohorts):
            self.assignment = np.asarray(population.assignment, np.int64)
            self.blocks = {self.space.labels.index(label): block for label, block in population.blocks.items()}
        keys = None if extra is None else np.asarray(extra["collector_keys"])
        for cohort in sorted(self.blocks):
            self._start(cohort, keys)

    def _start(self, cohort: int, keys: np.ndarray | None) -> None:
        """Start ``cohort``'s backend on its block, placed where its program runs (a host collector acts with
        the block it starts with, in that program)."""
        self.blocks[cohort] = self._place(self.blocks[cohort])
        self._placed(cohort).start(self.blocks[cohort], self._cohort_extra(cohort, keys))

    def _cohort_extra(self, cohort: int, keys: np.ndarray | None) -> dict[str, np.ndarray] | None:
        """``cohort``'s rows of the members' collector keys (host), or None (compiled; host: the run's start)."""
        return None if keys is None else {"collector_keys": keys[self.members(cohort)]}

    def _collector_keys(self) -> np.ndarray | None:
        """Host: every member's collector keys after its last consumed block, in member order (each cohort's
        backend holds its members'); compiled: None."""
        if self.kind != "host":
            return None
        parts = {c: np.asarray(jax.random.key_data(self._placed(c).keys)) for c in sorted(self.blocks)}
        first = next(iter(parts.values()))
        keys = np.zeros((len(self.assignment), *first.shape[1:]), first.dtype)
        for cohort, data in parts.items():
            keys[self.members(cohort)] = data
        return keys

    def advance(self, population: Member, chunk: int,
                should_stop: Callable[[], bool] | None = None) -> tuple[Member, dict[str, Any]]:
        """One chunk of every cohort (one program call each); metrics placed per member."""
        parts = []
        for cohort in sorted(self.blocks):
            backend = self._placed(cohort)
            self.ran.add((cohort, len(self.members(cohort))))
            self.blocks[cohort] = self._place(self.blocks[cohort])
            self.previous[cohort] = kept_before_chunk(self.blocks[cohort])  # the chunk updates it in place
            self.blocks[cohort], metrics = backend.advance(self.blocks[cohort], chunk, should_stop)
            parts.append((self.members(cohort), metrics))
        return self.view(), merge_metrics(parts, self.config.pop)

    def evaluate(self, population: Member, chunk: int) -> np.ndarray:
        """Each cohort evaluates its members with their keys of the run's evaluation."""
        returns = np.full(self.config.pop, np.nan)
        for cohort in sorted(self.blocks):
            returns[self.members(cohort)] = self._placed(cohort).evaluate(self.blocks[cohort], chunk)
        return returns

    def apply_edits(self, population: Member, previous: Member, edits: MemberEdits,
                    imported: list[tuple[int, Member]] | None = None) -> Member:
        """The strategy's edits (see the module docstring): inside each cohort, then the moves between them.

        ``imported``: copy sources held elsewhere (a Ray block's sources in other blocks), as (cohort, the
        member as a block of one); a source index ``n + i`` (``n``: these members) names ``imported[i]``."""
        sources_of = self._sources(imported or [])
        targets, sources = np.asarray(edits.targets, int), np.asarray(edits.sources, int)
        # Only a copy's target moves: the others stay where they are here, whatever the strategy believes (a Ray
        # block reloaded from a checkpoint has its members in that checkpoint's cohorts).
        after = self.assignment.copy()
        if edits.cohorts is not None:
            after[targets] = np.asarray(edits.cohorts, np.int64)[targets]
        source_cohort = np.asarray([sources_of(int(s))[0] for s in sources], np.int64)
        stays = (after[targets] == self.assignment[targets]) & (source_cohort == self.assignment[targets])
        for cohort in sorted(self.blocks):
            local = local_edits(edits, self.members(cohort), stays)
            # where the block is: a host collector acts with the edited members' hyperparameters from now on
            local = local.replace(hparams=self._place(local.hparams))
            self.blocks[cohort] = self._placed(cohort).apply_edits(
                self.blocks[cohort], self.previous.get(cohort), local,
                self._imported_rows(edits, sources[stays & np.isin(targets, self.members(cohort))], sources_of))
        moved = {int(t): self._recreate(int(t), *sources_of(int(s)), int(after[t]), edits)
                 for t, s in zip(targets[~stays], sources[~stays])}
        if moved:
            keys, before = self._collector_keys(), {c: self.members(c) for c in self.blocks}
            self._rebuild(after, moved)
            if self.kind == "host":
                self._restart_changed(before, keys)
        return self.view()

    def _restart_changed(self, before: dict[int, np.ndarray], keys: np.ndarray) -> None:
        """Host: the cohorts whose members changed close their envs and open new ones for their members now
        (a Gymnasium env cannot move between vector envs): every member of such a cohort starts fresh
        episodes, reset with seeds derived from the step (as a resume's), and collects on with its own keys."""
        changed = [c for c in sorted(set(before) | set(self.blocks))
                   if not np.array_equal(before.get(c, []), self.members(c))]
        for cohort in changed:
            if cohort in before:
                self.backend(cohort, len(before[cohort])).stop()
        for cohort in changed:
            if cohort in self.blocks:
                self._start(cohort, keys)

    def _sources(self, imported: list[tuple[int, Member]]) -> Callable[[int], tuple[int, Member]]:
        """Source index -> (its cohort, its state as a block of one): one of these members, or ``imported``."""
        count = len(self.assignment)

        def source(index: int) -> tuple[int, Member]:
            if index < count:
                return int(self.assignment[index]), self._row(index)
            cohort, row = imported[index - count]
            return int(cohort), jax.device_put(row, jax.devices()[0])

        return source

    def _imported_rows(self, edits: MemberEdits, sources: np.ndarray, sources_of: Callable) -> Member | None:
        """What a cohort's copies take from their sources (``edits.copy_sources``, stacked) where one of
        them is held elsewhere; None where all are this cohort's own (taken from its block, as on one
        machine)."""
        if not np.any(sources >= len(self.assignment)):
            return None
        return concatenate_rows([copy_sources(sources_of(int(s))[1], np.asarray([0]), edits.copy_fields,
                                              edits.copy_experience) for s in sources])

    def export_rows(self, members: list[int]) -> list[tuple[int, Member]]:
        """(cohort, whole state as a block of one) of ``members``: copy sources for another block (Ray), which
        may re-create its member in this cohort's shape (the buffer and environments too)."""
        return [(int(self.assignment[m]), self._row(int(m))) for m in members]

    def _row(self, member: int) -> Member:
        """Member ``member``'s state as a block of one, on the first device (where programs of one member run:
        its cohort's block may be split over several)."""
        cohort = int(self.assignment[member])
        row = int(np.searchsorted(self.members(cohort), member))
        return jax.device_put(take_rows(self.blocks[cohort], np.asarray([row])), jax.devices()[0])

    def _recreate(self, target: int, source_cohort: int, src: Member, cohort: int, edits: MemberEdits) -> Member:
        """``target`` re-created in ``cohort`` from ``src`` (:func:`~populax.backends.cohort_moves.recreated_member`;
        a distillation learns from ``src`` on its replay)."""
        hparams = jax.device_put(take_rows(edits.hparams, np.asarray([target])), jax.devices()[0])
        member, how = recreated_member(
            self._row(target), src, self.template(cohort), hparams, self.config.pbt_cross_cohort, edits,
            self.backend(cohort, 1), lambda student, key: self._distill(source_cohort, cohort, student, src, key))
        self.moves[how] += 1
        return member

    def agent_of(self, cohort: int) -> Any:
        """``cohort``'s agent functions (``Agent``; distillation reads them)."""
        return self.backend(cohort, 1).agent

    def _distill(self, teacher_cohort: int, cohort: int, student: Any, teacher: Member, key: jax.Array) -> Any:
        """``student`` (a fresh agent of ``cohort``, block of one) taught ``teacher``'s outputs on its replay."""
        pair = (teacher_cohort, cohort)
        if pair not in self.distillers:
            self.distillers[pair] = jax.jit(make_distill(self.agent_of(cohort), self.agent_of(teacher_cohort),
                                                         self.config.distill_steps, self.configs[cohort].batch_size,
                                                         normalize if self.config.obs_norm else None))
        first = jax.tree.map(lambda x: x[0], (student, teacher.agent, teacher.experience, teacher.obs_stats))
        taught, losses = self.distillers[pair](*first, key)
        losses = np.asarray(losses)
        self.distilled.append({"loss_first": float(losses[0]), "loss_last": float(losses[-1])})
        return jax.tree.map(lambda x: x[None], taught)

    def _rebuild(self, after: np.ndarray, moved: dict[int, Member]) -> None:
        """The blocks of the cohorts ``after`` assigns, with the ``moved`` members' new rows."""
        self.blocks = rebuilt_blocks(self.blocks, self.assignment, after, moved)
        self.assignment, self.previous = np.asarray(after, np.int64), {}

    def gather(self, population: Member, experience: bool = True) -> Cohorts:
        """Every cohort's block (replay buffers only with ``experience``) and who is in which."""
        cohorts = self.cohorts()
        if experience:
            return cohorts
        return cohorts.replace(blocks={label: block.replace(experience=None)
                                       for label, block in cohorts.blocks.items()})

    def take_events(self) -> list[dict]:
        """No events of its own (the strategy's lineage records the moves)."""
        return []

    def extra_state(self) -> dict[str, np.ndarray] | None:
        """Host: every member's collector keys, in member order (compiled: the members hold everything)."""
        keys = self._collector_keys()
        return None if keys is None else {"collector_keys": keys}

    def stop(self) -> None:
        """Stop every cohort's backend."""
        for backend in self.backends.values():
            backend.stop()

    def summary(self) -> dict[str, Any]:
        """The cohorts at the end, the programs built, the moves by kind and the distillations' losses."""
        return {"cohorts": {
            "settings": list(self.space.names),
            "members": {self.space.labels[c]: self.members(c).tolist() for c in sorted(self.blocks)},
            "programs": len(self.ran),
            "program_sizes": {label: sorted(size for (c, size) in self.ran if c == index)
                              for index, label in enumerate(self.space.labels)},
            "moves": dict(self.moves),
            "distillations": self.distilled,
            **({"host": {self.space.labels[c]: self._placed(c).summary()["host"] for c in sorted(self.blocks)}}
               if self.kind == "host" else {}),
        }}

    # -- one saved member (``populax eval``, ``--video``) ---------------------------------------------

    def _cohort_of(self, member: Member) -> int:
        """The cohort whose agent layout ``member``'s is (its widths: every cohort of them evaluates alike)."""
        for cohort in range(len(self.configs)):
            if same_shapes(jax.tree.map(lambda x: x[None], member.agent), self.template(cohort).agent):
                return cohort
        raise ConfigError("RUN: a saved member fits none of the run's cohorts")

    def member_returns(self, member: Member, member_index: int, chunk: int, episodes: int,
                       seed: int | None = None) -> np.ndarray:
        """As its cohort's backend (the run's evaluation keys for ``member_index``)."""
        backend = self.backend(self._cohort_of(member), 1)
        backend.run_block([member_index], self.run_pop)
        return backend.member_returns(member, member_index, chunk, episodes, seed)

    def member_actor(self, member: Member) -> Callable[[np.ndarray], np.ndarray]:
        """As its cohort's backend."""
        return self.backend(self._cohort_of(member), 1).member_actor(member)
