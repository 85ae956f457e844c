"""benchmarks/gpu_study.sh in its toy mode (QUICK=1) on the CPU: every stage of the GPU run, the same commands at
toy sizes, so that the few minutes of a lent GPU are never lost to a typo or a stage that cannot start."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Four minutes of brax compiles on the CPU: not in the default suite (~17 min); .ci/run runs it after the suite,
# and a session preparing a GPU run runs it by hand: pytest -m study tests/test_gpu_study.py
pytestmark = pytest.mark.study


def test_the_gpu_study_runs_end_to_end_in_toy_mode(tmp_path):
    out = tmp_path / "study"
    env = {**os.environ, "QUICK": "1", "PYTHON": sys.executable}
    result = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_study.sh"), str(out)], env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    log = (out / "study.log").read_text()
    for stage in ("gpu-tests", "learn-pbt", "learning-curves", "update-step-td3", "update-step-td3-256", "throughput-halfcheetah"):
        assert f"   {stage}: exit 0 " in log, log
    assert "skipped" in (out / "gpu-tests.log").read_text()  # no GPU here: the -m gpu tests skip with their reason

    # The learning stage: the shipped recipe through `populax train`, its curves, costs and lineage.
    learning = json.loads((out / "learning.json").read_text())["runs"]["pbt"]
    assert learning["finished"] and learning["pop"] == 2 and learning["env_steps_per_member"] == 256
    assert learning["s_per_member_per_million_steps"] > 0 and learning["exploits"] >= 1
    config = (out / "learn-pbt" / "config.yaml").read_text()
    assert "env: brax:halfcheetah" in config and "strategy: pbt" in config
    for picture in ("curves.png", "lineage.png", "update-step-td3.png"):
        assert (out / picture).stat().st_size > 10_000, picture
    assert not (out / "learn-pbt" / "checkpoints").exists()  # left out of what is carried back

    # The paper's Figure 2 (every implementation) and the end-to-end throughput on brax.
    bench = json.loads((out / "update-step-td3.json").read_text())
    impls = {row["impl"] for row in bench["results"]}
    assert {"jax-sequential", "jax-vmap", "jax-parallel", "auto"} <= impls, impls
    throughput = json.loads((out / "throughput-td3-halfcheetah.json").read_text())
    assert throughput["settings"]["env"] == "brax:halfcheetah" and throughput["rows"][0]["env_steps_per_s"] > 0
