#!/usr/bin/env bash
# Train the demo model on one GPU and hand back weights, log, evaluation and pictures.
#
#   bash tools/train_demo_gpu.sh OUTDIR            # on the GPU machine, from a repo checkout
#   bash tools/train_demo_gpu.sh OUTDIR --tiny     # the same code path in ~1-2 min on a CPU (proof run)
#   bash tools/train_demo_gpu.sh OUTDIR --dry-run  # print the commands only
#
# Steps (each under a time limit; a failing step does not stop the ones after it):
#   1. synthetic data, recipe RECIPE (`rich`: what users show a demo; lrm-fast make-data, all cores, <= DATA_SECONDS; the objects
#      finished by then are used);
#   2. training, configs/demo-gpu.yaml, for TRAIN_SECONDS of wall time (bf16 autocast on CUDA, fp32 on
#      CPU; atomic checkpoints every few hundred steps and on SIGTERM, so a time-out still leaves weights);
#   3. python -m lrm_fast.train.report: the new model and the shipped one (lrm_fast/assets/demo) on the
#      held-out benchmark with its baselines, pictures, curves.
# OUTDIR gets at most 7 files: model.safetensors, config.json, eval.json, pictures.png, curves.png
# (if matplotlib is installed), train.log, extras.tar.gz. Big files (data, checkpoints) stay in WORK.
# Needs no install: runs from the repo root with PYTHONPATH=. ; lrm_fast._C is optional.
# Env: PYTHON (python3), TRAIN_SECONDS (240), DATA_SECONDS (60), DEMO_OBJECTS (4000), DEMO_WORKERS
# (all cores), RECIPE (rich), EVAL_OBJECTS (100), EVAL_SHIFTED (50), WORK (/tmp/lrm_demo_gpu), TRAIN_SET (extra
# "key=value ..." overrides for the train config).
set -uo pipefail

OUT=""; TINY=0; DRY=0
for a in "$@"; do
  case "$a" in
    --tiny) TINY=1 ;;
    --dry-run|-n) DRY=1 ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    -*) echo "train_demo_gpu.sh: unknown option $a" >&2; exit 2 ;;
    *) if [ -z "$OUT" ]; then OUT="$a"; else echo "train_demo_gpu.sh: one OUTDIR only" >&2; exit 2; fi ;;
  esac
done
[ -n "$OUT" ] || { echo "usage: bash tools/train_demo_gpu.sh OUTDIR [--tiny] [--dry-run]" >&2; exit 2; }

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
PY="${PYTHON:-python3}"
# without an install, lrm_fast.kernels (the Triton kernels, top-level kernels/) needs the link that the
# editable install otherwise maps (git-ignored; bench/scripts/gpu_suite.sh makes the same one)
if [ "$DRY" != 1 ] && [ ! -e lrm_fast/kernels ]; then ln -s ../kernels lrm_fast/kernels 2>/dev/null || true; fi
BACKEND=auto   # of the evaluation; training takes the config's (reference)
if [ "$DRY" != 1 ] && ! "$PY" -c "import lrm_fast.kernels.triplane_mlp" >/dev/null 2>&1; then BACKEND=reference; fi
NCPU=$(nproc 2>/dev/null || echo 4)
if [ "$TINY" = 1 ]; then
  TRAIN_SECONDS="${TRAIN_SECONDS:-20}"; DATA_SECONDS="${DATA_SECONDS:-60}"; DEMO_OBJECTS="${DEMO_OBJECTS:-16}"
  EVAL_OBJECTS="${EVAL_OBJECTS:-4}"; EVAL_SHIFTED="${EVAL_SHIFTED:-2}"
  TRAIN_SET="${TRAIN_SET:-batch_size=4 num_workers=1 patch=24 ckpt_every=20 log_every=2 warmup=5}"
  WORK="${WORK:-/tmp/lrm_demo_tiny}"
fi
TRAIN_SECONDS="${TRAIN_SECONDS:-240}"; DATA_SECONDS="${DATA_SECONDS:-60}"; DEMO_OBJECTS="${DEMO_OBJECTS:-4000}"
DEMO_WORKERS="${DEMO_WORKERS:-$NCPU}"; EVAL_OBJECTS="${EVAL_OBJECTS:-100}"; EVAL_SHIFTED="${EVAL_SHIFTED:-50}"
TRAIN_SET="${TRAIN_SET:-}"; WORK="${WORK:-/tmp/lrm_demo_gpu}"; RECIPE="${RECIPE:-rich}"
DATA="$WORK/data"; RUN="$WORK/run"
MAX_MIN=$("$PY" -c "print($TRAIN_SECONDS / 60)")
SETS=(--set "data_root=$DATA" --set "out_dir=$RUN" --set "max_minutes=$MAX_MIN" --set "eval_recipe=$RECIPE")
# DataLoader workers hand batches (~10 MB each, 2 in flight per worker) over /dev/shm: a small one
# (a container's default 64 MB) would crash them, so fewer workers there
SHM_MB=$(df -Pm /dev/shm 2>/dev/null | awk 'NR==2 {print $4}')
if [ "$TINY" != 1 ] && [ -n "$SHM_MB" ] && [ "$SHM_MB" -lt 1024 ]; then
  SETS+=(--set "num_workers=$(( SHM_MB / 40 > 1 ? SHM_MB / 40 : 1 ))")
fi
for kv in $TRAIN_SET; do SETS+=(--set "$kv"); done

[ "$DRY" = 1 ] || mkdir -p "$OUT"
LOG="$OUT/train.log"
T0=$(date +%s)
say() { if [ "$DRY" = 1 ]; then printf "%s\n" "$*"; else printf "[train_demo_gpu %4ds] %s\n" $(( $(date +%s) - T0 )) "$*" | tee -a "$LOG"; fi; }
run() {  # run LIMIT_S CMD...: SIGTERM at the limit (the trainer checkpoints on it), SIGKILL 30 s later
  local limit="$1"; shift
  say "\$ $*"
  [ "$DRY" = 1 ] && return 0
  timeout -k 30 "$limit" "$@" >>"$LOG" 2>&1
  local rc=$?
  say "exit $rc"
  return $rc
}
[ "$DRY" = 1 ] || : > "$LOG"
say "OUT=$OUT WORK=$WORK TRAIN_SECONDS=$TRAIN_SECONDS DEMO_OBJECTS=$DEMO_OBJECTS workers=$DEMO_WORKERS tiny=$TINY /dev/shm free ${SHM_MB:-?} MB backend=$BACKEND"
if [ "$DRY" != 1 ]; then
  "$PY" -c "import sys, torch; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')" >>"$LOG" 2>&1
  "$PY" -c "import importlib.util as u; print('lrm_fast._C:', 'present' if u.find_spec('lrm_fast._C') else 'absent (reference/triton ops)')" >>"$LOG" 2>&1
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader >>"$LOG" 2>&1 || true
fi

# 1. data: objects finished within DATA_SECONDS are kept (folders are atomic; no meta.json -> scanned)
run "$DATA_SECONDS" "$PY" -m lrm_fast.cli make-data "$DATA" --recipe "$RECIPE" --objects "$DEMO_OBJECTS" \
  --views 16 --resolution 128 --no-depth --workers "$DEMO_WORKERS"
[ "$DRY" = 1 ] || say "objects on disk: $(find "$DATA" -maxdepth 2 -name intrinsics.npy 2>/dev/null | wc -l)"

# 2. training: max_minutes ends it; the outer limit is a safety net
run $(( TRAIN_SECONDS + 60 )) "$PY" -m lrm_fast.cli train configs/demo-gpu.yaml "${SETS[@]}"
if [ "$DRY" != 1 ] && [ -f "$RUN/log.jsonl" ]; then
  "$PY" - "$RUN/log.jsonl" >>"$LOG" 2>&1 <<'EOF'
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
tr = [r for r in recs if "loss" in r]
for r in tr[:: max(1, len(tr) // 25)] + tr[-1:]:
    print(f"step {r['step']:6d}  t {r.get('elapsed_s', 0):6.1f}s  loss {r['loss']:.4f}  psnr {r['psnr']:.2f}  "
          f"lr {r['lr']:.2e}  {r.get('items_per_s', 0):.0f} items/s  mem {r.get('peak_mem_mb', 0):.0f} MB")
ends = [r for r in recs if r.get("event") in ("end", "checkpoint")]
print("last events:", ends[-2:])
EOF
fi

# 3. evaluation (new vs shipped, with baselines), pictures, curves, extras
run 150 "$PY" -m lrm_fast.train.report "$RUN" "$OUT" --objects "$EVAL_OBJECTS" --shifted "$EVAL_SHIFTED" \
  --recipe "$RECIPE" --compare lrm_fast/assets/demo --backend "$BACKEND"
say "done; OUT holds: $(ls "$OUT" 2>/dev/null | tr '\n' ' ')"
