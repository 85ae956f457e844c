"""TD3 math on hand-made data, and the no-recompile guarantee."""

import jax
import jax.numpy as jnp
import numpy as np

from populax.agents.base import ActionSpec, Transition
from populax.agents.td3 import TD3Config, TD3HParams, make_td3
from populax.buffers import buffer_add, buffer_init, buffer_sample

CONFIG = TD3Config(obs_dim=3, action=ActionSpec(False, 2), hidden=(16, 16))


def batch(terminated):
    obs = jnp.array([[0.1, 0.2, 0.3], [0.3, -0.2, 0.1]])
    return Transition(
        obs=obs,
        action=jnp.array([[0.5, -0.5], [0.0, 0.1]]),
        reward=jnp.array([1.0, -2.0]),
        next_obs=obs[::-1] * 2,
        terminated=jnp.asarray(terminated, jnp.float32),
    )


def test_critic_target_masks_terminal_and_uses_min_of_twins():
    """One critic step moves Q towards r + gamma * (1 - done) * min(Q1', Q2')."""
    agent = make_td3(CONFIG)
    hp = TD3HParams(target_noise=0.0, noise_clip=0.0, gamma=0.9)
    state = agent.init(jax.random.key(0), hp)
    from populax.agents.nets import DeterministicActor, TwinCritic

    critic = TwinCritic(CONFIG.hidden)
    actor = DeterministicActor(CONFIG.hidden, 2)
    b = batch([0.0, 1.0])
    next_a = actor.apply(state.actor_target, b.next_obs)
    q1, q2 = critic.apply(state.critic_target, b.next_obs, next_a)
    expected = np.array([1.0 + 0.9 * min(q1[0], q2[0]), -2.0])  # the terminal one does not bootstrap

    # Recover the target the update used from the critic loss gradient: with
    # lr = 0 nothing moves, and the loss is sum_i mean((Qi - y)^2).
    hp0 = hp.replace(lr_critic=0.0, lr_actor=0.0)
    _, metrics = agent.update(state, b, jax.random.key(1), hp0)
    c1, c2 = critic.apply(state.critic, b.obs, b.action)
    loss = np.mean((np.asarray(c1) - expected) ** 2) + np.mean((np.asarray(c2) - expected) ** 2)
    np.testing.assert_allclose(metrics["critic_loss"], loss, rtol=1e-5)


def test_policy_delay_and_polyak_targets():
    agent = make_td3(CONFIG)
    hp = TD3HParams(delay=3.0, tau=0.5)
    state = agent.init(jax.random.key(0), hp)
    b = batch([0.0, 0.0])
    actor_before = state.actor
    for step in range(1, 4):
        state, metrics = agent.update(state, b, jax.random.key(step), hp)
        moved = not np.allclose(jax.tree.leaves(state.actor)[0], jax.tree.leaves(actor_before)[0])
        assert moved == (step == 3), f"actor moved at update {step}"
        assert np.isnan(metrics["actor_loss"]) == (step != 3)
    # after the policy step, the target moved halfway towards the online actor
    for t, o, b0 in zip(jax.tree.leaves(state.actor_target), jax.tree.leaves(state.actor), jax.tree.leaves(actor_before)):
        np.testing.assert_allclose(t, 0.5 * b0 + 0.5 * o, rtol=1e-5, atol=1e-6)


def test_actions_stay_in_unit_box():
    agent = make_td3(CONFIG)
    state = agent.init(jax.random.key(0), TD3HParams())
    obs = jax.random.normal(jax.random.key(1), (100, 3)) * 10
    action = agent.act(state, obs, jax.random.key(2), TD3HParams(sigma=5.0))
    assert action.shape == (100, 2) and float(jnp.abs(action).max()) <= 1.0


def test_changing_a_traced_hyperparameter_does_not_recompile():
    agent = make_td3(CONFIG)
    traces = []

    def update(state, b, key, hp):
        traces.append(1)  # runs only when jax traces (compiles) the function
        return agent.update(state, b, key, hp)

    update = jax.jit(update)
    state = agent.init(jax.random.key(0), TD3HParams())
    hp = jax.tree.map(jnp.asarray, TD3HParams())
    for lr, delay in [(3e-4, 2.0), (1e-2, 1.0), (1e-5, 5.0)]:
        state, _ = update(state, batch([0.0, 1.0]), jax.random.key(0), hp.replace(lr_actor=jnp.float32(lr), delay=jnp.float32(delay)))
    assert len(traces) == 1


def test_replay_buffer_wraps_and_samples_valid_rows():
    example = Transition(jnp.zeros(2), jnp.zeros(1), jnp.float32(0), jnp.zeros(2), jnp.float32(0))
    buffer = buffer_init(example, capacity=6)
    for i in range(4):  # 4 inserts of 2 rows into 6 slots: the first rows are overwritten
        rows = Transition(jnp.full((2, 2), i), jnp.full((2, 1), i), jnp.full((2,), float(i)), jnp.zeros((2, 2)), jnp.zeros(2))
        buffer = buffer_add(buffer, rows)
    assert int(buffer.size) == 6 and int(buffer.position) == 2
    assert sorted(np.asarray(buffer.data.reward).tolist()) == [1, 1, 2, 2, 3, 3]
    sample = buffer_sample(buffer, jax.random.key(0), 200)
    assert set(np.asarray(sample.reward).tolist()) == {1.0, 2.0, 3.0}
