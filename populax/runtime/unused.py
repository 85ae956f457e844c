"""Settings a run does not read: one line each, so that a changed value that does nothing is not taken for one
that does (``--workers 4`` without ``--executor ray``, a PBT setting under ``--strategy independent``,
``--batch-size`` for PPO). The run goes on: a recipe written for one path stays usable on another (a Ray
recipe tried with ``--executor vmap``); what cannot work at all is a ConfigError elsewhere.
"""

from __future__ import annotations

from populax.envs.jax_envs import gymnax_ids
from populax.envs.routing import resolve_env
from populax.run.config import TrainConfig
from populax.runtime.setup import RunSetup

RAY_ONLY = ("workers", "worker_cpus", "worker_gpus", "ray_address")
HOST_ONLY = ("vector_env", "overlap", "max_policy_lag", "terminal_on_life_loss")
COLLECTOR_ONLY = ("overlap", "max_policy_lag")
"""What only the off-policy host collector reads (PPO collects each rollout with its newest parameters)."""
STRATEGY_ONLY = ("ready_interval", "fitness_window", "pbt_bottom", "pbt_top", "pbt_copy", "pbt_copy_buffer",
                 "pbt_explore", "pbt_resample_prob")
PBT_EXPLORE_ONLY = ("pbt_explore", "pbt_resample_prob")
MIXED_ONLY = ("pbt_cross_cohort", "pbt_static_explore", "distill_steps")
REPLAY_ONLY = ("batch_size", "buffer_size", "learning_starts", "updates_per_step", "save_buffer")

MIXED_EXAMPLE = "a static setting given per member, e.g. --hp.hidden choice:64x64,256x256"


def unused_settings(config: TrainConfig, *, host: bool, on_policy: bool, mixed: bool) -> list[str]:
    """One line per setting changed from its default that a run of ``config`` never reads: ``host``, its
    environment runs on the host (Gymnasium/ALE); ``on_policy``, its algorithm learns from rollouts;
    ``mixed``, its members differ in static settings."""
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
    elif on_policy:
        unused(COLLECTOR_ONLY, f"{config.algo} collects each rollout with its newest parameters (no overlap)")
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
        unused(REPLAY_ONLY, f"{config.algo} is on-policy, without a replay buffer (its minibatches: "
                            "--algo-opt.minibatches)")
    return [f"--{name.replace('_', '-')}: {why}; ignored" for name, why in reasons.items()]


def run_unused_settings(setup: RunSetup) -> list[str]:
    """:func:`unused_settings` of a prepared run."""
    host = resolve_env(setup.config.env, gymnax_ids()).kind == "gymnasium"
    return unused_settings(setup.config, host=host, on_policy=setup.algorithm.on_policy,
                           mixed=setup.space is not None)


__all__ = ["run_unused_settings", "unused_settings"]
