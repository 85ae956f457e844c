#!/usr/bin/env bash
# Issue 24's study on one GPU, in one command of at most ~9.5 minutes (every stage has its own time limit; they add up to 550 s):
#   gpu-tests            tests/test_gpu.py (pytest -m gpu): donation on the device, fit_chunk on the real memory
#                        analysis, chunking a population bigger than one vmap, auto with one device, brax on CUDA;
#   learn-pbt            configs/td3-pbt-brax_halfcheetah.yaml as a user runs it (`populax train --config ...`):
#                        32 TD3 members, the paper's PBT, 1M env steps per member on brax halfcheetah; then its
#                        curves (median, best), lineage plot, wall time and s per member per 1M env steps
#                        (benchmarks/learning_curves.py);
#   update-step-td3[-256]  the paper's Figure 2: TD3 (256,256) batch 256 update step per member vs N (1, 8, 64;
#                        then 256) for every implementation (torch on CUDA included), with the dense float32 GEMM
#                        peak at default (TF32) and highest precision;
#   throughput-halfcheetah  end-to-end TD3 training throughput on brax halfcheetah at pop 1, 64, 256 (env steps/s
#                        summed over members, compile excluded; benchmarks/throughput.py);
#   learn-independent    (only when named in STAGES) the same population as learn-pbt with --strategy independent.
# Every result (JSON, CSV, PNG, logs, the run directories without their checkpoints) goes into OUTDIR.
#
#   benchmarks/gpu_study.sh OUTDIR
#   STAGES="update-step-td3 throughput-halfcheetah" benchmarks/gpu_study.sh OUTDIR   # rerun some stages
#   QUICK=1 benchmarks/gpu_study.sh OUTDIR    # every stage at toy size: a smoke test on a CPU (tests/test_gpu_study.py)
#
# Run from the repository root. populax runs from the checkout (PYTHONPATH), on the interpreter $PYTHON (default
# python3) with its own jax. Where gymnax or brax is missing and a folder of wheels made by
# benchmarks/gpu_wheels.sh is at $WHEELS (default .whl), they are installed from it into /tmp/populax-site first
# (no registry needed). STAGE_LIMIT_<NAME> (seconds; NAME upper-case with _ for -) overrides a stage's limit; a
# stage cut short keeps what it wrote, and the study goes on with the next stage.
set -uo pipefail
OUTDIR=${1:?usage: benchmarks/gpu_study.sh OUTDIR}
PYTHON=${PYTHON:-python3}
WHEELS=${WHEELS:-.whl}
STAGES=${STAGES:-gpu-tests learn-pbt update-step-td3 throughput-halfcheetah}
QUICK=${QUICK:-0}
OUTDIR=$(mkdir -p "$OUTDIR" && cd "$OUTDIR" && pwd)
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
# jax-parallel's worker processes each start a JAX runtime on the same GPU: none may take 75% of it up front.
export XLA_PYTHON_CLIENT_PREALLOCATE=false
# brax imports MuJoCo, whose renderer is never used here: with MUJOCO_GL=egl and no libEGL (a bare CUDA image),
# importing mujoco fails (seen on the GPU machine); disable skips its GL imports.
export MUJOCO_GL=${MUJOCO_GL:-disable}

if ! "$PYTHON" -c "import gymnax, brax, tensorboardX" >/dev/null 2>&1; then
    if [ -d "$WHEELS" ]; then
        "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/populax-site "$WHEELS"/*.whl
        export PYTHONPATH="$PYTHONPATH:/tmp/populax-site"
    else
        echo "gymnax/brax missing and no wheels at $WHEELS: run benchmarks/gpu_wheels.sh where a registry is reachable" >&2
        exit 2
    fi
fi

# The image's own flax/optax serve when they are new enough (pyproject's ranges); else the ones in $WHEELS/fallback.
if ! "$PYTHON" -c "
import flax, optax
from packaging.version import Version as V
assert V(flax.__version__) >= V('0.12.8') and V(optax.__version__) >= V('0.2.8')" >/dev/null 2>&1; then
    echo "flax/optax older than populax needs: installing $WHEELS/fallback" >&2
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/populax-fallback "$WHEELS"/fallback/*.whl
    export PYTHONPATH="/tmp/populax-fallback:$PYTHONPATH"
fi

limit() {  # limit NAME DEFAULT: the stage's time limit, STAGE_LIMIT_<NAME> if set
    local var="STAGE_LIMIT_$(echo "$1" | tr 'a-z-' 'A-Z_')"
    echo "${!var:-$2}"
}

stage() {  # stage NAME DEFAULT_LIMIT_S COMMAND...: run with a time limit, log into OUTDIR, report how long it took
    local name=$1 seconds; seconds=$(limit "$1" "$2"); shift 2
    local start=$SECONDS
    echo "== $name (limit ${seconds}s): $*" | tee -a "$OUTDIR/study.log"
    timeout --kill-after=10 "$seconds" "$@" > "$OUTDIR/$name.log" 2>&1
    local rc=$?
    echo "   $name: exit $rc after $((SECONDS - start))s$([ $rc = 124 ] && echo ' (cut at its limit)')" | tee -a "$OUTDIR/study.log"
    tail -n 14 "$OUTDIR/$name.log"
    return $rc
}

wanted() { [[ " $STAGES " == *" $1 "* ]]; }

{ nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,clocks.sm,temperature.gpu,power.draw --format=csv 2>/dev/null || true
  "$PYTHON" -c "import jax, sys; print('python', sys.version.split()[0], 'jax', jax.__version__, jax.devices())"
  "$PYTHON" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" 2>/dev/null || true
  "$PYTHON" -c "from importlib.metadata import version as v; print(*(f'{p} {v(p)}' for p in ('brax', 'gymnax', 'flax', 'optax', 'mujoco', 'mujoco-mjx', 'numpy')))"
  echo "study started $(date -u +%FT%TZ), stages: $STAGES, QUICK=$QUICK"
} > "$OUTDIR/machine.txt" 2>&1
cat "$OUTDIR/machine.txt"

# The sizes: the issue's, or toy ones (QUICK=1: the same commands and code paths, numbers that mean nothing).
LEARN=(-m populax.cli train --config configs/td3-pbt-brax_halfcheetah.yaml --no-progress --force)
# Figure 2 in two commands: every implementation at N = 1, 8, 64; at N = 256 all but torch-sequential (a Python loop
# of 256 torch updates, ~9 ms each on the GPU machine: 2.3 s a call) and jax-parallel (one process per member, N <= 8).
BENCH=(-m populax.cli bench update-step --impl all --calls 10 --rounds 2 --matmul-size 8192 --pop 1,8,64)
BENCH_LARGE=(-m populax.cli bench update-step --impl jax-sequential,jax-vmap,jax-sharded,torch-vectorized,auto
             --calls 10 --rounds 2 --matmul-size 8192 --pop 256)
THROUGHPUT=(benchmarks/throughput.py --algo td3 --hidden 256,256 --chunk-steps 1000 --rounds 2 --pops 1,64,256)
if [ "$QUICK" = 1 ]; then
    LEARN+=(--pop 2 --envs-per-member 8 --total-steps 256 --eval-every 128 --ready-interval 128 --learning-starts 64
            --batch-size 16 --hidden 16,16 --eval-episodes 1 --eval-max-steps 20 --buffer-size 512)
    BENCH=(-m populax.cli bench update-step --impl all --calls 2 --rounds 1 --matmul-size 256 --hidden 8,8 --batch 4 --pop 2)
    BENCH_LARGE=(-m populax.cli bench update-step --impl jax-vmap,auto --calls 2 --rounds 1 --matmul-size 256 --hidden 8,8
                 --batch 4 --pop 3)
    THROUGHPUT=(benchmarks/throughput.py --algo td3 --hidden 8,8 --chunk-steps 10 --rounds 1 --pops 2)
fi

if wanted gpu-tests; then
    stage gpu-tests 50 "$PYTHON" -m pytest -q -m gpu -p no:cacheprovider -rs tests/test_gpu.py
fi
for strategy in pbt independent; do
    if wanted "learn-$strategy"; then
        stage "learn-$strategy" 240 "$PYTHON" "${LEARN[@]}" --strategy "$strategy" --out "$OUTDIR/learn-$strategy"
    fi
done
if wanted learn-pbt || wanted learn-independent; then
    runs=(); for strategy in pbt independent; do
        [ -d "$OUTDIR/learn-$strategy" ] && runs+=("$strategy=$OUTDIR/learn-$strategy")
    done
    stage learning-curves 60 "$PYTHON" benchmarks/learning_curves.py "${runs[@]}" --out "$OUTDIR" \
        --title "TD3 on brax halfcheetah, 32 members, 1M steps each"
    [ -f "$OUTDIR/learn-pbt/report/lineage.png" ] && cp "$OUTDIR/learn-pbt/report/lineage.png" "$OUTDIR/lineage.png"
fi
if wanted update-step-td3; then
    stage update-step-td3 100 "$PYTHON" "${BENCH[@]}" --algo td3 --out "$OUTDIR/update-step-td3.json"
    stage update-step-td3-256 50 "$PYTHON" "${BENCH_LARGE[@]}" --algo td3 --out "$OUTDIR/update-step-td3-256.json"
fi
if wanted throughput-halfcheetah; then
    stage throughput-halfcheetah 110 "$PYTHON" "${THROUGHPUT[@]}" --env brax:halfcheetah --out "$OUTDIR/throughput-td3-halfcheetah.json"
fi
# Checkpoints are large (the run's parameters) and not results: leave them out of what is carried back.
rm -rf "$OUTDIR"/learn-*/checkpoints
echo "study ended $(date -u +%FT%TZ)" | tee -a "$OUTDIR/study.log"
ls -la "$OUTDIR"
