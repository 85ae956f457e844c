"""JAX environments (gymnax; brax physics) behind a small adapter the compiled loop understands.

The adapter bakes the environment parameters in, rescales continuous actions
from the agent's [-1, 1] to the environment's bounds, and reports termination
and truncation separately together with the true final observation (gymnax
auto-resets, so the returned observation after an episode end is already the
next episode's first one).

brax environments (``brax:halfcheetah``, ``brax:hopper``...) get the same
adapter: the physics (brax's generalized pipeline on an MJX model) is JAX
code, so acting, stepping, the replay buffer and the updates of every member
stay one compiled chunk, on the CPU or on an accelerator.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from populax.agents.base import ActionSpec
from populax.envs.custom import is_brax_env, is_custom, resolve_custom
from populax.envs.mujoco_gl import check_mujoco_gl
from populax.envs.spaces import check_spaces
from populax.errors import ConfigError, EnvironmentWarning


class StepResult(NamedTuple):
    """One vectorised environment step as the training loop consumes it."""

    obs: jax.Array
    """Observation to act on next (first one of a new episode after an end)."""
    state: Any
    reward: jax.Array
    terminated: jax.Array
    truncated: jax.Array
    final_obs: jax.Array
    """The observation the transition really led to (use it for bootstrapping)."""


class JaxEnv(NamedTuple):
    """A gymnax environment with its parameters bound, for one env instance."""

    name: str
    obs_shape: tuple[int, ...]
    action: ActionSpec
    max_episode_steps: int
    reset: Callable[[jax.Array], tuple[jax.Array, Any]]
    step: Callable[[jax.Array, Any, jax.Array], StepResult]
    to_env_action: Callable[[jax.Array], jax.Array]
    """An agent's action (continuous: in [-1, 1]) -> what the wrapped environment receives (``step`` applies it)."""


def _import_gymnax():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import gymnax
    return gymnax


def gymnax_ids() -> list[str]:
    """All environment ids gymnax registers."""
    return list(_import_gymnax().registered_envs)


def make_jax_env(env_id: str, max_episode_steps: int = 0) -> JaxEnv:
    """Build the adapter for gymnax id, brax:NAME or a user's JAX environment (``py:``/``object:``, see
    ``populax.envs.custom``) ``env_id`` (ConfigError if unknown).

    ``max_episode_steps`` cuts episodes (truncation) after that many steps (0: the environment's own
    limit, brax's 1000)."""
    if max_episode_steps < 0:  # before any (slow) build
        raise ConfigError(f"--max-episode-steps must be >= 0 (0: the environment's own limit; got {max_episode_steps})")
    if is_custom(env_id):
        kind, env = resolve_custom(env_id)
        if kind != "jax":
            raise ConfigError(f"--env: {env_id} is a Gymnasium environment; it trains on the host backend")
        if is_brax_env(env):
            return brax_adapter(env, env_id, max_episode_steps)
        params = implemented(env_id, "default_params", lambda: env.default_params)
        adapter = checked_observations(gymnax_adapter(env, params, env_id, max_episode_steps))
        if adapter.max_episode_steps == 1 and not max_episode_steps:
            warnings.warn(f"--env: {env_id}'s episodes last one step: its params' max_steps_in_episode is 1 (the "
                          "default of gymnax's EnvParams); set it in default_params, or pass --max-episode-steps",
                          EnvironmentWarning, stacklevel=2)
        return adapter
    if is_brax_id(env_id):
        return make_brax_env(env_id, max_episode_steps)
    gymnax = _import_gymnax()
    if env_id not in gymnax.registered_envs:
        raise ConfigError(
            f"--env: unknown environment {env_id!r}; run `populax envs` for the list"
        )
    env, params = gymnax.make(env_id)
    return gymnax_adapter(env, params, env_id, max_episode_steps)


def implemented(env_id: str, method: str, call: Callable[[], Any]) -> Any:
    """``call()``, or a one-line ConfigError when it reaches gymnax's ``Environment`` base (NotImplementedError):
    the user's environment left ``method`` out."""
    try:
        return call()
    except NotImplementedError:
        raise ConfigError(f"--env: {env_id} does not implement {method} (gymnax's Environment leaves it to the "
                          "environment)") from None


def gymnax_adapter(env: Any, params: Any, env_id: str, max_episode_steps: int = 0) -> JaxEnv:
    """The adapter of an environment with gymnax's API (``env.reset(key, params)``, ``env.step(key, state, action,
    params)`` returning ``obs, state, reward, terminated, truncated, info`` with ``info["final_observation"]``, as
    gymnax's ``Environment`` base class does) with ``params`` bound."""
    if max_episode_steps:  # gymnax truncates at state.time >= params.max_steps_in_episode
        params = params.replace(max_steps_in_episode=max_episode_steps)
    space = implemented(env_id, "action_space(params)", lambda: env.action_space(params))
    observation_space = implemented(env_id, "observation_space(params)", lambda: env.observation_space(params))
    check_spaces(env_id, observation_space, space)
    obs_shape = tuple(int(d) for d in observation_space.shape)
    if hasattr(space, "n"):
        action = ActionSpec(discrete=True, size=int(space.n))
        low = high = None
    else:
        action = ActionSpec(discrete=False, size=int(np.prod(space.shape)))
        low = jnp.broadcast_to(jnp.asarray(space.low, jnp.float32), space.shape)
        high = jnp.broadcast_to(jnp.asarray(space.high, jnp.float32), space.shape)

    def to_env_action(action_in):
        if action.discrete:
            return action_in
        return low + (action_in + 1.0) * 0.5 * (high - low)

    def reset(key):
        obs, state = env.reset(key, params)
        return obs.astype(jnp.float32), state

    def step(key, state, action_in):
        obs, state, reward, terminated, truncated, info = env.step(
            key, state, to_env_action(action_in), params
        )
        return StepResult(
            obs=obs.astype(jnp.float32),
            state=state,
            reward=jnp.asarray(reward, jnp.float32),
            terminated=jnp.asarray(terminated, jnp.float32),
            truncated=jnp.asarray(truncated, jnp.float32),
            final_obs=info["final_observation"].astype(jnp.float32),
        )

    return JaxEnv(
        name=env_id,
        obs_shape=obs_shape,
        action=action,
        max_episode_steps=int(getattr(params, "max_steps_in_episode", 0)),
        reset=reset,
        step=step,
        to_env_action=to_env_action,
    )


def checked_observations(env: JaxEnv) -> JaxEnv:
    """``env`` (a user's) once its reset and step, traced for shapes only (nothing runs or compiles), return
    observations of the shape its observation_space declares and one reward; else a one-line ConfigError (not
    flax's parameter-shape error from inside the first compile)."""
    def check_observation(obs: jax.ShapeDtypeStruct, where: str) -> None:
        if obs.shape != env.obs_shape:
            raise ConfigError(f"--env: {env.name}'s {where} returned an observation of shape {obs.shape}; its "
                              f"observation_space is {env.obs_shape}")

    key = jax.random.key(0)
    obs, state = implemented(env.name, "reset_env(key, params)", lambda: jax.eval_shape(env.reset, key))
    check_observation(obs, "reset")
    action = (jax.ShapeDtypeStruct((), jnp.int32) if env.action.discrete
              else jax.ShapeDtypeStruct((env.action.size,), jnp.float32))
    result = implemented(env.name, "step_env(key, state, action, params)",
                         lambda: jax.eval_shape(env.step, key, state, action))
    check_observation(result.obs, "step")
    if result.reward.shape != ():
        raise ConfigError(f"--env: {env.name}'s step returned a reward of shape {result.reward.shape}; it must be "
                          "one number")
    return env


def describe_action(spec: ActionSpec) -> str:
    """Human text for an action spec, for error messages and `populax envs`."""
    return f"Discrete({spec.size})" if spec.discrete else f"Box({spec.size},)"


BRAX_PREFIX = "brax:"
BRAX_TASKS = ("ant", "halfcheetah", "hopper", "humanoid", "humanoidstandup", "inverted_double_pendulum",
              "inverted_pendulum", "pusher", "reacher", "swimmer", "walker2d")
"""brax's registered tasks (brax 0.14); ``populax envs`` lists them as brax:NAME."""
BRAX_EPISODE_STEPS = 1000
"""brax's own episode length for its locomotion tasks (its training wrapper's default)."""


class BraxState(NamedTuple):
    """One brax environment instance: brax's state and the steps taken in the current episode."""

    inner: Any
    steps: jax.Array


def brax_ids() -> list[str]:
    """Every brax task as the id ``--env`` takes (brax:NAME)."""
    return [BRAX_PREFIX + name for name in BRAX_TASKS]


def _import_brax():
    """brax's environment registry; ConfigError naming the extra when brax is not installed."""
    import contextlib
    import io

    check_mujoco_gl()  # brax imports MuJoCo (MJX): a MUJOCO_GL it cannot load is one line, not PyOpenGL's traceback
    try:
        # MJX prints "Failed to import warp" (an optional GPU kernel library) on import: not news to a user.
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            from brax import envs
    except ImportError:
        raise ConfigError("--env: brax environments need brax; install populax[brax]") from None
    return envs


def make_brax_env(env_id: str, max_episode_steps: int = 0) -> JaxEnv:
    """The adapter of brax task ``env_id`` (``brax:NAME``), episodes cut at ``max_episode_steps`` (0: brax's 1000).

    brax's ``done`` is a termination (hopper, walker2d, ant, humanoid fall
    over; halfcheetah never ends): no bootstrap past it. Reaching the time
    limit is a truncation: the episode restarts, but the last transition
    still bootstraps from its true final observation. Actions are rescaled
    from the agent's [-1, 1] to the actuators' control range.
    """
    name = env_id.removeprefix(BRAX_PREFIX)
    if name not in BRAX_TASKS:
        raise ConfigError(f"--env: unknown brax task {name!r}; allowed: {', '.join(brax_ids())}")
    if max_episode_steps < 0:  # before the (slow) MJCF build
        raise ConfigError(f"--max-episode-steps must be >= 0 (0: brax's own {BRAX_EPISODE_STEPS}; got {max_episode_steps})")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # brax warns that its own environments are in maintenance
        env = _import_brax().get_environment(name, backend="generalized")
    return brax_adapter(env, env_id, max_episode_steps)


def brax_adapter(env: Any, env_id: str, max_episode_steps: int = 0) -> JaxEnv:
    """The adapter of a brax ``Env`` instance (brax's own tasks or a user's), episodes cut at ``max_episode_steps``
    (0: brax's 1000). Actions in [-1, 1] are rescaled to the actuators' control range where the env has a
    ``sys`` (brax's pipeline envs), else passed as they are (brax's own convention)."""
    limit = max_episode_steps or BRAX_EPISODE_STEPS
    if hasattr(env, "sys"):
        ctrl = np.asarray(env.sys.actuator.ctrl_range, np.float32)
        low, high = jnp.asarray(ctrl[:, 0]), jnp.asarray(ctrl[:, 1])
    else:
        low, high = -jnp.ones(int(env.action_size)), jnp.ones(int(env.action_size))

    def to_env_action(action_in):
        return low + (action_in + 1.0) * 0.5 * (high - low)

    def reset(key):
        inner = env.reset(key)
        return inner.obs.astype(jnp.float32), BraxState(inner, jnp.zeros((), jnp.int32))

    def step(key, state, action_in):
        after = env.step(state.inner, to_env_action(action_in))
        steps = state.steps + 1
        terminated = jnp.asarray(after.done, jnp.float32)
        truncated = jnp.where(steps >= limit, 1.0 - terminated, 0.0)
        ended = jnp.maximum(terminated, truncated) > 0
        first_obs, fresh = reset(key)
        following = jax.tree.map(lambda new, old: jnp.where(ended, new, old), fresh, BraxState(after, steps))
        return StepResult(
            obs=jnp.where(ended, first_obs, after.obs.astype(jnp.float32)),
            state=following,
            reward=jnp.asarray(after.reward, jnp.float32),
            terminated=terminated,
            truncated=truncated,
            final_obs=after.obs.astype(jnp.float32),
        )

    return JaxEnv(
        name=env_id,
        obs_shape=(int(env.observation_size),),
        action=ActionSpec(discrete=False, size=int(env.action_size)),
        max_episode_steps=limit,
        reset=reset,
        step=step,
        to_env_action=to_env_action,
    )


def brax_installed() -> bool:
    """Whether brax can be imported here (populax[brax])."""
    import importlib.util

    return importlib.util.find_spec("brax") is not None


def is_brax_id(env_id: str) -> bool:
    """Whether ``env_id`` names a brax task (brax:NAME)."""
    return env_id.startswith(BRAX_PREFIX)
