"""Environments a user writes, for the tests of `--env py:...`, `gymnasium:module:Id` and environment objects.

The corridors themselves are the examples' (examples/custom_jax_env.py, examples/custom_gymnasium_env.py); here
are the ones populax must refuse, a factory, and a registration. Imported by tests/test_custom_envs.py and, by
import path, by the CLI processes it starts (PYTHONPATH=tests:examples). Importing it registers
``CorridorGym-v0`` with Gymnasium (what `gymnasium:custom_envs:CorridorGym-v0` relies on).
"""

import gymnasium
import jax
import jax.numpy as jnp
import numpy as np
from custom_gymnasium_env import GymCorridor
from custom_jax_env import Corridor, CorridorParams
from flax import struct
from gymnax.environments import environment, spaces

__all__ = ["Corridor", "CorridorParams", "DictObservationCorridor", "EndlessCorridor", "EndlessJaxCorridor",
           "FloatFramesCorridor", "GymCorridor", "IntegerActionJaxCorridor", "IntegerObservationCorridor",
           "OldGymApiCorridor", "OneStepJaxCorridor", "Reach", "SizedCorridor", "SpacelessJaxCorridor",
           "SteplessCorridor", "TupleActionCorridor", "WrongShapeCorridor", "WrongShapeJaxCorridor",
           "make_gym_corridor"]


class DictObservationCorridor(Corridor):
    """The corridor with a Dict observation space: populax refuses it in one line."""

    def observation_space(self, params):
        return spaces.Dict({"position": spaces.Box(0.0, 1.0, (1,), jnp.float32)})


class IntegerActionJaxCorridor(Corridor):
    """The JAX corridor declaring its two moves as an int32 Box (0..1), not a Discrete: a continuous agent would send
    it fractional moves, so populax refuses it in one line."""

    def action_space(self, params=None):
        return spaces.Box(0, 1, (1,), jnp.int32)


class SpacelessJaxCorridor(Corridor):
    """Leaves observation_space to gymnax's base class (NotImplementedError): refused in one line."""

    observation_space = environment.Environment.observation_space


class OneStepJaxCorridor(Corridor):
    """Params whose max_steps_in_episode keeps gymnax's EnvParams default of 1: trains, with a warning."""

    @property
    def default_params(self) -> CorridorParams:
        return CorridorParams(max_steps_in_episode=1)


class EndlessJaxCorridor(Corridor):
    """A time limit of 10**9 steps (as good as none) and no end: every move leads back to the middle. An
    evaluation is cut at populax's limit (100,000 steps), with a warning."""

    @property
    def default_params(self) -> CorridorParams:
        return CorridorParams(max_steps_in_episode=10**9)

    def step_env(self, key, state, action, params):
        obs, state, reward, _, info = super().step_env(key, state, action, params)
        state = state.replace(position=jnp.zeros_like(state.position))
        return self.get_obs(state, params), state, reward, jnp.zeros((), bool), info


class WrongShapeJaxCorridor(Corridor):
    """The JAX corridor declaring observations of shape (3,) while returning (2,): refused in one line."""

    def observation_space(self, params):
        return spaces.Box(-1.0, 1.0, (3,), jnp.float32)


class TupleActionCorridor(GymCorridor):
    """A Gymnasium environment with a Tuple action space: refused in one line."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.action_space = gymnasium.spaces.Tuple((gymnasium.spaces.Discrete(2), gymnasium.spaces.Discrete(2)))


class WrongShapeCorridor(GymCorridor):
    """Declares observations of shape (3,) but returns (2,): refused in one line before the run starts."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.observation_space = gymnasium.spaces.Box(-1.0, 1.0, (3,), np.float32)


class IntegerObservationCorridor(GymCorridor):
    """Returns int64 observations from a float32 Box (a grid world's np.array([x, y])): trains, stored as float32."""

    def _obs(self):
        return np.asarray([self.position, self.goal], np.int64)


class FloatFramesCorridor(GymCorridor):
    """Declares uint8 frames but returns floats: refused in one line (the replay would store them as uint8)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.observation_space = gymnasium.spaces.Box(0, 255, (2,), np.uint8)


class SteplessCorridor(gymnasium.Env):
    """Spaces and reset, but no step(): refused in one line, not gymnasium.Env's NotImplementedError mid-run."""

    observation_space = gymnasium.spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = gymnasium.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        return np.zeros(2, np.float32), {}


class SizedCorridor(GymCorridor):
    """A constructor that needs an argument: refused in one line (populax builds a class with no arguments)."""

    def __init__(self, length, render_mode=None):
        super().__init__(length=length, render_mode=render_mode)


class EndlessCorridor(GymCorridor):
    """Never ends an episode (no time limit, never terminates): trains, with a warning when an evaluation is cut."""

    def step(self, action):
        obs, reward, _, _, info = super().step(action)
        self.position = 0
        return obs, reward, False, False, info


class OldGymApiCorridor(GymCorridor):
    """step() returns the old gym 4-tuple (observation, reward, done, info): refused in one line."""

    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        return obs, reward, terminated or truncated, info


def make_gym_corridor() -> gymnasium.Env:
    """A factory, the third way to name a Gymnasium environment (py:custom_envs:make_gym_corridor)."""
    return GymCorridor(length=3)


gymnasium.register("CorridorGym-v0", entry_point="custom_envs:GymCorridor", max_episode_steps=20)


def make_brax_pendulum():
    """A brax Env by import path (py:custom_envs:make_brax_pendulum): brax's inverted pendulum, generalized pipeline."""
    import brax.envs

    return brax.envs.get_environment("inverted_pendulum", backend="generalized")


@struct.dataclass
class ReachState(environment.EnvState):
    position: jax.Array
    time: int


@struct.dataclass
class ReachParams(environment.EnvParams):
    max_steps_in_episode: int = 12


class Reach(environment.Environment):
    """A point on a line, pushed by a force in [0, 4] (bounds that are not [-1, 1], so an action handed over
    without populax's rescaling moves it elsewhere) towards 1.5 from 0. Deterministic: every episode is the
    same, so a run's logged evaluation return is what one episode of the saved policy scores."""

    @property
    def default_params(self) -> ReachParams:
        return ReachParams()

    def step_env(self, key, state, action, params):
        position = state.position + 0.25 * (action[0] - 2.0)
        state = ReachState(position=position, time=state.time + 1)
        return self.get_obs(state), state, -jnp.abs(position - 1.5), jnp.asarray(False), {}

    def reset_env(self, key, params):
        state = ReachState(position=jnp.zeros((), jnp.float32), time=0)
        return self.get_obs(state), state

    def get_obs(self, state, params=None, key=None):
        return jnp.stack([state.position, state.time / 12.0]).astype(jnp.float32)

    def action_space(self, params=None):
        return spaces.Box(0.0, 4.0, (1,), jnp.float32)

    def observation_space(self, params):
        return spaces.Box(-10.0, 10.0, (2,), jnp.float32)
