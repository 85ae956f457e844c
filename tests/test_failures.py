"""A member that diverges (NaN) in a mixed-shape population is handled in its cohort: frozen, re-initialised or
replaced, on compiled and host environments and on Ray workers.

The divergence comes from inside the member's own update (``tests/diverging_td3.py``: TD3 whose state turns NaN
once a member has done ``--hp.diverge-at`` critic updates), as a real member's does: the driver's fault hook
cannot reach a mixed population's members, which live in their cohorts' blocks.
"""

import json
import shlex
import shutil
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from test_ray import REASON, records, run_loopback

from populax import TrainConfig, train
from populax.member import member_row
from populax.run.resume import load_checkpoint, load_setup

TESTS = Path(__file__).resolve().parent
# Member 2 (the 32x32 cohort, with member 3) diverges at its 300th update: learning starts at env step 100, one
# update per step, so inside chunk 1 (steps 200-400); the others never do.
SETTINGS = dict(env="Pendulum-v1", algo="py:diverging_td3:DIVERGING_TD3", pop=4, total_steps=800, eval_every=200,
                batch_size=32, learning_starts=100, eval_episodes=2, checkpoint_every=200, keep_checkpoints=10,
                seed=0, hp={"hidden": "16x16,16x16,32x32,32x32", "diverge-at": "1e9,1e9,300,1e9"},
                progress=False, tensorboard=False)


def events(run_dir: Path) -> list[tuple]:
    return [(e["event"], e["member"], e["env_step"]) for e in records(run_dir / "lineage.jsonl")]


def members_at(run_dir: Path, chunk: int, scratch: Path):
    """The run's members (a ``Cohorts``) as checkpoint ``chunk_{chunk}`` holds them: loaded from a copy of the run
    without its newer checkpoints."""
    copy = scratch / f"{run_dir.name}_at_{chunk}"
    shutil.copytree(run_dir, copy)
    for newer in sorted((copy / "checkpoints").glob("chunk_*"))[chunk + 1:]:
        shutil.rmtree(newer)
    return load_checkpoint(load_setup(copy)).population


def agent(cohorts, member: int) -> list[np.ndarray]:
    return [np.asarray(leaf) for leaf in jax.tree.leaves(member_row(cohorts, member).agent)]


def check_frozen(run_dir: Path, scratch: Path) -> None:
    """Member 2 frozen after chunk 1 in its cohort: its weights chunk 0's to the end, its cohort-mate trained on,
    every member finite, the per-member list of --hp.diverge-at each member's."""
    assert events(run_dir) == [("freeze", 2, 400)]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["lineage_events"] == {"freeze": 1} and summary["env_steps_per_member"] == 800
    assert summary["cohorts"]["members"] == {"hidden=16x16": [0, 1], "hidden=32x32": [2, 3]}
    assert [m["hparams"]["diverge-at"] for m in summary["members"]] == [1e9, 1e9, 300, 1e9]
    assert all(m["final_return"] is not None for m in summary["members"])
    before, final = members_at(run_dir, 0, scratch), members_at(run_dir, 3, scratch)
    for got, frozen in zip(agent(final, 2), agent(before, 2), strict=True):
        np.testing.assert_array_equal(got, frozen)
    assert not all(np.array_equal(a, b) for a, b in zip(agent(final, 3), agent(before, 3)))
    assert all(np.isfinite(leaf).all() for m in range(4) for leaf in agent(final, m) if leaf.dtype.kind == "f")


@pytest.mark.parametrize("env", ["Pendulum-v1", pytest.param("gymnasium:Pendulum-v1", marks=pytest.mark.extended)])
def test_a_diverging_member_of_a_mixed_population_is_frozen_in_its_cohort(tmp_path, env):
    """--on-failure freeze, one process: compiled (gymnax) and host (Gymnasium) cohorts."""
    run_dir = tmp_path / "run"
    train(TrainConfig(**{**SETTINGS, "env": env}, on_failure="freeze", out=str(run_dir)))
    check_frozen(run_dir, tmp_path)


@pytest.mark.extended  # make test-extended; CI runs it
@pytest.mark.parametrize("strategy, kind", [("independent", "reinit"), ("pbt", "replace_failed")])
def test_a_diverging_member_of_a_mixed_population_is_reinitialised_or_replaced(tmp_path, strategy, kind):
    """--on-failure reinit re-creates member 2 in its own cohort's shape; PBT replaces it with a copy of a top
    member (its weights, whatever cohort that is). Either way the run ends with every member finite."""
    run_dir = tmp_path / "run"
    train(TrainConfig(**SETTINGS, strategy=strategy, on_failure="reinit", out=str(run_dir)))
    first = records(run_dir / "lineage.jsonl")[0]
    assert (first["event"], first["member"], first["env_step"]) == (kind, 2, 400)
    at_failure, before = members_at(run_dir, 1, tmp_path), members_at(run_dir, 0, tmp_path)
    if kind == "replace_failed":
        for got, source in zip(agent(at_failure, 2), agent(at_failure, first["source"]), strict=True):
            np.testing.assert_array_equal(got, source)
    else:  # a fresh init: finite, in the 32x32 shape, unlike its state before the failure
        assert [a.shape for a in agent(at_failure, 2)] == [a.shape for a in agent(before, 2)]
        assert not all(np.array_equal(a, b) for a, b in zip(agent(at_failure, 2), agent(before, 2)))
    final = members_at(run_dir, 3, tmp_path)
    assert all(np.isfinite(leaf).all() for m in range(4) for leaf in agent(final, m) if leaf.dtype.kind == "f")


def test_when_every_member_of_a_pbt_population_fails_they_start_again_and_the_user_is_told(tmp_path, capsys):
    """PBT replaces a failed member with a copy of a healthy one; when all failed at once there was none, and
    nothing happened: no event, no line, NaN members trained on to the end and the run exited 0. Now they are
    re-initialised (their counters too: they diverge again 300 updates later), stderr says so per chunk, and
    the report has a Failures paragraph. The end table printed "return -inf" (summary.json: null)."""
    from populax.cli import main

    run_dir = tmp_path / "run"
    assert main(["train", "--env", "Pendulum-v1", "--algo", SETTINGS["algo"], "--pop", "2", "--total-steps", "800",
                 "--eval-every", "200", "--batch-size", "32", "--learning-starts", "100", "--eval-episodes", "2",
                 "--hp.diverge-at", "300", "--strategy", "pbt", "--seed", "0", "--no-progress", "--no-tensorboard",
                 "--out", str(run_dir)]) == 0
    assert events(run_dir) == [("reinit", 0, 400), ("reinit", 1, 400), ("reinit", 0, 800), ("reinit", 1, 800)]
    out, err = capsys.readouterr()
    assert "every member failed in the last chunk (lineage.jsonl)" in out, out
    for step in ("400", "800"):
        assert (f"populax: warning: failed in the chunk to env step {step} (parameters, a loss or the return not "
                f"finite): member 0 re-initialised; member 1 re-initialised") in err, err
    final = load_checkpoint(load_setup(run_dir))
    assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(final.population.agent) if leaf.dtype.kind == "f")
    # Re-initialised at the end: no fitness window, and no baseline PB2 would measure a fresh agent's gain from
    assert final.strategy["history"] == [[], []] and final.strategy["baseline"] == [None, None]
    report = (run_dir / "report" / "report.md").read_text()
    assert ("**Failures:** 4 times a member's parameters, a loss or its return were not finite after a chunk "
            "(member 0 2x, member 1 2x; first at 400 env steps per member); each is a `reinit` event") in report


@pytest.mark.skipif(REASON is not None, reason=f"Ray tests run in a loopback-only namespace: {REASON}")
@pytest.mark.parametrize("env", ["Pendulum-v1", pytest.param("gymnasium:Pendulum-v1", marks=pytest.mark.extended)])
def test_a_diverging_member_of_a_mixed_population_on_ray_is_frozen_on_its_worker(tmp_path, env):
    """The same run on 2 Ray workers (each block holds part of both cohorts): member 2 frozen on worker 1;
    compiled and host (Gymnasium) workers."""
    run_dir = tmp_path / "run"
    args = ["--env", env, "--algo", SETTINGS["algo"], "--pop", "4", "--total-steps", "800",
            "--eval-every", "200", "--batch-size", "32", "--learning-starts", "100", "--eval-episodes", "2",
            "--checkpoint-every", "200", "--keep-checkpoints", "10", "--seed", "0",
            "--hp.hidden", "16x16,32x32,32x32,16x16", "--hp.diverge-at", "1e9,1e9,300,1e9", "--on-failure", "freeze",
            "--no-recipe", "--no-progress", "--no-tensorboard", "--executor", "ray", "--workers", "2",
            "--out", str(run_dir)]
    # As a user runs it: the `populax` command in the directory holding the algorithm's module, which the command
    # and every Ray worker find there (a console script does not put the directory on sys.path by itself).
    command = shlex.join([str(Path(sys.executable).parent / "populax"), "train", *args])
    run_loopback(f"cd {shlex.quote(str(TESTS))} && {command}")
    assert events(run_dir) == [("freeze", 2, 400)]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["backend"] == "ray" and summary["ray"]["blocks"] == [[0, 1], [2, 3]]
    assert summary["cohorts"]["members"] == {"hidden=16x16": [0, 3], "hidden=32x32": [1, 2]}
    before, final = members_at(run_dir, 0, tmp_path), members_at(run_dir, 3, tmp_path)
    for got, frozen in zip(agent(final, 2), agent(before, 2), strict=True):
        np.testing.assert_array_equal(got, frozen)
    assert not all(np.array_equal(a, b) for a, b in zip(agent(final, 1), agent(before, 1)))
    assert all(np.isfinite(leaf).all() for m in range(4) for leaf in agent(final, m) if leaf.dtype.kind == "f")
