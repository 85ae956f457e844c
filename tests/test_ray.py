"""``--executor ray``: blocks of members on Ray workers, run on loopback only.

Every Ray process of these tests lives in a network namespace that holds only
``lo`` (``unshare -n``, as root), so no traffic can leave 127.0.0.1; where
``unshare`` is not permitted the tests skip and say so. Each test runs the
CLI in such a namespace; a local Ray instance ends with its driver, a cluster
started with ``ray start`` is stopped by the same shell that started it.
"""

import json
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from cli_process import cli, wait_for
from test_runtime import poison  # the one-process twin of PoisoningWorker: a before_chunk hook

from populax.cli import parse_train_args
from populax.hparams import member_hparams
from populax.memory import tree_bytes
from populax.run.checkpoint import restore
from populax.run.resume import load_setup
from populax.runtime import init_population, prepare, run

REPO = Path(__file__).resolve().parents[1]
SMALL = ["--env", "Pendulum-v1", "--algo", "td3", "--hidden", "32,32", "--batch-size", "64", "--learning-starts", "100",
         "--eval-episodes", "2", "--no-recipe", "--no-progress", "--no-tensorboard"]
PBT = [*SMALL, "--pop", "8", "--total-steps", "800", "--eval-every", "200", "--strategy", "pbt",
       "--hp.lr-actor", "loguniform:1e-4,1e-2", "--checkpoint-every", "200", "--keep-checkpoints", "10", "--seed", "0",
       "--pbt-copy-buffer", "true"]
POISONING_TRAIN = """
import sys
import jax
import jax.numpy as jnp
from populax import cli
from populax.backends.cluster import pool as cluster_pool
from populax.backends.cluster.worker import BlockWorker


class PoisoningWorker(BlockWorker):
    def advance(self, chunk):
        if chunk == CHUNK and MEMBER in self.members:
            local = MEMBER - int(self.members[0])
            nan = lambda x: x.at[local].set(jnp.nan) if jnp.issubdtype(x.dtype, jnp.floating) else x
            advance = self.backend.advance

            def poisoned(block, *rest):  # as if inside the chunk: the worker's kept copy (taken first) stays finite
                del self.backend.advance
                return advance(block.replace(agent=jax.tree.map(nan, block.agent)), *rest)

            self.backend.advance = poisoned
        return super().advance(chunk)


MEMBER, CHUNK = int(sys.argv[1]), int(sys.argv[2])
cluster_pool.BlockWorker = PoisoningWorker  # a class of __main__: Ray ships it to the workers by value
sys.exit(cli.main(sys.argv[3:]))
"""


SOURCE_DYING_CLI = """
import json
import os
import sys
from pathlib import Path
from populax import cli
from populax.backends.cluster import pool as cluster_pool
from populax.backends.cluster.worker import BlockWorker


class SourceDyingWorker(BlockWorker):
    def export(self, index, fields, experience):
        if ARMED.exists() and not DIED.exists():  # once: the restarted worker exports as usual
            DIED.write_text(json.dumps([int(m) for m in self.members]))
            os._exit(1)  # between its export (for another block's copy) and that block's edit
        return super().export(index, fields, experience)


ARMED, DIED = Path(sys.argv[1]), Path(sys.argv[2])
cluster_pool.BlockWorker = SourceDyingWorker  # a class of __main__: Ray ships it to the workers by value
sys.exit(cli.main(sys.argv[3:]))
"""


DYING_TRAIN = """
import os
import sys
from pathlib import Path
import numpy as np
from populax import cli
from populax.backends.cluster import pool as cluster_pool
from populax.backends.cluster.worker import BlockWorker


def dies_in(method):
    def call(self, *args):
        at = int(np.max(np.asarray(self.block.env_steps)))  # where its block stands when called
        if at >= STEPS and 0 not in self.members and not DIED.exists():  # worker 1, once
            DIED.touch()
            os._exit(1)  # as a kill -9 would: no reply, no cleanup
        return getattr(BlockWorker, method)(self, *args)
    return call


METHOD, STEPS, DIED = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
DyingWorker = type("DyingWorker", (BlockWorker,), {METHOD: dies_in(METHOD)})
cluster_pool.BlockWorker = DyingWorker  # a class of __main__: Ray ships it to the workers by value
sys.exit(cli.main(sys.argv[4:]))
"""


def dying_train(tmp_path: Path, method: str, steps: int, *args: str) -> str:
    """Shell words of ``populax train ARGS`` whose worker 1 exits (no reply, as if killed) in its first call of
    ``method`` made when its block stands at ``steps`` env steps or more; ``tmp_path / "died"`` marks it."""
    script = tmp_path / "dying_train.py"
    script.write_text(DYING_TRAIN)
    return shlex.join([sys.executable, str(script), method, str(steps), str(tmp_path / "died"), "train", *args])


def logged_returns(run_dir: Path) -> list[tuple[int, int, float]]:
    """(env step, member, return) of every evaluation metrics.jsonl logged."""
    return [(r["env_step"], r["member"], r["return"]) for r in records(run_dir / "metrics.jsonl") if "member" in r]


def poisoning_train(tmp_path: Path, member: int, at_chunk: int, *args: str) -> str:
    """Shell words of ``populax train ARGS`` whose Ray worker writes NaN into ``member``'s agent before chunk
    ``at_chunk`` (fault injection on the worker, as ``poison`` does on the driver of a one-process run)."""
    script = tmp_path / "poisoning_train.py"
    script.write_text(POISONING_TRAIN)
    return shlex.join([sys.executable, str(script), str(member), str(at_chunk), "train", *args])


def loopback_error() -> str | None:
    """Why a loopback-only namespace cannot be made here, or None."""
    try:
        probe = subprocess.run(["unshare", "-n", "sh", "-c", "ip link set lo up"], capture_output=True, text=True)
    except FileNotFoundError:
        return "unshare is not installed"
    return None if probe.returncode == 0 else f"unshare -n is not permitted here ({probe.stderr.strip()})"


REASON = loopback_error()
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"Ray tests run in a loopback-only namespace: {REASON}")
# `make test` runs the suite with pytest-xdist --dist loadfile: one worker runs this file's tests one at a time.


def ray_env() -> dict[str, str]:
    """The environment of a namespaced run: this checkout importable, token auth off (local, loopback only)."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
            "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}


def in_loopback(script: str, own_pids: bool = False) -> list[str]:
    """argv running shell ``script`` in a new network namespace holding only ``lo``; with ``own_pids`` also in
    its own pid namespace, so ``ray stop`` there sees (and stops) only this script's Ray processes, not another
    Ray on the machine, and every process left ends with the script."""
    pids = ["-p", "-f", "--mount-proc"] if own_pids else []
    return ["unshare", "-n", *pids, "sh", "-c", f"ip link set lo up; {script}"]


def populax(*args: str) -> str:
    """Shell words of a populax CLI call with this interpreter."""
    return shlex.join(cli(*args))


def run_loopback(script: str, timeout: float = 600, own_pids: bool = False) -> subprocess.CompletedProcess:
    result = subprocess.run(in_loopback(script, own_pids), capture_output=True, text=True, env=ray_env(),
                            timeout=timeout)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def agent_leaves(population, member: int) -> list[np.ndarray]:
    return [np.asarray(leaf[member]) for leaf in jax.tree.leaves(population.agent)]


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (Ray's daemons and workers under a driver), from /proc."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    direct = [int(c) for c in children.read_text().split()] if children.exists() else []
    return direct + [d for c in direct for d in descendants(c)]


def kill_driver_after_checkpoint(argv: list[str], checkpoint: Path) -> None:
    """Run ``argv`` (a Ray driver in its namespace), SIGKILL it and everything under it once ``checkpoint`` exists."""
    process = subprocess.Popen(argv, env=ray_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for(checkpoint.is_dir, process)
        for pid in [process.pid, *descendants(process.pid)]:
            os.kill(pid, signal.SIGKILL)
    finally:
        process.kill()
        process.communicate()
    assert process.returncode == -signal.SIGKILL


def kill_worker_after_checkpoint(argv: list[str], out: Path, checkpoint: str, worker: int = 1) -> int:
    """Run ``argv`` (a Ray driver in its namespace, writing to ``out``), SIGKILL worker ``worker`` once checkpoint
    ``checkpoint`` exists, and let the run finish (it must, with exit 0); returns the killed worker's pid."""
    process = subprocess.Popen(argv, env=ray_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: (out / "checkpoints" / checkpoint).is_dir(), process)
        victim = json.loads((out / "ray_workers.json").read_text())["pids"][worker]
        os.kill(victim, signal.SIGKILL)
        _, stderr = process.communicate(timeout=600)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr[-4000:]
    return victim


def test_ray_pbt_two_workers_equals_one_process(tmp_path):
    """Pop 8 on 2 workers (blocks 0-3, 4-7), PBT with --pbt-copy-buffer, member 6 poisoned (NaN) in chunk 0 on its
    worker, the driver killed (-9, with its local Ray) after the first checkpoint and the run resumed:
    cross-worker copies hold their sources' weights, the failed member was rolled back and replaced, every final
    return equals an uninterrupted one-process run of the same blocks (chunked:4 = two vmaps of 4) poisoned the
    same way, and member states crossed the network only for copies between blocks (bytes = the copied
    members' states) and checkpoints."""
    out, reference = tmp_path / "ray", tmp_path / "local"
    train = in_loopback("exec " + poisoning_train(tmp_path, 6, 0, *PBT, "--executor", "ray", "--workers", "2",
                                                  "--out", str(out)))
    kill_driver_after_checkpoint(train, out / "checkpoints" / "chunk_000000")
    run_loopback(populax("resume", str(out), "--no-progress"))
    run(prepare(parse_train_args([*PBT, "--executor", "chunked:4", "--out", str(reference)])),
        before_chunk=poison(member=6, at_chunk=0))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["executor"] == "ray" and summary["ray"]["workers"] == 2
    assert summary["backend"] == "ray" and summary["worker_backend"] == "compiled"
    assert summary["ray"]["blocks"] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert all(m["final_return"] is not None for m in summary["members"]) and len(summary["members"]) == 8
    assert summary["env_steps_per_member"] == 800 and summary["lineage_events"]["exploit"] >= 2
    assert summary["lineage_events"]["replace_failed"] == 1
    # The same seed and block layout in one process: the same numbers (bitwise on this machine; the tolerance
    # leaves room for another machine's rounding).
    expected = json.loads((reference / "summary.json").read_text())
    np.testing.assert_allclose([m["final_return"] for m in summary["members"]],
                               [m["final_return"] for m in expected["members"]], rtol=1e-5)
    assert records(out / "lineage.jsonl") == records(reference / "lineage.jsonl")
    # Cross-worker copies, checked on what the workers held: the checkpoint right after the round is gathered from them.
    exploits = [e for e in records(out / "lineage.jsonl") if e["source"] is not None]  # exploit, replace_failed
    cross = [e for e in exploits if (e["member"] < 4) != (e["source"] < 4)]
    assert cross, exploits
    assert summary["ray"]["cross_block_copies"] == len(cross)
    setup = load_setup(out)
    template = jax.eval_shape(lambda: init_population(setup))
    # Traffic: per chunk only step counts, hyperparameters, metrics and returns come back (no member state); a
    # chunk's member_state_bytes are its copies between blocks, each source's agent, observation statistics,
    # buffer and its learn_from once per target worker.
    per_member = tree_bytes((template.agent, template.obs_stats, template.experience, template.learn_from)) // 8
    crossing = {}  # chunk -> {(source, target worker)}
    for e in records(out / "lineage.jsonl"):
        if e["source"] is not None and (e["member"] < 4) != (e["source"] < 4):
            crossing.setdefault(e["env_step"] // 200 - 1, set()).add((e["source"], e["member"] // 4))
    copied, seen = 0, set()
    for record in records(out / "ray.jsonl"):  # the killed session's records, then the resumed one's
        if record["event"] == "member_copy":
            assert record["bytes"] == len(record["sources"]) * per_member, (record, per_member)
            copied += record["bytes"]
        elif record["event"] == "chunk":
            assert record["member_state_bytes"] == copied == per_member * len(crossing.get(record["chunk"], ())), record
            assert record["bytes"] < 1024 * 8, record  # a few numbers per member
            seen.add(record["chunk"])
            copied = 0
    assert seen == {0, 1, 2, 3} and any(c not in crossing for c in seen)
    gathers = [r for r in records(out / "ray.jsonl") if r["event"] == "gather"]
    assert gathers and all(g["member_state_bytes"] == tree_bytes(template) for g in gathers)  # whole members
    for event in exploits:
        chunk = event["env_step"] // 200 - 1
        population = restore(out / "checkpoints" / f"chunk_{chunk:06d}", template).population
        for got, source in zip(agent_leaves(population, event["member"]), agent_leaves(population, event["source"])):
            np.testing.assert_array_equal(got, source)
        assert member_hparams(population.hparams, event["member"]) == event["new_hparams"]


@pytest.mark.extended  # make test-extended; CI runs it
def test_ray_pbt_reset_optimizer_copies_across_workers_with_fresh_adam_state_as_one_process(tmp_path):
    """--pbt-copy policy --pbt-reset-optimizer on 2 workers: every exploited member, in the checkpoint written
    right after its round, holds its source's actor with Adam's step count and moments at 0 (copies between the
    workers' blocks among them: the reset is made on the target's worker, after the rows arrive), and the run's
    returns equal the same blocks in one process (chunked:4)."""
    out, reference = tmp_path / "ray", tmp_path / "local"
    args = [*[a for a in PBT if a not in ("--pbt-copy-buffer", "true")], "--pbt-copy", "policy",
            "--pbt-reset-optimizer", "true"]
    run_loopback(populax("train", *args, "--executor", "ray", "--workers", "2", "--out", str(out)))
    run(prepare(parse_train_args([*args, "--executor", "chunked:4", "--out", str(reference)])))
    exploits = [e for e in records(out / "lineage.jsonl") if e["event"] == "exploit"]
    assert any((e["member"] < 4) != (e["source"] < 4) for e in exploits), exploits
    setup = load_setup(reference)  # the same shapes, in one process
    template = jax.eval_shape(lambda: init_population(setup))
    for event in exploits:
        agent = restore(out / "checkpoints" / f"chunk_{event['env_step'] // 200 - 1:06d}", template).population.agent
        target, source = event["member"], event["source"]
        for leaf in jax.tree.leaves(agent.actor):
            np.testing.assert_array_equal(np.asarray(leaf[target]), np.asarray(leaf[source]))
        assert all(not np.any(np.asarray(leaf[target])) for leaf in jax.tree.leaves(agent.actor_opt)), event
        assert int(agent.actor_opt.count[source]) > 0  # what a plain copy would have taken
    np.testing.assert_allclose([m["final_return"] for m in json.loads((out / "summary.json").read_text())["members"]],
                               [m["final_return"] for m in json.loads((reference / "summary.json").read_text())["members"]],
                               rtol=1e-5)


@pytest.mark.extended  # make test-extended; CI runs it
def test_ray_on_failure_freeze_keeps_a_failed_member_frozen_across_a_resume_as_one_process_does(tmp_path):
    """--on-failure freeze on 2 workers: member 2 (worker 1) poisoned (NaN) in chunk 1 is put back to its state
    before that chunk and stays there; the driver killed (-9) after that chunk's checkpoint and the run resumed
    (the frozen mask is the strategy's, in the driver's checkpoint; the worker's kept copy is its own): every
    final return, the lineage and every member's final weights equal a one-process run of the same blocks
    (chunked:2) poisoned the same way."""
    out, reference = tmp_path / "ray", tmp_path / "local"
    args = [*SMALL, "--pop", "4", "--total-steps", "800", "--eval-every", "200", "--checkpoint-every", "200",
            "--keep-checkpoints", "10", "--on-failure", "freeze", "--seed", "0"]
    train = in_loopback("exec " + poisoning_train(tmp_path, 2, 1, *args, "--executor", "ray", "--workers", "2",
                                                  "--out", str(out)))
    kill_driver_after_checkpoint(train, out / "checkpoints" / "chunk_000001")
    run_loopback(populax("resume", str(out), "--no-progress"))
    expected = run(prepare(parse_train_args([*args, "--executor", "chunked:2", "--out", str(reference)])),
                   before_chunk=poison(member=2, at_chunk=1))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["executor"] == "ray" and summary["env_steps_per_member"] == 800
    assert [(e["event"], e["member"], e["env_step"]) for e in records(out / "lineage.jsonl")] == [("freeze", 2, 400)]
    assert records(out / "lineage.jsonl") == records(reference / "lineage.jsonl")
    np.testing.assert_allclose([m["final_return"] for m in summary["members"]], expected.returns, rtol=1e-5)
    setup = load_setup(out)
    template = jax.eval_shape(lambda: init_population(setup))
    before, final = (restore(out / "checkpoints" / f"chunk_{c:06d}", template).population for c in (0, 3))
    for member in range(4):
        for got, want in zip(agent_leaves(final, member), agent_leaves(expected.population, member)):
            np.testing.assert_allclose(got, want, rtol=1e-5)
    # the frozen member holds its weights from before the failed chunk: chunk 0's, through chunks 1-3 and a resume
    for got, frozen in zip(agent_leaves(final, 2), agent_leaves(before, 2)):
        np.testing.assert_array_equal(got, frozen)
    assert not all(np.array_equal(a, b) for a, b in zip(agent_leaves(final, 3), agent_leaves(before, 3)))


@pytest.mark.extended  # make test-extended; CI runs it
def test_a_brax_population_on_ray_workers_equals_one_process(tmp_path):
    """brax physics compiled into each worker's chunk: PBT over 4 members on 2 workers gives the lineage and
    final returns of one process running the same blocks (chunked:2)."""
    out, reference = tmp_path / "ray", tmp_path / "local"
    args = ["--env", "brax:inverted_pendulum", "--algo", "td3", "--pop", "4", "--total-steps", "200",
            "--eval-every", "100", "--hidden", "16,16", "--batch-size", "32", "--learning-starts", "50",
            "--eval-episodes", "2", "--eval-max-steps", "100", "--strategy", "pbt", "--ready-interval", "100",
            "--hp.lr-actor", "loguniform:1e-4,1e-2", "--seed", "0", "--no-recipe", "--no-progress",
            "--no-tensorboard"]
    run_loopback(populax("train", *args, "--executor", "ray", "--workers", "2", "--out", str(out)))
    expected = run(prepare(parse_train_args([*args, "--executor", "chunked:2", "--out", str(reference)])))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["backend"] == "ray" and summary["worker_backend"] == "compiled"
    assert summary["env"] == "brax:inverted_pendulum" and summary["env_steps_per_member"] == 200
    assert records(out / "lineage.jsonl") == records(reference / "lineage.jsonl") and summary["lineage_events"]
    np.testing.assert_allclose([m["final_return"] for m in summary["members"]], expected.returns, rtol=1e-5)


@pytest.mark.extended  # make test-extended; CI runs it (the default suite's dying worker: the evaluate cell below)
def test_killed_worker_restarts_and_reloads_its_block(tmp_path):
    """kill -9 of one worker mid-run: Ray restarts it, its block reloads from the last checkpoint, the run completes;
    ray.jsonl logs the restart and lineage.jsonl one block_reload per member of that block. Member 0, poisoned
    (NaN) in chunk 0, is re-initialised on its own worker (data rolled back there) and learns on. The learning
    rates are one per member: each worker builds its block from the run's list (refused on a worker until the
    fifteenth session: it counted the list against its block's size)."""
    out = tmp_path / "run"
    args = [*SMALL, "--pop", "4", "--total-steps", "4000", "--eval-every", "400", "--checkpoint-every", "400",
            "--hp.lr-actor", "1e-3,3e-4,1e-4,3e-5", "--executor", "ray", "--workers", "2", "--out", str(out)]
    victim = kill_worker_after_checkpoint(in_loopback("exec " + poisoning_train(tmp_path, 0, 0, *args)), out,
                                          "chunk_000001")
    restarts = [r for r in records(out / "ray.jsonl") if r["event"] == "worker_restart"]
    assert len(restarts) == 1 and restarts[0]["old_pid"] == victim and restarts[0]["new_pid"] != victim
    assert restarts[0]["worker"] == 1 and restarts[0]["reloaded_from"].startswith("chunk_")
    assert [(e["event"], e["member"], e["env_step"]) for e in records(out / "lineage.jsonl")
            if e["event"] == "reinit"] == [("reinit", 0, 400)]
    reloads = [e for e in records(out / "lineage.jsonl") if e["event"] == "block_reload"]
    assert sorted(e["member"] for e in reloads) == [2, 3]
    assert all(e["restored_env_step"] >= 800 for e in reloads)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ray"]["restarts"] == 1 and summary["lineage_events"] == {"block_reload": 2, "reinit": 1}
    assert all(m["final_return"] is not None for m in summary["members"])
    assert [m["hparams"]["lr-actor"] for m in summary["members"]] == [1e-3, 3e-4, 1e-4, 3e-5]
    # the reloaded members lost at most the steps since the checkpoint; the others ran the whole run
    assert summary["env_steps_per_member"] == 4000


@pytest.mark.parametrize("method, steps, checkpoint_every, restored, due", [
    ("evaluate", 600, "800", 0, 600),  # after its chunk ran (400-600), before the first checkpoint: 3 chunks again
    pytest.param("advance", 600, "400", 400, 600, marks=pytest.mark.extended),  # before chunk 3, from chunk 1's
], ids=["evaluate-no-checkpoint", "advance-older-checkpoint"])
def test_a_worker_dying_chunks_after_the_checkpoint_catches_up_and_the_run_equals_one_process(
        tmp_path, method, steps, checkpoint_every, restored, due):
    """A worker dies (exit, no reply) in ``method`` while the last checkpoint, if any, is older than the chunk
    before: the reloaded block runs the chunks since then again up to where the other block stands (ray.jsonl's
    block_replay, from ``restored`` to ``due`` env steps), and the run completes. Before this, the block stayed
    behind and the driver ended the run as if stopped (exit 0, no summary.json), the default checkpoint
    cadence (2 minutes) making it the common case. Independent members with saved buffers on a JAX env replay
    exactly: every logged return equals an uninterrupted one-process run of the same blocks (chunked:2)."""
    out, reference = tmp_path / "ray", tmp_path / "local"
    args = [*SMALL, "--pop", "4", "--total-steps", "800", "--eval-every", "200", "--checkpoint-every",
            checkpoint_every, "--keep-checkpoints", "10", "--seed", "0", "--hp.lr-actor", "1e-3,3e-4,1e-4,3e-5"]
    run_loopback(dying_train(tmp_path, method, steps, *args, "--executor", "ray", "--workers", "2", "--out", str(out)))
    assert (tmp_path / "died").exists()
    restarts = [r for r in records(out / "ray.jsonl") if r["event"] == "worker_restart"]
    replays = [r for r in records(out / "ray.jsonl") if r["event"] == "block_replay"]
    assert [(r["worker"], r["restored_env_step"]) for r in restarts] == [(1, restored)], restarts
    assert [(r["worker"], r["from_env_step"], r["to_env_step"]) for r in replays] == [(1, restored, due)], replays
    summary = json.loads((out / "summary.json").read_text())
    assert summary["env_steps_per_member"] == 800 and summary["ray"]["restarts"] == 1
    run(prepare(parse_train_args([*args, "--executor", "chunked:2", "--out", str(reference)])))
    got, expected = logged_returns(out), logged_returns(reference)
    assert [g[:2] for g in got] == [e[:2] for e in expected] and len(got) == 4 * 4
    np.testing.assert_allclose([g[2] for g in got], [e[2] for e in expected], rtol=1e-5)


@pytest.mark.parametrize("method, steps", [
    # the checkpoint after chunk 2's edits: they are made again on the caught-up block (extended, to keep the
    # default suite near its budget: its catch-up is the evaluate cell's above, its PBT equality
    # test_ray_pbt_two_workers_equals_one_process's)
    pytest.param("gather", 600, marks=pytest.mark.extended),
    pytest.param("edit", 400, marks=pytest.mark.extended),  # a target of an edit: the edit is made again
])
def test_a_worker_dying_after_its_chunk_takes_the_rounds_edits_again_and_pbt_equals_one_process(tmp_path, method,
                                                                                                steps):
    """PBT, a checkpoint after every chunk: worker 1 dies after its chunk ran, in a checkpoint's gather (after the
    round's edits) or as the target of an edit. It reloads the chunk before, runs the chunk again, takes the
    round's edits again (with new exports from the other worker) and the call is made again: the run equals an
    uninterrupted one-process run, decision by decision and return by return. Before this, the edits were lost
    on that block while lineage.jsonl recorded them."""
    out, reference = tmp_path / "ray", tmp_path / "local"
    args = [*SMALL, "--pop", "4", "--total-steps", "800", "--eval-every", "200", "--strategy", "pbt",
            "--pbt-bottom", "0.5", "--pbt-top", "0.5", "--ready-interval", "200", "--hp.lr-actor",
            "loguniform:1e-4,1e-2", "--checkpoint-every", "200", "--keep-checkpoints", "10", "--seed", "0"]
    run_loopback(dying_train(tmp_path, method, steps, *args, "--executor", "ray", "--workers", "2", "--out", str(out)))
    assert (tmp_path / "died").exists()
    restarts = [r for r in records(out / "ray.jsonl") if r["event"] == "worker_restart"]
    replays = [r for r in records(out / "ray.jsonl") if r["event"] == "block_replay"]
    assert len(restarts) == 1 and restarts[0]["worker"] == 1
    assert [(r["from_env_step"], r["to_env_step"]) for r in replays] == [
        (restarts[0]["restored_env_step"], restarts[0]["restored_env_step"] + 200)], replays
    run(prepare(parse_train_args([*args, "--executor", "chunked:2", "--out", str(reference)])))
    decided = [e for e in records(out / "lineage.jsonl") if e["event"] != "block_reload"]
    assert decided == records(reference / "lineage.jsonl") and any(e["member"] >= 2 for e in decided)
    got, expected = logged_returns(out), logged_returns(reference)
    assert [g[:2] for g in got] == [e[:2] for e in expected] and len(got) == 4 * 4
    np.testing.assert_allclose([g[2] for g in got], [e[2] for e in expected], rtol=1e-5)


def test_ray_gymnasium_run_resumes_and_a_source_worker_dying_after_the_resume_is_reloaded(tmp_path):
    """Gymnasium Pendulum-v1 PBT under Ray (host blocks, whose members have no env field): the driver killed
    (-9) after its first checkpoint, the run resumes and completes. After the resume, the worker exporting a
    copy source for another block dies before that block's edit: it is restarted and its block reloaded from a
    newest checkpoint (reloading needs the run's hyperparameters, which a resumed driver never
    drew), and the failure is the source's: one restart, of that worker; the healthy target is not reloaded
    and takes its copy from the reloaded source."""
    out, armed, died = tmp_path / "run", tmp_path / "armed", tmp_path / "died"
    args = [*SMALL, "--env", "gymnasium:Pendulum-v1", "--pop", "4", "--total-steps", "1000", "--eval-every", "200",
            "--strategy", "pbt", "--pbt-bottom", "0.5", "--pbt-top", "0.5", "--ready-interval", "200",
            "--hp.lr-actor", "loguniform:1e-4,1e-2", "--hidden", "16,16", "--overlap", "false",
            "--checkpoint-every", "200", "--keep-checkpoints", "10", "--seed", "0", "--executor", "ray",
            "--workers", "2", "--out", str(out)]
    kill_driver_after_checkpoint(in_loopback("exec " + populax("train", *args)), out / "checkpoints" / "chunk_000000")
    resumed_from = len(list((out / "checkpoints").glob("chunk_*")))
    armed.touch()
    script = tmp_path / "source_dying_cli.py"
    script.write_text(SOURCE_DYING_CLI)
    run_loopback(shlex.join([sys.executable, str(script), str(armed), str(died), "resume", str(out), "--no-progress"]))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["backend"] == "ray" and summary["worker_backend"] == "host" and summary["env_steps_per_member"] == 1000
    assert all(m["final_return"] is not None for m in summary["members"])
    dead = json.loads(died.read_text())  # the source block's members
    restarts = [r for r in records(out / "ray.jsonl") if r["event"] == "worker_restart"]
    assert len(restarts) == 1 and restarts[0]["members"] == dead, restarts
    assert restarts[0]["reloaded_from"].startswith("chunk_") and restarts[0]["old_pid"] != restarts[0]["new_pid"]
    assert int(restarts[0]["reloaded_from"][len("chunk_"):]) >= resumed_from - 1
    reloads = [e for e in records(out / "lineage.jsonl") if e["event"] == "block_reload"]
    assert sorted(e["member"] for e in reloads) == dead
    assert summary["lineage_events"]["block_reload"] == 2 and summary["ray"]["restarts"] == 1
    # exploits copied sources across the workers, worker to worker (ray.jsonl's member_copy records); the
    # checkpoint written right after a round holds each target with its source's weights
    exploits = [e for e in records(out / "lineage.jsonl") if e["event"] == "exploit"]
    assert any((e["member"] < 2) != (e["source"] < 2) for e in exploits), exploits
    assert summary["ray"]["cross_block_copies"] >= 1
    assert any(r["event"] == "member_copy" for r in records(out / "ray.jsonl"))
    setup = load_setup(out)
    template = jax.eval_shape(lambda: init_population(setup))
    for event in exploits:
        population = restore(out / "checkpoints" / f"chunk_{event['env_step'] // 200 - 1:06d}", template).population
        for got, source in zip(agent_leaves(population, event["member"]), agent_leaves(population, event["source"])):
            np.testing.assert_array_equal(got, source)


@pytest.mark.extended  # a long run; make test-extended and CI run it (the default suite's Ray runs start their own instance)
def test_ray_address_joins_a_cluster_started_with_ray_start(tmp_path):
    """`ray start --head` on loopback, then `populax train --ray-address` joins it; a run without --ray-address
    beside that cluster starts its own instance (Ray would otherwise join the cluster it finds on the machine and
    refuse the run's num_cpus); the shell stops the cluster. That second run trains a user's gymnax-API
    environment (examples/custom_jax_env.py): each worker imports it by the run's py: path (PYTHONPATH reaches
    the workers) and trains its block inside the compiled chunk."""
    out, private = tmp_path / "run", tmp_path / "private"
    ray = Path(sys.executable).parent / "ray"
    head = (f"{ray} start --head --port=6390 --node-ip-address=127.0.0.1 --num-cpus=2 --include-dashboard=false "
            "--disable-usage-stats >/dev/null")
    train = [*SMALL, "--pop", "4", "--total-steps", "400", "--eval-every", "200", "--executor", "ray", "--workers", "2"]
    joined = populax("train", *train, "--ray-address", "127.0.0.1:6390", "--out", str(out))
    custom = ["--env", "py:custom_jax_env:Corridor", "--algo", "dqn", "--pop", "4", "--total-steps", "600",
              "--eval-every", "300", "--hidden", "16,16", "--batch-size", "16", "--learning-starts", "100",
              "--eval-episodes", "2", "--no-progress", "--no-tensorboard", "--executor", "ray", "--workers", "2"]
    own = f"PYTHONPATH={shlex.quote(str(REPO / 'examples'))}:$PYTHONPATH {populax('train', *custom, '--out', str(private))}"
    run_loopback(f"{head} && {joined} && {own}; status=$?; {ray} stop --force >/dev/null 2>&1; exit $status",
                 own_pids=True)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ray"]["address"] == "127.0.0.1:6390" and summary["env_steps_per_member"] == 400
    summary = json.loads((private / "summary.json").read_text())
    assert summary["ray"]["address"] == "local (loopback)"
    assert summary["backend"] == "ray" and summary["worker_backend"] == "compiled"
    assert summary["env"] == "py:custom_jax_env:Corridor"
    assert summary["env_steps_per_member"] == 600 and all(m["final_return"] is not None for m in summary["members"])
