"""Double DQN's update in PyTorch (Nature-CNN torso, dueling head), for the benchmark.

The same math, in the same order, as ``populax.agents.dqn``: the online net
picks ``a' = argmax Q(s', .)``, the target net values it, ``y = r + gamma (1 -
done) Q_target(s', a')``; Huber loss (delta 1) of ``Q(s, a)`` onto ``y``; the
gradient clipped to global norm ``DQNConfig.max_grad_norm`` (per member); Adam
without the learning rate in its state; then a hard copy of the online
parameters into the target whenever the update count reaches a multiple of the
member's ``target_period`` (at the default 500 the benchmark's few calls never
copy, but the check and the copy run as in JAX). The benchmark case uses
``DQNConfig``'s defaults, so no learning-rate annealing.

Layouts are converted once, at setup, never per call: flax's NHWC frames and
HWIO kernels become torch's NCHW/OIHW, and the rows of the first dense layer
are permuted from flax's (H, W, C) flattening order to torch's (C, H, W). The
frames are kept *channels-last* in memory (the NHWC bytes JAX produced, viewed
as NCHW), which lets oneDNN run its NHWC convolutions; see :data:`CHANNELS_LAST`.

* **sequential**: one :class:`TorchDQN` per member, ``conv2d`` + ``addmm``;
* **vectorized**: one :class:`TorchDQN` for the population. The torso is one
  *grouped* convolution per layer (``groups=pop``, the members' channels
  stacked: frames ``(B, pop*4, 84, 84)``, kernels ``(pop*O, I, kh, kw)``) -- the
  standard way to run per-member convolutions as one torch op -- and the dense
  layers are ``baddbmm`` with a population axis, as in the TD3/SAC models.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from populax.agents.dqn import DQNConfig
from populax.bench.torch_td3 import Adam, grads_of, linear, numpy_list, per_member, take

STRIDES = (4, 2, 1)
"""Strides of the Nature CNN's three convolutions (8x8, 4x4, 3x3 kernels)."""
CHANNELS_LAST = True
"""Keep frames and activations NHWC in memory (torch's fast CPU path for convolutions)."""
MAX_GRAD_NORM = DQNConfig.max_grad_norm
"""The global gradient-norm clip of the benchmark case (``DQNConfig``'s default)."""


def conv_to_torch(kernel: np.ndarray) -> np.ndarray:
    """Flax (..., kh, kw, I, O) kernels as torch (..., O, I, kh, kw)."""
    return np.ascontiguousarray(np.moveaxis(kernel, (-1, -2), (-4, -3)))


def conv_to_flax(weight: np.ndarray) -> np.ndarray:
    """Torch (..., O, I, kh, kw) kernels as flax (..., kh, kw, I, O)."""
    return np.moveaxis(weight, (-4, -3), (-1, -2))


def rows_to_chw(kernel: np.ndarray, channels: int) -> np.ndarray:
    """First dense kernel (..., H*W*C, out) with its rows reordered from (H, W, C) to (C, H, W)."""
    *lead, rows, out = kernel.shape
    side = math.isqrt(rows // channels)
    assert side * side * channels == rows, "the torch DQN expects square frames"
    hwc = kernel.reshape(*lead, side, side, channels, out)
    return np.ascontiguousarray(np.moveaxis(hwc, -2, -4).reshape(*lead, rows, out))


def rows_to_hwc(kernel: np.ndarray, channels: int) -> np.ndarray:
    """Inverse of :func:`rows_to_chw`."""
    *lead, rows, out = kernel.shape
    side = math.isqrt(rows // channels)
    chw = kernel.reshape(*lead, channels, side, side, out)
    return np.moveaxis(chw, -4, -2).reshape(*lead, rows, out)


def flax_params(net: dict) -> list[np.ndarray]:
    """[kernel, bias] of Conv_0..2 then Dense_0.. of a flax QNetwork, as numpy (flax layout)."""
    params = net["params"]
    names = [f"Conv_{i}" for i in range(len(STRIDES))] + [f"Dense_{i}" for i in range(len(params) - len(STRIDES))]
    return [np.asarray(params[name][part]) for name in names for part in ("kernel", "bias")]


def to_torch_layout(arrays: list[np.ndarray]) -> list[np.ndarray]:
    """Flax-layout parameters (from :func:`flax_params`) in the torch model's layout."""
    convs = 2 * len(STRIDES)
    out = [conv_to_torch(a) if i % 2 == 0 and i < convs else a for i, a in enumerate(arrays)]
    out[convs] = rows_to_chw(out[convs], channels=arrays[convs - 1].shape[-1])
    return out


def to_flax_layout(arrays: list[np.ndarray]) -> list[np.ndarray]:
    """Inverse of :func:`to_torch_layout`."""
    convs = 2 * len(STRIDES)
    out = [conv_to_flax(a) if i % 2 == 0 and i < convs else a for i, a in enumerate(arrays)]
    out[convs] = rows_to_hwc(out[convs], channels=arrays[convs - 1].shape[-1])
    return out


def frames(obs: Any, member: int | None) -> torch.Tensor:
    """Stacked uint8 NHWC frames as the torch model's input, converted once.

    One member: (B, C, H, W). The population: (B, pop*C, H, W), member i's
    channels at ``i*C:(i+1)*C`` (the grouped convolution's layout). Both are
    channels-last in memory when :data:`CHANNELS_LAST`, else contiguous NCHW.
    """
    obs = np.asarray(obs)
    if member is not None:
        nhwc = np.array(obs[member], copy=True)
    else:
        pop, batch, height, width, channels = obs.shape
        nhwc = np.array(obs.transpose(1, 2, 3, 0, 4), order="C").reshape(batch, height, width, pop * channels)
    x = torch.from_numpy(nhwc).permute(0, 3, 1, 2)  # an NCHW view of NHWC memory
    return x if CHANNELS_LAST else x.contiguous()


def huber(error: torch.Tensor) -> torch.Tensor:
    """``optax.huber_loss`` with delta 1, written the same way."""
    abs_error = error.abs()
    quadratic = torch.clamp(abs_error, max=1.0)
    return 0.5 * quadratic**2 + (abs_error - quadratic)


def clip_by_global_norm(grads: tuple[torch.Tensor, ...], max_norm: float, pop: int | None) -> list[torch.Tensor]:
    """``optax.clip_by_global_norm`` per member: g if ||g|| < max_norm else g / ||g|| * max_norm."""
    if pop is None:
        norm = torch.sqrt(sum(g.square().sum() for g in grads))
    else:
        norm = torch.sqrt(sum(g.reshape(pop, -1).square().sum(1) for g in grads))
    keep = norm < max_norm
    return [torch.where(per_member(keep, g), g, g / per_member(norm, g) * max_norm) for g in grads]


class TorchDQN:
    """Double-DQN state and update for one member or (``member=None``) the whole population."""

    def __init__(self, state: Any, hparams: Any, member: int | None = None):
        """Copy online and target parameters, update count and hyperparameters from a stacked JAX population."""
        self.pop = int(np.asarray(state.updates).shape[0]) if member is None else None

        def tensors(net: dict) -> list[torch.Tensor]:
            arrays = flax_params(net)
            return [torch.tensor(a) for a in to_torch_layout([a if member is None else a[member] for a in arrays])]

        self.online = tensors(state.params)
        self.target = tensors(state.target)
        self.updates = take(state.updates, member, torch.int64)
        self.hp = {name: take(getattr(hparams, name), member) for name in ("lr", "gamma")}
        self.period = torch.clamp(torch.round(take(hparams.target_period, member)), min=1).to(torch.int64)
        self.opt = Adam(self.online)

    @staticmethod
    def prepare(batch: Any, member: int | None = None) -> dict[str, torch.Tensor]:
        """The JAX batch in torch layouts, once at setup: frames (see :func:`frames`), int64 actions."""
        out = {"obs": frames(batch.obs, member), "next_obs": frames(batch.next_obs, member)}
        for name, dtype in (("action", np.int64), ("reward", np.float32), ("terminated", np.float32)):
            array = np.asarray(getattr(batch, name), dtype=dtype)
            out[name] = torch.from_numpy(np.array(array if member is None else array[member], copy=True))
        return out

    @staticmethod
    def noise_shape(batch: dict[str, torch.Tensor]) -> None:
        """The DQN update draws no noise."""
        return None

    def params_numpy(self, tensors: list[torch.Tensor]) -> list[np.ndarray]:
        """``tensors`` (torch layout) as numpy arrays in flax's layout."""
        return to_flax_layout(numpy_list(tensors))

    def params(self) -> dict[str, list[np.ndarray]]:
        """Online and target parameters, [kernel, bias] per layer in flax layout (see :func:`dqn_params`)."""
        return {"params": self.params_numpy(self.online), "target": self.params_numpy(self.target)}

    def q(self, params: list[torch.Tensor], obs: torch.Tensor) -> torch.Tensor:
        """Q-values (``[pop,] batch, actions``) of uint8 frames."""
        groups = self.pop or 1
        x = obs.float() / 255.0
        for i, stride in enumerate(STRIDES):
            weight, bias = params[2 * i], params[2 * i + 1]
            if self.pop:  # (pop, O, I, kh, kw) -> (pop*O, I, kh, kw): a view, members stay in blocks
                weight, bias = weight.reshape(-1, *weight.shape[2:]), bias.reshape(-1)
            x = torch.relu(F.conv2d(x, weight, bias, stride=stride, groups=groups))
        # flatten each member's (C, H, W); the population axis goes first for baddbmm
        x = x.reshape(x.shape[0], self.pop, -1).transpose(0, 1) if self.pop else x.flatten(1)
        dense = params[2 * len(STRIDES) :]
        for i in range(0, len(dense) - 4, 2):
            x = torch.relu(linear(x, dense[i], dense[i + 1]))
        value = linear(x, dense[-4], dense[-3])
        advantage = linear(x, dense[-2], dense[-1])
        return value + advantage - advantage.mean(-1, keepdim=True)

    def update(self, batch: dict[str, torch.Tensor], noise: None = None) -> None:
        """One Double-DQN update on ``batch``."""
        hp = self.hp
        obs, action, reward, next_obs, terminated = (batch[k] for k in ("obs", "action", "reward", "next_obs", "terminated"))
        # 1. Double-DQN target: the online net picks a', the target net values it.
        with torch.no_grad():
            best = self.q(self.online, next_obs).argmax(-1, keepdim=True)
            next_value = self.q(self.target, next_obs).gather(-1, best).squeeze(-1)
            target = reward + per_member(hp["gamma"], reward) * (1.0 - terminated) * next_value

        # 2. Huber regression of Q(s, a) onto it, clipped gradient, Adam.
        def loss() -> torch.Tensor:
            q_taken = self.q(self.online, obs).gather(-1, action.unsqueeze(-1)).squeeze(-1)
            return huber(q_taken - target).mean(-1).sum()

        grads = clip_by_global_norm(grads_of(loss, self.online), MAX_GRAD_NORM, self.pop)
        self.opt.step(self.online, grads, hp["lr"])

        # 3. Hard target copy where a member's update count reaches its period.
        self.updates += 1
        copy = self.updates % self.period == 0
        if bool(copy.any()):
            with torch.no_grad():
                for t, p in zip(self.target, self.online):
                    t.copy_(torch.where(per_member(copy, t), p, t))


def dqn_params(state: Any) -> dict[str, list[np.ndarray]]:
    """A stacked JAX DQN state in :meth:`TorchDQN.params`' layout (to compare the two)."""
    return {"params": flax_params(state.params), "target": flax_params(state.target)}
