"""Environments: gymnax (compiled end to end)."""

from populax.envs.jax_envs import JaxEnv, StepResult, describe_action, gymnax_ids, make_jax_env

__all__ = ["JaxEnv", "StepResult", "describe_action", "gymnax_ids", "make_jax_env"]
