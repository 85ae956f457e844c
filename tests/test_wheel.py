"""A regular (non-editable) install carries everything populax reads at run time: the tuned recipes."""

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import populax
from populax.run.checkpoint import list_checkpoints, verify
from populax.run.config import TrainConfig

REPO = Path(__file__).resolve().parents[1]

PROBE = """
import json, populax
from populax.run.recipes import RECIPE_DIR, recipe_layer, resolve_config_path
path, settings = recipe_layer("sac", "Pendulum-v1")
print(json.dumps({"populax": populax.__file__, "recipe_dir": str(RECIPE_DIR), "path": str(path), "settings": settings,
                  "bare": str(resolve_config_path("td3-pbt-HalfCheetah-v5"))}))
"""


def test_wheel_install_finds_the_packaged_recipes(tmp_path):
    # Build from a copy of the sources: setuptools writes build/ and *.egg-info next to them.
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "populax", source / "populax", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    built = subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"), str(source)],
                           capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "dist").glob("populax-*.whl")
    assert wheel.name.startswith(f"populax-{populax.__version__}-")  # pyproject reads populax/_version.py
    site = tmp_path / "site"
    installed = subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], capture_output=True, text=True)
    assert installed.returncode == 0, installed.stderr

    # PYTHONPATH puts the installed copy ahead of the editable checkout; cwd holds no populax either.
    env = {**os.environ, "PYTHONPATH": str(site)}
    probe = subprocess.run([sys.executable, "-c", PROBE], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert probe.returncode == 0, probe.stderr
    found = json.loads(probe.stdout.strip().splitlines()[-1])
    assert Path(found["populax"]).is_relative_to(site)
    assert Path(found["recipe_dir"]).is_relative_to(site)
    assert Path(found["path"]) == site / "populax" / "configs" / "sac-Pendulum-v1.yaml"
    assert found["settings"]["algo"] == "sac" and found["settings"]["env"] == "Pendulum-v1"
    assert Path(found["bare"]) == site / "populax" / "configs" / "td3-pbt-HalfCheetah-v5.yaml"


def test_a_checkout_without_pip_metadata_trains_and_checkpoints(tmp_path, monkeypatch):
    """Run from a source checkout on PYTHONPATH (as benchmarks/gpu_study.sh does on a GPU image), pip has no
    metadata for populax: the checkpoint manifest records the version from populax/_version.py instead of
    failing (importlib.metadata raised PackageNotFoundError at the first checkpoint; seen on the GPU machine)."""
    real = importlib.metadata.distribution

    def no_populax(name):
        if name == "populax":
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(importlib.metadata, "distribution", no_populax)
    config = TrainConfig(pop=2, total_steps=200, eval_every=100, learning_starts=50, batch_size=8, hidden=(8,),
                         eval_episodes=1, out=str(tmp_path / "run"), progress=False, tensorboard=False)
    populax.train(config)
    manifest, _ = verify(list_checkpoints(tmp_path / "run")[-1])
    assert manifest["populax_version"] == populax.__version__
