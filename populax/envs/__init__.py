"""Environments: gymnax and brax (compiled end to end)."""

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

__all__ = ["JaxEnv", "StepResult", "brax_ids", "describe_action", "gymnax_ids", "is_brax_id", "make_brax_env",
           "make_jax_env"]
