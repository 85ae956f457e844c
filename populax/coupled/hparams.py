"""Traced hyperparameters of the coupled methods.

DvD-TD3 uses TD3's (``populax.agents.td3.TD3HParams``). CEM-RL's differ in
defaults (the reference code's: learning rates 1e-3, policy delay 1) and have
no exploration noise: its members act with their sampled actors as they are.
The shared critic reads its settings (critic learning rate, gamma, tau,
target noise, delay) from member 0, so per-member values of the critic-only
ones are refused (``check_shared_hparams``); per member are the actor learning
rate, the tau of its actor's target (and DvD's exploration noise). DvD-TD3
with per-member critics honours every critic setting per member except the
delay (the actors take their joint step together).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from flax import struct

from populax.agents.base import Array
from populax.errors import ConfigError
from populax.hparams import cli_name, hparam

SHARED_CRITIC_SETTINGS = ("lr_critic", "gamma", "target_noise", "noise_clip", "delay")
"""Hyperparameters only member 0's value of is used with one shared critic (tau is per member too: actor targets)."""


def check_shared_hparams(hparams: Any, algo: str, options: Any) -> None:
    """Refuse per-member values of a setting the population reads from member 0 alone (ConfigError naming it)."""
    own = getattr(options, "per_member_critics", False)
    for name in ("delay",) if own else SHARED_CRITIC_SETTINGS:
        values = np.asarray(getattr(hparams, name))
        if not np.any(values != values[0]):
            continue
        if name == "delay":
            why = "the actors step together, every `delay` critic steps"
        else:
            why = f"{algo}'s one critic reads member 0's" + (" (or set --algo-opt.critics per-member)"
                                                            if algo == "dvd-td3" else "")
        raise ConfigError(f"--hp.{cli_name(name)}: give one value for the whole population; {why}")


@struct.dataclass
class CEMRLHParams:
    """CEM-RL hyperparameters (traced)."""

    lr_actor: Array = hparam(1e-3, "Adam learning rate of the actors' gradient steps.", valid=(0, 1),
                             search=(1e-4, 3e-3), log=True)
    lr_critic: Array = hparam(1e-3, "Adam learning rate of the shared critic.", valid=(0, 1), search=(1e-4, 3e-3),
                              log=True)
    gamma: Array = hparam(0.99, "Discount factor.", valid=(0, 1), search=(0.9, 1.0))
    tau: Array = hparam(0.005, "Polyak rate of the target networks.", valid=(0, 1), search=(1e-3, 0.1), log=True)
    target_noise: Array = hparam(0.2, "Std of the target policy smoothing noise.", valid=(0, 10), search=(0.0, 1.0))
    noise_clip: Array = hparam(0.5, "Clip of the target policy smoothing noise.", valid=(0, 10), search=(0.0, 1.0))
    delay: Array = hparam(1, "Critic updates per actor and target update (the reference code: 1).", valid=(1, 1000),
                          search=(1, 5), integer=True)
