"""Small flax networks and image torsos shared by the agents."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

TORSOS = ("mlp", "nature_cnn", "minatar_cnn")
"""Feature extractors an image-capable agent can put before its dense layers."""


def conv_features(x, torso: str):
    """Flat features of a batch ``x`` of shape (batch, *obs_shape) through ``torso``.

    Call it inside a module's ``nn.compact`` method: the convolutions become that
    module's own submodules (``Conv_0``...). ``mlp`` only flattens; ``nature_cnn``
    is Mnih et al. 2015's (84x84 uint8 Atari frames, scaled by 1/255);
    ``minatar_cnn`` is Young & Tian 2019's single 16-filter 3x3 conv for 10x10 frames.
    """
    x = x.astype(jnp.float32)
    if torso == "nature_cnn":
        x = nn.relu(nn.Conv(32, (8, 8), strides=(4, 4), padding="VALID")(x / 255.0))
        x = nn.relu(nn.Conv(64, (4, 4), strides=(2, 2), padding="VALID")(x))
        x = nn.relu(nn.Conv(64, (3, 3), strides=(1, 1), padding="VALID")(x))
    elif torso == "minatar_cnn":
        x = nn.relu(nn.Conv(16, (3, 3), strides=(1, 1), padding="VALID")(x))
    elif torso != "mlp":
        raise ValueError(f"unknown torso {torso!r}")
    return x.reshape((x.shape[0], -1))


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
