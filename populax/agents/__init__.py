"""Algorithms by name: populax's own (``ALGORITHMS``), the ones a user registers from their own code
(``register_algorithm``), and ones named by import path (``--algo py:package.module:ALGORITHM``).

An algorithm is an :class:`Algorithm`: a builder of one member's :class:`~populax.agents.base.Agent` (off-policy:
``init``/``act``/``policy``/``update``) or on-policy agent (PPO's interface), the ``struct.dataclass`` of its traced
per-member hyperparameters (fields made with :func:`populax.hparams.hparam`: default, doc, valid and search
ranges), an optional frozen dataclass of static options (``--algo-opt.NAME``), and which state fields make its
policy (``--pbt-copy policy``). The backends, executors, strategies, checkpoints and reports need nothing else.
examples/custom_algorithm.py writes DDPG that way.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Callable
from typing import Any, NamedTuple

from populax.agents.base import ActionSpec, Agent, AgentSpec, Transition
from populax.agents.dqn import DQNConfig, DQNHParams, make_dqn
from populax.agents.options import CEMRLOptions, DQNOptions, DvDOptions, PPOOptions, SACOptions
from populax.agents.ppo import PPOConfig, PPOHParams, make_ppo
from populax.agents.sac import SACConfig, SACHParams, make_sac
from populax.agents.td3 import TD3Config, TD3HParams, make_td3
from populax.coupled.hparams import CEMRLHParams
from populax.errors import ConfigError
from populax.importpath import PY_PREFIX, load_import_path


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
    optimizer_fields: tuple[str, ...] | None = None
    """Agent-state fields that hold optimizer states (``--pbt-reset-optimizer`` gives a copy's fresh ones);
    None: not declared, and that setting is refused."""
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
                     policy_fields=("actor", "actor_target", "actor_opt"), optimizer_fields=("actor_opt", "critic_opt")),
    # The actor and its optimizer state, with the temperature that shapes its entropy.
    "sac": Algorithm("sac", SACHParams, _make_sac, continuous=True, discrete=False, options=SACOptions,
                     policy_fields=("actor", "actor_opt", "log_alpha", "alpha_opt"),
                     optimizer_fields=("actor_opt", "critic_opt", "alpha_opt")),
    # Single-network agents: the policy is the whole state; Adam's state is ``opt`` (the update counter that
    # drives epsilon, the target period and the learning-rate annealing is ``updates``, never reset).
    "dqn": Algorithm("dqn", DQNHParams, _make_dqn, continuous=False, discrete=True, options=DQNOptions,
                     optimizer_fields=("opt",)),
    "ppo": Algorithm("ppo", PPOHParams, _make_ppo, continuous=True, discrete=True, options=PPOOptions, on_policy=True,
                     optimizer_fields=("opt",)),
    # Coupled methods: per-member actors, one shared critic (the members' state is the actor alone).
    "cemrl": Algorithm("cemrl", CEMRLHParams, _make_coupled_nets, continuous=True, discrete=False,
                       options=CEMRLOptions, policy_fields=("actor", "actor_target", "actor_opt"), coupled=True),
    "dvd-td3": Algorithm("dvd-td3", TD3HParams, _make_coupled_nets, continuous=True, discrete=False,
                         options=DvDOptions, policy_fields=("actor", "actor_target", "actor_opt"), coupled=True),
}


BUILTIN = frozenset(ALGORITHMS)
"""populax's own algorithm names (a user's registration never replaces one)."""


def check_action_space(algorithm: Algorithm, action: ActionSpec, env_id: str, described: str) -> None:
    """ConfigError naming --env unless ``algorithm`` handles the environment's action space (``described``)."""
    if action.discrete and not algorithm.discrete or not action.discrete and not algorithm.continuous:
        needs = "continuous (Box)" if algorithm.continuous else "discrete"
        raise ConfigError(f"--env: {algorithm.name} needs a {needs} action space; {env_id} has {described}")


def check_algorithm(algorithm: Any, where: str) -> Algorithm:
    """``algorithm`` if it is a usable :class:`Algorithm` of one member; else a one-line ConfigError naming
    ``where`` it came from and what is wrong."""
    from populax.agents.checks import check_agent, check_policy_fields_declared
    from populax.hparams import check_declarations

    if not isinstance(algorithm, Algorithm):
        raise ConfigError(f"--algo: {where} is {type(algorithm).__name__}, not a populax.agents.Algorithm")
    if not algorithm.name or any(c.isspace() for c in algorithm.name) or algorithm.name.startswith(PY_PREFIX):
        raise ConfigError(f"--algo: {where}'s name {algorithm.name!r} must be a word (no spaces, no py: prefix)")
    if not callable(algorithm.make) or not (algorithm.continuous or algorithm.discrete):
        raise ConfigError(f"--algo: {where} needs a callable make(AgentSpec) and continuous or discrete actions")
    check_declarations(algorithm.hparams, where)
    # What the member loop reads (``populax.loop``): every TD target or GAE discounts with ``hparams.gamma``;
    # GAE also takes ``gae_lambda``; a rollout is ``rollout_len`` env iterations (a static option).
    needed = ("gamma", "gae_lambda") if algorithm.on_policy else ("gamma",)
    missing = [name for name in needed if name not in {f.name for f in dataclasses.fields(algorithm.hparams)}]
    if missing:
        raise ConfigError(f"--algo: {where}'s hparams need {' and '.join(missing)} (the "
                          f"{'on' if algorithm.on_policy else 'off'}-policy member loop reads them)")
    options = algorithm.options
    if algorithm.on_policy and not (dataclasses.is_dataclass(options) and "rollout_len" in {
            f.name for f in dataclasses.fields(options)}):
        raise ConfigError(f"--algo: {where} is on-policy; its options dataclass needs a rollout_len field "
                          f"(env iterations per rollout)")
    if algorithm.coupled:
        raise ConfigError(f"--algo: {where} is coupled; only populax's own population programs (cemrl, dvd-td3) "
                          f"couple members, a registered algorithm is one member's")
    check_policy_fields_declared(algorithm.policy_fields, where)
    check_policy_fields_declared(algorithm.optimizer_fields, where, "optimizer_fields")
    if id(algorithm) not in CHECKED_AGENTS:  # traced once per algorithm object and process
        check_agent(algorithm, where)
        CHECKED_AGENTS[id(algorithm)] = algorithm  # kept: its id is not reused while it is here
    return algorithm


CHECKED_AGENTS: dict[int, Algorithm] = {}
"""The algorithms whose agents :func:`check_algorithm` has built and traced (``populax.agents.checks``)."""


def register_algorithm(algorithm: Algorithm, replace: bool = False) -> Algorithm:
    """Make ``algorithm`` trainable as ``--algo NAME`` (``TrainConfig(algo=NAME)``) in this process: under every
    executor, strategy and backend its action spaces allow, with checkpoints, resume and reports.

    A run records the name, so another process (``populax resume``, ``eval``, Ray workers) must register it too;
    name it by import path instead (``algo="py:package.module:ALGORITHM"``) and every process finds it alone.
    ``replace``: allow registering a name again (a notebook re-running its cell); populax's own names never.
    """
    check_algorithm(algorithm, f"register_algorithm({algorithm.name!r})" if isinstance(algorithm, Algorithm)
                    else "register_algorithm's argument")
    if algorithm.name in BUILTIN or (algorithm.name in ALGORITHMS and not replace):
        raise ConfigError(f"--algo: {algorithm.name!r} is already registered"
                          + ("" if algorithm.name in BUILTIN else "; pass replace=True to register it again"))
    ALGORITHMS[algorithm.name] = algorithm
    return algorithm


def algorithm_setting(algo: Any) -> tuple[str, str | None]:
    """The ``algo`` setting a run records for ``algo`` (a name, or an :class:`Algorithm` object given to the
    Python API), and a one-line note when the object has no import path. An object bound to a name in an
    importable module is recorded as ``py:module:NAME`` (``populax resume``/``eval`` and Ray workers find it
    alone); one defined in ``__main__`` or a notebook is registered under its name in this process."""
    if isinstance(algo, str):
        return algo, None
    if not isinstance(algo, Algorithm):
        raise ConfigError(f"--algo: expected an algorithm's name or a populax.Algorithm (got {type(algo).__name__})")
    module_name = getattr(algo.make, "__module__", None)
    module = sys.modules.get(module_name) if module_name and module_name != "__main__" else None
    for name, value in vars(module).items() if module is not None else ():
        if value is algo:
            return f"{PY_PREFIX}{module_name}:{name}", None
    if ALGORITHMS.get(algo.name) is not algo:
        register_algorithm(algo, replace=True)  # a notebook cell run again replaces its own algorithm
    return algo.name, (f"populax: note: the algorithm {algo.name!r} has no import path (defined in __main__ or a "
                       "notebook); it trains here, but `populax resume`/`eval` and Ray workers need one: pass "
                       "py:module:NAME or register it there too")


def get_algorithm(name: str) -> Algorithm:
    """The algorithm called ``name`` (populax's, a registered one, or ``py:package.module:ALGORITHM``), or a
    ConfigError listing the known ones."""
    if name.startswith(PY_PREFIX):
        return check_algorithm(load_import_path(name[len(PY_PREFIX):], "--algo"), name)
    if name not in ALGORITHMS:
        raise ConfigError(f"--algo: unknown algorithm {name!r}; allowed: {', '.join(ALGORITHMS)}, a name given to "
                          f"populax.register_algorithm in this process, or py:package.module:ALGORITHM")
    return ALGORITHMS[name]


__all__ = ["ALGORITHMS", "ActionSpec", "Agent", "AgentSpec", "Algorithm", "Transition", "algorithm_setting",
           "check_action_space", "check_algorithm", "get_algorithm", "register_algorithm"]
