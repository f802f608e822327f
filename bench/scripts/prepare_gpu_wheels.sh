#!/usr/bin/env bash
# Download the wheels that bench/scripts/gpu_suite.sh installs on the GPU machine (which has no network).
#
#   bash bench/scripts/prepare_gpu_wheels.sh            # -> .whl/ (git-ignored; pass it to the device run as carry)
#
# The GPU machine has python 3.12, torch 2.11 (cu130), triton 3.6, timm (so torchvision), numpy, scipy,
# scikit-image, imageio, pillow, safetensors, pyyaml, tqdm, pytest(-benchmark, -timeout), pybind11, ninja,
# but not what these carry: xformers (attention backend), lpips (training loss; needs torchvision),
# trimesh (mesh export: tests/test_api.py's GPU end-to-end), imageio-ffmpeg (mp4). Wheels are fetched
# for *its* interpreter and platform (cp312, manylinux x86_64, or pure python), without dependencies
# (torch must not be replaced); the script then checks every wheel's tags against that target and that
# each package has exactly one wheel (two versions stop the whole install). ~35 MB in all (the device
# call carries at most 64 MiB). Override with env vars:
#   WHEEL_DIR (default .whl), PY_VERSION (3.12), PLATFORM (manylinux_2_28_x86_64),
#   PACKAGES (default: the pinned list below).
# An xformers wheel built for another torch may not load its CUDA kernels there; that is fine:
# lrm_fast probes what actually dispatches and falls back to SDPA (see `lrm-fast info`).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
WHEEL_DIR="${WHEEL_DIR:-$ROOT/.whl}"
PY_VERSION="${PY_VERSION:-3.12}"
PLATFORM="${PLATFORM:-manylinux_2_28_x86_64}"
PACKAGES="${PACKAGES:-xformers==0.0.35 lpips==0.1.4 trimesh==5.2.0 imageio-ffmpeg==0.6.0}"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
[ -x "$PYTHON" ] || PYTHON=python3
mkdir -p "$WHEEL_DIR"
for pkg in $PACKAGES; do
  echo ">>> $pkg -> $WHEEL_DIR"
  # pure-python wheels (lpips: py3-none-any) match any platform tag, so one command serves both
  "$PYTHON" -m pip download --no-deps --only-binary=:all: --python-version "$PY_VERSION" \
    --platform "$PLATFORM" --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux2010_x86_64 --platform manylinux1_x86_64 --platform any \
    -d "$WHEEL_DIR" "$pkg"
done
# every wheel installable on the GPU machine's cp312 / x86_64, one version per package
"$PYTHON" - "$WHEEL_DIR" "$PY_VERSION" <<'PY'
import collections, os, re, sys
d, py = sys.argv[1], sys.argv[2].replace(".", "")
bad, seen = [], collections.defaultdict(list)
for f in sorted(os.listdir(d)):
    if not f.endswith(".whl"):
        continue
    name, ver, *rest = f[:-4].split("-")
    pyt, abi, plat = rest[-3:]
    seen[name.lower().replace("_", "-")].append(ver)
    ok_py = any(t in (f"cp{py}", f"py{py[0]}", "py3") or (t.startswith("py3") and int(t[3:] or 0) <= int(py[1:]))
                for t in pyt.split("."))
    ok_abi = any(a in ("none", "abi3", f"cp{py}") for a in abi.split("."))
    ok_plat = any(p == "any" or (p.endswith("x86_64") and p.startswith("manylinux")) for p in plat.split("."))
    if not (ok_py and ok_abi and ok_plat):
        bad.append(f)
dups = {k: v for k, v in seen.items() if len(v) > 1}
for f in bad:
    print(f"prepare_gpu_wheels: {f}: tags do not fit cp{py} manylinux x86_64", file=sys.stderr)
for k, v in dups.items():
    print(f"prepare_gpu_wheels: {k}: several versions {v}; keep one", file=sys.stderr)
sys.exit(1 if bad or dups else 0)
PY
ls -la "$WHEEL_DIR"
du -sh "$WHEEL_DIR"
