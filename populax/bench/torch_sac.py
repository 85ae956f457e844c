"""SAC's update in PyTorch, for the torch rows of the update-step benchmark.

The same math, in the same order, as ``populax.agents.sac``: (1) twin critics
towards the soft target ``scale r + gamma (1 - done)(min Q'(s', a') - alpha
log pi(a'|s'))`` with ``a'`` drawn from the current (pre-update) policy and the
target critics; (2) the actor on ``alpha log pi(a|s) - min Q(s, a)`` through
the *updated* critics; (3) ``log alpha`` towards the target entropy, with the
actor step's (pre-update) log-probabilities; (4) Polyak target critics. Adam
without the learning rate in its state, no gradient clipping (as in JAX).
alpha in steps 1 and 2 is the value before step 3.

Like :mod:`populax.bench.torch_td3`: sequential (one :class:`TorchSAC` per
member, 2-D weights) or vectorized (one for the population, ``baddbmm``
layers). The reparameterisation noise of both draws is passed in, so a test can
feed JAX's draws and get JAX's numbers.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from populax.agents.sac import LOG_STD_MAX, LOG_STD_MIN
from populax.bench.torch_td3 import (
    Adam,
    grads_of,
    mlp,
    numpy_list,
    per_member,
    polyak,
    take,
    torch_batch,
    torch_mlp,
    twin_mse,
    twin_q,
)

LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)
LOG_2 = math.log(2.0)


def gaussian(actor: list[torch.Tensor], obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, clipped log_std) of the pre-tanh Gaussian: the MLP's output split in two halves."""
    mean, log_std = torch.chunk(mlp(obs, actor), 2, dim=-1)
    return mean, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)


def squashed_sample(mean: torch.Tensor, log_std: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """a = tanh(mean + std * eps) and log pi(a) summed over action dimensions.

    Written as ``populax.agents.sac.squashed_sample`` (the tanh correction as
    2 (log 2 - u - softplus(-2u))) so the gradients are the same expressions.
    """
    u = mean + torch.exp(log_std) * eps
    log_normal = -0.5 * ((u - mean) / torch.exp(log_std)) ** 2 - log_std - LOG_SQRT_2PI
    correction = 2.0 * (LOG_2 - u - F.softplus(-2.0 * u))
    return torch.tanh(u), (log_normal - correction).sum(-1)


class TorchSAC:
    """SAC state and update for one member (2-D weights) or a population (3-D weights)."""

    HPARAMS = ("lr_actor", "lr_critic", "lr_alpha", "gamma", "tau", "reward_scale", "target_entropy_per_dim")

    def __init__(self, state: Any, hparams: Any, member: int | None = None):
        """Copy parameters, log alpha and hyperparameters from a stacked JAX population.

        ``member=None`` keeps the whole population (vectorized); an index takes
        that one member (sequential). The Adam moments start at zero.
        """
        self.actor = torch_mlp(state.actor, member)
        self.critic = torch_mlp(state.critic, member, ("MLP_0", "MLP_1"))
        self.critic_target = torch_mlp(state.critic_target, member, ("MLP_0", "MLP_1"))
        self.log_alpha = take(state.log_alpha, member)
        self.action_dim = self.actor[-1].shape[-1] // 2
        self.hp = {name: take(getattr(hparams, name), member) for name in self.HPARAMS}
        self.opt = {"actor": Adam(self.actor), "critic": Adam(self.critic), "alpha": Adam([self.log_alpha])}

    @staticmethod
    def prepare(batch: Any, member: int | None = None) -> dict[str, torch.Tensor]:
        """The JAX batch as float32 torch tensors, once at setup."""
        return torch_batch(batch, member)

    @staticmethod
    def noise_shape(batch: dict[str, torch.Tensor]) -> tuple[int, ...]:
        """Shape of one update's standard-normal draws: ``[pop,] 2, batch, action`` (s' then s)."""
        shape = tuple(batch["action"].shape)
        return (*shape[:-2], 2, *shape[-2:])

    def params(self) -> dict[str, list[np.ndarray]]:
        """Actor, critics, target critics ([w0, b0, ...], flax layout) and log alpha as numpy arrays."""
        return {"actor": numpy_list(self.actor), "critic": numpy_list(self.critic),
                "critic_target": numpy_list(self.critic_target), "log_alpha": numpy_list([self.log_alpha])}

    def update(self, batch: dict[str, torch.Tensor], noise: torch.Tensor) -> None:
        """One SAC update on ``batch``; ``noise`` holds the standard-normal draws (see :meth:`noise_shape`)."""
        hp = self.hp
        obs, action, reward, next_obs, terminated = (batch[k] for k in ("obs", "action", "reward", "next_obs", "terminated"))
        next_eps, actor_eps = noise.select(-3, 0), noise.select(-3, 1)
        alpha = torch.exp(self.log_alpha)

        # 1. Critics towards the soft target, from the current policy at s'.
        with torch.no_grad():
            next_action, next_log_prob = squashed_sample(*gaussian(self.actor, next_obs), next_eps)
            next_q1, next_q2 = twin_q(self.critic_target, next_obs, next_action)
            soft_value = torch.minimum(next_q1, next_q2) - per_member(alpha, next_log_prob) * next_log_prob
            target = (per_member(hp["reward_scale"], reward) * reward
                      + per_member(hp["gamma"], reward) * (1.0 - terminated) * soft_value)
        grads = grads_of(lambda: twin_mse(*twin_q(self.critic, obs, action), target), self.critic)
        self.opt["critic"].step(self.critic, grads, hp["lr_critic"])

        # 2. Actor: maximise min Q - alpha log pi with the updated critics.
        log_probs = []

        def actor_loss() -> torch.Tensor:
            new_action, log_prob = squashed_sample(*gaussian(self.actor, obs), actor_eps)
            log_probs.append(log_prob.detach())
            q1, q2 = twin_q(self.critic, obs, new_action)
            return (per_member(alpha, log_prob) * log_prob - torch.minimum(q1, q2)).mean(-1).sum()

        grads = grads_of(actor_loss, self.actor)
        self.opt["actor"].step(self.actor, grads, hp["lr_actor"])

        # 3. Temperature: d/d(log alpha) of -mean(log alpha (log pi + target entropy)).
        target_entropy = hp["target_entropy_per_dim"] * self.action_dim
        grad = -(log_probs[0] + per_member(target_entropy, log_probs[0])).mean(-1)
        self.opt["alpha"].step([self.log_alpha], [grad], hp["lr_alpha"])

        # 4. Polyak target critics.
        polyak(self.critic_target, self.critic, hp["tau"])


def sac_params(state: Any) -> dict[str, list[np.ndarray]]:
    """A stacked JAX SAC state in :meth:`TorchSAC.params`' layout (to compare the two)."""

    def layers(net: dict, mlps: tuple[str, ...]) -> list[np.ndarray]:
        return [t.detach().cpu().numpy() for t in torch_mlp(net, None, mlps)]

    return {"actor": layers(state.actor, ("MLP_0",)), "critic": layers(state.critic, ("MLP_0", "MLP_1")),
            "critic_target": layers(state.critic_target, ("MLP_0", "MLP_1")), "log_alpha": [np.asarray(state.log_alpha)]}
