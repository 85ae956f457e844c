"""Small flax networks and image torsos shared by the agents."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import flax.linen as nn
import jax
import jax.numpy as jnp

TORSOS = ("mlp", "nature_cnn", "minatar_cnn")
"""Feature extractors an image-capable agent can put before its dense layers."""


CANONICAL = ("NHWC", "HWIO", "NHWC")
"""The one convolution layout XLA:CPU hands to its fast (Eigen) kernel."""


@partial(jax.custom_vjp, nondiff_argnums=(2,))
def _valid_conv(x: jax.Array, kernel: jax.Array, strides: tuple[int, int]) -> jax.Array:
    return jax.lax.conv_general_dilated(x, kernel, strides, "VALID", dimension_numbers=CANONICAL)


def _valid_conv_fwd(x, kernel, strides):
    return _valid_conv(x, kernel, strides), (x, kernel)


def _valid_conv_bwd(strides, residuals, grad):
    """Both gradients as canonical NHWC/HWIO convolutions with explicit transposes.

    This is what XLA:CPU's convolution canonicalization does to jax's own
    transposed convolutions in a plain jitted function, but not inside a
    while loop (``lax.scan``), where the backward convolutions keep their
    transposed dimension labels and run as naive loops: 10-80x slower
    (benchmarks/cnn_in_scan.py, docs/benchmarks.md). Written out here, they
    are canonical wherever they are traced.
    """
    x, kernel = residuals
    kh, kw = kernel.shape[:2]
    sh, sw = strides
    # dK[i, j, c, o] = sum_{b, h, w} x[b, s*h + i, s*w + j, c] * g[b, h, w, o]: batch <-> features swapped.
    dk = jax.lax.conv_general_dilated(
        x.transpose(3, 1, 2, 0), grad.transpose(1, 2, 0, 3), (1, 1), "VALID", rhs_dilation=(sh, sw),
        dimension_numbers=CANONICAL,
    )[:, :kh, :kw, :].transpose(1, 2, 0, 3)
    # dX: the output gradient dilated by the stride, fully padded, against the flipped kernel (in/out swapped).
    rows = x.shape[1] - ((grad.shape[1] - 1) * sh + kh)  # input rows the forward window never reached
    cols = x.shape[2] - ((grad.shape[2] - 1) * sw + kw)
    dx = jax.lax.conv_general_dilated(
        grad, kernel[::-1, ::-1].transpose(0, 1, 3, 2), (1, 1), ((kh - 1, kh - 1 + rows), (kw - 1, kw - 1 + cols)),
        lhs_dilation=(sh, sw), dimension_numbers=CANONICAL,
    )
    return dx, dk


_valid_conv.defvjp(_valid_conv_fwd, _valid_conv_bwd)


def valid_conv(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None, dimension_numbers=None,
               feature_group_count=1, precision=None):
    """``lax.conv_general_dilated`` for the torsos' case (NHWC/HWIO, VALID, no dilation, no groups) with
    a gradient that XLA:CPU runs fast inside loops too (see ``_valid_conv_bwd``)."""
    plain = (padding == "VALID" and feature_group_count == 1 and all(d == 1 for d in (lhs_dilation or (1,)))
             and all(d == 1 for d in (rhs_dilation or (1,))))
    if not plain:
        raise ValueError("valid_conv supports VALID padding without dilation or groups only")
    return _valid_conv(lhs, rhs, tuple(int(s) for s in window_strides))


class Conv(nn.Conv):
    """``flax.linen.Conv`` (same parameters: ``kernel`` HWIO and ``bias``) with VALID padding and the loop-friendly
    gradient of :func:`valid_conv`."""

    padding: str = "VALID"
    conv_general_dilated: object = staticmethod(valid_conv)


def conv_features(x, torso: str):
    """Flat features of a batch ``x`` of shape (batch, *obs_shape) through ``torso``.

    Call it inside a module's ``nn.compact`` method: the convolutions become that
    module's own submodules (``Conv_0``...). ``mlp`` only flattens; ``nature_cnn``
    is Mnih et al. 2015's (84x84 uint8 Atari frames, scaled by 1/255);
    ``minatar_cnn`` is Young & Tian 2019's single 16-filter 3x3 conv for 10x10 frames.
    """
    x = x.astype(jnp.float32)
    if torso == "nature_cnn":
        x = nn.relu(Conv(32, (8, 8), strides=(4, 4))(x / 255.0))
        x = nn.relu(Conv(64, (4, 4), strides=(2, 2))(x))
        x = nn.relu(Conv(64, (3, 3), strides=(1, 1))(x))
    elif torso == "minatar_cnn":
        x = nn.relu(Conv(16, (3, 3), strides=(1, 1))(x))
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
