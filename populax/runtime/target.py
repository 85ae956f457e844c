"""``--target-return``: end a run at the first evaluation where the population reaches a return.

The check reads the evaluation's returns exactly as metrics.jsonl logs them (before PBT's edits), so what
stopped the run can be read back from the run's own files. The run ends complete: its last checkpoint,
summary and report are written as at ``total_steps``, and ``populax resume`` finds nothing left to train.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from populax.run.config import TrainConfig


class TargetReached(NamedTuple):
    """When the population reached ``--target-return``."""

    env_step: int
    """Env steps per member at that evaluation."""
    wall_time_s: float
    """Seconds since the run began (a resumed run's earlier sessions included)."""
    value: float
    """The statistic (``--target-stat``) of that evaluation's returns."""


def target_statistic(returns: np.ndarray, stat: str) -> float:
    """The best or the median evaluation return, failed (NaN) members left out; -inf when every member failed."""
    finite = np.asarray(returns, float)[np.isfinite(returns)]
    if not finite.size:
        return -np.inf
    return float(finite.max() if stat == "best" else np.median(finite))


def check_target(config: TrainConfig, returns: np.ndarray, env_step: int, wall_time_s: float) -> TargetReached | None:
    """A :class:`TargetReached` when this evaluation reaches the run's target; None otherwise or without one."""
    if config.target_return is None:
        return None
    value = target_statistic(returns, config.target_stat)
    return TargetReached(int(env_step), float(wall_time_s), value) if value >= config.target_return else None


def target_summary(config: TrainConfig, reached: TargetReached | None) -> dict[str, Any]:
    """summary.json's ``target`` entry (``{}`` for a run without a target): the target, whether and when it
    was reached."""
    if config.target_return is None:
        return {}
    entry = {"return": config.target_return, "stat": config.target_stat, "reached": reached is not None}
    if reached is not None:
        entry.update(reached._asdict())
    return {"target": entry}


def reached_from_manifest(manifest: dict[str, Any]) -> TargetReached | None:
    """The checkpoint's record of a reached target (a run that ended there), else None."""
    saved = manifest.get("target_reached")
    return None if saved is None else TargetReached(**saved)
