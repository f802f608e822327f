#!/usr/bin/env bash
# One command for a GPU machine (H100/H200): install, build lrm_fast._C with CUDA, run the gpu tests
# and the GPU benchmarks of every stage, write bench/results/<date>-<gpu>.json and .md.
#
#   bash bench/scripts/gpu_suite.sh             # the whole suite (SUITE_BUDGET, default 330 s, build included)
#   bash bench/scripts/gpu_suite.sh --dry-run   # print the steps and their commands, run nothing
#
# Assumes the GPU machine (x86-64, python 3.12) already has torch, triton, timm,
# pytest-benchmark, pybind11, ninja preinstalled, NO network. Wheels it lacks (xformers, lpips) come
# in the working tree's .whl/ (bench/scripts/prepare_gpu_wheels.sh) and go to /tmp/site (PYTHONPATH).
# A failing step is recorded and the suite goes on; the exit code is 0 only if every step passed.
# Order (the first run must reach the kernels): wheels -> build -> import + CUDA-kernel check ->
# the Triton field's illegal-address matrix (issue 18) -> kernel benchmarks (raymarch/composite,
# render, triplane field) -> gpu tests (per-test timeout) ->
# measurements (bench/scripts/measure_gpu.py) -> the other benchmarks -> roofline. Each step has a share of
# SUITE_BUDGET (seconds for the whole suite) and a minimum kept for the steps after it; a step with
# no time left is SKIPPED and listed at the end.
# Outputs (<= 7 files, all copied to $OUT/results): bench/results/<date>-<gpu>.json (pytest-benchmark +
# machine info, both benchmark runs merged), .md (ratio table, kernel paths, roofline, the step log),
# -suite.log, -gpu-tests.xml, -roofline.md, -measurements.md, -sanitize.md.
# Env: PYTHON (default python3), SUITE_BUDGET (s, default 330), SUITE_K (pytest -k for the benches),
# SUITE_TEST_TIMEOUT (s per gpu test, default 60).
set -uo pipefail

DRY=0
for a in "$@"; do
  case "$a" in
    --dry-run|-n) DRY=1 ;;
    -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
    *) echo "gpu_suite.sh: unknown argument $a (use --dry-run)" >&2; exit 2 ;;
  esac
done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
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

# step NAME SHARE_S RESERVE_S COMMAND: run COMMAND (a bash string) for at most SHARE_S seconds, and
# never into the RESERVE_S seconds kept for the steps after it; SIGINT first so pytest still writes
# its JSON, SIGKILL 30 s later. Never stops the suite. A step with under 10 s left is skipped.
BUDGET="${SUITE_BUDGET:-330}"   # seconds for the whole suite, build included
SKIPPED=""
step() {
  local name="$1" limit="$2" reserve="$3" cmd="$4"
  local left=$(( BUDGET - ($(date +%s) - T0) - reserve - 5 ))
  if [ "$DRY" = 1 ]; then
    say ">>> $name (share ${limit}s of ${BUDGET}s; ${reserve}s kept for the later steps)"
    printf '    %s\n' "$cmd"
    return 0
  fi
  if [ "$left" -lt "$limit" ]; then limit=$left; fi
  if [ "$limit" -lt 10 ]; then
    say "--- SKIPPED $name: budget used up (${left}s left before the later steps' ${reserve}s)"
    SKIPPED+="$name; "
    STEPS_MD+="| $name | SKIPPED (budget) | 0 s |"$'\n'
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
  return 0
}

# --- 0. environment ---------------------------------------------------------------------------
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
export FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" MAX_JOBS="${MAX_JOBS:-16}"
# nvcc must be the real binary: an `nvcc` on PATH may be a wrapper script (exec .../bin/nvcc "$@"), and
# torch then guesses the wrapper's parent as CUDA_HOME and the link fails late (-lcudart not found).
is_cuda_root() { [ -n "$1" ] && [ -x "$1/bin/nvcc" ] && [ "$(head -c 4 "$1/bin/nvcc" 2>/dev/null | tr -d '\0')" = $'\x7fELF' ]; }
TORCH_CUDA_MAJOR=""
[ "$DRY" = 1 ] || TORCH_CUDA_MAJOR="$($PYTHON -c 'import torch; print((torch.version.cuda or "").split(".")[0])' 2>/dev/null)"
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
SITE=/tmp/site
export PYTHONPATH="$SITE:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
say "lrm_fast GPU suite: $GPU_NAME -> bench/results/$STEM.{json,md}"
say "FORCE_CUDA=$FORCE_CUDA CUDA_HOME=${CUDA_HOME:-not found} TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST MAX_JOBS=$MAX_JOBS PYTHON=$PYTHON"

# --- 1. wheels (no network: carried in .whl/) -------------------------------------------------
# shares: measured guesses for an H100 with 16 cores (build ~1-2 min); reserves keep the kernel
# benchmarks (40 s), gpu tests (60 s), measurements (20 s), other benchmarks (20 s), roofline (10 s)
if ls "$ROOT"/.whl/*.whl >/dev/null 2>&1 || [ "$DRY" = 1 ]; then
  step "install carried wheels (.whl/ -> $SITE)" 40 150 \
    "$PYTHON -m pip install -q --no-index --no-deps --no-compile --target $SITE $ROOT/.whl/*.whl"
else
  say "no .whl/*.whl: xformers/lpips/trimesh/imageio-ffmpeg stay unavailable (bench/scripts/prepare_gpu_wheels.sh makes them)"
fi

# --- 2. build + install the package with CUDA (setup.py fails loudly if CUDA cannot be built) ----
step "build lrm_fast._C with CUDA (pip install -e .)" 170 150 \
  "PIP_BREAK_SYSTEM_PACKAGES=1 $PYTHON -m pip install --no-build-isolation --no-deps --no-index -e . || { echo 'pip install -e failed; building in place (+ lrm_fast/kernels link, which the editable install maps)'; $PYTHON setup.py build_ext --inplace && { [ -e lrm_fast/kernels ] || ln -s ../kernels lrm_fast/kernels; }; }"
# the first check: imports, CUDA visible, the CUDA kernels registered (a CPU-only build fails here)
step "check imports and the CUDA build (lrm_fast._C CUDA kernels, triton, versions)" 30 150 \
  "$PYTHON -c 'import torch, triton, lrm_fast, lrm_fast._C; from lrm_fast.ops.raymarch import _has_kernel; assert torch.cuda.is_available(), \"no CUDA device\"; ops = [\"composite_fwd\", \"composite_bwd\", \"composite_samples_fwd\", \"ray_points\", \"generate_rays\"]; missing = [o for o in ops if not _has_kernel(o, \"CUDA\")]; print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, \"triton\", triton.__version__, torch.cuda.get_device_name()); assert not missing, \"lrm_fast._C has no CUDA kernels for %s (a CPU-only build)\" % missing; print(\"CUDA kernels registered:\", ops); lrm_fast.info(presets=[\"tiny\"])'"

# --- 2b. issue 18's open illegal memory access, before anything else can poison the context:
# compute-sanitizer on the fp32 Triton field at the default launch, then launch variants (4 warps,
# output tile 32) in separate processes; table in -sanitize.md (python -m bench.scripts.gpu_field_sanitize -h)
step "Triton field illegal-address matrix (compute-sanitizer, bench/scripts/gpu_field_sanitize.py)" 150 150 \
  "$PYTHON -m bench.scripts.gpu_field_sanitize --out $RESULTS/$STEM-sanitize.md"

# --- 3. kernel benchmarks first (ray marching + compositing, rendering, fused triplane field) ----
KERNEL_BENCHES="bench/suites/bench_raymarch.py bench/suites/bench_render.py bench/suites/bench_triplane_mlp.py"
step "kernel benchmarks (raymarch/composite, render, triplane field)" 70 110 \
  "LRM_FAST_BENCH=full $PYTHON -m bench.report $KERNEL_BENCHES --out $RESULTS --name $STEM-kernels ${SUITE_K:+-k \"$SUITE_K\"} --pytest-arg=--benchmark-max-time=0.3 --time-budget \$(( BENCH_LIMIT - 15 ))"

# --- 4. gpu-marked tests, each with a time limit (pytest-timeout, on the GPU machine) -------------
step "gpu tests (pytest -m gpu, ${SUITE_TEST_TIMEOUT:-60}s per test)" 90 50 \
  "TO=''; $PYTHON -c 'import pytest_timeout' 2>/dev/null && TO='--timeout=${SUITE_TEST_TIMEOUT:-60}'; $PYTHON -m pytest tests -m gpu -q -p no:cacheprovider -rfEs \$TO --junitxml=$RESULTS/$STEM-gpu-tests.xml; rc=\$?; [ \$rc = 5 ] && { echo 'no gpu tests collected'; exit 0; }; exit \$rc"

# --- 5. measurements the issue asks for (spills, launch configs, C=40 vs 48, compositing GB/s) ----
step "measurements (bench/scripts/measure_gpu.py)" 40 30 \
  "$PYTHON -m bench.scripts.measure_gpu --out $RESULTS/$STEM-measurements.md"

# --- 6. the other benchmarks (image_to_triplane incl. base and paper presets, mesh, train) --------
step "other benchmarks (image_to_triplane, mesh, train; LRM_FAST_BENCH=full)" 120 10 \
  "LRM_FAST_BENCH=full $PYTHON -m bench.report bench/suites/bench_image_to_triplane.py bench/suites/bench_mesh.py bench/suites/bench_train.py --out $RESULTS --name $STEM-rest ${SUITE_K:+-k \"$SUITE_K\"} --pytest-arg=--benchmark-max-time=0.3 --time-budget \$(( BENCH_LIMIT - 20 ))"
# the achieved fraction of peak per case is already in the .md (bench.report); this adds the analytic work table
step "roofline (analytic work and floors per stage, base + paper)" 15 0 \
  "$PYTHON -m bench.lib.roofline --preset base --preset paper --gpu $( [ $GPU = h200 ] && echo H200 || echo H100 ) > $RESULTS/$STEM-roofline.md"

# --- 7. summary: one JSON + one table from both benchmark runs; copy everything to $OUT --------
if [ "$DRY" = 1 ]; then
  say "dry run: would merge $STEM-kernels.json + $STEM-rest.json into bench/results/$STEM.json and .md, write $STEM-suite.log, -gpu-tests.xml, -measurements.md, -roofline.md and copy them to \$OUT/results"
  exit 0
fi
$PYTHON - "$RESULTS" "$STEM" <<'PY' 2>&1 | tee -a "$LOG"
import json, os, sys
from bench import report
d, stem = sys.argv[1], sys.argv[2]
parts = [os.path.join(d, f"{stem}-{p}.json") for p in ("kernels", "rest")]
results = [report.load(p) for p in parts if os.path.exists(p)]
if results:
    merged = results[0]
    for r in results[1:]:
        merged["benchmarks"] = merged.get("benchmarks", []) + r.get("benchmarks", [])
    report.write_atomic(os.path.join(d, stem + ".json"), json.dumps(merged, indent=1))
    report.write_atomic(os.path.join(d, stem + ".md"), report.full_report(merged))
    for p in parts:
        for ext in (".json", ".md"):
            q = p[:-5] + ext
            if os.path.exists(q):
                os.remove(q)
    print(f"merged {len(results)} benchmark runs into {stem}.json / .md")
else:
    print("no benchmark results to merge")
PY
{
  [ -f "$RESULTS/$STEM.md" ] || echo "# lrm_fast GPU suite $STEM (no benchmark results: see the steps)"
  echo; echo "## Suite steps ($GPU_NAME; $(( $(date +%s) - T0 )) s of ${BUDGET} s)"; echo
  echo "| step | status | time |"; echo "|---|---|---:|"; printf '%s' "$STEPS_MD"
  [ -n "$SKIPPED" ] && { echo; echo "Skipped for lack of budget: $SKIPPED"; }
  if [ -f "$RESULTS/$STEM-measurements.md" ]; then echo; sed 's/^# /## /' "$RESULTS/$STEM-measurements.md"; fi
  if [ -f "$RESULTS/$STEM-roofline.md" ]; then echo; echo "## Roofline: analytic work per stage"; echo; cat "$RESULTS/$STEM-roofline.md"; fi
} >> "$RESULTS/$STEM.md"
[ -n "$SKIPPED" ] && say "skipped (budget): $SKIPPED"
if [ -n "${OUT:-}" ]; then
  mkdir -p "$OUT/results"
  cp -f "$RESULTS/$STEM".* "$RESULTS/$STEM"-suite.log "$RESULTS/$STEM"-gpu-tests.xml "$RESULTS/$STEM"-measurements.md \
        "$RESULTS/$STEM"-roofline.md "$RESULTS/$STEM"-sanitize.md "$OUT/results/" 2>/dev/null || true
  say "copied $(ls "$OUT/results" 2>/dev/null | wc -l) result files to \$OUT/results"
fi
say "done in $(( $(date +%s) - T0 )) s: $([ $FAILED = 0 ] && echo 'every step passed' || echo 'some steps FAILED (see above)')$([ -n "$SKIPPED" ] && echo "; SKIPPED: $SKIPPED"); results in bench/results/$STEM.*"
exit $FAILED
