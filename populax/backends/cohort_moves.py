"""What the strategy's edits do to a mixed-shape population's blocks (``backends/cohorts.py``), as functions of
the blocks: the part of the edits inside one cohort, a member re-created in another cohort's shape, and the
blocks rebuilt after members moved. Read with the cohort backend's ``apply_edits``::

    local_edits(edits, members of c)      -> the edits between members of cohort c, in its block's rows
    recreated_member(own, source, ...)    -> a member that moves to cohort c, in c's shape
    rebuilt_blocks(blocks, before, after) -> every cohort's block in member order, the moved rows in place
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from populax.edits import MemberEdits
from populax.member import Member, concatenate_rows, take_rows


def same_shapes(a: Any, b: Any) -> bool:
    """Whether two pytrees (arrays or ``ShapeDtypeStruct``s) have one structure, shapes and dtypes."""
    leaves_a, tree_a = jax.tree.flatten(a)
    leaves_b, tree_b = jax.tree.flatten(b)
    return tree_a == tree_b and all(x.shape == y.shape and x.dtype == y.dtype for x, y in zip(leaves_a, leaves_b))


def can_distill(agent: Any) -> bool:
    """Whether an algorithm's agent declares a distillation (``Agent.distill``; on-policy agents have none)."""
    return getattr(agent, "distill", None) is not None


def local_edits(edits: MemberEdits, members: np.ndarray, copies: np.ndarray) -> MemberEdits:
    """The part of ``edits`` inside one cohort (members ``members``), in its block's row indices; ``copies``:
    bool per copy of ``edits``, the copies between members of this cohort that stay in it."""
    position = {int(m): i for i, m in enumerate(members)}
    targets, sources = np.asarray(edits.targets, int), np.asarray(edits.sources, int)
    mine = copies & np.isin(targets, members)
    reinit = np.isin(np.asarray(edits.reinit, int), members)

    def local(index: np.ndarray) -> np.ndarray:
        # -1: a source held elsewhere (Ray), whose rows the copy is given
        return np.asarray([position.get(int(i), -1) for i in index], np.int64)

    return edits.replace(
        hparams=take_rows(edits.hparams, members), rollback=np.asarray(edits.rollback)[members],
        reinit=local(np.asarray(edits.reinit, int)[reinit]),
        reinit_keys=None if not reinit.any() else edits.reinit_keys[np.flatnonzero(reinit)],
        targets=local(targets[mine]), sources=local(sources[mine]), whole=np.asarray(edits.whole)[mine],
        frozen=np.asarray(edits.frozen)[members], cohorts=None)


def recreated_member(own: Member, source: Member, shape: Member, hparams: Any, mode: str, edits: MemberEdits,
                     backend: Any, distill: Callable[[Any, jax.Array], Any]) -> tuple[Member, str]:
    """A member (``own``, a block of one) re-created in another cohort from ``source`` (a block of one), and
    how its agent was made (``copy``, ``distill`` or ``fresh``).

    ``shape``: one member of the new cohort as shapes; ``hparams``: the member's new hyperparameters (a block
    of one); ``mode``: ``--pbt-cross-cohort``; ``backend``: the new cohort's backend of one member (its init);
    ``distill(student, key)``: a fresh agent taught the source's outputs on the source's replay.

    The agent: the source's where ``mode`` is copy and the shapes match, else a fresh init, distilled from the
    source unless ``mode`` is fresh or the algorithm declares no distillation. The source's observation
    statistics; its own buffer and environments where their layout fits the new cohort (a copy keeps its own,
    as inside a cohort), else the source's, else fresh ones (an empty buffer refills before the member learns);
    its own step count; a key split from its own.
    """
    next_key, init_key, distill_key = jax.random.split(own.key[0], 3)
    if mode == "copy" and same_shapes(source.agent, shape.agent):
        how, agent = "copy", source.agent
        if edits.fresh_fields:  # --pbt-reset-optimizer: the copied optimizer states start fresh, as in a cohort
            new = backend.init_agents(init_key[None], hparams)
            agent = agent.replace(**{name: getattr(new, name) for name in edits.fresh_fields})
    else:
        agent = backend.init_agents(init_key[None], hparams)
        how = "distill" if mode != "fresh" and can_distill(backend.agent) else "fresh"
        if how == "distill":
            agent = distill(agent, distill_key)
    fresh = None
    mine = [source, own] if edits.copy_experience else [own, source]
    fitting = [m for m in mine if same_shapes(m.experience, shape.experience)]
    if fitting:
        experience, learn_from = fitting[0].experience, fitting[0].learn_from
    else:  # no buffer of this layout: an empty one, refilled before the member learns
        fresh = backend.init_population(init_key[None], hparams)
        experience, learn_from = fresh.experience, own.env_steps + edits.refill
    envs = [m.env for m in (own, source) if same_shapes(m.env, shape.env)]
    if not envs:
        fresh = fresh or backend.init_population(init_key[None], hparams)
        envs = [fresh.env]
    member = Member(agent=agent, hparams=hparams, obs_stats=source.obs_stats, experience=experience, env=envs[0],
                    env_steps=own.env_steps, learn_from=learn_from, key=next_key[None])
    return member, how


def rebuilt_blocks(blocks: dict[int, Member], before: np.ndarray, after: np.ndarray,
                   moved: dict[int, Member]) -> dict[int, Member]:
    """The blocks of the cohorts ``after`` assigns (cohort per member), each in member order: the rows of the
    members that stay (``blocks`` hold them as ``before`` assigned them) and the ``moved`` members' new rows; a
    cohort whose members did not change keeps its block as it is."""
    rebuilt = {}
    for cohort in sorted(set(np.asarray(after).tolist())):
        members, previous = np.flatnonzero(after == cohort), np.flatnonzero(before == cohort)
        staying = np.asarray([m for m in members if m not in moved], int)
        incoming = [m for m in members if m in moved]
        if not incoming and np.array_equal(members, previous):
            rebuilt[cohort] = blocks[cohort]
            continue
        parts, order = [], []
        if staying.size:
            parts.append(take_rows(blocks[cohort], np.searchsorted(previous, staying)))
            order += staying.tolist()
        parts += [moved[m] for m in incoming]
        order += incoming
        rebuilt[cohort] = take_rows(concatenate_rows(parts), np.argsort(np.asarray(order)))
    return rebuilt
