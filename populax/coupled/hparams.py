"""Traced hyperparameters of the coupled methods.

DvD-TD3 uses TD3's (``populax.agents.td3.TD3HParams``). CEM-RL's differ in
defaults (the reference code's: learning rates 1e-3, policy delay 1) and have
no exploration noise: its members act with their sampled actors as they are.
The shared critic reads its settings (critic learning rate, gamma, tau,
target noise, delay) from member 0; per member are the actor learning rate
and tau of its actor's target.
"""

from __future__ import annotations

from flax import struct

from populax.agents.base import Array
from populax.hparams import hparam


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
