#!/usr/bin/env bash
# The project's GPU checks, one step at a time:  bash profiling/gpu_suite.sh STEP
#
# Each STEP finishes in under 10 minutes and writes its results under $OUT (default ./gpu_out);
# the exit status is non-zero when a check fails. Run from anywhere; paths are repo-relative.
#
# Steps:
#   kernels       Pallas kernels on the GPU: correctness against the XLA reference (ragged
#                 batches, padded widths, every energy/variant) and fused-vs-XLA timings of
#                 the residual block and InfoNCE (profiling/kernel_bench.py).
#   kernels_tune  Block tile search at the target shapes (width 256, batch 512/4096, f32 and
#                 bf16 matmuls) plus bf16 timings; prints the best config per shape.
#
# Preparing the GPU machine. It has jax with CUDA but lacks dm-haiku, ml-collections, mujoco
# and mujoco-mjx (the kernels steps need none of them; training/env steps do). On a machine
# with internet, download Python 3.12 wheels into the git-ignored .whl/ folder, one
# NAME==VERSION at a time, with the versions of this repo's CPU environment (`pip freeze`;
# at the time of writing dm-haiku==0.0.17, ml-collections==1.1.0, mujoco==4.0.0 with its
# mujoco-core==4.0.0, mujoco-mjx==3.17.0, plus whatever of their dependencies the GPU machine
# lacks, e.g. etils, glfw):
#
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
#     --platform manylinux2014_x86_64 -d .whl NAME==VERSION
#
# and on the GPU machine:
#
#   python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl \
#     && export PYTHONPATH=/tmp/site
#
# This script adds the repository root to PYTHONPATH (keeping what is there), so no
# `pip install -e .` is needed on the GPU machine.

set -euo pipefail

STEP="${1:-}"
STEPS="kernels kernels_tune"
if [[ " $STEPS " != *" $STEP "* ]] || [[ -z "$STEP" ]]; then
  echo "usage: bash profiling/gpu_suite.sh STEP   (steps: $STEPS)" >&2
  exit 2
fi
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${OUT:-./gpu_out}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
cd "$REPO"

log() { echo "[gpu_suite $STEP $(date +%H:%M:%S)] $*" >&2; }

device_info() {
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
  python3 -c "import jax; print('jax', jax.__version__, jax.devices())"
}

case "$STEP" in
  kernels)
    device_info | tee "$OUT/kernels_device.txt"
    status=0
    log "correctness: ragged batches, padded widths, bf16 matmuls (residual block)"
    timeout 100 python3 profiling/kernel_bench.py --ops=block --check-only \
      --batches=1,37,300 --widths=64,320 --out="$OUT/kernels_check_block.md" || status=1
    timeout 50 python3 profiling/kernel_bench.py --ops=block --check-only --bf16 \
      --batches=300 --widths=256 --out="$OUT/kernels_check_block_bf16.md" || status=1
    log "correctness: every energy and variant, ragged batches (InfoNCE)"
    for variant in forward backward symmetric; do
      timeout 45 python3 profiling/kernel_bench.py --ops=infonce --check-only \
        --batches=37,300 --dims=16,64 --energies=l2,l2_sq,dot --variant="$variant" \
        --out="$OUT/kernels_check_infonce_$variant.md" || status=1
    done
    log "timings: fused vs XLA (also checked at each timed shape)"
    timeout 290 python3 profiling/kernel_bench.py --out="$OUT/kernels_bench.md" || status=1
    log "done (status $status); tables in $OUT/kernels_*.md"
    exit "$status"
    ;;
  kernels_tune)
    device_info | tee "$OUT/kernels_tune_device.txt"
    timeout 580 python3 profiling/kernel_bench.py --ops=block --tune --bf16 --no-check \
      --batches=512,4096 --widths=256 --repeats=3 --out="$OUT/kernels_tune.md"
    ;;
  # A new step: add its name to STEPS above and a case here that runs under a timeout and
  # writes under "$OUT".
esac
