"""Where an environment id goes: the compiled path (gymnax, brax, a user's JAX environment) or the host path
(Gymnasium/ALE, a user's Gymnasium environment).

Every environment id of a run is routed here, gymnax's included: the backend factory
(``populax.backends.factory``, for the run, its Ray workers and ``populax eval``) and ``--video`` ask
:func:`resolve_env` first, then build the environment with ``make_jax_env`` (``envs/jax_envs.py``) or
``make_host_spec`` (``envs/host_envs.py``).
"""

from __future__ import annotations

from typing import NamedTuple

from populax.envs.custom import is_custom, resolve_custom
from populax.envs.jax_envs import is_brax_id


class EnvChoice(NamedTuple):
    """Where an ``--env`` value goes: the compiled (gymnax) or the host (Gymnasium) path."""

    kind: str
    """"gymnax", "brax", "jax" (a user's JAX environment) or "gymnasium"."""
    env_id: str
    """The id without its ``gymnax:``/``gymnasium:`` prefix."""


def resolve_env(env_id: str, gymnax_ids: list[str]) -> EnvChoice:
    """Decide the path of ``env_id``: a prefix chooses; otherwise gymnax ids stay compiled.

    A user's environment (``py:module:attribute``, or an ``object:`` of the Python API; ``populax.envs.custom``)
    goes where its kind belongs: "jax" (gymnax API or brax Env, compiled) or "gymnasium" (host)."""
    if is_custom(env_id):  # the id keeps its prefix: make_jax_env / make_host_spec resolve it again
        return EnvChoice(resolve_custom(env_id)[0], env_id)
    if is_brax_id(env_id):  # brax tasks keep their prefix: it is part of the id
        return EnvChoice("brax", env_id)
    for kind in ("gymnax", "gymnasium"):
        if env_id.startswith(kind + ":"):
            return EnvChoice(kind, env_id[len(kind) + 1 :])
    return EnvChoice("gymnax" if env_id in gymnax_ids else "gymnasium", env_id)


__all__ = ["EnvChoice", "resolve_env"]
