"""SAC (Haarnoja et al. 2018, with automatic entropy tuning) for one member.

Twin critics with Polyak targets, a tanh-squashed Gaussian policy whose
log-probability carries the change-of-variables correction, and a learned
temperature alpha driven towards a target entropy (-|A| by default). Every
value a population may vary is a traced field of :class:`SACHParams`.

Unlike the 2022 reference code, the soft target uses gamma once and terminal
transitions do not bootstrap (time-limit truncations do).
"""

from __future__ import annotations

import math
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
    polyak,
)
from populax.agents.nets import MLP, TwinCritic
from populax.hparams import hparam

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0


@struct.dataclass
class SACHParams:
    """SAC hyperparameters that may differ per member (traced; never recompile)."""

    lr_actor: Array = hparam(3e-4, "Actor Adam learning rate.", valid=(0, 1), search=(3e-5, 3e-3), log=True)
    lr_critic: Array = hparam(3e-4, "Critic Adam learning rate.", valid=(0, 1), search=(3e-5, 3e-3), log=True)
    lr_alpha: Array = hparam(3e-4, "Temperature (log alpha) Adam learning rate.", valid=(0, 1), search=(3e-5, 3e-3), log=True)
    gamma: Array = hparam(0.99, "Discount factor.", valid=(0, 1), search=(0.9, 1.0))
    tau: Array = hparam(0.005, "Polyak rate of the target critics.", valid=(0, 1), search=(1e-3, 0.1), log=True)
    reward_scale: Array = hparam(1.0, "Multiplier of the reward in the critic target.", valid=(0, 1e6), search=(0.1, 10.0), log=True)
    target_entropy_per_dim: Array = hparam(
        -1.0, "Target policy entropy per action dimension: the target is this times |A| (-1 gives -|A|).",
        valid=(-100, 100), search=(-2.0, 0.0),
    )


@dataclass(frozen=True)
class SACConfig:
    """Static SAC settings: changing one changes array shapes and recompiles."""

    obs_dim: int
    """Size of the flat observation vector."""
    action: ActionSpec
    """The environment's action space as the agent sees it (continuous)."""
    hidden: tuple[int, ...] = (256, 256)
    """Widths of the actor's and each critic's hidden layers."""
    init_alpha: float = 1.0
    """Initial entropy temperature."""


@struct.dataclass
class SACState:
    """Everything one SAC member learns or counts."""

    actor: dict
    critic: dict
    critic_target: dict
    log_alpha: Array
    actor_opt: optax.OptState
    critic_opt: optax.OptState
    alpha_opt: optax.OptState
    updates: Array
    """Number of gradient updates done so far."""


class GaussianActor(nn.Module):
    """obs -> (mean, log_std) of the pre-tanh Gaussian."""

    hidden: tuple[int, ...]
    action_dim: int

    @nn.compact
    def __call__(self, obs):
        out = MLP(self.hidden, 2 * self.action_dim)(obs)
        mean, log_std = jnp.split(out, 2, axis=-1)
        return mean, jnp.clip(log_std, LOG_STD_MIN, LOG_STD_MAX)


def squashed_sample(mean: Array, log_std: Array, key: Key) -> tuple[Array, Array]:
    """Sample a = tanh(u), u ~ N(mean, std); return (a, log pi(a)) summed over dimensions.

    log pi(a) = log N(u) - sum log(1 - tanh(u)^2), the last term written as
    2 (log 2 - u - softplus(-2u)) so that it stays finite when |u| is large.
    """
    u = mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape)
    gaussian = -0.5 * ((u - mean) / jnp.exp(log_std)) ** 2 - log_std - 0.5 * math.log(2 * math.pi)
    correction = 2.0 * (math.log(2.0) - u - jax.nn.softplus(-2.0 * u))
    return jnp.tanh(u), jnp.sum(gaussian - correction, axis=-1)


def soft_target(reward: Array, discount: Array, next_q1: Array, next_q2: Array, next_log_prob: Array,
                alpha: Array, reward_scale: Array) -> Array:
    """y = scale * r + discount * (min(Q1', Q2') - alpha * log pi(a'|s')), discount = gamma^k (1 - terminated)
    (``bootstrap_discount``)."""
    soft_value = jnp.minimum(next_q1, next_q2) - alpha * next_log_prob
    return reward_scale * reward + discount * soft_value


OPTIMIZER = optax.scale_by_adam()


def make_sac(config: SACConfig) -> Agent:
    """Build the SAC agent functions for one member."""
    if config.action.discrete:
        raise ValueError("SAC needs a continuous action space")
    actor_net = GaussianActor(config.hidden, config.action.size)
    critic_net = TwinCritic(config.hidden)
    obs0 = jnp.zeros((1, config.obs_dim))
    act0 = jnp.zeros((1, config.action.size))
    action_dim = config.action.size

    def init(key: Key, hparams: SACHParams) -> SACState:
        actor_key, critic_key = jax.random.split(key)
        actor = actor_net.init(actor_key, obs0)
        critic = critic_net.init(critic_key, obs0, act0)
        log_alpha = jnp.asarray(math.log(config.init_alpha), jnp.float32)
        return SACState(
            actor=actor,
            critic=critic,
            critic_target=critic,
            log_alpha=log_alpha,
            actor_opt=OPTIMIZER.init(actor),
            critic_opt=OPTIMIZER.init(critic),
            alpha_opt=OPTIMIZER.init(log_alpha),
            updates=jnp.zeros((), jnp.int32),
        )

    def policy(state: SACState, obs: Array) -> Array:
        mean, _ = actor_net.apply(state.actor, obs)
        return jnp.tanh(mean)

    def act(state: SACState, obs: Array, key: Key, hparams: SACHParams) -> Array:
        mean, log_std = actor_net.apply(state.actor, obs)
        return squashed_sample(mean, log_std, key)[0]

    def critic_loss(critic: dict, batch: Transition, target: Array):
        q1, q2 = critic_net.apply(critic, batch.obs, batch.action)
        return jnp.mean((q1 - target) ** 2) + jnp.mean((q2 - target) ** 2), jnp.mean(q1)

    def actor_loss(actor: dict, critic: dict, alpha: Array, obs: Array, key: Key):
        action, log_prob = squashed_sample(*actor_net.apply(actor, obs), key)
        q1, q2 = critic_net.apply(critic, obs, action)
        return jnp.mean(alpha * log_prob - jnp.minimum(q1, q2)), log_prob

    def alpha_loss(log_alpha: Array, log_prob: Array, target_entropy: Array):
        return -jnp.mean(log_alpha * (log_prob + target_entropy))

    def update(state: SACState, batch: Transition, key: Key, hp: SACHParams):
        next_key, actor_key = jax.random.split(key)
        alpha = jnp.exp(state.log_alpha)

        # 1. Critics towards the soft target, from the current policy at s'.
        next_action, next_log_prob = squashed_sample(*actor_net.apply(state.actor, batch.next_obs), next_key)
        next_q1, next_q2 = critic_net.apply(state.critic_target, batch.next_obs, next_action)
        target = jax.lax.stop_gradient(
            soft_target(batch.reward, bootstrap_discount(batch, hp.gamma), next_q1, next_q2, next_log_prob, alpha,
                        hp.reward_scale)
        )
        (c_loss, q_mean), grads = jax.value_and_grad(critic_loss, has_aux=True)(state.critic, batch, target)
        critic, critic_opt = adam_step(state.critic, grads, state.critic_opt, hp.lr_critic, OPTIMIZER)

        # 2. Actor: maximise min Q - alpha log pi with the updated critics.
        (a_loss, log_prob), grads = jax.value_and_grad(actor_loss, has_aux=True)(
            state.actor, critic, alpha, batch.obs, actor_key
        )
        actor, actor_opt = adam_step(state.actor, grads, state.actor_opt, hp.lr_actor, OPTIMIZER)

        # 3. Temperature towards the target entropy.
        target_entropy = hp.target_entropy_per_dim * action_dim
        t_loss, grad = jax.value_and_grad(alpha_loss)(state.log_alpha, jax.lax.stop_gradient(log_prob), target_entropy)
        log_alpha, alpha_opt = adam_step(state.log_alpha, grad, state.alpha_opt, hp.lr_alpha, OPTIMIZER)

        # 4. Polyak targets.
        state = SACState(
            actor=actor,
            critic=critic,
            critic_target=polyak(state.critic_target, critic, hp.tau),
            log_alpha=log_alpha,
            actor_opt=actor_opt,
            critic_opt=critic_opt,
            alpha_opt=alpha_opt,
            updates=state.updates + 1,
        )
        metrics = {"critic_loss": c_loss, "q_mean": q_mean, "actor_loss": a_loss, "alpha": alpha,
                   "entropy": -jnp.mean(log_prob), "alpha_loss": t_loss}
        return state, metrics

    def outputs(state: SACState, batch: Transition) -> dict:
        """What distillation matches: the actor's Gaussian (mean, log-std), both critics' values of the stored
        actions, and the temperature (taken as it is)."""
        mean, log_std = actor_net.apply(state.actor, batch.obs)
        return {"mean": mean, "log_std": log_std, "q": critic_net.apply(state.critic, batch.obs, batch.action),
                "log_alpha": state.log_alpha}

    def imitate(state: SACState, batch: Transition, targets: dict) -> tuple[SACState, Array]:
        def loss(actor: dict, critic: dict) -> Array:
            mine = outputs(state.replace(actor=actor, critic=critic), batch)
            return sum(jnp.mean((mine[name] - targets[name]) ** 2) for name in ("mean", "log_std")) + sum(
                jnp.mean((a - b) ** 2) for a, b in zip(mine["q"], targets["q"]))

        value, (actor_grads, critic_grads) = jax.value_and_grad(loss, argnums=(0, 1))(state.actor, state.critic)
        actor, actor_opt = adam_step(state.actor, actor_grads, state.actor_opt, DISTILL_LR, OPTIMIZER)
        critic, critic_opt = adam_step(state.critic, critic_grads, state.critic_opt, DISTILL_LR, OPTIMIZER)
        return state.replace(actor=actor, critic=critic, critic_target=critic, actor_opt=actor_opt,
                             critic_opt=critic_opt, log_alpha=targets["log_alpha"]), value

    return Agent(init=init, act=act, policy=policy, update=update, distill=Distill(outputs, imitate))
