"""The interface every algorithm implements, for one member only.

An algorithm is a handful of pure functions over a state pytree (compare
optax's ``GradientTransformation``). The population is a transformation applied
from outside by an executor (``populax.population``); nothing here knows how
many members there are.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array
Key = jax.Array
State = Any
HParams = Any
Metrics = dict[str, Array]


class ActionSpec(NamedTuple):
    """What an environment expects as action, as the agent sees it.

    Continuous actions are always in [-1, 1] on the agent's side; the
    environment adapter rescales them to the environment's bounds.
    """

    discrete: bool
    size: int
    """Number of actions (discrete) or action dimensions (continuous)."""


class Transition(NamedTuple):
    """One batch of environment steps as stored in the replay buffer."""

    obs: Array
    action: Array
    reward: Array
    next_obs: Array
    terminated: Array
    """1.0 where the episode ended in a terminal state: no bootstrap there.

    Time-limit truncation is *not* terminal: the target bootstraps from
    ``next_obs`` (the real final observation, not the reset one)."""
    horizon: Array | None = None
    """Env steps from ``obs`` to ``next_obs``: k of an n-step transition (``buffers.buffer_sample`` with
    ``n_step`` > 1, whose ``reward`` is then the discounted sum of the k rewards); None = 1. Never stored."""


STORED_FIELDS: tuple[str, ...] = ("obs", "action", "reward", "next_obs", "terminated")
"""The fields of a Transition that replay buffers store (``horizon`` is made when sampling)."""


def bootstrap_discount(batch: Transition, gamma: Array) -> Array:
    """gamma^k x (1 - terminated): the weight of ``next_obs``'s value in a TD target (k = ``batch.horizon``, 1
    for one-step transitions). Every off-policy target is ``reward + bootstrap_discount(batch, gamma) x V(next_obs)``."""
    discount = gamma if batch.horizon is None else gamma ** batch.horizon
    return discount * (1.0 - batch.terminated)


class Distill(NamedTuple):
    """How a network of one shape learns to answer like a network of another (BG-PBT's distillation; a
    mixed-shape population's move to another cohort, ``populax.loop.distill``).

    ``outputs(state, batch) -> pytree``            what the networks answer on a replay batch (the teacher's,
                                                   computed with the teacher's own agent functions)
    ``imitate(state, batch, targets) -> (state, loss)``  one gradient step of the student towards ``targets``
                                                   (its targets follow its online networks)
    """

    outputs: Callable[[State, Transition], Any]
    imitate: Callable[[State, Transition, Any], tuple[State, Array]]


DISTILL_LR = 1e-3
"""Adam learning rate of a distillation step (a regression onto fixed targets, not RL)."""


class Agent(NamedTuple):
    """One member's algorithm as pure functions.

    ``init(key, hparams) -> state``
    ``act(state, obs, key, hparams) -> action``   exploratory, batched over obs
    ``policy(state, obs) -> action``              deterministic, for evaluation
    ``update(state, batch, key, hparams) -> (state, metrics)``
    ``distill``: optional (:class:`Distill`), for ``--pbt-cross-cohort distill``
    """

    init: Callable[[Key, HParams], State]
    act: Callable[[State, Array, Key, HParams], Array]
    policy: Callable[[State, Array], Array]
    update: Callable[[State, Transition, Key, HParams], tuple[State, Metrics]]
    distill: Distill | None = None


class Rollout(NamedTuple):
    """T steps of E environments, with what an on-policy algorithm learns from (``populax.loop.onpolicy``)."""

    obs: Array
    action: Array
    log_prob: Array
    value: Array
    reward: Array
    """Reward, plus gamma * V(final obs) where the episode was truncated (bootstrap)."""
    done: Array
    """1.0 where the episode ended (terminated or truncated): GAE stops there."""


class OnPolicyAgent(NamedTuple):
    """One on-policy member as pure functions (PPO's interface; the loop is ``populax.loop.onpolicy``).

    ``init(key, hparams) -> state``
    ``act(state, obs, key) -> (action, log_prob, value)``   sampling, batched
    ``value(state, obs) -> value``
    ``policy(state, obs) -> action``                        deterministic, for evaluation
    ``update(state, rollout, advantages, returns, key, hparams) -> (state, metrics)``
    """

    init: Callable[[Key, HParams], State]
    act: Callable[[State, Array, Key], tuple[Array, Array, Array]]
    value: Callable[[State, Array], Array]
    policy: Callable[[State, Array], Array]
    update: Callable[[State, Rollout, Array, Array, Key, HParams], tuple[State, Metrics]]


class MissingAgentFunction(TypeError):
    """An :class:`Agent` or :class:`OnPolicyAgent` built without one of its functions: the message names the
    missing ones and what each must do (``populax.agents.check_algorithm`` adds whose algorithm it is)."""


def _require_functions(cls: type, signatures: dict[str, str]) -> None:
    """Make ``cls(...)`` (a NamedTuple of an agent's functions) name a missing function and its signature, not
    Python's ``__new__() missing 1 required positional argument``."""
    build = cls.__new__

    def checked_new(klass, *args, **kwargs):
        given = set(cls._fields[:len(args)]) | set(kwargs)
        missing = [name for name in cls._fields if name not in given and name not in cls._field_defaults]
        if missing and len(args) <= len(cls._fields) and given <= set(cls._fields):
            raise MissingAgentFunction(f"{cls.__name__}(...) without {' and '.join(missing)} (" + "; ".join(
                signatures[name] for name in missing) + ")")
        return build(klass, *args, **kwargs)

    cls.__new__ = checked_new


_require_functions(Agent, {
    "init": "init(key, hparams) -> state", "act": "act(state, obs, key, hparams) -> action, exploratory",
    "policy": "policy(state, obs) -> action, deterministic, for evaluation",
    "update": "update(state, batch, key, hparams) -> (state, metrics)"})
_require_functions(OnPolicyAgent, {
    "init": "init(key, hparams) -> state", "act": "act(state, obs, key) -> (action, log_prob, value)",
    "value": "value(state, obs) -> value", "policy": "policy(state, obs) -> action, deterministic, for evaluation",
    "update": "update(state, rollout, advantages, returns, key, hparams) -> (state, metrics)"})


def adam_step(
    params: Any, grads: Any, opt_state: Any, lr: Array, optimizer: Any
) -> tuple[Any, Any]:
    """Apply one optimizer step whose learning rate is a traced array.

    The optimizer is an optax transformation *without* a learning rate (e.g.
    ``optax.scale_by_adam()``); scaling by ``-lr`` here keeps the rate out of the
    optimizer state, so PBT can change it by editing hyperparameters alone and a
    new value never recompiles.
    """
    updates, opt_state = optimizer.update(grads, opt_state, params)
    params = jax.tree.map(lambda p, u: p - lr * u, params, updates)
    return params, opt_state


def polyak(target: Any, online: Any, tau: Array) -> Any:
    """Move target parameters a fraction ``tau`` toward the online ones."""
    return jax.tree.map(lambda t, o: (1.0 - tau) * t + tau * o, target, online)


def all_finite(tree: Any) -> Array:
    """True when every leaf of ``tree`` is free of NaN and Inf (no host sync)."""
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.bool_(True)


class AgentSpec(NamedTuple):
    """What an algorithm's builder gets: shapes, widths, options and loop facts."""

    obs_shape: tuple[int, ...]
    action: ActionSpec
    hidden: tuple[int, ...]
    options: Any = None
    """The algorithm's options dataclass instance (None if it has none)."""
    steps_per_update: float = 1.0
    """Env steps per gradient update in the off-policy loop (DQN's epsilon clock)."""
    total_updates: int = 0
    """Gradient steps of the whole run (learning-rate annealing)."""
    zero_hparams: frozenset[str] = frozenset()
    """Traced hyperparameters that are 0 for every member all run (``hparams.zero_hparams``): the agent
    may leave out what they scale (DQN skips advantage learning's target pass at alpha 0)."""
