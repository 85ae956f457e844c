"""--clip-rewards: the learner sees each reward's sign, on both kinds of environment and in both families of
algorithm (a replay for TD3, a rollout for PPO), while the returns a run reports stay the environment's score.

Pendulum's rewards lie in [-16.3, 0]: clipped, every step is -1 or 0, so an episode of 200 steps sums to at least
-200, and a random policy's raw episode returns lie far below that."""

import numpy as np
import pytest

import populax
from populax.run.logging import read_jsonl

ENVS = ["Pendulum-v1", pytest.param("gymnasium:Pendulum-v1", marks=pytest.mark.extended)]
"""The gymnax (compiled) and Gymnasium (host) Pendulum (the host cells in `make test-extended`: the suite's time)."""


def run(tmp_path, name: str, env: str, **settings) -> populax.TrainResult:
    """A short run of two members (off-policy host runs without overlap, so the same seed collects the same
    steps; PPO never overlaps)."""
    host = dict(overlap=False) if env.startswith("gymnasium:") and settings["algo"] != "ppo" else {}
    config = dict(env=env, pop=2, eval_episodes=1, hidden=(16, 16), seed=0, progress=False, tensorboard=False,
                  out=str(tmp_path / name), **host)
    return populax.train(populax.TrainConfig(**{**config, **settings}))


def reported(result: populax.TrainResult, name: str) -> np.ndarray:
    """Every member's ``name`` over the run's evaluations (metrics.jsonl)."""
    return np.array([r[name] for r in read_jsonl(result.run_dir / "metrics.jsonl") if name in r], float)


@pytest.mark.parametrize("env", ENVS)
def test_the_replay_holds_each_rewards_sign_and_the_returns_stay_the_environments(tmp_path, env):
    settings = dict(algo="td3", total_steps=600, eval_every=300, learning_starts=200, batch_size=64)
    clipped = run(tmp_path, "clipped", env, clip_rewards=True, **settings)
    raw = run(tmp_path, "raw", env, **settings)
    for member in range(2):
        size = int(clipped.population.experience.size[member])
        assert size == int(raw.population.experience.size[member]) == 600
        stored = np.asarray(clipped.population.experience.data.reward[member][:size])
        unclipped = np.asarray(raw.population.experience.data.reward[member][:size])
        assert set(np.unique(stored)) <= {-1.0, 0.0} and (stored == -1.0).any()
        assert not np.isin(unclipped, [-1.0, 0.0]).all()
        # the same seed acts alike before learning starts (uniform random actions): the same steps, their sign
        np.testing.assert_array_equal(stored[:200], np.sign(unclipped[:200]))
    # reported returns are sums of the environment's rewards, not of their signs (which are >= -200 an episode)
    assert reported(clipped, "train_return").max() < -250 and reported(clipped, "return").max() < -250


@pytest.mark.parametrize("env", ENVS)
def test_ppo_learns_from_each_rewards_sign(tmp_path, env):
    """The rollout's rewards are clipped: the critic's first targets shrink with them (the value loss, squared,
    by ~the square of the reward scale, ~8 on average here), while the training returns stay the env's."""
    settings = dict(algo="ppo", total_steps=256, eval_every=256)
    clipped = run(tmp_path, "clipped", env, clip_rewards=True, **settings)
    raw = run(tmp_path, "raw", env, **settings)
    assert 10 * reported(clipped, "value_loss").mean() < reported(raw, "value_loss").mean()
    assert reported(clipped, "train_return").max() < -250


@pytest.mark.parametrize("algo, env", [
    ("cemrl", "Pendulum-v1"),
    pytest.param("dvd-td3", "Pendulum-v1", marks=pytest.mark.extended),
    pytest.param("cemrl", "gymnasium:Pendulum-v1", marks=pytest.mark.extended),
    pytest.param("dvd-td3", "gymnasium:Pendulum-v1", marks=pytest.mark.extended),
])
def test_a_coupled_methods_replay_holds_each_rewards_sign(tmp_path, algo, env):
    """CEM-RL and DvD-TD3 store their members' steps through their own loops (a generation; the shared critic's
    replay): the rewards stored are signs there too, and the returns reported stay the environment's."""
    settings = dict(algo=algo, total_steps=400, eval_every=200, learning_starts=100, batch_size=32)
    clipped = run(tmp_path, "clipped", env, clip_rewards=True, **settings)
    experience = clipped.population.experience
    for member in range(2):
        stored = np.asarray(experience.data.reward[member][:int(experience.size[member])])
        assert stored.size >= 100 and set(np.unique(stored)) <= {-1.0, 0.0} and (stored == -1.0).any()
    assert reported(clipped, "return").max() < -250
