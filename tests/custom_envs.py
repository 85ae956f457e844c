"""Environments a user writes, for the tests of `--env py:...`, `gymnasium:module:Id` and environment objects.

The corridors themselves are the examples' (examples/custom_jax_env.py, examples/custom_gymnasium_env.py); here
are the ones populax must refuse, a factory, and a registration. Imported by tests/test_custom_envs.py and, by
import path, by the CLI processes it starts (PYTHONPATH=tests:examples). Importing it registers
``CorridorGym-v0`` with Gymnasium (what `gymnasium:custom_envs:CorridorGym-v0` relies on).
"""

import gymnasium
import jax.numpy as jnp
from custom_gymnasium_env import GymCorridor
from custom_jax_env import Corridor, CorridorParams
from gymnax.environments import spaces

__all__ = ["Corridor", "CorridorParams", "DictObservationCorridor", "GymCorridor", "TupleActionCorridor",
           "make_gym_corridor"]


class DictObservationCorridor(Corridor):
    """The corridor with a Dict observation space: populax refuses it in one line."""

    def observation_space(self, params):
        return spaces.Dict({"position": spaces.Box(0.0, 1.0, (1,), jnp.float32)})


class TupleActionCorridor(GymCorridor):
    """A Gymnasium environment with a Tuple action space: refused in one line."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.action_space = gymnasium.spaces.Tuple((gymnasium.spaces.Discrete(2), gymnasium.spaces.Discrete(2)))


def make_gym_corridor() -> gymnasium.Env:
    """A factory, the third way to name a Gymnasium environment (py:custom_envs:make_gym_corridor)."""
    return GymCorridor(length=3)


gymnasium.register("CorridorGym-v0", entry_point="custom_envs:GymCorridor", max_episode_steps=20)


def make_brax_pendulum():
    """A brax Env by import path (py:custom_envs:make_brax_pendulum): brax's inverted pendulum, generalized pipeline."""
    import brax.envs

    return brax.envs.get_environment("inverted_pendulum", backend="generalized")
