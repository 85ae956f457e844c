"""What crosses the network in an ``--executor ray`` run: one line of ``RUN/ray.jsonl`` per transfer, summed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from populax.run.logging import read_jsonl


class Traffic:
    """Bytes and milliseconds moved between the driver and the workers: lines of RUN/ray.jsonl."""

    def __init__(self, path: Path):
        self.path = path

    def log(self, kind: str, nbytes: int, seconds: float, **fields: Any) -> None:
        """Append one transfer to ray.jsonl."""
        self.note({"event": kind, "bytes": nbytes, "ms": round(1000 * seconds, 3), **fields})

    def note(self, record: dict) -> None:
        """Append one record to ray.jsonl (when the run directory exists)."""
        if self.path.parent.is_dir():
            with self.path.open("a") as file:
                file.write(json.dumps(record) + "\n")

    def totals(self) -> dict[str, dict[str, float]]:
        """Count, bytes, member-state bytes and seconds by kind over the whole run (every session of it, redone
        work included)."""
        totals: dict[str, dict[str, float]] = {}
        for record in read_jsonl(self.path):
            if "bytes" in record:
                total = totals.setdefault(record["event"], {"count": 0, "bytes": 0, "member_state_bytes": 0,
                                                            "seconds": 0.0})
                total["count"] += 1
                total["bytes"] += record["bytes"]
                total["member_state_bytes"] += record.get("member_state_bytes", 0)
                total["seconds"] += record["ms"] / 1000
        return totals
