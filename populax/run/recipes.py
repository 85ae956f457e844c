"""Tuned recipes for known (algorithm, environment) pairs, rl-baselines3-zoo style.

``configs/<algo>-<env>.yaml`` holds settings that make ``algo`` learn ``env``
well; ``populax train`` layers it over the library defaults (and under
``--config`` and flags) unless ``--no-recipe`` is given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from populax.run.config import load_recipe

RECIPE_DIR = Path(__file__).resolve().parents[2] / "configs"


def recipe_path(algo: str, env: str, directory: Path = RECIPE_DIR) -> Path | None:
    """The recipe file for (algo, env), or None when there is none."""
    path = directory / f"{algo}-{env.replace('/', '_')}.yaml"
    return path if path.is_file() else None


def recipe_layer(algo: str, env: str, directory: Path = RECIPE_DIR) -> tuple[Path | None, dict[str, Any]]:
    """(path, settings) of the tuned recipe for (algo, env); (None, {}) when none exists."""
    path = recipe_path(algo, env, directory)
    return path, (load_recipe(path) if path else {})
