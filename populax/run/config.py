"""The training configuration: one typed dataclass, a docstring per field.

A configuration comes from three layers, later ones winning: the defaults
below, a YAML recipe (``--config recipe.yaml``, read with ``yaml.safe_load``),
and command-line flags. ``config.yaml`` in a run directory is the fully
resolved result and can be given back to ``--config`` to rerun.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from populax.cohorts import MIXABLE
from populax.errors import ConfigError

EVAL_STEP_LIMIT = 100_000
"""Most steps an evaluation episode lasts without ``eval_max_steps``: an environment without a time limit (or with
a longer one, gymnax's max_steps_in_episode = 10**9) would otherwise evaluate for ever (a compiled evaluation also
draws one key per step it may last)."""


@dataclass
class TrainConfig:
    """Everything that defines a training run."""

    env: str = "Pendulum-v1"
    """Environment id: gymnax or brax:NAME (compiled) or any Gymnasium/ALE id (host); prefix gymnax: or gymnasium: to choose; `populax envs` lists them. Your own: py:package.module:attribute (a gymnax-API or brax env, a gymnasium.Env class, or a function building one), gymnasium:package.module:Id, or in the Python API the environment object itself."""
    algo: str = "td3"
    """Algorithm: td3, sac, dqn, ppo, and the coupled population methods cemrl (CEM-RL) and dvd-td3 (DvD-TD3). Your own: a name given to populax.register_algorithm, py:package.module:ALGORITHM, or in the Python API the populax.Algorithm itself."""
    pop: int = 8
    """Number of members in the population."""
    envs_per_member: int = 1
    """Parallel environments each member acts in."""
    seed: int = 0
    """Seed of every random draw of the run (init, exploration, hyperparameters)."""
    total_steps: int = 20_000
    """Env steps per member (rounded up to whole evaluation periods)."""
    eval_every: int = 2_000
    """Env steps per member between evaluations (one compiled chunk)."""
    eval_episodes: int = 10
    """Fresh episodes per member per evaluation, deterministic policy."""
    eval_max_steps: int = 0
    """Most agent steps per evaluation episode, so a stuck policy cannot stall a run (0: the environment's own limit, and at most EVAL_STEP_LIMIT = 100,000 for an environment without one or with a longer one)."""
    executor: str = "auto"
    """How the member axis runs: auto, sequential, vmap, chunked:K, sharded, ray (blocks of members on Ray workers)."""
    hidden: tuple[int, ...] = (256, 256)
    """Hidden layer widths of every network (static: changes shapes)."""
    batch_size: int = 256
    """Transitions per gradient update (static)."""
    buffer_size: int = 1_000_000
    """Replay capacity per member, capped at total_steps (static)."""
    learning_starts: int = 1_000
    """Env steps per member of uniform random actions before learning starts (CEM-RL: no random actions, its
    sampled actors act from the first generation; only its gradient steps wait)."""
    updates_per_step: float = 1.0
    """Gradient updates per env step (update-to-data ratio), e.g. 0.25 = every 4 steps."""
    n_step: int = 1
    """Off-policy: env steps per TD target (n-step returns, as in Rainbow): r_t + ... + gamma^(k-1) r_(t+k-1) +
    gamma^k Q(s_(t+k)), k = n unless the episode ends first; 1 = one-step TD. Made when sampling, so
    checkpoints and resume do not depend on it. PPO uses GAE instead (--hp.gae-lambda)."""
    strategy: str = "independent"
    """Population strategy: independent (seeds/sweeps), pbt (Jaderberg et al. 2017) or pb2 (GP-bandit explore)."""
    ready_interval: int = 0
    """PBT/PB2: env steps per member between exploit/explore rounds (0 = two evaluation periods)."""
    fitness_window: int = 2
    """PBT/PB2: fitness = mean of a member's last this-many evaluations (since its last copy)."""
    pbt_bottom: float = 0.25
    """PBT/PB2: fraction of members (worst fitness) replaced at each round (the paper: 0.4)."""
    pbt_top: float = 0.25
    """PBT/PB2: fraction of members (best fitness) a replaced member copies from, at most 1 - pbt_bottom (the
    paper: 0.6, every member not replaced)."""
    pbt_copy: str = "all"
    """PBT/PB2 exploit: all (actor, critics, targets, optimizer states) or policy (actor only, the paper)."""
    pbt_reset_optimizer: bool = False
    """PBT/PB2 exploit: the optimizer states a copy takes (--pbt-copy policy: the actor's) start fresh instead of
    being the source's, as the paper's learners reset them (every algorithm that declares them: td3, sac, dqn, ppo)."""
    pbt_copy_buffer: bool = False
    """PBT/PB2 exploit: also copy the source's replay buffer."""
    pbt_explore: str = "perturb"
    """PBT explore: perturb (x0.8/x1.2, or resample with pbt_resample_prob) or resample (always, the paper)."""
    pbt_resample_prob: float = 0.25
    """PBT explore: probability of resampling a hyperparameter from its prior instead of perturbing it."""
    pbt_cross_cohort: str = "copy"
    """Mixed-shape populations (--hp.hidden choice:64x64,256x256, ...): how a member that copies a member of another
    cohort is re-created in the new shape: copy (it takes the source's static settings, so the weights copy
    as they are), distill (a fresh network of the new shape taught the source's outputs on the source's replay
    states, BG-PBT), fresh (a fresh init with the source's hyperparameters)."""
    pbt_static_explore: float = 0.0
    """Mixed-shape populations: probability that PBT/PB2's explore moves each static setting of a copied member to
    a neighbouring value; where that changes the network's shape, copy is impossible and the member is distilled
    (fresh when the algorithm has no distillation)."""
    distill_steps: int = 500
    """--pbt-cross-cohort distill: gradient steps of one distillation (batches of the member's batch size)."""
    on_failure: str = "reinit"
    """independent: a member whose parameters or losses become NaN/Inf is re-initialised (reinit) or frozen (freeze)."""
    checkpoint_every: int = 0
    """Env steps per member between checkpoints (whole evaluation periods, on every backend); 0 = once 2+ minutes passed since the last checkpoint, at the next period end."""
    keep_checkpoints: int = 3
    """How many of the newest checkpoints to keep in RUN/checkpoints/."""
    save_buffer: bool = True
    """Save replay buffers in checkpoints (needed for an exact resume; skipped above 2 GB in total)."""
    vector_env: str = "sync"
    """Host envs: step the N x E Gymnasium envs in this process (sync) or one subprocess each (async)."""
    overlap: bool = True
    """Host envs: collect in a background thread while the learner updates (false: alternate, reproducible)."""
    max_policy_lag: int = 100
    """Host envs: most env steps per member the acting parameters may lag behind the collected data."""
    obs_norm: bool = False
    """Normalise observations with running per-member statistics (every kind of env; not cemrl or dvd-td3)."""
    clip_rewards: bool = False
    """The learner sees each reward as its sign (-1, 0 or +1), as DQN and PPO are trained on Atari (Mnih et al.
    2015; the Atari recipes turn it on); training and evaluation returns stay the environment's own score."""
    terminal_on_life_loss: bool = False
    """Atari: a lost life ends the training episode (no bootstrap) while the game goes on; evaluation plays whole games."""
    max_episode_steps: int = 0
    """Time limit per episode, every kind of env (0: the environment's own; brax's is 1000); an episode cut
    by it is truncated (bootstrapped), not terminated."""
    target_return: float | None = None
    """Stop the run at the first evaluation where the population's best return (--target-stat) reaches this
    (a checkpoint is saved and the run ends complete); summary.json records the env steps per member and
    wall seconds it took. None: train all total_steps."""
    target_stat: str = "best"
    """--target-return: which evaluation return must reach the target: best (any member) or median (half the
    population)."""
    init_from: str | None = None
    """Warm start: a run directory whose members this run starts from (networks, targets, optimizer moments,
    observation statistics from its newest checkpoint; the update counter at 0, so schedules span this run;
    hyperparameters, replay and environments new). Same algorithm, networks and spaces (member by member where
    either run mixes shapes: each member needs a source member of its own cohort's shape). None: a fresh init."""
    init_member: str = "each"
    """--init-from: which source member each member starts from: each (member i from member i; equal --pop),
    best (the source's best at its last evaluation, for every member) or a member id."""
    hp: dict[str, Any] = field(default_factory=dict)
    """Per-member hyperparameters: NAME -> number, N numbers, uniform:/loguniform:/choice:, or search (the declared
    search range)."""
    algo_options: dict[str, Any] = field(default_factory=dict)
    """Static settings of the algorithm (--algo-opt.NAME VALUE), e.g. DQN's torso or PPO's rollout-len."""
    out: str | None = None
    """Run directory (default: runs/ALGO-ENV-TIMESTAMP)."""
    force: bool = False
    """Replace an earlier run's directory (it holds config.yaml) instead of refusing; never a directory that is not a run, nor the current one."""
    tensorboard: bool = True
    """Write TensorBoard event files into the run directory."""
    progress: bool = True
    """Show a live progress bar."""
    workers: int = 2
    """--executor ray: Ray actors, each training one block of about pop/workers members."""
    worker_cpus: float = 1.0
    """--executor ray: CPUs Ray reserves for each worker."""
    worker_gpus: float = 0.0
    """--executor ray: GPUs Ray reserves for each worker (1: the worker owns one GPU via CUDA_VISIBLE_DEVICES)."""
    ray_address: str = ""
    """--executor ray: address of a running Ray cluster (ray start --head); empty: start a local instance on loopback."""


FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
TARGET_STATS = ("best", "median")
"""What --target-stat may name: the evaluation's best return, or its median over the members."""


def plain(value: Any) -> Any:
    """A per-member value as YAML would hold it: a numpy array or scalar (``np.array([1e-3, 1e-4])``), a tuple, a
    list of numpy numbers (``list(np.logspace(-4, -3, 4))``) become lists of Python numbers, which the ``--hp``
    reader takes and config.yaml can write."""
    if hasattr(value, "tolist"):  # numpy (and JAX) arrays and scalars
        return value.tolist()
    return [plain(item) for item in value] if isinstance(value, (list, tuple)) else value


def coerce(name: str, value: Any) -> Any:
    """Convert a YAML or CLI value to the type of field ``name`` (ConfigError if impossible)."""
    setting = f"--{name.replace('_', '-')}"
    default = TrainConfig().__getattribute__(name)
    try:
        if name in ("hp", "algo_options"):
            if not isinstance(value, dict):
                raise TypeError
            return {str(k): plain(v) for k, v in value.items()}
        if name == "hidden":
            if isinstance(value, str):  # "64,64", or "64x64" as --hp.hidden writes one network
                value = [v for v in value.split("," if "," in value else "x") if v.strip()]
            widths = tuple(int(v) for v in value)
            if not widths or min(widths) < 1:
                raise ValueError
            return widths
        if name in ("out", "init_from"):
            return None if value is None else str(value)
        if name == "target_return":
            if value is None or str(value).strip().lower() in ("", "none", "null"):
                return None
            number = float(value)
            if not math.isfinite(number):
                raise ValueError
            return number
        if isinstance(default, bool):
            if isinstance(value, str):
                if value.lower() in ("1", "true", "yes", "on"):
                    return True
                if value.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError
            return bool(value)
        if isinstance(default, int):
            if isinstance(value, int) and not isinstance(value, bool):
                return value  # exact, also beyond float precision (a large seed)
            number = float(value)
            if number != int(number):
                raise ValueError
            return int(number)
        if isinstance(default, float):
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        kind = {"hidden": "comma-separated positive whole numbers", "target_return": "a finite number (or none)"}.get(
            name, type(default).__name__)
        raise ConfigError(f"{setting}: cannot read {value!r} as {kind}{per_member_hint(name, value)}") from None


def per_member_hint(name: str, value: Any) -> str:
    """Where a value per member (or a choice) given to a static setting's run-wide flag goes: ``--hp.NAME``;
    empty for any other unreadable value."""
    text = ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
    if name not in MIXABLE:
        return ""
    if name == "hidden":  # "64,64" is --hidden's own form; "16x16" or a choice is --hp.hidden's
        if "choice:" in text or re.search(r"\d\s*x\s*\d", text):
            return ("; --hidden is one network for every member (64,64); a network per member is --hp.hidden "
                    "16x16,64x64 or choice:16x16,64x64")
        return ""
    if "choice:" in text or "," in text:
        flag = name.replace("_", "-")
        return f"; --{flag} is one value for every member; a value per member is --hp.{flag} A,B,... or choice:A,B"
    return ""


def coerce_config(config: TrainConfig) -> TrainConfig:
    """``config`` with every field read as a recipe's would be (the Python API's ``TrainConfig(hidden="64,64")``,
    ``total_steps="1000"``); ConfigError naming the field for a value of the wrong kind (``pop=2.5``). The
    environment and algorithm must already be their setting strings (``runtime.setup.with_object_settings``)."""
    return dataclasses.replace(config, **{name: coerce(name, getattr(config, name)) for name in FIELDS})


def load_recipe(path: str | Path) -> dict[str, Any]:
    """Read a YAML recipe with ``safe_load``; keys may use - or _."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--config: no such file {str(path)!r}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        line = getattr(getattr(error, "problem_mark", None), "line", None)
        where = f" (line {line + 1})" if line is not None else ""
        raise ConfigError(f"--config: {path} is not valid YAML{where}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"--config: {path} must hold a mapping of settings")
    return {str(k).replace("-", "_"): v for k, v in raw.items()}


def build_config(layers: list[dict[str, Any]]) -> TrainConfig:
    """Apply setting layers in order over the defaults; ``hp`` entries merge."""
    config = TrainConfig()
    for layer in layers:
        for name, value in layer.items():
            if name not in FIELDS:
                allowed = ", ".join(FIELDS)
                raise ConfigError(f"unknown setting {name!r}; allowed: {allowed}")
            value = coerce(name, value)
            if name in ("hp", "algo_options"):
                value = {**getattr(config, name), **value}
            setattr(config, name, value)
    return config


def check_ranges(config: TrainConfig) -> None:
    """Range checks that need no environment or algorithm (ConfigError on the first)."""
    positive = ("pop", "envs_per_member", "total_steps", "eval_every", "eval_episodes", "batch_size", "buffer_size")
    for name in positive:
        if getattr(config, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1 (got {getattr(config, name)})")
    if config.checkpoint_every < 0:
        raise ConfigError(f"--checkpoint-every must be >= 0 (0 = every few minutes; got {config.checkpoint_every})")
    if config.keep_checkpoints < 1:
        raise ConfigError(f"--keep-checkpoints must be >= 1 (got {config.keep_checkpoints})")
    if config.eval_max_steps < 0:
        raise ConfigError(f"--eval-max-steps must be >= 0 (0: the environment's own limit; got {config.eval_max_steps})")
    if config.learning_starts < 0:
        raise ConfigError(f"--learning-starts must be >= 0 (got {config.learning_starts})")
    if config.workers < 1:
        raise ConfigError(f"--workers must be >= 1 (got {config.workers})")
    if config.worker_cpus <= 0 or config.worker_gpus < 0:
        raise ConfigError(f"--worker-cpus must be > 0 and --worker-gpus >= 0 (got {config.worker_cpus}, {config.worker_gpus})")
    if config.n_step < 1:
        raise ConfigError(f"--n-step must be >= 1 (1: one-step TD targets; got {config.n_step})")
    if config.n_step > 1 and config.algo == "ppo":
        raise ConfigError(f"--n-step applies to the off-policy algorithms (td3, sac, dqn, cemrl, dvd-td3); ppo's "
                          f"returns are GAE (--hp.gae-lambda): allowed 1 (got {config.n_step})")
    if not 0 <= config.pbt_static_explore <= 1:
        raise ConfigError(f"--pbt-static-explore must be a probability in [0, 1] (got {config.pbt_static_explore})")
    if config.distill_steps < 1:
        raise ConfigError(f"--distill-steps must be >= 1 (got {config.distill_steps})")
    if not config.updates_per_step > 0:
        raise ConfigError(f"--updates-per-step must be > 0 (got {config.updates_per_step})")
    check_target_stat(config.target_stat)


def check_target_stat(stat: str) -> None:
    """ConfigError unless ``stat`` is a statistic --target-stat (and ``populax compare --target-stat``) allows."""
    if stat not in TARGET_STATS:
        raise ConfigError(f"--target-stat: unknown statistic {stat!r}; allowed: {', '.join(TARGET_STATS)}")


def config_to_dict(config: TrainConfig) -> dict[str, Any]:
    """Plain YAML-safe dict of a config (tuples become lists)."""
    out = dataclasses.asdict(config)
    out["hidden"] = list(config.hidden)
    return out
