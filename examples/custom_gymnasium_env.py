"""Your own Gymnasium environment, trained on populax's host backend (all members act in one batched call per
env step; the learner updates every member in one compiled program).

Three ways to name it, on the command line, in a YAML recipe or in ``TrainConfig(env=...)``:

* Gymnasium's own ``module:Id`` form: ``--env gymnasium:custom_gymnasium_env:Corridor-v0`` (importing the module
  runs its ``gymnasium.register``; ``gymnasium.make`` imports it again in every ``--vector-env async`` worker);
* an import path to the ``gymnasium.Env`` class: ``--env py:custom_gymnasium_env:GymCorridor``;
* an import path to a function building one: ``--env py:custom_gymnasium_env:make_corridor``.

    python examples/custom_gymnasium_env.py                             # 4 DQN members, about a minute
    PYTHONPATH=examples populax train --env gymnasium:custom_gymnasium_env:Corridor-v0 --algo dqn --pop 4

Observations must be a ``Box``; actions a ``Discrete`` or a bounded ``Box``; anything else is refused in one line
before a run starts. ``--max-episode-steps`` wraps the environment in Gymnasium's ``TimeLimit`` (a truncation).
"""

import argparse

import gymnasium
import numpy as np


class GymCorridor(gymnasium.Env):
    """The corridor of examples/custom_jax_env.py as a Gymnasium environment: start in the middle, the goal at one
    end (drawn at reset, in the observation); +1 at the goal, -1 at the other end, -0.01 a step."""

    def __init__(self, length: int = 3, render_mode=None):
        self.length = length
        self.observation_space = gymnasium.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.action_space = gymnasium.spaces.Discrete(2)
        self.position, self.goal = 0, 1

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)  # seeds self.np_random: populax seeds every env from the run's seed
        self.position, self.goal = 0, int(self.np_random.choice([-1, 1]))
        return self._obs(), {}

    def step(self, action):
        self.position += 2 * int(action) - 1
        at_goal, at_wall = self.position == self.goal * self.length, self.position == -self.goal * self.length
        reward = 1.0 if at_goal else -1.0 if at_wall else -0.01
        return self._obs(), reward, at_goal or at_wall, False, {}  # terminated, not truncated

    def _obs(self):
        return np.asarray([self.position / self.length, self.goal], np.float32)


def make_corridor() -> gymnasium.Env:
    """A factory: the environment populax builds for each member and env (here with a time limit of its own)."""
    return gymnasium.wrappers.TimeLimit(GymCorridor(), max_episode_steps=20)


gymnasium.register("Corridor-v0", entry_point="custom_gymnasium_env:GymCorridor", max_episode_steps=20)


def main() -> None:
    """Train a DQN population on the registered id and print each member's final return."""
    parser = argparse.ArgumentParser(description="DQN on a custom Gymnasium environment")
    parser.add_argument("--steps", type=int, default=4000, help="env steps per member")
    parser.add_argument("--pop", type=int, default=4)
    parser.add_argument("--out", default="runs/example-custom-gymnasium-env")
    args = parser.parse_args()

    from populax import TrainConfig, train

    config = TrainConfig(env="gymnasium:custom_gymnasium_env:Corridor-v0", algo="dqn", pop=args.pop,
                         total_steps=args.steps, eval_every=args.steps // 2, learning_starts=200, hidden=(32, 32),
                         batch_size=32, eval_episodes=10, out=args.out, force=True, progress=False)
    result = train(config)
    print(f"env {result.summary['env']} ({result.summary['backend']} backend): final returns "
          f"{[round(float(r), 2) for r in result.returns]} (reading the goal: 0.98; ignoring it: ~0)")


if __name__ == "__main__":
    main()
