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
paper: {0, 0.5}) with Beta posteriors, as the reference code's bandit
(jparkerholder/DvD_ES ``bandits.py``): an arm scores 1 when the population's
mean return beats the best of the 5 iterations before the previous one, only
the last 50 scores count, the first 5 choices are uniform (``Bandit``,
``bandit_step``). The reference code's fixed schedule is the other option.
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
    """Thompson sampling over lambda values (the DvD reference's ``BayesianBandits``, as fixed-size arrays).

    One iteration is one chunk. Its feedback is 1 when the population's mean training return beats the best
    of the ``lookback`` returns before the previous one, 0 when below, 1/2 on a tie; an arm's Beta posterior
    counts the feedbacks of the last ``window`` iterations it was used in; the first ``lookback`` choices are
    uniform (see :func:`bandit_step`)."""

    arm: jax.Array
    """The arm in use (-1: warm-up at lambda 0)."""
    returns: jax.Array
    """[lookback + 1] the last population mean training returns, newest last (the lowest float32 before
    ``seen`` of them: the state stays finite, so the driver's finiteness check keeps meaning "diverged")."""
    seen: jax.Array
    """Returns recorded so far (chunks with a finite population mean)."""
    feedback: jax.Array
    """[window] the last feedbacks (1, 1/2 or 0), newest last."""
    feedback_arm: jax.Array
    """[window] the arm each feedback scored (-1: an empty slot)."""
    choices: jax.Array
    """Arms chosen so far (the first ``lookback`` are drawn uniformly)."""


def bandit_init(window: int = 50, lookback: int = 5) -> Bandit:
    """No feedback yet (uniform Beta(1, 1) posteriors for every arm: they are counted from the feedback), no
    arm chosen; the reference's window of 50 feedbacks and lookback of 5 iterations by default."""
    return Bandit(arm=jnp.int32(-1), returns=jnp.full((lookback + 1,), jnp.finfo(jnp.float32).min),
                  seen=jnp.int32(0), feedback=jnp.zeros((window,), jnp.float32),
                  feedback_arm=jnp.full((window,), -1, jnp.int32), choices=jnp.int32(0))


def shift_in(history: jax.Array, value: jax.Array) -> jax.Array:
    """``history`` with its oldest entry dropped and ``value`` appended (newest last)."""
    return jnp.concatenate([history[1:], jnp.asarray(value, history.dtype)[None]])


def posteriors(bandit: Bandit, arms: int) -> tuple[jax.Array, jax.Array]:
    """Per arm (alpha, beta): 1 + the feedback it got in the window, 1 + the feedback it did not get."""
    used = (bandit.feedback_arm[None, :] == jnp.arange(arms)[:, None]).astype(jnp.float32)  # [arms, window]
    successes = used @ bandit.feedback
    return 1.0 + successes, 1.0 + used.sum(axis=1) - successes


def bandit_step(bandit: Bandit, mean_return: jax.Array, choose: jax.Array, key: jax.Array, arms: int) -> Bandit:
    """Score the arm in use with the chunk's population ``mean_return``, then draw the next arm when ``choose``
    (after the warm-up), else stay at -1 (lambda 0).

    As the reference (jparkerholder/DvD_ES, ``bandits.py`` with ``train.py`` feeding it the population's mean
    return each iteration): the feedback of iteration i compares its return r_i with the best of r_{i-L-1} ..
    r_{i-2} (L = ``lookback``; the reference's ``rolling(5).max().shift(1)`` against the return one row ahead,
    which leaves out r_{i-1}), so it exists once L + 1 earlier returns are known; it is 1 above, 0 below,
    1/2 on a tie (``(sign + 1) / 2``). Only the last ``window`` feedbacks count, so an old lucky return stops
    deciding the posteriors. The first L choices are uniform, Thompson sampling after. A non-finite
    ``mean_return`` (no member finished an episode) records nothing.
    """
    lookback = bandit.returns.shape[0] - 1
    finite = jnp.isfinite(mean_return)
    scored = finite & (bandit.arm >= 0) & (bandit.seen >= lookback + 1)
    score = (jnp.sign(mean_return - jnp.max(bandit.returns[:lookback])) + 1.0) / 2.0
    feedback = jnp.where(scored, shift_in(bandit.feedback, score), bandit.feedback)
    feedback_arm = jnp.where(scored, shift_in(bandit.feedback_arm, bandit.arm), bandit.feedback_arm)
    returns = jnp.where(finite, shift_in(bandit.returns, mean_return), bandit.returns)
    bandit = bandit.replace(feedback=feedback, feedback_arm=feedback_arm, returns=returns,
                            seen=bandit.seen + finite.astype(jnp.int32))
    thompson_key, uniform_key = jax.random.split(key)
    alpha, beta = posteriors(bandit, arms)
    thompson = jnp.argmax(jax.random.beta(thompson_key, alpha, beta))
    uniform = jax.random.randint(uniform_key, (), 0, arms)
    arm = jnp.where(bandit.choices < lookback, uniform, thompson)
    return bandit.replace(arm=jnp.where(choose, arm, -1).astype(jnp.int32),
                          choices=bandit.choices + jnp.asarray(choose, jnp.int32))


def posterior_means(bandit: Bandit, arms: int) -> jax.Array:
    """Per arm: the posterior mean probability that it improves the population (over the window)."""
    alpha, beta = posteriors(bandit, arms)
    return alpha / (alpha + beta)
