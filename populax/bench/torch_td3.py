"""TD3's update in PyTorch, for the torch rows of the update-step benchmark.

The same math as ``populax.agents.td3`` (clipped double-Q target with
smoothing noise, delayed actor and target updates, Adam without the learning
rate in its state, Polyak averaging), written twice in one code path:

* **sequential**: one :class:`TorchTD3` per member, 2-D weights, ``addmm``;
* **vectorized**: one :class:`TorchTD3` for the whole population, weights with
  a leading population axis and batched-matmul layers (``baddbmm``), as in the
  paper's appendix. (Not ``torch.func``: plain bmm layers need no functional
  transforms and are what the paper measured.)

Parameters start from the JAX population's initial parameters, so both
frameworks compute the same numbers (tested). The optimizer state is assumed
fresh (zero moments), which is what the benchmark starts from.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

B1, B2, EPS = 0.9, 0.999, 1e-8  # optax.scale_by_adam defaults


def flax_layers(net: dict, mlp: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """(kernel, bias) of each Dense layer of flax MLP ``mlp``, input to output."""
    layers = net["params"][mlp]
    return [(np.asarray(layers[f"Dense_{i}"]["kernel"]), np.asarray(layers[f"Dense_{i}"]["bias"])) for i in range(len(layers))]


def linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """x @ w + b, batched over a leading population axis when w is 3-D."""
    if w.dim() == 3:
        return torch.baddbmm(b.unsqueeze(1), x, w)
    return torch.addmm(b, x, w) if x.dim() == 2 else x @ w + b


def mlp(x: torch.Tensor, layers: list[torch.Tensor]) -> torch.Tensor:
    """ReLU MLP over flat [w0, b0, w1, b1, ...] with a linear last layer."""
    for i in range(0, len(layers) - 2, 2):
        x = torch.relu(linear(x, layers[i], layers[i + 1]))
    return linear(x, layers[-2], layers[-1])


def per_member(value: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Broadcast a per-member hyperparameter (shape (n,) or scalar) against ``like``."""
    return value.reshape(-1, *[1] * (like.dim() - 1)) if value.dim() == 1 else value


class TorchTD3:
    """TD3 state and update for one member (2-D weights) or a population (3-D weights)."""

    def __init__(self, state: Any, hparams: Any, member: int | None = None):
        """Copy parameters and hyperparameters from a stacked JAX population.

        ``member=None`` keeps the whole population (vectorized); an index takes
        that one member (sequential).
        """

        def take(array: Any) -> torch.Tensor:
            array = np.asarray(array)
            return torch.tensor(array if member is None else array[member], dtype=torch.float32)

        def flat(net: dict, mlp_name: str) -> list[torch.Tensor]:
            return [take(a) for layer in flax_layers(net, mlp_name) for a in layer]

        self.actor = flat(state.actor, "MLP_0")
        self.critic = flat(state.critic, "MLP_0") + flat(state.critic, "MLP_1")
        self.actor_target = flat(state.actor_target, "MLP_0")
        self.critic_target = flat(state.critic_target, "MLP_0") + flat(state.critic_target, "MLP_1")
        self.half = len(self.critic) // 2  # where critic 2's layers start
        self.hp = {name: take(getattr(hparams, name)) for name in ("lr_actor", "lr_critic", "gamma", "tau", "target_noise", "noise_clip")}
        delays = np.unique(np.round(np.asarray(hparams.delay)))
        assert delays.size == 1, "the torch benchmark runs members with one common policy delay"
        self.delay = max(int(delays[0]), 1)
        self.updates = 0
        self.moments = {
            "actor": ([torch.zeros_like(p) for p in self.actor], [torch.zeros_like(p) for p in self.actor], [0]),
            "critic": ([torch.zeros_like(p) for p in self.critic], [torch.zeros_like(p) for p in self.critic], [0]),
        }

    def q(self, params: list[torch.Tensor], obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Twin critic values (each without the trailing unit axis)."""
        x = torch.cat([obs, action], dim=-1)
        return mlp(x, params[: self.half]).squeeze(-1), mlp(x, params[self.half :]).squeeze(-1)

    def adam(self, name: str, params: list[torch.Tensor], grads: tuple[torch.Tensor, ...], lr: torch.Tensor) -> None:
        """In-place Adam step with a per-member learning rate (optax.scale_by_adam math)."""
        mu, nu, count = self.moments[name]
        count[0] += 1
        c1, c2 = 1 - B1 ** count[0], 1 - B2 ** count[0]
        for p, g, m, v in zip(params, grads, mu, nu):
            m.mul_(B1).add_(g, alpha=1 - B1)
            v.mul_(B2).addcmul_(g, g, value=1 - B2)
            p.sub_(per_member(lr, p) * (m / c1) / ((v / c2).sqrt() + EPS))

    @torch.no_grad()
    def polyak(self, target: list[torch.Tensor], online: list[torch.Tensor]) -> None:
        """target <- (1 - tau) target + tau online."""
        for t, o in zip(target, online):
            tau = per_member(self.hp["tau"], t)
            t.mul_(1 - tau).add_(tau * o)

    def update(self, batch: dict[str, torch.Tensor], noise: torch.Tensor) -> None:
        """One TD3 update on ``batch``; ``noise`` is the standard-normal smoothing draw."""
        hp = self.hp
        obs, action, reward, next_obs, terminated = (batch[k] for k in ("obs", "action", "reward", "next_obs", "terminated"))
        # 1. Critic step towards the clipped double-Q target.
        with torch.no_grad():
            next_action = torch.tanh(mlp(next_obs, self.actor_target))
            clip = per_member(hp["noise_clip"], noise)
            smoothing = torch.maximum(torch.minimum(per_member(hp["target_noise"], noise) * noise, clip), -clip)
            next_action = (next_action + smoothing).clamp(-1.0, 1.0)
            q1, q2 = self.q(self.critic_target, next_obs, next_action)
            target = reward + per_member(hp["gamma"], reward) * (1.0 - terminated) * torch.minimum(q1, q2)
        for p in self.critic:
            p.requires_grad_(True)
        q1, q2 = self.q(self.critic, obs, action)
        loss = (((q1 - target) ** 2).mean(-1) + ((q2 - target) ** 2).mean(-1)).sum()  # sum over members: disjoint grads
        grads = torch.autograd.grad(loss, self.critic)
        for p in self.critic:
            p.requires_grad_(False)
        self.adam("critic", self.critic, grads, hp["lr_critic"])
        self.updates += 1

        # 2. Every `delay` critic steps: actor step and target updates.
        if self.updates % self.delay == 0:
            for p in self.actor:
                p.requires_grad_(True)
            q1, _ = self.q(self.critic, obs, torch.tanh(mlp(obs, self.actor)))
            grads = torch.autograd.grad(-q1.mean(-1).sum(), self.actor)
            for p in self.actor:
                p.requires_grad_(False)
            self.adam("actor", self.actor, grads, hp["lr_actor"])
            self.polyak(self.actor_target, self.actor)
            self.polyak(self.critic_target, self.critic)


def torch_batch(batch: Any, member: int | None = None) -> dict[str, torch.Tensor]:
    """A JAX Transition (stacked) as float32 torch tensors, whole or one member."""
    out = {}
    for name in ("obs", "action", "reward", "next_obs", "terminated"):
        array = np.asarray(getattr(batch, name), dtype=np.float32)
        out[name] = torch.from_numpy(np.array(array if member is None else array[member], copy=True))
    return out
