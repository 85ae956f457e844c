"""The separable cross-entropy method of CEM-RL (Pourchot and Sigaud, ICLR 2019), as pure JAX functions.

A diagonal Gaussian over a flat parameter vector, exactly as the reference
code's ``sepCEM`` (``es.py`` of apourchot/CEM-RL)::

    ask:  eps ~ N(0, I) (mirrored: eps_{n/2+i} = -eps_i);  x_i = mu + eps_i * sqrt(cov)
    tell: sort by fitness; parents = the best half
          damp <- damp * 0.95 + 0.05 * damp_limit
          mu   <- sum_i w_i x_(i)                            w_i ~ log((parents + 1) / i), normalised
          cov  <- (1 / parents) * sum_i w_i (x_(i) - mu_old)^2 + damp

Like the reference, ``sigma_init`` initialises the *variance* (``cov``), and
the elite (best sample so far of the last generation) replaces the last
sample when elitism is on. Everything is a traced array, so ask and tell run
inside the compiled generation and the state is checkpointed with the members.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
from flax import struct


@dataclass(frozen=True)
class CEMOptions:
    """Static settings of the distribution (the reference's defaults; the sample count is the population size)."""

    parents: int = 0
    """Elites the CEM refits to (0 = half the population)."""
    sigma_init: float = 1e-3
    """Initial variance of every coordinate (the reference's sigma_init)."""
    damp: float = 1e-3
    """Initial diagonal noise added to the variance each generation."""
    damp_limit: float = 1e-5
    """Value the diagonal noise decays toward."""
    damp_decay: float = 0.95
    """Per-generation decay factor of the diagonal noise (the reference's tau)."""
    mirrored: bool = True
    """Antithetic sampling: samples i and i + pop/2 are mirror images around the mean."""
    elitism: bool = False
    """The last sample is the previous generation's best instead of a draw."""


def num_parents(options: CEMOptions, pop: int) -> int:
    """Elites per generation."""
    return options.parents or pop // 2


@struct.dataclass
class CEMState:
    """The distribution and its bookkeeping."""

    mean: jax.Array
    """Mean of the Gaussian (flat parameters)."""
    var: jax.Array
    """Diagonal variance."""
    damp: jax.Array
    """Current diagonal noise."""
    elite: jax.Array
    """Best sample of the last generation (used with elitism)."""
    elite_score: jax.Array
    """Its fitness (the lowest float32 before the first tell or when no sample was finite: the state stays
    finite, so the driver's finiteness check of the shared state keeps meaning "diverged")."""
    generation: jax.Array
    """Generations told so far."""


def cem_init(mean: jax.Array, settings: CEMOptions) -> CEMState:
    """The distribution centred on ``mean`` with variance ``sigma_init``."""
    mean = jnp.asarray(mean, jnp.float32)
    return CEMState(mean=mean, var=jnp.full_like(mean, settings.sigma_init), damp=jnp.float32(settings.damp),
                    elite=mean, elite_score=jnp.finfo(jnp.float32).min, generation=jnp.zeros((), jnp.int32))


def parent_weights(parents: int) -> jax.Array:
    """Log-rank weights of the parents, best first, summing to 1."""
    ranks = jnp.arange(1, parents + 1, dtype=jnp.float32)
    weights = jnp.log((parents + 1) / ranks)
    return weights / weights.sum()


def cem_ask(state: CEMState, key: jax.Array, settings: CEMOptions, pop: int) -> jax.Array:
    """``pop`` samples [pop, D]; mirrored pairs (i, i + pop/2) are mean +- the same step."""
    dim = state.mean.shape[0]
    if settings.mirrored and pop % 2 == 0:
        half = jax.random.normal(key, (pop // 2, dim))
        eps = jnp.concatenate([half, -half])
    else:
        eps = jax.random.normal(key, (pop, dim))
    samples = state.mean + eps * jnp.sqrt(state.var)
    if settings.elitism:
        samples = samples.at[-1].set(jnp.where(state.generation > 0, state.elite, samples[-1]))
    return samples


def cem_tell(state: CEMState, samples: jax.Array, fitness: jax.Array, settings: CEMOptions) -> CEMState:
    """Refit the distribution to the best half of ``samples`` (higher fitness is better; NaN counts as worst)."""
    parents = num_parents(settings, samples.shape[0])
    fitness = jnp.where(jnp.isfinite(fitness), fitness, -jnp.inf)
    order = jnp.argsort(-fitness)
    # NaN samples rank last; should more than half be NaN, they fall back on the mean.
    elites = samples[order[:parents]]
    elites = jnp.where(jnp.isfinite(elites), elites, state.mean)
    weights = parent_weights(parents)
    damp = state.damp * settings.damp_decay + (1.0 - settings.damp_decay) * settings.damp_limit
    z = elites - state.mean
    var = weights @ (z * z) / parents + damp  # the reference's 1/parents factor, kept for fidelity
    best = jnp.maximum(fitness[order[0]], jnp.finfo(jnp.float32).min)
    return CEMState(mean=weights @ elites, var=var, damp=damp, elite=elites[0], elite_score=best,
                    generation=state.generation + 1)
