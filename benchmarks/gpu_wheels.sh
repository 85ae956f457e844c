#!/usr/bin/env bash
# Wheels that a GPU machine without a package registry needs beside its own jax/flax/optax/torch
# (a CUDA image with jax 0.11 and Python 3.12, for example): populax's other dependencies and brax.
# Run where pip reaches a registry; carry the folder (about 35 MB) to the GPU machine; benchmarks/gpu_study.sh
# installs from it when gymnax or brax is missing there.
#   benchmarks/gpu_wheels.sh [DIR (default .whl)] [PYTHON_VERSION (default 3.12)]
set -euo pipefail
DIR=${1:-.whl}
PYVER=${2:-3.12}
mkdir -p "$DIR"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$DIR" \
    gymnax==1.0.1 tensorboardX==2.6.5 gymnasium==1.3.0 Farama-Notifications==0.0.6 \
    brax==0.14.2 mujoco-mjx==3.17.0 mujoco==4.0.0 mujoco-core==4.0.0 mujoco-studio==4.0.0 glfw==2.11.0 \
    PyOpenGL==3.1.10 websockets==17.4 Flask==3.1.3 flask-cors==6.0.5 itsdangerous==2.2.0 blinker==1.9.0 \
    jaxopt==0.8.5 ml_collections==1.1.0 trimesh==5.2.0
# Only if the GPU image's own flax/optax are older than pyproject's ranges does gpu_study.sh install these.
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d "$DIR/fallback" flax==0.12.12 optax==0.2.8
du -sh "$DIR"
