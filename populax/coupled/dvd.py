"""DvD (Parker-Holder et al., NeurIPS 2020): population diversity as the determinant of a kernel matrix.

Each member's *embedding* is its actions on one shared batch of states. With
``K_ij = exp(-d_ij / (2 l^2))`` (``d_ij``: the mean squared difference of the
embeddings of members i and j, ``l``: the bandwidth), the population's
diversity is ``log det K``: 0 when the members act orthogonally far apart,
-> -inf when two coincide. The actors' joint loss adds ``-lambda * log det K``.

Numerically safe by construction (the reference code is known to crash on
NaN early in training): ``jitter`` on K's diagonal keeps it positive definite
even for identical members, the log determinant comes from a Cholesky
factor, the squared distance (not its square root) has a finite gradient at
0, and a non-finite member's embedding counts as zeros so it cannot poison
the others' gradients.

lambda is chosen online by Thompson sampling over a few values (the DvD
paper: {0, 0.5}) with Beta posteriors; an arm is rewarded when the
population's best return improved over the best seen so far. The reference
code's fixed schedule is the other option.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

SCHEDULE = ((50_000, 0.0), (300_000, 0.3), (700_000, 0.5))
"""The reference code's lambda schedule: (below this many env steps, lambda); 0.2 after the last."""
SCHEDULE_AFTER = 0.2


def squared_distances(embeddings: jax.Array) -> jax.Array:
    """[N, N] mean squared difference between the members' embeddings [N, ...]."""
    flat = embeddings.reshape(embeddings.shape[0], -1)
    diff = flat[:, None, :] - flat[None, :, :]
    return jnp.mean(diff * diff, axis=-1)


def kernel_matrix(embeddings: jax.Array, bandwidth: float, jitter: float) -> jax.Array:
    """The RBF kernel over the members' embeddings, with ``jitter`` on its diagonal."""
    embeddings = jnp.nan_to_num(embeddings, nan=0.0, posinf=0.0, neginf=0.0)
    kernel = jnp.exp(-squared_distances(embeddings) / (2.0 * bandwidth**2))
    return kernel + jitter * jnp.eye(kernel.shape[0])


def log_det(matrix: jax.Array) -> jax.Array:
    """log det of a symmetric positive definite matrix, from its Cholesky factor."""
    chol = jnp.linalg.cholesky(matrix)
    return 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol)))


def diversity(embeddings: jax.Array, bandwidth: float, jitter: float) -> jax.Array:
    """log det K of the population (higher: more diverse)."""
    return log_det(kernel_matrix(embeddings, bandwidth, jitter))


def mean_pairwise_distance(embeddings: jax.Array) -> jax.Array:
    """Mean Euclidean distance between two different members' embeddings (flattened)."""
    flat = embeddings.reshape(embeddings.shape[0], -1)
    n = flat.shape[0]
    diff = flat[:, None, :] - flat[None, :, :]
    distances = jnp.sqrt(jnp.sum(diff * diff, axis=-1) + 1e-12) * (1.0 - jnp.eye(n))
    return jnp.sum(distances) / (n * (n - 1))


def schedule_lambda(total_env_steps: jax.Array) -> jax.Array:
    """lambda of the reference code's schedule at ``total_env_steps`` (all members together)."""
    lam = jnp.float32(SCHEDULE_AFTER)
    for bound, value in reversed(SCHEDULE):
        lam = jnp.where(total_env_steps < bound, value, lam)
    return lam


@struct.dataclass
class Bandit:
    """Thompson sampling over lambda values with Beta(alpha, beta) posteriors."""

    alpha: jax.Array
    """Per arm: 1 + rounds it was rewarded."""
    beta: jax.Array
    """Per arm: 1 + rounds it was not."""
    arm: jax.Array
    """The arm in use (-1: warm-up at lambda 0)."""
    best: jax.Array
    """Best population return seen so far (the lowest float32 before one: state stays finite, so the
    driver's finiteness check of the shared state keeps meaning "diverged")."""


def bandit_init(arms: int) -> Bandit:
    """Uniform Beta(1, 1) posteriors, no arm chosen yet."""
    ones = jnp.ones((arms,), jnp.float32)
    return Bandit(alpha=ones, beta=ones, arm=jnp.int32(-1), best=jnp.finfo(jnp.float32).min)


def bandit_step(bandit: Bandit, best_return: jax.Array, choose: jax.Array, key: jax.Array) -> Bandit:
    """Reward the arm in use with 1 if ``best_return`` beat the best so far (else 0), then draw the
    next arm from the posteriors when ``choose`` (after the warm-up), else stay at -1 (lambda 0)."""
    improved = (best_return > bandit.best).astype(jnp.float32)
    used = (jnp.arange(bandit.alpha.shape[0]) == bandit.arm).astype(jnp.float32)  # all 0 during the warm-up
    alpha, beta = bandit.alpha + used * improved, bandit.beta + used * (1.0 - improved)
    draws = jax.random.beta(key, alpha, beta)
    return Bandit(
        alpha=alpha,
        beta=beta,
        arm=jnp.where(choose, jnp.argmax(draws), -1).astype(jnp.int32),
        best=jnp.where(jnp.isfinite(best_return), jnp.maximum(bandit.best, best_return), bandit.best),
    )


def posterior_means(bandit: Bandit) -> jax.Array:
    """Per arm: the posterior mean probability that it improves the population."""
    return bandit.alpha / (bandit.alpha + bandit.beta)
