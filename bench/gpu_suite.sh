#!/usr/bin/env bash
# One command for a GPU machine (H100/H200): install, build lrm_fast._C with CUDA, run the gpu tests
# and the GPU benchmarks of every stage, write bench/results/<date>-<gpu>.json and .md.
#
#   bash bench/gpu_suite.sh             # the whole suite (< 8 min on an H100; each step has a time limit)
#   bash bench/gpu_suite.sh --dry-run   # print the steps and their commands, run nothing
#
# Assumes the machine described in /work/shared/ENVIRONMENT.md: python with torch, triton, timm,
# pytest-benchmark, pybind11, ninja preinstalled, NO network. Wheels it lacks (xformers, lpips) come
# in the working tree's .whl/ (bench/prepare_gpu_wheels.sh) and go to /tmp/site (PYTHONPATH).
# A failing step is recorded and the suite goes on; the exit code is 0 only if every step passed.
# Outputs: bench/results/<date>-<gpu>.json (pytest-benchmark + machine info), .md (ratio table,
# kernel paths, roofline, the step log) and <date>-<gpu>-suite.log; copied to $OUT when it is set.
# Env: PYTHON (default python3), SUITE_BENCH_TIMEOUT (s, default 300), SUITE_K (pytest -k for benches).
set -uo pipefail

DRY=0
for a in "$@"; do
  case "$a" in
    --dry-run|-n) DRY=1 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "gpu_suite.sh: unknown argument $a (use --dry-run)" >&2; exit 2 ;;
  esac
done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
T0=$(date +%s)
DATE=$(date -u +%F)
if [ "$DRY" = 1 ]; then
  GPU_NAME="(dry run: nvidia-smi not queried)"; GPU=gpu
else
  GPU_NAME=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
  case "$GPU_NAME" in
    *H100*) GPU=h100 ;; *H200*) GPU=h200 ;; *A100*) GPU=a100 ;; "") GPU=nogpu ;; *) GPU=gpu ;;
  esac
fi
STEM="$DATE-$GPU"
RESULTS="$ROOT/bench/results"
LOG="$RESULTS/$STEM-suite.log"
STEPS_MD=""
FAILED=0
mkdir -p "$RESULTS"
[ "$DRY" = 1 ] || : > "$LOG"

say() { local s=$(( $(date +%s) - T0 )); printf '[gpu_suite %02d:%02d] %s\n' $((s / 60)) $((s % 60)) "$*" | { if [ "$DRY" = 1 ]; then cat; else tee -a "$LOG"; fi; }; }

# step NAME TIMEOUT_S COMMAND: run COMMAND (a bash string) with a time limit; SIGINT first so pytest
# still writes its JSON, SIGKILL 30 s later. Never stops the suite.
BUDGET="${SUITE_BUDGET:-450}"   # seconds for all steps: the suite must end within 8 minutes on an H100
step() {
  local name="$1" limit="$2" cmd="$3"
  local left=$(( BUDGET - ($(date +%s) - T0) - 20 ))
  if [ "$DRY" != 1 ] && [ "$left" -lt "$limit" ]; then limit=$(( left > 30 ? left : 30 )); fi
  say ">>> $name (limit ${limit}s)"
  if [ "$DRY" = 1 ]; then
    printf '    %s\n' "$cmd"
    return 0
  fi
  local t=$(date +%s)
  export BENCH_LIMIT="$limit"   # the step's own limit, for commands that budget inside it
  timeout -s INT -k 30 "$limit" bash -c "$cmd" 2>&1 | tee -a "$LOG"
  local rc=${PIPESTATUS[0]} dt=$(( $(date +%s) - t ))
  local status="ok"
  if [ "$rc" != 0 ]; then status="FAILED (exit $rc)"; { [ "$rc" = 124 ] || [ "$rc" = 137 ]; } && status="TIMED OUT after ${limit}s"; FAILED=1; fi
  say "<<< $name: $status in ${dt}s"
  STEPS_MD+="| $name | $status | ${dt} s |"$'\n'
  return 0
}

# --- 0. environment ---------------------------------------------------------------------------
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
export FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" MAX_JOBS="${MAX_JOBS:-16}"
# nvcc must be the real binary: an `nvcc` on PATH may be a wrapper script (exec .../bin/nvcc "$@"), and
# torch then guesses the wrapper's parent as CUDA_HOME and the link fails late (-lcudart not found).
is_cuda_root() { [ -n "$1" ] && [ -x "$1/bin/nvcc" ] && [ "$(head -c 4 "$1/bin/nvcc" 2>/dev/null | tr -d '\0')" = $'\x7fELF' ]; }
if ! is_cuda_root "${CUDA_HOME:-}"; then
  NVCC_PATH="$(command -v nvcc 2>/dev/null || true)"
  WRAPPED=""
  if [ -n "$NVCC_PATH" ]; then   # a wrapper names the real nvcc: take the first path ending in /bin/nvcc
    WRAPPED="$(grep -ao '/[^ "]*/bin/nvcc' "$NVCC_PATH" 2>/dev/null | head -1)"
  fi
  unset CUDA_HOME
  for c in "$($PYTHON -c 'from torch.utils.cpp_extension import CUDA_HOME; print(CUDA_HOME or "")' 2>/dev/null)" \
           "${WRAPPED%/bin/nvcc}" "$(dirname "$(dirname "$(readlink -f "${NVCC_PATH:-/nonexistent/bin/nvcc}")")")" \
           /usr/local/cuda /usr/local/cuda-13.0 /usr/local/cuda-12.8 /usr/local/cuda-12 /usr/local/cuda-*; do
    if is_cuda_root "$c"; then export CUDA_HOME="$c"; break; fi
  done
fi
SITE=/tmp/site
export PYTHONPATH="$SITE:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
say "lrm_fast GPU suite: $GPU_NAME -> bench/results/$STEM.{json,md}"
say "FORCE_CUDA=$FORCE_CUDA CUDA_HOME=${CUDA_HOME:-not found} TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST MAX_JOBS=$MAX_JOBS PYTHON=$PYTHON"

# --- 1. wheels (no network: carried in .whl/) -------------------------------------------------
if ls "$ROOT"/.whl/*.whl >/dev/null 2>&1 || [ "$DRY" = 1 ]; then
  step "install carried wheels (.whl/ -> $SITE)" 120 \
    "$PYTHON -m pip install --no-index --no-deps --target $SITE $ROOT/.whl/*.whl"
else
  say "no .whl/*.whl: xformers/lpips stay unavailable (bench/prepare_gpu_wheels.sh makes them)"
fi

# --- 2. build + install the package with CUDA ---------------------------------------------------
step "build lrm_fast._C with CUDA (pip install -e .)" 360 \
  "PIP_BREAK_SYSTEM_PACKAGES=1 $PYTHON -m pip install --no-build-isolation --no-deps --no-index -e . || { echo 'pip install -e failed; building in place (+ lrm_fast/kernels link, which the editable install maps)'; $PYTHON setup.py build_ext --inplace && { [ -e lrm_fast/kernels ] || ln -s ../kernels lrm_fast/kernels; }; }"
step "versions and kernel paths (lrm_fast.info)" 120 \
  "$PYTHON -c 'import lrm_fast, torch; lrm_fast.info(presets=[\"tiny\"]); print(\"cuda ok:\", torch.cuda.is_available())'"

# --- 3. gpu-marked tests -------------------------------------------------------------------------
step "gpu tests (pytest -m gpu)" 240 \
  "$PYTHON -m pytest tests -m gpu -q -p no:cacheprovider -rfEs --junitxml=$RESULTS/$STEM-gpu-tests.xml; rc=\$?; [ \$rc = 5 ] && { echo 'no gpu tests collected'; exit 0; }; exit \$rc"

# --- 4. GPU benchmarks, all presets incl. paper (LRM_FAST_BENCH=full picks the gpu sizes) -------
step "GPU benchmarks (LRM_FAST_BENCH=full, python -m bench.report)" "${SUITE_BENCH_TIMEOUT:-300}" \
  "LRM_FAST_BENCH=full $PYTHON -m bench.report --out $RESULTS --name $STEM ${SUITE_K:+-k \"$SUITE_K\"} --pytest-arg=--benchmark-max-time=0.5 --time-budget \$(( BENCH_LIMIT - 60 ))"
# the achieved fraction of peak per case is already in $STEM.md (bench.report); this adds the analytic work table
step "roofline (analytic work and floors per stage, base + paper)" 60 \
  "$PYTHON -m bench.roofline --preset base --preset paper --gpu $( [ $GPU = h200 ] && echo H200 || echo H100 ) > $RESULTS/$STEM-roofline.md"

# --- 5. summary ------------------------------------------------------------------------------------
if [ "$DRY" = 1 ]; then
  say "dry run: would write bench/results/$STEM.json, $STEM.md, $STEM-suite.log and copy them to \$OUT"
  exit 0
fi
{
  [ -f "$RESULTS/$STEM.md" ] || echo "# lrm_fast GPU suite $STEM (no benchmark results: see the steps)"
  echo; echo "## Suite steps ($GPU_NAME; $(( $(date +%s) - T0 )) s in all)"; echo
  echo "| step | status | time |"; echo "|---|---|---:|"; printf '%s' "$STEPS_MD"
  if [ -f "$RESULTS/$STEM-roofline.md" ]; then echo; echo "## Roofline: analytic work per stage"; echo; cat "$RESULTS/$STEM-roofline.md"; fi
} >> "$RESULTS/$STEM.md"
if [ -n "${OUT:-}" ]; then
  mkdir -p "$OUT/results"
  cp -f "$RESULTS/$STEM"* "$OUT/results/" 2>/dev/null || true
  say "copied $(ls "$RESULTS/$STEM"* 2>/dev/null | wc -l) result files to \$OUT/results"
fi
say "done: $([ $FAILED = 0 ] && echo 'every step passed' || echo 'some steps FAILED (see above)'); results in bench/results/$STEM.*"
exit $FAILED
