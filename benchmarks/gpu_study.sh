#!/usr/bin/env bash
# Issue 14's study on one accelerator, in one command (planned for under 10 minutes on one H100):
#   1. the update step per member vs N for every implementation (the paper's Figure 2):
#      TD3 and SAC (256,256) batch 256, DQN Nature CNN batch 32; jax-sequential, jax-vmap, jax-sharded,
#      jax-parallel (N <= 8), torch-sequential, torch-vectorized (on CUDA when torch sees the GPU), auto;
#      with the roofline's peak: the dense float32 GEMM at default precision (TF32 on NVIDIA since Ampere)
#      and at highest precision (true float32), both in the JSON's machine section;
#   2. end-to-end training throughput (env steps/s summed over members, compile excluded) of TD3
#      (256,256) on gymnax Pendulum-v1 and on brax:halfcheetah at pop 1, 8, 64, 256: the ratio
#      time(pop N)/time(pop 1) per chunk is the table's "time / pop 1" column.
# Every result (JSON, CSV, PNG, logs) goes into OUTDIR.
#
#   benchmarks/gpu_study.sh OUTDIR
#
# Run from the repository root. populax runs from the checkout (PYTHONPATH), on the interpreter
# $PYTHON (default python3) with its own jax. Where gymnax or brax is missing and a folder of wheels
# made by benchmarks/gpu_wheels.sh is at $WHEELS (default .whl), they are installed from it into
# /tmp/populax-site first (no registry needed). Each stage has its own time limit (seconds, STAGE_LIMIT_*)
# so that one slow compile cannot take the whole budget; a stage cut short keeps what it wrote.
# QUICK=1 runs every stage at toy sizes (a smoke test of the script on a CPU: its numbers mean nothing).
set -uo pipefail
OUTDIR=${1:?usage: benchmarks/gpu_study.sh OUTDIR}
PYTHON=${PYTHON:-python3}
WHEELS=${WHEELS:-.whl}
OUTDIR=$(mkdir -p "$OUTDIR" && cd "$OUTDIR" && pwd)
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
# jax-parallel's worker processes each start a JAX runtime on the same GPU: none may take 75% of it up front.
export XLA_PYTHON_CLIENT_PREALLOCATE=false

if ! "$PYTHON" -c "import gymnax, brax, tensorboardX" >/dev/null 2>&1; then
    if [ -d "$WHEELS" ]; then
        "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/populax-site "$WHEELS"/*.whl
        export PYTHONPATH="$PYTHONPATH:/tmp/populax-site"
    else
        echo "gymnax/brax missing and no wheels at $WHEELS: run benchmarks/gpu_wheels.sh where a registry is reachable" >&2
        exit 2
    fi
fi

stage() {  # stage NAME LIMIT_S COMMAND...: run with a time limit, log into OUTDIR, report how long it took
    local name=$1 limit=$2; shift 2
    local start=$SECONDS
    echo "== $name (limit ${limit}s): $*" | tee -a "$OUTDIR/study.log"
    timeout "$limit" "$@" > "$OUTDIR/$name.log" 2>&1
    local rc=$?
    echo "   $name: exit $rc after $((SECONDS - start))s" | tee -a "$OUTDIR/study.log"
    tail -n 12 "$OUTDIR/$name.log"
}

{ nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>/dev/null || true
  "$PYTHON" -c "import jax, sys; print('python', sys.version.split()[0], 'jax', jax.__version__, jax.devices())"
  "$PYTHON" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" 2>/dev/null || true
} > "$OUTDIR/machine.txt" 2>&1
cat "$OUTDIR/machine.txt"

BENCH=("$PYTHON" -m populax.cli bench update-step --impl all --calls 20 --rounds 4 --matmul-size 8192)
POPS_TD3=1,4,16,64,256 POPS_SAC=1,16,64,256 POPS_DQN=1,8,32 POPS_TRAIN=1,8,64,256
THROUGHPUT=("$PYTHON" benchmarks/throughput.py --algo td3 --hidden 256,256 --chunk-steps 1000 --rounds 3)
if [ "${QUICK:-0}" = 1 ]; then
    BENCH=("$PYTHON" -m populax.cli bench update-step --impl all --calls 2 --rounds 1 --matmul-size 256 --hidden 8,8 --batch 4)
    POPS_TD3=1,2 POPS_SAC=1,2 POPS_DQN=1 POPS_TRAIN=1,2
    THROUGHPUT=("$PYTHON" benchmarks/throughput.py --algo td3 --hidden 8,8 --chunk-steps 20 --rounds 1)
fi
stage update-step-td3 "${STAGE_LIMIT_TD3:-150}" "${BENCH[@]}" --algo td3 --pop $POPS_TD3 --out "$OUTDIR/update-step-td3.json"
stage update-step-sac "${STAGE_LIMIT_SAC:-90}" "${BENCH[@]}" --algo sac --pop $POPS_SAC --out "$OUTDIR/update-step-sac.json"
stage update-step-dqn "${STAGE_LIMIT_DQN:-60}" "${BENCH[@]}" --algo dqn --pop $POPS_DQN --out "$OUTDIR/update-step-dqn.json"
THROUGHPUT+=(--pops "$POPS_TRAIN")
stage throughput-pendulum "${STAGE_LIMIT_PENDULUM:-90}" "${THROUGHPUT[@]}" --env Pendulum-v1 --out "$OUTDIR/throughput-td3-pendulum.json"
stage throughput-halfcheetah "${STAGE_LIMIT_HALFCHEETAH:-180}" "${THROUGHPUT[@]}" --env brax:halfcheetah --out "$OUTDIR/throughput-td3-halfcheetah.json"
ls -la "$OUTDIR"
