"""Mixed-shape populations (issue 25): static settings per member, cohorts, moves between them, resume."""

import json
import random
import re
import subprocess
import time

import jax
import numpy as np
import pytest
from cli_process import cli, wait_for
from flax import serialization
from matrix import matrix_cells
from test_checkpoint import _leaves, metrics

import populax
from populax.buffers import buffer_sample
from populax.cli import main
from populax.cohorts import StaticSpace, parse_static, split_static
from populax.edits import no_edits
from populax.errors import ConfigError
from populax.loop.distill import output_distance
from populax.member import Cohorts, member_row
from populax.run.checkpoint import STATE_FILE, list_checkpoints
from populax.run.config import FIELDS, build_config
from populax.runtime.setup import init_population, prepare

MIXED = {"hidden": "8x8,8x8,32x32,32x32"}


def test_static_settings_parse_per_member_and_as_choices():
    assert parse_static("hidden", "choice:64x64,256x256", 8) == ("choice", ((64, 64), (256, 256)))
    assert parse_static("batch_size", "64,64,256,256", 4) == ("list", (64, 64, 256, 256))
    assert parse_static("hidden", [[8, 8], [32]], 2) == ("list", ((8, 8), (32,)))
    assert parse_static("hidden", [[32], [32]], 2) == ("list", ((32,), (32,)))  # one layer each, unmistakably
    assert parse_static("n_step", 3, 4) == ("const", (3,))
    static, traced = split_static({"hidden": "choice:8x8,32x32", "lr-actor": "1e-3"}, 4, FIELDS)
    assert list(static) == ["hidden"] and traced == {"lr-actor": "1e-3"}
    space = StaticSpace({"hidden": static["hidden"], "batch_size": parse_static("batch_size", "choice:32,64", 4)})
    assert space.labels == ("hidden=8x8 batch-size=32", "hidden=8x8 batch-size=64",
                            "hidden=32x32 batch-size=32", "hidden=32x32 batch-size=64")
    first = space.assign(jax.random.key(0), 16)
    np.testing.assert_array_equal(first, space.assign(jax.random.key(0), 16))  # seeded
    assert set(first.tolist()) == {0, 1, 2, 3}
    # explore moves one setting to a neighbouring value (probability 1: every setting moves)
    assert space.explore(0, jax.random.key(1), 1.0) == 3
    assert space.explore(2, jax.random.key(1), 0.0) == 2


@pytest.mark.parametrize("hp, fragment", [
    ({"algo": "choice:td3,sac"}, "--hp.algo: cannot differ between members (members of different algorithms"),
    ({"buffer-size": "100,200,300,400"}, "--hp.buffer-size: cannot differ between members"),
    ({"hidden": "8x8,32x32"}, "--hp.hidden: gives 2 values but --pop is 4"),
    ({"hidden": "8x8,wide"}, "--hp.hidden: cannot read 'wide' as widths like 64x64"),
    ({"hidden": "32,32,32,32"}, "--hp.hidden: 32,32,32,32 would give every member one layer of 32; for 4 layers "
                                "write 32x32x32x32 (or --hidden 32,32,32,32), for one layer 32"),
    ({"hidden": [32, 32, 32, 32]}, "--hp.hidden: 32,32,32,32 would give every member one layer of 32"),
    ({"batch-size": "choice:0,4"}, "--hp.batch-size: cannot read '0' as a positive whole number"),
    ({"hidden": "search"}, "--hp.hidden: a static setting has no declared search range; give choice:A,B,..."),
])
def test_static_settings_that_cannot_be_read_or_mixed_are_refused(hp, fragment):
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        split_static(hp, 4, FIELDS)


@pytest.mark.parametrize("args, fragment", [
    (["--executor", "sharded"], "--executor sharded: cohort sizes change as members move"),
    (["--algo", "cemrl"], "--hp.hidden: cemrl couples its members through state of one shape"),
    (["--pbt-cross-cohort", "teleport"], "--pbt-cross-cohort: got 'teleport'; allowed: copy, distill, fresh"),
    (["--algo", "ppo", "--pbt-cross-cohort", "distill"],
     "--pbt-cross-cohort distill: ppo cannot distil: on-policy members (OnPolicyAgent) have none"),
    (["--hp.envs-per-member", "1,3,1,3", "--eval-every", "2000"],
     "--hp.envs-per-member: every cohort must evaluate after the same env steps"),
])
def test_mixed_populations_refuse_what_they_do_not_run_in_one_line(tmp_path, capsys, args, fragment):
    out = tmp_path / "run"
    code = main(["train", "--pop", "4", "--hp.hidden", "8x8,8x8,32x32,32x32", "--out", str(out), "--no-progress", "--no-recipe",
                 *args])
    err = capsys.readouterr().err.strip()
    assert code == 2 and fragment in err and len(err.splitlines()) == 1, err
    assert not out.exists()


def mixed_setup(tmp_path, **settings):
    """A 4-member TD3 population on Pendulum: members 0, 1 at 8x8 (cohort 0), 2, 3 at 32x32 (cohort 1)."""
    config = build_config([dict(env="Pendulum-v1", algo="td3", pop=4, total_steps=2000, eval_every=1000,
                                eval_episodes=2, learning_starts=200, batch_size=64, buffer_size=2000, seed=1,
                                hp=MIXED, out=str(tmp_path / "run"), progress=False, tensorboard=False, **settings)])
    setup = prepare(config)
    view = init_population(setup)
    setup.backend.start(view)
    view, _ = setup.backend.advance(view, 0)
    return setup, view


def move_member_0_to_the_wide_cohort(setup, view) -> Cohorts:
    """PBT's exploit of member 0 (8x8) from member 3 (32x32), applied where the members live."""
    edits = no_edits(view.hparams, 4).replace(targets=np.array([0]), sources=np.array([3]), whole=np.array([True]),
                                              cohorts=np.array([1, 0, 1, 1]))
    setup.backend.apply_edits(view, view, edits)
    return setup.backend.gather(view)


def test_a_cross_cohort_copy_gives_the_member_its_sources_weights_and_keeps_its_own_buffer(tmp_path):
    setup, view = mixed_setup(tmp_path, pbt_cross_cohort="copy")
    before = setup.backend.gather(view)
    own_buffer = member_row(before, 0).experience
    after = move_member_0_to_the_wide_cohort(setup, view)
    assert after.members("hidden=32x32").tolist() == [0, 2, 3] and after.members("hidden=8x8").tolist() == [1]
    moved, source = member_row(after, 0), member_row(before, 3)
    for a, b in zip(jax.tree.leaves(moved.agent), jax.tree.leaves(source.agent), strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(jax.tree.leaves(moved.experience), jax.tree.leaves(own_buffer), strict=True):
        np.testing.assert_array_equal(a, b)
    # the others are untouched, and the moved member trains on in its new cohort
    for a, b in zip(jax.tree.leaves(member_row(after, 1).agent), jax.tree.leaves(member_row(before, 1).agent)):
        np.testing.assert_array_equal(a, b)
    _, metrics = setup.backend.advance(view, 1)
    assert np.asarray(metrics["finite"]).all()
    assert setup.backend.summary()["cohorts"]["moves"]["copy"] == 1


def test_a_distilled_member_acts_closer_to_its_source_than_a_fresh_init(tmp_path):
    setup, view = mixed_setup(tmp_path, pbt_cross_cohort="distill", distill_steps=300)
    before = setup.backend.gather(view)
    after = move_member_0_to_the_wide_cohort(setup, view)
    backend = setup.backend
    agent = backend.agent_of(1)  # the 32x32 cohort's (source and distilled member alike)
    source, distilled = member_row(before, 3).agent, member_row(after, 0).agent
    fresh = jax.tree.map(lambda x: x[0], backend.backend(1, 1).init_agents(jax.random.split(jax.random.key(9), 1),
                                                                            jax.tree.map(lambda x: x[:1], view.hparams)))
    # held-out states: member 1's replay (the source's buffer taught the distilled member)
    held_out = buffer_sample(member_row(before, 1).experience, jax.random.key(4), 512)
    distance = {name: float(output_distance(agent, state, agent, source, held_out))
                for name, state in (("distilled", distilled), ("fresh", fresh))}
    actions = {name: float(np.mean((agent.policy(state, held_out.obs) - agent.policy(source, held_out.obs)) ** 2))
               for name, state in (("distilled", distilled), ("fresh", fresh))}
    assert distance["distilled"] < 0.25 * distance["fresh"], distance
    assert actions["distilled"] < 0.5 * actions["fresh"], actions
    losses = backend.summary()["cohorts"]["distillations"][0]
    assert losses["loss_last"] < losses["loss_first"]


# A mixed PBT run: members move between the 8x8 and 32x32 cohorts (distilled; static explore keeps them moving
# after one width has won) every 500 steps, a checkpoint
# after every chunk; long enough that a kill 0-2 s after the first checkpoint lands mid-run.
RESUME_ARGS = ["--pop", "4", "--total-steps", "4000", "--eval-every", "500", "--learning-starts", "200",
               "--batch-size", "32", "--eval-episodes", "2", "--checkpoint-every", "500", "--keep-checkpoints", "2",
               "--strategy", "pbt", "--ready-interval", "500", "--pbt-cross-cohort", "distill",
               "--distill-steps", "50", "--pbt-static-explore", "0.5", "--hp.hidden", "8x8,8x8,32x32,32x32", "--hp.lr-actor", "loguniform:1e-4,1e-2",
               "--seed", "3", "--no-progress", "--no-tensorboard"]


@pytest.fixture(scope="module")
def mixed_reference(tmp_path_factory):
    """The uninterrupted mixed-shape PBT run."""
    out = tmp_path_factory.mktemp("mixed") / "run"
    assert main(["train", *RESUME_ARGS, "--out", str(out)]) == 0
    return out


def test_a_killed_mixed_pbt_run_resumes_to_the_uninterrupted_result(tmp_path, mixed_reference):
    lineage = [json.loads(line) for line in (mixed_reference / "lineage.jsonl").read_text().splitlines()]
    moves = [e for e in lineage if e["old_static"] != e["new_static"]]
    assert moves and any(e["env_step"] > 1500 for e in moves), "no moves between cohorts to resume across"
    out = tmp_path / "run"
    process = subprocess.Popen(cli("train", *RESUME_ARGS, "--out", str(out)), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    wait_for(lambda: list_checkpoints(out), process)
    time.sleep(random.Random(7).uniform(0.0, 2.0))
    process.kill()
    process.communicate()
    assert not (out / "summary.json").exists(), "the run finished before the kill; make it longer"
    result = subprocess.run(cli("resume", str(out), "--no-progress"), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert metrics(out) == metrics(mixed_reference)
    ours, theirs = (serialization.msgpack_restore((list_checkpoints(run)[-1] / STATE_FILE).read_bytes())
                    for run in (out, mixed_reference))
    assert ours["strategy"] == theirs["strategy"]  # fitness windows, schedules, each member's cohort
    assert set(ours["population"]["blocks"]) == set(theirs["population"]["blocks"])
    leaves = [_leaves(payload["population"]) for payload in (ours, theirs)]
    assert len(leaves[0]) == len(leaves[1]) > 20
    for a, b in zip(*leaves):
        np.testing.assert_array_equal(a, b)  # bitwise: same machine, same compiled programs
    assert (out / "lineage.jsonl").read_text() == (mixed_reference / "lineage.jsonl").read_text()  # byte for byte


def test_eval_of_a_mixed_run_reproduces_each_members_final_return(mixed_reference, capsys):
    summary = json.loads((mixed_reference / "summary.json").read_text())
    cohorts = summary["cohorts"]["members"]
    for label, members in cohorts.items():
        member = members[0]
        capsys.readouterr()
        assert main(["eval", str(mixed_reference), "--member", str(member), "--episodes", "2"]) == 0, label
        mean = float(capsys.readouterr().out.split("mean return ")[1].split()[0])
        assert mean == pytest.approx(summary["members"][member]["final_return"], abs=0.02), label


# Every algorithm with a mixed static setting, every strategy and re-creation mode once (short runs).
MATRIX = [
    ("sac", "Pendulum-v1", {"batch-size": "32,32,64,64"}, "pb2", "distill"),
    ("dqn", "CartPole-v1", {"hidden": "16x16,16x16,32x32,32x32", "n-step": "1,3,1,3"}, "pbt", "distill"),
    ("ppo", "CartPole-v1", {"hidden": "16x16,16x16,32x32,32x32"}, "pbt", "fresh"),
    ("td3", "Pendulum-v1", {"envs-per-member": "1,1,2,2"}, "independent", "copy"),
    # the same on host environments (Gymnasium): each cohort steps its own members' envs (TD3's host cells are
    # tests/test_host_cohorts.py)
    ("sac", "gymnasium:Pendulum-v1", {"batch-size": "32,32,64,64"}, "pb2", "distill"),
    ("dqn", "gymnasium:CartPole-v1", {"hidden": "16x16,16x16,32x32,32x32", "n-step": "1,3,1,3"}, "pbt", "distill"),
    ("ppo", "gymnasium:CartPole-v1", {"hidden": "16x16,16x16,32x32,32x32"}, "pbt", "fresh"),
]


# td3/independent/copy (compiled) and ppo/pbt/fresh (host) in the default suite; the other cells are marked
# `extended` (make test-extended; CI runs them).
CELLS = matrix_cells(MATRIX, {("td3", "Pendulum-v1"), ("ppo", "gymnasium:CartPole-v1")},
                     lambda cell: f"{cell[0]}-{'host' if cell[1].startswith('gymnasium:') else 'compiled'}")


@pytest.mark.parametrize("algo, env, static, strategy, how", CELLS)
def test_every_algorithm_and_strategy_runs_a_mixed_population(tmp_path, algo, env, static, strategy, how):
    out = tmp_path / "run"
    hp = {"lr": "loguniform:1e-4,1e-3"} if algo in ("dqn", "ppo") else {"lr-actor": "loguniform:1e-4,1e-3"}
    period = 512 if algo == "ppo" else 500  # PPO's period is whole rollouts
    config = build_config([dict(env=env, algo=algo, pop=4, total_steps=4 * period, eval_every=period,
                                eval_episodes=2, learning_starts=200, batch_size=32, buffer_size=2000,
                                strategy=strategy, ready_interval=period, pbt_cross_cohort=how, pbt_static_explore=0.5, distill_steps=20,
                                seed=2, hp={**static, **hp}, out=str(out), progress=False, tensorboard=False)])
    result = populax.train(config)
    assert np.isfinite(result.returns).all()
    cohorts = result.summary["cohorts"]
    assert sorted(m for members in cohorts["members"].values() for m in members) == [0, 1, 2, 3]
    events = [json.loads(line) for line in (out / "lineage.jsonl").read_text().splitlines()] \
        if (out / "lineage.jsonl").exists() else []
    # the strategy's record of each member's cohort and where the backend holds it agree
    last = {e["member"]: e["new_static"] for e in events}
    for label, members in cohorts["members"].items():
        settings = dict(part.split("=") for part in label.split())
        for member in members:
            assert last.get(member, settings) == settings, (member, label)
    crossed = sum(e["old_static"] != e["new_static"] for e in events)
    made = cohorts["moves"]
    if strategy == "independent":
        assert not events and sum(made.values()) == 0
    else:  # every move between cohorts re-created its member, by the mode asked for
        assert crossed and crossed <= sum(made.values()) <= len(events), (made, crossed, len(events))
        assert {kind for kind, count in made.items() if count} == {how}, made
