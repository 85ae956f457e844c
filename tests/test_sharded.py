"""The sharded executor on 4 forced CPU devices (each check in a child process: XLA fixes its device count once)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run_on_4_devices(*args: str) -> subprocess.CompletedProcess:
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "PYTHONPATH": path}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, cwd=REPO, timeout=600)


@pytest.mark.parametrize("check", ["equality", pytest.param("pbt", marks=pytest.mark.extended)])
def test_sharded_on_4_devices(check, tmp_path):
    """equality: a sharded TD3 population of 8 equals vmap after 250 updates; pbt: a sharded PBT run's copies
    (also between devices) hold their sources' weights and hyperparameters (see tests/sharded_checks.py)."""
    result = run_on_4_devices(str(REPO / "tests" / "sharded_checks.py"), check, str(tmp_path))
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-4000:]


def test_sharded_population_not_dividing_the_devices_is_refused_in_one_line(tmp_path):
    """--pop 6 on 4 devices: refused (not padded), one line naming the setting, nothing written."""
    out = tmp_path / "run"
    result = run_on_4_devices("-m", "populax.cli", "train", "--executor", "sharded", "--pop", "6", "--out", str(out),
                              "--no-progress")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].endswith("--executor sharded: --pop 6 must be a multiple of the 4 local devices")
    assert not out.exists()
