"""Coupled population methods: the members share state inside the update.

* CEM-RL (``cem.py``): a shared TD3 critic, a CEM over the actors' parameters;
* DvD-TD3 (``dvd.py``): TD3 actors with a shared critic and a diversity term over all actors.

The algebra lives here (``shared_td3.py``: actors, the shared critic and replay;
the distribution; the kernel and the bandit; ``plots.py``: their report
figures), as pure functions; the population programs that run them are in
``populax.backends.compiled.coupled`` (and ``backends.host.coupled``). Their population-level state (shared
critic, CEM distribution, bandit) is ``Member.shared``: no member axis,
checkpointed with the members.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def mean_policy_summary(metrics: dict[str, Any]) -> dict[str, float]:
    """summary.json's ``mean_policy_return`` (CEM-RL: the CEM mean actor at the last generation), when logged."""
    if "mean_policy_return" not in metrics:
        return {}
    return {"mean_policy_return": float(np.asarray(metrics["mean_policy_return"])[0])}
