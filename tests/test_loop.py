"""Episode bookkeeping of the compiled loop: truncation bootstraps, termination does not."""

import jax
import numpy as np
import pytest

from populax.envs import make_jax_env
from populax.errors import ConfigError
from populax.run.config import TrainConfig
from populax.runtime import init_population, prepare


def test_time_limit_is_truncation_with_true_final_observation():
    """Pendulum episodes end only by the 200-step limit: stored as non-terminal,
    with next_obs the real last observation (not the auto-reset one)."""
    config = TrainConfig(pop=1, envs_per_member=2, total_steps=400, eval_every=400, learning_starts=400,
                         hidden=(8,), batch_size=8, out="unused")
    setup = prepare(config)
    population = init_population(setup)
    population, _ = setup.backend.advance(population, 0)
    data = jax.tree.map(lambda x: np.asarray(x[0]), population.experience.data)
    assert data.terminated.sum() == 0
    # rows are interleaved by env: row 2*t + e is env e at step t
    obs, next_obs = data.obs.reshape(200, 2, 3), data.next_obs.reshape(200, 2, 3)
    np.testing.assert_allclose(next_obs[:-1], obs[1:], atol=1e-6)  # continuity within the episode
    assert np.isfinite(population.env.last_episode_return).all()  # both episodes completed at step 200


def test_cartpole_fall_is_terminal():
    env = make_jax_env("CartPole-v1")
    obs, state = env.reset(jax.random.key(0))
    terminated = 0.0
    for t in range(200):  # always push right: the pole falls within a few dozen steps
        result = env.step(jax.random.key(t), state, 1)
        state = result.state
        if result.terminated or result.truncated:
            terminated = float(result.terminated)
            break
    assert terminated == 1.0 and t < 100


def test_max_episode_steps_cuts_gymnax_episodes_as_truncation():
    """--max-episode-steps applies to gymnax envs too: Pendulum (own limit 200) truncated after 5 steps, twice."""
    env = make_jax_env("Pendulum-v1", max_episode_steps=5)
    assert env.max_episode_steps == 5
    obs, state = env.reset(jax.random.key(0))
    step, ends = jax.jit(env.step), []
    for t in range(10):
        result = step(jax.random.key(t), state, np.zeros(1, np.float32))
        state = result.state
        ends.append((float(result.terminated), float(result.truncated)))
    assert ends == [(0.0, 0.0)] * 4 + [(0.0, 1.0)] + [(0.0, 0.0)] * 4 + [(0.0, 1.0)]
    with pytest.raises(ConfigError, match="^--max-episode-steps must be >= 0"):
        make_jax_env("CartPole-v1", max_episode_steps=-1)


def test_evaluation_is_deterministic_given_key():
    config = TrainConfig(pop=2, total_steps=200, eval_every=200, hidden=(8,), out="unused", eval_episodes=3)
    setup = prepare(config)
    population = init_population(setup)
    a, b = setup.backend.evaluate(population, 5), setup.backend.evaluate(population, 5)
    np.testing.assert_array_equal(a, b)
    assert np.all(np.asarray(a) < 0)  # Pendulum returns are negative
