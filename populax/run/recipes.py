"""Tuned recipes for known (algorithm, environment) pairs, rl-baselines3-zoo style.

``populax/configs/<algo>-<env>.yaml`` (package data, so every install has
them; a checkout also reaches them as ``configs/``) holds settings that make
``algo`` learn ``env`` well; ``populax train`` layers it over the library
defaults (and under ``--config`` and flags) unless ``--no-recipe`` is given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from populax.errors import ConfigError
from populax.run.config import load_recipe

RECIPE_DIR = Path(__file__).resolve().parents[1] / "configs"


def recipe_path(algo: str, env: str, directory: Path = RECIPE_DIR) -> Path | None:
    """The recipe file for (algo, env), or None when there is none."""
    path = directory / f"{algo}-{env.replace('/', '_')}.yaml"
    return path if path.is_file() else None


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
