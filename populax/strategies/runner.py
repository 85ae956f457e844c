"""The host side of a population strategy, called once per chunk after evaluation.

``PopulationStrategy.update(population, returns, metrics, chunk)`` returns
the edits to make to the members' states (``edits.MemberEdits``,
applied by the backend where the states live), the returns to report and the
lineage events of this chunk. It reads only what the driver holds of the
members (hyperparameters, step counts). Per chunk, top to bottom::

    failed   = members whose parameters (the driver's `finite` flag), losses
               or evaluation return are NaN/Inf; their envs are rolled back
               to before the chunk and their buffers lose the chunk's transitions
    record each healthy member's evaluation in its fitness window
    independent: failed members are re-initialised or frozen; done
    pbt / pb2:   if a round is due (every ready_interval env steps) or a member
                 failed: truncation selection -> compiled exploit -> explore
                 (pbt: perturb/resample; pb2: GP-bandit suggestion); a failed
                 member no healthy one can replace (all failed) is re-initialised
    every event -> lineage.jsonl

Members are edited only through ``populax.edits`` over the declared layout of ``populax.member``
(``apply_edits``: rollback, re-initialise, copy, freeze), so the same code serves
off-policy and on-policy members on every backend, Ray blocks included.

Every random draw comes from ``fold_in(fold_in(key(seed), 4), chunk)``, so the
same seed gives the same lineage. All bookkeeping (fitness windows, schedules,
PB2 history, frozen members) is plain JSON-able data: see :meth:`state_dict`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import jax
import numpy as np

import populax.strategies.independent as independent
import populax.strategies.pb2 as pb2
import populax.strategies.pbt as pbt
from populax.cohorts import CROSS_COHORT, StaticSpace
from populax.edits import MemberEdits, no_edits
from populax.errors import ConfigError
from populax.hparams import member_hparams
from populax.population import copy_members
from populax.strategies.space import Dim, from_unit, get_values, set_values, to_unit

STRATEGIES = ("independent", "pbt", "pb2")
COPY_MODES = ("all", "policy")
EXPLORE_MODES = ("perturb", "resample")
STRATEGY_KEY = 4
"""fold_in constant of the strategy's keys (1: hparams, 2: init, 3: evaluation)."""
STATIC_EXPLORE_KEY = 1
"""fold_in constant of a round's key for the explore of static settings (beside the round's split keys)."""


def fresh_fields(config: Any, policy_fields: tuple[str, ...] | None,
                 optimizer_fields: tuple[str, ...] | None) -> tuple[str, ...]:
    """The agent fields an exploit's target takes fresh (``--pbt-reset-optimizer``): the optimizer states it
    copies (``--pbt-copy policy``: those among the policy's fields; else all of them)."""
    if not config.pbt_reset_optimizer or config.strategy == "independent":  # independent: never copies
        return ()
    if optimizer_fields is None:
        raise ConfigError(f"--pbt-reset-optimizer: {config.algo} does not declare its optimizer states "
                          "(Algorithm.optimizer_fields: names of its state's optimizer fields)")
    if config.pbt_copy == "policy" and policy_fields is not None:
        copied = tuple(name for name in optimizer_fields if name in policy_fields)
        if not copied:  # nothing to reset: say so rather than do nothing
            raise ConfigError(f"--pbt-reset-optimizer: --pbt-copy policy copies none of {config.algo}'s optimizer "
                              f"states (its policy_fields {', '.join(policy_fields)} hold none of "
                              f"{', '.join(optimizer_fields)}); use --pbt-copy all, or leave it out")
        return copied
    return tuple(optimizer_fields)


def check_strategy_config(config: Any, chunk_steps: int, dims: list[Dim]) -> int:
    """Validate the strategy settings (ConfigError naming the setting); return the ready interval."""
    if config.strategy not in STRATEGIES:
        raise ConfigError(f"--strategy: unknown strategy {config.strategy!r}; allowed: {', '.join(STRATEGIES)}")
    if config.strategy != "independent" and config.pop < 2:  # a round copies a better member into a worse one
        raise ConfigError(f"--strategy {config.strategy}: needs --pop >= 2 (a replaced member copies another; "
                          f"got {config.pop}); a population of one trains with independent")
    if config.on_failure not in independent.ON_FAILURE:
        raise ConfigError(f"--on-failure: got {config.on_failure!r}; allowed: {', '.join(independent.ON_FAILURE)}")
    if config.pbt_copy not in COPY_MODES:
        raise ConfigError(f"--pbt-copy: got {config.pbt_copy!r}; allowed: {', '.join(COPY_MODES)}")
    if config.pbt_explore not in EXPLORE_MODES:
        raise ConfigError(f"--pbt-explore: got {config.pbt_explore!r}; allowed: {', '.join(EXPLORE_MODES)}")
    if not 0 < config.pbt_bottom <= 0.5:
        raise ConfigError(f"--pbt-bottom must be a fraction in (0, 0.5] (got {config.pbt_bottom})")
    if not 0 < config.pbt_top <= 1 - config.pbt_bottom + 1e-9:
        raise ConfigError(f"--pbt-top must be a fraction in (0, 1 - --pbt-bottom] = (0, {1 - config.pbt_bottom:g}] "
                          f"(got {config.pbt_top}): the members copied from are not the ones replaced")
    if config.pbt_cross_cohort not in CROSS_COHORT:
        raise ConfigError(f"--pbt-cross-cohort: got {config.pbt_cross_cohort!r}; allowed: {', '.join(CROSS_COHORT)}")
    if not 0 <= config.pbt_resample_prob <= 1:
        raise ConfigError(f"--pbt-resample-prob must be in [0, 1] (got {config.pbt_resample_prob})")
    if config.fitness_window < 1:
        raise ConfigError(f"--fitness-window must be >= 1 (got {config.fitness_window})")
    ready = config.ready_interval or 2 * chunk_steps
    if config.ready_interval < 0 or ready % chunk_steps:
        raise ConfigError(
            f"--ready-interval must be a positive multiple of the evaluation period ({chunk_steps} env steps) "
            f"or 0 for two periods (got {config.ready_interval})"
        )
    if config.strategy == "pb2" and not dims:
        raise ConfigError(
            "--strategy pb2: needs at least one hyperparameter given as a distribution or list "
            "(e.g. --hp.lr-actor loguniform:1e-5,1e-2)"
        )
    return ready


def detect_failures(metrics: dict[str, Any], returns: np.ndarray) -> np.ndarray:
    """Per member: parameters not finite (in-graph flag), an Inf loss, or a non-finite return.

    Losses are NaN by design before learning starts (no update ran), so only
    Inf counts there; a NaN that reaches the parameters is caught by ``finite``.
    """
    failed = ~np.isfinite(np.asarray(returns, np.float64))
    if "finite" in metrics:
        failed |= ~np.asarray(metrics["finite"]).astype(bool)
    for name, value in metrics.items():
        if name != "finite":
            failed |= np.isinf(np.asarray(value, np.float64))
    return failed


class PopulationStrategy:
    """One run's strategy: its settings, its bookkeeping and its lineage file."""

    def __init__(
        self,
        config: Any,
        dims: list[Dim],
        ready_interval: int,
        num_chunks: int,
        total_steps: int,
        hparams: Any,
        run_dir: Path | None,
        policy_fields: tuple[str, ...] | None = None,
        optimizer_fields: tuple[str, ...] | None = None,
        space: StaticSpace | None = None,
        assignment: np.ndarray | None = None,
    ):
        """``policy_fields`` are the agent fields ``--pbt-copy policy`` copies (None: the whole agent);
        ``space``, ``assignment``: a mixed-shape population's static settings and each member's first cohort."""
        self.config = config
        self.policy_fields = policy_fields
        self.fresh_fields = fresh_fields(config, policy_fields, optimizer_fields)
        self.dims = dims
        self.ready_interval = ready_interval
        self.num_chunks = num_chunks
        self.total_steps = total_steps
        self.path = None if run_dir is None else Path(run_dir) / "lineage.jsonl"
        pop = config.pop
        self.history: list[list[float]] = [[] for _ in range(pop)]
        """Per member: evaluation returns since its last copy or re-initialisation."""
        self.schedules: list[list[dict]] = [
            [{"env_step": 0, "hparams": member_hparams(hparams, i)}] for i in range(pop)
        ]
        """Per member: its hyperparameters over time, inherited along copies."""
        self.frozen: list[bool] = [False] * pop
        self.baseline: list[float | None] = [None] * pop
        """PB2: each member's fitness at the start of the current round."""
        self.pb2_x: list[list[float]] = []
        self.pb2_y: list[float] = []
        self.rounds = 0
        self.events: list[dict] = []
        self.refill = max(config.batch_size, config.learning_starts)
        """Transitions a rolled-back member's buffer must hold before it learns again."""
        self.space = space
        self.cohort: list[int] | None = None if assignment is None else [int(c) for c in assignment]
        """Mixed-shape populations: each member's cohort (a copy from another cohort moves its target there)."""
        if space is not None:
            self.refill = max([self.refill, *space.values.get("batch_size", ())])
            for i, schedule in enumerate(self.schedules):
                schedule[0]["static"] = space.texts(self.cohort[i])

    # -- serialisation (for checkpoints) ------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """All bookkeeping as JSON-able data (lists, floats, None): enough to resume the strategy."""
        return {
            "history": self.history,
            "schedules": self.schedules,
            "frozen": self.frozen,
            "baseline": self.baseline,
            "pb2_x": self.pb2_x,
            "pb2_y": self.pb2_y,
            "rounds": self.rounds,
            # As one JSON text: a checkpoint's dicts come back with their keys sorted (pytree order), and the
            # lineage.jsonl a resume rewrites from them would differ from the uninterrupted run's in key order.
            "events": json.dumps(self.events),
            "cohort": self.cohort,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (e.g. when resuming a run)."""
        for name in ("history", "schedules", "frozen", "baseline", "pb2_x", "pb2_y", "rounds"):
            setattr(self, name, state[name])
        events = state["events"]  # a list in checkpoints older than the JSON text
        self.events = json.loads(events) if isinstance(events, str) else list(events)
        if state.get("cohort") is not None:
            self.cohort = [int(c) for c in state["cohort"]]

    # -- the per-chunk hook ---------------------------------------------------------------

    def update(
        self, population: Any, returns: np.ndarray, metrics: dict[str, Any], chunk: int
    ) -> tuple[MemberEdits, np.ndarray, list[dict]]:
        """Decide after ``chunk``'s evaluation (see the module docstring): the edits to the members' states
        (applied by the backend where they live), the returns to report and the lineage events.

        Reads only what the driver holds of the members: their hyperparameters and step counts.
        """
        returns = np.array(returns, np.float64, copy=True)
        env_step = int(np.max(np.asarray(population.env_steps)))
        frozen = np.asarray(self.frozen, bool)
        failed = detect_failures(metrics, returns) & ~frozen
        edits = no_edits(population.hparams, self.config.pop, self.policy_fields,
                         self.config.pbt_copy_buffer, self.refill).replace(rollback=failed, fresh_fields=self.fresh_fields)
        for i in np.flatnonzero(~failed & ~frozen):
            self.history[i].append(float(returns[i]))
            if self.baseline[i] is None:
                self.baseline[i] = float(returns[i])
        key = jax.random.fold_in(jax.random.fold_in(jax.random.key(self.config.seed), STRATEGY_KEY), chunk)
        select_key, explore_key, reinit_key = jax.random.split(key, 3)
        self.static_key = jax.random.fold_in(key, STATIC_EXPLORE_KEY)
        if self.config.strategy == "independent":
            edits, returns, events = self._independent(edits, returns, failed, env_step, reinit_key)
        else:
            ready = pbt.is_ready(env_step, self.ready_interval) and chunk < self.num_chunks - 1
            events = []
            if ready or failed.any():
                edits, events = self._exploit_explore(edits, returns, failed, ready, env_step, select_key, explore_key)
            # Every member failed at once: none is left to copy from, so they start again (as independent's
            # reinit) rather than train on with NaN parameters.
            orphans = np.flatnonzero(failed & ~np.isin(np.arange(self.config.pop), np.asarray(edits.targets)))
            if orphans.size:
                edits, reinit_events = self._reinitialise(edits, orphans, returns, env_step, reinit_key)
                events += reinit_events
        self._write(events)
        return edits, returns, events

    def _reinitialise(self, edits, members, returns, env_step, key):
        """Members ``members`` (indices) get fresh agents, keeping their hyperparameters: one reinit event each."""
        edits = edits.replace(reinit=members, reinit_keys=jax.random.split(key, self.config.pop)[members])
        events = []
        for i in members:
            self.history[i] = []
            self.baseline[i] = None  # PB2 measures a fresh agent's improvement from its own first evaluation
            hp = member_hparams(edits.hparams, int(i))
            events.append(self._event("reinit", env_step, i, None, hp, hp, returns[i], None))
        return edits, events

    def _independent(self, edits, returns, failed, env_step, key):
        events = []
        members = np.flatnonzero(failed)
        if members.size and self.config.on_failure == "reinit":
            edits, events = self._reinitialise(edits, members, returns, env_step, key)
        if self.config.on_failure == "freeze":
            for i in members:
                self.frozen[i] = True
                hp = member_hparams(edits.hparams, int(i))
                events.append(self._event("freeze", env_step, i, None, hp, hp, returns[i], None))
        frozen = np.asarray(self.frozen, bool)
        if frozen.any():
            edits = edits.replace(frozen=frozen)
            for i in np.flatnonzero(frozen):  # report the last finite evaluation of a frozen member
                returns[i] = self.history[i][-1] if self.history[i] else math.nan
        return edits, returns, events

    def _exploit_explore(self, edits, returns, failed, ready, env_step, select_key, explore_key):
        pop = self.config.pop
        fitness = np.asarray([pbt.window_mean(h, self.config.fitness_window) for h in self.history])
        fitness[failed] = -math.inf
        values = get_values(edits.hparams, self.dims)
        if ready:
            self.rounds += 1
            if self.config.strategy == "pb2":
                self._record_improvements(values, fitness)
        n_bottom = pbt.fraction_count(self.config.pbt_bottom, pop) if ready else 0
        replaced, sources = pbt.truncation_selection(
            fitness, n_bottom, pbt.source_count(self.config.pbt_top, pop, n_bottom), select_key
        )
        if replaced.size == 0:
            return edits, []
        old_hp = [member_hparams(edits.hparams, int(i)) for i in replaced]
        # A failed member takes its source's whole agent even under --pbt-copy policy: its own
        # critics are NaN too, and would poison the copied actor at the next update.
        whole = failed[replaced] | (self.config.pbt_copy != "policy" or self.policy_fields is None)
        hparams = copy_members(edits.hparams, pbt.sources_vector(pop, replaced, sources))
        if self.dims:
            hparams = set_values(hparams, self.dims, replaced, self._explore(values[sources], explore_key))
        edits = edits.replace(hparams=hparams, targets=replaced, sources=sources, whole=whole)
        old_cohort = None if self.cohort is None else list(self.cohort)
        if self.cohort is not None:
            edits = edits.replace(cohorts=self._move(replaced, sources))
        events = []
        for i, src, old in zip(replaced, sources, old_hp):
            i, src = int(i), int(src)
            new = member_hparams(hparams, i)
            kind = "replace_failed" if failed[i] else "exploit"
            event = self._event(kind, env_step, i, src, old, new, fitness[i], fitness[src])
            entry = {"env_step": env_step, "hparams": new}
            if old_cohort is not None:  # lineage shows the moves between cohorts
                event["old_static"] = self.space.texts(old_cohort[i])
                event["new_static"] = entry["static"] = self.space.texts(self.cohort[i])
                # the member is re-created in a new shape when either differs from old_static
                event["source_static"] = self.space.texts(old_cohort[src])
            events.append(event)
            self.history[i] = []
            self.baseline[i] = float(fitness[src])
            self.schedules[i] = [*self.schedules[src], entry]
        return edits, events

    def _move(self, replaced: np.ndarray, sources: np.ndarray) -> np.ndarray:
        """Mixed-shape populations: each replaced member joins its source's cohort, and with
        ``--pbt-static-explore`` each of its static settings may move on to a neighbouring value."""
        for k, (i, src) in enumerate(zip(replaced, sources)):
            cohort = self.cohort[int(src)]
            if self.config.pbt_static_explore > 0:
                cohort = self.space.explore(cohort, jax.random.fold_in(self.static_key, k),
                                            self.config.pbt_static_explore)
            self.cohort[int(i)] = cohort
        return np.asarray(self.cohort, np.int64)

    def _explore(self, values: np.ndarray, key: jax.Array) -> np.ndarray:
        """New hyperparameters for copies whose sources had ``values``."""
        if self.config.strategy == "pb2":
            unit = pb2.suggest(
                np.asarray(self.pb2_x).reshape(-1, 1 + len(self.dims)),
                np.asarray(self.pb2_y),
                float(self.rounds + 1),
                len(values),
                key,
                len(self.dims),
            )
            return np.stack([from_unit(d, unit[:, j]) for j, d in enumerate(self.dims)], axis=1)
        if self.config.pbt_explore == "resample":
            return pbt.resample_all(self.dims, len(values), key)
        return pbt.perturb(self.dims, values, key, self.config.pbt_resample_prob)

    def _record_improvements(self, values: np.ndarray, fitness: np.ndarray) -> None:
        """PB2 data: (round, unit hyperparameters) -> fitness change over the round."""
        unit = np.stack([to_unit(d, values[:, j]) for j, d in enumerate(self.dims)], axis=1)
        for i in range(self.config.pop):
            if np.isfinite(fitness[i]) and self.baseline[i] is not None:
                self.pb2_x.append([float(self.rounds), *map(float, unit[i])])
                self.pb2_y.append(float(fitness[i] - self.baseline[i]))
                self.baseline[i] = float(fitness[i])

    # -- lineage ----------------------------------------------------------------------------

    def _event(self, kind, env_step, member, source, old, new, fitness, source_fitness) -> dict:
        event = {
            "event": kind,
            "env_step": int(env_step),
            "member": int(member),
            "source": None if source is None else int(source),
            "old_hparams": old,
            "new_hparams": new,
            "fitness": _finite_or_none(fitness),
            "source_fitness": _finite_or_none(source_fitness),
        }
        self.events.append(event)
        return event

    def record(self, events: list[dict]) -> None:
        """Add events that happened outside the strategy (a backend's: a Ray block reloaded) to the lineage; a
        mixed-shape member an event puts back in a cohort (``cohort``: its label) is there from now on."""
        for event in events:
            if self.cohort is not None and event.get("cohort") is not None:
                self.cohort[int(event["member"])] = self.space.labels.index(event["cohort"])
        self.events.extend(events)
        self._write(events)

    def rewrite_lineage(self) -> None:
        """Make lineage.jsonl hold exactly ``self.events`` (after resuming from a checkpoint)."""
        if self.path is not None and self.path.parent.is_dir():
            self.path.write_text("".join(json.dumps(event) + "\n" for event in self.events))
            if not self.events:
                self.path.unlink()

    def _write(self, events: list[dict]) -> None:
        if self.path is None or not events:
            return
        with self.path.open("a") as f:
            for event in events:
                f.write(json.dumps(event) + "\n")

    def summary(self, best_member: int) -> dict[str, Any]:
        """What summary.json gains: the strategy, event counts, the best member's schedule."""
        counts: dict[str, int] = {}
        for event in self.events:
            counts[event["event"]] = counts.get(event["event"], 0) + 1
        return {
            "strategy": self.config.strategy,
            "lineage_events": counts,
            "best_member_schedule": self.schedules[best_member],
        }


def _finite_or_none(value: float | None) -> float | None:
    return float(value) if value is not None and math.isfinite(float(value)) else None
