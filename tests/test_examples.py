"""examples/ as a user runs them, at toy size: each completes, leaves a run directory with summary.json, and
says what it promised."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run_example(name: str, *args: str) -> str:
    result = subprocess.run([sys.executable, str(EXAMPLES / name), *args], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "UnusedSettingWarning" not in result.stderr, result.stderr[-3000:]  # an example sets only what it uses
    return result.stdout


@pytest.mark.parametrize("name, backend", [("custom_jax_env.py", "compiled"), ("custom_gymnasium_env.py", "host")])
def test_a_custom_environment_example_trains_a_population_that_learns_it(tmp_path, name, backend):
    out = tmp_path / "run"
    printed = run_example(name, "--steps", "3000", "--pop", "4", "--out", str(out))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["backend"] == backend and summary["pop"] == 4
    assert summary["best_return"] > 0.9, printed  # reads the goal (0.98); ignoring it scores about 0
    config = (out / "config.yaml").read_text()
    assert "env: py:custom_jax_env:Corridor" in config or "env: gymnasium:custom_gymnasium_env:Corridor-v0" in config
    if name == "custom_jax_env.py":  # its PBT ran: lineage events on disk
        assert '"exploit"' in (out / "lineage.jsonl").read_text()


def test_the_python_api_example_calls_back_after_every_chunk(tmp_path):
    out = tmp_path / "run"
    printed = run_example("python_api.py", "--steps", "1000", "--out", str(out))
    lines = [line for line in printed.splitlines() if "steps per member" in line]
    assert [line.split("/")[0].strip() for line in lines] == ["200", "400", "600", "800", "1,000"]
    assert "5 chunks; best member" in printed and (out / "summary.json").is_file()
    best = json.loads((out / "summary.json").read_text())["best_member"]
    assert f"member {best} played one Gymnasium episode: return -" in printed and "in 200 steps" in printed


def test_the_onpolicy_algorithm_example_learns_cartpole_with_pbt_on_both_kinds_of_environment(tmp_path):
    """A2C, written for one member from the public API: its options dataclass has plain annotations (no
    ``from __future__ import annotations``; such a module's options crashed with KeyError "<class 'int'>"), its
    state an ``updates`` counter (reported), and PBT runs on gymnax and on Gymnasium."""
    out = tmp_path / "run"
    printed = run_example("custom_onpolicy_algorithm.py", "--steps", "12000", "--out", str(out))
    for env, backend in (("CartPole-v1", "compiled"), ("gymnasium_CartPole-v1", "host")):
        summary = json.loads((out / env / "summary.json").read_text())
        assert summary["algo"] == "a2c" and summary["backend"] == backend and summary["strategy"] == "pbt"
        assert summary["lineage_events"]["exploit"] > 0 and summary["updates_per_member"] > 350, summary
        assert summary["best_return"] >= 300, printed  # a random policy: about 20; the cap: 500
        assert "rollout-len: 8" in (out / env / "config.yaml").read_text()
