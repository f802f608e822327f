"""Shared benchmark conventions (every bench/bench_*.py follows them).

Modes (env ``LRM_FAST_BENCH``):
  * ``smoke`` (default; what CI runs via the README test command): tiny sizes, each case runs once
    (pytest-benchmark disabled), so the suites cannot rot.
  * ``full``: the real CPU sizes, timed by pytest-benchmark (``pytest bench -p no:cacheprovider``
    with ``LRM_FAST_BENCH=full``; see bench/report.py).
  * on a CUDA machine the ``gpu`` sizes are used in full mode.

Each benchmark records, via ``record(benchmark, ...)``:
  ``benchmark.group = "<stage>:<size>"`` and ``extra_info`` = stage, size, backend
  ("reference" or the fast path's name, with ``fast=True``), device, dtype, peak_mem_mb.
The report (bench/report.py) pairs reference and fast cases of the same group into ratios.
"""
from __future__ import annotations

import os

import pytest
import torch

MODE = os.environ.get("LRM_FAST_BENCH", "smoke")
if MODE not in ("smoke", "full"):
    raise ValueError(f"LRM_FAST_BENCH must be 'smoke' or 'full', got {MODE!r}")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def sizes(smoke, full, gpu=None):
    """The parameter list for the current mode and device."""
    if MODE == "smoke":
        return smoke
    if DEVICE == "cuda" and gpu is not None:
        return gpu
    return full


def record(benchmark, stage: str, size: str, backend: str, fast: bool, peak_mem_mb: float | None = None,
           dtype: str = "float32", **extra):
    benchmark.group = f"{stage}:{size}"
    benchmark.extra_info.update(stage=stage, size=size, backend=backend, fast=fast, device=DEVICE,
                                dtype=dtype, mode=MODE, **extra)
    if peak_mem_mb is not None:
        benchmark.extra_info["peak_mem_mb"] = round(float(peak_mem_mb), 2)


def pytest_configure(config):
    if MODE == "smoke" and hasattr(config.option, "benchmark_disable"):
        config.option.benchmark_disable = True


@pytest.fixture
def device():
    return DEVICE
