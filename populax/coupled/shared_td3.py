"""TD3 pieces of the coupled methods: per-member actors, one shared twin critic, the shared replay.

The critic is trained on batches drawn from the union of the members'
replay buffers (the *shared replay*); its TD target uses the target actor of
the member each batch belongs to, masked out when that actor is not finite,
so one diverged member never poisons the critic the others learn from.
DvD-TD3 can instead give every member its own twin critic
(``--algo-opt.critics per-member``): it then lives in the member's
``ActorState.critic``, so a diverged critic fails (and re-initialises) only
its own member.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import struct

from populax.agents.base import Transition, adam_step, all_finite, bootstrap_discount, polyak
from populax.agents.nets import DeterministicActor, TwinCritic
from populax.buffers import ReplayBuffer, n_step_fold, ring_successors

OPTIMIZER = optax.scale_by_adam()


@struct.dataclass
class ActorState:
    """One member's actor (the per-member agent state of a coupled method)."""

    actor: dict
    actor_target: dict
    actor_opt: optax.OptState
    updates: jax.Array
    """Actor gradient steps taken in this slot."""
    critic: Any = None
    """This member's own twin critic (``CriticState``; DvD-TD3 with per-member critics), else None."""


@struct.dataclass
class CriticState:
    """The population's one twin critic."""

    critic: dict
    critic_target: dict
    critic_opt: optax.OptState
    updates: jax.Array
    """Critic gradient steps taken."""


class Nets(NamedTuple):
    """The actor and critic modules, and a zero observation and action to initialise them."""

    actor: DeterministicActor
    critic: TwinCritic
    obs0: jax.Array
    act0: jax.Array


def make_nets(obs_dim: int, action_size: int, hidden: tuple[int, ...]) -> Nets:
    """The TD3 networks at the given widths."""
    return Nets(DeterministicActor(hidden, action_size), TwinCritic(hidden),
                jnp.zeros((1, obs_dim)), jnp.zeros((1, action_size)))


def init_actor(nets: Nets, key: jax.Array, own_critic: bool = False) -> ActorState:
    """A fresh actor, its target and a fresh Adam state; with ``own_critic`` also a fresh twin critic."""
    if not own_critic:
        return actor_state(nets.actor.init(key, nets.obs0), jnp.zeros((), jnp.int32))
    actor_key, critic_key = jax.random.split(key)
    state = actor_state(nets.actor.init(actor_key, nets.obs0), jnp.zeros((), jnp.int32))
    return state.replace(critic=init_critic(nets, critic_key))


def actor_state(actor: dict, updates: jax.Array) -> ActorState:
    """An actor whose target equals it and whose Adam state is fresh."""
    return ActorState(actor=actor, actor_target=actor, actor_opt=OPTIMIZER.init(actor), updates=updates)


def init_critic(nets: Nets, key: jax.Array) -> CriticState:
    """A fresh twin critic, its target and Adam state."""
    critic = nets.critic.init(key, nets.obs0, nets.act0)
    return CriticState(critic=critic, critic_target=critic, critic_opt=OPTIMIZER.init(critic),
                       updates=jnp.zeros((), jnp.int32))


def union_sample(experience: ReplayBuffer, key: jax.Array, batch_size: int, n_step: int = 1,
                 gamma: jax.Array | float = 1.0, envs: int = 1) -> Transition:
    """``batch_size`` transitions uniformly from the union of the members' valid rows
    (``n_step`` > 1: n-step transitions, as ``buffers.buffer_sample``).

    Each draw is one of the ``sum(size)`` valid rows, so a member contributes in proportion to what its
    buffer holds: one whose rollback left it few or no rows (valid rows are ``[0, size)``, also after
    ``buffer_rewind``) is not oversampled, and an empty one is never drawn.
    """
    members, index = union_rows(experience.size, key, batch_size)
    take = lambda rows: jax.tree.map(lambda store: store[members, rows], experience.data)  # noqa: E731
    capacity = jax.tree.leaves(experience.data)[0].shape[1]
    following = ring_successors(take, index, experience.position[members], experience.size[members], capacity, envs)
    return n_step_fold(take(index), following, n_step, gamma)


def union_rows(sizes: jax.Array, key: jax.Array, count: int) -> tuple[jax.Array, jax.Array]:
    """(member, row) of ``count`` draws, uniform over the union of the members' valid rows ``[0, sizes[m])``.

    A draw is a position in the concatenation of the valid parts; the member is the part it falls in.
    With every buffer empty every draw is (0, 0) (the caller does not learn then).
    """
    ends = jnp.cumsum(sizes)
    flat = jax.random.randint(key, (count,), 0, jnp.maximum(ends[-1], 1))
    members = jnp.minimum(jnp.searchsorted(ends, flat, side="right"), sizes.shape[0] - 1)
    return members, flat - (ends[members] - sizes[members])


def finite_rows(transition: Transition) -> Transition:
    """Rows with a NaN/Inf anywhere (a diverged member's actions) stored as zeros, so the
    shared replay stays finite; the strategy rolls the member's buffer back after the chunk anyway."""
    def row_ok(x):
        return jnp.all(jnp.isfinite(x.reshape(x.shape[0], -1)), axis=1)

    ok = jnp.all(jnp.stack([row_ok(x) for x in jax.tree.leaves(transition)]), axis=0)
    return jax.tree.map(lambda x: jnp.where(ok.reshape((-1,) + (1,) * (x.ndim - 1)), x, 0).astype(x.dtype), transition)


def first_member(stacked: Any) -> Any:
    """Member 0's slice (the shared critic reads its settings from member 0's hyperparameters)."""
    return jax.tree.map(lambda x: x[0], stacked)


def stack_one(tree: Any) -> Any:
    """``tree`` with a leading axis of one (a single batch or target actor, as ``critic_step`` takes K of them)."""
    return jax.tree.map(lambda x: x[None], tree)


def td_targets(nets: Nets, critic_target: dict, target_actors: dict, batches: Transition, key: jax.Array,
               hp: Any) -> jax.Array:
    """TD3's targets [K, B] of K batches [K, B, ...]: batch k's ``reward + gamma^horizon (1 - terminated)
    min(Q1', Q2')(next_obs, a')``, a' from ``target_actors`` k with clipped target noise (``hp``: one member's)."""

    def targets(actor_params, batch, k):
        next_action = nets.actor.apply(actor_params, batch.next_obs)
        noise = jnp.clip(hp.target_noise * jax.random.normal(k, next_action.shape), -hp.noise_clip, hp.noise_clip)
        next_action = jnp.clip(next_action + noise, -1.0, 1.0)
        q1, q2 = nets.critic.apply(critic_target, batch.next_obs, next_action)
        return batch.reward + bootstrap_discount(batch, hp.gamma) * jnp.minimum(q1, q2)

    return jax.vmap(targets)(target_actors, batches, jax.random.split(key, batches.reward.shape[0]))


def critic_step(nets: Nets, state: CriticState, batches: Transition, target_actors: dict, key: jax.Array,
                hp: Any) -> tuple[CriticState, jax.Array, jax.Array]:
    """One Adam step of the shared critic on K batches [K, B, ...], batch k's TD target from
    ``target_actors`` k (stacked); a non-finite target actor's batch is left out.
    Returns (state, loss, mean Q)."""
    target = td_targets(nets, state.critic_target, target_actors, batches, key, hp)
    usable = jax.vmap(all_finite)(target_actors) & jnp.all(jnp.isfinite(target), axis=1)
    target = jax.lax.stop_gradient(jnp.where(usable[:, None], target, 0.0))
    weights = usable / jnp.maximum(usable.sum(), 1)

    def loss_fn(critic):
        q1, q2 = jax.vmap(lambda b: nets.critic.apply(critic, b.obs, b.action))(batches)
        per_batch = jnp.mean((q1 - target) ** 2 + (q2 - target) ** 2, axis=1)
        return jnp.sum(weights * per_batch), jnp.mean(q1)

    (loss, q_mean), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.critic)
    critic, opt = adam_step(state.critic, grads, state.critic_opt, hp.lr_critic, OPTIMIZER)
    return state.replace(critic=critic, critic_opt=opt, updates=state.updates + 1), loss, q_mean


def q_values(nets: Nets, critic: dict, actor: dict, obs: jax.Array) -> jax.Array:
    """Q1(s, pi(s)) of one actor on a batch of states (the deterministic policy gradient's objective)."""
    q1, _ = nets.critic.apply(critic, obs, nets.actor.apply(actor, obs))
    return q1


def actors_step(actors: ActorState, grads: dict, lr: jax.Array, tau: jax.Array) -> ActorState:
    """Every member's Adam step on its own gradient and learning rate, and its target's Polyak update."""

    def one(state: ActorState, grad: dict, lr: jax.Array, tau: jax.Array) -> ActorState:
        actor, opt = adam_step(state.actor, grad, state.actor_opt, lr, OPTIMIZER)
        return state.replace(actor=actor, actor_target=polyak(state.actor_target, actor, tau), actor_opt=opt,
                             updates=state.updates + 1)

    return jax.vmap(one)(actors, grads, lr, tau)


def soft_update_critic(state: CriticState, tau: jax.Array) -> CriticState:
    """The critic target's Polyak update."""
    return state.replace(critic_target=polyak(state.critic_target, state.critic, tau))


def skip_or(started: jax.Array, update: Callable, carry: Any) -> tuple[Any, dict]:
    """``update(carry)`` once learning has started, else ``carry`` unchanged and NaN metrics."""

    def skip(c):
        metrics = jax.eval_shape(update, c)[1]
        return c, jax.tree.map(lambda m: jnp.full(m.shape, jnp.nan, m.dtype), metrics)

    return jax.lax.cond(started, update, skip, carry)
