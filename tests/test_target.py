"""``--target-return``: a run ends at the first evaluation where the population reaches a return, complete
(checkpoint, summary, report), having trained exactly what the uninterrupted run trained until then; and
``populax compare --target`` reads the time to a threshold off any runs."""

import json
from pathlib import Path

import numpy as np
import pytest

import populax
from populax.cli import main
from populax.run.checkpoint import list_checkpoints, verify

COMPILED = dict(env="Pendulum-v1", algo="td3", pop=4, total_steps=2400, eval_every=400, learning_starts=200,
                hidden=(32, 32), batch_size=32, eval_episodes=2, hp={"lr-actor": "loguniform:1e-4,1e-2"}, seed=2,
                progress=False, tensorboard=False)


def metrics(run_dir: Path) -> list[dict]:
    """metrics.jsonl without wall times (the only field two runs of one seed may differ in)."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "wall_time_s"} for r in records]


def best_by_step(records: list[dict]) -> dict[int, float]:
    """Env step -> the best member's evaluation return there."""
    steps = sorted({r["env_step"] for r in records})
    return {s: max(r["return"] for r in records if r["env_step"] == s) for s in steps}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """The uninterrupted run (its target out of reach), and the same run with a target its best member first
    reaches at a later evaluation than the first."""
    root = tmp_path_factory.mktemp("target")
    full = populax.train(populax.TrainConfig(**COMPILED, target_return=1e9, out=str(root / "full")))
    best = best_by_step(metrics(full.run_dir))
    steps = list(best)
    # A new record after the first evaluation, so the run has to stop in the middle (the first one otherwise).
    records = [s for i, s in enumerate(steps) if i > 0 and best[s] > max(best[t] for t in steps[:i])]
    stop = records[0] if records and records[0] != steps[-1] else steps[0]
    stopped = populax.train(populax.TrainConfig(**COMPILED, target_return=best[stop], out=str(root / "stopped")))
    return {"full": full.run_dir, "stopped": stopped.run_dir, "stop": stop, "target": best[stop]}


def test_a_run_ends_at_the_first_evaluation_reaching_its_target_having_trained_the_uninterrupted_runs_prefix(runs,
                                                                                                           capsys):
    full, stopped, stop, target = runs["full"], runs["stopped"], runs["stop"], runs["target"]
    summary = json.loads((full / "summary.json").read_text())
    assert summary["target"] == {"return": 1e9, "stat": "best", "reached": False}
    assert summary["env_steps_per_member"] == 2400

    prefix = [r for r in metrics(full) if r["env_step"] <= stop]
    assert metrics(stopped) == prefix  # the same training, bitwise, up to the evaluation that reached it
    summary = json.loads((stopped / "summary.json").read_text())
    assert summary["env_steps_per_member"] == stop
    target_entry = summary["target"]
    assert target_entry["reached"] and target_entry["env_step"] == stop and target_entry["value"] == target
    assert 0 < target_entry["wall_time_s"] <= summary["wall_time_s"]
    manifest, _ = verify(list_checkpoints(stopped)[-1])
    assert manifest["env_step"] == stop and manifest["target_reached"]["env_step"] == stop
    assert "**Target reached:**" in (stopped / "report" / "report.md").read_text()

    # A run that ended at its target is complete: resuming it trains nothing more and says the same.
    before = (stopped / "metrics.jsonl").read_text()
    capsys.readouterr()
    assert main(["resume", str(stopped), "--no-progress"]) == 0
    assert f"is finished ({stop:,} env steps per member); nothing to resume" in capsys.readouterr().err
    assert (stopped / "metrics.jsonl").read_text() == before
    assert json.loads((stopped / "summary.json").read_text())["target"] == target_entry


def test_compare_reads_the_time_to_a_threshold_off_the_runs_metrics(runs, tmp_path, capsys):
    full, stopped, stop, target = runs["full"], runs["stopped"], runs["stop"], runs["target"]
    assert main(["compare", str(full), str(stopped), "--target", repr(target), "--out", str(tmp_path / "cmp")]) == 0
    page = (tmp_path / "cmp" / "comparison.md").read_text()
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.strip("|").split("|")]
            for line in page.splitlines() if line.startswith("| full") or line.startswith("| stopped")}
    walls = {}
    for name, run in (("full", full), ("stopped", stopped)):
        records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        walls[name] = next(r["wall_time_s"] for r in records if r["env_step"] == stop)
        assert rows[name][-2:] == [f"{stop:,}", f"{walls[name]:,.0f}"]
    assert "First to a best return of" in page
    # Out of every run's reach: said per run and on the page.
    assert main(["compare", str(full), str(stopped), "--target", "1e9", "--out", str(tmp_path / "cmp2")]) == 0
    page = (tmp_path / "cmp2" / "comparison.md").read_text()
    assert page.count("| not reached | - |") == 2 and "No run's best return reached 1e+09" in page


def test_a_host_pbt_run_stops_at_its_median_target_and_closes_its_environments(tmp_path, capsys):
    # CartPole's returns are >= 8: the median reaches 1 at the first evaluation, the run ends after one chunk.
    out = tmp_path / "host"
    assert main(["train", "--env", "gymnasium:CartPole-v1", "--algo", "dqn", "--pop", "4", "--total-steps", "2000",
                 "--eval-every", "500", "--learning-starts", "100", "--hidden", "16,16", "--batch-size", "32",
                 "--eval-episodes", "2", "--strategy", "pbt", "--ready-interval", "500", "--target-return", "1",
                 "--target-stat", "median", "--no-recipe", "--no-progress", "--no-tensorboard",
                 "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["backend"] == "host" and summary["env_steps_per_member"] == 500
    records = metrics(out)
    assert {r["env_step"] for r in records} == {500}
    assert summary["target"]["value"] == pytest.approx(float(np.median([r["return"] for r in records])))
    assert "target reached: median return" in capsys.readouterr().out


@pytest.mark.parametrize("args, fragment", [
    (["--target-stat", "mean", "--target-return", "0"], "--target-stat: unknown statistic 'mean'; allowed: best, median"),
    (["--target-return", "nan"], "--target-return: cannot read 'nan'"),
    (["--target-return", "high"], "--target-return: cannot read 'high'"),
])
def test_a_bad_target_is_one_line_exit_2_nothing_written(tmp_path, capsys, args, fragment):
    out = tmp_path / "run"
    assert main(["train", *args, "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and fragment in err[0], err
    assert not out.exists()


@pytest.mark.extended
def test_a_ray_run_and_a_mixed_shape_run_stop_at_their_target(tmp_path):
    from test_ray import REASON, run_loopback
    from test_ray import populax as ray_cli

    # Mixed shapes (cohorts, one program each), in this process: the first evaluation reaches -100000.
    out = tmp_path / "mixed"
    assert main(["train", "--env", "Pendulum-v1", "--pop", "4", "--total-steps", "1200", "--eval-every", "400",
                 "--learning-starts", "100", "--hp.hidden", "choice:16x16,32x32", "--batch-size", "32",
                 "--eval-episodes", "2", "--strategy", "pbt", "--target-return", "-100000", "--no-recipe", "--no-progress",
                 "--no-tensorboard", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["env_steps_per_member"] == 400 and summary["target"]["reached"] and "cohorts" in summary
    if REASON is not None:
        pytest.skip(f"Ray runs in a loopback-only namespace: {REASON}")
    out = tmp_path / "ray"
    run_loopback(ray_cli("train", "--env", "Pendulum-v1", "--pop", "4", "--total-steps", "1200", "--eval-every", "400",
                         "--learning-starts", "100", "--hidden", "16,16", "--batch-size", "32", "--eval-episodes", "2",
                         "--executor", "ray", "--workers", "2", "--target-return", "-100000", "--no-recipe",
                         "--no-progress", "--no-tensorboard", "--out", str(out)))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["backend"] == "ray" and summary["env_steps_per_member"] == 400 and summary["target"]["reached"]
    assert {r["env_step"] for r in metrics(out)} == {400}
