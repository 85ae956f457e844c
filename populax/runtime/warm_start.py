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
spaces must match). Mixed-shape populations (static settings per member) on either side are refused in one
line: a member's cohort is drawn by the new run, not the source.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from populax.errors import ConfigError
from populax.member import Member, take_rows
from populax.run.checkpoint import is_key
from populax.run.config import TrainConfig
from populax.runtime.loading import checkpoint_best_member, load_checkpoint, load_setup, warn_on_stderr
from populax.runtime.setup import RunSetup, init_population

INIT_MEMBER_CHOICES = "each (member i from member i; equal populations), best (the source's best member for every "\
                      "member) or a member id"


class WarmStart(NamedTuple):
    """The source members' states a new run starts from, in the new run's member order."""

    agent: Any
    """Algorithm states stacked over the new run's members (update counters at 0)."""
    obs_stats: Any
    """Observation statistics stacked the same way, or None."""
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
    """``agent`` (stacked) with its update counter at 0, when it has one (a field named ``updates``)."""
    if hasattr(agent, "updates") and hasattr(agent, "replace"):
        return agent.replace(updates=jnp.zeros_like(agent.updates))
    if isinstance(agent, dict) and "updates" in agent:
        return {**agent, "updates": jnp.zeros_like(agent["updates"])}
    return agent


def check_fits(part: str, source: Any, target: Any, hint: str, stacked: bool = True) -> None:
    """ConfigError naming the first array of ``part`` whose shape or dtype differs (or another structure);
    ``stacked``: the arrays have a member axis first, left out of the message (a member's shape is named)."""
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
            skip = 1 if stacked else 0
            raise ConfigError(f"--init-from: {part}{where} is {np.shape(a)[skip:]} {np.asarray(a).dtype} in the source "
                              f"run, {tuple(b.shape)[skip:]} {b.dtype} here; {hint}")


def load_warm_start(setup: RunSetup, warn: Any = warn_on_stderr) -> WarmStart | None:
    """The members ``setup``'s run starts from (None without ``--init-from``), read and checked against the
    new run's shapes; ConfigError in one line for a source that does not fit. Nothing is written."""
    config: TrainConfig = setup.config
    if config.init_from is None:
        return None
    if setup.space is not None:
        raise ConfigError("--init-from: this run's members differ in static settings (a mixed-shape population); "
                          "a warm start needs one shape: give --hidden/--batch-size one value")
    source_dir = Path(config.init_from)
    if source_dir.resolve() == setup.run_dir.resolve():
        raise ConfigError(f"--init-from: {source_dir} is this run's own directory (--out); to continue it use "
                          "populax resume, or write the new run elsewhere")
    source = load_setup(source_dir)
    if source.config.algo != config.algo:
        raise ConfigError(f"--init-from: the source run trained {source.config.algo}, this run {config.algo}; "
                          "allowed: the same --algo")
    if source.space is not None:
        raise ConfigError("--init-from: the source run is a mixed-shape population (static settings per member); "
                          "allowed: a run with one shape")
    checkpoint = load_checkpoint(source, warn)
    population: Member = checkpoint.population
    best = checkpoint_best_member(checkpoint, "--init-member best") if config.init_member == "best" else None
    rows = source_members(config.init_member, source.config.pop, config.pop, best)
    shapes: Member = jax.eval_shape(lambda: init_population(setup))  # one shape: mixed runs are refused above
    hint = (f"the source is {source.config.algo} on {source.config.env} with --hidden "
            f"{','.join(map(str, source.config.hidden))}: the networks and the environment's spaces must match")
    index = np.asarray(rows)
    agent = take_rows(population.agent, index)
    check_fits("algorithm state", agent, shapes.agent, hint)
    if (population.obs_stats is None) != (shapes.obs_stats is None):
        raise ConfigError(f"--init-from: the source run has --obs-norm {str(population.obs_stats is not None).lower()}, "
                          f"this run {str(shapes.obs_stats is not None).lower()}; the networks' inputs must be "
                          "normalised alike: allowed: the source's --obs-norm")
    obs_stats = None if population.obs_stats is None else take_rows(population.obs_stats, index)
    if obs_stats is not None:
        check_fits("observation statistics", obs_stats, shapes.obs_stats, hint)
    if population.shared is not None:
        check_fits("shared state", population.shared, shapes.shared, hint, stacked=False)
    record = {"run": str(source_dir), "checkpoint": checkpoint.path.name,
              "env_step": int(checkpoint.manifest["env_step"]), "members": rows}
    return WarmStart(reset_updates(agent), obs_stats, population.shared, record)


def warm_started(population: Member, warm: WarmStart) -> Member:
    """``population`` (whole members, as ``init`` made them) with the source members' states in place."""
    def placed(new: Any, like: Any) -> Any:
        # The new run's dtypes exactly; its own RNG keys (a coupled method's sampling key): every random draw
        # of the new run comes from its seed.
        return jax.tree.map(lambda x, t: t if is_key(t) else jnp.asarray(x, dtype=t.dtype), new, like)

    return population.replace(
        agent=placed(warm.agent, population.agent),
        obs_stats=None if warm.obs_stats is None else placed(warm.obs_stats, population.obs_stats),
        shared=population.shared if warm.shared is None else placed(warm.shared, population.shared),
    )
