"""SAC, DQN and PPO math on tiny hand-made data: a silent error in a target fails here."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from populax.agents import ALGORITHMS, AgentSpec, default_torso
from populax.agents.base import ActionSpec, Transition, bootstrap_discount
from populax.agents.dqn import DQNConfig, DQNHParams, double_q_target, epsilon, make_dqn
from populax.agents.nets import TwinCritic
from populax.agents.options import DQNOptions, PPOOptions, resolve_options
from populax.agents.ppo import clipped_surrogate
from populax.agents.sac import SACConfig, SACHParams, make_sac, soft_target, squashed_sample
from populax.errors import ConfigError
from populax.loop.onpolicy import gae


# ---------------------------------------------------------------- SAC
def test_soft_target_by_hand():
    """y = scale r + gamma (1 - done) (min Q' - alpha log pi): gamma once, no bootstrap at terminals."""
    y = soft_target(
        reward=jnp.array([1.0, 1.0]),
        discount=bootstrap_discount(Transition(None, None, None, None, jnp.array([0.0, 1.0])), 0.9),
        next_q1=jnp.array([10.0, 10.0]), next_q2=jnp.array([8.0, 8.0]),
        next_log_prob=jnp.array([-2.0, -2.0]), alpha=0.5, reward_scale=2.0,
    )
    # min(10, 8) - 0.5 * (-2) = 9 ; 2 * 1 + 0.9 * 9 = 10.1 ; terminal: 2 * 1 = 2
    np.testing.assert_allclose(y, [10.1, 2.0], rtol=1e-6)


def test_squashed_log_prob_has_the_tanh_correction():
    """log pi(a) = log N(u; m, s) - log(1 - tanh(u)^2), checked against the direct formula."""
    mean, log_std = jnp.array([[0.3, -1.5]]), jnp.array([[-0.2, 0.4]])
    action, log_prob = squashed_sample(mean, log_std, jax.random.key(0))
    u = np.arctanh(np.asarray(action, np.float64))
    std = np.exp(np.asarray(log_std, np.float64))
    normal = -0.5 * ((u - np.asarray(mean)) / std) ** 2 - np.log(std) - 0.5 * math.log(2 * math.pi)
    expected = np.sum(normal - np.log(1 - np.tanh(u) ** 2), axis=-1)
    np.testing.assert_allclose(log_prob, expected, rtol=1e-4)


def test_sac_update_regresses_onto_soft_target_and_tunes_alpha():
    config = SACConfig(obs_dim=3, action=ActionSpec(False, 2), hidden=(16, 16))
    agent = make_sac(config)
    hp = SACHParams(gamma=0.9, reward_scale=1.0, lr_critic=0.0, lr_actor=0.0, lr_alpha=0.1)
    state = agent.init(jax.random.key(0), hp)
    obs = jnp.array([[0.1, 0.2, 0.3], [0.3, -0.2, 0.1]])
    batch = Transition(obs, jnp.array([[0.5, -0.5], [0.0, 0.1]]), jnp.array([1.0, -2.0]), obs[::-1] * 2,
                       jnp.array([0.0, 1.0]))
    new_state, metrics = jax.jit(agent.update)(state, batch, jax.random.key(1), hp)
    # Rebuild the target with the same key split the update uses.
    next_key, _ = jax.random.split(jax.random.key(1))
    from populax.agents.sac import GaussianActor

    next_action, next_log_prob = squashed_sample(*GaussianActor((16, 16), 2).apply(state.actor, batch.next_obs), next_key)
    critic = TwinCritic((16, 16))
    nq1, nq2 = critic.apply(state.critic_target, batch.next_obs, next_action)
    y = np.array([1.0 + 0.9 * (min(nq1[0], nq2[0]) - 1.0 * next_log_prob[0]), -2.0])
    q1, q2 = critic.apply(state.critic, batch.obs, batch.action)
    expected = np.mean((np.asarray(q1) - y) ** 2) + np.mean((np.asarray(q2) - y) ** 2)
    np.testing.assert_allclose(metrics["critic_loss"], expected, rtol=1e-5)
    # Entropy (about 1.4 nats for a fresh 2-D policy) is above the target -2, so alpha must drop.
    assert float(metrics["entropy"]) > -2.0
    assert float(new_state.log_alpha) < float(state.log_alpha)


# ---------------------------------------------------------------- DQN
def test_double_q_target_uses_online_argmax_and_target_value():
    online = jnp.array([[1.0, 5.0, 2.0], [3.0, 0.0, 1.0]])  # picks action 1, then action 0
    target = jnp.array([[7.0, 4.0, 9.0], [2.0, 8.0, 6.0]])  # its own argmax would be 2 and 1
    y = double_q_target(jnp.array([1.0, 0.5]), jnp.array([0.5, 0.0]), online, target)  # gamma 0.5, then terminal
    np.testing.assert_allclose(y, [1.0 + 0.5 * 4.0, 0.5])
    # Clipped: min(target 4, online 5) at a* = 1 for the first sample.
    online = jnp.array([[1.0, 3.0, 2.0]])
    y = double_q_target(jnp.array([1.0]), jnp.array([0.5]), online, target[:1], clipped=True)
    np.testing.assert_allclose(y, [1.0 + 0.5 * 3.0])


def test_epsilon_schedule_is_linear_then_flat():
    hp = DQNHParams(eps_start=1.0, eps_end=0.1, eps_decay_steps=1000.0)
    np.testing.assert_allclose([epsilon(hp, s) for s in (0, 500, 1000, 5000)], [1.0, 0.55, 0.1, 0.1], rtol=1e-6)


def test_dqn_hard_target_copy_every_period_and_huber_loss():
    agent = make_dqn(DQNConfig(obs_shape=(3,), action=ActionSpec(True, 2), hidden=(8,)))
    hp = DQNHParams(target_period=3.0, lr=0.01)
    state = agent.init(jax.random.key(0), hp)
    obs = jnp.array([[0.1, 0.2, 0.3], [0.3, -0.2, 0.1]])
    batch = Transition(obs, jnp.array([0, 1], jnp.int32), jnp.array([1.0, 30.0]), obs, jnp.array([0.0, 1.0]))
    first = jax.tree.leaves(state.target)[0]
    update = jax.jit(agent.update)
    for step in range(1, 4):
        previous = state
        state, metrics = update(state, batch, jax.random.key(step), hp)
        target = jax.tree.leaves(state.target)[0]
        if step < 3:
            np.testing.assert_array_equal(target, first)
        else:
            np.testing.assert_array_equal(target, jax.tree.leaves(state.params)[0])
    # Huber: the terminal sample with error ~30 contributes linearly (|e| - 0.5), not quadratically.
    from populax.agents.dqn import QNetwork

    net = QNetwork((8,), 2, "mlp", False)
    q = net.apply(previous.params, obs)
    nq_online, nq_target = net.apply(previous.params, obs), net.apply(previous.target, obs)
    y = double_q_target(batch.reward, bootstrap_discount(batch, 0.99), nq_online, nq_target)
    err = np.abs(np.asarray(q)[[0, 1], [0, 1]] - np.asarray(y))
    huber = np.where(err <= 1, 0.5 * err**2, err - 0.5)
    np.testing.assert_allclose(metrics["q_loss"], huber.mean(), rtol=1e-5)


def _dqn_batch():
    obs = jnp.array([[0.1, 0.2, 0.3], [0.3, -0.2, 0.1]])
    return Transition(obs, jnp.array([0, 1], jnp.int32), jnp.array([1.0, 3.0]), obs[::-1], jnp.array([0.0, 1.0]))


def test_dqn_alpha_zero_skips_the_target_pass_with_identical_results():
    """Issue 15: advantage_alpha fixed at 0 for the run (``zero_hparams``) leaves out the target net's pass
    over s; with alpha 0 the update is bit-for-bit the one that computes it, with alpha > 0 it differs."""
    config = DQNConfig(obs_shape=(3,), action=ActionSpec(True, 2), hidden=(8,))
    full, lean = make_dqn(config), make_dqn(dataclasses.replace(config, advantage_learning=False))
    hp = DQNHParams(lr=0.01, target_period=1.0)
    state = full.init(jax.random.key(0), hp)
    batch = _dqn_batch()
    for step in range(3):
        key = jax.random.key(step)
        state_full, metrics_full = jax.jit(full.update)(state, batch, key, hp)
        state_lean, metrics_lean = jax.jit(lean.update)(state, batch, key, hp)
        for a, b in zip(jax.tree.leaves((state_full, metrics_full)), jax.tree.leaves((state_lean, metrics_lean)),
                        strict=True):
            np.testing.assert_array_equal(a, b)
        state = state_full

    def dots(agent):
        jaxpr = jax.make_jaxpr(agent.update)(state, batch, jax.random.key(0), hp)
        return str(jaxpr).count("dot_general")

    assert dots(lean) == dots(full) - 2  # one forward pass of the 2-layer net fewer
    moved, _ = full.update(state, batch, jax.random.key(0), hp.replace(advantage_alpha=0.5))
    assert not np.array_equal(jax.tree.leaves(moved.params)[0], jax.tree.leaves(state_full.params)[0])


def test_zero_hparams_are_the_constant_zero_specs():
    from populax.hparams import zero_hparams

    assert "advantage_alpha" in zero_hparams(DQNHParams, {})
    assert "advantage_alpha" in zero_hparams(DQNHParams, {"advantage-alpha": 0})
    for spec in (0.9, "uniform:0,0.9", "0,0,0,0.5"):
        assert "advantage_alpha" not in zero_hparams(DQNHParams, {"advantage-alpha": spec})


def test_dqn_soft_target_moves_tau_of_the_way_every_period():
    """tau < 1: every target_period updates target <- target + tau (online - target) (Polyak at period 1)."""
    agent = make_dqn(DQNConfig(obs_shape=(3,), action=ActionSpec(True, 2), hidden=(8,)))
    hp = DQNHParams(target_period=2.0, lr=0.01, tau=0.25)
    state = agent.init(jax.random.key(0), hp)
    batch, update = _dqn_batch(), jax.jit(agent.update)
    one, _ = update(state, batch, jax.random.key(1), hp)
    for a, b in zip(jax.tree.leaves(one.target), jax.tree.leaves(state.target), strict=True):
        np.testing.assert_array_equal(a, b)  # not due yet
    two, _ = update(one, batch, jax.random.key(2), hp)
    for new, old, online in zip(jax.tree.leaves(two.target), jax.tree.leaves(one.target),
                                jax.tree.leaves(two.params), strict=True):
        np.testing.assert_allclose(new, old + 0.25 * (online - old), rtol=1e-6, atol=1e-7)
    assert not np.allclose(jax.tree.leaves(two.target)[0], jax.tree.leaves(two.params)[0])


@pytest.mark.parametrize("shape, torso", [((4,), "mlp"), ((10, 10, 4), "minatar_cnn"), ((84, 84, 4), "nature_cnn")])
def test_dqn_torsos_pick_and_run(shape, torso):
    assert default_torso(shape) == torso
    agent = ALGORITHMS["dqn"].make(AgentSpec(shape, ActionSpec(True, 3), (8,), DQNOptions(dueling=True)))
    state = jax.jit(agent.init)(jax.random.key(0), DQNHParams())
    action = jax.jit(agent.act)(state, jnp.ones((5, *shape)), jax.random.key(1), DQNHParams())
    assert action.shape == (5,) and action.dtype == jnp.int32 and int(action.max()) < 3


# ---------------------------------------------------------------- PPO
def test_gae_by_hand_stops_at_episode_ends():
    reward = jnp.array([[1.0], [1.0], [1.0]])
    value = jnp.array([[0.5], [0.4], [0.3]])
    done = jnp.array([[0.0], [1.0], [0.0]])
    adv, ret = gae(reward, value, done, last_value=jnp.array([2.0]), gamma=0.9, lam=0.5)
    d2 = 1.0 + 0.9 * 2.0 - 0.3          # last step bootstraps from last_value
    d1 = 1.0 - 0.4                      # episode ended: no V(s_2)
    d0 = 1.0 + 0.9 * 0.4 - 0.5
    a1 = d1                             # does not look past the boundary
    a0 = d0 + 0.9 * 0.5 * a1
    np.testing.assert_allclose(adv[:, 0], [a0, a1, d2], rtol=1e-6)
    np.testing.assert_allclose(ret, adv + value, rtol=1e-6)


def test_clipped_surrogate_by_hand():
    old = jnp.log(jnp.array([0.5, 0.5]))
    new = jnp.log(jnp.array([0.8, 0.2]))  # ratios 1.6 and 0.4
    adv = jnp.array([1.0, -1.0])
    # min(1.6, 1.2) * 1 = 1.2 ; min(0.4 * -1, 0.8 * -1) = -0.8 ; loss = -(1.2 - 0.8) / 2
    np.testing.assert_allclose(clipped_surrogate(new, old, adv, 0.2), -0.2, rtol=1e-6)


def test_ppo_update_improves_the_surrogate_on_a_fixed_rollout():
    from populax.agents.base import Rollout
    from populax.agents.ppo import ActorCritic, PPOHParams

    agent = ALGORITHMS["ppo"].make(AgentSpec((3,), ActionSpec(True, 2), (16,), PPOOptions(epochs=4, minibatches=2)))
    hp = PPOHParams(lr=1e-2)
    state = agent.init(jax.random.key(0), hp)
    obs = jax.random.normal(jax.random.key(1), (8, 2, 3))
    action, log_prob, value = jax.jit(jax.vmap(lambda o, k: agent.act(state, o, k)))(obs, jax.random.split(jax.random.key(2), 8))
    rollout = Rollout(obs, action, log_prob, value, jnp.zeros((8, 2)), jnp.zeros((8, 2)))
    adv = jnp.where(action == 1, 1.0, -1.0)  # action 1 is good
    new, metrics = jax.jit(agent.update)(state, rollout, adv, value, jax.random.key(3), hp)
    net = ActorCritic((16,), ActionSpec(True, 2))

    def p_good(params):
        return jnp.mean(jax.nn.softmax(net.apply(params, obs.reshape(-1, 3))[0])[:, 1])

    assert int(new.updates) == 4 * 2 and np.isfinite(float(metrics["policy_loss"]))
    assert float(p_good(new.params)) > float(p_good(state.params)) + 0.05


@pytest.mark.parametrize("shape, torso, convs", [((4,), "mlp", 0), ((10, 10, 4), "minatar_cnn", 1), ((84, 84, 4), "nature_cnn", 3)])
def test_ppo_torsos_pick_share_and_run(shape, torso, convs):
    """auto picks DQN's torso; a CNN is one set of convolutions shared by both heads (shapes only: eval_shape)."""
    agent = ALGORITHMS["ppo"].make(AgentSpec(shape, ActionSpec(True, 3), (8,), PPOOptions()))
    state = jax.eval_shape(agent.init, jax.random.key(0), None)
    params = state.params["params"]
    assert sorted(k for k in params if k.startswith("Conv_")) == [f"Conv_{i}" for i in range(convs)], torso
    if convs:  # both heads read the flattened conv features (8x8x16 for MinAtar, 7x7x64 for Atari)
        widths = sorted(params[k]["kernel"].shape[0] for k in params if k.startswith("Dense_"))
        assert widths == [8, 8, 1024 if torso == "minatar_cnn" else 3136, 1024 if torso == "minatar_cnn" else 3136]
    action, log_prob, value = jax.eval_shape(agent.act, state, jnp.ones((5, *shape)), jax.random.key(1))
    assert action.shape == log_prob.shape == value.shape == (5,)


def test_ppo_minatar_cnn_acts_and_learns_shapes():
    """The shared-CNN actor-critic runs on 10x10x4 frames: actions in range, one update step."""
    from populax.agents.base import Rollout
    from populax.agents.ppo import PPOHParams

    agent = ALGORITHMS["ppo"].make(AgentSpec((10, 10, 4), ActionSpec(True, 3), (8,), PPOOptions(epochs=1, minibatches=1)))
    state = agent.init(jax.random.key(0), None)
    obs = jax.random.bernoulli(jax.random.key(1), 0.2, (2, 3, 10, 10, 4)).astype(jnp.float32)  # [T, E, ...]
    action, log_prob, value = jax.jit(jax.vmap(lambda o: agent.act(state, o, jax.random.key(2))))(obs)
    assert action.shape == (2, 3) and int(action.max()) < 3 and int(action.min()) >= 0
    rollout = Rollout(obs, action, log_prob, value, jnp.ones((2, 3)), jnp.zeros((2, 3)))
    new, metrics = jax.jit(agent.update)(state, rollout, jnp.ones((2, 3)), value + 1.0, jax.random.key(3), PPOHParams())
    assert int(new.updates) == 1 and np.isfinite(float(metrics["value_loss"]))
    assert not np.allclose(new.params["params"]["Conv_0"]["kernel"], state.params["params"]["Conv_0"]["kernel"])


@pytest.mark.parametrize("shape", [(1024, 64), (64, 64), (3, 64)])
def test_orthogonal_polar_is_orthogonal_and_scaled(shape):
    from populax.agents.nets import orthogonal_polar

    w = orthogonal_polar(2.0)(jax.random.key(0), shape)
    gram = w.T @ w if shape[0] >= shape[1] else w @ w.T
    assert w.shape == shape
    np.testing.assert_allclose(gram, 4.0 * np.eye(min(shape)), atol=1e-4)


def test_ppo_torso_option_errors():
    assert resolve_options(PPOOptions, {"torso": "minatar_cnn"}, "ppo").torso == "minatar_cnn"
    with pytest.raises(ConfigError, match=r"^--algo-opt.torso: unknown torso 'resnet'; allowed: auto, mlp, nature_cnn, minatar_cnn$"):
        resolve_options(PPOOptions, {"torso": "resnet"}, "ppo")


def test_algo_options_are_typed_and_checked():
    assert resolve_options(PPOOptions, {"rollout-len": "32", "clip-value": "true"}, "ppo") == PPOOptions(rollout_len=32, clip_value=True)
    with pytest.raises(ConfigError, match="--algo-opt.epochs: cannot read"):
        resolve_options(PPOOptions, {"epochs": "many"}, "ppo")
    with pytest.raises(ConfigError, match="unknown option of dqn; allowed: torso"):
        resolve_options(DQNOptions, {"rollout-len": 3}, "dqn")
    with pytest.raises(ConfigError, match="td3 has no algorithm options"):
        resolve_options(None, {"x": 1}, "td3")
