"""Host environments: any Gymnasium id (MuJoCo v5 tasks, classic control) and Atari via ale-py.

These run on the CPU, outside JAX. The adapter here resolves an id, checks
that it can be built and trained on, and makes Gymnasium vector environments
for a whole population: N members x E envs each in ONE vector env, so a single
``step`` advances every member and a single jitted call chooses every action.

The vector envs use Gymnasium's same-step autoreset: after an episode ends,
``step`` already returns the next episode's first observation and puts the true
final observation in ``info["final_obs"]``; the loop stores that one as
``next_obs`` so that a time-limit truncation bootstraps from the right state.
"""

from __future__ import annotations

import functools
import importlib.util
import inspect
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from populax.agents.base import ActionSpec
from populax.envs.custom import is_custom, resolve_custom
from populax.envs.mujoco_gl import check_mujoco_gl
from populax.envs.spaces import check_spaces, is_float, unusable_spaces
from populax.errors import ConfigError
from populax.importpath import import_failure, import_user_module

VECTOR_MODES = ("sync", "async")

# Which extra provides a family of Gymnasium environments (for "not installed" errors).
EXTRAS = {"mujoco": ("mujoco", "populax[mujoco]"), "ale_py": ("ale_py", "populax[atari]")}


class HostEnvSpec(NamedTuple):
    """A Gymnasium environment as the host loop sees it (no instance held)."""

    name: str
    obs_shape: tuple[int, ...]
    obs_dtype: Any
    """numpy dtype the replay buffer stores observations in (uint8 for Atari frames)."""
    action: ActionSpec
    action_low: np.ndarray | None
    """Lower bound of a Box action space (None for Discrete)."""
    action_high: np.ndarray | None
    make: Callable[[], Any]
    """Builds one fully wrapped environment instance (a picklable closure for subprocesses)."""


def _gymnasium():
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import gymnasium
    except ImportError:  # pragma: no cover - gymnasium ships with the extras
        raise ConfigError("--env: Gymnasium is not installed; install populax[mujoco] or populax[atari]") from None
    return gymnasium


def _register_ale(gym) -> bool:
    """Register the ALE/... ids with Gymnasium when ale-py is installed."""
    if importlib.util.find_spec("ale_py") is None:
        return False
    import ale_py

    gym.register_envs(ale_py)
    return True


def _missing_extra(env_id: str, entry_point: str) -> str | None:
    """The extra to install when ``env_id``'s entry point needs a package that is absent."""
    if env_id.startswith("ALE/") or "ale_py" in entry_point:
        return None if importlib.util.find_spec("ale_py") else EXTRAS["ale_py"][1]
    if "mujoco" in entry_point:
        return None if importlib.util.find_spec("mujoco") else EXTRAS["mujoco"][1]
    if "box2d" in entry_point:  # not a populax extra: Gymnasium's (it builds Box2D from source)
        return None if importlib.util.find_spec("Box2D") else "gymnasium[box2d]"
    return None


NOT_BUILT_FOR_LISTING = ("mujoco", "ale_py")
"""Families ``populax envs`` does not build to check their spaces (hundreds of Atari games, MuJoCo's model loads;
their spaces are a Box of observations and Discrete or bounded float Box actions). Every other registered family
builds in well under a second all together."""
NEEDS_OLD_MUJOCO = {"Pusher-v4": "mujoco<3"}
"""Registered ids whose Gymnasium version refuses the installed MuJoCo (Pusher-v4: use Pusher-v5)."""


def needs_old_mujoco(env_id: str) -> str | None:
    """Why ``env_id`` cannot run on the installed MuJoCo (``needs mujoco<3 (use its v5)``), or None."""
    if env_id not in NEEDS_OLD_MUJOCO or not importlib.util.find_spec("mujoco"):
        return None
    import mujoco

    return f"needs {NEEDS_OLD_MUJOCO[env_id]} (use its v5)" if int(mujoco.__version__.split(".")[0]) >= 3 else None


def host_env_status(env_id: str, entry_point: str) -> str:
    """Whether ``env_id`` trains here: ``ready``, ``install X`` (an absent package), or why it cannot (spaces no
    agent reads or acts in, a MuJoCo version it refuses). MuJoCo and Atari ids are judged without being built."""
    missing = _missing_extra(env_id, entry_point)
    if missing:
        return f"install {missing}"
    old_mujoco = needs_old_mujoco(env_id)
    if old_mujoco:
        return f"not trainable: {old_mujoco}"
    if not any(family in entry_point for family in NOT_BUILT_FOR_LISTING):
        return built_status(env_id)
    return "ready"


def built_status(env_id: str) -> str:
    """``ready``, ``not trainable: <the space>`` (``unusable_spaces``) or ``unavailable (Error)`` for registered
    ``env_id``, building it once."""
    gym = _gymnasium()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Gymnasium's deprecation notes for old versions: the listing shows all
            env = gym.make(env_id)
    except Exception as error:  # noqa: BLE001 - one family that cannot build here must not end the listing
        return f"unavailable ({type(error).__name__})"
    try:
        problem = unusable_spaces(env.observation_space, env.action_space)
    finally:
        env.close()
    return "ready" if problem is None else f"not trainable: {problem[0]}"


@functools.cache
def _life_loss_info_class() -> type:
    """The ``LifeLossInfo`` wrapper class, built on first use so that importing populax needs no Gymnasium."""
    gym = _gymnasium()

    class LifeLossInfo(gym.Wrapper):
        """Puts ``info["life_lost"]`` on every step (False on reset) from ALE's life counter.

        terminated/truncated are left as they are, so the game goes on after a
        lost life and evaluation, which reads only those, plays whole games.
        """

        def __init__(self, env: Any):
            super().__init__(env)
            self.lives = 0

        def reset(self, **kwargs: Any) -> tuple[Any, dict]:
            obs, info = self.env.reset(**kwargs)
            self.lives = self.env.unwrapped.ale.lives()
            return obs, {**info, "life_lost": False}

        def step(self, action: Any) -> tuple[Any, Any, bool, bool, dict]:
            obs, reward, terminated, truncated, info = self.env.step(action)
            lives = self.env.unwrapped.ale.lives()
            lost, self.lives = bool(lives < self.lives), lives
            return obs, reward, terminated, truncated, {**info, "life_lost": lost}

    return LifeLossInfo


def with_life_loss_info(env: Any) -> Any:
    """An ALE ``env`` wrapped in ``LifeLossInfo``: each step's info says whether it cost a life."""
    return _life_loss_info_class()(env)


def _masked_flag(info: dict, key: str, like: np.ndarray) -> np.ndarray:
    """A vector env's per-env boolean ``info[key]`` where its ``_key`` mask is set; False where absent."""
    if key not in info:
        return np.zeros(np.shape(like), bool)
    return np.asarray(info[key], bool) & np.asarray(info.get("_" + key, True), bool)


def learning_terminals(terminated: np.ndarray, info: dict) -> np.ndarray:
    """Per-env terminal flags to learn from (float32): the episode ended, or the step lost a life.

    ``info`` is a vector env's step info; ``life_lost`` is only there with
    ``terminal_on_life_loss`` (without it this is just ``terminated``). Where an
    env was autoreset its ``life_lost`` belongs to the new game and the step's
    own is in ``final_info`` (a life lost on a time-limit step still counts).
    """
    lost = _masked_flag(info, "life_lost", terminated) | _masked_flag(info.get("final_info", {}), "life_lost", terminated)
    return np.logical_or(terminated, lost).astype(np.float32)


def make_env_fn(env_id: str, *, atari: bool, terminal_on_life_loss: bool, max_episode_steps: int | None,
                render_mode: str | None = None) -> Callable[[], Any]:
    """A closure building one wrapped instance of ``env_id`` (``render_mode="rgb_array"`` for videos).

    Atari gets the standard DQN preprocessing: ALE's own frame skip is turned
    off (``frameskip=1``) so that ``AtariPreprocessing`` does the skipping with
    max-pooling, then 84x84 grey frames, up to 30 no-op starts and a stack of
    the last 4 frames, channels last. Episodes are always whole games; with
    ``terminal_on_life_loss`` each step's info also says whether a life was
    lost (``info["life_lost"]``), which ``learning_terminals`` turns into a
    terminal for learning only.
    """

    def make():
        gym = _gymnasium()
        kwargs: dict[str, Any] = {} if max_episode_steps is None else {"max_episode_steps": max_episode_steps}
        if render_mode is not None:
            kwargs["render_mode"] = render_mode
        if atari:
            _register_ale(gym)
            from gymnasium.wrappers import AtariPreprocessing, FrameStackObservation

            env = gym.make(env_id, frameskip=1, **({} if render_mode is None else {"render_mode": render_mode}))
            # Never terminal on a lost life here: the vector env would autoreset the whole game
            # and lives 2-5 would never be played. LifeLossInfo reports the loss instead.
            env = AtariPreprocessing(
                env, noop_max=30, frame_skip=4, screen_size=84,
                terminal_on_life_loss=False, grayscale_obs=True, scale_obs=False,
            )
            if terminal_on_life_loss:
                env = with_life_loss_info(env)
            env = FrameStackObservation(env, stack_size=4)
            # Channels last (84, 84, 4), the layout of gymnax's MinAtar frames and of the CNN torsos.
            space = gym.spaces.Box(0, 255, (*env.observation_space.shape[1:], env.observation_space.shape[0]), np.uint8)
            env = gym.wrappers.TransformObservation(env, lambda obs: np.moveaxis(obs, 0, -1), space)
            # The limit counts agent steps (4 frames each), so it wraps the preprocessed env.
            return env if max_episode_steps is None else gym.wrappers.TimeLimit(env, max_episode_steps)
        return gym.make(env_id, **kwargs)

    return make


def make_host_spec(env_id: str, *, terminal_on_life_loss: bool = False, max_episode_steps: int | None = None,
                   render_mode: str | None = None) -> HostEnvSpec:
    """Check that ``env_id`` exists, is installed and has a usable action space; describe it.

    ``render_mode`` is passed to ``gym.make`` by the spec's ``make`` (``populax eval --video``).
    """
    gym = _gymnasium()
    _register_ale(gym)
    if is_custom(env_id):
        kind, factory = resolve_custom(env_id)
        if kind != "gymnasium":
            raise ConfigError(f"--env: {env_id} is a JAX environment; it trains on the compiled backend")
        make, atari = custom_env_fn(factory, max_episode_steps=max_episode_steps, render_mode=render_mode), False
    else:
        registered = registered_id(gym, env_id)
        entry = str(gym.registry[registered].entry_point)
        if "mujoco_py" in entry:
            raise ConfigError(f"--env: {env_id} needs the retired mujoco-py; use the v5 version of this task")
        missing = _missing_extra(registered, entry)
        if missing:
            raise ConfigError(f"--env: {env_id} needs a package that is not installed; install {missing}")
        if "mujoco" in entry:
            check_mujoco_gl()
        old_mujoco = needs_old_mujoco(registered)
        if old_mujoco:  # say which MuJoCo, not Gymnasium's ImportError turned into "install populax[mujoco]"
            raise ConfigError(f"--env: {env_id} is not trainable: {old_mujoco}")
        atari = atari_entry(registered, entry)
        make = make_env_fn(env_id, atari=atari, terminal_on_life_loss=terminal_on_life_loss,
                           max_episode_steps=max_episode_steps, render_mode=render_mode)
    try:
        env = make()
    except (ImportError, gym.error.DependencyNotInstalled) as error:
        raise ConfigError(f"--env: {env_id} cannot be built here ({error}); install populax[mujoco] or populax[atari]") from None
    except TypeError as error:
        if not (is_custom(env_id) and needs_arguments(factory)):  # a TypeError inside it: the user's traceback
            raise
        raise ConfigError(f"--env: {env_id} cannot be built with no arguments ({error}); name a function that "
                          "builds it with its arguments instead") from None
    try:
        obs_space, act_space = env.observation_space, env.action_space
    finally:
        env.close()
    check_spaces(env_id, obs_space, act_space)
    if isinstance(act_space, gym.spaces.Discrete):
        action, low, high = ActionSpec(discrete=True, size=int(act_space.n)), None, None
    else:
        action = ActionSpec(discrete=False, size=int(np.prod(act_space.shape)))
        low = np.asarray(act_space.low, np.float32).reshape(-1)
        high = np.asarray(act_space.high, np.float32).reshape(-1)
    if is_custom(env_id) or ":" in env_id:  # a user's environment (py:..., or Gymnasium's module:Id)
        check_steps_in_its_spaces(make, env_id)
    dtype = np.uint8 if obs_space.dtype == np.uint8 else np.float32
    return HostEnvSpec(env_id, tuple(int(d) for d in obs_space.shape), dtype, action, low, high, make)


def needs_arguments(factory: Callable[..., Any]) -> bool:
    """Whether ``factory()`` cannot be called as populax calls it: with no arguments."""
    try:
        inspect.signature(factory).bind()
    except TypeError:
        return True
    except ValueError:  # no signature to read (a builtin): let the call say
        return False
    return False


def time_limit_of(env: Any) -> int | None:
    """The steps after which ``env`` truncates an episode: its registered ``max_episode_steps`` or a ``TimeLimit``
    among its wrappers (a user's class wrapped by hand has no spec); None when neither."""
    limit = getattr(getattr(env, "spec", None), "max_episode_steps", None)
    while not limit and env is not None:
        limit = getattr(env, "_max_episode_steps", None) if type(env).__name__ == "TimeLimit" else None
        env = getattr(env, "env", None)
    return limit


def check_steps_in_its_spaces(make: Callable[[], Any], env_id: str) -> None:
    """A user's environment built, reset and stepped once (an action drawn from its space, seeded), then closed:
    ConfigError in one line where it does not keep to the Gymnasium API it declares, instead of numpy's "Output
    array is the wrong shape" from inside the vector env, or a tuple unpacking error, mid-run."""

    def check_observation(obs: Any, where: str) -> None:
        space = env.observation_space
        if np.shape(obs) != space.shape:
            raise ConfigError(f"--env: {env_id}'s {where} returned an observation of shape {np.shape(obs)}; its "
                              f"observation_space is {space.shape}")
        returned = np.asarray(obs).dtype
        if np.dtype(space.dtype) == np.uint8 and is_float(returned):  # other spaces are stored as float32
            raise ConfigError(f"--env: {env_id}'s {where} returned {returned} observations; its observation_space "
                              "is uint8, which the replay stores as uint8 frames (floats would be cut to whole "
                              "numbers): declare a float Box, or return uint8")

    env = make()
    try:
        first = env.reset(seed=0)
        if not (isinstance(first, tuple) and len(first) == 2):
            raise ConfigError(f"--env: {env_id}'s reset() must return (observation, info) (the Gymnasium API)")
        check_observation(first[0], "reset()")
        env.action_space.seed(0)
        try:
            result = env.step(env.action_space.sample())
        except NotImplementedError:  # gymnasium.Env.step's own body: the class did not define step()
            raise ConfigError(f"--env: {env_id} does not implement step(action) (gymnasium.Env leaves it to the "
                              "environment)") from None
        if not (isinstance(result, tuple) and len(result) == 5):
            got = f"tuple of {len(result)}" if isinstance(result, tuple) else type(result).__name__
            raise ConfigError(f"--env: {env_id}'s step() must return (observation, reward, terminated, truncated, "
                              f"info) (the Gymnasium API; got {got})")
        check_observation(result[0], "step()")
        if np.ndim(result[1]) != 0:
            raise ConfigError(f"--env: {env_id}'s step() returned a reward of shape {np.shape(result[1])}; it must "
                              "be one number")
    finally:
        env.close()


def atari_entry(registered: str, entry_point: str) -> bool:
    """Whether a registry id and its entry point are an ALE game (lives, AtariPreprocessing, frame stacks)."""
    return registered.startswith("ALE/") or "ale_py" in entry_point


def is_atari(env_id: str) -> bool:
    """Whether a Gymnasium id names an ALE game (a user's ``py:`` environment never does); ConfigError as
    :func:`make_host_spec` for an unknown id."""
    if is_custom(env_id):
        return False
    gym = _gymnasium()
    _register_ale(gym)
    registered = registered_id(gym, env_id)
    return atari_entry(registered, str(gym.registry[registered].entry_point))


def registered_id(gym: Any, env_id: str) -> str:
    """The registry id of ``env_id``, importing the module of Gymnasium's ``module:Id`` form first (the module
    registers the id; ``gym.make`` imports it again in every subprocess); one-line ConfigError when unknown."""
    module, colon, registered = env_id.partition(":")
    if colon:
        try:
            import_user_module(module)
        except ImportError as error:
            raise ConfigError(f"--env: cannot import module {module!r} of {env_id!r} "
                              f"({import_failure(module, error)})") from None
    else:
        registered = env_id
    if registered not in gym.registry:
        missing = EXTRAS["ale_py"][1] if registered.startswith("ALE/") else None
        if missing:
            raise ConfigError(f"--env: {env_id} needs ale-py, which is not installed; install {missing}")
        where = f" (module {module!r} did not register it)" if colon else ""
        raise ConfigError(f"--env: unknown environment {env_id!r}{where}; run `populax envs` for the list")
    return registered


def custom_env_fn(factory: Callable[..., Any], *, max_episode_steps: int | None,
                  render_mode: str | None = None) -> Callable[[], Any]:
    """A closure building one instance of a user's Gymnasium environment from its class or factory, with the
    run's time limit (a truncation) when one is set."""

    def make():
        env = factory() if render_mode is None else factory(render_mode=render_mode)
        if max_episode_steps is not None:
            env = _gymnasium().wrappers.TimeLimit(env, max_episode_steps)
        return env

    return make


def _worker_make(make: Callable[[], Any]) -> Any:
    """Build an env in an async worker that ignores SIGINT.

    Ctrl-C in a terminal reaches the whole process group; the training process
    turns it into "checkpoint and stop" and closes the workers itself, which
    must not die first.
    """
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    return make()


def make_vector_env(spec: HostEnvSpec, num_envs: int, mode: str) -> Any:
    """``num_envs`` instances in one Gymnasium vector env with same-step autoreset.

    ``sync`` steps them in this process one after another; ``async`` runs each
    in a subprocess (worth it when one step is expensive, e.g. Humanoid).
    """
    _gymnasium()
    from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv

    fns = [spec.make] * num_envs
    if mode == "async":
        # spawn, not fork: forking a process that runs JAX's threads can deadlock.
        workers = [functools.partial(_worker_make, spec.make)] * num_envs
        return AsyncVectorEnv(workers, context="spawn", autoreset_mode=AutoresetMode.SAME_STEP)
    if mode == "sync":
        return SyncVectorEnv(fns, autoreset_mode=AutoresetMode.SAME_STEP)
    raise ConfigError(f"--vector-env: unknown mode {mode!r}; allowed: {', '.join(VECTOR_MODES)}")


def to_env_actions(spec: HostEnvSpec, actions: np.ndarray) -> np.ndarray:
    """Agent actions (continuous ones in [-1, 1]) -> what the environment expects."""
    if spec.action.discrete:
        return actions.astype(np.int64)
    return spec.action_low + (actions + 1.0) * 0.5 * (spec.action_high - spec.action_low)


def final_observations(obs: np.ndarray, done: np.ndarray, info: dict) -> np.ndarray:
    """The observation each transition really led to: ``info['final_obs']`` where an episode ended."""
    if not done.any():
        return obs
    final = np.array(obs, copy=True)
    for i in np.flatnonzero(done):
        final[i] = info["final_obs"][i]
    return final


def family(env_id: str, entry_point: str) -> str:
    """A short family name for listing: Atari, MuJoCo, Box2D, classic control, toy text..."""
    if env_id.startswith("ALE/") or "ale_py" in entry_point:
        return "Atari"
    for key, name in (("mujoco", "MuJoCo"), ("box2d", "Box2D"), ("classic_control", "classic control"),
                      ("toy_text", "toy text"), ("phys2d", "phys2d (functional)"), ("tabular", "tabular")):
        if key in entry_point:
            return name
    return entry_point.split(":")[0]


def host_env_rows() -> list[tuple[str, str, str]]:
    """(id, family, status) of every Gymnasium id populax can route to the host path.

    Atari appears under its ``ALE/`` ids only (the legacy v0/v4 aliases are
    left out); status says whether the needed extra is installed.
    """
    gym = _gymnasium()
    _register_ale(gym)
    rows = []
    for env_id in sorted(gym.registry):
        entry = str(gym.registry[env_id].entry_point)
        if "ale_py" in entry and not env_id.startswith("ALE/") or "mujoco_py" in entry or "shimmy" in entry:
            continue  # legacy Atari aliases; MuJoCo v2/v3 need the retired mujoco-py; Shimmy's old-gym adapters
        rows.append((env_id, family(env_id, entry), host_env_status(env_id, entry)))
    return rows
