"""Which observation and action spaces populax trains on: one rule for Gymnasium's and gymnax's spaces.

Both libraries name their classes ``Box`` and ``Discrete`` and give a Box ``low``, ``high`` and ``dtype``, so the
rule reads the class name and those fields and serves the host and the compiled adapters and ``populax envs``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from populax.errors import ConfigError

ALLOWED_ACTIONS = "Discrete or a bounded float Box"
"""What an action space may be, as the error messages say it."""


class UnusableSpaces(ConfigError):
    """An environment whose spaces populax cannot train on; ``what`` names the space (``populax envs`` shows it)."""

    def __init__(self, env_id: str, what: str, allowed: str):
        super().__init__(f"--env: {env_id} has {what}; allowed: {allowed}")
        self.what = what


def unusable_spaces(observation: Any, action: Any) -> tuple[str, str] | None:
    """``(what, allowed)`` when populax cannot train on these spaces, or None.

    Observations must be a Box (a network reads them). Actions are a Discrete choice or a bounded Box of floats:
    the continuous agents squash their output into [low, high], so an unbounded Box has no scale, and an integer
    Box would be sent fractional actions (its values are choices: the environment should declare a Discrete).
    """
    if type(observation).__name__ != "Box":
        return f"a {type(observation).__name__} observation space", "Box"
    kind = type(action).__name__
    if kind == "Discrete":
        return None
    if kind != "Box":
        return f"a {kind} action space", ALLOWED_ACTIONS
    if not (np.all(np.isfinite(np.asarray(action.low))) and np.all(np.isfinite(np.asarray(action.high)))):
        return "an unbounded Box action space", ALLOWED_ACTIONS
    if np.issubdtype(np.dtype(action.dtype), np.integer):
        return (f"an integer Box action space ({np.dtype(action.dtype).name})",
                f"{ALLOWED_ACTIONS} (integer actions are choices: declare them Discrete)")
    return None


def is_float(dtype: Any) -> bool:
    """Whether ``dtype`` holds floating-point numbers (observations of a float space may come as float64)."""
    return np.issubdtype(np.dtype(dtype), np.floating)


def check_spaces(env_id: str, observation: Any, action: Any) -> None:
    """Raise ``UnusableSpaces`` (one line, before anything is built or written) for spaces populax cannot train on."""
    problem = unusable_spaces(observation, action)
    if problem:
        raise UnusableSpaces(env_id, *problem)
