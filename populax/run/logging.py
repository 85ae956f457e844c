"""What a run writes while it trains: metrics.jsonl and TensorBoard events."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from typing import Any


def _clean(value: float) -> float | None:
    """JSON has no NaN: missing values become null."""
    return float(value) if math.isfinite(float(value)) else None


def read_jsonl(path: Path) -> list[dict]:
    """Records of a JSONL file (empty when it does not exist)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class RunLogger:
    """Appends one JSON record per member per evaluation, mirrors scalars to TensorBoard."""

    def __init__(self, run_dir: Path, tensorboard: bool = True, purge_step: int | None = None):
        """``purge_step``: on resume, TensorBoard hides events at or after this step from the stopped run."""
        self.path = run_dir / "metrics.jsonl"
        self._file = self.path.open("a")
        self._writer = None
        if tensorboard:
            from tensorboardX import SummaryWriter

            self._writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=purge_step)

    def log_member(self, record: dict[str, Any]) -> None:
        """Write one evaluation record; ``record`` needs ``env_step`` and ``member``."""
        clean = {
            k: (_clean(v) if isinstance(v, float) else v) for k, v in record.items()
        }
        self._file.write(json.dumps(clean) + "\n")
        if self._writer is not None:
            member, step = record["member"], record["env_step"]
            for name, value in record.items():
                if isinstance(value, float) and math.isfinite(value):
                    self._writer.add_scalar(f"member_{member}/{name}", value, step)
                if name == "hparams":
                    for hp_name, hp_value in value.items():
                        self._writer.add_scalar(f"member_{member}/hp/{hp_name}", hp_value, step)

    def log_population(self, step: int, scalars: dict[str, float]) -> None:
        """Population-level scalars (median, best return...) to TensorBoard only."""
        if self._writer is not None:
            for name, value in scalars.items():
                if math.isfinite(value):
                    self._writer.add_scalar(f"population/{name}", value, step)

    def flush(self) -> None:
        """Make everything written so far durable."""
        self._file.flush()
        os.fsync(self._file.fileno())  # a checkpoint records this offset: it must be on disk first
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        """Flush and close all files."""
        self.flush()
        self._file.close()
        if self._writer is not None:
            self._writer.close()


HPARAMS_DIR = "hparams"
"""Under RUN/tensorboard/: one HParams-dashboard session per member (``member_K``)."""
FINAL_RETURN_TAG = "hparam/final_return"
"""The sessions' metric (its own tag: TensorBoard's HParams dashboard shows any scalar of that name)."""


def write_hparams_sessions(run_dir: Path, summary: dict[str, Any]) -> Path:
    """TensorBoard's HParams dashboard for a finished run: one session per member, with its final
    hyperparameters (and a mixed-shape member's static settings) and its final return as the metric, so a sweep
    reads as a sortable table and parallel coordinates. Rewritten whole: a resumed run's end replaces what an
    earlier end wrote. Returns the sessions' directory."""
    from tensorboardX import SummaryWriter

    root = run_dir / "tensorboard" / HPARAMS_DIR
    shutil.rmtree(root, ignore_errors=True)
    with SummaryWriter(str(root)) as writer:
        for member in summary["members"]:
            final = member["final_return"]
            writer.add_hparams({**member.get("static", {}), **member["hparams"]},
                               {FINAL_RETURN_TAG: math.nan if final is None else float(final)},
                               name=f"member_{member['id']}", global_step=summary["env_steps_per_member"])
    return root
