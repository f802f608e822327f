#!/usr/bin/env bash
# Download the wheels that bench/gpu_suite.sh installs on the GPU machine (which has no network).
#
#   bash bench/prepare_gpu_wheels.sh            # -> .whl/ (git-ignored; pass it to the device run as carry)
#
# The GPU machine has python 3.12, torch 2.11, triton 3.6, timm, pytest-benchmark, pybind11 and ninja,
# but not xformers or lpips. Wheels are fetched for *its* interpreter and platform, without
# dependencies (torch must not be replaced). Override with env vars:
#   WHEEL_DIR (default .whl), PY_VERSION (3.12), PLATFORM (manylinux_2_28_x86_64),
#   PACKAGES (default "xformers lpips"; pin e.g. "xformers==0.0.35 lpips==0.1.4").
# An xformers wheel built for another torch may not load its CUDA kernels there; that is fine:
# lrm_fast probes what actually dispatches and falls back to SDPA (see `lrm-fast info`).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WHEEL_DIR="${WHEEL_DIR:-$ROOT/.whl}"
PY_VERSION="${PY_VERSION:-3.12}"
PLATFORM="${PLATFORM:-manylinux_2_28_x86_64}"
PACKAGES="${PACKAGES:-xformers lpips}"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
[ -x "$PYTHON" ] || PYTHON=python3
mkdir -p "$WHEEL_DIR"
for pkg in $PACKAGES; do
  echo ">>> $pkg -> $WHEEL_DIR"
  # pure-python wheels (lpips: py3-none-any) match any platform tag, so one command serves both
  "$PYTHON" -m pip download --no-deps --only-binary=:all: --python-version "$PY_VERSION" \
    --platform "$PLATFORM" --platform manylinux2014_x86_64 --platform any -d "$WHEEL_DIR" "$pkg"
done
ls -la "$WHEEL_DIR"
du -sh "$WHEEL_DIR"
