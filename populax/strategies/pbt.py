"""Population-Based Training (Jaderberg et al. 2017): exploit and explore.

At a ready round, read top to bottom::

    fitness   = mean of each member's last evaluations (failed members: -inf)
    replaced  = the bottom fraction by fitness, plus every failed member
    sources   = for each replaced member, a member drawn from the top fraction
    exploit   : member <- copy of its source (decided here as MemberEdits; the backend copies
                where the members live, ``edits.apply_edits``)
    explore   : each explored hyperparameter x0.8 or x1.2, or resampled from its
                prior with probability p, clipped to its bounds

The reference paper's variant (Flajolet et al. 2022: copy the policy only,
always resample, replace the bottom 40% by copies of members drawn from all
the others) is ``pbt_copy=policy``, ``pbt_explore=resample``,
``pbt_bottom=0.4``, ``pbt_top=0.6``, ``pbt_reset_optimizer=True`` (the copied
actor's optimizer starts fresh). One difference stays: its learners set the
copied actor's target to the copied actor, populax copies the source's actor
target.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from populax.strategies.space import Dim, legalize, resample

PERTURB_FACTORS = (0.8, 1.2)


def fraction_count(fraction: float, pop: int) -> int:
    """Members in a fraction of the population: at least one, at most half (rounded)."""
    return min(max(1, round(fraction * pop)), pop // 2) if pop > 1 else 0


def source_count(fraction: float, pop: int, n_bottom: int) -> int:
    """Members a replaced member may copy: the best ``fraction`` (rounded), at least one, at most every member that
    is not replaced (``--pbt-top 0.6`` with ``--pbt-bottom 0.4``: the paper's "any member above the bottom")."""
    return min(max(1, round(fraction * pop)), pop - n_bottom) if pop > 1 else 0


def truncation_selection(
    fitness: np.ndarray, n_bottom: int, n_top: int, key: jax.Array
) -> tuple[np.ndarray, np.ndarray]:
    """Members to replace and, for each, the member it copies.

    The ``n_bottom`` worst members are replaced by members drawn uniformly from
    the ``n_top`` best. Members whose fitness is not finite (failed) are always
    replaced, on top of the bottom ones, and never copied from. Ties are broken
    by member index so the choice is deterministic.
    """
    pop = len(fitness)
    order = np.lexsort((np.arange(pop), np.nan_to_num(fitness, nan=-np.inf)))  # ascending
    failed = np.flatnonzero(~np.isfinite(fitness))
    healthy = order[~np.isin(order, failed)]
    n_top = min(n_top, len(healthy))
    if n_top == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    bottom_members = healthy[: max(0, min(n_bottom, len(healthy) - n_top))]
    replaced = np.concatenate([failed, bottom_members]).astype(np.int64)
    top_members = healthy[len(healthy) - n_top :]
    picks = np.asarray(jax.random.randint(key, (len(replaced),), 0, n_top))
    return replaced, top_members[picks].astype(np.int64)


def perturb(
    dims: list[Dim], values: np.ndarray, key: jax.Array, resample_prob: float
) -> np.ndarray:
    """PBT explore of rows ``values [k, len(dims)]``: x0.8/x1.2 or a prior draw, clipped."""
    out = np.array(values, np.float64, copy=True)
    for j, dim in enumerate(dims):
        coin_key, factor_key, draw_key = jax.random.split(jax.random.fold_in(key, j), 3)
        count = len(values)
        fresh = resample(dim, draw_key, count)
        up = np.asarray(jax.random.bernoulli(factor_key, 0.5, (count,)))
        stepped = _step(dim, values[:, j], up)
        redraw = np.asarray(jax.random.uniform(coin_key, (count,))) < resample_prob
        out[:, j] = np.where(redraw, fresh, stepped)
    return out


def _step(dim: Dim, values: np.ndarray, up: np.ndarray) -> np.ndarray:
    """Multiply by 1.2 (``up``) or 0.8; integers and choices move at least one notch."""
    if dim.choices is not None:
        options = np.asarray(dim.choices)
        index = np.argmin(np.abs(values[:, None] - options[None, :]), axis=1)
        return options[np.clip(index + np.where(up, 1, -1), 0, len(options) - 1)]
    moved = legalize(dim, values * np.where(up, PERTURB_FACTORS[1], PERTURB_FACTORS[0]))
    if dim.integer:
        # x0.8/x1.2 of a small integer rounds back to itself (delay 2 -> 1.6 -> 2).
        stuck = moved == values
        moved = np.where(stuck, legalize(dim, values + np.where(up, 1.0, -1.0)), moved)
    return moved


def resample_all(dims: list[Dim], count: int, key: jax.Array) -> np.ndarray:
    """The paper's explore: every explored hyperparameter drawn afresh from its prior."""
    columns = [resample(dim, jax.random.fold_in(key, j), count) for j, dim in enumerate(dims)]
    return np.stack(columns, axis=1) if columns else np.zeros((count, 0))


def sources_vector(pop: int, replaced: np.ndarray, sources: np.ndarray) -> jax.Array:
    """The full gather index of a round's hyperparameters: identity except ``replaced -> sources``."""
    index = np.arange(pop)
    index[replaced] = sources
    return jnp.asarray(index, jnp.int32)


def is_ready(env_steps: int, ready_interval: int) -> bool:
    """A round is due when the members' step count is a whole multiple of the interval."""
    return env_steps > 0 and env_steps % ready_interval == 0


def window_mean(history: list[float], window: int) -> float:
    """Fitness: mean of the last ``window`` evaluations (-inf without any)."""
    recent = history[-window:]
    return float(np.mean(recent)) if recent else -math.inf
