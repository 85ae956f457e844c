"""TD3 (Fujimoto et al. 2018) for one member.

Twin critics with clipped double-Q targets, target policy smoothing, delayed
policy and target updates, Polyak averaging. Every hyperparameter a population
may vary is a traced field of :class:`TD3HParams`; network widths and batch
size are static fields of :class:`TD3Config`.
"""

from __future__ import annotations

from dataclasses import dataclass

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
from populax.agents.nets import DeterministicActor, TwinCritic
from populax.hparams import hparam


@struct.dataclass
class TD3HParams:
    """TD3 hyperparameters that may differ per member (traced; never recompile)."""

    lr_actor: Array = hparam(3e-4, "Actor Adam learning rate.", valid=(0, 1), search=(3e-5, 3e-3), log=True)
    lr_critic: Array = hparam(3e-4, "Critic Adam learning rate.", valid=(0, 1), search=(3e-5, 3e-3), log=True)
    gamma: Array = hparam(0.99, "Discount factor.", valid=(0, 1), search=(0.9, 1.0))
    tau: Array = hparam(0.005, "Polyak rate of the target networks.", valid=(0, 1), search=(1e-3, 0.1), log=True)
    sigma: Array = hparam(0.1, "Std of the Gaussian exploration noise (actions in [-1, 1]).", valid=(0, 10), search=(0.0, 1.0))
    target_noise: Array = hparam(0.2, "Std of the target policy smoothing noise.", valid=(0, 10), search=(0.0, 1.0))
    noise_clip: Array = hparam(0.5, "Clip of the target policy smoothing noise.", valid=(0, 10), search=(0.0, 1.0))
    delay: Array = hparam(2, "Critic updates per actor and target update.", valid=(1, 1000), search=(1, 5), integer=True)


@dataclass(frozen=True)
class TD3Config:
    """Static TD3 settings: changing one changes array shapes and recompiles."""

    obs_dim: int
    """Size of the flat observation vector."""
    action: ActionSpec
    """The environment's action space as the agent sees it."""
    hidden: tuple[int, ...] = (256, 256)
    """Widths of the actor's and each critic's hidden layers."""


@struct.dataclass
class TD3State:
    """Everything one TD3 member learns or counts."""

    actor: dict
    critic: dict
    actor_target: dict
    critic_target: dict
    actor_opt: optax.OptState
    critic_opt: optax.OptState
    updates: Array
    """Number of critic updates done so far (drives the policy delay)."""


OPTIMIZER = optax.scale_by_adam()


def make_td3(config: TD3Config) -> Agent:
    """Build the TD3 agent functions for one member."""
    if config.action.discrete:
        raise ValueError("TD3 needs a continuous action space")
    actor_net = DeterministicActor(config.hidden, config.action.size)
    critic_net = TwinCritic(config.hidden)
    obs0 = jnp.zeros((1, config.obs_dim))
    act0 = jnp.zeros((1, config.action.size))

    def init(key: Key, hparams: TD3HParams) -> TD3State:
        actor_key, critic_key = jax.random.split(key)
        actor = actor_net.init(actor_key, obs0)
        critic = critic_net.init(critic_key, obs0, act0)
        return TD3State(
            actor=actor,
            critic=critic,
            actor_target=actor,
            critic_target=critic,
            actor_opt=OPTIMIZER.init(actor),
            critic_opt=OPTIMIZER.init(critic),
            updates=jnp.zeros((), jnp.int32),
        )

    def policy(state: TD3State, obs: Array) -> Array:
        return actor_net.apply(state.actor, obs)

    def act(state: TD3State, obs: Array, key: Key, hparams: TD3HParams) -> Array:
        action = policy(state, obs)
        noise = hparams.sigma * jax.random.normal(key, action.shape)
        return jnp.clip(action + noise, -1.0, 1.0)

    def critic_target_values(state: TD3State, batch: Transition, key: Key, hp: TD3HParams) -> Array:
        """r + gamma^k (1 - terminated) * min_i Q_i'(s', pi'(s') + clipped noise) (k = 1 unless n-step)."""
        next_action = actor_net.apply(state.actor_target, batch.next_obs)
        noise = jnp.clip(
            hp.target_noise * jax.random.normal(key, next_action.shape),
            -hp.noise_clip,
            hp.noise_clip,
        )
        next_action = jnp.clip(next_action + noise, -1.0, 1.0)
        q1, q2 = critic_net.apply(state.critic_target, batch.next_obs, next_action)
        return batch.reward + bootstrap_discount(batch, hp.gamma) * jnp.minimum(q1, q2)

    def critic_loss(critic: dict, batch: Transition, target: Array):
        q1, q2 = critic_net.apply(critic, batch.obs, batch.action)
        loss = jnp.mean((q1 - target) ** 2) + jnp.mean((q2 - target) ** 2)
        return loss, jnp.mean(q1)

    def actor_loss(actor: dict, critic: dict, obs: Array):
        q1, _ = critic_net.apply(critic, obs, actor_net.apply(actor, obs))
        return -jnp.mean(q1)

    def update_actor_and_targets(state: TD3State, batch: Transition, hp: TD3HParams):
        loss, grads = jax.value_and_grad(actor_loss)(state.actor, state.critic, batch.obs)
        actor, actor_opt = adam_step(state.actor, grads, state.actor_opt, hp.lr_actor, OPTIMIZER)
        state = state.replace(
            actor=actor,
            actor_opt=actor_opt,
            actor_target=polyak(state.actor_target, actor, hp.tau),
            critic_target=polyak(state.critic_target, state.critic, hp.tau),
        )
        return state, loss

    def update(state: TD3State, batch: Transition, key: Key, hp: TD3HParams):
        # 1. Critic step towards the clipped double-Q target.
        target = jax.lax.stop_gradient(critic_target_values(state, batch, key, hp))
        (c_loss, q_mean), grads = jax.value_and_grad(critic_loss, has_aux=True)(
            state.critic, batch, target
        )
        critic, critic_opt = adam_step(state.critic, grads, state.critic_opt, hp.lr_critic, OPTIMIZER)
        state = state.replace(critic=critic, critic_opt=critic_opt, updates=state.updates + 1)

        # 2. Every `delay` critic steps: actor step and target updates. The delay
        # is traced, so this is a cond on data (a select under vmap).
        is_policy_step = state.updates % jnp.maximum(jnp.round(hp.delay), 1).astype(jnp.int32) == 0
        state, a_loss = jax.lax.cond(
            is_policy_step,
            lambda s: update_actor_and_targets(s, batch, hp),
            lambda s: (s, jnp.float32(jnp.nan)),
            state,
        )
        metrics = {"critic_loss": c_loss, "q_mean": q_mean, "actor_loss": a_loss}
        return state, metrics

    def outputs(state: TD3State, batch: Transition) -> dict:
        """What distillation matches: the actor's actions and both critics' values of the stored actions."""
        return {"action": actor_net.apply(state.actor, batch.obs),
                "q": critic_net.apply(state.critic, batch.obs, batch.action)}

    def imitate(state: TD3State, batch: Transition, targets: dict) -> tuple[TD3State, Array]:
        def loss(actor: dict, critic: dict) -> Array:
            mine = outputs(state.replace(actor=actor, critic=critic), batch)
            return sum(jnp.mean((a - b) ** 2) for a, b in zip(jax.tree.leaves(mine), jax.tree.leaves(targets)))

        value, (actor_grads, critic_grads) = jax.value_and_grad(loss, argnums=(0, 1))(state.actor, state.critic)
        actor, actor_opt = adam_step(state.actor, actor_grads, state.actor_opt, DISTILL_LR, OPTIMIZER)
        critic, critic_opt = adam_step(state.critic, critic_grads, state.critic_opt, DISTILL_LR, OPTIMIZER)
        return state.replace(actor=actor, critic=critic, actor_target=actor, critic_target=critic,
                             actor_opt=actor_opt, critic_opt=critic_opt), value

    return Agent(init=init, act=act, policy=policy, update=update, distill=Distill(outputs, imitate))
