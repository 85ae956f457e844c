"""A user's own environment (populax.envs.custom): by import path, by Gymnasium's module:Id, or as an object.

The environments are in tests/custom_envs.py; the CLI processes find it through PYTHONPATH, as a user's own
package would be found.
"""

import json
import os
import subprocess
from pathlib import Path

import custom_envs
import numpy as np
import pytest
from cli_process import cli, wait_for

from populax.cli import main
from populax.run.checkpoint import list_checkpoints
from populax.run.config import TrainConfig
from populax.runtime import train

TESTS = Path(__file__).resolve().parent
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), str(TESTS.parent / "examples"),
                                                                    os.environ.get("PYTHONPATH")]))}
# DQN on the corridor: 3 steps to the goal (optimal return 0.98); ignoring the goal scores about 0 on average.
SMALL = dict(algo="dqn", pop=2, total_steps=3000, eval_every=1000, hidden=(32, 32), batch_size=32, learning_starts=200,
             eval_episodes=10, progress=False, tensorboard=False)
ARGS = ["--algo", "dqn", "--pop", "2", "--total-steps", "3000", "--eval-every", "500", "--hidden", "32,32",
        "--batch-size", "32", "--learning-starts", "200", "--eval-episodes", "10", "--checkpoint-every", "500",
        "--seed", "2", "--no-progress", "--no-tensorboard"]


def run_cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(cli(*args), env=ENV, capture_output=True, text=True, timeout=timeout)


def records(run_dir: Path) -> list[dict]:
    """metrics.jsonl without wall times."""
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "wall_time_s"} for line in lines]


def test_a_gymnax_api_environment_object_trains_inside_the_compiled_chunk(tmp_path):
    """The Python API takes the environment object; the run records the import path that leads back to it.
    (That a population learns it: tests/test_examples.py, which trains the example the same way.)"""
    result = train(TrainConfig(env=custom_envs.Corridor(), out=str(tmp_path / "run"), **{**SMALL, "total_steps": 1000}))
    assert result.summary["backend"] == "compiled" and result.summary["env"] == "py:custom_jax_env:Corridor"
    assert result.summary["env_steps_per_member"] == 1000 and np.isfinite(result.returns).all()
    assert "env: py:custom_jax_env:Corridor" in (tmp_path / "run" / "config.yaml").read_text()


def test_an_object_without_an_import_path_trains_and_says_resume_needs_one(tmp_path, capsys):
    class NotebookCorridor(custom_envs.Corridor):  # defined in a function: no import path reaches it
        pass

    result = train(TrainConfig(env=NotebookCorridor(), out=str(tmp_path / "run"), **{**SMALL, "total_steps": 1000}))
    note = [line for line in capsys.readouterr().err.splitlines() if "no import path" in line]
    assert len(note) == 1 and "populax resume" in note[0] and "py:module:attribute" in note[0]
    assert result.summary["env"].startswith("object:NotebookCorridor")
    resumed = run_cli("eval", str(tmp_path / "run"), "--member", "0", "--episodes", "1")
    assert resumed.returncode == 2 and len(resumed.stderr.strip().splitlines()) == 1
    assert "need an import path" in resumed.stderr and "Traceback" not in resumed.stderr


@pytest.mark.parametrize("env", ["gymnasium:custom_envs:CorridorGym-v0", "py:custom_envs:make_gym_corridor",
                                 "py:custom_envs:GymCorridor"])
def test_a_gymnasium_environment_trains_on_the_host_backend(tmp_path, env):
    """Gymnasium's module:Id form (the module registers the id), a factory and an Env class. (That a population
    learns it: tests/test_examples.py.)"""
    short = [*ARGS, "--total-steps", "500", "--eval-every", "250", "--max-episode-steps", "20"]
    result = run_cli("train", "--env", env, *short, "--out", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["backend"] == "host" and summary["env"] == env and summary["env_steps_per_member"] == 500


@pytest.mark.parametrize("env, fragment", [
    ("py:custom_envs:DictObservationCorridor", "has a Dict observation space; allowed: Box"),
    ("py:custom_envs:TupleActionCorridor", "has a Tuple action space; allowed: Discrete or a bounded float Box"),
    ("py:custom_envs:IntegerActionJaxCorridor", "has an integer Box action space (int32); allowed: Discrete or a "
                                                "bounded float Box (integer actions are choices: declare them Discrete)"),
    ("py:custom_envs:WrongShapeCorridor", "py:custom_envs:WrongShapeCorridor's reset() returned an observation of "
                                          "shape (2,); its observation_space is (3,)"),
    ("py:custom_envs:WrongShapeJaxCorridor", "py:custom_envs:WrongShapeJaxCorridor's reset returned an "
                                             "observation of shape (2,); its observation_space is (3,)"),
    ("py:custom_envs:OldGymApiCorridor", "step() must return (observation, reward, terminated, truncated, info) "
                                         "(the Gymnasium API; got tuple of 4)"),
    ("py:custom_envs:FloatFramesCorridor", "py:custom_envs:FloatFramesCorridor's reset() returned float32 "
                                           "observations; its observation_space is uint8"),
    ("py:custom_envs:SteplessCorridor", "py:custom_envs:SteplessCorridor does not implement step(action)"),
    ("py:custom_envs:SizedCorridor", "py:custom_envs:SizedCorridor cannot be built with no arguments"),
    ("py:custom_envs:SpacelessJaxCorridor", "py:custom_envs:SpacelessJaxCorridor does not implement "
                                            "observation_space(params)"),
    ("py:no_such_module:Env", "cannot import module 'no_such_module'"),
    ("py:custom_envs:NoSuchEnv", "has no attribute 'NoSuchEnv'"),
    ("py:custom_envs:CorridorParams", "not an environment"),
    ("gymnasium:custom_envs:NotRegistered-v0", "did not register it"),
])
def test_an_environment_populax_cannot_train_is_refused_in_one_line(tmp_path, capsys, env, fragment):
    """In this process (the CLI's main; tests/ is on sys.path as a console script's current directory is)."""
    out = tmp_path / "run"
    assert main(["train", "--env", env, "--out", str(out)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("populax: error: --env:") and fragment in lines[0], lines
    assert not out.exists()


def test_observations_of_another_type_than_a_float_space_are_accepted():
    """int64 observations of a float32 Box (a grid world's np.array([x, y])) are stored as float32: accepted."""
    from populax.envs.host_envs import make_host_spec

    assert make_host_spec("py:custom_envs:IntegerObservationCorridor").obs_dtype == np.float32


def test_an_environment_that_trains_but_not_as_meant_is_named_in_a_warning(tmp_path, capsys, monkeypatch):
    """A gymnax-API env left with EnvParams' one-step episodes, and a Gymnasium env whose evaluation episodes
    never end (cut at the evaluation limit, here lowered from 100,000 to 30 steps): each one line, once per run.
    A gymnax-API env with a limit of 10**9 steps that never ends trains, its evaluations cut at 100,000 with the
    same line."""
    import populax.backends.host.collector as collector

    short = ["--algo", "dqn", "--pop", "2", "--total-steps", "400", "--eval-every", "200", "--learning-starts", "100",
             "--batch-size", "32", "--hidden", "16,16", "--eval-episodes", "1", "--no-progress", "--out"]
    assert main(["train", "--env", "py:custom_envs:OneStepJaxCorridor", *short, str(tmp_path / "one")]) == 0
    warned = [line for line in capsys.readouterr().err.splitlines() if line.startswith("populax: warning: --env:")]
    assert warned == ["populax: warning: --env: py:custom_envs:OneStepJaxCorridor's episodes last one step: its "
                      "params' max_steps_in_episode is 1 (the default of gymnax's EnvParams); set it in "
                      "default_params, or pass --max-episode-steps"]
    # a limit of 10**9 steps and no end: the compiled evaluation is cut at 100,000 (it drew a key per step of the
    # limit: 16 GB), with the host's warning
    assert main(["train", "--env", "py:custom_envs:EndlessJaxCorridor", *short, str(tmp_path / "long")]) == 0
    warned = [line for line in capsys.readouterr().err.splitlines() if line.startswith("populax: warning: --env:")]
    assert warned == ["populax: warning: --env: py:custom_envs:EndlessJaxCorridor: evaluation episodes still running "
                      "after 100,000 steps were cut there; the environment has no time limit, or a longer one: set "
                      "--max-episode-steps (it truncates training episodes too) or --eval-max-steps"]
    monkeypatch.setattr(collector, "EVAL_STEP_LIMIT", 30)
    assert main(["train", "--env", "py:custom_envs:EndlessCorridor", *short, str(tmp_path / "endless")]) == 0
    warned = [line for line in capsys.readouterr().err.splitlines() if line.startswith("populax: warning: --env:")]
    assert warned == ["populax: warning: --env: py:custom_envs:EndlessCorridor: evaluation episodes still running "
                      "after 30 steps were cut there; the environment has no time limit, or a longer one: set "
                      "--max-episode-steps (it truncates training episodes too) or --eval-max-steps"]


@pytest.mark.extended  # a Ray start (17 s): in `make test-extended`, which CI runs too
def test_a_ray_workers_environment_warning_reaches_the_driver(tmp_path):
    """Ray workers' output is not shown (log_to_driver off): a worker's evaluation cut at 100,000 steps comes back
    with its returns and is said once by the driver, in the same line as on one machine; and starting Ray prints
    none of its own notes (token authentication, JAX's os.fork warning)."""
    result = run_cli("train", "--env", "py:custom_envs:EndlessJaxCorridor", "--algo", "dqn", "--pop", "2",
                     "--total-steps", "400", "--eval-every", "200", "--learning-starts", "100", "--batch-size", "32",
                     "--hidden", "16,16", "--eval-episodes", "1", "--no-progress", "--executor", "ray", "--workers",
                     "2", "--out", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr
    assert "Token authentication" not in result.stderr and "os.fork" not in result.stderr, result.stderr
    assert [line for line in result.stderr.splitlines() if "warning" in line.lower()] == [
        "populax: warning: --env: py:custom_envs:EndlessJaxCorridor: evaluation episodes still running after "
        "100,000 steps were cut there; the environment has no time limit, or a longer one: set --max-episode-steps "
        "(it truncates training episodes too) or --eval-max-steps"], result.stderr


@pytest.mark.parametrize("env", [
    # extended: the default suite's kill -9 resume of a compiled run is tests/test_checkpoint.py's
    pytest.param("py:custom_envs:Corridor", marks=pytest.mark.extended),
    "gymnasium:custom_envs:CorridorGym-v0",
])
def test_kill_9_then_resume_of_a_custom_environment(tmp_path, env):
    """The import path is all a resume needs. The compiled run resumes bitwise; the host run (Gymnasium envs are
    rebuilt, not restored) reaches the end with every evaluation once, as host resumes do."""
    host = env.startswith("gymnasium:")
    args = ["--env", env, *ARGS, *(["--overlap", "false", "--max-episode-steps", "20"] if host else [])]
    reference = tmp_path / "reference"
    assert run_cli("train", *args, "--out", str(reference)).returncode == 0
    out = tmp_path / "run"
    process = subprocess.Popen(cli("train", *args, "--out", str(out)), env=ENV, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    wait_for(lambda: list_checkpoints(out), process)
    process.kill()
    process.communicate()
    assert not (out / "summary.json").exists(), "the run finished before the kill; make it longer"
    resumed = run_cli("resume", str(out), "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    ours, theirs = records(out), records(reference)
    assert [(r["env_step"], r.get("member")) for r in ours] == [(r["env_step"], r.get("member")) for r in theirs]
    if not host:
        assert ours == theirs
        np.testing.assert_array_equal(json.loads((out / "summary.json").read_text())["best_return"],
                                      json.loads((reference / "summary.json").read_text())["best_return"])
    # read back where its module does not import (no PYTHONPATH, another directory): the run's env is named
    elsewhere = subprocess.run(cli("eval", str(reference), "--episodes", "1"), capture_output=True, text=True,
                               cwd=tmp_path, env={k: v for k, v in ENV.items() if k != "PYTHONPATH"}, timeout=300)
    assert elsewhere.returncode == 2 and elsewhere.stderr.count("\n") == 1, elsewhere.stderr
    assert f"RUN: {reference}'s env {env}: cannot import module 'custom_envs'" in elsewhere.stderr
    assert "run populax in the directory the run was trained in, or put that module on PYTHONPATH" in elsewhere.stderr


def test_an_instance_made_with_other_arguments_is_not_recorded_as_its_class(tmp_path, capsys):
    """Recording `py:custom_gymnasium_env:GymCorridor` for GymCorridor(length=5) would train (and resume) a
    default length-3 corridor without a word; such an instance stays an in-process object instead."""
    from populax.envs.custom import env_setting

    assert env_setting(custom_envs.Corridor()) == ("py:custom_jax_env:Corridor", None)
    setting, note = env_setting(custom_envs.GymCorridor(length=5))
    assert setting.startswith("object:GymCorridor") and "no import path" in note

    class NotebookGymCorridor(custom_envs.GymCorridor):  # a class no import path reaches: named by its own name
        pass

    setting, note = env_setting(NotebookGymCorridor)
    assert setting.startswith("object:NotebookGymCorridor-") and "'NotebookGymCorridor' has no import path" in note


def test_a_brax_env_by_import_path_gets_brax_adapter(tmp_path):
    """A brax Env object (not one of populax's brax:NAME ids) resets and steps through the compiled adapter:
    actions in [-1, 1] rescaled to its actuators' range, the time limit a truncation."""
    import jax

    from populax.envs import make_jax_env

    env = make_jax_env("py:custom_envs:make_brax_pendulum", max_episode_steps=2)
    assert env.obs_shape == (4,) and not env.action.discrete and env.action.size == 1
    obs, state = jax.jit(env.reset)(jax.random.key(0))
    step = jax.jit(env.step)
    first = step(jax.random.key(1), state, jax.numpy.zeros(1))
    second = step(jax.random.key(2), first.state, jax.numpy.zeros(1))
    assert obs.shape == (4,) and float(first.truncated) == 0.0 and float(second.truncated) == 1.0
    assert float(second.terminated) == 0.0
