"""Running observation normalisation for one member, as traced statistics.

The statistics are a small pytree (mean, variance, count) that lives next to
the member's agent state, so a population has one set per member (leading
member axis) and updating them is part of the jitted acting call.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

CLIP = 10.0
"""Normalised observations are clipped to [-CLIP, CLIP] (a few outliers must not dominate)."""


@struct.dataclass
class RunningStats:
    """Mean and variance of every observation seen so far (Chan et al.'s parallel update)."""

    mean: jax.Array
    var: jax.Array
    count: jax.Array


def stats_init(obs_shape: tuple[int, ...]) -> RunningStats:
    """Statistics before any observation: mean 0, variance 1, a tiny count."""
    return RunningStats(jnp.zeros(obs_shape, jnp.float32), jnp.ones(obs_shape, jnp.float32), jnp.float32(1e-4))


def stats_update(stats: RunningStats, obs: jax.Array) -> RunningStats:
    """Fold a batch of observations (leading axis) into the statistics."""
    obs = obs.astype(jnp.float32)
    batch_mean, batch_var = jnp.mean(obs, axis=0), jnp.var(obs, axis=0)
    batch_count = jnp.float32(obs.shape[0])
    total = stats.count + batch_count
    delta = batch_mean - stats.mean
    mean = stats.mean + delta * batch_count / total
    m2 = stats.var * stats.count + batch_var * batch_count + delta**2 * stats.count * batch_count / total
    return RunningStats(mean=mean, var=m2 / total, count=total)


def normalize(stats: RunningStats, obs: jax.Array) -> jax.Array:
    """Observations standardised by the statistics and clipped."""
    return jnp.clip((obs.astype(jnp.float32) - stats.mean) / jnp.sqrt(stats.var + 1e-8), -CLIP, CLIP)
