"""Settings a run never reads: one warning line each (CLI) or an UnusedSettingWarning (Python API); the run goes
on. A value equal to its default is not a mistake and says nothing; no packaged recipe trips one."""

import warnings

import pytest

import populax
from populax.agents import get_algorithm
from populax.cli import main
from populax.cohorts import split_static, static_space
from populax.envs.host_envs import is_atari
from populax.envs.jax_envs import gymnax_ids
from populax.envs.routing import resolve_env
from populax.run.config import FIELDS, TrainConfig, build_config, load_recipe
from populax.run.recipes import RECIPE_DIR, packaged_recipes
from populax.runtime.setup import prepare
from populax.runtime.unused import ineffective_settings, run_unused_settings, unused_settings


def flagged(host=False, on_policy=False, mixed=False, atari=False, **settings) -> set[str]:
    """The settings ``unused_settings`` names for a config with ``settings`` changed."""
    lines = unused_settings(TrainConfig(**settings), host=host, on_policy=on_policy, mixed=mixed, atari=atari)
    return {line.split(":")[0] for line in lines}


@pytest.mark.parametrize("context, settings, expected", [
    ({}, dict(workers=4, worker_cpus=2.0, ray_address="127.0.0.1:6379"), {"--workers", "--worker-cpus", "--ray-address"}),
    ({}, dict(executor="ray", workers=4, worker_gpus=1.0), set()),
    ({}, dict(vector_env="async", overlap=False, max_policy_lag=10, terminal_on_life_loss=True),
     {"--vector-env", "--overlap", "--max-policy-lag", "--terminal-on-life-loss"}),
    ({"host": True}, dict(vector_env="async", overlap=False, max_policy_lag=10), set()),
    ({"host": True}, dict(terminal_on_life_loss=True), {"--terminal-on-life-loss"}),  # no lives to lose
    ({"host": True, "atari": True}, dict(terminal_on_life_loss=True), set()),
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
    ({}, dict(target_stat="median"), {"--target-stat"}),
    ({}, dict(target_stat="median", target_return=100.0), set()),
    ({}, dict(init_member="best"), {"--init-member"}),
    ({}, dict(init_member="best", init_from="runs/x"), set()),
    # the defaults, given explicitly, are not flagged
    ({}, dict(workers=2, pbt_bottom=0.25, vector_env="sync", on_failure="reinit"), set()),
])
def test_each_unused_setting_is_named_once(context, settings, expected):
    assert flagged(**context, **settings) == expected


@pytest.mark.parametrize("name", packaged_recipes())
def test_no_packaged_recipe_sets_what_its_run_does_not_read(name):
    # the Atari recipes name no env: they are applied to any ALE id
    config = build_config([load_recipe(RECIPE_DIR / f"{name}.yaml"), {"env": "ALE/Pong-v5"} if "atari" in name else {}])
    static, _ = split_static(config.hp, config.pop, FIELDS)
    choice = resolve_env(config.env, gymnax_ids())
    host, on_policy = choice.kind == "gymnasium", get_algorithm(config.algo).on_policy
    assert unused_settings(config, host=host, on_policy=on_policy, mixed=static_space(static) is not None,
                           atari=host and is_atari(choice.env_id)) == []
    assert ineffective_settings(config, on_policy=on_policy, run_steps=config.total_steps,
                                chunk_steps=config.eval_every) == []


@pytest.mark.parametrize("on_policy, settings, expected", [
    (False, dict(total_steps=400, learning_starts=1000), ["--learning-starts 1,000: the run ends at 400 env steps"]),
    (False, dict(total_steps=400, learning_starts=399, batch_size=64), []),
    (False, dict(buffer_size=100, batch_size=256), ["--batch-size 256: larger than the replay can ever hold (100"]),
    (False, dict(total_steps=200, learning_starts=100), ["--batch-size 256: larger than the replay can ever hold (200"]),
    (True, dict(total_steps=400, learning_starts=1000, batch_size=4096), []),  # on-policy: unused_settings says it
    # PBT/PB2 rounds come at multiples of the ready interval (0: two evaluation periods) before the run's end
    (True, dict(strategy="pbt", total_steps=4000, eval_every=2000), ["--strategy pbt: its first exploit/explore "
                                                                     "round would come after 4,000 env steps"]),
    (True, dict(strategy="pb2", total_steps=6000, eval_every=2000), []),
    (True, dict(strategy="pb2", total_steps=6000, eval_every=2000, ready_interval=6000), ["--strategy pb2:"]),
    (True, dict(strategy="pbt", total_steps=6000, eval_every=2000, ready_interval=4000), []),
])
def test_settings_whose_values_do_nothing_are_named(on_policy, settings, expected):
    config = TrainConfig(**settings)
    lines = ineffective_settings(config, on_policy=on_policy, run_steps=config.total_steps, chunk_steps=config.eval_every)
    assert len(lines) == len(expected) and all(line.startswith(e) for line, e in zip(lines, expected))


def test_a_budget_that_whole_periods_round_up_by_more_than_a_tenth_is_named():
    """--total-steps 1000 with the default --eval-every 2000 trains 2,000: named, with the multiple to give. PPO's
    CartPole recipe rounds its 10,000-step period to whole rollouts of 256 (100,000 -> 102,400): not news."""
    lines = run_unused_settings(prepare(TrainConfig(total_steps=1000, pop=2, learning_starts=100, batch_size=32)))
    assert lines == ["--total-steps 1,000: a run is whole chunks of 2,000 env steps per member (one evaluation "
                     "period, --eval-every), so it trains 2,000; give a multiple of 2,000"]
    setup = prepare(populax.tuned_config(algo="ppo", env="CartPole-v1", pop=2))
    assert setup.num_chunks * setup.chunk_steps == 102_400 and run_unused_settings(setup) == []


@pytest.mark.parametrize("env, warned", [("gymnasium:CartPole-v1", True), ("ALE/Pong-v5", False)])
def test_terminal_on_life_loss_is_named_where_there_are_no_lives(env, warned):
    """A prepared run asks Gymnasium's registry whether its environment is an ALE game."""
    config = build_config([dict(env=env, algo="dqn", pop=2, total_steps=2000, eval_every=1000,
                                terminal_on_life_loss=True, progress=False)])
    lines = run_unused_settings(prepare(config))
    assert [line.split(":")[0] for line in lines] == (["--terminal-on-life-loss"] if warned else [])


def test_per_member_replay_settings_of_an_on_policy_run_are_named():
    """``--hp.batch-size 32,64`` for PPO made two cohorts of a setting no member reads, silently (the scalar
    ``--batch-size`` was named)."""
    config = build_config([dict(env="CartPole-v1", algo="ppo", pop=2, total_steps=512, eval_every=512,
                                hp={"batch-size": "32,64"}, progress=False)])
    assert run_unused_settings(prepare(config)) == [
        "--hp.batch-size: ppo is on-policy, without a replay buffer; its members differ in a setting none of them "
        "reads (each value a cohort of its own)"]


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


def test_each_cohorts_own_batch_size_is_checked_against_the_replay():
    """A mixed-shape population: the batch size one cohort sets for its members is checked, not the run's."""
    config = build_config([dict(env="Pendulum-v1", pop=2, total_steps=400, eval_every=200, buffer_size=300,
                                learning_starts=100, hp={"batch-size": "32,512"}, progress=False)])
    assert [line.split(":")[0] for line in run_unused_settings(prepare(config))] == ["--batch-size 512"]


def test_a_run_wide_static_setting_beside_its_per_member_values_is_named():
    """``--hidden 32,32 --hp.hidden 16x16,64x64``: every member's network comes from --hp.hidden, and config.yaml
    recorded both without a word."""
    config = build_config([dict(env="Pendulum-v1", algo="td3", pop=2, total_steps=512, eval_every=512,
                                learning_starts=100, hidden=(32, 32), batch_size=128,
                                hp={"hidden": "16x16,64x64", "batch-size": "32,64"}, progress=False)])
    assert run_unused_settings(prepare(config)) == [
        "--hidden 32,32: each member's comes from --hp.hidden (a value per member); ignored",
        "--batch-size 128: each member's comes from --hp.batch-size (a value per member); ignored"]


@pytest.mark.parametrize("flags, hint", [
    (["--hidden", "choice:16x16,64x64"], "; --hidden is one network for every member (64,64); a network per member "
                                         "is --hp.hidden 16x16,64x64 or choice:16x16,64x64"),
    (["--batch-size", "32,64,32,64"], "; --batch-size is one value for every member; a value per member is "
                                      "--hp.batch-size A,B,... or choice:A,B"),
])
def test_per_member_values_given_to_the_run_wide_flag_point_to_hp(tmp_path, capsys, flags, hint):
    assert main(["train", *flags, "--pop", "2", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith(hint) and len(err.splitlines()) == 1, err
