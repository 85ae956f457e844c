"""Host environments (Gymnasium MuJoCo, classic control, ALE): routing, errors, bookkeeping, runs.

Real MuJoCo and ALE throughout; small networks and short runs to stay fast.
"""

import json
import math

import jax
import numpy as np
import pytest
import yaml

import populax
import populax.runtime
from populax.backends.host.collector import Collector, collector_keys
from populax.cli import main
from populax.envs import gymnax_ids
from populax.envs.host_envs import host_env_rows, learning_terminals, make_host_spec, make_vector_env
from populax.envs.routing import resolve_env
from populax.errors import ConfigError
from populax.obs_norm import normalize, stats_init, stats_update
from populax.run.config import TrainConfig
from populax.runtime import prepare


def host_config(tmp_path, **overrides):
    settings = dict(pop=2, total_steps=400, eval_every=400, learning_starts=100, hidden=(16, 16), batch_size=32,
                    eval_episodes=1, out=str(tmp_path / "run"), progress=False, tensorboard=False)
    settings.update(overrides)
    return TrainConfig(**settings)


def test_env_ids_route_to_gymnax_unless_prefixed():
    ids = gymnax_ids()
    assert resolve_env("Pendulum-v1", ids) == ("gymnax", "Pendulum-v1")
    assert resolve_env("gymnasium:Pendulum-v1", ids) == ("gymnasium", "Pendulum-v1")
    assert resolve_env("gymnax:Pendulum-v1", ids) == ("gymnax", "Pendulum-v1")
    assert resolve_env("HalfCheetah-v5", ids) == ("gymnasium", "HalfCheetah-v5")
    assert resolve_env("ALE/Pong-v5", ids) == ("gymnasium", "ALE/Pong-v5")
    assert resolve_env("brax:halfcheetah", ids) == ("brax", "brax:halfcheetah")  # compiled: physics in the chunk


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        ({"env": "gymnasium:CartPole-v1"}, "--env: td3 needs a continuous (Box) action space; CartPole-v1 has Discrete(2)"),
        ({"env": "HalfCheetah-v3"}, "--env: HalfCheetah-v3 needs the retired mujoco-py"),
        ({"env": "gymnasium:NoSuch-v9"}, "--env: unknown environment 'NoSuch-v9'"),
        ({"env": "Blackjack-v1"}, "--env: Blackjack-v1 has a Tuple observation space"),
        ({"env": "HalfCheetah-v5", "vector_env": "threads"}, "--vector-env: unknown mode 'threads'"),
        ({"env": "HalfCheetah-v5", "max_policy_lag": 1, "envs_per_member": 2}, "--max-policy-lag must be >= --envs-per-member"),
    ],
)
def test_host_config_errors_name_the_setting(tmp_path, overrides, fragment):
    with pytest.raises(populax.ConfigError, match=None) as error:
        prepare(host_config(tmp_path, **overrides))
    assert fragment in str(error.value)
    assert not (tmp_path / "run").exists()


def test_populax_envs_says_ready_exactly_for_the_ids_a_run_accepts():
    """`populax envs` builds no MuJoCo or Atari env (the others' spaces are checked by building them); every
    non-Atari row (and Pong) is checked against the spec check a run makes: ready <-> accepted (a toy-text env's
    Discrete observations, tabular CliffWalking's int32 Box of moves, Pusher-v4 under MuJoCo 3, Box2D without its
    package are not 'ready'). Shimmy's old-gym adapters are not listed."""
    rows = {env_id: status for env_id, _, status in host_env_rows()}
    assert rows["FrozenLake-v1"] == "not trainable: a Discrete observation space" and rows["Pendulum-v1"] == "ready"
    assert rows["tabular/CliffWalking-v0"] == "not trainable: an integer Box action space (int32)"
    assert not any(env_id.startswith("GymV2") for env_id in rows)
    checked = [env_id for env_id in rows if not env_id.startswith("ALE/")] + ["ALE/Pong-v5"]
    for env_id in checked:
        try:
            make_host_spec(env_id)
            accepted = True
        except ConfigError:
            accepted = False
        assert accepted == (rows[env_id] == "ready"), (env_id, rows[env_id])


def test_missing_engine_names_the_extra(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mujoco" else real(name, *a))
    with pytest.raises(populax.ConfigError) as error:
        prepare(host_config(tmp_path, env="Hopper-v5"))
    assert "install populax[mujoco]" in str(error.value)


def test_cli_host_error_is_one_line_exit_2(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--env", "gymnasium:CartPole-v1", "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "continuous (Box)" in err[0] and not out.exists()


def test_hopper_terminal_and_time_limit_are_stored_apart(tmp_path):
    """Hopper falls (terminal: no bootstrap) or hits a 40-step limit (truncated:
    bootstrap from the true last observation, not the reset one)."""
    config = host_config(tmp_path, env="Hopper-v5", pop=2, envs_per_member=2, max_episode_steps=40,
                         learning_starts=10_000, total_steps=400, max_policy_lag=800)
    setup = prepare(config)
    backend = setup.backend
    population = backend.functions.init(jax.random.split(jax.random.key(0), 2), setup.hparams)
    collector = Collector(backend.spec, backend.plan, backend.functions, population, 2, "sync", seed=3,
                          keys=collector_keys(3, 2))
    block = collector.collect_block()
    collector.close()
    population = backend.functions.insert(population, block.rows, block.stats)
    data = jax.tree.map(lambda x: np.asarray(x), population.experience.data)
    terminated, truncated = data.terminated, block.truncated
    assert terminated.shape == truncated.shape == (2, 400)
    assert terminated.sum() > 0 and truncated.sum() > 0, "seeded random actions give both kinds"
    assert not np.any((terminated > 0) & (truncated > 0))

    def healthy(obs):  # Hopper-v5's rule on (z, angle, rest of the state)
        z, angle = obs[..., 0], obs[..., 1]
        return (z > 0.7) & (np.abs(angle) < 0.2) & np.all(np.abs(obs[..., 1:]) < 100.0, axis=-1)

    assert not healthy(data.next_obs[terminated > 0]).any()
    assert healthy(data.next_obs[truncated > 0]).all()
    # Each env's episode lengths: truncated episodes are exactly the 40-step limit long.
    for member in range(2):
        for env in range(2):
            rows = np.arange(env, 400, 2)  # row t*E + e is env e at iteration t
            ends = np.flatnonzero((terminated[member, rows] + truncated[member, rows]) > 0)
            lengths = np.diff(np.concatenate([[-1], ends]))
            assert np.all(lengths[truncated[member, rows][ends] > 0] == 40)
            assert np.all(lengths[terminated[member, rows][ends] > 0] < 40)
            # Truncated next_obs is the real last state: it is not the next row's (reset) obs.
            for t in ends[truncated[member, rows][ends] > 0]:
                if t + 1 < len(rows):
                    assert not np.allclose(data.next_obs[member, rows[t]], data.obs[member, rows[t + 1]])
            inside = np.setdiff1d(np.arange(len(rows) - 1), ends)
            np.testing.assert_array_equal(data.next_obs[member, rows[inside]], data.obs[member, rows[inside + 1]])


def test_halfcheetah_td3_run_directory_ratio_and_lag(tmp_path):
    """Short TD3 run on real MuJoCo HalfCheetah-v5, overlapped collector, obs normalisation on."""
    out = tmp_path / "run"
    code = main(["train", "--env", "HalfCheetah-v5", "--pop", "2", "--total-steps", "600", "--eval-every", "300",
                 "--learning-starts", "100", "--hidden", "32,32", "--batch-size", "32", "--eval-episodes", "1",
                 "--max-episode-steps", "150", "--updates-per-step", "0.5", "--max-policy-lag", "40",
                 "--obs-norm", "true", "--out", str(out), "--no-progress"])
    assert code == 0
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["env"] == "HalfCheetah-v5" and config["obs_norm"] is True
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["env_step"] for r in records] == [300, 300, 600, 600]
    assert all(math.isfinite(r["return"]) for r in records)
    assert all(r["train_return"] is not None for r in records[2:])  # 150-step episodes finished
    summary = json.loads((out / "summary.json").read_text())
    host = summary["host"]
    # the ratio, exactly: phases of 2 steps (1 update each) after learning_starts
    assert summary["updates_per_member"] == 0.5 * (600 - 100)
    assert host["max_policy_lag_seen"] <= 40
    assert 0 < host["learner_busy_fraction"] < 1
    assert all(math.isfinite(m["final_return"]) for m in summary["members"])


def test_obs_norm_statistics_match_numpy():
    rng = np.random.default_rng(0)
    batches = [rng.normal(3.0, 2.0, size=(16, 5)).astype(np.float32) for _ in range(4)]
    stats = stats_init((5,))
    for b in batches:
        stats = stats_update(stats, b)
    every = np.concatenate(batches)
    np.testing.assert_allclose(stats.mean, every.mean(0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(stats.var, every.var(0), rtol=1e-3)
    z = np.asarray(normalize(stats, every))
    np.testing.assert_allclose(z.mean(0), 0.0, atol=1e-3)
    np.testing.assert_allclose(z.std(0), 1.0, atol=1e-2)


def test_without_overlap_a_host_run_is_reproducible(tmp_path):
    """Alternating collection and learning (overlap off): the same seed gives the same run."""
    config = host_config(tmp_path, env="gymnasium:Pendulum-v1", total_steps=300, eval_every=300, overlap=False)
    setup = prepare(config)  # one setup, run twice: the compiled functions are reused
    first, second = populax.runtime.run(setup), populax.runtime.run(setup)
    np.testing.assert_array_equal(first.returns, second.returns)
    for x, y in zip(jax.tree.leaves(first.population.agent), jax.tree.leaves(second.population.agent)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert int(np.asarray(first.population.agent.updates)[0]) == 200  # 300 steps - 100 warm-up, ratio 1


def test_atari_preprocessing_is_the_dqn_standard():
    spec = make_host_spec("ALE/Pong-v5")
    assert spec.obs_shape == (84, 84, 4) and spec.obs_dtype == np.uint8  # channels last, like MinAtar
    assert spec.action.discrete and spec.action.size == 6
    env = spec.make()
    assert env.unwrapped._frameskip == 1  # AtariPreprocessing skips (4, max-pooled); ALE must not skip again
    obs, _ = env.reset(seed=1)
    for _ in range(3):
        previous = obs
        obs, *_ = env.step(0)
    np.testing.assert_array_equal(obs[..., :3], previous[..., 1:])  # the stack shifts by one frame per step
    env.close()
    envs = make_vector_env(spec, 2, "sync")
    obs, _ = envs.reset(seed=0)
    obs, reward, terminated, truncated, _ = envs.step(np.zeros(2, np.int64))
    envs.close()
    assert obs.shape == (2, 84, 84, 4) and obs.dtype == np.uint8 and obs.max() > 0


def test_pong_dqn_run_directory(tmp_path):
    out = tmp_path / "run"
    code = main(["train", "--env", "ALE/Pong-v5", "--algo", "dqn", "--pop", "2", "--total-steps", "400",
                 "--eval-every", "400", "--learning-starts", "100", "--batch-size", "32", "--buffer-size", "400",
                 "--eval-episodes", "1", "--max-episode-steps", "200", "--updates-per-step", "0.25",
                 "--n-step", "3",  # n-step folds over the frame-storage buffer's rebuilt stacks
                 "--out", str(out), "--no-progress"])
    assert code == 0
    for name in ("config.yaml", "metrics.jsonl", "summary.json"):
        assert (out / name).is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert all(math.isfinite(m["final_return"]) for m in summary["members"])
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))


def test_atari_frames_flow_through_collector_buffer_and_evaluation():
    """The host path with real ALE frames and a discrete action space, using a minimal
    linear-Q agent: uint8 frames in the buffer, one action per env."""
    from populax.agents.base import Agent
    from populax.backends.host.collector import evaluate
    from populax.backends.host.member import HostPlan, make_functions
    from populax.loop.shape import LoopShape
    from populax.population import make_executor

    spec = make_host_spec("ALE/Pong-v5", max_episode_steps=30)
    size = int(np.prod(spec.obs_shape))

    def q_values(state, obs):
        return obs.reshape(obs.shape[0], -1) / 255.0 @ state["w"]

    agent = Agent(
        init=lambda key, hp: {"w": jax.random.normal(key, (size, spec.action.size)) * 1e-2},
        act=lambda state, obs, key, hp: jax.numpy.argmax(q_values(state, obs), -1),
        policy=lambda state, obs: jax.numpy.argmax(q_values(state, obs), -1),
        update=lambda state, batch, key, hp: (state, {}),
    )
    loop = LoopShape(envs_per_member=2, iterations_per_phase=1, updates_per_phase=2, phases_per_chunk=40,
                     learning_starts=20, batch_size=8, buffer_size=80)
    plan = HostPlan(loop=loop, block_iterations=40, chunk_blocks=1, update_chunk=1, max_policy_lag=80)
    functions = make_functions(agent, spec, plan, make_executor("vmap", 2), obs_norm=False)
    population = functions.init(jax.random.split(jax.random.key(0), 2), jax.numpy.zeros(2))
    collector = Collector(spec, plan, functions, population, 2, "sync", seed=0, keys=collector_keys(0, 2))
    block = collector.collect_block()
    collector.close()
    population = functions.insert(population, block.rows, block.stats)
    data = population.experience  # frame storage: 84x84 uint8 frames, one ring per env (tests/test_frame_buffer.py)
    assert data.frames.dtype == np.uint8 and data.frames.shape[:2] == (2, 2) and data.frames.shape[3:] == (84, 84)
    assert data.action.shape == (2, 2, 40) and int(data.action.max()) < 6
    assert np.asarray(block.truncated).sum() == 2 * 2  # every env hit the 30-step limit once in 40 iterations
    assert np.asarray(data.terminated).sum() == 0
    returns = evaluate(spec, functions, population, episodes=1, seed=0)
    assert returns.shape == (2,) and np.all(np.isfinite(returns))


def test_async_vector_env_matches_sync():
    """Subprocess stepping gives the same trajectories as in-process stepping, and
    the workers outlive a Ctrl-C (SIGINT reaches the whole process group; the
    training process handles it by checkpointing, so the workers must ignore it)."""
    import os
    import signal

    spec = make_host_spec("Hopper-v5", max_episode_steps=20)
    actions = np.random.default_rng(0).uniform(-1, 1, size=(30, 2, 3))
    trajectories = []
    for mode in ("sync", "async"):
        envs = make_vector_env(spec, 2, mode)
        obs, _ = envs.reset(seed=7)
        rows = [obs]
        for t, a in enumerate(actions):
            if mode == "async" and t == 10:
                for worker in envs.processes:
                    os.kill(worker.pid, signal.SIGINT)
            obs, reward, terminated, truncated, _ = envs.step(a)
            rows.append(obs)
        envs.close()
        trajectories.append(np.stack(rows))
    np.testing.assert_array_equal(trajectories[0], trajectories[1])


def test_atari_life_loss_ends_the_learning_episode_but_not_the_game():
    """--terminal-on-life-loss: a lost life is a terminal to learn from, yet the game plays on to its end
    (no reset after life 1), which is also what evaluation sees (it reads only terminated/truncated)."""
    spec = make_host_spec("ALE/Breakout-v5", terminal_on_life_loss=True)
    envs = make_vector_env(spec, 1, "sync")
    _, info = envs.reset(seed=0)
    envs.action_space.seed(0)
    assert not info["life_lost"][0] and info["lives"][0] == 5
    lives, frame, losses = [5], info["episode_frame_number"][0], []
    for step in range(3000):  # a random game of Breakout lasts about 200 agent steps
        _, _, terminated, truncated, info = envs.step(envs.action_space.sample())
        learn = learning_terminals(terminated, info)
        assert learn.dtype == np.float32 and not truncated[0]
        if terminated[0]:
            assert info["final_info"]["lives"][0] == 0 and info["final_info"]["life_lost"][0] and learn[0] == 1.0
            break
        assert info["episode_frame_number"][0] > frame  # the same game goes on: no reset
        frame = info["episode_frame_number"][0]
        if info["life_lost"][0]:
            losses.append(step)
            assert info["lives"][0] == lives[-1] - 1 and learn[0] == 1.0
            lives.append(info["lives"][0])
        else:
            assert info["lives"][0] == lives[-1] and learn[0] == 0.0
    envs.close()
    assert terminated[0], "the game did not end within 3000 steps"
    assert lives == [5, 4, 3, 2, 1] and len(losses) == 4 and losses[0] < step  # lives 2-5 were played


def test_without_life_loss_learning_terminals_are_the_terminations():
    spec = make_host_spec("ALE/Breakout-v5")
    envs = make_vector_env(spec, 2, "sync")
    envs.reset(seed=0)
    _, _, terminated, _, info = envs.step(np.ones(2, np.int64))
    envs.close()
    assert "life_lost" not in info
    np.testing.assert_array_equal(learning_terminals(terminated, info), terminated.astype(np.float32))


def test_learning_terminals_reads_the_mask_and_the_final_info_of_reset_envs():
    terminated = np.array([False, False, True, False])
    info = {
        "life_lost": np.array([True, False, False, True]), "_life_lost": np.array([True, True, True, False]),
        # env 1 was truncated (time limit) on the step it lost a life: its own info moved to final_info
        "final_info": {"life_lost": np.array([False, True, True, False]), "_life_lost": np.array([False, True, True, False])},
    }
    np.testing.assert_array_equal(learning_terminals(terminated, info), np.array([1, 1, 1, 0], np.float32))
    np.testing.assert_array_equal(learning_terminals(terminated, {}), terminated.astype(np.float32))


@pytest.mark.parametrize("env", ["InvertedPendulum-v5", "brax:halfcheetah"])  # Gymnasium's MuJoCo, brax's MJX
def test_a_mujoco_gl_renderer_that_cannot_load_is_one_line(tmp_path, env):
    """MUJOCO_GL=osmesa where libOSMesa is missing made `import mujoco` raise an AttributeError inside PyOpenGL: a
    traceback from any MuJoCo run (a user trial got it from the hint of `populax eval --video`). Now one line,
    exit 2, naming the renderers this machine has."""
    import ctypes.util
    import os
    import subprocess

    from cli_process import cli

    if ctypes.util.find_library("OSMesa"):
        pytest.skip("libOSMesa is installed here: MUJOCO_GL=osmesa loads")
    result = subprocess.run(
        cli("train", "--env", env, "--algo", "td3", "--pop", "2", "--total-steps", "400", "--out",
            str(tmp_path / "run")),
        capture_output=True, text=True, env={**os.environ, "MUJOCO_GL": "osmesa"}, timeout=300)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("populax: error: MUJOCO_GL=osmesa: MuJoCo cannot load that renderer here (")
    assert not (tmp_path / "run").exists()
