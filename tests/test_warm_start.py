"""``--init-from RUN``: a new run's members start from another run's members (networks, targets, optimizer
moments, observation statistics, a coupled method's shared state), update counters at 0, the new run's
hyperparameters; every algorithm kind, both kinds of environment, Ray, and a resume that no longer needs the
source. A source that does not fit is one line, exit 2, nothing written."""

import json
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest
from test_failures import members_at

import populax
from populax.cli import main, parse_train_args
from populax.member import member_row
from populax.run.checkpoint import is_key, list_checkpoints, restore
from populax.run.resume import load_checkpoint, load_setup
from populax.runtime import prepare, run

TINY = dict(eval_every=400, total_steps=800, learning_starts=100, hidden=(16, 16), batch_size=32, eval_episodes=2,
            progress=False, tensorboard=False, checkpoint_every=400, keep_checkpoints=5)


def source_population(run_dir: Path):
    """The members a warm start reads: the source's newest checkpoint."""
    return load_checkpoint(load_setup(run_dir)).population


def on_host(tree):
    """``tree`` as numpy arrays, RNG keys as their key data."""
    return jax.tree.map(lambda x: np.asarray(jax.random.key_data(x) if is_key(x) else x), tree)


def first_chunk_members(config: populax.TrainConfig):
    """Train ``config`` and return (its members at the start of the first chunk, on the host, the result)."""
    seen = {}

    def capture(population, chunk):
        if chunk == 0:
            seen["members"] = on_host(population.replace(key=None, env=None))
        return population

    result = run(prepare(config), before_chunk=capture)
    return seen["members"], result


def assert_rows_equal(source_tree, new_tree, rows, skip=("updates",)):
    """Every leaf of ``new_tree``'s member i equals the source's member ``rows[i]`` (``skip``: top-level fields)."""
    names = [name for name in source_tree.__dataclass_fields__ if name not in skip]
    assert names
    for name in names:
        ours, theirs = jax.tree.leaves(getattr(new_tree, name)), jax.tree.leaves(getattr(source_tree, name))
        assert len(ours) == len(theirs)
        for new, old in zip(ours, theirs):
            np.testing.assert_array_equal(new, np.asarray(old)[np.asarray(rows)], err_msg=name)


@pytest.fixture(scope="module")
def td3_source(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("src") / "td3"
    populax.train(populax.TrainConfig(env="Pendulum-v1", algo="td3", pop=3, obs_norm=True, out=str(out), **TINY))
    return out


def test_each_member_starts_from_its_source_member_and_a_resume_no_longer_needs_the_source(td3_source, tmp_path):
    source = source_population(td3_source)
    assert int(np.asarray(source.agent.updates)[0]) > 0
    config = populax.TrainConfig(env="Pendulum-v1", algo="td3", pop=3, obs_norm=True, init_from=str(td3_source),
                                 hp={"lr-actor": 1e-4}, seed=5, out=str(tmp_path / "new"), **TINY)
    members, result = first_chunk_members(config)
    assert_rows_equal(source.agent, members.agent, [0, 1, 2])  # networks, targets, optimizer moments
    assert (members.agent.updates == 0).all()  # schedules span the new run
    for new, old in zip(jax.tree.leaves(members.obs_stats), jax.tree.leaves(source.obs_stats)):
        np.testing.assert_array_equal(new, np.asarray(old))  # the inputs the networks were trained on
    np.testing.assert_allclose(members.hparams.lr_actor, 1e-4)  # the new run's hyperparameters
    assert (members.env_steps == 0).all() and int(np.asarray(members.experience.size).max()) == 0
    record = result.summary["init_from"]
    assert record == {"run": str(td3_source), "checkpoint": list_checkpoints(td3_source)[-1].name,
                      "env_step": 800, "members": [0, 1, 2]}

    # The source may go away: a resume reads only the new run's checkpoint, and ends as the uninterrupted run.
    reference = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    moved = tmp_path / "source-gone"
    shutil.move(str(td3_source), moved)
    try:
        shutil.rmtree(list_checkpoints(result.run_dir)[-1])  # back to the checkpoint after the first chunk
        assert main(["resume", str(result.run_dir), "--no-progress"]) == 0
    finally:
        shutil.move(str(moved), td3_source)
    resumed = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [{k: v for k, v in r.items() if k != "wall_time_s"} for r in resumed] == \
        [{k: v for k, v in r.items() if k != "wall_time_s"} for r in reference]
    assert json.loads((result.run_dir / "summary.json").read_text())["init_from"] == record


def test_every_member_takes_the_best_member_on_a_host_environment(tmp_path):
    source_dir = tmp_path / "dqn"
    populax.train(populax.TrainConfig(env="gymnasium:CartPole-v1", algo="dqn", pop=2, out=str(source_dir), **TINY))
    checkpoint = load_checkpoint(load_setup(source_dir))
    best = int(np.nanargmax(checkpoint.manifest["returns"]))
    config = populax.TrainConfig(env="gymnasium:CartPole-v1", algo="dqn", pop=3, init_from=str(source_dir),
                                 init_member="best", out=str(tmp_path / "new"), **TINY)
    members, result = first_chunk_members(config)
    assert_rows_equal(checkpoint.population.agent, members.agent, [best] * 3)
    assert result.summary["backend"] == "host" and result.summary["init_from"]["members"] == [best] * 3


@pytest.mark.parametrize("algo, env", [("ppo", "CartPole-v1"), ("cemrl", "Pendulum-v1")])
def test_an_on_policy_and_a_coupled_population_start_from_the_source(tmp_path, algo, env):
    source_dir = tmp_path / algo
    replay = ("batch_size", "learning_starts")  # PPO has none (it would warn that they are unused)
    settings = {**TINY, "learning_starts": 0} if algo == "cemrl" else {k: v for k, v in TINY.items() if k not in replay}
    options = {"rollout-len": 50} if algo == "ppo" else {}
    populax.train(populax.TrainConfig(env=env, algo=algo, pop=2, algo_options=options, out=str(source_dir),
                                      **settings))
    source = source_population(source_dir)
    config = populax.TrainConfig(env=env, algo=algo, pop=2, algo_options=options, init_from=str(source_dir),
                                 init_member="1" if algo == "ppo" else "each", out=str(tmp_path / "new"), **settings)
    members, _ = first_chunk_members(config)
    rows = [1, 1] if algo == "ppo" else [0, 1]
    assert_rows_equal(source.agent, members.agent, rows)
    assert (members.agent.updates == 0).all()
    if algo == "cemrl":  # the shared critic and the CEM distribution are the population's; the RNG key the new seed's
        pairs = list(zip(jax.tree.leaves(members.shared), jax.tree.leaves(source.shared)))
        assert len(pairs) > 5
        for new, old in pairs:
            if is_key(old):
                assert not np.array_equal(new, np.asarray(jax.random.key_data(old)))
            else:
                np.testing.assert_array_equal(new, np.asarray(old))


@pytest.mark.parametrize("args, fragment", [
    (["--hidden", "32,32"], "--init-from: algorithm state"),
    (["--algo", "sac"], "--init-from: the source run trained td3, this run sac"),
    (["--pop", "4"], "--init-member each: the source run has 3 members, this run 4"),
    (["--init-member", "7"], "--init-member: the source run has members 0..2 (got 7)"),
    (["--init-member", "worst"], "--init-member: 'worst' is not one of"),
    (["--obs-norm", "false"], "--init-from: the source run has --obs-norm true, this run false"),
    (["--hp.hidden", "16x16,32x32,16x16"], "--init-from: member 1's algorithm state"),
])
def test_a_source_that_does_not_fit_is_one_line_exit_2_nothing_written(td3_source, tmp_path, capsys, args, fragment):
    out = tmp_path / "new"
    # the source's 16,16, unless the cell gives a network per member (--hidden beside it is named as ignored)
    hidden = [] if "--hp.hidden" in args else ["--hidden", "16,16"]
    base = ["train", "--env", "Pendulum-v1", "--algo", "td3", "--pop", "3", *hidden, "--obs-norm", "true",
            "--total-steps", "800", "--eval-every", "400", "--learning-starts", "100", "--init-from", str(td3_source),
            "--no-recipe",
            "--no-progress", "--out", str(out)]
    assert main([*base, *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and fragment in err[0], err
    assert not out.exists()


def test_a_directory_that_is_not_a_run_is_refused(tmp_path, capsys):
    assert main(["train", "--init-from", str(tmp_path), "--out", str(tmp_path / "new"), "--no-progress"]) == 2
    assert f"--init-from: {tmp_path} is not a populax run directory" in capsys.readouterr().err  # not "RUN:"
    assert not (tmp_path / "new").exists()


def agents_of(population, members) -> list[list[np.ndarray]]:
    """Each member's algorithm state leaves but the update counter (a mixed-shape population's from its cohort)."""
    return [[np.asarray(x) for x in jax.tree.leaves(member_row(population, m).agent.replace(updates=0))]
            for m in members]


@pytest.mark.extended  # make test-extended; CI runs it (a mixed target of a one-shape source stays in the default suite)
def test_a_mixed_shape_run_starts_member_by_member_from_a_mixed_shape_source(tmp_path):
    """Two widths on both sides: each member takes its source member in its own cohort's shape (a width-32 member
    from a width-32 member); a one-width run takes the one source member of its width (--init-member 2); a
    member of the other width is one line naming both members. No update in the new runs' first chunk
    (learning starts at its end): their first checkpoints hold the members as they started."""
    widths = {"hidden": "16x16,16x16,32x32,32x32"}
    source_dir = tmp_path / "source"
    populax.train(populax.TrainConfig(env="Pendulum-v1", algo="td3", pop=4, hp=widths, out=str(source_dir), **TINY))
    source = source_population(source_dir)
    settings = {**TINY, "learning_starts": 400}
    mixed = populax.train(populax.TrainConfig(env="Pendulum-v1", algo="td3", pop=4, hp=widths, init_from=str(source_dir),
                                              out=str(tmp_path / "mixed"), **settings))
    assert mixed.summary["init_from"]["members"] == [0, 1, 2, 3] and mixed.summary["env_steps_per_member"] == 800
    assert mixed.summary["cohorts"]["members"] == {"hidden=16x16": [0, 1], "hidden=32x32": [2, 3]}
    started = members_at(tmp_path / "mixed", 0, tmp_path)
    for new, old in zip(agents_of(started, range(4)), agents_of(source, range(4)), strict=True):
        for a, b in zip(new, old, strict=True):
            np.testing.assert_array_equal(a, b)
    assert all(int(member_row(started, m).agent.updates) == 0 for m in range(4))

    one = populax.train(populax.TrainConfig(env="Pendulum-v1", algo="td3", pop=2, hidden=(32, 32),
                                            init_from=str(source_dir), init_member="2", out=str(tmp_path / "one"),
                                            **{k: v for k, v in settings.items() if k != "hidden"}))
    assert one.summary["init_from"]["members"] == [2, 2]
    started = members_at(tmp_path / "one", 0, tmp_path)
    for m in range(2):
        for a, b in zip(agents_of(started, [m])[0], agents_of(source, [2])[0], strict=True):
            np.testing.assert_array_equal(a, b)
    with pytest.raises(populax.ConfigError, match=r"member 0's algorithm state.*hidden=16x16 \(its member 0\), "
                                                  r"this run's member 0 has --hidden 32,32"):
        populax.train(populax.TrainConfig(env="Pendulum-v1", algo="td3", pop=2, hidden=(32, 32),
                                          init_from=str(source_dir), init_member="0", out=str(tmp_path / "bad"),
                                          **{k: v for k, v in settings.items() if k != "hidden"}))
    assert not (tmp_path / "bad").exists()


@pytest.mark.extended
@pytest.mark.parametrize("env, algo, hp, compared", [
    ("gymnasium:Pendulum-v1", "td3", {}, None),  # the host backend's cohorts
    ("Pendulum-v1", "sac", {}, None),
    ("CartPole-v1", "dqn", {}, None),
    # PPO updates from its first rollout on: a learning rate of 0 keeps the networks as they started (the
    # optimizer's moments still move), so its networks are what is compared.
    ("Pendulum-v1", "ppo", {"lr": 0}, "params"),
])
def test_a_mixed_shape_warm_start_takes_each_member_in_its_shape_for_every_algorithm_and_the_host(
        tmp_path, env, algo, hp, compared):
    """The mixed -> mixed warm start of the TD3 test above, on the other algorithms and on a Gymnasium (host) run."""
    widths = {"hidden": "16x16,16x16,32x32,32x32"}
    source_dir = tmp_path / "source"
    populax.train(populax.TrainConfig(env=env, algo=algo, pop=4, hp=widths, out=str(source_dir), **TINY))
    source = source_population(source_dir)
    new = populax.train(populax.TrainConfig(env=env, algo=algo, pop=4, hp={**widths, **hp}, init_from=str(source_dir),
                                            out=str(tmp_path / "new"), **{**TINY, "learning_starts": 400}))
    assert new.summary["init_from"]["members"] == [0, 1, 2, 3]
    assert new.summary["backend"] == ("host" if env.startswith("gymnasium:") else "compiled")
    started = members_at(tmp_path / "new", 0, tmp_path)
    for m in range(4):
        ours, theirs = member_row(started, m).agent, member_row(source, m).agent
        if compared:
            ours, theirs = getattr(ours, compared), getattr(theirs, compared)
        else:
            ours, theirs = ours.replace(updates=0), theirs.replace(updates=0)
        for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs), strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_members_differing_in_batch_size_all_start_from_a_one_shape_source(td3_source, tmp_path):
    """A static setting that leaves the networks' shapes alone (--hp.batch-size) makes cohorts of one network
    shape: every member starts from its source member, observation statistics included (these take in every
    observation acted on, so the first checkpoint's have the first chunk's too)."""
    config = populax.TrainConfig(env="Pendulum-v1", algo="td3", pop=3, obs_norm=True, init_from=str(td3_source),
                                 hp={"batch-size": "16,32,32"}, out=str(tmp_path / "new"),
                                 **{**TINY, "learning_starts": 400})
    result = populax.train(config)
    assert result.summary["cohorts"]["members"] == {"batch-size=16": [0], "batch-size=32": [1, 2]}
    source, started = source_population(td3_source), members_at(tmp_path / "new", 0, tmp_path)
    for m in range(3):
        for a, b in zip(agents_of(started, [m])[0], agents_of(source, [m])[0], strict=True):
            np.testing.assert_array_equal(a, b)
        # the statistics went on from the source member's: its count and the first chunk's 400 observations
        count = float(member_row(source, m).obs_stats.count)
        assert count > 400 and float(member_row(started, m).obs_stats.count) == count + 400


@pytest.mark.extended
def test_ray_workers_start_from_the_source_members(td3_source, tmp_path):
    from test_ray import REASON, run_loopback
    from test_ray import populax as ray_cli

    if REASON is not None:
        pytest.skip(f"Ray runs in a loopback-only namespace: {REASON}")
    out = tmp_path / "ray"
    # No update in the first chunk (learning starts at its end): its checkpoint holds the members as they started.
    run_loopback(ray_cli("train", "--env", "Pendulum-v1", "--algo", "td3", "--pop", "3", "--hidden", "16,16",
                         "--obs-norm", "true", "--total-steps", "800", "--eval-every", "400", "--learning-starts", "400",
                         "--batch-size", "32", "--eval-episodes", "2", "--checkpoint-every", "400",
                         "--keep-checkpoints", "5", "--executor", "ray", "--workers", "2", "--init-from", str(td3_source),
                         "--init-member", "best", "--no-recipe", "--no-progress", "--no-tensorboard", "--out", str(out)))
    summary = json.loads((out / "summary.json").read_text())
    best = summary["init_from"]["members"][0]
    assert summary["backend"] == "ray" and summary["init_from"]["members"] == [best] * 3
    setup = load_setup(out)
    first = restore(list_checkpoints(out)[0], jax.eval_shape(lambda: populax.runtime.init_population(setup)))
    assert first.manifest["env_step"] == 400
    assert_rows_equal(source_population(td3_source).agent, on_host(first.population.agent), [best] * 3)


@pytest.mark.extended
def test_a_ray_worker_dying_before_the_first_checkpoint_of_a_warm_start_reloads_the_warm_members(td3_source, tmp_path):
    """Before a warm-started Ray run's first checkpoint, a dead worker's block reloads the source's members (a
    fresh draw until the twentieth session: untrained members, silently) and catches up: every logged return
    equals the same warm start in one process (chunked:2)."""
    from test_ray import REASON, dying_train, logged_returns, records, run_loopback

    if REASON is not None:
        pytest.skip(f"Ray runs in a loopback-only namespace: {REASON}")
    out, reference = tmp_path / "ray", tmp_path / "local"
    args = ["--env", "Pendulum-v1", "--algo", "td3", "--pop", "4", "--hidden", "16,16", "--obs-norm", "true",
            "--total-steps", "800", "--eval-every", "200", "--learning-starts", "100", "--batch-size", "32",
            "--eval-episodes", "2", "--checkpoint-every", "800", "--init-from", str(td3_source), "--init-member",
            "best", "--no-recipe", "--no-progress", "--no-tensorboard", "--seed", "3"]
    run_loopback(dying_train(tmp_path, "advance", 400, *args, "--executor", "ray", "--workers", "2", "--out", str(out)))
    restarts = [r for r in records(out / "ray.jsonl") if r["event"] == "worker_restart"]
    assert [(r["worker"], r["reloaded_from"], r["restored_env_step"]) for r in restarts] == [(1, "start", 0)]
    run(prepare(parse_train_args([*args, "--executor", "chunked:2", "--out", str(reference)])))
    got, expected = logged_returns(out), logged_returns(reference)
    assert [g[:2] for g in got] == [e[:2] for e in expected] and len(got) == 4 * 4
    np.testing.assert_allclose([g[2] for g in got], [e[2] for e in expected], rtol=1e-5)


@pytest.mark.extended
@pytest.mark.parametrize("env", ["Pendulum-v1", "gymnasium:Pendulum-v1"])
def test_ray_workers_start_a_mixed_shape_run_from_a_mixed_shape_source(tmp_path, env):
    """Each worker's block holds part of both widths; every member starts from its source member; compiled and
    host (Gymnasium) workers."""
    from test_ray import REASON, run_loopback
    from test_ray import populax as ray_cli

    if REASON is not None:
        pytest.skip(f"Ray runs in a loopback-only namespace: {REASON}")
    widths = "16x16,32x32,32x32,16x16"
    source_dir, out = tmp_path / "source", tmp_path / "ray"
    populax.train(populax.TrainConfig(env=env, algo="td3", pop=4, hp={"hidden": widths},
                                      out=str(source_dir), **TINY))
    run_loopback(ray_cli("train", "--env", env, "--algo", "td3", "--pop", "4", "--hp.hidden", widths,
                         "--total-steps", "800", "--eval-every", "400", "--learning-starts", "400",
                         "--batch-size", "32", "--eval-episodes", "2", "--checkpoint-every", "400",
                         "--keep-checkpoints", "5", "--executor", "ray", "--workers", "2", "--init-from",
                         str(source_dir), "--no-recipe", "--no-progress", "--no-tensorboard", "--out", str(out)))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["backend"] == "ray" and summary["init_from"]["members"] == [0, 1, 2, 3]
    started, source = members_at(out, 0, tmp_path), source_population(source_dir)
    for new, old in zip(agents_of(started, range(4)), agents_of(source, range(4)), strict=True):
        for a, b in zip(new, old, strict=True):
            np.testing.assert_array_equal(a, b)


@pytest.mark.extended
@pytest.mark.parametrize("algo, env, strategy", [("sac", "Pendulum-v1", "pbt"), ("dvd-td3", "Pendulum-v1", "independent"),
                                                 ("ppo", "gymnasium:CartPole-v1", "pb2")])
def test_the_other_algorithms_and_strategies_start_from_the_source(tmp_path, algo, env, strategy):
    """The rest of the matrix: SAC (its temperature is state too) under PBT, DvD-TD3 (shared critic), PPO on a
    host environment under PB2; each warm-started run then trains to its end."""
    settings = {**TINY, "total_steps": 1200}
    if algo == "ppo":
        settings = {k: v for k, v in settings.items() if k not in ("batch_size", "learning_starts")}
    options = {"rollout-len": 50} if algo == "ppo" else {}
    explore = {} if strategy == "independent" else {"strategy": strategy, "ready_interval": 400,
                                                    "hp": {"gamma": "uniform:0.95,0.99"}}
    source_dir = tmp_path / "source"
    populax.train(populax.TrainConfig(env=env, algo=algo, pop=4, algo_options=options, out=str(source_dir), **settings))
    source = source_population(source_dir)
    config = populax.TrainConfig(env=env, algo=algo, pop=4, algo_options=options, init_from=str(source_dir),
                                 out=str(tmp_path / "new"), **explore, **settings)
    members, result = first_chunk_members(config)
    assert_rows_equal(source.agent, members.agent, [0, 1, 2, 3])
    assert (members.agent.updates == 0).all()
    if source.shared is not None:
        for new, old in zip(jax.tree.leaves(members.shared), jax.tree.leaves(source.shared)):
            if not is_key(old):
                np.testing.assert_array_equal(new, np.asarray(old))
    assert result.summary["env_steps_per_member"] == 1200 and result.summary["init_from"]["members"] == [0, 1, 2, 3]
