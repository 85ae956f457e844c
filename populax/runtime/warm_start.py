"""``--init-from RUN``: a new run whose members start from another run's trained members (a warm start:
train longer with a fresh schedule, fine-tune on a variant of the task, or spread the best member of a sweep
over a new population).

What a member takes from the source member it is given (``--init-member``): its algorithm state (networks,
targets, optimizer moments) with the update counter (a state field named ``updates``, which the algorithms'
schedules read: PPO's and DQN's learning-rate annealing, DQN's epsilon) back at 0, so schedules span the new
run; its observation statistics (the networks' inputs are normalised with them); a coupled algorithm's
population-level state (CEM-RL's and DvD-TD3's shared critic, the CEM distribution). What it does not take:
hyperparameters (the new run's ``--hp`` and defaults: a PBT run's final values are in the source's
summary.json), replay buffers, environments, step counts and keys, which start as in any new run.

Everything is read and checked before the new run writes anything: the source's newest good checkpoint,
the algorithm, the member choice, and every array's shape (the networks' widths and the environments'
spaces must match). Mixed-shape populations (static settings per member, ``--hp.hidden 64x64,256x256``) work
on either side, member by member: the new run puts each member in the cohort its own settings say, and the
member's source must have that cohort's network shape (a member may change a static setting that leaves the
networks' shapes alone: ``--hp.batch-size 64,256`` from a one-shape source). One member that does not fit is
one line naming both members' settings.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from populax.errors import ConfigError
from populax.member import Cohorts, Member, member_row
from populax.run.checkpoint import is_key
from populax.run.config import TrainConfig
from populax.runtime.loading import checkpoint_best_member, load_checkpoint, load_setup, warn_on_stderr
from populax.runtime.setup import RunSetup, init_population

INIT_MEMBER_CHOICES = "each (member i from member i; equal populations), best (the source's best member for every "\
                      "member) or a member id"


class WarmStart(NamedTuple):
    """The source members' states a new run starts from, in the new run's member order."""

    agents: list[Any]
    """Per new member, its source member's algorithm state (no member axis; update counter at 0)."""
    obs_stats: list[Any] | None
    """Per new member, its source member's observation statistics, or None (no --obs-norm)."""
    shared: Any
    """A coupled algorithm's population-level state, or None."""
    record: dict[str, Any]
    """What summary.json and the checkpoints record: the source run, its checkpoint and env steps, and which
    source member each member took."""


def source_members(choice: str, source_pop: int, pop: int, best: int | None) -> list[int]:
    """The source member each of the new run's ``pop`` members takes (ConfigError for a choice that cannot be);
    ``best``: the source's best member (read only for ``best``)."""
    if choice == "each":
        if source_pop != pop:
            raise ConfigError(f"--init-member each: the source run has {source_pop} members, this run {pop}; "
                              "pass --init-member best or a member id, or the same --pop")
        return list(range(pop))
    if choice == "best":
        return [best] * pop
    try:
        member = int(choice)
    except ValueError:
        raise ConfigError(f"--init-member: {choice!r} is not one of {INIT_MEMBER_CHOICES}") from None
    if not 0 <= member < source_pop:
        raise ConfigError(f"--init-member: the source run has members 0..{source_pop - 1} (got {member})")
    return [member] * pop


def reset_updates(agent: Any) -> Any:
    """One member's ``agent`` with its update counter at 0, when it has one (a field named ``updates``)."""
    if hasattr(agent, "updates") and hasattr(agent, "replace"):
        return agent.replace(updates=jnp.zeros_like(agent.updates))
    if isinstance(agent, dict) and "updates" in agent:
        return {**agent, "updates": jnp.zeros_like(agent["updates"])}
    return agent


def check_fits(part: str, source: Any, target: Any, hint: str) -> None:
    """ConfigError naming the first array of ``part`` (one member's, or a population-level state) whose shape or
    dtype differs, or another structure."""
    source_leaves, source_tree = jax.tree_util.tree_flatten_with_path(source)
    target_leaves, target_tree = jax.tree_util.tree_flatten_with_path(target)
    if source_tree != target_tree:
        raise ConfigError(f"--init-from: the source members' {part} is built differently from this run's (another "
                          f"algorithm version or --algo-opt); {hint}")
    for (path, a), (_, b) in zip(source_leaves, target_leaves):
        if is_key(b):  # RNG keys are not taken (see warm_started)
            continue
        if tuple(np.shape(a)) != tuple(b.shape) or np.asarray(a).dtype != b.dtype:
            where = jax.tree_util.keystr(path)
            raise ConfigError(f"--init-from: {part}{where} is {np.shape(a)} {np.asarray(a).dtype} in the source "
                              f"run, {tuple(b.shape)} {b.dtype} here; {hint}")


def load_warm_start(setup: RunSetup, warn: Any = warn_on_stderr) -> WarmStart | None:
    """The members ``setup``'s run starts from (None without ``--init-from``), read and checked against the
    new run's shapes; ConfigError in one line for a source that does not fit. Nothing is written."""
    config: TrainConfig = setup.config
    if config.init_from is None:
        return None
    source_dir = Path(config.init_from)
    if source_dir.resolve() == setup.run_dir.resolve():
        raise ConfigError(f"--init-from: {source_dir} is this run's own directory (--out); to continue it use "
                          "populax resume, or write the new run elsewhere")
    try:  # what a loader says of its RUN argument is said of --init-from here
        source = load_setup(source_dir)
        if source.config.algo != config.algo:
            raise ConfigError(f"--init-from: the source run trained {source.config.algo}, this run {config.algo}; "
                              "allowed: the same --algo")
        checkpoint = load_checkpoint(source, warn)
    except ConfigError as error:
        raise ConfigError(re.sub(r"^RUN: ", "--init-from: ", str(error))) from None
    population: Member | Cohorts = checkpoint.population
    best = checkpoint_best_member(checkpoint, "--init-member best") if config.init_member == "best" else None
    rows = source_members(config.init_member, source.config.pop, config.pop, best)
    shapes: Member | Cohorts = jax.eval_shape(lambda: init_population(setup))
    if isinstance(shapes, Cohorts):  # traced above; the run's initial cohorts are drawn from its seed
        shapes = shapes.replace(assignment=setup.assignment)
    source_rows = {row: member_row(population, row) for row in dict.fromkeys(rows)}
    with_stats = next(iter(source_rows.values())).obs_stats is not None
    if with_stats != (member_shapes(shapes, 0).obs_stats is not None):
        raise ConfigError(f"--init-from: the source run has --obs-norm {str(with_stats).lower()}, this run "
                          f"{str(not with_stats).lower()}; the networks' inputs must be normalised alike: allowed: "
                          "the source's --obs-norm")
    mixed = isinstance(population, Cohorts) or isinstance(shapes, Cohorts)
    for member, row in enumerate(rows):
        # a mixed-shape population on either side: members fit one by one, and the message names them
        whose = f"member {member}'s " if mixed else ""
        hint = (f"the source is {source.config.algo} on {source.config.env} with "
                f"{settings_of(source.config, population, row)}"
                + (f" (its member {row})" if mixed else "")
                + (f", this run's member {member} has {settings_of(config, shapes, member)}" if mixed else "")
                + ": the networks and the environment's spaces must match")
        target = member_shapes(shapes, member)
        check_fits(f"{whose}algorithm state", source_rows[row].agent, target.agent, hint)
        if with_stats:
            check_fits(f"{whose}observation statistics", source_rows[row].obs_stats, target.obs_stats, hint)
    shared = None if isinstance(population, Cohorts) else population.shared
    if shared is not None:
        check_fits("shared state", shared, shapes.shared, f"the source is {source.config.algo}")
    record = {"run": str(source_dir), "checkpoint": checkpoint.path.name,
              "env_step": int(checkpoint.manifest["env_step"]), "members": rows}
    return WarmStart([reset_updates(source_rows[row].agent) for row in rows],
                     [source_rows[row].obs_stats for row in rows] if with_stats else None, shared, record)


def member_shapes(shapes: Member | Cohorts, member: int) -> Member:
    """One member's part of a population's shapes (``jax.eval_shape`` of its init): no member axis."""
    if isinstance(shapes, Cohorts):
        shapes = shapes.blocks[shapes.locate(member)[0]]
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), shapes.replace(shared=None))


def settings_of(config: TrainConfig, population: Member | Cohorts, member: int) -> str:
    """A member's shape-setting words for a message: its cohort's label (``hidden=64x64``) in a mixed-shape
    population, else the run's ``--hidden``."""
    if isinstance(population, Cohorts):
        return population.locate(member)[0]
    return f"--hidden {','.join(map(str, config.hidden))}"


def stacked(rows: list[Any], like: Any) -> Any:
    """Per-member pytrees stacked along a new member axis, in ``like``'s dtypes; ``like``'s own RNG keys (a
    warm start takes no key: every random draw of the new run comes from its seed)."""
    def stack(template: Any, *members: Any) -> Any:
        # through numpy: uncommitted arrays, which the new run's programs place where they run
        return template if is_key(template) else jnp.asarray(np.stack([np.asarray(x) for x in members]),
                                                              dtype=template.dtype)

    return jax.tree.map(stack, like, *rows)


def warm_started(population: Member | Cohorts, warm: WarmStart) -> Member | Cohorts:
    """``population`` (whole members, as ``init`` made them; of a mixed-shape run, its cohorts' blocks) with the
    source members' states in place."""
    if isinstance(population, Cohorts):
        return population.replace(blocks={
            label: warm_started_block(block, warm, population.members(label))
            for label, block in population.blocks.items()})
    block = warm_started_block(population, warm, np.arange(len(warm.agents)))
    shared = population.shared if warm.shared is None else placed_shared(warm.shared, population.shared)
    return block.replace(shared=shared)


def warm_started_block(block: Member, warm: WarmStart, members: np.ndarray) -> Member:
    """A stack of the new run's members ``members`` (in its row order) with their source members' states."""
    return block.replace(
        agent=stacked([warm.agents[m] for m in members], block.agent),
        obs_stats=None if warm.obs_stats is None else stacked([warm.obs_stats[m] for m in members], block.obs_stats),
    )


def placed_shared(shared: Any, like: Any) -> Any:
    """A coupled algorithm's population-level state in ``like``'s dtypes, with ``like``'s own RNG keys."""
    return jax.tree.map(lambda x, t: t if is_key(t) else jnp.asarray(x, dtype=t.dtype), shared, like)
