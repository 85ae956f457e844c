"""Settings a run never reads: one warning line each (CLI) or an UnusedSettingWarning (Python API); the run goes
on. A value equal to its default is not a mistake and says nothing; no packaged recipe trips one."""

import warnings

import pytest

import populax
from populax.agents import get_algorithm
from populax.cli import main
from populax.cohorts import split_static, static_space
from populax.envs.jax_envs import gymnax_ids
from populax.envs.routing import resolve_env
from populax.run.config import FIELDS, TrainConfig, build_config, load_recipe
from populax.run.recipes import RECIPE_DIR, packaged_recipes
from populax.runtime.unused import unused_settings


def flagged(host=False, on_policy=False, mixed=False, **settings) -> set[str]:
    """The settings ``unused_settings`` names for a config with ``settings`` changed."""
    lines = unused_settings(TrainConfig(**settings), host=host, on_policy=on_policy, mixed=mixed)
    return {line.split(":")[0] for line in lines}


@pytest.mark.parametrize("context, settings, expected", [
    ({}, dict(workers=4, worker_cpus=2.0, ray_address="127.0.0.1:6379"), {"--workers", "--worker-cpus", "--ray-address"}),
    ({}, dict(executor="ray", workers=4, worker_gpus=1.0), set()),
    ({}, dict(vector_env="async", overlap=False, max_policy_lag=10, terminal_on_life_loss=True),
     {"--vector-env", "--overlap", "--max-policy-lag", "--terminal-on-life-loss"}),
    ({"host": True}, dict(vector_env="async", overlap=False, max_policy_lag=10), set()),
    ({"host": True, "on_policy": True}, dict(vector_env="async", overlap=False, max_policy_lag=10),
     {"--overlap", "--max-policy-lag"}),
    ({}, dict(pbt_bottom=0.4, ready_interval=4000, pbt_copy="policy", pbt_cross_cohort="distill"),
     {"--pbt-bottom", "--ready-interval", "--pbt-copy", "--pbt-cross-cohort"}),
    ({}, dict(strategy="pbt", pbt_bottom=0.4, on_failure="freeze", distill_steps=10), {"--on-failure", "--distill-steps"}),
    ({"mixed": True}, dict(strategy="pbt", distill_steps=10), {"--distill-steps"}),
    ({"mixed": True}, dict(strategy="pbt", distill_steps=10, pbt_cross_cohort="distill"), set()),
    ({"mixed": True}, dict(strategy="pbt", distill_steps=10, pbt_static_explore=0.2), set()),
    ({}, dict(strategy="pb2", pbt_explore="resample", pbt_resample_prob=0.5, pbt_top=0.4),
     {"--pbt-explore", "--pbt-resample-prob"}),
    ({"on_policy": True}, dict(batch_size=64, buffer_size=10, learning_starts=0, updates_per_step=2.0),
     {"--batch-size", "--buffer-size", "--learning-starts", "--updates-per-step"}),
    ({}, dict(batch_size=64, buffer_size=10, learning_starts=0, updates_per_step=2.0), set()),
    # the defaults, given explicitly, are not flagged
    ({}, dict(workers=2, pbt_bottom=0.25, vector_env="sync", on_failure="reinit"), set()),
])
def test_each_unused_setting_is_named_once(context, settings, expected):
    assert flagged(**context, **settings) == expected


@pytest.mark.parametrize("name", packaged_recipes())
def test_no_packaged_recipe_sets_what_its_run_does_not_read(name):
    config = build_config([load_recipe(RECIPE_DIR / f"{name}.yaml")])
    static, _ = split_static(config.hp, config.pop, FIELDS)
    host = resolve_env(config.env, gymnax_ids()).kind == "gymnasium"
    assert unused_settings(config, host=host, on_policy=get_algorithm(config.algo).on_policy,
                           mixed=static_space(static) is not None) == []


TINY = ["--pop", "2", "--total-steps", "500", "--eval-every", "500", "--eval-episodes", "1", "--hidden", "8",
        "--learning-starts", "100", "--batch-size", "16", "--no-progress", "--no-tensorboard"]


def test_the_cli_warns_in_one_line_per_setting_and_trains(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *TINY, "--workers", "4", "--pbt-bottom", "0.4", "--out", str(out)]) == 0
    warned = [line for line in capsys.readouterr().err.splitlines() if line.startswith("populax: warning:")]
    assert warned == ["populax: warning: --workers: applies to --executor ray (this run: auto); ignored",
                      "populax: warning: --pbt-bottom: applies to --strategy pbt or pb2; ignored"]
    assert (out / "summary.json").exists()


def test_the_python_api_warns_with_a_category_users_can_filter(tmp_path):
    config = populax.TrainConfig(env="CartPole-v1", algo="ppo", pop=2, total_steps=512, eval_every=512, eval_episodes=1,
                                 hidden=(8,), batch_size=64, out=str(tmp_path / "ppo"), progress=False,
                                 tensorboard=False)
    with pytest.warns(populax.UnusedSettingWarning, match="--batch-size: ppo is on-policy"):
        populax.train(config)
    with warnings.catch_warnings():
        warnings.simplefilter("error", populax.UnusedSettingWarning)
        with pytest.raises(populax.UnusedSettingWarning):
            populax.train(populax.TrainConfig(**{**config.__dict__, "out": str(tmp_path / "strict")}))
    assert not (tmp_path / "strict").exists()  # raised before anything was written
