"""What the update-step benchmark times: one member's update at the paper's shapes.

A :class:`BenchCase` holds everything an implementation needs to run one
population-wide update on synthetic data: the real agent's ``update`` written
for one member, a stacked initial population, a stacked batch already on the
device, per-member keys and hyperparameters. Adding an algorithm is one entry
in :data:`CASES` (a function ``(pop, seed, hidden, batch) -> BenchCase``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from populax.agents.base import ActionSpec, Agent, Transition
from populax.errors import ConfigError
from populax.population import init_members


class BenchCase(NamedTuple):
    """One algorithm at fixed shapes, for a population of ``pop`` members."""

    algo: str
    agent: Agent
    pop: int
    seed: int
    state: Any
    """Stacked initial agent states (leading axis ``pop``)."""
    batch: Transition
    """Stacked synthetic batches (leading axis ``pop``), one per member."""
    keys: jax.Array
    """One PRNG key per member (the update's randomness)."""
    hparams: Any
    """Stacked per-member hyperparameters."""
    shapes: dict[str, Any]
    """The static shapes, as reported in the benchmark's JSON."""


def synthetic_observations(key: jax.Array, shape: tuple[int, ...], dtype: jnp.dtype) -> jax.Array:
    """Standard-normal floats, or uniform bytes for image (uint8) observations."""
    if jnp.issubdtype(dtype, jnp.integer):
        return jax.random.randint(key, shape, 0, 256).astype(dtype)
    return jax.random.normal(key, shape, dtype)


def synthetic_batch(
    key: jax.Array, pop: int, batch: int, obs_shape: tuple[int, ...], action: ActionSpec, obs_dtype: jnp.dtype = jnp.float32,
) -> Transition:
    """Random transitions of the right shapes and ranges for ``pop`` members."""
    k_obs, k_next, k_act, k_rew, k_term = jax.random.split(key, 5)
    lead = (pop, batch)
    if action.discrete:
        actions = jax.random.randint(k_act, lead, 0, action.size)
    else:
        actions = jax.random.uniform(k_act, (*lead, action.size), minval=-1.0, maxval=1.0)
    return Transition(
        obs=synthetic_observations(k_obs, (*lead, *obs_shape), obs_dtype),
        action=actions,
        reward=jax.random.normal(k_rew, lead),
        next_obs=synthetic_observations(k_next, (*lead, *obs_shape), obs_dtype),
        # ~1% terminal transitions, so the bootstrap mask is exercised
        terminated=(jax.random.uniform(k_term, lead) < 0.01).astype(jnp.float32),
    )


def build_case(
    algo: str, agent: Agent, hparams_type: type, pop: int, seed: int, batch: int,
    obs_shape: tuple[int, ...], action: ActionSpec, shapes: dict[str, Any], obs_dtype: jnp.dtype = jnp.float32,
) -> BenchCase:
    """Initialise ``pop`` members of ``agent`` and their synthetic data from ``seed``."""
    key = jax.random.key(seed)
    init_keys = jax.random.split(jax.random.fold_in(key, 0), pop)
    update_keys = jax.random.split(jax.random.fold_in(key, 1), pop)
    hparams = jax.tree.map(lambda x: jnp.broadcast_to(jnp.asarray(x), (pop, *jnp.shape(x))), hparams_type())
    state = init_members(agent.init)(init_keys, hparams)
    data = synthetic_batch(jax.random.fold_in(key, 2), pop, batch, obs_shape, action, obs_dtype)
    return BenchCase(algo, agent, pop, seed, state, data, update_keys, hparams, shapes)


def td3_case(pop: int, seed: int = 0, hidden: tuple[int, ...] = (256, 256), batch: int = 256) -> BenchCase:
    """TD3 at the paper's shapes: HalfCheetah (obs 17, action 6), (256, 256) MLPs, batch 256."""
    from populax.agents.td3 import TD3Config, TD3HParams, make_td3

    action = ActionSpec(discrete=False, size=6)
    agent = make_td3(TD3Config(obs_dim=17, action=action, hidden=hidden))
    shapes = {"obs": [17], "action": 6, "hidden": list(hidden), "batch": batch}
    return build_case("td3", agent, TD3HParams, pop, seed, batch, (17,), action, shapes)


def sac_case(pop: int, seed: int = 0, hidden: tuple[int, ...] = (256, 256), batch: int = 256) -> BenchCase:
    """SAC at TD3's shapes: HalfCheetah (obs 17, action 6), (256, 256) MLPs, batch 256."""
    from populax.agents.sac import SACConfig, SACHParams, make_sac

    action = ActionSpec(discrete=False, size=6)
    agent = make_sac(SACConfig(obs_dim=17, action=action, hidden=hidden))
    shapes = {"obs": [17], "action": 6, "hidden": list(hidden), "batch": batch}
    return build_case("sac", agent, SACHParams, pop, seed, batch, (17,), action, shapes)


DQN_ACTIONS = 18
"""Atari's full action set: the DQN case's fixed action count."""


def dqn_case(pop: int, seed: int = 0, hidden: tuple[int, ...] = (256,), batch: int = 32) -> BenchCase:
    """Double DQN on Atari frames: Nature-CNN torso on 84x84x4 uint8, dueling head after a 256 layer,
    18 actions, batch 32 (``hidden`` is the layer after the torso)."""
    from populax.agents.dqn import DQNConfig, DQNHParams, make_dqn

    action = ActionSpec(discrete=True, size=DQN_ACTIONS)
    obs_shape = (84, 84, 4)
    agent = make_dqn(DQNConfig(obs_shape=obs_shape, action=action, hidden=hidden, torso="nature_cnn", dueling=True))
    shapes = {"obs": list(obs_shape), "obs_dtype": "uint8", "action": DQN_ACTIONS, "torso": "nature_cnn",
              "hidden": list(hidden), "dueling": True, "batch": batch}
    return build_case("dqn", agent, DQNHParams, pop, seed, batch, obs_shape, action, shapes, obs_dtype=jnp.uint8)


CaseFactory = Callable[..., BenchCase]

CASES: dict[str, CaseFactory] = {"td3": td3_case, "sac": sac_case, "dqn": dqn_case}


def make_case(algo: str, pop: int, seed: int = 0, hidden: tuple[int, ...] | None = None, batch: int | None = None) -> BenchCase:
    """The benchmark case of ``algo`` for ``pop`` members (paper shapes unless overridden)."""
    if algo not in CASES:
        raise ConfigError(f"--algo: no update-step benchmark for {algo!r}; allowed: {', '.join(CASES)}")
    overrides = {k: v for k, v in (("hidden", hidden), ("batch", batch)) if v is not None}
    return CASES[algo](pop, seed, **overrides)


class Skipped(Exception):
    """This implementation cannot run this point (the reason is reported)."""


def member_update(case: BenchCase, steps_at_once: int) -> Callable[..., Any]:
    """One member's ``steps_at_once`` updates in one call: ``(state, batch, key, hp) -> state``.

    K > 1 is a ``lax.scan`` over K updates on the same batch with keys
    ``fold_in(key, i)``, as the paper's "steps at once"; metrics are dropped.
    """
    update = case.agent.update
    if steps_at_once == 1:
        return lambda state, batch, key, hp: update(state, batch, key, hp)[0]

    def member(state, batch, key, hp):
        def body(state, i):
            return update(state, batch, jax.random.fold_in(key, i), hp)[0], None

        return jax.lax.scan(body, state, jnp.arange(steps_at_once))[0]

    return member
