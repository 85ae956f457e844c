"""The search space a population strategy explores: bounds and priors per hyperparameter.

Only hyperparameters the user gave as a distribution, a per-member list or
``search`` (the declared search range) are explored (``--hp.lr-actor
loguniform:1e-5,1e-2``, ``--hp.tau search``); fixed ones stay fixed, so a
recipe says exactly what PBT/PB2 may change. Bounds are the user's
distribution's range, clipped to what the algorithm accepts (``HParamInfo.valid``).
Values are also mapped to a unit cube (log scale where the hyperparameter is
logarithmic) for perturbations and PB2's Gaussian process.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from populax.hparams import Distribution, HParamInfo, cli_name, draw_whole_numbers, hparam_infos


class Dim(NamedTuple):
    """One explored hyperparameter."""

    name: str
    """Field name (``lr_actor``)."""
    lo: float
    hi: float
    log: bool
    """Perturb and model on a log scale (learning rates)."""
    integer: bool
    choices: tuple[float, ...] | None
    """The allowed values when the prior is ``choice:``; else None."""
    prior: Distribution
    """What a resample draws from (``list`` priors resample within their bounds)."""


def make_space(hparams_type: type, specs: dict[str, Distribution]) -> list[Dim]:
    """The explored dimensions: every hyperparameter whose spec is not a constant."""
    dims = []
    for name, info in hparam_infos(hparams_type).items():
        spec = specs[name]
        if spec.kind == "const":
            continue
        lo, hi = spec.bounds()
        lo, hi = max(lo, info.valid[0]), min(hi, info.valid[1])
        log = _log_scale(info, spec, lo)
        choices = tuple(sorted(set(spec.values))) if spec.kind == "choice" else None
        dims.append(Dim(name, lo, hi, log, info.integer, choices, spec))
    return dims


def _log_scale(info: HParamInfo, spec: Distribution, lo: float) -> bool:
    """Log scale when the prior is loguniform, or the parameter is declared log and positive."""
    return spec.kind == "loguniform" or (info.log and lo > 0)


def to_unit(dim: Dim, values: np.ndarray) -> np.ndarray:
    """Map values of ``dim`` to [0, 1]."""
    lo, hi, v = dim.lo, dim.hi, np.asarray(values, np.float64)
    if dim.log:
        lo, hi, v = math.log(lo), math.log(hi), np.log(np.maximum(v, dim.lo))
    return np.clip((v - lo) / (hi - lo), 0.0, 1.0) if hi > lo else np.zeros_like(v)


def from_unit(dim: Dim, unit: np.ndarray) -> np.ndarray:
    """Map [0, 1] back to a legal value of ``dim`` (rounded / snapped as declared)."""
    u = np.clip(np.asarray(unit, np.float64), 0.0, 1.0)
    if dim.log:
        values = np.exp(math.log(dim.lo) + u * (math.log(dim.hi) - math.log(dim.lo)))
    else:
        values = dim.lo + u * (dim.hi - dim.lo)
    return legalize(dim, values)


def legalize(dim: Dim, values: np.ndarray) -> np.ndarray:
    """Clip to the bounds, round integers, snap to the nearest choice."""
    values = np.clip(np.asarray(values, np.float64), dim.lo, dim.hi)
    if dim.choices is not None:
        options = np.asarray(dim.choices)
        values = options[np.argmin(np.abs(values[:, None] - options[None, :]), axis=1)]
    if dim.integer:
        values = np.clip(np.round(values), math.ceil(dim.lo), math.floor(dim.hi))
    return values


def resample(dim: Dim, key: jax.Array, count: int) -> np.ndarray:
    """``count`` fresh draws from the prior of ``dim``."""
    if dim.choices is not None:
        index = np.asarray(jax.random.randint(key, (count,), 0, len(dim.choices)))
        return np.asarray(dim.choices)[index]
    if dim.integer and not dim.log:  # every whole number equally likely (rounding would halve the two ends)
        return draw_whole_numbers(key, dim.lo, dim.hi, count)
    return from_unit(dim, np.asarray(jax.random.uniform(key, (count,))))


def get_values(hparams: Any, dims: list[Dim]) -> np.ndarray:
    """Explored hyperparameters of every member, ``[pop, len(dims)]``."""
    if not dims:
        return np.zeros((len(np.asarray(jax.tree.leaves(hparams)[0])), 0))
    return np.stack([np.asarray(getattr(hparams, d.name), np.float64) for d in dims], axis=1)


def set_values(hparams: Any, dims: list[Dim], members: np.ndarray, values: np.ndarray) -> Any:
    """Hyperparameters with rows ``members`` of the explored fields set to ``values``."""
    updates = {}
    for j, dim in enumerate(dims):
        column = np.asarray(getattr(hparams, dim.name)).copy()
        column[members] = values[:, j]
        updates[dim.name] = jnp.asarray(column, jnp.float32)
    return hparams.replace(**updates)


def describe(dims: list[Dim]) -> dict[str, dict[str, Any]]:
    """JSON-able description of the space (for lineage and summaries)."""
    return {cli_name(d.name): {"lo": d.lo, "hi": d.hi, "log": d.log, "integer": d.integer} for d in dims}
