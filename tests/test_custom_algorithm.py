"""A user's own algorithm (examples/custom_algorithm.py: DDPG, which populax does not ship): registered from the
user's code or named by import path, it trains under populax's strategies, backends, checkpoints and reports."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from cli_process import cli
from custom_algorithm import DDPG
from flax import struct

from populax import Algorithm, ConfigError, register_algorithm
from populax.agents import ALGORITHMS, get_algorithm
from populax.hparams import hparam
from populax.run.checkpoint import restore
from populax.run.resume import load_setup
from populax.runtime import init_population

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "examples"), str(ROOT / "tests"),
                                                                    os.environ.get("PYTHONPATH")]))}


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(cli(*args), env=ENV, capture_output=True, text=True, timeout=600)


def test_the_example_trains_ddpg_with_pbt_on_both_kinds_of_environment_and_exploits_copy_their_source(tmp_path):
    out = tmp_path / "example"
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "custom_algorithm.py"), "--steps", "2000",
                             "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    register_algorithm(DDPG, replace=True)  # this process reads the runs back: it needs the name too
    for env, backend in (("Pendulum-v1", "compiled"), ("gymnasium_Pendulum-v1", "host")):
        run_dir = out / env
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["algo"] == "ddpg" and summary["backend"] == backend and summary["strategy"] == "pbt"
        exploits = [json.loads(line) for line in (run_dir / "lineage.jsonl").read_text().splitlines()]
        exploits = [e for e in exploits if e["event"] == "exploit"]
        assert {e["env_step"] for e in exploits} == {1000} and len(exploits) == 2
        # The checkpoint written right after that round (chunk 1 ends at step 1000): each copy equals its source.
        setup = load_setup(run_dir)
        population = restore(run_dir / "checkpoints" / "chunk_000001",
                             jax.eval_shape(lambda setup=setup: init_population(setup))).population
        for event in exploits:
            for leaf in jax.tree.leaves(population.agent):
                np.testing.assert_array_equal(np.asarray(leaf[event["member"]]), np.asarray(leaf[event["source"]]))
        # DDPG's state keeps no `updates` counter: no count rather than a 0 that reads as "never learned".
        assert summary["updates_per_member"] is None and summary["updates_per_s"] is None
        assert "updates/s" not in (run_dir / "report" / "report.md").read_text()
    # A process that never registered "ddpg" names what the run was trained with and the way out.
    evaluated = run_cli("eval", str(out / "Pendulum-v1"))
    assert evaluated.returncode == 2 and evaluated.stderr.strip() == (
        f"populax: error: RUN: {out / 'Pendulum-v1'}'s algo 'ddpg' was a name given to populax.register_algorithm "
        "in the process that trained it; register it here too (Python API), or train with --algo py:module:NAME, "
        "which any process finds"), evaluated.stderr


def test_ddpg_named_by_import_path_learns_pendulum_and_other_processes_find_it(tmp_path):
    """`--algo py:custom_algorithm:DDPG`: the run records the path, so `populax eval` and `report` (new processes
    that never registered anything) build the same algorithm."""
    out = tmp_path / "run"
    trained = run_cli("train", "--algo", "py:custom_algorithm:DDPG", "--env", "Pendulum-v1", "--pop", "4",
                      "--total-steps", "10000", "--eval-every", "2500", "--hidden", "64,64", "--seed", "1",
                      "--no-progress", "--no-tensorboard", "--out", str(out))
    assert trained.returncode == 0, trained.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["algo"] == "py:custom_algorithm:DDPG" and summary["best_return"] > -300  # random: about -1200
    evaluated = run_cli("eval", str(out), "--member", str(summary["best_member"]), "--episodes", "2")
    assert evaluated.returncode == 0 and "mean return" in evaluated.stdout + evaluated.stderr, evaluated.stderr
    assert run_cli("report", str(out)).returncode == 0 and (out / "report" / "report.md").is_file()


@struct.dataclass
class NoDiscount:
    """Hyperparameters without the gamma the member loop reads."""

    lr: jax.Array = hparam(1e-3, "Learning rate.", valid=(0, 1), search=(1e-4, 1e-2), log=True)


def test_registration_mistakes_are_one_line_errors(tmp_path):
    with pytest.raises(ConfigError, match="'td3' is already registered$"):
        register_algorithm(DDPG._replace(name="td3"))
    with pytest.raises(ConfigError, match="only populax's own population programs"):
        register_algorithm(DDPG._replace(name="coupled-ddpg", coupled=True))
    with pytest.raises(ConfigError, match="must be a flax struct.dataclass"):
        register_algorithm(Algorithm("broken", int, DDPG.make, continuous=True, discrete=False))
    # What the member loop reads: gamma (every TD target); on-policy also gae_lambda and a rollout length.
    ppo = get_algorithm("ppo")
    with pytest.raises(ConfigError, match="hparams need gamma \\(the off-policy member loop reads them\\)$"):
        register_algorithm(DDPG._replace(name="no-gamma", hparams=NoDiscount))
    with pytest.raises(ConfigError, match="hparams need gae_lambda \\(the on-policy"):
        register_algorithm(ppo._replace(name="ppo-no-lambda", hparams=DDPG.hparams))
    with pytest.raises(ConfigError, match="options dataclass needs a rollout_len field"):
        register_algorithm(ppo._replace(name="ppo-no-rollout", options=None))
    try:
        assert register_algorithm(ppo._replace(name="my-ppo")).on_policy  # a complete on-policy algorithm registers
    finally:
        ALGORITHMS.pop("my-ppo", None)
    with pytest.raises(ConfigError, match="allowed: td3, sac, dqn, ppo, cemrl, dvd-td3"):
        get_algorithm("no-such-algo")
    out = tmp_path / "run"
    for algo, fragment in (("py:custom_envs:Corridor", "is type, not a populax.agents.Algorithm"),
                           ("py:custom_algorithm:NoSuch", "has no attribute 'NoSuch'")):
        result = run_cli("train", "--algo", algo, "--out", str(out))
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1 and fragment in lines[0], result.stderr
        assert not out.exists()


def test_ray_refuses_an_algorithm_its_workers_cannot_find():
    from populax.run.config import TrainConfig
    from populax.runtime import prepare

    register_algorithm(DDPG, replace=True)
    with pytest.raises(ConfigError, match="^--executor ray: 'ddpg' was registered in this process only"):
        prepare(TrainConfig(algo="ddpg", executor="ray", out="unused"))


def test_the_python_api_takes_the_algorithm_object(tmp_path, capsys):
    """`TrainConfig(algo=DDPG)`: an object bound in an importable module is recorded by its import path (other
    processes find it alone); one that is not (a notebook's) is registered in this process, with a one-line note."""
    from populax import TrainConfig, train
    from populax.runtime import prepare

    setup = prepare(TrainConfig(env="Pendulum-v1", algo=DDPG, out=str(tmp_path / "named")))
    assert setup.config.algo == "py:custom_algorithm:DDPG" and setup.algorithm is DDPG
    notebook = DDPG._replace(name="notebook-ddpg")
    try:
        result = train(TrainConfig(env="Pendulum-v1", algo=notebook, pop=2, total_steps=400, eval_every=200,
                                   learning_starts=100, batch_size=32, hidden=(16, 16), eval_episodes=1,
                                   out=str(tmp_path / "notebook"), progress=False, tensorboard=False))
        note = [line for line in capsys.readouterr().err.splitlines() if "has no import path" in line]
        assert len(note) == 1 and "'notebook-ddpg'" in note[0] and "py:module:NAME" in note[0]
        assert result.summary["algo"] == "notebook-ddpg" and ALGORITHMS["notebook-ddpg"] is notebook
    finally:
        ALGORITHMS.pop("notebook-ddpg", None)
    with pytest.raises(ConfigError, match=r"^--algo: expected an algorithm's name or a populax.Algorithm \(got int\)$"):
        prepare(TrainConfig(algo=3))


def test_a_module_in_the_current_directory_is_found_as_python_m_would_find_it(tmp_path, monkeypatch):
    """The `populax` console script does not put the current directory on sys.path: `--algo py:my_algo:ALGO` and
    `--env gymnasium:my_envs:Id` beside the user's file are looked up there too (last), and a module found nowhere
    is one line saying where it was looked for."""
    import gymnasium as gym

    from populax.envs.host_envs import registered_id
    from populax.importpath import load_import_path

    (tmp_path / "my_cwd_algo.py").write_text("MARKER = 42\n")
    (tmp_path / "my_cwd_envs.py").write_text(
        "import gymnasium as gym\n"
        "gym.register('CwdPendulum-v0', entry_point='gymnasium.envs.classic_control:PendulumEnv')\n")
    monkeypatch.chdir(tmp_path)
    without_it = [p for p in sys.path if p not in ("", str(tmp_path))]
    for module in ("my_cwd_algo", "my_cwd_envs"):
        monkeypatch.delitem(sys.modules, module, raising=False)
    monkeypatch.setattr(sys, "path", list(without_it))
    assert load_import_path("my_cwd_algo:MARKER", "--algo") == 42
    assert sys.path == [*without_it, str(tmp_path)]  # last: it shadows nothing installed
    monkeypatch.setattr(sys, "path", list(without_it))
    try:
        assert registered_id(gym, "my_cwd_envs:CwdPendulum-v0") == "CwdPendulum-v0"
    finally:
        gym.registry.pop("CwdPendulum-v0", None)
    with pytest.raises(ConfigError, match=r"^--algo: cannot import module 'no_such_user_module' \(No module named "
                                          r"'no_such_user_module'; looked on PYTHONPATH and in the current directory\)$"):
        load_import_path("no_such_user_module:X", "--algo")
    (tmp_path / "my_cwd_broken.py").write_text("import no_such_dependency_xyz\n")  # found, but its import fails
    with pytest.raises(ConfigError, match=r"^--algo: cannot import module 'my_cwd_broken' \(ModuleNotFoundError while "
                                          r"importing it: No module named 'no_such_dependency_xyz'\)$"):
        load_import_path("my_cwd_broken:X", "--algo")
    with pytest.raises(ConfigError, match=r"\(No module named 'json.nosuch'; looked on PYTHONPATH"):  # a submodule
        load_import_path("json.nosuch:X", "--algo")
