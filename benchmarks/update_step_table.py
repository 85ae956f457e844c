"""Markdown tables of `populax bench update-step` results, and the issue's target ratios.

    python benchmarks/update_step_table.py docs/bench/update-step-td3.json [more.json ...]

For each (algorithm, steps at once): per-member milliseconds of every
implementation at every N, then for ``auto``: its per-member time against
jax-sequential and torch-sequential, its share of the matmul peak measured
in the same rounds, and its flatness (per-member time at N over at N = 4).
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict


def load_rows(paths: list[str]) -> list[dict]:
    """All timed rows of the given result files."""
    rows = []
    for path in paths:
        with open(path) as handle:
            rows += [r for r in json.load(handle)["results"] if "median_ms" in r]
    return rows


def per_member_table(rows: list[dict]) -> str:
    """One row per implementation, one column per N: per-member ms."""
    pops = sorted({r["pop"] for r in rows})
    impls = list(dict.fromkeys(r["impl"] for r in rows))
    cell = {(r["impl"], r["pop"]): r["per_member_ms"] for r in rows}
    lines = ["| impl | " + " | ".join(f"N={n}" for n in pops) + " |", "| --- |" + " ---: |" * len(pops)]
    for impl in impls:
        values = [f"{cell[(impl, n)]:.2f}" if (impl, n) in cell else "-" for n in pops]
        lines.append(f"| {impl} | " + " | ".join(values) + " |")
    return "\n".join(lines)


def time_ratio(row: dict, other: dict | None) -> str:
    """row's per-member time over other's, or '-' when other was not timed."""
    return f"{row['per_member_ms'] / other['per_member_ms']:.2f}" if other else "-"


def auto_ratios(rows: list[dict]) -> str:
    """auto vs the baselines at each N (lower is better for the time ratios)."""
    by = {(r["impl"], r["pop"]): r for r in rows}
    base = by.get(("auto", 4))
    lines = ["| N | auto / jax-sequential | auto / torch-sequential | auto % of matmul peak | auto per-member vs N=4 |",
             "| ---: | ---: | ---: | ---: | ---: |"]
    for n in sorted({r["pop"] for r in rows}):
        auto = by.get(("auto", n))
        if auto is None:
            continue

        flat = f"{auto['per_member_ms'] / base['per_member_ms']:.2f}" if base else "-"
        lines.append(f"| {n} | {time_ratio(auto, by.get(('jax-sequential', n)))} | "
                     f"{time_ratio(auto, by.get(('torch-sequential', n)))} | "
                     f"{100 * auto['peak_fraction']:.0f}% | {flat} |")
    return "\n".join(lines)


def main(paths: list[str]) -> None:
    """Print the tables of every (algorithm, steps at once) in ``paths``."""
    groups = defaultdict(list)
    for row in load_rows(paths):
        groups[(row["algo"], row["steps_at_once"])].append(row)
    for (algo, steps), rows in groups.items():
        print(f"\n#### {algo}, {steps} update(s) per call: per-member ms\n")
        print(per_member_table(rows))
        print(f"\n{algo}, {steps} update(s) per call: auto against the targets\n")
        print(auto_ratios(rows))


if __name__ == "__main__":
    main(sys.argv[1:])
