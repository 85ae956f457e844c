"""The gymnax -> Gymnasium twins `populax eval --video` replays JAX policies in really are twins."""

import dataclasses
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from populax.run.policy import GYMNASIUM_TWINS
from populax.run.video import even_frame

# How each twin's Gymnasium state vector maps onto the gymnax state's fields.
STATE_FIELDS = {
    "Pendulum-v1": ("theta", "theta_dot"),
    "CartPole-v1": ("x", "x_dot", "theta", "theta_dot"),
    "Acrobot-v1": ("joint_angle1", "joint_angle2", "velocity_1", "velocity_2"),
    "MountainCar-v0": ("position", "velocity"),
    "MountainCarContinuous-v0": ("position", "velocity"),
}


@pytest.mark.parametrize("gymnax_id", sorted(GYMNASIUM_TWINS))
def test_twin_has_the_same_spaces_limit_and_dynamics(gymnax_id):
    """From the same state, the same actions give the same observations, rewards and ends."""
    import gymnasium
    import gymnax

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        env, params = gymnax.make(gymnax_id)
        twin = gymnasium.make(GYMNASIUM_TWINS[gymnax_id])
    assert twin.spec.max_episode_steps == params.max_steps_in_episode
    assert twin.observation_space.shape == env.observation_space(params).shape
    space = env.action_space(params)
    if hasattr(space, "n"):
        assert twin.action_space.n == space.n
    else:
        np.testing.assert_array_equal(twin.action_space.low, np.broadcast_to(space.low, twin.action_space.shape))
        np.testing.assert_array_equal(twin.action_space.high, np.broadcast_to(space.high, twin.action_space.shape))
    obs, _ = twin.reset(seed=3)
    _, state = env.reset(jax.random.key(0), params)
    values = np.asarray(twin.unwrapped.state, np.float64)
    state = state.replace(**{name: jnp.asarray(v, getattr(state, name).dtype)
                             for name, v in zip(STATE_FIELDS[gymnax_id], values)})
    assert set(STATE_FIELDS[gymnax_id]) < {f.name for f in dataclasses.fields(state)}
    step = jax.jit(lambda s, a: env.step_env(jax.random.key(0), s, a, params))
    rng = np.random.default_rng(0)
    for _ in range(40):
        if hasattr(space, "n"):
            action = int(rng.integers(space.n))
        else:
            action = rng.uniform(twin.action_space.low, twin.action_space.high).astype(np.float32)
        obs, reward, terminated, _, _ = twin.step(action)
        jax_obs, state, jax_reward, done, _ = step(state, jnp.asarray(action))
        np.testing.assert_allclose(np.asarray(jax_obs), obs, atol=2e-3)  # float32 vs float64 drift only
        assert float(jax_reward) == pytest.approx(reward, abs=2e-3)
        assert bool(done) == terminated
        if terminated:
            break
    twin.close()


def test_odd_frames_are_padded_to_even_sizes():
    frame = np.arange(5 * 7 * 4, dtype=np.uint8).reshape(5, 7, 4)  # RGBA, odd height and width
    even = even_frame(frame)
    assert even.shape == (6, 8, 3) and even.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(even[:5, :7], frame[..., :3])
    np.testing.assert_array_equal(even[5, :7], frame[4, :, :3])  # edge rows repeated


def test_an_environment_that_draws_nothing_is_named_not_blamed_on_opengl():
    """A user's Gymnasium env without render(): one line saying so (not the MuJoCo display hint); a MuJoCo-like
    failure keeps the hint."""
    import gymnasium

    from populax.errors import ConfigError
    from populax.run.video import render_frame

    class Blind(gymnasium.Env):
        observation_space = gymnasium.spaces.Box(-1.0, 1.0, (1,))
        action_space = gymnasium.spaces.Box(-1.0, 1.0, (1,))

    with pytest.raises(ConfigError, match=r"^--video: mine:Blind does not implement render\(\)"):
        render_frame(Blind(), "mine:Blind")

    class NoContext(Blind):
        def render(self):
            raise RuntimeError("")

    with pytest.raises(ConfigError, match=r"cannot render here \(RuntimeError\); MuJoCo without a display needs"):
        render_frame(NoContext(), "mine:NoContext")
