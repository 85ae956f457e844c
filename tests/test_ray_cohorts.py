"""A mixed-shape population under ``--executor ray`` (issue 25): each worker's block holds part of each cohort.

Run on loopback only, as tests/test_ray.py runs Ray (a network namespace holding only ``lo``).
"""

import json

import numpy as np
import pytest
from test_ray import (
    REASON,
    in_loopback,
    kill_driver_after_checkpoint,
    kill_worker_after_checkpoint,
    populax,
    records,
    run_loopback,
)

from populax.cli import parse_train_args
from populax.member import member_row
from populax.run.resume import load_checkpoint, load_setup
from populax.runtime import prepare, run

pytestmark = pytest.mark.skipif(REASON is not None, reason=f"Ray tests run in a loopback-only namespace: {REASON}")

# Widths alternate, so each worker's block (members 0-3, 4-7) holds both cohorts; static explore (0.5) moves
# exploited members between them every round.
MIXED = ["--env", "Pendulum-v1", "--algo", "td3", "--batch-size", "64", "--learning-starts", "100",
         "--eval-episodes", "2", "--no-recipe", "--no-progress", "--no-tensorboard", "--pop", "8",
         "--total-steps", "1200", "--eval-every", "200", "--ready-interval", "200", "--strategy", "pbt",
         "--hp.lr-actor", "loguniform:1e-4,1e-2", "--hp.hidden", "8x8,32x32,8x8,32x32,8x8,32x32,8x8,32x32",
         "--pbt-cross-cohort", "distill", "--distill-steps", "20", "--pbt-static-explore", "0.5",
         "--checkpoint-every", "200", "--keep-checkpoints", "10", "--seed", "0"]


def decisions(path):
    """What the strategy decided, round by round (fitness values are floats the placement may round apart)."""
    return [(e["env_step"], e["member"], e["source"], e["new_hparams"], e["old_static"], e["new_static"])
            for e in records(path)]


# A long run (a Ray run, its resume and the one-process reference); make test-extended and CI run it. The default
# suite's mixed population on Ray is tests/test_failures.py's (a member frozen on its worker).
@pytest.mark.extended
def test_a_mixed_population_on_two_workers_moves_members_between_cohorts_and_workers(tmp_path):
    """Pop 8 in two cohorts on 2 workers, the driver killed (-9) after its first checkpoint and resumed: the run
    completes with exploits across cohorts *and* workers (the source's worker exports it whole, the target's
    re-creates it by distillation in the new shape), every checkpoint holds each member in its cohort's shape,
    and the strategy decided what one process decides for the same run (the same members, sources,
    hyperparameters and moves: the blocks' programs differ in size, so returns agree to rounding, not bits)."""
    out, reference = tmp_path / "ray", tmp_path / "local"
    train = in_loopback("exec " + populax("train", *MIXED, "--executor", "ray", "--workers", "2", "--out", str(out)))
    kill_driver_after_checkpoint(train, out / "checkpoints" / "chunk_000000")
    resumed_at = 200 * len(list((out / "checkpoints").glob("chunk_*")))  # env step of the newest checkpoint
    run_loopback(populax("resume", str(out), "--no-progress"))
    run(prepare(parse_train_args([*MIXED, "--out", str(reference)])))

    summary = json.loads((out / "summary.json").read_text())
    assert summary["backend"] == "ray" and summary["ray"]["blocks"] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert summary["env_steps_per_member"] == 1200
    assert decisions(out / "lineage.jsonl") == decisions(reference / "lineage.jsonl")
    moves = [e for e in records(out / "lineage.jsonl") if e["old_static"] != e["new_static"]]
    between_workers = [e for e in moves if (e["member"] < 4) != (e["source"] < 4)]
    assert between_workers, moves
    cohorts, expected = summary["cohorts"], json.loads((reference / "summary.json").read_text())["cohorts"]
    assert cohorts["members"] == expected["members"]
    # every re-creation in a new shape was a distillation (8x8 and 32x32 agents never match): one process
    # counts the whole run's; the resumed Ray driver this session's, after the checkpoint it resumed from
    recreated = [e for e in records(out / "lineage.jsonl") if e["old_static"] not in (e["new_static"], None)
                 or e["source_static"] != e["old_static"]]
    assert expected["moves"] == {"copy": 0, "distill": len(recreated), "fresh": 0}
    assert cohorts["moves"]["copy"] == cohorts["moves"]["fresh"] == 0
    assert 0 < cohorts["moves"]["distill"] == sum(e["env_step"] > resumed_at for e in recreated)
    # the workers' members as the checkpoints hold them: each in the shape of the cohort its lineage says
    setup = load_setup(out)
    final = load_checkpoint(setup).population
    widths = {label: int(label.split("=")[1].split("x")[0]) for label in cohorts["members"]}
    for label, members in cohorts["members"].items():
        for member in members:
            kernel = member_row(final, member).agent.actor["params"]["MLP_0"]["Dense_0"]["kernel"]
            assert kernel.shape[-1] == widths[label], (member, label, kernel.shape)
    np.testing.assert_allclose([m["final_return"] for m in summary["members"]],
                               [m["final_return"] for m in json.loads((reference / "summary.json").read_text())["members"]],
                               rtol=0.25)


@pytest.mark.parametrize("env", [
    pytest.param([], marks=pytest.mark.extended),  # make test-extended; CI runs it
    # extended too: the default suite kills a Ray worker of a fixed-shape run (tests/test_ray.py)
    pytest.param(["--env", "gymnasium:Pendulum-v1", "--overlap", "false"], marks=pytest.mark.extended),
], ids=["gymnax", "gymnasium"])
def test_a_killed_worker_of_a_mixed_population_reloads_its_cohorts_from_the_checkpoint(tmp_path, env):
    """kill -9 of a worker after members have moved between cohorts: Ray restarts it, its block reloads from the
    last checkpoint in the cohorts the checkpoint saved (not the initial ones), and the run completes; on
    Gymnasium each worker's cohorts step their members' envs, and the reloaded block its members' collector
    keys."""
    out = tmp_path / "run"
    args = [*MIXED, "--pop", "4", "--hp.hidden", "8x8,32x32,8x8,32x32", "--total-steps", "2000",
            "--executor", "ray", "--workers", "2", "--out", str(out), *env]
    kill_worker_after_checkpoint(in_loopback("exec " + populax("train", *args)), out, "chunk_000003")
    restarts = [r for r in records(out / "ray.jsonl") if r["event"] == "worker_restart"]
    assert len(restarts) == 1 and restarts[0]["members"] == [2, 3] and restarts[0]["reloaded_from"].startswith("chunk_")
    # each reloaded member's cohort as its worker holds it after the reload (what the strategy goes on from)
    reloads = [e for e in records(out / "lineage.jsonl") if e["event"] == "block_reload"]
    assert sorted(e["member"] for e in reloads) == [2, 3]
    assert all(e["cohort"] in ("hidden=8x8", "hidden=32x32") for e in reloads), reloads
    summary = json.loads((out / "summary.json").read_text())
    assert summary["env_steps_per_member"] == 2000 and summary["ray"]["restarts"] == 1
    assert summary["worker_backend"] == ("host" if env else "compiled")
    moves = [e for e in records(out / "lineage.jsonl") if e.get("old_static") not in (None, e.get("new_static"))]
    assert any((e["member"] < 2) != (e["source"] < 2) for e in moves), moves  # between the workers' blocks
    assert all(m["final_return"] is not None for m in summary["members"])
    assert sorted(m for ids in summary["cohorts"]["members"].values() for m in ids) == [0, 1, 2, 3]
    # members had moved before the checkpoint the block reloaded from: it was read in the cohorts it saved
    restored = restarts[0]["restored_env_step"]
    assert any(e["env_step"] <= restored for e in records(out / "lineage.jsonl")
               if e.get("old_static") not in (None, e.get("new_static"))), restored
    checkpoint = load_checkpoint(load_setup(out))
    final = checkpoint.population
    if env:
        assert np.asarray(checkpoint.extra["collector_keys"]).shape == (4, 2)
    for label, members in summary["cohorts"]["members"].items():
        for member in members:
            kernel = member_row(final, member).agent.actor["params"]["MLP_0"]["Dense_0"]["kernel"]
            assert kernel.shape[-1] == int(label.split("=")[1].split("x")[0]), (member, label)
