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
