"""PB2 (Parker-Holder et al. 2020): PBT whose explore step is a GP bandit.

The exploit step is PBT's (truncation selection, compiled copy). Explore fits
a Gaussian process to the population's history of
``(round, hyperparameters) -> fitness improvement over the round`` and picks
each replaced member's new hyperparameters by maximising an upper confidence
bound over random candidates inside the declared bounds::

    X = [round t, hyperparameters mapped to [0, 1]],  y = standardised improvement
    k(x, x') = exp(-|h - h'|^2 / (2 l^2)) * (1 - eps)^(|t - t'| / 2)   # time-varying SE
    (l, eps, noise) = argmax of the log marginal likelihood over a small grid
    for each replaced member:
        h* = argmax over candidates of  mu(t_next, h) + kappa * sigma(t_next, h)
        add (t_next, h*) to X with y = mu  (GP-BUCB: shrinks sigma there, so a
                                            batch spreads out instead of repeating)

A plain NumPy GP: the kernel is PB2's and small (tens of points), so a
dedicated implementation is shorter than adapting a library kernel.
"""

from __future__ import annotations

import itertools
import math
from typing import NamedTuple

import jax
import numpy as np

LENGTHSCALES = (0.1, 0.2, 0.4, 0.8)
EPSILONS = (0.0, 0.05, 0.2)
NOISES = (0.01, 0.1, 0.5)
KAPPA = 2.0
"""UCB exploration weight (PB2 uses a slowly growing beta_t; a constant is simpler and seeded)."""
CANDIDATES = 1000


class GPFit(NamedTuple):
    """A fitted time-varying GP (standardised targets)."""

    x: np.ndarray
    """[n, 1 + d]: round in column 0, unit-cube hyperparameters after it."""
    alpha: np.ndarray
    chol: np.ndarray
    lengthscale: float
    epsilon: float
    noise: float


def tv_kernel(a: np.ndarray, b: np.ndarray, lengthscale: float, epsilon: float) -> np.ndarray:
    """PB2's time-varying squared-exponential kernel between rows of ``a`` and ``b``."""
    sq = np.sum((a[:, None, 1:] - b[None, :, 1:]) ** 2, axis=-1)
    dt = np.abs(a[:, None, 0] - b[None, :, 0])
    return np.exp(-0.5 * sq / lengthscale**2) * (1.0 - epsilon) ** (dt / 2.0)


def fit_gp(x: np.ndarray, y: np.ndarray) -> GPFit:
    """Fit on standardised ``y``; kernel settings by maximum marginal likelihood on a grid."""
    best, best_lml = None, -math.inf
    for lengthscale, epsilon, noise in itertools.product(LENGTHSCALES, EPSILONS, NOISES):
        fit = condition(x, y, lengthscale, epsilon, noise)
        lml = -0.5 * y @ fit.alpha - np.sum(np.log(np.diag(fit.chol)))
        if lml > best_lml:
            best_lml, best = lml, fit
    return best


def condition(x: np.ndarray, y: np.ndarray, lengthscale: float, epsilon: float, noise: float) -> GPFit:
    """The GP posterior on ``(x, y)`` with fixed kernel settings."""
    k = tv_kernel(x, x, lengthscale, epsilon) + (noise + 1e-9) * np.eye(len(x))
    chol = np.linalg.cholesky(k)
    alpha = np.linalg.solve(chol.T, np.linalg.solve(chol, y))
    return GPFit(x, alpha, chol, lengthscale, epsilon, noise)


def predict(fit: GPFit, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Posterior mean and standard deviation at rows ``x``."""
    k_star = tv_kernel(x, fit.x, fit.lengthscale, fit.epsilon)
    mean = k_star @ fit.alpha
    v = np.linalg.solve(fit.chol, k_star.T)
    var = np.maximum(1.0 - np.sum(v**2, axis=0), 1e-12)
    return mean, np.sqrt(var)


def standardise(y: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance (constant targets become zeros)."""
    std = float(np.std(y))
    return (y - np.mean(y)) / std if std > 1e-12 else np.zeros_like(y)


def suggest(
    x: np.ndarray, y: np.ndarray, t_next: float, count: int, key: jax.Array, dims: int
) -> np.ndarray:
    """``count`` points of [0, 1]^dims for round ``t_next`` by batch UCB (GP-BUCB).

    ``x`` [n, 1 + dims] holds past (round, unit hyperparameters) rows and ``y``
    their fitness improvements. Without history the suggestions are uniform
    random draws (PB2 starts like random search).
    """
    candidates = np.asarray(jax.random.uniform(key, (CANDIDATES, dims)), np.float64)
    if len(x) < 2:
        return candidates[:count]
    xs, ys = np.asarray(x, np.float64), standardise(np.asarray(y, np.float64))
    chosen = []
    with_time = np.concatenate([np.full((CANDIDATES, 1), t_next), candidates], axis=1)
    fit = fit_gp(xs, ys)
    for _ in range(count):
        mean, std = predict(fit, with_time)
        best = int(np.argmax(mean + KAPPA * std))
        chosen.append(candidates[best])
        # Hallucinate the pending point at its mean: same kernel, smaller sigma there.
        xs = np.concatenate([xs, with_time[best : best + 1]])
        ys = np.concatenate([ys, mean[best : best + 1]])
        fit = condition(xs, ys, fit.lengthscale, fit.epsilon, fit.noise)
    return np.stack(chosen)
