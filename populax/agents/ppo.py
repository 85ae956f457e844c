"""PPO (Schulman et al. 2017) for one member, continuous or discrete actions.

Clipped surrogate objective on GAE advantages (normalised per minibatch), a
value loss (optionally clipped), an entropy bonus, several epochs of shuffled
minibatches per rollout, global-norm gradient clipping. On-policy: the loop
that feeds it is ``populax.loop.onpolicy`` (rollouts, no replay buffer), the same on both backends.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from populax.agents.base import ActionSpec, Array, Key, OnPolicyAgent, Rollout, adam_step
from populax.agents.nets import TORSOS, conv_features, orthogonal_polar
from populax.hparams import hparam


@struct.dataclass
class PPOHParams:
    """PPO hyperparameters that may differ per member (traced; never recompile)."""

    lr: Array = hparam(3e-4, "Adam learning rate (actor and critic).", valid=(0, 1), search=(1e-5, 3e-3), log=True)
    clip_eps: Array = hparam(0.2, "Clip range of the probability ratio (and of the value, if clipped).", valid=(0, 10), search=(0.05, 0.4))
    ent_coef: Array = hparam(0.0, "Weight of the entropy bonus.", valid=(0, 10), search=(0.0, 0.05))
    vf_coef: Array = hparam(0.5, "Weight of the value loss.", valid=(0, 100), search=(0.25, 1.0))
    gamma: Array = hparam(0.99, "Discount factor.", valid=(0, 1), search=(0.9, 1.0))
    gae_lambda: Array = hparam(0.95, "GAE lambda (bias-variance trade-off of the advantages).", valid=(0, 1), search=(0.8, 1.0))


@dataclass(frozen=True)
class PPOConfig:
    """Static PPO settings: changing one changes array shapes or the program."""

    obs_shape: tuple[int, ...]
    """Observation shape: (D,) for vectors, (H, W, C) for images."""
    action: ActionSpec
    """The environment's action space."""
    hidden: tuple[int, ...] = (64, 64)
    """Widths of the actor's and the critic's hidden layers (tanh)."""
    torso: str = "mlp"
    """Feature extractor: mlp (flatten; separate actor and critic MLPs) or a CNN shared by both heads (nature_cnn, minatar_cnn)."""
    epochs: int = 10
    """Passes over each rollout."""
    minibatches: int = 4
    """Minibatches each rollout is split into per epoch."""
    clip_value: bool = False
    """Clip the value update around the rollout's values (PPO2 style)."""
    max_grad_norm: float = 0.5
    """Global gradient-norm clip of each step."""
    anneal_steps: int = 0
    """If > 0, the learning rate decays linearly to 0 over this many gradient steps."""


@struct.dataclass
class PPOState:
    """Everything one PPO member learns or counts."""

    params: dict
    opt: optax.OptState
    updates: Array
    """Gradient steps done so far (drives the optional learning-rate annealing)."""


class ActorCritic(nn.Module):
    """obs -> (policy output, value): tanh MLP heads, orthogonal init.

    With the ``mlp`` torso the actor and the critic are separate MLPs on the
    flattened observation. With a CNN torso the convolutions are shared and
    each head is an MLP on their features (as CleanRL's Atari PPO and the
    PureJaxRL-derived MinAtar PPO of pgx): the convolutions are most of the
    compute, and sharing them runs them once per observation instead of twice.
    """

    hidden: tuple[int, ...]
    action: ActionSpec
    torso: str = "mlp"

    @nn.compact
    def __call__(self, obs):
        # CNN torsos: the same orthogonal init without LAPACK's QR (see nets.orthogonal_polar).
        orthogonal = nn.initializers.orthogonal if self.torso == "mlp" else orthogonal_polar

        def mlp(x, out, scale):
            for width in self.hidden:
                x = jnp.tanh(nn.Dense(width, kernel_init=orthogonal(math.sqrt(2)))(x))
            return nn.Dense(out, kernel_init=orthogonal(scale))(x)

        features = conv_features(obs, self.torso)  # (batch, features); mlp only flattens
        logits_or_mean = mlp(features, self.action.size, 0.01)
        value = mlp(features, 1, 1.0)[..., 0]
        if self.action.discrete:
            return logits_or_mean, value
        log_std = self.param("log_std", nn.initializers.zeros, (self.action.size,))
        return (logits_or_mean, jnp.broadcast_to(log_std, logits_or_mean.shape)), value


def clipped_surrogate(log_prob: Array, old_log_prob: Array, advantage: Array, clip_eps: Array) -> Array:
    """-E[min(ratio * A, clip(ratio, 1 - eps, 1 + eps) * A)]."""
    ratio = jnp.exp(log_prob - old_log_prob)
    clipped = jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps)
    return -jnp.mean(jnp.minimum(ratio * advantage, clipped * advantage))


def make_ppo(config: PPOConfig) -> OnPolicyAgent:
    """Build the PPO agent functions for one member."""
    if config.torso not in TORSOS:
        raise ValueError(f"unknown torso {config.torso!r}")
    net = ActorCritic(config.hidden, config.action, config.torso)
    optimizer = optax.chain(optax.clip_by_global_norm(config.max_grad_norm), optax.scale_by_adam(eps=1e-5))

    def log_prob_and_entropy(dist, action):
        if config.action.discrete:
            logp_all = jax.nn.log_softmax(dist)
            log_prob = jnp.take_along_axis(logp_all, action[..., None].astype(jnp.int32), axis=-1)[..., 0]
            entropy = -jnp.sum(jnp.exp(logp_all) * logp_all, axis=-1)
            return log_prob, entropy
        mean, log_std = dist
        log_prob = jnp.sum(-0.5 * ((action - mean) / jnp.exp(log_std)) ** 2 - log_std - 0.5 * math.log(2 * math.pi), axis=-1)
        entropy = jnp.sum(log_std + 0.5 * math.log(2 * math.pi * math.e), axis=-1)
        return log_prob, entropy

    def init(key: Key, hparams: PPOHParams) -> PPOState:
        params = net.init(key, jnp.zeros((1, *config.obs_shape)))
        return PPOState(params=params, opt=optimizer.init(params), updates=jnp.zeros((), jnp.int32))

    def act(state: PPOState, obs: Array, key: Key):
        dist, value = net.apply(state.params, obs)
        if config.action.discrete:
            action = jax.random.categorical(key, dist).astype(jnp.int32)
        else:
            mean, log_std = dist
            action = mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape)
        return action, log_prob_and_entropy(dist, action)[0], value

    def value(state: PPOState, obs: Array) -> Array:
        return net.apply(state.params, obs)[1]

    def policy(state: PPOState, obs: Array) -> Array:
        dist, _ = net.apply(state.params, obs)
        if config.action.discrete:
            return jnp.argmax(dist, axis=-1).astype(jnp.int32)
        return jnp.clip(dist[0], -1.0, 1.0)

    def loss_fn(params, batch: Rollout, advantage: Array, returns: Array, hp: PPOHParams):
        dist, v = net.apply(params, batch.obs)
        log_prob, entropy = log_prob_and_entropy(dist, batch.action)
        advantage = (advantage - advantage.mean()) / (advantage.std() + 1e-8)
        pg_loss = clipped_surrogate(log_prob, batch.log_prob, advantage, hp.clip_eps)
        v_loss = (v - returns) ** 2
        if config.clip_value:
            v_clipped = batch.value + jnp.clip(v - batch.value, -hp.clip_eps, hp.clip_eps)
            v_loss = jnp.maximum(v_loss, (v_clipped - returns) ** 2)
        v_loss = 0.5 * jnp.mean(v_loss)
        entropy = jnp.mean(entropy)
        total = pg_loss + hp.vf_coef * v_loss - hp.ent_coef * entropy
        return total, {"policy_loss": pg_loss, "value_loss": v_loss, "entropy": entropy}

    def update(state: PPOState, rollout: Rollout, advantages: Array, returns: Array, key: Key, hp: PPOHParams):
        flat = jax.tree.map(lambda x: x.reshape((-1, *x.shape[2:])), (rollout, advantages, returns))
        size = advantages.size
        mb_size = size // config.minibatches

        def step(state: PPOState, indices: Array):
            batch, adv, ret = jax.tree.map(lambda x: x[indices], flat)
            grads, metrics = jax.grad(loss_fn, has_aux=True)(state.params, batch, adv, ret, hp)
            lr = hp.lr
            if config.anneal_steps > 0:
                lr = lr * jnp.maximum(1.0 - state.updates / config.anneal_steps, 0.0)
            params, opt = adam_step(state.params, grads, state.opt, lr, optimizer)
            return PPOState(params=params, opt=opt, updates=state.updates + 1), metrics

        def epoch(state: PPOState, epoch_key: Key):
            order = jax.random.permutation(epoch_key, size)[: mb_size * config.minibatches]
            return jax.lax.scan(step, state, order.reshape((config.minibatches, mb_size)))

        state, metrics = jax.lax.scan(epoch, state, jax.random.split(key, config.epochs))
        return state, jax.tree.map(jnp.mean, metrics)

    return OnPolicyAgent(init=init, act=act, value=value, policy=policy, update=update)
