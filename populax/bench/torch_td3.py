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

The layer, Adam, Polyak and gradient helpers here are shared with
``torch_sac`` and ``torch_dqn``. Every torch model has the interface
``TorchPopulation`` drives: ``Model(state, hparams, member)``,
``Model.prepare(batch, member)``, ``Model.noise_shape(batch)``,
``model.update(batch, noise)`` and ``model.params()``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

B1, B2, EPS = 0.9, 0.999, 1e-8  # optax.scale_by_adam defaults


def flax_layers(net: dict, mlp: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """(kernel, bias) of each Dense layer of flax MLP ``mlp``, input to output."""
    layers = net["params"][mlp]
    return [(np.asarray(layers[f"Dense_{i}"]["kernel"]), np.asarray(layers[f"Dense_{i}"]["bias"])) for i in range(len(layers))]


def take(array: Any, member: int | None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A stacked JAX array as a new torch tensor: whole (``member=None``) or one member's slice."""
    array = np.asarray(array)
    return torch.tensor(array if member is None else array[member], dtype=dtype)


def torch_mlp(net: dict, member: int | None, mlps: tuple[str, ...] = ("MLP_0",)) -> list[torch.Tensor]:
    """Flat [w0, b0, w1, b1, ...] of flax MLPs ``mlps`` (one after the other) as torch tensors."""
    return [take(a, member) for name in mlps for layer in flax_layers(net, name) for a in layer]


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


def grads_of(loss: Callable[[], torch.Tensor], params: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """Gradients of ``loss()`` with respect to ``params`` (tracked only during this call).

    A vectorized loss is the sum of the members' losses: their parameters are
    disjoint, so each member gets exactly its own gradient.
    """
    for p in params:
        p.requires_grad_(True)
    try:
        return torch.autograd.grad(loss(), params)
    finally:
        for p in params:
            p.requires_grad_(False)


def twin_q(params: list[torch.Tensor], obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Twin critic values (each without the trailing unit axis); critic 2's layers are the second half."""
    x = torch.cat([obs, action], dim=-1)
    half = len(params) // 2
    return mlp(x, params[:half]).squeeze(-1), mlp(x, params[half:]).squeeze(-1)


def twin_mse(q1: torch.Tensor, q2: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """mean (q1 - y)^2 + mean (q2 - y)^2 over the batch, summed over members."""
    return (((q1 - target) ** 2).mean(-1) + ((q2 - target) ** 2).mean(-1)).sum()


@torch.no_grad()
def polyak(target: list[torch.Tensor], online: list[torch.Tensor], tau: torch.Tensor) -> None:
    """target <- (1 - tau) target + tau online, in place (``tau`` per member or scalar)."""
    for t, o in zip(target, online):
        rate = per_member(tau, t)
        t.mul_(1 - rate).add_(rate * o)


class Adam:
    """``optax.scale_by_adam`` then ``p -= lr * u``, in place on a list of tensors.

    The learning rate is an argument of each step (per member when it has
    shape (n,)), not state, as in ``populax.agents.base.adam_step``. The
    moments start at zero (a fresh optimizer, where the benchmark starts).
    """

    def __init__(self, params: list[torch.Tensor]):
        self.mu = [torch.zeros_like(p) for p in params]
        self.nu = [torch.zeros_like(p) for p in params]
        self.count = 0

    @torch.no_grad()
    def step(self, params: list[torch.Tensor], grads: Sequence[torch.Tensor], lr: torch.Tensor) -> None:
        """One Adam step of ``params`` along ``grads`` with learning rate ``lr``."""
        self.count += 1
        c1, c2 = 1 - B1**self.count, 1 - B2**self.count
        for p, g, m, v in zip(params, grads, self.mu, self.nu):
            m.mul_(B1).add_(g, alpha=1 - B1)
            v.mul_(B2).addcmul_(g, g, value=1 - B2)
            # optax's order of operations, two temporaries: (m / c1) / (sqrt(v / c2) + eps) * lr
            denominator = (v / c2).sqrt_().add_(EPS)
            p.sub_((m / c1).div_(denominator).mul_(per_member(lr, p)))


class TorchTD3:
    """TD3 state and update for one member (2-D weights) or a population (3-D weights)."""

    def __init__(self, state: Any, hparams: Any, member: int | None = None):
        """Copy parameters and hyperparameters from a stacked JAX population.

        ``member=None`` keeps the whole population (vectorized); an index takes
        that one member (sequential).
        """
        self.actor = torch_mlp(state.actor, member)
        self.critic = torch_mlp(state.critic, member, ("MLP_0", "MLP_1"))
        self.actor_target = torch_mlp(state.actor_target, member)
        self.critic_target = torch_mlp(state.critic_target, member, ("MLP_0", "MLP_1"))
        names = ("lr_actor", "lr_critic", "gamma", "tau", "target_noise", "noise_clip")
        self.hp = {name: take(getattr(hparams, name), member) for name in names}
        delays = np.unique(np.round(np.asarray(hparams.delay)))
        assert delays.size == 1, "the torch benchmark runs members with one common policy delay"
        self.delay = max(int(delays[0]), 1)
        self.updates = 0
        self.opt = {"actor": Adam(self.actor), "critic": Adam(self.critic)}

    @staticmethod
    def prepare(batch: Any, member: int | None = None) -> dict[str, torch.Tensor]:
        """The JAX batch as torch tensors, once at setup (see :func:`torch_batch`)."""
        return torch_batch(batch, member)

    @staticmethod
    def noise_shape(batch: dict[str, torch.Tensor]) -> tuple[int, ...]:
        """Shape of one update's standard-normal draw: the smoothing noise, like the actions."""
        return tuple(batch["action"].shape)

    def params(self) -> dict[str, list[np.ndarray]]:
        """Actor and critic layers ([w0, b0, ...], flax layout) as numpy arrays."""
        return {"actor": numpy_list(self.actor), "critic": numpy_list(self.critic)}

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
            q1, q2 = twin_q(self.critic_target, next_obs, next_action)
            target = reward + per_member(hp["gamma"], reward) * (1.0 - terminated) * torch.minimum(q1, q2)
        grads = grads_of(lambda: twin_mse(*twin_q(self.critic, obs, action), target), self.critic)
        self.opt["critic"].step(self.critic, grads, hp["lr_critic"])
        self.updates += 1

        # 2. Every `delay` critic steps: actor step and target updates.
        if self.updates % self.delay == 0:
            grads = grads_of(lambda: -twin_q(self.critic, obs, torch.tanh(mlp(obs, self.actor)))[0].mean(-1).sum(), self.actor)
            self.opt["actor"].step(self.actor, grads, hp["lr_actor"])
            polyak(self.actor_target, self.actor, hp["tau"])
            polyak(self.critic_target, self.critic, hp["tau"])


def numpy_list(tensors: list[torch.Tensor]) -> list[np.ndarray]:
    """Copies of ``tensors`` as numpy arrays."""
    return [t.detach().cpu().numpy().copy() for t in tensors]


def torch_batch(batch: Any, member: int | None = None) -> dict[str, torch.Tensor]:
    """A JAX Transition (stacked) as float32 torch tensors, whole or one member."""
    out = {}
    for name in ("obs", "action", "reward", "next_obs", "terminated"):
        array = np.asarray(getattr(batch, name), dtype=np.float32)
        out[name] = torch.from_numpy(np.array(array if member is None else array[member], copy=True))
    return out
