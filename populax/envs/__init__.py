"""Environments: gymnax and brax (compiled end to end, ``jax_envs.py``), Gymnasium/ALE (on the host,
``host_envs.py``), users' own (``custom.py``); ``routing.py`` decides which path an id takes."""

from populax.envs.jax_envs import (
    JaxEnv,
    StepResult,
    brax_ids,
    describe_action,
    gymnax_ids,
    is_brax_id,
    make_brax_env,
    make_jax_env,
)
from populax.envs.routing import EnvChoice, resolve_env

__all__ = ["EnvChoice", "JaxEnv", "StepResult", "brax_ids", "describe_action", "gymnax_ids", "is_brax_id",
           "make_brax_env", "make_jax_env", "resolve_env"]
