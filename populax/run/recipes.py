"""Tuned recipes for known (algorithm, environment) pairs, rl-baselines3-zoo style.

``populax/configs/<algo>-<env>.yaml`` (package data, so every install has
them; a checkout also reaches them as ``configs/``) holds settings that make
``algo`` learn ``env`` well; ``populax train`` layers it over the library
defaults (and under ``--config`` and flags) unless ``--no-recipe`` is given.
Any Atari id (``ALE/*``) without a recipe of its own gets the family's
``<algo>-atari.yaml``; settings a recipe gives as a fraction of the run's
budget (``BUDGET_FRACTIONS``) are set once the budget is known.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from populax.errors import ConfigError
from populax.run.config import TrainConfig, build_config, load_recipe

RECIPE_DIR = Path(__file__).resolve().parents[1] / "configs"


ATARI_RECIPE = "atari"
"""Recipe name (``<algo>-atari.yaml``) used for every ``ALE/*`` id without a recipe of its own."""

BUDGET_FRACTIONS: dict[tuple[str, str], dict[str, float]] = {
    ("dqn", ATARI_RECIPE): {"eps-decay-steps": 0.1},  # Nature DQN: epsilon 1 -> 0.01 over the first 10%
}
"""(algo, recipe family) -> {hyperparameter: fraction of total_steps}, unless the user set it."""


def is_atari(env: str) -> bool:
    """Whether ``env`` names an Atari game of ALE (``ALE/Pong-v5``, also with a ``gymnasium:`` prefix)."""
    return env.removeprefix("gymnasium:").startswith("ALE/")


def recipe_path(algo: str, env: str, directory: Path = RECIPE_DIR) -> Path | None:
    """The recipe file for (algo, env), or None when there is none (Atari ids fall back to ``ALGO-atari.yaml``)."""
    path = directory / f"{algo}-{env.replace('/', '_')}.yaml"
    if not path.is_file() and is_atari(env):
        path = directory / f"{algo}-{ATARI_RECIPE}.yaml"
    return path if path.is_file() else None


def budget_layer(algo: str, env: str, total_steps: int, eval_every: int, user: list[dict[str, Any]]) -> dict[str, Any]:
    """Settings a recipe makes relative to the run's budget, for those the ``user`` layers do not give.

    The hyperparameters of ``BUDGET_FRACTIONS`` (e.g. Atari DQN's epsilon
    decay over 10% of ``total_steps``), and an evaluation period no longer
    than the run (``--total-steps 2000`` under a recipe evaluating every
    250k steps would otherwise run 250k steps: runs are whole periods).
    """
    user_hp = {name for layer in user for name in layer.get("hp", {})}
    family = ATARI_RECIPE if is_atari(env) else env
    fractions = BUDGET_FRACTIONS.get((algo, family), {})
    layer: dict[str, Any] = {}
    hp = {name: max(1, round(fraction * total_steps)) for name, fraction in fractions.items() if name not in user_hp}
    if hp:
        layer["hp"] = hp
    if eval_every > total_steps and not any("eval_every" in part for part in user):
        layer["eval_every"] = total_steps
    return layer


def recipe_layer(algo: str, env: str, directory: Path = RECIPE_DIR) -> tuple[Path | None, dict[str, Any]]:
    """(path, settings) of the tuned recipe for (algo, env); (None, {}) when none exists."""
    path = recipe_path(algo, env, directory)
    return path, (load_recipe(path) if path else {})


def packaged_recipes(directory: Path = RECIPE_DIR) -> list[str]:
    """Names (without ``.yaml``) of the recipes shipped with populax."""
    return sorted(p.stem for p in directory.glob("*.yaml"))


def resolve_config_path(text: str, directory: Path = RECIPE_DIR) -> Path:
    """The file a ``--config`` value names: the path itself when it exists, else a packaged recipe.

    A packaged recipe may be named bare (``td3-pbt-HalfCheetah-v5``, with or
    without ``.yaml``) or as the documented ``configs/NAME.yaml``, so README
    commands work outside a checkout too. Raises ConfigError listing the
    packaged names when neither exists.
    """
    path = Path(text)
    if path.exists():
        return path
    if path.parent.as_posix() in (".", "configs"):
        name = path.name if path.suffix == ".yaml" else f"{path.name}.yaml"
        packaged = directory / name
        if packaged.is_file():
            return packaged
    raise ConfigError(f"--config: no such file {text!r} and no packaged recipe of that name; "
                      f"packaged: {', '.join(packaged_recipes(directory))}")


def with_tuned_recipe(layers: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], Path | None]:
    """(``layers`` under the tuned recipe of the (algo, env) they choose, that recipe's path): the recipe first,
    then the budget-relative settings (``budget_layer``), then ``layers``; ``layers`` and None when no recipe
    exists. What ``populax train`` does unless ``--no-recipe``."""
    chosen = build_config(layers)
    path, tuned = recipe_layer(chosen.algo, chosen.env)
    if path is None:
        return layers, None
    resolved = build_config([tuned, *layers])
    return [tuned, budget_layer(chosen.algo, chosen.env, resolved.total_steps, resolved.eval_every, layers),
            *layers], path


def tuned_config(**settings: Any) -> TrainConfig:
    """The ``TrainConfig`` that ``populax train`` builds from the same settings: the tuned recipe for their
    (algo, env) (``populax algos`` lists them) as defaults when one exists, then ``settings``, which win.
    ``TrainConfig(...)`` itself is the library defaults only (``--no-recipe``).

    >>> config = tuned_config(algo="ppo", env="CartPole-v1", pop=4, out="runs/ppo")  # + configs/ppo-CartPole-v1
    """
    layers, _ = with_tuned_recipe([settings])
    return build_config(layers)
