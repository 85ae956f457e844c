"""Checkpoints and resume: a run stopped at any moment continues to the same result."""

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from cli_process import cli, wait_for
from flax import serialization

from populax.cli import main
from populax.run.checkpoint import STATE_FILE, list_checkpoints
from populax.run.resume import load_checkpoint, load_setup

# A short JAX-env TD3 run of 4 members: 24 chunks of 500 steps, a checkpoint after every chunk
# (long enough that a kill 0-2 s after the first checkpoint lands mid-run on a quiet machine).
ARGS = ["--pop", "4", "--total-steps", "12000", "--eval-every", "500", "--learning-starts", "200", "--hidden", "32,32",
        "--batch-size", "32", "--eval-episodes", "2", "--checkpoint-every", "500", "--keep-checkpoints", "2",
        "--hp.lr-actor", "loguniform:1e-4,1e-2", "--seed", "3", "--no-progress", "--no-tensorboard"]



def final_state(run_dir: Path) -> list[np.ndarray]:
    """Every leaf of the newest checkpoint (parameters, optimizer states, buffers, keys...)."""
    newest = list_checkpoints(run_dir)[-1]
    return [np.asarray(x) for x in _leaves(serialization.msgpack_restore((newest / STATE_FILE).read_bytes()))]


def _leaves(tree):
    if isinstance(tree, dict):
        return [leaf for key in sorted(tree) for leaf in _leaves(tree[key])]
    return [] if tree is None else [tree]


def metrics(run_dir: Path) -> list[dict]:
    """metrics.jsonl without wall times (the only field that may differ)."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "wall_time_s"} for r in records]


def assert_same_run(run: Path, reference: Path) -> None:
    assert metrics(run) == metrics(reference)
    ours, theirs = final_state(run), final_state(reference)
    assert len(ours) == len(theirs) > 20
    for a, b in zip(ours, theirs):
        np.testing.assert_array_equal(a, b)  # bitwise: same machine, same compiled program


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The uninterrupted run."""
    out = tmp_path_factory.mktemp("ref") / "run"
    assert main(["train", *ARGS, "--out", str(out)]) == 0
    return out



def test_kill_9_then_resume_matches_an_uninterrupted_run(tmp_path, reference):
    out = tmp_path / "run"
    process = subprocess.Popen(cli("train", *ARGS, "--out", str(out)), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for(lambda: list_checkpoints(out), process)
    time.sleep(random.Random(5).uniform(0.0, 2.0))  # a "random" moment after the first checkpoint, seeded
    process.kill()
    process.communicate()
    assert not (out / "summary.json").exists(), "the run finished before the kill; make it longer"
    stopped_at = list_checkpoints(out)[-1].name
    result = subprocess.run(cli("resume", str(out), "--no-progress"), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert f"from {stopped_at}" in result.stderr
    assert_same_run(out, reference)


def test_truncated_newest_checkpoint_is_reported_and_the_previous_one_used(tmp_path, reference, capsys):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(reference, out)
    previous, newest = list_checkpoints(out)[-2:]
    state = newest / STATE_FILE
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    capsys.readouterr()
    assert main(["resume", str(out), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "device(s)" not in err  # resumed over the devices it was trained on: no layout warning
    problems = [line for line in err.splitlines() if "corrupt" in line]
    assert len(problems) == 1 and newest.name in problems[0] and "checksum" in problems[0], err
    assert f"from {previous.name}" in err
    assert_same_run(out, reference)  # the last chunk was trained again, identically


def test_a_resume_over_another_device_count_says_its_numbers_will_differ(tmp_path, reference):
    """--executor auto splits the members over every device (on a CPU one per core): a run resumed where there
    are fewer lays them out differently, and its numbers drift from the uninterrupted run's. A user trial found
    a difference of 112 in the final returns with no word of it; the resume now says so in one line."""
    import os
    import shutil

    import jax

    if jax.default_backend() != "cpu":
        pytest.skip("XLA_FLAGS' host device count changes the layout on a CPU only")
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    shutil.rmtree(list_checkpoints(out)[-1])  # stopped before its last checkpoint
    (out / "summary.json").unlink()
    one_device = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
    result = subprocess.run(cli("resume", str(out), "--no-progress"), capture_output=True, text=True, env=one_device)
    assert result.returncode == 0, result.stderr
    warned = [line for line in result.stderr.splitlines() if "device(s)" in line]
    assert warned == ["populax: this run was trained with its members split over 2 cpu device(s) and resumes over "
                      "1 cpu: --executor auto lays them out differently here, so the numbers will not equal an "
                      "uninterrupted run's (--executor vmap lays them out alike on every machine)"], result.stderr
    # reading a run is not resuming it: eval (as load_policy, --init-from) says nothing of the layout
    read = subprocess.run(cli("eval", str(out), "--episodes", "1"), capture_output=True, text=True, env=one_device)
    assert read.returncode == 0 and "device(s)" not in read.stderr, read.stderr


def test_a_checkpoint_from_before_a_hyperparameter_existed_resumes_with_its_default(tmp_path, reference):
    """A build that adds a traced hyperparameter (DQN's tau did) still resumes older runs: the missing one takes
    the run's value (here TD3's tau, not set: its default), and the resumed run equals the uninterrupted one."""
    import hashlib
    import shutil

    out = tmp_path / "run"
    shutil.copytree(reference, out)
    previous, newest = list_checkpoints(out)[-2:]
    shutil.rmtree(newest)
    payload = serialization.msgpack_restore((previous / STATE_FILE).read_bytes())
    del payload["population"]["hparams"]["tau"]
    data = serialization.msgpack_serialize(payload)
    (previous / STATE_FILE).write_bytes(data)
    manifest = json.loads((previous / "manifest.json").read_text())
    manifest.update(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))
    (previous / "manifest.json").write_text(json.dumps(manifest))
    assert main(["resume", str(out), "--no-progress"]) == 0
    assert_same_run(out, reference)


def test_sigint_leaves_a_checkpoint_and_says_how_to_resume(tmp_path):
    out = tmp_path / "run"
    args = [a if a != "12000" else "100000" for a in ARGS]
    args[args.index("--checkpoint-every") + 1] = "100000"  # no periodic checkpoint: only the signal writes one
    process = subprocess.Popen(cli("train", *args, "--out", str(out)), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    wait_for(lambda: (out / "metrics.jsonl").is_file() and (out / "metrics.jsonl").stat().st_size > 0, process)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr
    assert f"populax resume {out}" in stderr
    assert "Traceback" not in stderr
    assert not (out / "summary.json").exists()
    setup = load_setup(out)
    checkpoint = load_checkpoint(setup)
    assert 0 <= checkpoint.manifest["chunk"] < setup.num_chunks - 1
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert checkpoint.manifest["metrics_offset"] == (out / "metrics.jsonl").stat().st_size
    assert len(lines) == 4 * (checkpoint.manifest["chunk"] + 1)


def test_a_whole_population_loads_from_python(reference):
    """populax.load_run_checkpoint: every member's state as the run holds it (a user trial found only
    load_policy, one actor: critics and optimizer states needed a raw msgpack read)."""
    import jax

    import populax

    checkpoint = populax.load_run_checkpoint(reference)
    population = checkpoint.population
    assert checkpoint.path == list_checkpoints(reference)[-1] and checkpoint.manifest["env_step"] == 12_000
    assert np.asarray(population.env_steps).tolist() == [12_000] * 4
    assert {"actor", "critic", "actor_opt", "critic_opt"} <= set(vars(population.agent))
    saved = final_state(reference)  # the file's own leaves: the loaded networks are those numbers
    for network in (population.agent.actor, population.agent.critic):
        leaf = np.asarray(jax.tree.leaves(network)[0])
        assert any(a.shape == leaf.shape and np.array_equal(a, leaf) for a in saved)
    summary = json.loads((reference / "summary.json").read_text())
    np.testing.assert_allclose(checkpoint.manifest["returns"], [m["final_return"] for m in summary["members"]])


def test_only_the_newest_checkpoints_are_kept(reference, tmp_path):
    names = [p.name for p in list_checkpoints(reference)]
    assert names == ["chunk_000022", "chunk_000023"]  # --keep-checkpoints 2, the last is the final chunk
    manifest = json.loads((reference / "checkpoints" / "chunk_000023" / "manifest.json").read_text())
    assert manifest["env_step"] == 12000 and manifest["buffer_saved"] and len(manifest["sha256"]) == 64


def test_eval_reproduces_the_logged_final_evaluation(reference, capsys):
    summary = json.loads((reference / "summary.json").read_text())
    member = summary["best_member"]
    capsys.readouterr()
    assert main(["eval", str(reference), "--member", str(member), "--episodes", "2"]) == 0
    printed = capsys.readouterr().out
    mean = float(printed.split("mean return ")[1].split()[0])
    # Same keys and episode count as the run's last evaluation: the same return.
    assert mean == pytest.approx(summary["members"][member]["final_return"], abs=0.02)
    other = 1 - member if member < 2 else 0
    assert main(["eval", str(reference), "--member", str(other), "--episodes", "2"]) == 0
    assert f"member {other}" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, fragment",
    [(["--member", "4"], "--member must be between 0 and 3"),
     (["--member", "0", "--video", "clip.gif"], "--video: clip.gif must end in .mp4"),
     (["--member", "0", "--video", "no/such/dir/clip.mp4"], "--video: directory no/such/dir does not exist")],
)
def test_eval_bad_input_is_one_line(reference, capsys, args, fragment):
    capsys.readouterr()
    assert main(["eval", str(reference), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and fragment in err[0]


def test_eval_video_replays_a_gymnax_pendulum_member_in_its_gymnasium_twin(reference, tmp_path, capsys):
    import imageio_ffmpeg

    video = tmp_path / "pendulum.mp4"
    capsys.readouterr()
    assert main(["eval", str(reference), "--member", "1", "--video", str(video)]) == 0
    printed = capsys.readouterr().out
    assert "replayed in Gymnasium's Pendulum-v1" in printed and "in 200 steps" in printed
    frames = imageio_ffmpeg.read_frames(str(video))
    width, height = next(frames)["size"]
    frames = np.stack([np.frombuffer(f, np.uint8).reshape(height, width, 3) for f in frames])
    assert frames.shape[0] == 201  # the first observation and Pendulum's 200 steps
    assert frames.std(axis=0).max() > 50  # not a still picture


def test_eval_video_refuses_a_gymnax_env_without_a_twin_in_one_line(reference, tmp_path, capsys):
    import shutil

    import yaml

    out = tmp_path / "run"
    shutil.copytree(reference, out)
    config = yaml.safe_load((out / "config.yaml").read_text())
    config.update(env="SpaceInvaders-MinAtar", algo="dqn")  # gymnax only: nothing renders it
    (out / "config.yaml").write_text(yaml.safe_dump(config))
    video = tmp_path / "clip.mp4"
    capsys.readouterr()
    assert main(["eval", str(out), "--member", "0", "--video", str(video)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "--video: gymnax's SpaceInvaders-MinAtar has no Gymnasium twin" in err[0] and "Pendulum-v1" in err[0]
    assert not video.exists() and not list(tmp_path.glob("*.mp4"))


def test_eval_video_without_its_extra_names_it(reference, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)  # import fails as if not installed
    capsys.readouterr()
    assert main(["eval", str(reference), "--member", "0", "--video", str(tmp_path / "clip.mp4")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "install populax[video]" in err[0]
    assert not (tmp_path / "clip.mp4").exists()


def test_report_writes_decodable_figures_and_a_page_linking_them(reference, tmp_path):
    import shutil

    import matplotlib.image as mpimg

    out = tmp_path / "run"
    shutil.copytree(reference, out)
    shutil.rmtree(out / "report")
    # Another part of populax (PBT) drops its figure here; the page must show it too.
    (out / "report").mkdir()
    shutil.copy(reference / "report" / "best_member.png", out / "report" / "lineage.png")
    result = subprocess.run(cli("report", str(out)), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    page = (out / "report" / "report.md").read_text()
    summary = json.loads((out / "summary.json").read_text())
    assert f"Winner: member {summary['best_member']}" in page
    for name in ("learning_curves.png", "best_member.png", "hparams.png", "sensitivity.png", "lineage.png"):
        assert f"]({name})" in page
        image = mpimg.imread(out / "report" / name)
        assert image.shape[0] > 300 and image.shape[1] > 400
        assert image[..., :3].std() > 0.05  # not a blank canvas
    assert "lr-actor" in page  # the varying hyperparameter is a column of the table
    assert page.count("\n| ") >= 1 + 4  # header + one row per member


def test_report_and_resume_name_a_directory_that_is_not_a_run(tmp_path):
    for command in ("report", "resume", "eval"):
        extra = ["--member", "0"] if command == "eval" else []
        result = subprocess.run(cli(command, str(tmp_path), *extra), capture_output=True, text=True)
        assert result.returncode == 2 and "not a populax run directory" in result.stderr, result.stderr


def test_save_restore_roundtrip_prunes_and_ignores_partial_writes(reference, tmp_path):
    import shutil

    import jax

    from populax.run.checkpoint import restore, save_checkpoint

    out = tmp_path / "run"
    shutil.copytree(reference, out)
    dead = out / "checkpoints" / ".tmp-killed"  # what a kill -9 in the middle of a write leaves
    dead.mkdir()
    (dead / STATE_FILE).write_bytes(b"\x00" * 10)
    assert [p.name for p in list_checkpoints(out)] == ["chunk_000022", "chunk_000023"]
    checkpoint = load_checkpoint(load_setup(out))
    manifest = {k: v for k, v in checkpoint.manifest.items() if k not in ("sha256", "bytes")}
    save_checkpoint(out, checkpoint.population, chunk=24, manifest=manifest, strategy={"lineage": [[0, 1]], "method": "pbt"}, keep=2)
    assert [p.name for p in list_checkpoints(out)] == ["chunk_000023", "chunk_000024"] and not dead.exists()
    again = restore(out / "checkpoints" / "chunk_000024", checkpoint.population)
    assert jax.tree.structure(again.population) == jax.tree.structure(checkpoint.population)
    for a, b in zip(jax.tree.leaves(again.population), jax.tree.leaves(checkpoint.population)):
        if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):  # typed keys survive as keys
            a, b = jax.random.key_data(a), jax.random.key_data(b)
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert again.strategy == {"lineage": [[0, 1]], "method": "pbt"}


def test_checkpoints_order_by_chunk_number_past_six_digits(tmp_path):
    """Past chunk 999,999 names outgrow their padding: order, pruning and resume still follow the number."""
    from populax.run.checkpoint import latest_checkpoint, save_checkpoint

    def population(chunk: int) -> dict:
        return {"params": np.full((2, 3), chunk, np.float32), "step": np.array([chunk, chunk], np.int32)}

    out = tmp_path / "run"
    (out / "checkpoints" / "chunk_notes").mkdir(parents=True)  # not a number: not a checkpoint, never pruned
    chunks = [999_998, 999_999, 1_000_000, 1_000_001]
    for chunk in chunks:
        save_checkpoint(out, population(chunk), chunk=chunk, manifest={}, keep=10)
    names = [p.name for p in list_checkpoints(out)]
    assert names == ["chunk_999998", "chunk_999999", "chunk_1000000", "chunk_1000001"]

    save_checkpoint(out, population(1_000_002), chunk=1_000_002, manifest={}, keep=3)
    assert [p.name for p in list_checkpoints(out)] == ["chunk_1000000", "chunk_1000001", "chunk_1000002"]
    assert (out / "checkpoints" / "chunk_notes").is_dir()

    newest = latest_checkpoint(out, population(0))
    assert newest.path.name == "chunk_1000002" and newest.manifest["chunk"] == 1_000_002
    np.testing.assert_array_equal(np.asarray(newest.population["params"]), np.full((2, 3), 1_000_002, np.float32))
