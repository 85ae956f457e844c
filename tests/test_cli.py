"""`populax` end to end: the run directory, and clear errors for bad input."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from populax.cli import main


def populax(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "populax.cli", *args], capture_output=True, text=True, cwd=cwd)


def hparams_session(directory) -> tuple[dict[str, float], float]:
    """(hyperparameters, final return) of one HParams-dashboard session, as TensorBoard itself reads them."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    events = EventAccumulator(str(directory))
    events.Reload()
    content = plugin_data_pb2.HParamsPluginData.FromString(events.PluginTagToContent("hparams")["_hparams_/session_start_info"])
    hparams = {name: value.number_value for name, value in content.session_start_info.hparams.items()}
    return hparams, events.Scalars("hparam/final_return")[0].value


def test_train_writes_the_documented_run_directory(tmp_path):
    out = tmp_path / "run"
    code = main(["train", "--pop", "3", "--total-steps", "600", "--eval-every", "300", "--learning-starts", "200",
                 "--hidden", "16,16", "--batch-size", "32", "--eval-episodes", "2", "--no-progress",
                 "--hp.lr-actor", "loguniform:1e-4,1e-2", "--hp.gamma", "0.9,0.95,0.99", "--hp.tau", "search",
                 "--out", str(out)])
    assert code == 0
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["pop"] == 3 and config["hidden"] == [16, 16] and config["hp"]["gamma"] == "0.9,0.95,0.99"
    assert config["hp"]["tau"] == "loguniform:0.001,0.1"  # `search`, resolved to td3's declared range
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 2 * 3  # 2 evaluations x 3 members
    assert {"env_step", "member", "return", "hparams"} <= set(records[0])
    assert records[-1]["env_step"] == 600 and records[-1]["hparams"]["gamma"] == pytest.approx(0.99)
    summary = json.loads((out / "summary.json").read_text())
    for key in ("members", "best_member", "wall_time_s", "env_steps_per_s", "updates_per_s"):
        assert key in summary
    assert [m["id"] for m in summary["members"]] == [0, 1, 2]
    assert {"hparams", "final_return"} <= set(summary["members"][0])
    assert summary["updates_per_s"] > 0
    taus = [m["hparams"]["tau"] for m in summary["members"]]
    assert all(1e-3 <= tau <= 0.1 for tau in taus) and len(set(taus)) == 3
    event_files = list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert event_files and event_files[0].stat().st_size > 1000
    # TensorBoard's HParams dashboard: a session per member, its final hyperparameters and final return.
    for member in summary["members"]:
        hparams, metric = hparams_session(out / "tensorboard" / "hparams" / f"member_{member['id']}")
        assert hparams == pytest.approx(member["hparams"]) and "lr-actor" in hparams
        assert metric == pytest.approx(member["final_return"])

    # The resolved config reruns to the same draws.
    rerun = tmp_path / "rerun"
    assert main(["train", "--config", str(out / "config.yaml"), "--out", str(rerun), "--no-progress"]) == 0
    again = json.loads((rerun / "summary.json").read_text())
    assert [m["hparams"] for m in again["members"]] == [m["hparams"] for m in summary["members"]]


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--env", "NoSuchEnv-v0"], "--env: unknown environment 'NoSuchEnv-v0'"),
        (["--env", "CartPole-v1"], "--env: td3 needs a continuous (Box) action space"),
        (["--pop", "0"], "--pop must be >= 1"),
        (["--hp.lr-critic", "-3e-4"], "--hp.lr-critic: -0.0003 is outside the allowed range"),
        (["--hp.lr-actor", "loguniform:1e-3"], "--hp.lr-actor: loguniform needs LO,HI"),
        (["--hidden", "64,x"], "--hidden: cannot read"),
        (["--executor", "warp"], "--executor: unknown executor 'warp'"),
        (["--algo", "a2c"], "--algo: unknown algorithm 'a2c'"),
        (["--algo", "ppo", "--env", "CartPole-v1", "--no-recipe", "--hp.rollout-len", "8,16"],
         "--hp.rollout-len: an algorithm option (static: one value for the whole population), not a hyperparameter; "
         "give --algo-opt.rollout-len VALUE"),
    ],
)
def test_bad_input_is_one_line_exit_2_nothing_written(tmp_path, args, fragment):
    out = tmp_path / "run"
    result = populax("train", *args, "--out", str(out), "--no-progress")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()


@pytest.mark.parametrize("argv, line", [
    (["train", "--totl-steps", "100"],
     "populax: error: populax train: unrecognized arguments: --totl-steps 100; did you mean --total-steps? "
     "(populax train --help lists the options)"),
    (["eval", "--membr", "2", "RUN"], "populax eval: unrecognized arguments: --membr RUN; did you mean --member?"),
    (["eval"], "populax eval: the following arguments are required: RUN"),
    (["train", "--pop"], "populax train: argument --pop: expected one argument"),
    (["bench", "update-step", "--algoo", "td3"], "unrecognized arguments: --algoo td3; did you mean --algo?"),
])
def test_a_command_line_that_cannot_be_read_is_one_line_with_the_closest_flag(capsys, argv, line):
    """Not argparse's 30 lines of usage before the error: one line, exit 2, the flag meant where one is close."""
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and line in lines[0], lines


def test_a_repeated_hp_flag_is_overridden_by_the_last_as_every_flag_is():
    """A script's base arguments then an override: the last --hp.NAME wins, also spelled with _ instead of -."""
    from populax.cli import parse_train_args

    config = parse_train_args(["--pop", "2", "--hp.lr-actor", "1e-3", "--hp.tau", "0.01", "--hp.lr_actor", "1e-2",
                               "--pop", "4", "--no-recipe"])
    assert config.pop == 4 and config.hp == {"tau": "0.01", "lr_actor": "1e-2"}


def test_existing_run_is_never_overwritten_without_force(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    result = populax("train", "--out", str(out), "--no-progress")
    assert result.returncode == 2 and "--out" in result.stderr and "--force" in result.stderr
    assert (out / "precious.txt").read_text() == "keep me"


def test_an_out_directory_that_cannot_be_made_is_one_line(tmp_path, capsys):
    """A file on the way to --out is found before anything runs; a directory the system refuses to make (/proc:
    even root cannot) is one line too, not mkdir's traceback."""
    (tmp_path / "notes.txt").write_text("keep me")
    for out, says in ((tmp_path / "notes.txt" / "run", f"{tmp_path / 'notes.txt'} is a file"),
                      (Path("/proc/populax-run/run"), "cannot create /proc/populax-run/run")):
        assert main(["train", "--out", str(out), "--total-steps", "200", "--eval-every", "100", "--learning-starts", "50",
                     "--no-progress"]) == 2
        err = capsys.readouterr().err  # (the budget's own warnings come first: the short run is not the point)
        errors = [line for line in err.splitlines() if line.startswith("populax: error:")]
        assert len(errors) == 1 and errors[0].startswith("populax: error: --out:") and says in errors[0], err
        assert "Traceback" not in err
    assert (tmp_path / "notes.txt").read_text() == "keep me"


@pytest.mark.parametrize("case", ["other files", "a project's own config.yaml", "current directory", "a file",
                                  "a link to a run"])
def test_force_replaces_only_an_earlier_runs_directory(tmp_path, monkeypatch, capsys, case):
    """--force never deletes what is not a run: a directory of the user's files (also one with a config.yaml of
    its own, a Hydra project's), the current directory (the user's module beside the command), a file, a link;
    each a one-line refusal, exit 2, everything kept."""
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    (project / "other").mkdir()
    (project / "my_algo.py").write_text("ALGO = None\n")
    (project / "data" / "x.csv").write_text("1,2\n")
    (project / "other" / "config.yaml").write_text("defaults:\n  - model: resnet\n")
    (project / "run").mkdir()
    (project / "run" / "config.yaml").write_text("algo: td3\nenv: Pendulum-v1\npop: 2\ntotal_steps: 200\n"
                                                 "executor: auto\n")
    (project / "link").symlink_to(project / "run")
    monkeypatch.chdir(project)
    out = {"other files": "data", "a project's own config.yaml": "other", "current directory": ".",
           "a file": "my_algo.py", "a link to a run": "link"}[case]
    code = main(["train", "--pop", "2", "--total-steps", "200", "--out", out, "--force", "--no-progress"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "--out" in lines[0], lines
    assert (project / "my_algo.py").read_text() == "ALGO = None\n" and (project / "data" / "x.csv").is_file()
    assert (project / "other" / "config.yaml").is_file() and (project / "run" / "config.yaml").is_file()


def test_force_replaces_an_earlier_run_and_an_empty_directory_is_used(tmp_path, capsys, monkeypatch):
    """An empty directory needs no --force; --force replaces a run's directory whole (no file of it stays)."""
    out = tmp_path / "run"
    out.mkdir()
    args = ["train", "--pop", "2", "--total-steps", "200", "--eval-every", "100", "--learning-starts", "50",
            "--hidden", "8,8", "--batch-size", "16", "--eval-episodes", "1", "--out", str(out), "--no-progress",
            "--no-tensorboard"]
    assert main(args) == 0 and (out / "summary.json").is_file()
    (out / "stale.txt").write_text("from the earlier run")
    assert main(args) == 2 and (out / "stale.txt").is_file()
    assert main([*args, "--force"]) == 0
    assert (out / "summary.json").is_file() and not (out / "stale.txt").exists()
    # a run read back from inside its own directory is not a new run: nothing to refuse
    monkeypatch.chdir(out)
    assert main(["eval", ".", "--episodes", "1"]) == 0, capsys.readouterr().err


def test_envs_lists_gymnax_ids():
    result = populax("envs")
    assert result.returncode == 0 and "Pendulum-v1" in result.stdout and "td3" in result.stdout
    assert "brax:halfcheetah" in result.stdout  # physics compiled end to end
    # in a pipe the ids are whole (rich's 80 columns cut them to "MountainCarContinuous…")
    assert "brax:inverted_double_pendulum" in result.stdout and "MountainCarContinuous-v0" in result.stdout
    assert "…" not in result.stdout
    # gymnax's FrozenLake-misc observes a Discrete index: its row says why it cannot train, as a run would refuse it
    assert re.search(r"FrozenLake-misc .*not trainable: a Discrete observation space", result.stdout)


def test_resume_of_a_finished_or_edited_run_says_what_to_do(tmp_path, capsys):
    """A finished run: nothing to resume (not a second end table). `resume --total-steps`: the budget is fixed,
    --init-from trains on. A config.yaml edited to a longer budget: the edit is named (it sizes the replay, so
    the checkpoints read as damaged before the config check ran)."""
    out = tmp_path / "run"
    assert main(["train", "--total-steps", "400", "--eval-every", "200", "--learning-starts", "100", "--batch-size",
                 "32", "--pop", "2", "--hidden", "16,16", "--no-progress", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["resume", str(out), "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "is finished (400 env steps per member); nothing to resume" in captured.err and "member" not in captured.out
    assert main(["resume", str(out), "--total-steps", "800"]) == 2
    assert "populax train --init-from RUN --total-steps N" in capsys.readouterr().err
    config = out / "config.yaml"
    config.write_text(config.read_text().replace("total_steps: 400", "total_steps: 800"))
    assert main(["resume", str(out), "--no-progress"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "config.yaml changed since chunk_000001 was written" in lines[0], lines


def test_a_second_ctrl_c_aborts_in_one_line_not_a_traceback(tmp_path):
    """The first SIGINT asks the run to stop after its chunk; a second aborts (as Python's KeyboardInterrupt): one
    line saying the checkpoints written before are intact, exit 130, no traceback."""
    import signal
    import time

    from cli_process import cli, wait_for

    out = tmp_path / "run"
    process = subprocess.Popen(cli("train", "--total-steps", "1000000", "--eval-every", "500000", "--pop", "2",
                                   "--hidden", "16,16", "--no-progress", "--out", str(out)),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: (out / "config.yaml").is_file(), process)
    time.sleep(1.0)
    process.send_signal(signal.SIGINT)
    time.sleep(1.0)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert err.strip().splitlines()[-1].startswith("populax: interrupted; checkpoints written before are intact")
    assert "Traceback" not in err


def test_tuned_config_builds_what_populax_train_builds_from_the_same_settings():
    """The Python API's TrainConfig is the defaults only; tuned_config layers the tuned recipe under the settings
    as the CLI does (PPO on CartPole: 8 envs per member, the recipe's rollout), the settings winning."""
    import populax
    from populax.cli import parse_train_args

    ours = populax.tuned_config(algo="ppo", env="CartPole-v1", pop=2, total_steps=2048, hp={"epochs": "3"})
    cli = parse_train_args(["--algo", "ppo", "--env", "CartPole-v1", "--pop", "2", "--total-steps", "2048",
                            "--hp.epochs", "3"])
    assert ours == cli and ours.pop == 2 and ours.hp["epochs"] == "3"
    assert ours.envs_per_member == 8 != populax.TrainConfig().envs_per_member
    assert populax.tuned_config(algo="td3", env="Pendulum-v1", pop=3) == populax.TrainConfig(pop=3)  # no recipe


def test_the_python_api_reads_values_as_a_recipe_would(tmp_path):
    """`TrainConfig` fields given in another form (a string for numbers or widths) are read as a YAML recipe's
    would be; a value of the wrong kind is a one-line ConfigError naming the setting, not a JAX TypeError."""
    from populax import ConfigError, TrainConfig
    from populax.runtime.setup import prepare

    config = prepare(TrainConfig(env="Pendulum-v1", hidden="32,32", total_steps="1000", eval_every=500.0, pop=2.0,
                                 obs_norm="true", seed=2**60 + 1, out="unused")).config
    assert (config.hidden, config.total_steps, config.eval_every, config.pop) == ((32, 32), 1000, 500, 2)
    assert config.obs_norm is True and config.seed == 2**60 + 1  # a large seed stays exact
    # numpy per-member values and --hp.hidden's 64x64 spelling of one network (a notebook's habits)
    import numpy as np

    from populax.runtime.setup import create_run_dir

    setup = prepare(TrainConfig(env="Pendulum-v1", hidden="32x32", pop=2, out=str(tmp_path / "run"),
                                hp={"lr-actor": np.array([1e-3, 1e-4]), "tau": np.float32(0.01),
                                    "lr-critic": list(np.logspace(-4, -3, 2))}))
    assert setup.config.hidden == (32, 32)
    np.testing.assert_allclose(np.asarray(setup.hparams.lr_actor), [1e-3, 1e-4])
    np.testing.assert_allclose(np.asarray(setup.hparams.tau), [0.01, 0.01])
    create_run_dir(setup)  # config.yaml is written with safe_dump: plain numbers only
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["hp"]["lr-critic"]
    for settings, fragment in [(dict(pop=2.5), "--pop: cannot read 2.5 as int"),
                               (dict(hidden=(64, 0)), "--hidden: cannot read (64, 0) as comma-separated positive"),
                               (dict(total_steps="many"), "--total-steps: cannot read 'many' as int")]:
        with pytest.raises(ConfigError, match=re.escape(fragment)):
            prepare(TrainConfig(env="Pendulum-v1", **settings))


def test_algos_lists_every_algorithm_and_each_ones_declared_hyperparameters_and_options(capsys, monkeypatch):
    import dataclasses

    from populax.agents import ALGORITHMS
    from populax.docstrings import field_docs
    from populax.hparams import cli_name, hparam_infos
    from populax.run.recipes import RECIPE_DIR

    assert main(["algos"]) == 0
    overview = capsys.readouterr().out
    for name in ALGORITHMS:
        assert re.search(rf"^│ {re.escape(name)} +│", overview, re.M), name
    assert "td3-pbt-HalfCheetah-v5" in overview and "coupled population method" in overview

    for name, algorithm in ALGORITHMS.items():
        assert main(["algos", name]) == 0
        page = capsys.readouterr().out
        for field, info in hparam_infos(algorithm.hparams).items():
            # name, default and the search range, as the declaration says (not a table written by hand)
            default = str(int(info.default)) if info.integer else f"{info.default:g}"
            low, high = info.search
            assert re.search(rf"│ {re.escape(cli_name(field))} +│ {re.escape(default)} +│.*│ \[{low:g}, {high:g}\] "
                             rf"{'log' if info.log else 'linear'}", page), (name, field)
        if algorithm.options is not None:
            docs = field_docs(algorithm.options)
            for option in dataclasses.fields(algorithm.options):
                assert docs.get(option.name), f"{name}: --algo-opt.{cli_name(option.name)} has no docstring"
                assert f"│ {cli_name(option.name)} " in page
        for recipe in re.findall(r"--config (\S+?)(?:,|$)", page, re.M):
            assert (RECIPE_DIR / f"{recipe}.yaml").is_file() and recipe.startswith(f"{name}-")

    # A user's algorithm describes itself the same way (examples/custom_algorithm.py's DDPG, by import path).
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "examples"))
    assert main(["algos", "py:custom_algorithm:DDPG"]) == 0
    page = capsys.readouterr().out
    assert "off-policy, continuous actions" in page and "│ lr-critic" in page and "No options" in page

    assert main(["algos", "nope"]) == 2
    assert main(["algos", "td3", "sac"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "unknown algorithm 'nope'" in err[0] and "usage: populax algos" in err[1]


@pytest.mark.parametrize("best, line", [(0.0, "best member 1 (return 0.0); "),
                                        (None, "every member failed in the last chunk (lineage.jsonl); ")])
def test_the_end_line_names_the_best_return_even_at_zero(capsys, best, line):
    """A best final return of exactly 0.0 (sparse rewards) read as falsy: the end line said every member failed."""
    from types import SimpleNamespace

    from populax.cli import print_members

    final = [-1.0, 0.0] if best is not None else [None, None]
    summary = {"algo": "dqn", "env": "CartPole-v1", "pop": 2, "best_member": 1, "best_return": best,
               "env_steps_per_s": 1000.0, "wall_time_s": 3.0,
               "members": [{"id": i, "hparams": {"lr": 1e-3}, "final_return": r} for i, r in enumerate(final)]}
    print_members(SimpleNamespace(summary=summary, run_dir="runs/x"))
    assert line + "1,000 env steps/s, 3s wall" in capsys.readouterr().out
