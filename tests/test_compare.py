"""`populax compare`: real runs side by side; the numbers on the page are those of their metrics.jsonl."""

import json
import shutil

import numpy as np
import pytest

import populax
from populax.cli import main


def final_returns(run_dir) -> np.ndarray:
    """Every member's return at the run's last evaluation, from metrics.jsonl."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    last = max(r["env_step"] for r in records)
    return np.array([r["return"] for r in records if r["env_step"] == last])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two short TD3 runs on Pendulum that differ in strategy, in directories with the same name."""
    root = tmp_path_factory.mktemp("runs")
    dirs = []
    for strategy in ("independent", "pbt"):
        out = root / strategy / "run"
        populax.train(populax.TrainConfig(
            env="Pendulum-v1", algo="td3", pop=4, total_steps=800, eval_every=400, eval_episodes=2, hidden=(16, 16),
            learning_starts=200, batch_size=32, strategy=strategy, hp={"lr-actor": "loguniform:1e-4,3e-3"},
            out=str(out), progress=False, tensorboard=False,
            **({"ready_interval": 400} if strategy == "pbt" else {})))
        dirs.append(out)
    return dirs


def test_the_page_shows_each_runs_final_median_and_best(runs, tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(["compare", *map(str, runs), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    page = (out / "comparison.md").read_text()
    assert (out / "comparison.png").stat().st_size > 10_000 and "![comparison](comparison.png)" in page
    medians = {}
    for run, label, strategy in zip(runs, ("independent/run", "pbt/run"), ("independent", "pbt")):
        returns = final_returns(run)
        medians[label] = np.median(returns)
        row = next(line for line in page.splitlines() if line.startswith(f"| {label} |"))
        assert f"td3 on Pendulum-v1, {strategy}, pop 4" in row and "| 800 |" in row
        assert f"| {np.median(returns):,.1f} | {returns.max():,.1f} |" in row, row
        assert row in printed  # the table is printed too
    winner = max(medians, key=medians.get)
    assert f"Highest final population median: **{winner}**" in page


def test_an_unfinished_run_is_shown_as_running(runs, tmp_path):
    """The Python API's `populax.compare_runs`, on a run without summary.json (still training)."""
    partial = tmp_path / "partial"
    shutil.copytree(runs[0], partial)
    (partial / "summary.json").unlink()
    page = populax.compare_runs([runs[1], partial], tmp_path / "cmp")
    assert page == tmp_path / "cmp" / "comparison.md"
    row = next(line for line in page.read_text().splitlines() if line.startswith("| partial (running) |"))
    assert f"| {np.median(final_returns(partial)):,.1f} |" in row


def test_runs_of_unequal_budgets_are_flagged(runs, tmp_path):
    """A run cut after its first evaluation (400 steps per member) beside one of 800: the page says their final
    returns are not comparable (the curves at equal steps are)."""
    short = tmp_path / "short"
    shutil.copytree(runs[0], short)
    (short / "summary.json").unlink()
    metrics = short / "metrics.jsonl"
    metrics.write_text("".join(line + "\n" for line in metrics.read_text().splitlines()
                               if json.loads(line)["env_step"] <= 400))
    page = populax.compare_runs([runs[1], short], tmp_path / "cmp", target=-1000.0).read_text()
    assert "*These runs ended at different env steps per member (400, 800)" in page
    assert "Highest final population median (at unequal budgets):" in page
    same = populax.compare_runs(runs, tmp_path / "same").read_text()
    assert "different env steps" not in same and "Highest final population median: " in same


@pytest.mark.parametrize("case, fragment", [
    ("one run", "compare needs two or more run directories (got 1)"),
    ("not a run", "has no metrics.jsonl"),
])
def test_mistakes_are_one_line_and_write_nothing(runs, tmp_path, capsys, case, fragment):
    args = [str(runs[0])] if case == "one run" else [str(runs[0]), str(tmp_path)]
    out = tmp_path / "cmp"
    capsys.readouterr()
    assert main(["compare", *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and fragment in err[0], err
    assert not out.exists()


def test_seeds_of_one_setting_are_grouped_with_their_mean_and_spread(runs, tmp_path):
    """A second seed of the independent run (its only other difference: where it is written): the page groups the
    two as one setting, with the mean +- std of their final population medians and best members over the seeds,
    and draws seeds.png; the PBT run is a group of one."""
    seed_1 = tmp_path / "seed1" / "run"
    populax.train(populax.TrainConfig(
        env="Pendulum-v1", algo="td3", pop=4, total_steps=800, eval_every=400, eval_episodes=2, hidden=(16, 16),
        learning_starts=200, batch_size=32, strategy="independent", hp={"lr-actor": "loguniform:1e-4,3e-3"},
        seed=1, out=str(seed_1), progress=False, tensorboard=False))
    out = tmp_path / "cmp"
    page = populax.compare_runs([runs[0], seed_1, runs[1]], out).read_text()
    assert "## Across seeds" in page and (out / "seeds.png").stat().st_size > 10_000
    medians = [float(np.median(final_returns(run))) for run in (runs[0], seed_1)]
    bests = [float(final_returns(run).max()) for run in (runs[0], seed_1)]
    row = next(line for line in page.splitlines() if line.startswith("| ready_interval=0, strategy=independent |"))
    assert (f"| 0, 1 | 800 | {np.mean(medians):,.1f} +- {np.std(medians, ddof=1):,.1f} (2) | "
            f"{np.mean(bests):,.1f} +- {np.std(bests, ddof=1):,.1f} (2) |") in row, row
    pbt = next(line for line in page.splitlines() if line.startswith("| ready_interval=400, strategy=pbt |"))
    assert pbt.endswith(f"| {np.median(final_returns(runs[1])):,.1f} (1) | {final_returns(runs[1]).max():,.1f} (1) |")


def test_runs_of_different_settings_only_have_no_seed_section(runs, tmp_path):
    page = populax.compare_runs(runs, tmp_path / "cmp").read_text()
    assert "Across seeds" not in page and not (tmp_path / "cmp" / "seeds.png").exists()


def test_seeds_are_grouped_across_a_missing_setting_and_how_they_were_run():
    """config.yaml of a run written before a setting existed lacks it (its default then); where and how a run
    was executed and checkpointed is not the experiment: neither splits seeds of one setting."""
    from pathlib import Path

    from populax.run.compare import RunCurves, seed_groups
    from populax.run.config import TrainConfig, config_to_dict

    def run(label, **changes):
        config = {**config_to_dict(TrainConfig()), **changes}
        return RunCurves(label, Path(label), *([np.zeros(1)] * 6), config, None)

    old = run("old", seed=0)
    del old.config["clip_rewards"]
    runs = [old, run("new", seed=1, executor="vmap", keep_checkpoints=5, checkpoint_every=1000),
            run("pbt", seed=0, strategy="pbt")]
    groups = seed_groups(runs)
    assert [(label, [r.label for r in members]) for label, members in groups] == [
        ("strategy=independent", ["old", "new"]), ("strategy=pbt", ["pbt"])]
