"""Population strategies: what happens between chunks.

* ``independent`` (``independent.py``): seeds and sweeps, members never interact;
* ``pbt`` (``pbt.py``): Population-Based Training, truncation selection + perturb;
* ``pb2`` (``pb2.py``): PBT whose explore step is a time-varying GP bandit.

``make_strategy`` builds a :class:`PopulationStrategy` (``runner.py``) from a
validated run setup; the driver calls its ``update`` once per chunk after
evaluation, on every backend. ``plots.write_lineage_plot(run_dir)`` draws ``report/lineage.png``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from populax.strategies.runner import (
    STRATEGIES,
    PopulationStrategy,
    check_strategy_config,
    detect_failures,
)


def make_strategy(setup: Any, run_dir: Path | None = None) -> PopulationStrategy:
    """The strategy of a validated ``RunSetup`` (``populax.runtime.setup``); its lineage goes to ``run_dir``.

    The strategy decides; the backend applies its edits where the members live
    (re-initialisation: the backend's ``init_agents``, only the failed members' agents).
    """
    return PopulationStrategy(
        config=setup.config,
        dims=setup.dims,
        ready_interval=setup.ready_interval,
        num_chunks=setup.num_chunks,
        total_steps=setup.num_chunks * setup.chunk_steps,
        hparams=setup.hparams,
        run_dir=run_dir,
        policy_fields=setup.algorithm.policy_fields,
        optimizer_fields=setup.algorithm.optimizer_fields,
        space=setup.space,
        assignment=setup.assignment,
    )


__all__ = ["STRATEGIES", "PopulationStrategy", "check_strategy_config", "detect_failures", "make_strategy"]
