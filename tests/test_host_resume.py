"""Host-environment (Gymnasium) runs survive: checkpoints, kill -9 then resume, SIGINT, eval and --video.

Gymnasium Pendulum-v1 (the cheapest host env), population 2, tiny networks.
"""

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import jax
import numpy as np
import pytest
from cli_process import cli, wait_for
from flax import serialization

from populax.cli import main
from populax.run.checkpoint import STATE_FILE, list_checkpoints
from populax.run.resume import load_checkpoint, load_setup

# 800 env steps per member, an evaluation and a checkpoint every 200 (a chunk of 4 blocks of 50).
ARGS = ["--env", "gymnasium:Pendulum-v1", "--pop", "2", "--total-steps", "800", "--eval-every", "200",
        "--learning-starts", "100", "--hidden", "32,32", "--batch-size", "32", "--eval-episodes", "2",
        "--checkpoint-every", "100", "--keep-checkpoints", "2", "--obs-norm", "true", "--seed", "4",
        "--no-progress", "--no-tensorboard"]




def records(run_dir: Path) -> list[dict]:
    """metrics.jsonl without wall times."""
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "wall_time_s"} for line in lines]


def saved_payload(checkpoint: Path) -> dict:
    return serialization.msgpack_restore((checkpoint / STATE_FILE).read_bytes())


def leaves(tree) -> list[np.ndarray]:
    if isinstance(tree, dict):
        return [leaf for key in sorted(tree) for leaf in leaves(tree[key])]
    if isinstance(tree, list):
        return [leaf for item in tree for leaf in leaves(item)]
    return [] if tree is None else [np.asarray(tree)]


@pytest.fixture(scope="module")
def killed(tmp_path_factory):
    """A host run (--overlap false) killed with SIGKILL right after its first checkpoint."""
    out = tmp_path_factory.mktemp("host") / "killed"
    process = subprocess.Popen(cli("train", *ARGS, "--overlap", "false", "--out", str(out)),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for(lambda: list_checkpoints(out), process)
    process.kill()
    process.communicate()
    assert not (out / "summary.json").exists(), "the run finished before the kill; make it longer"
    return out


@pytest.fixture(scope="module")
def interrupted(killed, tmp_path_factory):
    """`populax resume` of the killed run, stopped by Ctrl-C (SIGINT to its whole process group) after an evaluation."""
    out = tmp_path_factory.mktemp("host") / "run"
    shutil.copytree(killed, out)
    resumed_from = list_checkpoints(out)[-1]
    offset = json.loads((resumed_from / "manifest.json").read_text())["metrics_offset"]
    process = subprocess.Popen(cli("resume", str(out), "--no-progress"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)
    metrics = out / "metrics.jsonl"
    wait_for(lambda: metrics.stat().st_size > offset + 10, process)  # an evaluation after the resume point
    os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
    _, stderr = process.communicate(timeout=300)
    return out, resumed_from.name, process.returncode, stderr


@pytest.fixture(scope="module")
def finished(interrupted, tmp_path_factory):
    """The interrupted run resumed to the end in this process, and a copy resumed again from the same checkpoint."""
    import populax.runtime

    out = interrupted[0]
    again = tmp_path_factory.mktemp("host") / "again"
    shutil.copytree(out, again)
    setup = load_setup(out)
    result = populax.runtime.run(setup, start=load_checkpoint(setup))
    twin = setup._replace(run_dir=again)  # the same compiled functions: the second resume costs no compilation
    populax.runtime.run(twin, start=load_checkpoint(twin))
    return out, again, result


def test_checkpoint_restores_exactly_what_was_saved(killed):
    from populax.run.checkpoint import to_host

    checkpoint = load_checkpoint(load_setup(killed))
    payload = saved_payload(checkpoint.path)
    assert checkpoint.manifest["backend"] == "host" and checkpoint.manifest["buffer_saved"]
    assert checkpoint.manifest["env_step"] % 100 == 0 and 0 < checkpoint.manifest["env_step"] < 800
    saved = leaves(payload["population"])
    restored = leaves(serialization.to_state_dict(to_host(checkpoint.population)))
    assert len(saved) == len(restored) > 20  # parameters, targets, optimizer states, buffer, stats, keys, counters
    for a, b in zip(saved, restored):
        np.testing.assert_array_equal(a, b)
    kernels = [np.asarray(x) for x in jax.tree.leaves(checkpoint.population.agent) if np.ndim(x) == 3]
    # Stacked weight matrices (Adam's moments are still zero before the first update; the weights are not).
    assert kernels and all(k.shape[0] == 2 for k in kernels) and any(np.abs(k).sum() > 0 for k in kernels)
    assert np.asarray(checkpoint.population.obs_stats.count)[0] > 1  # --obs-norm statistics are in it
    keys = np.asarray(checkpoint.extra["collector_keys"])
    assert keys.shape == (2, 2) and keys.dtype == np.uint32  # the collector's RNG keys, one per member


def test_sigint_leaves_a_checkpoint_exits_0_and_says_how_to_resume(interrupted):
    out, resumed_from, code, stderr = interrupted
    assert code == 0, stderr
    assert f"from {resumed_from}" in stderr
    assert f"populax resume {out}" in stderr and "Traceback" not in stderr
    assert not (out / "summary.json").exists()
    checkpoint = load_checkpoint(load_setup(out))
    assert checkpoint.path.name > resumed_from and checkpoint.manifest["env_step"] < 800
    assert checkpoint.manifest["metrics_offset"] == (out / "metrics.jsonl").stat().st_size
    assert len(records(out)) == 2 * checkpoint.manifest["chunks_done"]  # one evaluation per finished chunk, two members


def test_kill_9_then_resume_reaches_the_end_without_duplicates(finished):
    out, _, result = finished
    summary = json.loads((out / "summary.json").read_text())
    assert summary["env_steps_per_member"] == 800 and not result.interrupted
    assert summary["updates_per_member"] == 800 - 100  # the update-to-data ratio holds across two resumes
    steps = [(r["env_step"], r["member"]) for r in records(out)]
    assert steps == [(s, m) for s in (200, 400, 600, 800) for m in (0, 1)]  # from the start, nothing twice
    final = json.loads((list_checkpoints(out)[-1] / "manifest.json").read_text())
    assert final["env_step"] == 800 and final["chunk"] == 3


def test_two_resumes_of_one_checkpoint_are_identical(finished):
    """--overlap false: a resumed run is a function of its checkpoint."""
    out, again, _ = finished
    assert records(again) == records(out)
    ours, theirs = leaves(saved_payload(list_checkpoints(out)[-1])), leaves(saved_payload(list_checkpoints(again)[-1]))
    assert len(ours) == len(theirs) > 20
    for a, b in zip(ours, theirs):
        np.testing.assert_array_equal(a, b)


def test_eval_prints_mean_and_std_and_reproduces_the_last_evaluation(finished, capsys):
    out = finished[0]
    logged = {r["member"]: r["return"] for r in records(out) if r["env_step"] == 800}
    capsys.readouterr()
    assert main(["eval", str(out), "--member", "1", "--episodes", "2"]) == 0
    printed = capsys.readouterr().out
    assert "member 1" in printed and "+-" in printed and "over 2 episodes" in printed
    mean = float(printed.split("mean return ")[1].split()[0])
    # Same env seeds as the run's final evaluation of member 1, same policy and statistics.
    assert mean == pytest.approx(logged[1], abs=0.02)
    assert main(["eval", str(out), "--member", "1", "--episodes", "3", "--seed", "11"]) == 0
    assert "over 3 episodes" in capsys.readouterr().out


def read_video(path: Path) -> np.ndarray:
    import imageio_ffmpeg

    frames = imageio_ffmpeg.read_frames(str(path))
    meta = next(frames)
    width, height = meta["size"]
    return np.stack([np.frombuffer(f, np.uint8).reshape(height, width, 3) for f in frames])


def test_eval_video_of_a_host_run_decodes(finished, tmp_path, capsys):
    video = tmp_path / "member0.mp4"
    capsys.readouterr()
    assert main(["eval", str(finished[0]), "--member", "0", "--video", str(video)]) == 0
    printed = capsys.readouterr().out
    assert str(video) in printed and "in 200 steps" in printed and "twin" not in printed
    frames = read_video(video)
    assert frames.shape[0] == 201  # the first observation and Pendulum's 200 steps
    assert frames.std(axis=0).max() > 50  # the pendulum moves
    assert not list(tmp_path.glob(".*partial*"))
