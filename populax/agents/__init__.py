"""Algorithms by name. Adding one is a new module plus one entry in ALGORITHMS."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

from populax.agents.base import ActionSpec, Agent, Transition
from populax.agents.dqn import DQNConfig, DQNHParams, make_dqn
from populax.agents.options import CEMRLOptions, DQNOptions, DvDOptions, PPOOptions, SACOptions
from populax.agents.ppo import PPOConfig, PPOHParams, make_ppo
from populax.agents.sac import SACConfig, SACHParams, make_sac
from populax.agents.td3 import TD3Config, TD3HParams, make_td3
from populax.coupled.hparams import CEMRLHParams
from populax.errors import ConfigError


class AgentSpec(NamedTuple):
    """What an algorithm's builder gets: shapes, widths, options and loop facts."""

    obs_shape: tuple[int, ...]
    action: ActionSpec
    hidden: tuple[int, ...]
    options: Any = None
    """The algorithm's options dataclass instance (None if it has none)."""
    steps_per_update: float = 1.0
    """Env steps per gradient update in the off-policy loop (DQN's epsilon clock)."""
    total_updates: int = 0
    """Gradient steps of the whole run (learning-rate annealing)."""
    zero_hparams: frozenset[str] = frozenset()
    """Traced hyperparameters that are 0 for every member all run (``hparams.zero_hparams``): the agent
    may leave out what they scale (DQN skips advantage learning's target pass at alpha 0)."""


class Algorithm(NamedTuple):
    """How the trainer builds and drives one algorithm."""

    name: str
    hparams: type
    """The struct.dataclass of traced per-member hyperparameters."""
    make: Callable[[AgentSpec], Any]
    """AgentSpec -> Agent (off-policy) or OnPolicyAgent (on-policy)."""
    continuous: bool
    """Whether it handles continuous (Box) action spaces."""
    discrete: bool
    """Whether it handles discrete action spaces."""
    options: type | None = None
    """Frozen dataclass of static settings (``--algo-opt.NAME``), or None."""
    on_policy: bool = False
    """True: trained from rollouts (no replay buffer) on both backends."""
    policy_fields: tuple[str, ...] | None = None
    """Agent-state fields that make up the policy (``--pbt-copy policy`` copies only these);
    None: the policy is the whole network (single-network agents such as DQN and PPO)."""
    coupled: bool = False
    """True: the members share state inside the update (CEM-RL, DvD-TD3); trained by a population
    program (``backends/compiled/coupled.py``) instead of a mapped member program."""


def _flat(shape: tuple[int, ...]) -> int:
    return int(math.prod(shape))


def _make_td3(spec: AgentSpec) -> Agent:
    return make_td3(TD3Config(obs_dim=_flat(spec.obs_shape), action=spec.action, hidden=spec.hidden))


def _make_sac(spec: AgentSpec) -> Agent:
    return make_sac(SACConfig(_flat(spec.obs_shape), spec.action, spec.hidden, init_alpha=spec.options.init_alpha))


def default_torso(obs_shape: tuple[int, ...]) -> str:
    """mlp for vectors, the small CNN for MinAtar-sized frames, the Nature CNN for larger images."""
    if len(obs_shape) < 3:
        return "mlp"
    return "minatar_cnn" if max(obs_shape[:2]) <= 16 else "nature_cnn"


def _make_dqn(spec: AgentSpec) -> Agent:
    options: DQNOptions = spec.options
    torso = default_torso(spec.obs_shape) if options.torso == "auto" else options.torso
    return make_dqn(DQNConfig(spec.obs_shape, spec.action, spec.hidden, torso=torso, dueling=options.dueling,
                              layer_norm=options.layer_norm, clipped_double_q=options.clipped_double_q,
                              max_grad_norm=options.max_grad_norm, steps_per_update=spec.steps_per_update,
                              anneal_steps=spec.total_updates if options.anneal_lr else 0,
                              advantage_learning="advantage_alpha" not in spec.zero_hparams))


def _make_ppo(spec: AgentSpec):
    options: PPOOptions = spec.options
    torso = default_torso(spec.obs_shape) if options.torso == "auto" else options.torso
    return make_ppo(PPOConfig(
        obs_shape=spec.obs_shape, action=spec.action, hidden=spec.hidden, torso=torso, epochs=options.epochs,
        minibatches=options.minibatches, clip_value=options.clip_value, max_grad_norm=options.max_grad_norm,
        anneal_steps=spec.total_updates if options.anneal_lr else 0,
    ))


def _make_coupled_nets(spec: AgentSpec) -> Any:
    from populax.coupled.shared_td3 import make_nets

    return make_nets(_flat(spec.obs_shape), spec.action.size, spec.hidden)


ALGORITHMS: dict[str, Algorithm] = {
    # The actor, its target and its optimizer state; the critics stay the member's own.
    "td3": Algorithm("td3", TD3HParams, _make_td3, continuous=True, discrete=False,
                     policy_fields=("actor", "actor_target", "actor_opt")),
    # The actor and its optimizer state, with the temperature that shapes its entropy.
    "sac": Algorithm("sac", SACHParams, _make_sac, continuous=True, discrete=False, options=SACOptions,
                     policy_fields=("actor", "actor_opt", "log_alpha", "alpha_opt")),
    "dqn": Algorithm("dqn", DQNHParams, _make_dqn, continuous=False, discrete=True, options=DQNOptions),
    "ppo": Algorithm("ppo", PPOHParams, _make_ppo, continuous=True, discrete=True, options=PPOOptions, on_policy=True),
    # Coupled methods: per-member actors, one shared critic (the members' state is the actor alone).
    "cemrl": Algorithm("cemrl", CEMRLHParams, _make_coupled_nets, continuous=True, discrete=False,
                       options=CEMRLOptions, policy_fields=("actor", "actor_target", "actor_opt"), coupled=True),
    "dvd-td3": Algorithm("dvd-td3", TD3HParams, _make_coupled_nets, continuous=True, discrete=False,
                         options=DvDOptions, policy_fields=("actor", "actor_target", "actor_opt"), coupled=True),
}


def check_action_space(algorithm: Algorithm, action: ActionSpec, env_id: str, described: str) -> None:
    """ConfigError naming --env unless ``algorithm`` handles the environment's action space (``described``)."""
    if action.discrete and not algorithm.discrete or not action.discrete and not algorithm.continuous:
        needs = "continuous (Box)" if algorithm.continuous else "discrete"
        raise ConfigError(f"--env: {algorithm.name} needs a {needs} action space; {env_id} has {described}")


def get_algorithm(name: str) -> Algorithm:
    """The algorithm called ``name``, or a ConfigError listing the known ones."""
    if name not in ALGORITHMS:
        raise ConfigError(f"--algo: unknown algorithm {name!r}; allowed: {', '.join(ALGORITHMS)}")
    return ALGORITHMS[name]


__all__ = ["ALGORITHMS", "ActionSpec", "Agent", "AgentSpec", "Algorithm", "Transition", "check_action_space", "get_algorithm"]
