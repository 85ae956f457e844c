"""Static, per-algorithm settings (``--algo-opt.NAME VALUE``): typed, documented, validated.

Each algorithm may declare a frozen dataclass of settings that change the
compiled program (network torso, rollout length, epochs...), with a
docstring per field. Users set them by name in ``TrainConfig.algo_options``;
:func:`resolve_options` turns those strings/numbers into the typed instance.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from populax.coupled.cem import CEMOptions
from populax.errors import ConfigError


@dataclass(frozen=True)
class SACOptions:
    """Static SAC settings."""

    init_alpha: float = 1.0
    """Initial entropy temperature alpha (then tuned automatically)."""


@dataclass(frozen=True)
class DQNOptions:
    """Static DQN settings."""

    torso: str = "auto"
    """Feature extractor: auto (mlp for vectors, minatar_cnn for 10x10 frames, nature_cnn otherwise), mlp, nature_cnn, minatar_cnn."""
    dueling: bool = False
    """Dueling head: state value plus mean-centred advantages."""
    layer_norm: bool = False
    """LayerNorm before each hidden layer's ReLU (as in PQN, Gallici et al. 2024): keeps the features' scale
    fixed as the Q-values grow."""
    clipped_double_q: bool = False
    """Bootstrap from the smaller of the target and online nets' values of the online net's greedy next action
    (clipped double Q, Fujimoto et al. 2018): damps the overestimation that makes Q overshoot its ceiling."""
    max_grad_norm: float = 10.0
    """Global gradient-norm clip of each update."""
    anneal_lr: bool = False
    """Decay the learning rate linearly to 0 over the run's updates."""


@dataclass(frozen=True)
class PPOOptions:
    """Static PPO settings."""

    torso: str = "auto"
    """Feature extractor: auto (mlp for vectors, minatar_cnn for 10x10 frames, nature_cnn otherwise), mlp, nature_cnn, minatar_cnn; a CNN is shared by actor and critic."""
    rollout_len: int = 128
    """Env iterations per rollout (each steps all envs of a member once)."""
    epochs: int = 10
    """Passes over each rollout."""
    minibatches: int = 4
    """Minibatches each rollout is split into per epoch."""
    clip_value: bool = False
    """Clip the value update around the rollout's values."""
    max_grad_norm: float = 0.5
    """Global gradient-norm clip of each step."""
    anneal_lr: bool = True
    """Decay the learning rate linearly to 0 over the run."""


@dataclass(frozen=True)
class CEMRLOptions(CEMOptions):
    """Static CEM-RL settings: the distribution's (``populax.coupled.cem.CEMOptions``: parents, sigma-init,
    damp, damp-limit, damp-decay, mirrored, elitism) and the generation's length; the population is --pop."""

    generation_steps: int = 0
    """Env iterations each actor runs per generation from a fresh reset (0 = the env's episode length);
    its fitness is the return of its first episode in each of its envs."""


@dataclass(frozen=True)
class DvDOptions:
    """Static DvD-TD3 settings."""

    lambda_mode: str = "bandit"
    """How the diversity weight is chosen: bandit (Thompson sampling over lambda-arms, once per chunk, as the
    reference code's bandit: see bandit-lookback, bandit-window), schedule (the reference code's 0 / 0.3 / 0.5 /
    0.2 at 50k / 300k / 700k total env steps) or fixed (lambda-fixed)."""
    lambda_arms: str = "0,0.5"
    """Comma-separated lambda values the bandit chooses between."""
    bandit_lookback: int = 5
    """The bandit scores the arm of a chunk 1 when the population's mean training return beats the best of
    this many chunks before the previous one (0 below, 1/2 on a tie; the reference's 5); its first this many
    choices are uniform."""
    bandit_window: int = 50
    """Only the bandit's last this many scores count in its posteriors (the reference's 50), so an early
    lucky return stops deciding lambda."""
    lambda_fixed: float = 0.5
    """lambda under lambda-mode fixed (0 = an ensemble of TD3 actors with a shared critic)."""
    lambda_warmup: int = 0
    """Env steps per member at lambda 0 before lambda applies (never before learning starts)."""
    bandwidth: float = 1.0
    """Length scale of the RBF kernel over the members' actions."""
    embedding_states: int = 20
    """States of the shared batch the members' actions (embeddings) are taken on."""
    jitter: float = 1e-4
    """Added to the kernel's diagonal: keeps log det finite for identical actors."""
    critics: str = "shared"
    """shared (one twin critic for the population, trained on the shared replay) or per-member (each member
    its own twin critic, trained on its own batches of the shared replay, with its own hyperparameters)."""

    @property
    def per_member_critics(self) -> bool:
        """Whether every member trains its own critic (``critics: per-member``)."""
        return self.critics == "per-member"


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _coerce(name: str, kind: type, value: Any, allowed: str) -> Any:
    setting = f"--algo-opt.{name.replace('_', '-')}"
    try:
        if kind is bool:
            text = str(value).lower()
            if text not in _TRUE + _FALSE:
                raise ValueError
            return text in _TRUE
        if kind is int:
            number = float(value)
            if number != int(number):
                raise ValueError
            return int(number)
        if kind is float:
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{setting}: cannot read {value!r} as {kind.__name__}") from None


OPTION_KINDS = {"bool": bool, "int": int, "float": float, "str": str}
"""The types an algorithm option may have (a static setting given on the command line or in YAML)."""


def option_kind(field: dataclasses.Field, algo: str) -> type:
    """``field``'s type, whether its module postponed annotations (``from __future__ import annotations``: the
    name, a string) or not (the type itself); ConfigError for a type an option cannot have."""
    annotation = field.type
    kind = OPTION_KINDS.get(annotation) if isinstance(annotation, str) else annotation
    if kind not in OPTION_KINDS.values():
        raise ConfigError(f"--algo-opt.{field.name.replace('_', '-')}: {algo}'s option is annotated {annotation!r}; "
                          f"an algorithm option is one of {', '.join(OPTION_KINDS)}")
    return kind


def resolve_options(options_type: type | None, user: dict[str, Any], algo: str) -> Any:
    """The typed options of ``algo`` from the user's name -> value mapping (ConfigError on a bad one)."""
    if options_type is None:
        if user:
            raise ConfigError(f"--algo-opt.{next(iter(user))}: {algo} has no algorithm options")
        return None
    fields = {f.name: f for f in dataclasses.fields(options_type)}
    values = {}
    for raw, value in user.items():
        name = str(raw).replace("-", "_")
        if name not in fields:
            allowed = ", ".join(n.replace("_", "-") for n in fields)
            raise ConfigError(f"--algo-opt.{raw}: unknown option of {algo}; allowed: {allowed}")
        values[name] = _coerce(name, option_kind(fields[name], algo), value, "")
    options = options_type(**values)
    for name in ("rollout_len", "epochs", "minibatches"):
        if getattr(options, name, 1) < 1:
            raise ConfigError(f"--algo-opt.{name.replace('_', '-')} must be >= 1 (got {getattr(options, name)})")
    if getattr(options, "torso", "mlp") not in ("auto", "mlp", "nature_cnn", "minatar_cnn"):
        raise ConfigError(f"--algo-opt.torso: unknown torso {options.torso!r}; allowed: auto, mlp, nature_cnn, minatar_cnn")
    return options
