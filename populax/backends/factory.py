"""The backend that runs a configuration's members on this machine; the environment id picks it.

gymnax ids, ``brax:NAME`` and a user's JAX environment get the compiled backend (``backends/compiled``),
Gymnasium/ALE ids and a user's Gymnasium environment the host backend (``backends/host``). Everything that
builds a backend for one machine builds it here: the run (``runtime.setup.make_backend``, for every executor
but ``ray``), each Ray worker for its block, and the Ray backend for its driver-side copy (shapes, ``populax
eval``, ``--video``). The module sits below the runtime and the Ray backend, so neither reaches up for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from populax.envs.jax_envs import gymnax_ids
from populax.envs.routing import resolve_env
from populax.population import Executor, make_executor

if TYPE_CHECKING:
    from populax.agents import Algorithm
    from populax.backends import Backend
    from populax.run.config import TrainConfig


def make_local_backend(config: TrainConfig, algorithm: Algorithm, executor: Executor | None = None,
                       donate: bool = True) -> Backend:
    """The backend of ``config.env`` on this machine (ConfigError on an unusable combination).

    ``executor`` runs the members (default: the one ``config.executor`` names, which is not ``ray``);
    ``donate``: a compiled chunk may consume its input, because the caller keeps only what failure handling
    restores (``edits.kept_before_chunk``), as the driver and a Ray worker do."""
    choice = resolve_env(config.env, gymnax_ids())
    if executor is None:
        executor = make_executor(config.executor, config.pop)
    if choice.kind == "gymnasium":
        from populax.backends.host import make_host_backend

        return make_host_backend(config, algorithm, choice.env_id, executor)
    from populax.backends.compiled import make_compiled_backend

    return make_compiled_backend(config, algorithm, choice.env_id, executor, donate=donate)


__all__ = ["make_local_backend"]
