"""Atari recipes (issue 15): any ALE/* id resolves to the Nature DQN / PPO settings; evaluation's step cap."""

import warnings

import jax
import numpy as np
import pytest

from populax.backends.compiled.episodes import episode_returns
from populax.backends.compiled.program import build_program
from populax.backends.host.collector import episode_totals
from populax.cli import main, parse_train_args
from populax.envs.host_envs import make_host_spec
from populax.envs.jax_envs import make_jax_env
from populax.errors import ConfigError
from populax.run.config import TrainConfig, check_ranges
from populax.run.recipes import recipe_path


@pytest.mark.parametrize("env", ["ALE/Pong-v5", "ALE/Breakout-v5", "gymnasium:ALE/SpaceInvaders-v5"])
def test_any_ale_id_with_dqn_picks_the_nature_recipe(env):
    config = parse_train_args(["--env", env, "--algo", "dqn", "--total-steps", "1000000"])
    assert recipe_path("dqn", env).name == "dqn-atari.yaml"
    assert (config.batch_size, config.updates_per_step, config.learning_starts) == (32, 0.25, 80_000)
    assert config.buffer_size >= 100_000 and config.algo_options["torso"] == "nature_cnn"
    hp = config.hp
    # CleanRL's target copy every 1000 env steps: 250 updates at one update per 4 steps
    assert (hp["lr"], hp["target-period"], hp["eps-start"], hp["eps-end"]) == (1e-4, 250, 1.0, 0.01)
    assert config.clip_rewards and config.terminal_on_life_loss  # CleanRL's ClipRewardEnv and EpisodicLifeEnv
    assert hp["eps-decay-steps"] == 100_000  # 10% of the budget, whatever the budget
    assert config.eval_max_steps == 4500  # 5 minutes of play: a stuck policy cannot stall evaluation


def test_ale_id_with_ppo_picks_the_atari_ppo_recipe():
    config = parse_train_args(["--env", "ALE/Pong-v5", "--algo", "ppo"])
    options, hp = config.algo_options, config.hp
    assert config.envs_per_member == 8 and config.eval_max_steps == 4500
    assert (options["rollout-len"], options["epochs"], options["anneal-lr"], options["torso"]) == (128, 4, True, "nature_cnn")
    assert (hp["lr"], hp["clip-eps"], hp["ent-coef"]) == (2.5e-4, 0.1, 0.01)
    assert config.clip_rewards and config.terminal_on_life_loss
    assert not parse_train_args(["--env", "ALE/Pong-v5", "--algo", "ppo", "--clip-rewards", "false"]).clip_rewards


def test_flags_beat_the_atari_recipe_and_short_runs_stay_short():
    config = parse_train_args(["--env", "ALE/Pong-v5", "--algo", "dqn", "--pop", "2", "--total-steps", "2000",
                               "--batch-size", "64", "--hp.eps-decay-steps", "500"])
    assert config.batch_size == 64 and float(config.hp["eps-decay-steps"]) == 500
    assert config.eval_every == 2000  # the recipe's 250k period would have run 250k steps
    bare = parse_train_args(["--env", "ALE/Pong-v5", "--algo", "dqn", "--no-recipe"])
    assert bare.batch_size == TrainConfig().batch_size and bare.eval_max_steps == 0
    assert recipe_path("dqn", "gymnasium:CartPole-v1") is None  # only Atari ids get the Atari recipe


def test_host_evaluation_step_cap_ends_a_stuck_episode():
    """Breakout with NOOP never launches the ball: without a cap the episode lasts 27k steps."""
    spec = make_host_spec("ALE/Breakout-v5")
    calls = []

    def stuck(obs):
        calls.append(len(obs))
        return np.zeros(len(obs), np.int64)

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a cut the user set (--eval-max-steps) is not warned of
        totals = episode_totals(spec, stuck, 2, seed=0, max_steps=40)
    assert len(calls) == 40 and totals.shape == (2,) and np.all(totals == 0)


def test_compiled_evaluation_step_cap():
    """gymnax MountainCar: -1 per step, a constant push never reaches the flag (200-step limit)."""
    env = make_jax_env("MountainCar-v0")
    push = lambda state, obs: np.zeros(obs.shape[0], np.int32)  # noqa: E731
    key = jax.random.key(0)
    returns = jax.jit(episode_returns, static_argnums=(0, 2, 3, 5))
    totals, running = returns(push, None, env, 3, key, 0)
    assert np.all(np.asarray(totals) == -200) and not np.any(running)  # truncated by the env's own limit
    totals, running = returns(push, None, env, 3, key, 25)
    assert np.all(np.asarray(totals) == -25) and np.all(running)  # cut by --eval-max-steps
    from populax.agents import get_algorithm

    for algo in ("dqn", "ppo"):
        config = TrainConfig(env="MountainCar-v0", algo=algo, eval_max_steps=25, hidden=(8,))
        schedule, _ = build_program(get_algorithm(algo), config, env)
        assert schedule.eval_max_steps == 25


def test_negative_cap_is_refused_in_one_line(tmp_path, capsys):
    with pytest.raises(ConfigError, match="--eval-max-steps must be >= 0"):
        check_ranges(TrainConfig(eval_max_steps=-1))
    assert main(["train", "--env", "CartPole-v1", "--algo", "dqn", "--eval-max-steps", "-5",
                 "--out", str(tmp_path / "run"), "--no-progress"]) == 2
    assert "--eval-max-steps must be >= 0" in capsys.readouterr().err and not (tmp_path / "run").exists()
