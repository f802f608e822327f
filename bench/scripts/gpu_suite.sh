#!/usr/bin/env bash
# The one command for a GPU machine (H100/H200, no network): <= 8 minutes, steps in order of value, each
# result written to the output folder the moment it exists (a time-out still returns everything finished).
#
#   bash bench/scripts/gpu_suite.sh              # on the GPU machine: writes into $OUT (else bench/results/)
#   bash bench/scripts/gpu_suite.sh --dry-run    # the same script on a CPU at tiny sizes (CI runs it:
#                                                # tests/test_gpu_suite.py); GPU-only steps say "skipped"
#
# Steps (a failing step is recorded and the next one runs; the exit code is 0 only if every step passed):
#   1. wheels carried in .whl/ (bench/scripts/prepare_gpu_wheels.sh) -> /tmp/site (PYTHONPATH)
#   2. build lrm_fast._C with CUDA (pip install -e ., or build_ext --inplace)      [GPU only]
#   3. import + kernel-registration check (python -m bench.scripts.device_table --check)
#   4. the Triton field's illegal-address matrix, compute-sanitizer first (bench/scripts/gpu_field_sanitize.py)
#      [GPU only]: before anything else can poison the CUDA context
#   5. pytest -m gpu, a time limit per test (pytest-timeout)
#   6. the device table (bench/scripts/device_table.py): image -> triplane (base, triposr), 512^2 view,
#      256^3 mesh, photo -> GLB, training step (demo recipe, batch 8) x fast / reference /
#      torch.compile(reference) / OpenLRM's and TripoSR's own code (where .originals/ or LRM_FAST_OPENLRM /
#      LRM_FAST_TRIPOSR name a checkout) x bf16 / fp32: time, peak memory, ops and host syncs
#   7. kernel measurements (bench/scripts/measure_gpu.py: compositing 512x512x128 GB/s against the measured
#      copy bandwidth, Triton vs CUDA vs reference; registers, spills, launch configurations)
#   8. roofline (analytic work per stage)
#   9. kernel benchmarks (ray marching, compositing, render, field), if time is left      [GPU only]
# Outputs in $OUT (else bench/results/), stem <date>-<gpu>: -suite.log, -suite.md (the step table,
# rewritten after every step), -sanitize.md, -gpu-tests.xml, -table.jsonl / -table.md, -measurements.md,
# -roofline.md, -kernels.json / .md.
# Env: PYTHON (python3), SUITE_BUDGET (s, default 470), SUITE_ONLY (comma list of step keys:
# wheels,build,check,sanitize,tests,table,measure,roofline,kernels), SUITE_TEST_TIMEOUT (s per gpu test,
# 60), SUITE_GPU_TESTS (pytest paths, default tests), SUITE_TABLE_ARGS (extra device_table arguments,
# e.g. --cases view,mesh), SUITE_K (pytest -k for the kernel benchmarks).
set -uo pipefail

DRY=0
for a in "$@"; do
  case "$a" in
    --dry-run|-n) DRY=1 ;;
    -h|--help) sed -n '2,/^set /{/^#/p}' "$0"; exit 0 ;;
    *) echo "gpu_suite.sh: unknown argument $a (use --dry-run)" >&2; exit 2 ;;
  esac
done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
T0=$(date +%s)
DATE=$(date -u +%F)
if [ "$DRY" = 1 ]; then
  GPU_NAME="dry run on CPU"; GPU=dryrun
else
  GPU_NAME=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
  case "$GPU_NAME" in
    *H100*) GPU=h100 ;; *H200*) GPU=h200 ;; *A100*) GPU=a100 ;; "") GPU=nogpu ;; *) GPU=gpu ;;
  esac
fi
STEM="$DATE-$GPU"
RESULTS="${OUT:-$ROOT/bench/results}"
mkdir -p "$RESULTS"
LOG="$RESULTS/$STEM-suite.log"
SUMMARY="$RESULTS/$STEM-suite.md"
STEPS_MD=""
FAILED=0
: > "$LOG"
BUDGET="${SUITE_BUDGET:-470}"   # seconds for the whole suite, build included (the device call: <= 8 min)
[ "$DRY" = 1 ] && BUDGET=$(( BUDGET * 3 ))   # the dry run: every share x3 (step()), not a device's minutes

say() { local s=$(( $(date +%s) - T0 )); printf '[gpu_suite %02d:%02d] %s\n' $((s / 60)) $((s % 60)) "$*" | tee -a "$LOG"; }

# the step table, rewritten (atomically) after every step: a time-out of the whole call keeps it
summary() {
  { echo "# lrm_fast GPU suite $STEM ($GPU_NAME; $(( $(date +%s) - T0 )) s of ${BUDGET} s)"; echo
    echo "| step | status | time |"; echo "|---|---|---:|"; printf '%s' "$STEPS_MD"
    echo; echo "Results next to this file: $STEM-*."; } > "$SUMMARY.tmp" && mv -f "$SUMMARY.tmp" "$SUMMARY"
}

# step KEY NAME SHARE_S RESERVE_S GPU_ONLY COMMAND: run COMMAND (a bash string) for at most SHARE_S
# seconds and never into the RESERVE_S seconds kept for the steps after it; SIGINT first (pytest and
# the table keep what finished), SIGKILL 30 s later. A GPU-only step is skipped in a dry run; a step
# with under 10 s left, or not in SUITE_ONLY, is skipped. Never stops the suite.
step() {
  local key="$1" name="$2" limit="$3" reserve="$4" gpu_only="$5" cmd="$6"
  if [ "$DRY" = 1 ]; then limit=$(( limit * 3 )); reserve=$(( reserve * 3 )); fi   # a CPU imports slowly
  local left=$(( BUDGET - ($(date +%s) - T0) - reserve - 5 ))
  local why=""
  if [ -n "${SUITE_ONLY:-}" ] && [[ ",$SUITE_ONLY," != *",$key,"* ]]; then why="not in SUITE_ONLY"
  elif [ "$DRY" = 1 ] && [ "$gpu_only" = 1 ]; then why="dry run: no GPU"
  else
    [ "$left" -lt "$limit" ] && limit=$left
    [ "$limit" -lt 10 ] && why="budget used up (${left}s left before the later steps' ${reserve}s)"
  fi
  if [ -n "$why" ]; then
    say "--- $name: skipped ($why)"
    STEPS_MD+="| $name | skipped ($why) | 0 s |"$'\n'
    summary
    return 0
  fi
  say ">>> $name (limit ${limit}s)"
  local t=$(date +%s)
  export BENCH_LIMIT="$limit"   # the step's own limit, for commands that budget inside it
  timeout -s INT -k 30 "$limit" bash -c "$cmd" 2>&1 | tee -a "$LOG"
  local rc=${PIPESTATUS[0]} dt=$(( $(date +%s) - t ))
  local status="ok"
  if [ "$rc" != 0 ]; then status="FAILED (exit $rc)"; { [ "$rc" = 124 ] || [ "$rc" = 137 ]; } && status="TIMED OUT after ${limit}s"; FAILED=1; fi
  say "<<< $name: $status in ${dt}s"
  STEPS_MD+="| $name | $status | ${dt} s |"$'\n'
  summary
  return 0
}

# --- 0. environment ---------------------------------------------------------------------------
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
if [ "$DRY" = 0 ]; then
  export FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" MAX_JOBS="${MAX_JOBS:-16}"
  # nvcc must be the real binary: an `nvcc` on PATH may be a wrapper script (exec .../bin/nvcc "$@"), and
  # torch then guesses the wrapper's parent as CUDA_HOME and the link fails late (-lcudart not found).
  is_cuda_root() { [ -n "$1" ] && [ -x "$1/bin/nvcc" ] && [ "$(head -c 4 "$1/bin/nvcc" 2>/dev/null | tr -d '\0')" = $'\x7fELF' ]; }
  TORCH_CUDA_MAJOR="$($PYTHON -c 'import torch; print((torch.version.cuda or "").split(".")[0])' 2>/dev/null)"
  if ! is_cuda_root "${CUDA_HOME:-}"; then
    NVCC_PATH="$(command -v nvcc 2>/dev/null || true)"
    WRAPPED=""
    if [ -n "$NVCC_PATH" ]; then   # a wrapper names the real nvcc: take the first path ending in /bin/nvcc
      WRAPPED="$(grep -ao '/[^ "]*/bin/nvcc' "$NVCC_PATH" 2>/dev/null | head -1)"
    fi
    unset CUDA_HOME
    for c in "$($PYTHON -c 'from torch.utils.cpp_extension import CUDA_HOME; print(CUDA_HOME or "")' 2>/dev/null)" \
             "${WRAPPED%/bin/nvcc}" "$(dirname "$(dirname "$(readlink -f "${NVCC_PATH:-/nonexistent/bin/nvcc}")")")" \
             /usr/local/cuda /usr/local/cuda-13.0 /usr/local/cuda-13 /usr/local/cuda-*; do
      # only a toolkit whose major version is torch's (a cu130 torch refuses 12.x; setup.py checks too)
      if is_cuda_root "$c" && { [ -z "$TORCH_CUDA_MAJOR" ] || "$c/bin/nvcc" --version 2>/dev/null | grep -q "release $TORCH_CUDA_MAJOR\."; }; then
        export CUDA_HOME="$c"; break
      fi
    done
  fi
fi
SITE=/tmp/site
[ "$DRY" = 1 ] && SITE="$(mktemp -d /tmp/gpu-suite-site.XXXXXX)"
export PYTHONPATH="$SITE:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
# without the editable install, lrm_fast.kernels (top-level kernels/) needs the link it maps (the GPU
# machine's copy only: a dry run leaves the checkout as it is)
[ "$DRY" = 1 ] || [ -e lrm_fast/kernels ] || ln -s ../kernels lrm_fast/kernels 2>/dev/null || true
say "lrm_fast GPU suite: $GPU_NAME -> $RESULTS/$STEM-*  (budget ${BUDGET}s)"
[ "$DRY" = 0 ] && say "FORCE_CUDA=$FORCE_CUDA CUDA_HOME=${CUDA_HOME:-not found} TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST MAX_JOBS=$MAX_JOBS PYTHON=$PYTHON"
DEV=cuda; [ "$DRY" = 1 ] && DEV=cpu
summary

# --- 1. wheels (no network: carried in .whl/) -------------------------------------------------
# shares are ceilings, wheels + build <= 90 s (the H200: 1 s + 34 s with 16 jobs); each reserve is the time
# kept for the steps after it (typical run: ~40 + 10 + 90 + 80 s before the table, which gets ~190 s)
if ls "$ROOT"/.whl/*.whl >/dev/null 2>&1; then
  step wheels "install carried wheels (.whl/ -> $SITE)" 15 440 0 \
    "$PYTHON -m pip install -q --no-index --no-deps --no-compile --target $SITE $ROOT/.whl/*.whl"
else
  say "no .whl/*.whl: xformers/lpips/trimesh/imageio-ffmpeg stay unavailable (bench/scripts/prepare_gpu_wheels.sh makes them)"
fi

# --- 2. build + install the package with CUDA (setup.py fails loudly if CUDA cannot be built) ----
step build "build lrm_fast._C with CUDA (pip install -e .)" 75 360 1 \
  "PIP_BREAK_SYSTEM_PACKAGES=1 $PYTHON -m pip install --no-build-isolation --no-deps --no-index -e . || { echo 'pip install -e failed; building in place'; $PYTHON setup.py build_ext --inplace; }"

# --- 3. imports, the device, the compiled kernels registered for it (a CPU-only build fails here) ----
step check "check imports and kernel registration ($DEV)" 45 300 0 \
  "$PYTHON -m bench.scripts.device_table --check --device $DEV"

# --- 4. the Triton field's open illegal memory access, before anything else can poison the context ----
step sanitize "Triton field illegal-address matrix (compute-sanitizer, bench/scripts/gpu_field_sanitize.py)" 90 210 1 \
  "$PYTHON -m bench.scripts.gpu_field_sanitize --out $RESULTS/$STEM-sanitize.md"

# --- 5. gpu-marked tests, each with a time limit (pytest-timeout, on the GPU machine) -------------
step tests "gpu tests (pytest -m gpu, ${SUITE_TEST_TIMEOUT:-60}s per test)" 90 130 0 \
  "TO=''; $PYTHON -c 'import pytest_timeout' 2>/dev/null && TO='--timeout=${SUITE_TEST_TIMEOUT:-60}'; $PYTHON -m pytest ${SUITE_GPU_TESTS:-tests} -m gpu -q -p no:cacheprovider -rfEs \$TO --junitxml=$RESULTS/$STEM-gpu-tests.xml; rc=\$?; [ \$rc = 5 ] && { echo 'no gpu tests collected'; exit 0; }; exit \$rc"

# --- 6. the device table: one row per (case, implementation, dtype), written as each finishes ----
TABLE_SIZE=""; [ "$DRY" = 1 ] && TABLE_SIZE="--tiny"
step table "device table (bench/scripts/device_table.py $TABLE_SIZE)" 200 40 0 \
  "$PYTHON -m bench.scripts.device_table $TABLE_SIZE --out $RESULTS --stem $STEM-table ${SUITE_TABLE_ARGS:-}"

# --- 7. kernel measurements (compositing 512x512x128 GB/s vs copy: triton / cpp / reference; registers, spills, launch configurations, C=40 vs 48) ----
step measure "kernel measurements (bench/scripts/measure_gpu.py)" 45 20 0 \
  "$PYTHON -m bench.scripts.measure_gpu --out $RESULTS/$STEM-measurements.md"

# --- 8. analytic work and floors per stage ------------------------------------------------------
step roofline "roofline (analytic work and floors per stage, base + paper)" 20 0 0 \
  "$PYTHON -m bench.lib.roofline --preset base --preset paper --gpu $( [ "$GPU" = h200 ] && echo H200 || echo H100 ) > $RESULTS/$STEM-roofline.md"

# --- 9. kernel benchmarks with whatever time is left ---------------------------------------------
step kernels "kernel benchmarks (raymarch/composite, render, triplane field)" 120 0 1 \
  "LRM_FAST_BENCH=full $PYTHON -m bench.report bench/suites/bench_raymarch.py bench/suites/bench_render.py bench/suites/bench_triplane_mlp.py --out $RESULTS --name $STEM-kernels ${SUITE_K:+-k \"$SUITE_K\"} --pytest-arg=--benchmark-max-time=0.3 --time-budget \$(( BENCH_LIMIT - 15 ))"

[ "$DRY" = 1 ] && rm -rf "$SITE"
say "done in $(( $(date +%s) - T0 )) s: $([ $FAILED = 0 ] && echo 'every step passed' || echo 'some steps FAILED (see above)'); results in $RESULTS/$STEM-*"
exit $FAILED
