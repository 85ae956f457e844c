"""``independent``: seeds and sweeps, members never interact.

Sweeps need nothing here: the per-member values (fixed lists, grids given as
lists, random draws from distributions) are drawn by ``populax.hparams`` from
the run's seed. What this module adds is what happens to a member that fails
(NaN/Inf parameters or losses): it is re-initialised (fresh networks and
optimizer states, same hyperparameters, replay buffer kept) or frozen (its
last finite state is kept and no longer changes), and the run goes on. The
member edits themselves are ``populax.member``'s (rollback_data,
reinitialise, freeze), shared with PBT.
"""

from __future__ import annotations

ON_FAILURE = ("reinit", "freeze")
