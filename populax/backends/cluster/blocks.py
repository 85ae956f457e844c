"""The block layout of an ``--executor ray`` run: which members each worker holds, and a worker's share of what
the driver decides (checkpoint rows, a strategy round's edits). Pure functions of the layout; no Ray here."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from populax.edits import MemberEdits
from populax.member import Cohorts, Member, take_rows


def is_whole(population: Member | Cohorts) -> bool:
    """Whether the driver holds whole members (a checkpoint's, on resume) rather than its view of the workers'
    (``driver_view``: step counts and hyperparameters only). Not ``env``: host members have none."""
    return isinstance(population, Cohorts) or population.agent is not None


def has_buffers(population: Member | Cohorts) -> bool:
    """Whether the members have replay buffers (off-policy)."""
    blocks = population.blocks.values() if isinstance(population, Cohorts) else [population]
    return any(block.experience is not None for block in blocks)


def block_extra(extra: Any, members: np.ndarray) -> Any:
    """A block's rows of a checkpoint's extra state (host: collector keys, one row per member), or None."""
    return None if extra is None else {name: np.asarray(value)[members] for name, value in extra.items()}


def block_members(pop: int, workers: int) -> list[np.ndarray]:
    """Global member indices of each worker's block: contiguous, sizes differing by at most one."""
    return np.array_split(np.arange(pop), workers)


class BlockShare(NamedTuple):
    """One worker's share of a strategy round's edits (``block_share``)."""

    edits: MemberEdits
    """The edits of this block's members, in the block's row indices (copy sources: see ``sources``)."""
    own_sources: list[int]
    """The block's own rows that its copies read, in first-use order."""
    imports: dict[int, list[int]]
    """Source block -> the run's members this block copies from it (first-use order), for that worker's
    ``export``; in ascending block order."""
    index: list[int]
    """Per copy: its source's row among ``own_sources`` followed by every import, in that order."""


def block_share(edits: MemberEdits, blocks: list[np.ndarray], block_of: np.ndarray, block: int,
                mixed: bool) -> BlockShare:
    """Worker ``block``'s share of ``edits`` (the whole run's, in run indices). Blocks are contiguous. With
    ``mixed`` (a mixed-shape population: each worker's cohort backend moves its own members between cohorts),
    the share carries its members' new cohorts, and a copy's source in another block is numbered
    ``len(block) + its place among the imported members``."""
    members = blocks[block]
    first = int(members[0])
    mine = np.isin(edits.targets, members)
    targets, sources = np.asarray(edits.targets)[mine], np.asarray(edits.sources)[mine]
    reinit = np.isin(edits.reinit, members)
    local = edits.replace(
        hparams=take_rows(edits.hparams, members), rollback=edits.rollback[members],
        reinit=np.asarray(edits.reinit)[reinit] - first,
        reinit_keys=None if not reinit.any() else edits.reinit_keys[np.flatnonzero(reinit)],
        targets=targets - first, sources=sources - first, whole=np.asarray(edits.whole)[mine],
        frozen=edits.frozen[members],
    )
    if mixed:
        local = local.replace(cohorts=None if edits.cohorts is None else np.asarray(edits.cohorts)[members])
    used = [int(s) for s in dict.fromkeys(sources.tolist())]
    order = [s for s in used if block_of[s] == block]
    imports = {source_block: [s for s in used if block_of[s] == source_block]
               for source_block in sorted({int(block_of[s]) for s in sources} - {block})}
    for wanted in imports.values():
        order += wanted
    index = [order.index(int(s)) for s in sources]
    if mixed:
        foreign = [s for s in order if block_of[s] != block]
        local = local.replace(sources=np.asarray(
            [s - first if block_of[s] == block else len(members) + foreign.index(int(s)) for s in sources],
            np.int64))
    return BlockShare(local, [s - first for s in order if block_of[s] == block], imports, index)
