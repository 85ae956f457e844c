"""N-step returns made when sampling: every kind of buffer folds exactly the rows a by-hand n-step
computation over the env's own sequence gives, stopping at terminations, truncations and the newest row."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_frame_buffer import blocks_of, stacked_episode_rows

from populax.agents.base import Transition, bootstrap_discount
from populax.buffers import FrameBuffer, buffer_add, buffer_init, buffer_sample, replay_init
from populax.coupled.shared_td3 import union_sample
from populax.errors import ConfigError
from populax.run.config import TrainConfig, check_ranges

GAMMA = 0.9


def vector_episode_rows(rng, envs: int, steps: int) -> list[list[Transition]]:
    """Each env's rows: episodes of 1-6 steps ended by a termination or a truncation (then the next row's
    observation is a reset, not the final one); every observation is distinct."""
    recorded = []
    for _ in range(envs):
        rows, obs, left = [], rng.normal(size=3).astype(np.float32), rng.integers(1, 7)
        for _ in range(steps):
            next_obs = rng.normal(size=3).astype(np.float32)
            left -= 1
            terminated = np.float32(left == 0 and rng.random() < 0.5)
            rows.append(Transition(obs, np.int32(rng.integers(2)), np.float32(rng.normal()), next_obs, terminated))
            if left == 0:
                obs, left = rng.normal(size=3).astype(np.float32), rng.integers(1, 7)
            else:
                obs = next_obs
        recorded.append(rows)
    return recorded


def by_hand(rows: list[Transition], t: int, n: int, stored_until: int) -> tuple[float, np.ndarray, float, int]:
    """(reward, next_obs, terminated, horizon) of the n-step transition from row t of one env's rows."""
    reward, k = 0.0, 0
    while True:
        row = rows[t + k]
        reward += GAMMA ** k * float(row.reward)
        k += 1
        episode_goes_on = row.terminated == 0 and t + k < stored_until and np.array_equal(rows[t + k].obs, row.next_obs)
        if k == n or not episode_goes_on:
            return reward, row.next_obs, float(row.terminated), k


def check_against_by_hand(batch: Transition, recorded: list[list[Transition]], n: int, stored_until: list[int]) -> None:
    """Every sampled n-step transition equals the by-hand one of the row it starts from (found by its obs)."""
    where = {(rows[t].obs.tobytes(), int(rows[t].action)): (env, t)
             for env, rows in enumerate(recorded) for t in range(stored_until[env])}
    batch = jax.tree.map(np.asarray, batch)
    horizons = set()
    for i in range(batch.reward.shape[0]):
        env, t = where[(batch.obs[i].tobytes(), int(batch.action[i]))]
        reward, next_obs, terminated, horizon = by_hand(recorded[env], t, n, stored_until[env])
        np.testing.assert_allclose(batch.reward[i], reward, rtol=1e-5, err_msg=f"env {env} row {t}")
        np.testing.assert_array_equal(batch.next_obs[i], next_obs, err_msg=f"env {env} row {t}")
        assert (batch.terminated[i], batch.horizon[i]) == (terminated, horizon), (env, t)
        horizons.add(horizon)
    assert horizons == set(range(1, n + 1))  # full folds and every kind of early stop were drawn


@pytest.mark.parametrize("n", [2, 3])
def test_replay_buffer_folds_each_envs_own_rows(n):
    """Two envs interleaved (row t*E + e), a ring that wrapped: the fold follows each env, not the next row."""
    recorded = vector_episode_rows(np.random.default_rng(0), envs=2, steps=40)
    buffer = buffer_init(recorded[0][0], capacity=48)
    for block in blocks_of(recorded, 5):
        buffer = buffer_add(buffer, block)
    assert int(buffer.size) == 48 and int(buffer.position) == 80 % 48  # the oldest 16 rows were overwritten
    batch = jax.jit(buffer_sample, static_argnums=(2, 3, 5))(buffer, jax.random.key(0), 512, n, GAMMA, 2)
    check_against_by_hand(batch, [rows[16:] for rows in recorded], n, stored_until=[24, 24])


def test_frame_buffer_folds_rebuilt_stacks():
    """Atari-style frame storage: the same fold, the stacks rebuilt from the frames."""
    recorded = stacked_episode_rows(np.random.default_rng(1), envs=2, steps=30, stack=4, padding="repeat")
    buffer = replay_init(recorded[0][0], capacity=200, envs=2)
    assert isinstance(buffer, FrameBuffer)
    for block in blocks_of(recorded, 7):
        buffer = buffer_add(buffer, block)
    batch = jax.jit(buffer_sample, static_argnums=(2, 3))(buffer, jax.random.key(1), 512, 3, GAMMA)
    check_against_by_hand(batch, recorded, 3, stored_until=[30, 30])


def test_union_of_member_buffers_folds_within_one_member():
    """CEM-RL / DvD draw from all members' buffers at once: a fold never crosses into another member."""
    rng = np.random.default_rng(2)
    members = [vector_episode_rows(rng, envs=2, steps=20) for _ in range(3)]
    buffers = []
    for recorded in members:
        buffer = buffer_init(recorded[0][0], capacity=40)
        for block in blocks_of(recorded, 4):
            buffer = buffer_add(buffer, block)
        buffers.append(buffer)
    stacked = jax.tree.map(lambda *x: jnp.stack(x), *buffers)
    batch = union_sample(stacked, jax.random.key(2), 512, 3, GAMMA, 2)
    check_against_by_hand(batch, [rows for recorded in members for rows in recorded], 3, stored_until=[20] * 6)


def test_one_step_sampling_is_unchanged_and_the_discount_is_gamma_to_the_horizon():
    recorded = vector_episode_rows(np.random.default_rng(3), envs=1, steps=10)
    buffer = buffer_init(recorded[0][0], capacity=10)
    buffer = buffer_add(buffer, next(blocks_of(recorded, 10)))
    one = buffer_sample(buffer, jax.random.key(0), 8)
    assert one.horizon is None  # the one-step path is the plain gather it always was
    indices = jax.random.randint(jax.random.key(0), (8,), 0, 10)
    assert all(np.array_equal(a, b[indices]) for a, b in zip(one[:5], buffer.data[:5]))
    batch = Transition(None, None, None, None, jnp.array([0.0, 0.0, 1.0]), horizon=jnp.array([1.0, 3.0, 2.0]))
    np.testing.assert_allclose(bootstrap_discount(batch, 0.5), [0.5, 0.125, 0.0])
    np.testing.assert_allclose(bootstrap_discount(batch._replace(horizon=None), 0.5), [0.5, 0.5, 0.0])


@pytest.mark.parametrize("settings, message", [
    ({"n_step": 0}, "--n-step must be >= 1"),
    ({"n_step": 3, "algo": "ppo"}, "--n-step applies to the off-policy algorithms"),
])
def test_bad_n_step_is_refused_naming_the_setting(settings, message):
    with pytest.raises(ConfigError, match=message):
        check_ranges(TrainConfig(**settings))
