"""Objects named by import path (``package.module:attribute``): a user's environment (``--env py:...``) or
algorithm (``--algo py:...``), resolved the same way in every process that reads a run's settings."""

from __future__ import annotations

import importlib
import os
import sys
from types import ModuleType
from typing import Any

from populax.errors import ConfigError

PY_PREFIX = "py:"
"""``py:package.module:attribute``: the prefix of a setting that names an object by import path."""


def import_user_module(module_name: str) -> ModuleType:
    """Import a user's module, looking in the current directory too, as ``python -m`` and ``python script.py``
    do: the ``populax`` command (a console script) does not put it on ``sys.path``, so ``populax train --algo
    py:my_algo:ALGO`` beside ``my_algo.py`` would not find it otherwise. The directory goes last, so it shadows
    nothing installed. Raises ImportError as ``importlib`` does."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        here = os.getcwd()
        top = module_name.partition(".")[0]
        if error.name != top or here in sys.path or "" in sys.path or not _found_in(here, top):
            raise
        sys.path.append(here)
        return importlib.import_module(module_name)


def import_failure(module_name: str, error: ImportError) -> str:
    """Why ``module_name`` did not import, for a one-line error: where it was looked for when it is the module
    itself that was not found, else the module's own error (a missing dependency it imports, say)."""
    missing = getattr(error, "name", None) or ""
    if isinstance(error, ModuleNotFoundError) and (module_name == missing or module_name.startswith(missing + ".")):
        # the module, or a package on its path, is absent (json.nosuch as much as nosuch.mod)
        return f"{error}; looked on PYTHONPATH and in the current directory"
    return f"{type(error).__name__} while importing it: {error}"


def _found_in(directory: str, top: str) -> bool:
    """Whether ``directory`` holds module or package ``top``."""
    return os.path.isfile(os.path.join(directory, f"{top}.py")) or os.path.isdir(os.path.join(directory, top))


def load_import_path(path: str, setting: str = "--env") -> Any:
    """The object at ``package.module:attribute`` (dots in the attribute walk into it); one-line ConfigError."""
    module_name, colon, attribute = path.partition(":")
    if not colon or not module_name or not attribute:
        raise ConfigError(f"{setting}: {PY_PREFIX}{path!r} is not an import path; expected py:package.module:attribute")
    try:
        target = import_user_module(module_name)
    except ImportError as error:
        raise ConfigError(f"{setting}: cannot import module {module_name!r} ({import_failure(module_name, error)})"
                          ) from None
    for name in attribute.split("."):
        if not hasattr(target, name):
            raise ConfigError(f"{setting}: module {module_name!r} has no attribute {attribute!r}")
        target = getattr(target, name)
    return target
