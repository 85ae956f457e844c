"""--obs-norm on compiled (JAX) environments, as on the host: running per-member statistics inside the chunk,
the policy acting, learning, evaluating and distilling on standardised observations, the statistics in
checkpoints. (The host path's statistics: tests/test_host_envs.py, its resume: tests/test_host_resume.py.)"""

import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_checkpoint import assert_same_run
from test_cohorts import mixed_setup, move_member_0_to_the_wide_cohort
from test_learning import recipe_config

import populax
from populax.buffers import buffer_sample
from populax.cli import main
from populax.loop.distill import output_distance
from populax.member import member_row
from populax.obs_norm import RunningStats, normalize
from populax.run.checkpoint import list_checkpoints
from populax.run.resume import resume

FIRST_COUNT = 1e-4
"""The statistics' count before any observation (``obs_norm.stats_init``)."""


def compiled_run(out, **settings) -> populax.TrainResult:
    """A short run with --obs-norm on a gymnax environment."""
    config = dict(env="Pendulum-v1", algo="td3", pop=2, total_steps=1500, eval_every=500, eval_episodes=3,
                  hidden=(32, 32), seed=2, obs_norm=True, checkpoint_every=500, keep_checkpoints=3, out=str(out),
                  progress=False, tensorboard=False)
    if settings.get("algo", "td3") != "ppo":  # the replay's settings (PPO would warn that it never reads them)
        config.update(learning_starts=200, batch_size=64)
    return populax.train(populax.TrainConfig(**{**config, **settings}))


@pytest.fixture(scope="module")
def td3_run(tmp_path_factory):
    return compiled_run(tmp_path_factory.mktemp("td3") / "run")


def test_off_policy_statistics_are_those_of_every_observation_acted_on(td3_run):
    """Every observation a member acted on is in its replay (capacity >= the run), so its statistics must be
    that replay's mean and variance; each member keeps its own."""
    population = td3_run.population
    stats, replay = population.obs_stats, population.experience
    for member in range(2):
        stored = np.asarray(replay.data.obs[member][: int(replay.size[member])], np.float64)
        assert stored.shape[0] == int(population.env_steps[member]) == 1500
        np.testing.assert_allclose(float(stats.count[member]), 1500 + FIRST_COUNT, rtol=1e-6)
        np.testing.assert_allclose(stats.mean[member], stored.mean(axis=0), rtol=1e-3, atol=1e-4)
        np.testing.assert_allclose(stats.var[member], stored.var(axis=0), rtol=1e-3, atol=1e-4)
    assert not np.allclose(stats.mean[0], stats.mean[1])


def test_on_policy_statistics_take_in_each_rollout(tmp_path):
    result = compiled_run(tmp_path / "run", env="CartPole-v1", algo="ppo", total_steps=1024, eval_every=512)
    stats = result.population.obs_stats
    steps = np.asarray(result.population.env_steps)
    np.testing.assert_allclose(np.asarray(stats.count), steps + FIRST_COUNT, rtol=1e-6)
    assert np.all(np.asarray(stats.var) != 1.0)  # moved off the initial variance in every dimension


def test_eval_standardises_with_the_saved_statistics(td3_run, capsys):
    """`populax eval` replays the run's last evaluation only if it standardises as training did."""
    for member in range(2):
        capsys.readouterr()
        assert main(["eval", str(td3_run.run_dir), "--member", str(member), "--episodes", "3"]) == 0
        mean = float(capsys.readouterr().out.split("mean return ")[1].split()[0])
        assert mean == pytest.approx(float(td3_run.returns[member]), abs=0.02)


def test_a_resumed_obs_norm_run_equals_the_uninterrupted_one(td3_run, tmp_path):
    """The statistics are member state: a resume from the second-newest checkpoint (the newest one removed,
    as a crash before it would leave the run) ends bitwise where the uninterrupted run ended."""
    out = tmp_path / "run"
    shutil.copytree(td3_run.run_dir, out)
    (out / "summary.json").unlink()
    shutil.rmtree(list_checkpoints(out)[-1])
    assert resume(out).returns.tolist() == td3_run.returns.tolist()
    assert_same_run(out, td3_run.run_dir)


def test_obs_norm_sac_learns_pendulum_on_the_compiled_backend(tmp_path):
    """SAC's tuned Pendulum recipe with --obs-norm: median final return >= -300 (population 4) after 10k env
    steps per member (measured: -190 with and without --obs-norm on both backends; at 6k, where
    tests/test_learning.py checks it without, the moving statistics still hold it back: -405)."""
    config = recipe_config("sac", "Pendulum-v1", tmp_path, total_steps=10_000, eval_every=5_000, obs_norm=True)
    result = populax.train(config)
    assert np.median(result.returns) >= -300, result.returns
    assert float(np.min(result.population.obs_stats.count)) >= 10_000  # the statistics really were in use


def test_distillation_standardises_the_replay_with_the_teachers_statistics(tmp_path):
    """The teacher acts on standardised observations and the student inherits its statistics, so the student
    must learn the teacher's answers to the standardised replay. Statistics far from identity (mean 3,
    std 0.5) make a distillation on raw observations answer on other inputs than the ones it will see."""
    setup, view = mixed_setup(tmp_path, pbt_cross_cohort="distill", distill_steps=300, obs_norm=True)
    backend = setup.backend
    wide = backend.blocks[1]
    skewed = RunningStats(mean=jnp.full_like(wide.obs_stats.mean, 3.0), var=jnp.full_like(wide.obs_stats.var, 0.25),
                          count=wide.obs_stats.count)
    backend.blocks[1] = wide.replace(obs_stats=skewed)
    before = backend.gather(view)
    after = move_member_0_to_the_wide_cohort(setup, view)
    agent = backend.agent_of(1)
    source, moved = member_row(before, 3), member_row(after, 0)
    stats = moved.obs_stats
    for a, b in zip(jax.tree.leaves(stats), jax.tree.leaves(source.obs_stats), strict=True):
        np.testing.assert_array_equal(a, b)  # the moved member acts with its source's statistics
    fresh = jax.tree.map(lambda x: x[0], backend.backend(1, 1).init_agents(jax.random.split(jax.random.key(9), 1),
                                                                            jax.tree.map(lambda x: x[:1], view.hparams)))
    batch = buffer_sample(member_row(before, 1).experience, jax.random.key(4), 512)
    held_out = batch._replace(obs=normalize(stats, batch.obs), next_obs=normalize(stats, batch.next_obs))
    distance = {name: float(output_distance(agent, state, agent, source.agent, held_out))
                for name, state in (("distilled", moved.agent), ("fresh", fresh))}
    # measured: 0.002 x fresh; 0.027 x fresh when the replay is distilled raw
    assert distance["distilled"] < 0.01 * distance["fresh"], distance


def test_coupled_methods_refuse_obs_norm_in_one_line(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--algo", "cemrl", "--no-recipe", "--obs-norm", "true", "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "--obs-norm: cemrl does not normalise" in err and len(err.splitlines()) == 1, err
    assert not out.exists()
