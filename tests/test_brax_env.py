"""brax physics inside the compiled chunk: episode ends stored right, every executor the same numbers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from populax.errors import ConfigError
from populax.run.config import TrainConfig
from populax.runtime import init_population, prepare

pytest.importorskip("brax")

from populax.envs import make_jax_env  # noqa: E402

POLE_LIMIT = 0.2
"""brax's inverted_pendulum terminates once the pole angle (observation 1) exceeds this."""


def test_hand_driven_episode_truncates_then_terminates():
    """A 3-step limit with the cart at rest cuts episodes (truncation); pushing the cart topples the pole (termination)."""
    env = make_jax_env("brax:inverted_pendulum", max_episode_steps=3)
    step = jax.jit(env.step)
    obs, state = jax.jit(env.reset)(jax.random.key(0))
    rest, push = jnp.zeros(env.action.size), jnp.ones(env.action.size)
    flags = []
    for t, action in enumerate([rest] * 6 + [push] * 2):
        result = step(jax.random.key(t), state, action)
        flags.append((float(result.terminated), float(result.truncated)))
        ended = bool(result.terminated or result.truncated)
        assert np.array_equal(result.obs, result.final_obs) != ended, "after an end, obs is the next episode's first"
        assert int(result.state.steps) == (0 if ended else int(state.steps) + 1)
        state = result.state
    assert flags == [(0, 0), (0, 0), (0, 1)] * 2 + [(0, 0), (1, 0)]
    assert abs(float(result.final_obs[1])) > POLE_LIMIT >= abs(float(result.obs[1])), "the pole fell; a new one stands"


def run_chunk(executor: str):
    config = TrainConfig(env="brax:inverted_pendulum", algo="td3", pop=2, total_steps=200, eval_every=200,
                         learning_starts=100, hidden=(16, 16), batch_size=32, max_episode_steps=20,
                         executor=executor, hp={"lr-actor": "3e-4,1e-3"}, out="unused")
    setup = prepare(config)
    population, _ = setup.backend.advance(init_population(setup), 0)
    return population


def test_brax_td3_chunk_is_the_same_under_vmap_and_sequential():
    """200 env steps and 100 TD3 updates per member inside one compiled chunk, both executors."""
    reference, population = run_chunk("vmap"), run_chunk("sequential")
    assert np.asarray(population.env_steps).tolist() == [200, 200]
    assert int(np.asarray(population.agent.updates)[0]) == 100
    for ref, got in zip(jax.tree.leaves(reference.agent), jax.tree.leaves(population.agent)):
        np.testing.assert_allclose(np.asarray(got), np.asarray(ref), rtol=1e-3, atol=1e-3)

    # What the replay buffer holds: a transition's next_obs is the next one's obs except at an episode end;
    # ends are terminal exactly where the pole fell (a time-limit cut bootstraps: not terminal).
    data = jax.tree.map(lambda x: np.asarray(x[0]), population.experience.data)
    ends = ~np.all(np.isclose(data.next_obs[:-1], data.obs[1:]), axis=1)
    fell = np.abs(data.next_obs[:-1, 1]) > POLE_LIMIT
    np.testing.assert_array_equal(data.terminated[:-1] == 1.0, fell)
    assert (ends & ~fell).any(), "some episodes reached the 20-step limit: truncated, stored as non-terminal"
    assert (ends & fell).any() and not (fell & ~ends).any()


def test_unknown_brax_task_and_bad_limit_are_one_line_errors():
    with pytest.raises(ConfigError, match="unknown brax task 'cheetah'.*brax:halfcheetah"):
        make_jax_env("brax:cheetah")
    with pytest.raises(ConfigError, match="--max-episode-steps must be >= 0"):
        make_jax_env("brax:hopper", max_episode_steps=-1)


@pytest.mark.slow
def test_brax_run_resumed_from_an_earlier_checkpoint_ends_the_same(tmp_path):
    """Checkpoints hold brax's env states: resuming from the first of two checkpoints ends bitwise the same."""
    import shutil

    from test_checkpoint import assert_same_run

    from populax.cli import main
    from populax.run.checkpoint import list_checkpoints

    reference = tmp_path / "reference"
    args = ["--env", "brax:inverted_pendulum", "--pop", "2", "--total-steps", "200", "--eval-every", "100",
            "--learning-starts", "50", "--hidden", "16,16", "--batch-size", "32", "--eval-episodes", "1",
            "--max-episode-steps", "20", "--checkpoint-every", "100", "--keep-checkpoints", "2", "--no-progress",
            "--no-tensorboard"]
    assert main(["train", *args, "--out", str(reference)]) == 0
    resumed = tmp_path / "resumed"
    shutil.copytree(reference, resumed)
    shutil.rmtree(list_checkpoints(resumed)[-1])
    (resumed / "summary.json").unlink()
    assert main(["resume", str(resumed), "--no-progress"]) == 0
    assert_same_run(resumed, reference)
