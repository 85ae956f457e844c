"""Algorithms a user gets wrong, for tests/test_algorithm_checks.py: each is examples/custom_algorithm.py's DDPG
(or examples/custom_onpolicy_algorithm.py's A2C) with one mistake that populax refuses in one line when it loads the algorithm (`--algo py:broken_algorithms:NAME`,
`register_algorithm`), before a run starts. Imported by name as a user's module is (tests/ is on sys.path)."""

import dataclasses

import jax
import jax.numpy as jnp
from custom_algorithm import DDPG, DDPGHParams, make_ddpg
from custom_onpolicy_algorithm import A2C, make_a2c
from flax import struct

from populax import Algorithm
from populax.agents import get_algorithm
from populax.agents.base import Agent
from populax.hparams import hparam


def ddpg(name: str, **changes) -> Algorithm:
    """DDPG under another name, with ``changes`` to its Algorithm's fields."""
    return DDPG._replace(name=name, **changes)


# --- the declarations ----------------------------------------------------------------------------------------

POLICY_FIELD_TYPO = ddpg("ddpg-typo", policy_fields=("actr",))
"""--pbt-copy policy would copy a field the state does not have (an AttributeError at the first exploit)."""

POLICY_FIELDS_STRING = ddpg("ddpg-string", policy_fields="actor")
"""A string where a tuple belongs: its letters would be the field names."""

OPTIMIZER_FIELD_TYPO = ddpg("ddpg-opt-typo", optimizer_fields=("actor_optim", "critic_opt"))
"""--pbt-reset-optimizer would reset a field the state does not have."""


@struct.dataclass
class PlainHParams:
    """Fields without hparam(): no range, no doc, and sampled as one unbatched scalar for the whole population."""

    lr_actor: float = 1e-3
    lr_critic: float = 1e-3
    gamma: float = 0.99
    tau: float = 0.005
    sigma: float = 0.1


PLAIN = ddpg("ddpg-plain", hparams=PlainHParams)


def declared(**changes) -> type:
    """DDPGHParams with some fields declared anew (``name=hparam(...)``)."""
    fields = {f.name: changes.get(f.name) or dataclasses.field(default=f.default, metadata=f.metadata)
              for f in dataclasses.fields(DDPGHParams)}
    return struct.dataclass(type("BrokenHParams", (), {"__annotations__": dict.fromkeys(fields, jax.Array),
                                                       **fields}))


DEFAULT_OUTSIDE = ddpg("ddpg-default", hparams=declared(
    lr_critic=hparam(5.0, "Critic Adam learning rate.", valid=(0, 1), search=(1e-5, 1e-2), log=True)))
SEARCH_OUTSIDE = ddpg("ddpg-search", hparams=declared(
    gamma=hparam(0.99, "Discount factor.", valid=(0, 1), search=(0.9, 1.5))))
EMPTY_VALID = ddpg("ddpg-empty", hparams=declared(
    tau=hparam(0.005, "Polyak rate.", valid=(1, 0))))
FRACTIONAL_INTEGER = ddpg("ddpg-fraction", hparams=declared(
    sigma=hparam(0.5, "Noise.", valid=(0, 10), search=(0, 5), integer=True)))


# --- what make and the agent's functions return --------------------------------------------------------------

def make_without_policy(spec):
    agent = make_ddpg(spec)
    return Agent(init=agent.init, act=agent.act, update=agent.update)


NO_POLICY = ddpg("ddpg-no-policy", make=make_without_policy)


def ddpg_returning(name: str, returned) -> Algorithm:
    """DDPG whose ``update`` returns ``returned(state, metrics)`` of the real update instead of (state, metrics)."""

    def make(spec):
        agent = make_ddpg(spec)

        def update(state, batch, key, hp):
            return returned(*agent.update(state, batch, key, hp))

        return agent._replace(update=update)

    return ddpg(name, make=make)


STATE_ONLY_UPDATE = ddpg_returning("ddpg-state-only", lambda state, metrics: state)  # the metrics forgotten

LOSS_AS_METRICS = ddpg_returning("ddpg-loss-metrics", lambda state, metrics: (state, metrics["critic_loss"]))

GROWING_STATE = ddpg_returning(
    "ddpg-growing", lambda state, metrics: (state.replace(critic_opt=jax.tree.map(lambda x: jnp.stack([x, x]),
                                                                               state.critic_opt)), metrics))
"""update stacks a leaf: a scan's carry would change shape."""


def make_one_action(spec):
    agent = make_ddpg(spec)
    return agent._replace(act=lambda state, obs, key, hp: agent.act(state, obs, key, hp)[0])


ONE_ACTION = ddpg("ddpg-one-action", make=make_one_action)
"""act answers the first observation only."""

ONPOLICY_AGENT = get_algorithm("ppo")._replace(name="ppo-off", on_policy=False)
"""PPO's OnPolicyAgent declared off-policy (on_policy=True forgotten)."""


def make_act_without_hparams(spec):
    agent = make_ddpg(spec)
    return agent._replace(act=lambda state, obs, key: agent.policy(state, obs))


ACT_WITHOUT_HPARAMS = ddpg("ddpg-act-no-hp", make=make_act_without_hparams)
"""act written as an on-policy agent's, act(state, obs, key): a TypeError from inside the run's first chunk."""


def make_hparam_typo(spec):
    agent = make_ddpg(spec)
    return agent._replace(act=lambda state, obs, key, hp: agent.act(state, obs, key, hp) * hp.sgma)


HPARAM_TYPO = ddpg("ddpg-hp-typo", make=make_hparam_typo)
"""act reads hp.sgma: an AttributeError from inside the run."""


# --- on-policy: examples/custom_onpolicy_algorithm.py's A2C with one mistake ---------------------------------


def a2c_with(name: str, **functions) -> Algorithm:
    """A2C under another name, its agent's ``functions`` replaced (each given the correct agent to wrap)."""
    def make(spec):
        agent = make_a2c(spec)
        return agent._replace(**{name: wrap(agent) for name, wrap in functions.items()})

    return A2C._replace(name=name, make=make)


A2C_VALUE_COLUMN = a2c_with("a2c-value-column", value=lambda agent: lambda state, obs: agent.value(state, obs)[:, None])
"""value returns [B, 1] (a critic head's raw output): GAE failed with a concatenate error deep in the loop."""

A2C_LOG_PROB_PER_ACTION = a2c_with("a2c-log-probs", act=lambda agent: lambda state, obs, key: (
    agent.act(state, obs, key)[0], jnp.zeros((obs.shape[0], 2)), agent.act(state, obs, key)[2]))
"""act returns every action's log-probability, not the taken one's: it trained silently."""

A2C_ACT_WITH_HPARAMS = a2c_with("a2c-act-hp", act=lambda agent: lambda state, obs, key, hp: agent.act(state, obs, key))
"""act(state, obs, key, hparams), as an off-policy Agent's: the on-policy loop calls act(state, obs, key)."""
