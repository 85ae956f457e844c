"""`populax report`'s sweep views: return against each hyperparameter, and a grid's repeats grouped."""

import json
from pathlib import Path

import numpy as np
import pytest

from populax.cli import main

# A grid with repeats: two actor learning rates, two members (seeds) each, and a critic rate per member.
RUN = ["--env", "Pendulum-v1", "--pop", "4", "--total-steps", "1200", "--eval-every", "400",
       "--learning-starts", "200", "--hidden", "16,16", "--batch-size", "32", "--eval-episodes", "2",
       "--no-progress", "--no-tensorboard"]
SWEEP = [*RUN, "--hp.lr-actor", "1e-4,1e-4,3e-3,3e-3", "--hp.lr-critic", "1e-4,3e-4,1e-3,3e-3"]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sweep") / "run"
    assert main(["train", *SWEEP, "--out", str(out)]) == 0
    return out


def table_rows(page: str, heading: str) -> list[list[str]]:
    """The body rows of the markdown table right under ``heading``."""
    table = page.split(heading + "\n", 1)[1].strip("\n").split("\n\n", 1)[0]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in table.splitlines()[2:]]


def test_the_report_draws_return_against_each_varying_hyperparameter_and_groups_a_grids_repeats(sweep):
    import matplotlib.image as mpimg

    page = (sweep / "report" / "report.md").read_text()
    assert "](sensitivity.png)" in page
    image = mpimg.imread(sweep / "report" / "sensitivity.png")
    assert image.shape[1] > 2 * image.shape[0] * 0.9  # two panels side by side: lr-actor and lr-critic
    assert image[..., :3].std() > 0.05

    records = [json.loads(line) for line in (sweep / "metrics.jsonl").read_text().splitlines()]
    last = {r["member"]: r for r in records}
    # lr-actor repeats (2 values x 2 members): a table row per value, numbers from metrics.jsonl's last records.
    rows = table_rows(page, "### lr-actor")
    assert [row[0] for row in rows] == ["0.0001", "0.003"]
    for row, members in zip(rows, ([0, 1], [2, 3])):
        finals = [last[m]["return"] for m in members]
        assert row[1] == "2"
        assert row[2:] == [f"{np.median(finals):.1f}", f"{max(finals):.1f}", f"{min(finals):.1f}"]
    # lr-critic takes a value per member: the member table says it all, no grouped table.
    assert "### lr-critic" not in page


def test_a_pbt_runs_report_groups_no_values_its_members_changed(tmp_path):
    # Two values for four members: values repeat (pigeonhole), and PBT's resample moves members between them.
    out = tmp_path / "pbt"
    assert main(["train", *RUN, "--total-steps", "2000", "--hp.lr-actor", "choice:1e-4,3e-3", "--strategy", "pbt",
                 "--ready-interval", "400", "--pbt-explore", "resample", "--seed", "1", "--out", str(out)]) == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    values = {m: [r["hparams"]["lr-actor"] for r in records if r["member"] == m] for m in range(4)}
    assert any(len(set(v)) > 1 for v in values.values())  # explore changed a member's value
    page = (out / "report" / "report.md").read_text()
    # A value no longer names who trained with it: no grouped table, the figure plots every evaluation.
    assert "](sensitivity.png)" in page and "## Sweep" not in page


# PBT over two hyperparameters TD3 declares logarithmic, given per member: the actor's learning rate (a spread of 10:
# no spread rule makes it log) and tau over 1.6 decades (matplotlib labels its minor ticks, 2e-3 to 9e-3, in a row);
# exploits every 400 steps.
PBT = [*RUN, "--total-steps", "2400", "--hp.lr-actor", "1e-4,2e-4,5e-4,1e-3", "--hp.tau", "0.002,0.004,0.03,0.08",
       "--strategy", "pbt", "--ready-interval", "400", "--seed", "1"]


@pytest.fixture(scope="module")
def pbt(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pbt") / "run"
    assert main(["train", *PBT, "--out", str(out)]) == 0
    return out


@pytest.fixture
def figures(monkeypatch) -> dict:
    """The figures `populax report` saves, by file name (drawn: their tick labels are laid out)."""
    from matplotlib.figure import Figure

    saved, savefig = {}, Figure.savefig

    def spy(fig, path, *args, **kwargs):
        savefig(fig, path, *args, **kwargs)
        saved[Path(path).name] = fig

    monkeypatch.setattr(Figure, "savefig", spy)
    return saved



def value_at(line, step: float, after: bool) -> float:
    """The value a step line drawn where="post" holds just after (or just before) ``step``."""
    xs, ys = np.asarray(line.get_xdata(), float), np.asarray(line.get_ydata(), float)
    index = np.searchsorted(xs, step, side="right" if after else "left") - 1
    return float(ys[index])


def test_hparams_png_changes_a_members_value_at_the_env_step_lineage_puts_the_exploit(pbt, figures):
    assert main(["report", str(pbt)]) == 0
    events = [json.loads(line) for line in (pbt / "lineage.jsonl").read_text().splitlines()]
    changes = [(e, name) for e in events if e["event"] == "exploit" for name in ("lr-actor", "tau")
               if e["old_hparams"][name] != e["new_hparams"][name]]
    assert changes
    fig = figures["hparams.png"]
    for event, name in changes:
        ax = next(ax for ax in fig.axes if ax.get_title() == name)
        line = next(li for li in ax.get_lines() if li.get_label().split(" (")[0] == f"member {event['member']}")
        # metrics.jsonl's record at step S holds the values that trained up to S; the exploit at S sets new ones.
        assert value_at(line, event["env_step"], after=False) == pytest.approx(event["old_hparams"][name], rel=1e-6)
        assert value_at(line, event["env_step"], after=True) == pytest.approx(event["new_hparams"][name], rel=1e-6)


def tick_labels_overlap(axis) -> bool:
    """Whether any two tick labels (major or minor) drawn inside ``axis``'s view run into each other."""
    import itertools

    lo, hi = sorted(axis.get_view_interval())
    coordinate = 0 if axis.axis_name == "x" else 1
    boxes = [label.get_window_extent() for label in axis.get_ticklabels(which="both")
             if label.get_text() and lo <= label.get_position()[coordinate] <= hi]
    return any(a.overlaps(b) for a, b in itertools.combinations(boxes, 2))


def test_declared_log_hyperparameters_are_drawn_on_log_axes_with_labels_that_do_not_overlap(pbt, figures):
    assert main(["report", str(pbt)]) == 0
    records = [json.loads(line) for line in (pbt / "metrics.jsonl").read_text().splitlines()]
    lr = [r["hparams"]["lr-actor"] for r in records]
    assert max(lr) / min(lr) < 20  # log because TD3 declares it so, not by its spread
    for name in ("lr-actor", "tau"):
        sweep_ax = next(ax for ax in figures["sensitivity.png"].axes if ax.get_xlabel() == name)
        trajectory_ax = next(ax for ax in figures["hparams.png"].axes if ax.get_title() == name)
        assert sweep_ax.get_xscale() == "log" and trajectory_ax.get_yscale() == "log"
        for axis in (sweep_ax.xaxis, trajectory_ax.yaxis):
            assert len([t for t in axis.get_ticklabels() if t.get_text()]) >= 2
            assert not tick_labels_overlap(axis), name


def test_an_unfinished_runs_report_is_titled_with_config_yamls_algo_and_env(pbt, tmp_path, figures):
    # A stopped run: config.yaml and the evaluations so far, no summary.json yet.
    run = tmp_path / "prog"
    run.mkdir()
    for name in ("config.yaml", "metrics.jsonl"):
        (run / name).write_bytes((pbt / name).read_bytes())
    assert main(["report", str(run)]) == 0
    page = (run / "report" / "report.md").read_text()
    assert page.startswith("# td3 on Pendulum-v1: population of 4\n")
    assert "has not finished" in page
    assert figures["learning_curves.png"]._suptitle.get_text().startswith("td3 on Pendulum-v1:")
