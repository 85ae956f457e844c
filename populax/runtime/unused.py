"""Settings a run does not read, or whose value makes them do nothing: one line each, so that a changed value
that does nothing is not taken for one that does (``--workers 4`` without ``--executor ray``, a PBT setting
under ``--strategy independent``, ``--batch-size`` for PPO, ``--terminal-on-life-loss`` on an environment
without lives, a ``--learning-starts`` the run never reaches). The run goes on: a recipe written for one path
stays usable on another (a Ray recipe tried with ``--executor vmap``, a short smoke test of a long recipe);
what cannot work at all is a ConfigError elsewhere.
"""

from __future__ import annotations

from populax.envs.host_envs import is_atari
from populax.envs.jax_envs import gymnax_ids
from populax.envs.routing import resolve_env
from populax.run.config import TrainConfig
from populax.runtime.setup import RunSetup

RAY_ONLY = ("workers", "worker_cpus", "worker_gpus", "ray_address")
HOST_ONLY = ("vector_env", "overlap", "max_policy_lag", "terminal_on_life_loss")
COLLECTOR_ONLY = ("overlap", "max_policy_lag")
"""What only the off-policy host collector reads (PPO collects each rollout with its newest parameters)."""
STRATEGY_ONLY = ("ready_interval", "fitness_window", "pbt_bottom", "pbt_top", "pbt_copy", "pbt_copy_buffer",
                 "pbt_reset_optimizer", "pbt_explore", "pbt_resample_prob")
PBT_EXPLORE_ONLY = ("pbt_explore", "pbt_resample_prob")
MIXED_ONLY = ("pbt_cross_cohort", "pbt_static_explore", "distill_steps")
REPLAY_ONLY = ("batch_size", "buffer_size", "learning_starts", "updates_per_step", "save_buffer")

MIXED_EXAMPLE = "a static setting given per member, e.g. --hp.hidden choice:64x64,256x256"


def unused_settings(config: TrainConfig, *, host: bool, on_policy: bool, mixed: bool, atari: bool = False) -> list[str]:
    """One line per setting changed from its default that a run of ``config`` never reads: ``host``, its
    environment runs on the host (Gymnasium/ALE); ``on_policy``, its algorithm learns from rollouts;
    ``mixed``, its members differ in static settings; ``atari``, its environment is an ALE game."""
    defaults = TrainConfig()
    reasons: dict[str, str] = {}

    def unused(names: tuple[str, ...], why: str) -> None:
        for name in names:
            if name not in reasons and getattr(config, name) != getattr(defaults, name):
                reasons[name] = why

    if config.executor != "ray":
        unused(RAY_ONLY, f"applies to --executor ray (this run: {config.executor})")
    if not host:
        unused(HOST_ONLY, f"applies to host (Gymnasium/ALE) environments; {config.env} is compiled")
    else:
        if on_policy:
            unused(COLLECTOR_ONLY, f"{config.algo} collects each rollout with its newest parameters (no overlap)")
        if not atari:
            unused(("terminal_on_life_loss",), f"applies to Atari (ALE) games, which have lives; {config.env} is not one")
    if config.strategy == "independent":
        unused(STRATEGY_ONLY + MIXED_ONLY, "applies to --strategy pbt or pb2")
    else:
        unused(("on_failure",), f"applies to --strategy independent ({config.strategy} replaces a failed member "
                                "by an exploit)")
        if config.strategy == "pb2":
            unused(PBT_EXPLORE_ONLY, "pb2 explores with its GP bandit")
        if not mixed:
            unused(MIXED_ONLY, f"applies to mixed-shape populations ({MIXED_EXAMPLE})")
        elif config.pbt_cross_cohort != "distill" and config.pbt_static_explore == 0:
            unused(("distill_steps",), "applies to --pbt-cross-cohort distill or --pbt-static-explore > 0")
    if on_policy:
        unused(REPLAY_ONLY, f"{config.algo} is on-policy, without a replay buffer"
                            + (" (its minibatches: --algo-opt.minibatches)" if config.algo == "ppo" else ""))
    if config.target_return is None:
        unused(("target_stat",), "applies to --target-return")
    if config.init_from is None:
        unused(("init_member",), "applies to --init-from")
    return [f"--{name.replace('_', '-')}: {why}; ignored" for name, why in reasons.items()]


def ineffective_settings(config: TrainConfig, *, on_policy: bool, run_steps: int, chunk_steps: int) -> list[str]:
    """One line per setting whose value leaves it without effect in a run of ``run_steps`` env steps per member
    (``total_steps`` rounded up to whole evaluation periods of ``chunk_steps``): a budget rounded up by more than
    10% (``--total-steps 1000`` with the default ``--eval-every 2000`` trains 2,000), a PBT/PB2 whose first round
    would come at or after the run's end, learning that never starts, batches larger than all the replay can
    ever hold."""
    lines = []
    if run_steps > 1.1 * config.total_steps:  # (a recipe's rounding to whole rollouts, a few %, is no news)
        period = ("one evaluation period, --eval-every" if chunk_steps == config.eval_every else
                  f"--eval-every {config.eval_every:,} rounded to whole rollouts or generations")
        lines.append(f"--total-steps {config.total_steps:,}: a run is whole chunks of {chunk_steps:,} env steps per "
                     f"member ({period}), so it trains {run_steps:,}; give a multiple of {chunk_steps:,}")
    if config.strategy != "independent":
        ready = config.ready_interval or 2 * chunk_steps
        if ready >= run_steps:  # rounds come at multiples of the interval before the last chunk's end
            lines.append(f"--strategy {config.strategy}: its first exploit/explore round would come after "
                         f"{ready:,} env steps per member (--ready-interval; 0: two evaluation periods), the run "
                         f"ends at {run_steps:,}; no round will happen, the members train independently")
    if on_policy:  # unused_settings names the replay settings of an on-policy run
        return lines
    if config.learning_starts >= run_steps:
        lines.append(f"--learning-starts {config.learning_starts:,}: the run ends at {run_steps:,} env steps per "
                     "member, before learning starts; no member will make a gradient update")
    capacity = min(config.buffer_size, run_steps)
    if config.batch_size > capacity:
        lines.append(f"--batch-size {config.batch_size:,}: larger than the replay can ever hold ({capacity:,}: "
                     "--buffer-size, at most the run's env steps per member); every batch repeats transitions")
    return lines


def flag_text(name: str, value: object) -> str:
    """A setting's value as its run-wide flag takes it (``--hidden 32,32``)."""
    return ",".join(map(str, value)) if name == "hidden" else str(value)


def run_unused_settings(setup: RunSetup) -> list[str]:
    """:func:`unused_settings` and :func:`ineffective_settings` of a prepared run."""
    choice = resolve_env(setup.config.env, gymnax_ids())
    host = choice.kind == "gymnasium"
    on_policy = setup.algorithm.on_policy
    lines = unused_settings(setup.config, host=host, on_policy=on_policy, mixed=setup.space is not None,
                            atari=host and is_atari(choice.env_id))
    space = setup.space
    if space is not None:  # --hidden 32,32 beside --hp.hidden 16x16,64x64: every member's comes from the latter
        defaults = TrainConfig()
        lines += [f"--{name.replace('_', '-')} {flag_text(name, getattr(setup.config, name))}: each member's comes "
                  f"from --hp.{name.replace('_', '-')} (a value per member); ignored" for name in space.names
                  if getattr(setup.config, name) != getattr(defaults, name)]
    if on_policy and space is not None:  # cohorts that differ only in a setting no member reads
        lines += [f"--hp.{name.replace('_', '-')}: {setup.config.algo} is on-policy, without a replay buffer; its "
                  "members differ in a setting none of them reads (each value a cohort of its own)"
                  for name in space.names if name in REPLAY_ONLY]
    # A mixed-shape population's cohorts may set the replay settings per member (--hp.batch-size 64,512).
    configs = [space.config_for(setup.config, c) for c in range(len(space.settings))] if space else [setup.config]
    for config in configs:
        for line in ineffective_settings(config, on_policy=on_policy, run_steps=setup.num_chunks * setup.chunk_steps,
                                         chunk_steps=setup.chunk_steps):
            if line not in lines:
                lines.append(line)
    return lines


__all__ = ["ineffective_settings", "run_unused_settings", "unused_settings"]
