"""Small flax networks and image torsos shared by the agents."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
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


def orthogonal_polar(scale: float = 1.0, iterations: int = 80):
    """Orthogonal initializer without LAPACK: the polar factor of a Gaussian matrix, times ``scale``.

    Same distribution as flax's QR-based ``orthogonal`` (Haar on matrices with
    orthonormal columns, or rows when wide), computed by Newton-Schulz
    iterations (matmuls only). Used where the QR custom call is a problem:
    batched over a population on XLA:CPU, LAPACK's QR of the CNN-feature
    layer (1024 x 64) hung the PPO init program (all threads idle) in most
    tries on the 2-core development machine.
    """

    def init(key, shape, dtype=jnp.float32):
        rows, cols = shape
        a = jax.random.normal(key, (max(rows, cols), min(rows, cols)), jnp.float32)
        x = a / jnp.linalg.norm(a)  # every singular value in (0, 1]: the iteration converges

        def newton_schulz(_, x):
            return 1.5 * x - 0.5 * x @ (x.T @ x)

        x = jax.lax.fori_loop(0, iterations, newton_schulz, x)
        return (scale * (x if rows >= cols else x.T)).astype(dtype)

    return init


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
