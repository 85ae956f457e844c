"""Mixed-shape populations on host environments (Gymnasium Pendulum-v1): each cohort's host backend steps its
own members' envs; a cohort whose members change closes its envs and opens new ones for its members now."""

import json
import subprocess

import jax
import numpy as np
import pytest
from cli_process import cli, wait_for
from test_checkpoint import metrics

from populax.cli import main
from populax.edits import no_edits
from populax.member import member_row, slowest_member_steps
from populax.run.checkpoint import list_checkpoints
from populax.run.config import build_config
from populax.run.resume import load_checkpoint, load_setup
from populax.runtime.setup import init_population, prepare


@pytest.fixture
def host_mixed(tmp_path):
    """4 TD3 members on Gymnasium Pendulum: 0, 1 at 8x8 (cohort 0), 2, 3 at 32x32 (cohort 1); one chunk run."""
    config = build_config([dict(env="gymnasium:Pendulum-v1", algo="td3", pop=4, total_steps=600, eval_every=200,
                                eval_episodes=2, learning_starts=100, batch_size=32, buffer_size=600, seed=1,
                                overlap=False, pbt_cross_cohort="copy", hp={"hidden": "8x8,8x8,32x32,32x32"},
                                out=str(tmp_path / "run"), progress=False, tensorboard=False)])
    setup = prepare(config)
    view = init_population(setup)
    setup.backend.start(view)
    try:
        view, _ = setup.backend.advance(view, 0)
        yield setup, view
    finally:
        setup.backend.stop()


def test_a_member_moved_between_host_cohorts_takes_its_sources_weights_and_keeps_its_buffer_and_keys(host_mixed):
    setup, view = host_mixed
    backend = setup.backend
    before, keys_before = backend.gather(view), backend.extra_state()["collector_keys"]
    assert backend.kind == "host" and keys_before.shape == (4, 2)
    old_narrow, old_wide = backend.backend(0, 2), backend.backend(1, 2)
    # PBT's exploit of member 0 (8x8) from member 3 (32x32), applied where the members live
    edits = no_edits(view.hparams, 4).replace(targets=np.array([0]), sources=np.array([3]), whole=np.array([True]),
                                              cohorts=np.array([1, 0, 1, 1]))
    view = backend.apply_edits(view, view, edits)
    after = backend.gather(view)
    assert after.members("hidden=32x32").tolist() == [0, 2, 3] and after.members("hidden=8x8").tolist() == [1]
    for a, b in zip(jax.tree.leaves(member_row(after, 0).agent), jax.tree.leaves(member_row(before, 3).agent),
                    strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(jax.tree.leaves(member_row(after, 0).experience),
                    jax.tree.leaves(member_row(before, 0).experience), strict=True):
        np.testing.assert_array_equal(a, b)
    # each member keeps its own collector keys through the move; both cohorts' envs were closed and reopened
    np.testing.assert_array_equal(backend.extra_state()["collector_keys"], keys_before)
    assert old_narrow.collector.envs.closed and old_wide.collector.envs.closed
    assert backend.backend(1, 3).collector.envs.num_envs == 3 and backend.backend(0, 1).collector.envs.num_envs == 1
    view, chunk_metrics = backend.advance(view, 1)
    assert np.asarray(chunk_metrics["finite"]).all() and np.asarray(view.env_steps).tolist() == [400] * 4
    assert np.isfinite(backend.evaluate(view, 1)).all()
    assert not np.array_equal(backend.extra_state()["collector_keys"], keys_before)  # collection went on

    # Ctrl-C inside a chunk: the first cohort stops after a block, the second before its first; the driver
    # sees the chunk unfinished (it checkpoints there and a resume continues each cohort where it stands)
    asked = iter([False, True, True])
    view, _ = backend.advance(view, 2, lambda: next(asked))
    steps = np.asarray(view.env_steps)
    assert steps[1] > 400 and steps[[0, 2, 3]].tolist() == [400] * 3 and slowest_member_steps(view) < 600


# A mixed PBT run on the host: members move between the 8x8 and 32x32 cohorts (distilled) every 200 steps
# (static explore 0.5 keeps them moving); --overlap false makes it a function of its seed.
HOST_ARGS = ["--env", "gymnasium:Pendulum-v1", "--algo", "td3", "--pop", "4", "--hp.hidden", "8x8,32x32,8x8,32x32",
             "--total-steps", "2000", "--eval-every", "200", "--learning-starts", "100", "--batch-size", "32",
             "--buffer-size", "2000", "--eval-episodes", "2", "--strategy", "pbt", "--ready-interval", "200",
             "--pbt-cross-cohort", "distill", "--distill-steps", "20", "--pbt-static-explore", "0.5",
             "--hp.lr-actor", "loguniform:1e-4,1e-2", "--overlap", "false", "--checkpoint-every", "200",
             "--keep-checkpoints", "20", "--seed", "2", "--no-progress", "--no-tensorboard", "--no-recipe"]


def lineage(run_dir):
    return [json.loads(line) for line in (run_dir / "lineage.jsonl").read_text().splitlines()]


@pytest.mark.extended  # a long run; make test-extended and CI run it (the default suite resumes a killed mixed run on gymnax, tests/test_cohorts.py)
def test_a_killed_mixed_host_run_resumes_to_the_end_with_each_member_in_its_cohorts_shape(tmp_path, capsys):
    """kill -9 after the third checkpoint, then `populax resume`: until the checkpoint the run is the
    uninterrupted one (seeded: the same moves, returns and metrics); after it, the envs restart from a seed of
    the step (Gymnasium cannot save them, as for any host run), and the run reaches the end, nothing logged
    twice, each member saved in the shape of the cohort the strategy put it in, its collector keys with it;
    `populax eval` reads each cohort's members back."""
    reference, out = tmp_path / "reference", tmp_path / "run"
    assert main(["train", *HOST_ARGS, "--out", str(reference)]) == 0
    moves = [e for e in lineage(reference) if e["old_static"] != e["new_static"]]
    assert moves and any(e["env_step"] <= 600 for e in moves), "no moves before the kill"
    process = subprocess.Popen(cli("train", *HOST_ARGS, "--out", str(out)), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    wait_for(lambda: len(list_checkpoints(out)) >= 3, process)
    process.kill()
    process.communicate()
    assert not (out / "summary.json").exists(), "the run finished before the kill; make it longer"
    resumed_at = json.loads((list_checkpoints(out)[-1] / "manifest.json").read_text())["env_step"]
    upto = [r for r in metrics(out) if r["env_step"] <= resumed_at]
    assert upto == [r for r in metrics(reference) if r["env_step"] <= resumed_at]
    assert [e for e in lineage(out) if e["env_step"] <= resumed_at] == \
           [e for e in lineage(reference) if e["env_step"] <= resumed_at]

    result = subprocess.run(cli("resume", str(out), "--no-progress"), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["backend"] == "host" and summary["env_steps_per_member"] == 2000
    assert [(r["env_step"], r["member"]) for r in metrics(out)] == \
           [(s, m) for s in range(200, 2001, 200) for m in range(4)]
    assert set(summary["cohorts"]["host"]) == set(summary["cohorts"]["members"])
    final = load_checkpoint(load_setup(out))
    assert np.asarray(final.extra["collector_keys"]).shape == (4, 2)
    for label, members in summary["cohorts"]["members"].items():
        width = int(label.split("=")[1].split("x")[0])
        for member in members:
            kernel = member_row(final.population, member).agent.actor["params"]["MLP_0"]["Dense_0"]["kernel"]
            assert kernel.shape[-1] == width, (member, label, kernel.shape)
    # `populax eval` of one member per cohort replays its last evaluation (the run's env seeds for that member)
    for label, members in summary["cohorts"]["members"].items():
        capsys.readouterr()
        assert main(["eval", str(out), "--member", str(members[0]), "--episodes", "2"]) == 0, label
        mean = float(capsys.readouterr().out.split("mean return ")[1].split()[0])
        assert mean == pytest.approx(summary["members"][members[0]]["final_return"], abs=0.02), label
