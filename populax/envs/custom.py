"""Users' own environments: named by an import path, by Gymnasium's ``module:Id``, or passed as an object.

Every place that builds an environment from a run's ``env`` setting (``populax train``, YAML recipes,
``populax resume``, ``populax eval`` and ``--video``, Ray workers) goes through
``populax.envs.routing.resolve_env`` and then ``make_jax_env`` or ``make_host_spec``; those understand the
forms below, so a user's environment is resolved the same way everywhere:

* ``py:package.module:attribute`` -- an import path to

  - a JAX environment with gymnax's API (an instance, or a class built with no arguments): it trains inside
    the compiled chunk like gymnax's own;
  - a brax ``Env`` (instance or class): compiled, on brax's adapter;
  - a Gymnasium environment: a ``gymnasium.Env`` subclass, or any callable returning a ``gymnasium.Env``
    (built once per env instance, also in ``--vector-env async`` workers): on the host backend;
  - any other callable with no required arguments returning one of the above;

* ``gymnasium:package.module:Id`` -- Gymnasium's own form: ``gymnasium.make`` imports ``package.module``
  (which calls ``gymnasium.register``) and makes ``Id``;
* in the Python API, the object itself: ``TrainConfig(env=MyEnv())``. Where the object can be found again by
  an import path (a module-level name), the run records that path; otherwise it trains in this process only,
  and the run says in one line that ``populax resume``/``eval`` need an importable path.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

from populax.errors import ConfigError
from populax.importpath import PY_PREFIX, load_import_path

OBJECT_PREFIX = "object:"
"""How a run names an environment object that has no import path (this process only)."""

_OBJECTS: dict[str, Any] = {}
"""Environment objects of the Python API that no import path reaches, by their ``object:`` name."""


def is_custom(env: str) -> bool:
    """Whether ``env`` names a user's environment by import path or as an in-process object."""
    return env.startswith((PY_PREFIX, OBJECT_PREFIX))


def import_path_of(obj: Any) -> str | None:
    """``module:qualname`` that leads back to ``obj`` itself (or, for an instance, its class built anew), or None."""
    for candidate in (obj, type(obj)):
        module, qualname = getattr(candidate, "__module__", None), getattr(candidate, "__qualname__", None)
        if not module or not qualname or "<" in qualname or module == "__main__":
            continue
        try:
            found = load_import_path(f"{module}:{qualname}")
        except ConfigError:
            continue
        if found is obj or (candidate is type(obj) and found is candidate and _builds_alike(candidate, obj)):
            return f"{module}:{qualname}"
    return None


def _builds_alike(cls: type, obj: Any) -> bool:
    """Whether ``cls()`` built anew equals the instance ``obj`` attribute for attribute: only then may a run
    record the class's path for the object (an instance made with other arguments would be replaced by a
    default one, here and on resume, without a word)."""
    try:
        fresh, ours = vars(cls()), vars(obj)
    except Exception:  # noqa: BLE001 - needs arguments, no __dict__, or fails: not rebuildable from its path
        return False
    return fresh.keys() == ours.keys() and all(_same(fresh[name], ours[name]) for name in fresh)


def _same(a: Any, b: Any) -> bool:
    """Equal values, arrays element by element; anything that cannot be compared counts as different."""
    if a is b:
        return True
    try:
        return bool(np.array_equal(a, b)) if hasattr(a, "shape") else bool(a == b)
    except Exception:  # noqa: BLE001 - an ambiguous or failing comparison: not provably the same
        return False


def env_setting(env: Any) -> tuple[str, str | None]:
    """The ``env`` setting a run records for ``env`` (a string or a user's object), and a one-line note for the
    user when the object has no import path (it then trains in this process only)."""
    if isinstance(env, str):
        return env, None
    path = import_path_of(env)
    if path is not None:
        return PY_PREFIX + path, None
    if isinstance(env, type) or callable(env) and hasattr(env, "__name__"):  # a class or a factory: its own name
        label = env.__name__
    else:
        label = getattr(env, "name", None) if isinstance(getattr(env, "name", None), str) else type(env).__name__
    name = f"{OBJECT_PREFIX}{label}-{id(env):x}"
    _OBJECTS[name] = env
    return name, (f"populax: note: the environment {label!r} has no import path (defined in __main__ or a notebook); "
                  f"it trains here, but `populax resume`/`eval` and Ray workers need one: pass py:module:attribute")


def gymnasium_env_class() -> type | None:
    """``gymnasium.Env`` where Gymnasium is installed."""
    try:
        import gymnasium
    except ImportError:  # pragma: no cover - installed with populax's test and host extras
        return None
    return gymnasium.Env


def is_gymnax_api(obj: Any) -> bool:
    """gymnax's environment API: ``reset(key, params)``, ``step(key, state, action, params)``, default params and
    spaces (an instance)."""
    return all(hasattr(obj, name) for name in ("default_params", "reset", "step", "action_space", "observation_space")) \
        and not isinstance(obj, type)


def is_brax_env(obj: Any) -> bool:
    """A brax ``Env`` instance: ``reset(rng)``, ``step(state, action)``, ``observation_size``, ``action_size``."""
    return all(hasattr(type(obj), name) for name in ("reset", "step", "observation_size", "action_size")) \
        and not isinstance(obj, type) and not is_gymnax_api(obj)


def classify(obj: Any) -> str | None:
    """"jax" (gymnax API or brax), "gymnasium", or None for an object that is none of them."""
    gym_env = gymnasium_env_class()
    if gym_env is not None and (isinstance(obj, gym_env) or (isinstance(obj, type) and issubclass(obj, gym_env))):
        return "gymnasium"
    if is_gymnax_api(obj) or is_brax_env(obj):
        return "jax"
    return None


@lru_cache(maxsize=64)
def _resolve_named(env: str) -> tuple[str, Any]:
    """(kind, source) of a ``py:`` or ``object:`` setting, built once per process."""
    if env.startswith(OBJECT_PREFIX):
        if env not in _OBJECTS:
            raise ConfigError(f"--env: {env} was a Python object of the process that started the run; "
                              f"resume, eval and Ray workers need an import path (py:package.module:attribute)")
        target = _OBJECTS[env]
    else:
        target = load_import_path(env[len(PY_PREFIX):])
    kind = classify(target)
    if kind == "gymnasium":  # a class: each env instance is built from it (also in async workers)
        if not isinstance(target, type):
            raise ConfigError(f"--env: {env} is one gymnasium.Env instance; populax builds one per member and env: "
                              f"give its class or a function that builds one")
        return kind, target
    if kind == "jax":
        return kind, target
    if callable(target):  # a factory (or a class of a JAX env): build once and look at what it made
        try:
            built = target()
        except TypeError as error:
            raise ConfigError(f"--env: {env} is a callable that needs arguments ({error}); give it defaults or point "
                              f"to a function that builds the environment with none") from None
        kind = classify(built)
        if kind == "gymnasium":
            built.close()  # built only to see its kind
            return kind, target  # the factory itself: called once per env instance
        if kind == "jax":
            return kind, built
    raise ConfigError(f"--env: {env} is {type(target).__name__}, not an environment; allowed: a JAX environment with "
                      f"gymnax's API, a brax Env, a gymnasium.Env, or a callable returning one")


def resolve_custom(env: str) -> tuple[str, Any]:
    """("jax" or "gymnasium", the environment object or factory) for a ``py:``/``object:`` setting."""
    return _resolve_named(env)
