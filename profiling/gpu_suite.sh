#!/usr/bin/env bash
# The project's GPU checks, one step at a time:  bash profiling/gpu_suite.sh STEP
#
# Each STEP finishes in under 10 minutes and writes its results under $OUT (default ./gpu_out);
# the exit status is non-zero when a check fails. Run from anywhere; paths are repo-relative.
# tests/profiling/test_gpu_suite.py checks on CPU that every python command below parses and
# validates (flags, task names, config overrides) and that each step's timeouts fit one call.
#
# Steps:
#   first         The first thing to run on a newly lent GPU, <= 8 minutes in all: kernel
#                 correctness and fused-vs-XLA at the default shapes, the XLA-path depth sweep
#                 4..256 (loop vs unrolled), env throughput of ant and arm_push_easy at 2048
#                 envs. Each part has its own timeout; a failing part does not stop the rest.
#   kernels       Pallas kernels on the GPU, first: per-kernel device times from the profiler
#                 with achieved TFLOP/s, fused next to XLA (at width 1024 the tiled kernels with
#                 the activation materialised and in the GEMM prologues), and each kernel's
#                 tensor-core instruction (PTX, SASS where ptxas/cuobjdump exist); then
#                 correctness against the XLA reference (ragged batches, padded widths, every
#                 energy/variant) and fused-vs-XLA wall-clock timings (profiling/kernel_bench.py).
#   kernels_tune  Block tile search at the target shapes (width 256, batch 512/4096, f32 and
#                 bf16 matmuls; then the tiled kernels at width 1024, batch 4096, with the
#                 activation materialised or recomputed in the prologues); prints the best
#                 config per shape.
#   --- step time vs depth (profiling/step_time.py; RESULTS.md "Step time vs depth") ---
#   depth         Humanoid CRL gradient step, depths 4..1024, impls xla and pallas: compile
#                 time, step time, peak memory, FLOPs and fraction of peak ($OUT/depth/); then
#                 the XLA path as a loop vs every block unrolled (impl xla_unrolled) at depths
#                 4, 16, 64: achieved FLOP/s vs depth ($OUT/depth_loop/).
#   depth_train   Depths 4, 16, 64 with the env unroll and the whole training step measured
#                 at the configured shape (512 envs x 62 steps, 800 SGD steps); needs the
#                 humanoid env registered (else only the gradient step) ($OUT/depth_train/).
#   width         Width and batch sweep: depth 4/16 x width 256/512/1024 (same parameter
#                 counts at different shapes) and batch 128..1024 at depth 64 ($OUT/width*/).
#   train         A short humanoid training run (depth 16, a few epochs) with the profiling
#                 hooks on: metrics.csv with time/collect_s, time/update_s, time/eval_s, and
#                 a trace of 2 training steps ($OUT/train_humanoid/).
#   --- learning (launch/sweep.py; RESULTS.md "Learning") ---
#   learn         Humanoid CRL at depth 4 and depth 16, one seed each, through the resumable
#                 sweep tool: one call of at most ~9 minutes (the two runs share it); rerun
#                 the step on the same machine to continue until each run has spent its
#                 budget (30 min each, ~7 calls). Settings: the paper's humanoid config (512
#                 envs x 62-step unrolls, 800 SGD steps of batch 512 per unroll, width 256,
#                 Adam 3e-4, replay 10k steps per env with exact-resume checkpoints) with
#                 evaluations every 8 training steps (~254k env steps, 6,400 gradient steps)
#                 instead of the published 31, so a call yields several points of the curve.
#                 The run directories (checkpoints hold the ~5.5 GB replay) stay in
#                 $LEARN_DIR (default /tmp/deepcrl_learn_humanoid); sweep.csv, sweep.json, the
#                 figures and a tarball of each run's metrics/logs go to $OUT/learn/.
#   --- environment throughput (owner: profiling/env_throughput.py) ---
#   envs          Env-steps/s of every paper task at 2048 envs (training wrappers, random
#                 actions; RESULTS.md "Environment throughput") -> $OUT/envs_2048.md,
#                 rewritten after each task.
#
# Preparing the GPU machine. It has jax with CUDA but lacks dm-haiku, ml-collections, mujoco
# and mujoco-mjx (the kernels steps need none of them; training/env steps do). On a machine
# with internet, `bash profiling/gpu_wheels.sh` downloads the Python 3.12 wheels into the
# git-ignored .whl/ folder at this environment's versions: on 2026-12-06 ten wheels, 21 MB
# (dm-haiku 0.0.17, jmp, ml_collections 1.1.0, mujoco / mujoco-core 4.0.1, mujoco-mjx 3.17.0,
# glfw, PyOpenGL, trimesh, tensorboardX 2.6.5 for training runs' TensorBoard events; absl-py,
# etils, PyYAML, scipy, tabulate and protobuf are in the image). That set was checked in a
# Python 3.12 venv holding only the image's packages (with CPU jax): env throughput of ant and
# arm_push_easy, a pointmass training run with a trace, kernel_bench --tiny and step_time ran;
# without tensorboardX training stopped at its first TensorBoard write;
#
# and on the GPU machine:
#
#   python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl \
#     && export PYTHONPATH=/tmp/site
#
# This script puts the repository on PYTHONPATH (keeping what is there), with the kernels
# folder importable under its installed name `deepcrl_kernels`, so no `pip install -e .` is
# needed on the GPU machine.

set -euo pipefail

STEP="${1:-}"
STEPS="first kernels kernels_tune depth depth_train width train learn envs"
if [[ " $STEPS " != *" $STEP "* ]] || [[ -z "$STEP" ]]; then
  echo "usage: bash profiling/gpu_suite.sh STEP   (steps: $STEPS)" >&2
  exit 2
fi
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${OUT:-./gpu_out}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
# `kernels/` installs as `deepcrl_kernels` (pyproject.toml); without an install, a symlink
# under a scratch folder gives it that name.
SHIM="$(mktemp -d)"
ln -s "$REPO/kernels" "$SHIM/deepcrl_kernels"
export PYTHONPATH="$REPO:$SHIM${PYTHONPATH:+:$PYTHONPATH}"
cd "$REPO"

log() { echo "[gpu_suite $STEP $(date +%H:%M:%S)] $*" >&2; }

device_info() {
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
  python3 -c "import jax; print('jax', jax.__version__, jax.devices())"
}

case "$STEP" in
  first)
    # The highest-value checks for a first lent GPU, in one command under 8 minutes.
    device_info | tee "$OUT/first_device.txt"
    status=0
    log "kernels: correctness at the default shapes and fused vs XLA"
    timeout 80 python3 profiling/kernel_bench.py --ops=block --check-only \
      --batches=37,512 --widths=256,1024 --out="$OUT/first_kernels_check_block.md" || status=1
    timeout 40 python3 profiling/kernel_bench.py --ops=infonce --check-only \
      --batches=300,512 --dims=64 --energies=l2 --variant=forward \
      --out="$OUT/first_kernels_check_infonce.md" || status=1
    timeout 90 python3 profiling/kernel_bench.py --batches=512,4096 --widths=256 \
      --out="$OUT/first_kernels_bench.md" || status=1
    log "XLA-path gradient step vs depth 4..256 (humanoid sizes)"
    timeout 160 python3 profiling/step_time.py --config=configs/humanoid.py \
      --depths=4,16,64,256 --impls=xla --nounroll --budget_s=140 --row_timeout=60 \
      --out="$OUT/first_depth" || status=1
    log "env throughput at 2048 envs: ant, arm_push_easy"
    timeout 110 python3 profiling/env_throughput.py --num_envs=2048 --scan_length=50 \
      --repeats=2 --tasks=ant,arm_push_easy --out="$OUT/first_envs_2048.md" || status=1
    log "done (status $status); outputs in $OUT/first_*"
    exit "$status"
    ;;
  kernels)
    device_info | tee "$OUT/kernels_device.txt"
    status=0
    log "profiler device times per kernel, achieved TFLOP/s, fused vs XLA (PTX dumped)"
    XLA_FLAGS="--xla_dump_to=$OUT/kernels_dump" timeout 150 python3 profiling/kernel_bench.py \
      --profile="$OUT/kernels_profile" --batches=512,4096 --widths=256,1024 --dims=64 \
      --repeats=5 | tee "$OUT/kernels_profile.md" || status=1
    log "tensor-core instruction of every kernel XLA compiled (SASS where ptxas/cuobjdump exist)"
    timeout 30 python3 profiling/kernel_bench.py --ptx-dump="$OUT/kernels_dump" \
      > "$OUT/kernels_sass.md" || status=1
    log "correctness: ragged batches, padded widths, bf16 matmuls (residual block)"
    timeout 90 python3 profiling/kernel_bench.py --ops=block --check-only \
      --batches=1,37,300 --widths=64,320 --out="$OUT/kernels_check_block.md" || status=1
    timeout 45 python3 profiling/kernel_bench.py --ops=block --check-only --bf16 \
      --batches=300 --widths=256 --out="$OUT/kernels_check_block_bf16.md" || status=1
    log "correctness: every energy and variant, ragged batches (InfoNCE)"
    for variant in forward backward symmetric; do
      timeout 30 python3 profiling/kernel_bench.py --ops=infonce --check-only \
        --batches=37,300 --dims=16,64 --energies=l2,l2_sq,dot --variant="$variant" \
        --out="$OUT/kernels_check_infonce_$variant.md" || status=1
    done
    log "timings: fused vs XLA, wall-clock around a scan (also checked at each timed shape)"
    timeout 170 python3 profiling/kernel_bench.py --batches=512,4096 \
      --out="$OUT/kernels_bench.md" || status=1
    log "done (status $status); tables in $OUT/kernels_*.md"
    exit "$status"
    ;;
  kernels_tune)
    device_info | tee "$OUT/kernels_tune_device.txt"
    # Configs are tried in the roofline model's order, each shape within its budget, so the
    # step ends by itself with the best config found so far (per-config times in the log).
    timeout 300 python3 profiling/kernel_bench.py --ops=block --tune --bf16 --no-check \
      --tune_budget_s=55 --batches=512,4096 --widths=256 --repeats=3 \
      --out="$OUT/kernels_tune.md"
    # The tiled kernels: 64 configs (tiles, K-chunk, dW split, activation_prologue on/off).
    timeout 280 python3 profiling/kernel_bench.py --ops=block --tune --no-check \
      --tune_budget_s=220 --batches=4096 --widths=1024 --repeats=3 \
      --out="$OUT/kernels_tune_w1024.md"
    ;;
  # --- step time vs depth (owner: profiling/step_time.py) ----------------------------------
  depth)
    device_info | tee "$OUT/depth_device.txt"
    status=0
    log "humanoid gradient step vs depth, xla and pallas (rows written as they finish)"
    timeout 400 python3 profiling/step_time.py --config=configs/humanoid.py \
      --depths=4,8,16,32,64,128,256,512,1024 --impls=xla,pallas --nounroll \
      --budget_s=370 --row_timeout=120 --out="$OUT/depth" || status=1
    log "XLA path, loop vs every block unrolled: GFLOP/s (tflops column) at depths 4, 16, 64"
    timeout 160 python3 profiling/step_time.py --config=configs/humanoid.py \
      --depths=4,16,64 --impls=xla,xla_unrolled --nounroll --budget_s=150 --row_timeout=90 \
      --out="$OUT/depth_loop" || status=1
    exit "$status"
    ;;
  depth_train)
    device_info | tee "$OUT/depth_train_device.txt"
    log "unroll + whole training step at the configured shape, depths 4,16,64"
    timeout 580 python3 profiling/step_time.py --config=configs/humanoid.py \
      --depths=4,16,64 --impls=pallas,xla --train_step=measure --unroll_repeats=5 \
      --train_repeats=2 --budget_s=540 --row_timeout=270 --out="$OUT/depth_train"
    ;;
  width)
    device_info | tee "$OUT/width_device.txt"
    status=0
    log "width sweep at depth 4 and 16 (batch 512)"
    timeout 330 python3 profiling/step_time.py --config=configs/humanoid.py --depths=4,16 \
      --widths=256,512,1024 --batches=512 --impls=xla,pallas --nounroll --budget_s=300 \
      --row_timeout=120 --out="$OUT/width" || status=1
    log "batch sweep at depth 64 (width 256)"
    timeout 250 python3 profiling/step_time.py --config=configs/humanoid.py --depths=64 \
      --widths=256 --batches=128,256,512,1024 --impls=xla,pallas --nounroll --budget_s=220 \
      --row_timeout=100 --out="$OUT/width_batch" || status=1
    exit "$status"
    ;;
  train)
    device_info | tee "$OUT/train_device.txt"
    log "short humanoid run, depth 16, profiling hooks on"
    timeout 570 python3 launch/train.py \
      --config=configs/humanoid.py:depth=16,epochs=2,train.train_steps_per_epoch=2,train.max_seconds=400,profile.timing_split_every=1,profile.trace_steps=2,checkpoint.every=0 \
      --workdir="$OUT/train_humanoid"
    log "metrics: $OUT/train_humanoid/metrics.csv; trace: $OUT/train_humanoid/profile"
    ;;
  # --- learning (owner: launch/sweep.py) -----------------------------------------------------
  learn)
    device_info | tee "$OUT/learn_device.txt"
    LEARN_DIR="${LEARN_DIR:-/tmp/deepcrl_learn_humanoid}"
    # later calls resume without recompiling (the children inherit the variable)
    export JAX_COMPILATION_CACHE_DIR="${JAX_COMPILATION_CACHE_DIR:-/tmp/deepcrl_jax_cache}"
    log "humanoid depth 4 and 16: this call <= 500 s of training, 1800 s per run in all"
    status=0
    # --time_limit_s: children stop at their last checkpoint by 500 s (+30 s grace); exit 4 =
    # runs remain, rerun this step to continue.
    timeout -k 30 570 python3 launch/sweep.py \
      --config=configs/humanoid.py:train.train_steps_per_epoch=8,checkpoint.keep=1 \
      --grid="depth=4,16" --seeds=1 --budget_s=1800 --time_limit_s=500 \
      --workdir="$LEARN_DIR" || status=$?
    mkdir -p "$OUT/learn"
    cp "$LEARN_DIR"/sweep.csv "$LEARN_DIR"/sweep.json "$OUT/learn/" 2>/dev/null || true
    cp -r "$LEARN_DIR/figures" "$OUT/learn/" 2>/dev/null || true
    (cd "$LEARN_DIR" && tar czf "$OUT/learn/runs_logs.tar.gz" \
      $(find runs \( -name metrics.csv -o -name train.log -o -name config.json \
        -o -name summary.json -o -name residual_norms.csv \) 2>/dev/null)) || true
    if [[ "$status" == 4 ]]; then
      log "runs remain within their budget: rerun 'bash profiling/gpu_suite.sh learn'"
      status=0
    fi
    log "done (status $status); $OUT/learn/: sweep.csv, figures/, runs_logs.tar.gz"
    exit "$status"
    ;;
  # --- environment throughput (owner: profiling/env_throughput.py) ------------------------
  envs)
    device_info | tee "$OUT/envs_device.txt"
    log "env-steps/s of the paper tasks at 2048 envs"
    timeout 580 python3 profiling/env_throughput.py --num_envs=2048 --scan_length=50 \
      --repeats=3 --out="$OUT/envs_2048.md"
    ;;
  # A new step: add its name to STEPS above and a case here that runs under a timeout and
  # writes under "$OUT".
esac
