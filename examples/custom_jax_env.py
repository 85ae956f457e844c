"""Your own JAX environment, trained inside populax's compiled chunk (physics, acting, replay, updates: one
program for the whole population).

Write the environment with gymnax's API (subclass ``gymnax.environments.environment.Environment``: ``reset_env``,
``step_env`` returning ``terminated`` separately from the time limit, ``action_space``, ``observation_space``,
``default_params``), then give populax the object, or its import path on the command line:

    python examples/custom_jax_env.py                                   # 8 DQN members with PBT, a few seconds
    PYTHONPATH=examples populax train --env py:custom_jax_env:Corridor --algo dqn --pop 8 --strategy pbt

A brax ``Env`` works the same way (``py:my_package.envs:MyBraxEnv``). Observations must be a ``Box``; actions a
``Discrete`` or a bounded ``Box`` (populax rescales its [-1, 1] actions to the bounds); anything else is refused
in one line before a run starts.
"""

import argparse

import jax
import jax.numpy as jnp
from flax import struct
from gymnax.environments import environment, spaces


@struct.dataclass
class CorridorState(environment.EnvState):
    position: jax.Array
    goal: jax.Array
    time: int


@struct.dataclass
class CorridorParams(environment.EnvParams):
    length: int = 3
    max_steps_in_episode: int = 20


class Corridor(environment.Environment):
    """A 1-d corridor: start in the middle; the goal is at one end, drawn at reset and shown in the observation.
    Action 0 steps left, 1 right. Reaching the goal ends the episode (terminated, +1), the other end too (-1);
    every other step costs 0.01; 20 steps truncate (gymnax's base class: ``time >= max_steps_in_episode``). A
    policy that ignores the goal scores about 0 on average, one that reads it 0.98."""

    @property
    def default_params(self) -> CorridorParams:
        return CorridorParams()

    def step_env(self, key, state, action, params):
        position = state.position + 2 * action - 1
        at_goal, at_wall = position == state.goal * params.length, position == -state.goal * params.length
        reward = jnp.where(at_goal, 1.0, jnp.where(at_wall, -1.0, -0.01))
        state = CorridorState(position=position, goal=state.goal, time=state.time + 1)
        return self.get_obs(state, params), state, reward, at_goal | at_wall, {}

    def reset_env(self, key, params):
        goal = jnp.where(jax.random.bernoulli(key), 1, -1)
        state = CorridorState(position=jnp.zeros((), jnp.int32), goal=goal, time=0)
        return self.get_obs(state, params), state

    def get_obs(self, state, params=None, key=None):
        params = params or self.default_params
        return jnp.stack([state.position / params.length, state.goal]).astype(jnp.float32)

    def action_space(self, params=None):
        return spaces.Discrete(2)

    def observation_space(self, params):
        return spaces.Box(-1.0, 1.0, (2,), jnp.float32)


def main() -> None:
    """Train a DQN population with PBT on the corridor and print each member's final return."""
    parser = argparse.ArgumentParser(description="DQN + PBT on a custom gymnax-API environment")
    parser.add_argument("--steps", type=int, default=6000, help="env steps per member")
    parser.add_argument("--pop", type=int, default=8)
    parser.add_argument("--out", default="runs/example-custom-jax-env")
    args = parser.parse_args()

    # Imported by its module name, the class has an import path (custom_jax_env:Corridor) that the run records,
    # so `populax resume` and `populax eval` can build it again (with PYTHONPATH=examples). Passing the object
    # of this script (__main__.Corridor) trains too, with a note that resume would need an import path.
    from custom_jax_env import Corridor as ImportableCorridor

    from populax import TrainConfig, train

    config = TrainConfig(env=ImportableCorridor(), algo="dqn", pop=args.pop, total_steps=args.steps,
                         eval_every=args.steps // 3, learning_starts=200, hidden=(32, 32), batch_size=32,
                         eval_episodes=10, strategy="pbt", hp={"lr": "loguniform:1e-4,1e-2"}, out=args.out,
                         force=True, progress=False)
    result = train(config)
    print(f"env {result.summary['env']}: final returns {[round(float(r), 2) for r in result.returns]} "
          f"(reading the goal: 0.98; ignoring it: ~0); run directory {result.run_dir}")


if __name__ == "__main__":
    main()
