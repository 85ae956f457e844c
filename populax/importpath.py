"""Objects named by import path (``package.module:attribute``): a user's environment (``--env py:...``) or
algorithm (``--algo py:...``), resolved the same way in every process that reads a run's settings."""

from __future__ import annotations

import importlib
from typing import Any

from populax.errors import ConfigError

PY_PREFIX = "py:"
"""``py:package.module:attribute``: the prefix of a setting that names an object by import path."""


def load_import_path(path: str, setting: str = "--env") -> Any:
    """The object at ``package.module:attribute`` (dots in the attribute walk into it); one-line ConfigError."""
    module_name, colon, attribute = path.partition(":")
    if not colon or not module_name or not attribute:
        raise ConfigError(f"{setting}: {PY_PREFIX}{path!r} is not an import path; expected py:package.module:attribute")
    try:
        target = importlib.import_module(module_name)
    except ImportError as error:
        raise ConfigError(f"{setting}: cannot import module {module_name!r} ({error})") from None
    for name in attribute.split("."):
        if not hasattr(target, name):
            raise ConfigError(f"{setting}: module {module_name!r} has no attribute {attribute!r}")
        target = getattr(target, name)
    return target
