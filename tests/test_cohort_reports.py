"""What a mixed-shape run (issue 25) reports: static settings per member in summary.json and the CLI's table,
a table per static setting in report.md, and the moves between cohorts in the lineage plot."""

import contextlib
import io
import json
import re

import pytest

from populax.cli import main
from populax.run.report import cohort_moves, static_tables, write_report
from populax.strategies.plots import MOVE_GID, MOVE_LABEL, lineage_figure

SMALL = ["--pop", "4", "--eval-every", "500", "--learning-starts", "200", "--batch-size", "32",
         "--buffer-size", "2000", "--eval-episodes", "2", "--strategy", "pbt", "--ready-interval", "500",
         "--hp.lr-actor", "loguniform:1e-4,1e-2", "--no-recipe", "--no-progress", "--no-tensorboard"]
# Static explore makes even a copy within one cohort move on to the other width: with seed 2, two of the three\n# copies move their member (8x8 -> 32x32), one stays in its cohort.
MIXED = [*SMALL, "--total-steps", "2000", "--hp.hidden", "8x8,8x8,32x32,32x32", "--pbt-static-explore", "0.5",
         "--seed", "2"]
ORDINARY = [*SMALL, "--total-steps", "1000", "--hidden", "8,8", "--seed", "2"]


def train(out, args) -> str:
    """`populax train ARGS --out OUT`; what it printed on stdout (the end-of-run member table)."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):  # rich's Console writes to sys.stdout as it is when printing
        assert main(["train", *args, "--out", str(out)]) == 0
    return printed.getvalue()


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """A finished mixed PBT run (members 0, 1 start at 8x8, 2, 3 at 32x32) and its CLI table."""
    out = tmp_path_factory.mktemp("mixed") / "run"
    return out, train(out, MIXED)


@pytest.fixture(scope="module")
def ordinary(tmp_path_factory):
    """A finished ordinary PBT run (one round, every member 8x8) and its CLI table."""
    out = tmp_path_factory.mktemp("ordinary") / "run"
    return out, train(out, ORDINARY)


def read_run(out):
    """summary.json and the lineage events of the run in ``out``."""
    summary = json.loads((out / "summary.json").read_text())
    lineage = out / "lineage.jsonl"
    events = [json.loads(line) for line in lineage.read_text().splitlines()] if lineage.exists() else []
    return summary, events


def settings_of(label):
    """``hidden=8x8 batch-size=32`` -> its settings (written here again, not imported, to check the reader)."""
    return dict(part.split("=") for part in label.split())


def table_rows(printed):
    """The cells of each row of a rich table printed without a terminal (box-drawing separators)."""
    return [[cell.strip() for cell in line.strip().strip("│┃").split("│" if "│" in line else "┃")]
            for line in printed.splitlines() if line.strip().startswith(("│", "┃"))]


def markdown_table(page, heading):
    """The rows (dicts by column) of the markdown table under ``heading`` in report.md."""
    lines = page.split(heading + "\n", 1)[1].strip().splitlines()
    rows = []
    for line in lines:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    header, body = rows[0], rows[2:]
    return [dict(zip(header, row, strict=True)) for row in body]


def test_the_mixed_run_has_moves_between_cohorts_and_plain_copies(mixed):
    # The checks below tell moves from plain copies: with only one kind they would check little.
    _, events = read_run(mixed[0])
    moves = [e for e in events if e["old_static"] != e["new_static"]]
    assert 0 < len(moves) < len(events), events


def test_summary_members_carry_their_final_cohorts_static_settings(mixed, ordinary):
    summary, events = read_run(mixed[0])
    cohorts = summary["cohorts"]["members"]
    assert sorted(m for members in cohorts.values() for m in members) == [0, 1, 2, 3]
    for label, members in cohorts.items():
        for member in members:
            assert summary["members"][member]["static"] == settings_of(label), (member, label)
    last = {e["member"]: e["new_static"] for e in events}  # the strategy's record agrees
    assert all(summary["members"][m]["static"] == static for m, static in last.items())
    plain, _ = read_run(ordinary[0])
    assert "cohorts" not in plain and all("static" not in m for m in plain["members"])


def test_the_cli_table_has_a_column_per_static_setting(mixed, ordinary):
    summary, _ = read_run(mixed[0])
    header, *rows = table_rows(mixed[1])
    assert header[:2] == ["member", "hidden"] and "lr-actor" in header and header[-1] == "final return", header
    shown = {int(row[0].rstrip(" *")): row[1] for row in rows}
    assert shown == {m["id"]: m["static"]["hidden"] for m in summary["members"]}
    plain_header, *plain_rows = table_rows(ordinary[1])
    assert plain_header == ["member", "lr-actor", "final return"] and len(plain_rows) == 4


def test_the_report_has_a_table_per_static_setting_that_agrees_with_summary_and_lineage(mixed):
    summary, events = read_run(mixed[0])
    page = write_report(mixed[0]).read_text()
    rows = {row["hidden"]: row for row in markdown_table(page, "### hidden")}
    assert set(rows) == {"8x8", "32x32"}
    for label, members in summary["cohorts"]["members"].items():
        row = rows[settings_of(label)["hidden"]]
        assert int(row["members at the end"]) == len(members)
        finals = [summary["members"][m]["final_return"] for m in members]
        assert row["member ids"] == (", ".join(map(str, members)) or "-")
        if finals:
            assert float(row["best final return"]) == pytest.approx(max(finals), abs=0.05)
    for value, row in rows.items():
        into = sum(e["old_static"]["hidden"] != value == e["new_static"]["hidden"] for e in events)
        out_of = sum(e["new_static"]["hidden"] != value == e["old_static"]["hidden"] for e in events)
        assert (int(row["moved in"]), int(row["moved out"])) == (into, out_of), value
    # the member table names each member's width too
    members = {row["member"].split("**")[1] if "**" in row["member"] else row["member"]: row["hidden"]
               for row in markdown_table(page, "## Members")}
    assert members == {str(m["id"]): m["static"]["hidden"] for m in summary["members"]}


def test_an_ordinary_runs_report_has_no_static_setting_tables(ordinary):
    page = write_report(ordinary[0]).read_text()
    assert "## Static settings" not in page and "hidden" not in page and "static settings" not in page


def test_the_lineage_plot_marks_exactly_the_moves_between_cohorts(mixed):
    out = mixed[0]
    summary, events = read_run(out)
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert (out / "report" / "lineage.png").stat().st_size > 1000  # drawn by the run, on this path
    static = {m["id"]: m["static"] for m in summary["members"]}
    fig = lineage_figure(events, metrics, static)
    ax = fig.axes[0]
    arrows = [a for a in ax.texts if a.get_gid() is not None]
    marked = sorted((round(a.xy[1]), round(a.xyann[1])) for a in arrows if a.get_gid() == MOVE_GID)
    moved = sorted((e["member"], e["source"]) for e in events if e["old_static"] != e["new_static"])
    assert marked == moved and len(arrows) == len(events)
    assert cohort_moves(events) == [e for e in events if e["old_static"] != e["new_static"]]
    assert MOVE_LABEL in [t.get_text() for t in ax.get_legend().get_texts()]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == [f"{m}  hidden={static[m]['hidden']}" for m in range(4)], labels


def test_an_ordinary_runs_lineage_plot_marks_no_moves(ordinary):
    out = ordinary[0]
    _, events = read_run(out)
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert events
    ax = lineage_figure(events, metrics).axes[0]
    assert not [a for a in ax.texts if a.get_gid() == MOVE_GID] and ax.get_legend() is None
    assert [t.get_text() for t in ax.get_yticklabels()] == ["0", "1", "2", "3"]


def test_moves_count_per_setting_when_a_move_changes_only_some_settings():
    # Two static settings; the second event moves batch-size only, the failed member's replacement both.
    summary = {"members": [{"id": i, "final_return": r} for i, r in enumerate([-5.0, None, -1.0, -3.0])],
               "cohorts": {"members": {"hidden=8x8 batch-size=32": [0, 1], "hidden=32x32 batch-size=64": [2],
                                       "hidden=32x32 batch-size=32": [3]}}}
    events = [
        {"event": "exploit", "member": 3, "source": 2,
         "old_static": {"hidden": "32x32", "batch-size": "32"}, "new_static": {"hidden": "32x32", "batch-size": "32"}},
        {"event": "exploit", "member": 2, "source": 3,
         "old_static": {"hidden": "32x32", "batch-size": "32"}, "new_static": {"hidden": "32x32", "batch-size": "64"}},
        {"event": "replace_failed", "member": 1, "source": 0,
         "old_static": {"hidden": "32x32", "batch-size": "64"}, "new_static": {"hidden": "8x8", "batch-size": "32"}},
    ]
    assert [e["member"] for e in cohort_moves(events)] == [2, 1]
    page = "\n".join(static_tables(summary, events))
    hidden = {r["hidden"]: r for r in markdown_table(page, "### hidden")}
    batch = {r["batch-size"]: r for r in markdown_table(page, "### batch-size")}
    assert [(r["members at the end"], r["member ids"], r["best final return"], r["median final return"],
             r["moved in"], r["moved out"]) for r in hidden.values()] == [
        ("2", "0, 1", "-5.0", "-5.0", "1", "0"), ("2", "2, 3", "-1.0", "-2.0", "0", "1")]
    assert {v: (r["moved in"], r["moved out"]) for v, r in batch.items()} == {"32": ("1", "1"), "64": ("1", "1")}
    assert static_tables({"members": summary["members"]}, events) == []  # an ordinary run: no tables
    assert re.search(r"^## Static settings$", page, re.M)
