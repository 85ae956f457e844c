"""DQN (Mnih et al. 2015) with Double-DQN targets for one member.

Online and target Q-networks (every ``target_period`` updates the target moves
a share ``tau`` towards the online net: 1 = a hard copy), optional dueling
head, LayerNorm and clipped double-Q target, advantage learning, Huber loss,
epsilon-greedy exploration whose linear schedule (start, end, decay steps) is
traced per member. The torso is an MLP
for vector observations or a CNN for images: the Nature DQN one (84x84 Atari
frames) or a small one for MinAtar's 10x10 frames.
"""

from __future__ import annotations

from dataclasses import dataclass

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from populax.agents.base import (
    DISTILL_LR,
    ActionSpec,
    Agent,
    Array,
    Distill,
    Key,
    Transition,
    adam_step,
    bootstrap_discount,
)
from populax.agents.nets import TORSOS, conv_features
from populax.hparams import hparam


@struct.dataclass
class DQNHParams:
    """DQN hyperparameters that may differ per member (traced; never recompile)."""

    lr: Array = hparam(1e-3, "Adam learning rate of the Q-network.", valid=(0, 1), search=(1e-5, 1e-2), log=True)
    gamma: Array = hparam(0.99, "Discount factor.", valid=(0, 1), search=(0.9, 1.0))
    eps_start: Array = hparam(1.0, "Exploration epsilon when learning starts.", valid=(0, 1), search=(0.5, 1.0))
    eps_end: Array = hparam(0.05, "Exploration epsilon after the decay.", valid=(0, 1), search=(0.0, 0.2))
    eps_decay_steps: Array = hparam(
        10_000, "Env steps (after learning starts) over which epsilon decays linearly.",
        valid=(1, 1e9), search=(1_000, 100_000), log=True, integer=True,
    )
    target_period: Array = hparam(
        500, "Gradient updates between hard copies of the online network into the target.",
        valid=(1, 1e9), search=(10, 10_000), log=True, integer=True,
    )
    advantage_alpha: Array = hparam(
        0.0, "Advantage learning (Bellemare et al. 2016): the target subtracts alpha x the target net's action gap "
        "max_b Q(s, b) - Q(s, a), widening the gap between actions; 0 = plain Double DQN.",
        valid=(0, 1), search=(0.0, 0.99),
    )
    tau: Array = hparam(
        1.0, "Share of the online network blended into the target at each target update (every target_period "
        "updates): 1 = a hard copy (Mnih et al.); e.g. 0.005 with target_period 1 = Polyak averaging.",
        valid=(1e-6, 1), search=(0.001, 1.0), log=True,
    )


@dataclass(frozen=True)
class DQNConfig:
    """Static DQN settings: changing one changes array shapes and recompiles."""

    obs_shape: tuple[int, ...]
    """Observation shape: (D,) for vectors, (H, W, C) for images."""
    action: ActionSpec
    """The environment's action space (discrete)."""
    hidden: tuple[int, ...] = (256, 256)
    """Widths of the hidden layers after the torso."""
    torso: str = "mlp"
    """Feature extractor: mlp, nature_cnn (84x84 Atari) or minatar_cnn (10x10 MinAtar)."""
    dueling: bool = False
    """Split the head into state value and mean-centred advantages."""
    layer_norm: bool = False
    """LayerNorm before each hidden layer's ReLU (as in PQN, Gallici et al. 2024)."""
    clipped_double_q: bool = False
    """Bootstrap from min(Q_target, Q_online) at the online argmax: a pessimistic target against overestimation."""
    max_grad_norm: float = 10.0
    """Global gradient-norm clip of each update."""
    anneal_steps: int = 0
    """If > 0, the learning rate decays linearly to 0 over this many gradient updates."""
    advantage_learning: bool = True
    """Compute advantage learning's action gap (False when advantage_alpha is 0 all run: one target pass fewer)."""
    steps_per_update: float = 4.0
    """Env steps per gradient update (from the loop's schedule); turns the update count into env steps for epsilon."""


@struct.dataclass
class DQNState:
    """Everything one DQN member learns or counts."""

    params: dict
    target: dict
    opt: optax.OptState
    updates: Array
    """Gradient updates done so far (drives epsilon and the target period)."""


class QNetwork(nn.Module):
    """obs -> Q-values of every action."""

    hidden: tuple[int, ...]
    num_actions: int
    torso: str
    dueling: bool
    layer_norm: bool = False

    @nn.compact
    def __call__(self, obs):
        x = conv_features(obs, self.torso)  # inputs are always (batch, *obs_shape)
        for width in self.hidden:
            x = nn.Dense(width)(x)
            x = nn.relu(nn.LayerNorm()(x) if self.layer_norm else x)
        if not self.dueling:
            return nn.Dense(self.num_actions)(x)
        value = nn.Dense(1)(x)
        advantage = nn.Dense(self.num_actions)(x)
        return value + advantage - jnp.mean(advantage, axis=-1, keepdims=True)


def double_q_target(reward: Array, discount: Array, next_q_online: Array, next_q_target: Array,
                    clipped: bool = False) -> Array:
    """y = r + discount * Q_target(s', a*), a* = argmax_a Q_online(s', a), discount = gamma^k (1 - terminated)
    (``bootstrap_discount``); ``clipped``: the smaller of Q_target(s', a*) and Q_online(s', a*) (clipped
    double Q, Fujimoto et al. 2018)."""
    best = jnp.argmax(next_q_online, axis=-1)
    next_value = jnp.take_along_axis(next_q_target, best[..., None], axis=-1)[..., 0]
    if clipped:
        next_value = jnp.minimum(next_value, jnp.max(next_q_online, axis=-1))
    return reward + discount * next_value


def action_gap(q: Array, action: Array) -> Array:
    """max_b Q(s, b) - Q(s, a): how much worse the taken action is than the greedy one (>= 0)."""
    return jnp.max(q, axis=-1) - jnp.take_along_axis(q, action[..., None].astype(jnp.int32), axis=-1)[..., 0]


def epsilon(hp: DQNHParams, env_steps: Array) -> Array:
    """Linear decay from eps_start to eps_end over eps_decay_steps env steps."""
    fraction = jnp.clip(env_steps / jnp.maximum(hp.eps_decay_steps, 1.0), 0.0, 1.0)
    return hp.eps_start + fraction * (hp.eps_end - hp.eps_start)


def make_dqn(config: DQNConfig) -> Agent:
    """Build the DQN agent functions for one member."""
    if not config.action.discrete:
        raise ValueError("DQN needs a discrete action space")
    if config.torso not in TORSOS:
        raise ValueError(f"unknown torso {config.torso!r}")
    net = QNetwork(config.hidden, config.action.size, config.torso, config.dueling, config.layer_norm)
    optimizer = optax.chain(optax.clip_by_global_norm(config.max_grad_norm), optax.scale_by_adam())
    obs0 = jnp.zeros((1, *config.obs_shape))

    def init(key: Key, hparams: DQNHParams) -> DQNState:
        params = net.init(key, obs0)
        return DQNState(params=params, target=params, opt=optimizer.init(params), updates=jnp.zeros((), jnp.int32))

    def policy(state: DQNState, obs: Array) -> Array:
        return jnp.argmax(net.apply(state.params, obs), axis=-1).astype(jnp.int32)

    def act(state: DQNState, obs: Array, key: Key, hp: DQNHParams) -> Array:
        explore_key, random_key = jax.random.split(key)
        greedy = policy(state, obs)
        # Act is called only after learning starts with a live schedule, so the
        # update count times the schedule's steps per update is the env-step clock.
        eps = epsilon(hp, state.updates * config.steps_per_update)
        explore = jax.random.uniform(explore_key, greedy.shape) < eps
        random = jax.random.randint(random_key, greedy.shape, 0, config.action.size)
        return jnp.where(explore, random, greedy)

    def loss_fn(params: dict, batch: Transition, target: Array):
        q = net.apply(params, batch.obs)
        q_taken = jnp.take_along_axis(q, batch.action[..., None].astype(jnp.int32), axis=-1)[..., 0]
        return jnp.mean(optax.huber_loss(q_taken, target, delta=1.0)), jnp.mean(q_taken)

    def update(state: DQNState, batch: Transition, key: Key, hp: DQNHParams):
        # 1. Double-DQN target: the online net picks a', the target net values it.
        next_q_online = net.apply(state.params, batch.next_obs)
        next_q_target = net.apply(state.target, batch.next_obs)
        target = double_q_target(batch.reward, bootstrap_discount(batch, hp.gamma), next_q_online, next_q_target,
                                 config.clipped_double_q)
        # 1b. Advantage learning: lower the target of non-greedy actions by alpha x their gap, so
        # the greedy action stays ahead by more than the regression noise once values saturate.
        if config.advantage_learning:
            target = target - hp.advantage_alpha * action_gap(net.apply(state.target, batch.obs), batch.action)
        target = jax.lax.stop_gradient(target)
        # 2. Huber regression of Q(s, a) onto it.
        (loss, q_mean), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, batch, target)
        lr = hp.lr
        if config.anneal_steps > 0:  # a calm end: the last policy is the one evaluated
            lr = lr * jnp.maximum(1.0 - state.updates / config.anneal_steps, 0.0)
        params, opt = adam_step(state.params, grads, state.opt, lr, optimizer)
        updates = state.updates + 1
        # 3. Every target_period updates the target moves a share tau towards the online net
        # (tau 1: a hard copy; traced, so a select).
        due = updates % jnp.maximum(jnp.round(hp.target_period), 1).astype(jnp.int32) == 0
        share = jnp.where(due, hp.tau, 0.0)
        target_params = jax.tree.map(lambda t, p: jnp.where(share >= 1.0, p, t + share * (p - t)), state.target, params)
        state = DQNState(params=params, target=target_params, opt=opt, updates=updates)
        return state, {"q_loss": loss, "q_mean": q_mean, "epsilon": epsilon(hp, updates * config.steps_per_update)}

    def outputs(state: DQNState, batch: Transition) -> Array:
        """What distillation matches: the Q-values of every action."""
        return net.apply(state.params, batch.obs)

    def imitate(state: DQNState, batch: Transition, targets: Array) -> tuple[DQNState, Array]:
        value, grads = jax.value_and_grad(lambda p: jnp.mean((net.apply(p, batch.obs) - targets) ** 2))(state.params)
        params, opt = adam_step(state.params, grads, state.opt, DISTILL_LR, optimizer)
        return state.replace(params=params, target=params, opt=opt), value

    return Agent(init=init, act=act, policy=policy, update=update, distill=Distill(outputs, imitate))
