"""Population strategies: what happens between chunks.

* ``independent`` (``independent.py``): seeds and sweeps, members never interact;
* ``pbt`` (``pbt.py``): Population-Based Training, truncation selection + perturb;
* ``pb2`` (``pb2.py``): PBT whose explore step is a time-varying GP bandit.

``make_strategy`` builds a :class:`PopulationStrategy` (``runner.py``) from a
validated trainer setup; the trainer calls its ``update`` once per chunk after
evaluation. ``plots.write_lineage_plot(run_dir)`` draws ``report/lineage.png``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from populax.population import init_members
from populax.strategies.runner import (
    STRATEGIES,
    PopulationStrategy,
    check_strategy_config,
    detect_failures,
)
from populax.strategies.space import make_space


def make_strategy(setup: Any, run_dir: Path | None = None, init_agents: Any = None) -> PopulationStrategy:
    """The strategy of a validated trainer ``Setup``; its lineage goes to ``run_dir``.

    ``init_agents(keys, hparams)`` must return fresh stacked agent states; by
    default the setup's member ``init`` over the members (``init_members``).
    """
    config = setup.config
    dims = make_space(setup.algorithm.hparams, setup.specs)
    ready = check_strategy_config(config, setup.schedule.chunk_steps, dims)
    if init_agents is None:
        init = init_members(setup.program.init)

        def init_agents(keys, hparams):
            return init(keys, hparams).agent

    return PopulationStrategy(
        config=config,
        dims=dims,
        ready_interval=ready,
        num_chunks=setup.num_chunks,
        total_steps=setup.num_chunks * setup.schedule.chunk_steps,
        init_agents=init_agents,
        hparams=setup.hparams,
        run_dir=run_dir,
    )


__all__ = ["STRATEGIES", "PopulationStrategy", "check_strategy_config", "detect_failures", "make_strategy"]
