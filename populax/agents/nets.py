"""Small flax networks shared by the agents."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp


class MLP(nn.Module):
    """ReLU multilayer perceptron with a linear output layer."""

    hidden: Sequence[int]
    out: int

    @nn.compact
    def __call__(self, x):
        for width in self.hidden:
            x = nn.relu(nn.Dense(width)(x))
        return nn.Dense(self.out)(x)


class DeterministicActor(nn.Module):
    """obs -> action in [-1, 1] (tanh)."""

    hidden: Sequence[int]
    action_dim: int

    @nn.compact
    def __call__(self, obs):
        return jnp.tanh(MLP(self.hidden, self.action_dim)(obs))


class TwinCritic(nn.Module):
    """(obs, action) -> (q1, q2): two independent Q networks (clipped double Q)."""

    hidden: Sequence[int]

    @nn.compact
    def __call__(self, obs, action):
        x = jnp.concatenate([obs, action], axis=-1)
        q1 = MLP(self.hidden, 1)(x)[..., 0]
        q2 = MLP(self.hidden, 1)(x)[..., 0]
        return q1, q2
