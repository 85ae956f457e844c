"""Algorithms by name. Adding one is a new module plus one entry in ALGORITHMS."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from populax.agents.base import ActionSpec, Agent, Transition
from populax.agents.td3 import TD3Config, TD3HParams, make_td3
from populax.errors import ConfigError


class Algorithm(NamedTuple):
    """How the trainer builds and drives one algorithm."""

    name: str
    hparams: type
    """The struct.dataclass of traced per-member hyperparameters."""
    make: Callable[[tuple[int, ...], ActionSpec, tuple[int, ...]], Agent]
    """(observation shape, action spec, hidden widths) -> Agent."""
    continuous: bool
    """Whether it handles continuous (Box) action spaces."""
    discrete: bool
    """Whether it handles discrete action spaces."""


def _make_td3(obs_shape: tuple[int, ...], action: ActionSpec, hidden: tuple[int, ...]) -> Agent:
    return make_td3(TD3Config(obs_dim=int(obs_shape[-1]), action=action, hidden=hidden))


ALGORITHMS: dict[str, Algorithm] = {
    "td3": Algorithm("td3", TD3HParams, _make_td3, continuous=True, discrete=False),
}


def get_algorithm(name: str) -> Algorithm:
    """The algorithm called ``name``, or a ConfigError listing the known ones."""
    if name not in ALGORITHMS:
        raise ConfigError(f"--algo: unknown algorithm {name!r}; allowed: {', '.join(ALGORITHMS)}")
    return ALGORITHMS[name]


__all__ = ["ALGORITHMS", "ActionSpec", "Agent", "Algorithm", "Transition", "get_algorithm"]
