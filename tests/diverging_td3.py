"""TD3 whose member diverges on cue: a test algorithm for failure handling on every path a run can take.

The tests' other fault injection writes NaN into a member's agent from outside (the driver's ``before_chunk``
hook, a Ray worker subclass). Neither reaches a mixed-shape population, whose members live in their cohorts'
blocks, nor a subprocess on any backend. This algorithm diverges *inside* its own update, as a real member
whose learning rate was too high does: once a member has done ``diverge-at`` critic updates, every float of its
state becomes NaN. It is an ordinary ``populax.Algorithm`` (named ``py:diverging_td3:DIVERGING_TD3``, with this
directory on PYTHONPATH), so every backend, executor, strategy and Ray worker runs it as a user's algorithm.
"""

import jax
import jax.numpy as jnp
from flax import struct

from populax import AgentSpec
from populax.agents import ALGORITHMS
from populax.agents.base import Agent
from populax.agents.td3 import TD3HParams
from populax.hparams import hparam

NEVER = 1e9


@struct.dataclass
class DivergingHParams(TD3HParams):
    """TD3's hyperparameters, and when the member diverges."""

    diverge_at: jax.Array = hparam(NEVER, "Critic updates after which the member's state is NaN (fault injection).",
                                   valid=(0, NEVER), search=(NEVER, NEVER))


def make_diverging(spec: AgentSpec) -> Agent:
    """TD3 (populax's own, built as ``--algo td3`` builds it) whose update turns NaN at ``diverge_at``."""
    td3 = ALGORITHMS["td3"].make(spec)

    def update(state, batch, key, hparams):
        state, metrics = td3.update(state, batch, key, hparams)
        diverged = state.updates >= hparams.diverge_at

        def poison(x):
            return jnp.where(diverged, jnp.nan, x) if jnp.issubdtype(x.dtype, jnp.floating) else x

        return jax.tree.map(poison, state), metrics

    return td3._replace(update=update)


DIVERGING_TD3 = ALGORITHMS["td3"]._replace(name="diverging-td3", hparams=DivergingHParams,
                                           make=make_diverging)
