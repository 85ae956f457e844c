"""Figures of the coupled methods, written into ``RUN/report/`` (``populax report`` embeds every PNG there).

* ``cem_mean_vs_best.png`` (CEM-RL): the CEM mean actor's return and the best sampled actor's
  evaluation return, per generation, against env steps per member;
* ``dvd_diversity.png`` (DvD-TD3): log det K and the mean pairwise action distance over time,
  with lambda and the bandit's posterior means.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def population_series(records: list[dict[str, Any]], field: str) -> tuple[np.ndarray, np.ndarray]:
    """(env steps, value) of a population-level field (the same in every member's record: member 0's)."""
    rows = [r for r in records if r.get("member") == 0 and r.get(field) is not None]
    return np.asarray([r["env_step"] for r in rows], float), np.asarray([r[field] for r in rows], float)


def best_return(records: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """(env steps, the best member's evaluation return) per evaluation."""
    best: dict[int, float] = {}
    for r in records:
        if r.get("member") is not None and r.get("return") is not None:
            best[r["env_step"]] = max(best.get(r["env_step"], -np.inf), r["return"])
    steps = sorted(best)
    return np.asarray(steps, float), np.asarray([best[s] for s in steps])


def plot_cem(records: list[dict[str, Any]], path: Path) -> None:
    """The CEM mean actor vs the best sampled actor."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8.5, 4.8))
    ax.plot(*population_series(records, "mean_policy_return"), color="black", lw=2, label="CEM mean actor")
    ax.plot(*best_return(records), color="crimson", lw=1.5, marker="o", ms=3, label="best sampled actor")
    ax.set_xlabel("env steps per member")
    ax.set_ylabel("evaluation return")
    ax.set_title("CEM-RL: the distribution's mean vs its best sample, per generation")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    save(fig, path)


def save(fig: Any, path: Path) -> None:
    """Write ``fig`` to ``path`` and free it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_dvd(records: list[dict[str, Any]], path: Path) -> None:
    """DvD's diversity (log det K, mean pairwise action distance), lambda and the bandit's posteriors."""
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8.5, 6.4), sharex=True)
    top.plot(*population_series(records, "dvd_logdet"), color="tab:blue", lw=2, label="log det K")
    top.set_ylabel("log det K")
    twin = top.twinx()
    twin.plot(*population_series(records, "dvd_pairwise_distance"), color="tab:orange", lw=1.5,
              label="mean pairwise action distance")
    twin.set_ylabel("mean pairwise distance")
    top.legend(loc="upper left", fontsize=8)
    twin.legend(loc="upper right", fontsize=8)
    top.grid(alpha=0.3)
    bottom.step(*population_series(records, "dvd_lambda"), where="post", color="black", lw=2, label="lambda")
    arm = 0
    while any(f"bandit_mean_{arm}" in r for r in records[:50]):
        bottom.plot(*population_series(records, f"bandit_mean_{arm}"), lw=1, ls="--", label=f"P(improve | arm {arm})")
        arm += 1
    bottom.set_xlabel("env steps per member")
    bottom.set_ylabel("lambda / posterior mean")
    bottom.grid(alpha=0.3)
    bottom.legend(loc="best", fontsize=8)
    fig.suptitle("DvD-TD3: population diversity and the diversity weight")
    save(fig, path)


def write_coupled_plots(records: list[dict[str, Any]], out: Path) -> None:
    """Write the figures whose fields the run logged (nothing for the independent algorithms)."""
    logged = set().union(*(r.keys() for r in records[:50])) if records else set()
    if "mean_policy_return" in logged:
        plot_cem(records, out / "cem_mean_vs_best.png")
    if "dvd_logdet" in logged:
        plot_dvd(records, out / "dvd_diversity.png")
