"""Shared benchmark conventions (every bench/suites/bench_*.py follows them).

Modes (env ``LRM_FAST_BENCH``):
  * ``smoke`` (default; what CI runs via the README test command): tiny sizes, each case runs once
    (pytest-benchmark disabled), so the suites cannot rot. ``--benchmark-enable`` still times them
    (``python -m bench.report --smoke`` does, to check the report end to end in seconds).
  * ``full``: the real CPU sizes, timed by pytest-benchmark (``pytest bench -p no:cacheprovider``
    with ``LRM_FAST_BENCH=full``; ``python -m bench.report`` does this and writes the ratio table).
  * on a CUDA machine the ``gpu`` sizes are used in full mode.

Each benchmark records, via ``record(benchmark, ...)``:
  ``benchmark.group = "<stage>:<size>"`` and ``extra_info`` = stage, size, backend
  ("reference" or the fast path's name, with ``fast=True``), device, dtype, mode, peak_mem_mb.
The report (bench/report.py) pairs each fast case with the reference case of the same group
(same stage, size, device and dtype) and prints time and memory ratios from that one run.

Optional extra_info keys (any ``**extra`` passed to ``record``) that the report and the roofline
(bench/lib/roofline.py) understand:
  ``flops``, ``bytes``: work of one call (FLOPs counting 2 per multiply-add; bytes moved), for the
      achieved fraction of the GPU's peak. Or, instead, ``preset`` + ``roofline`` (a stage name of
      ``bench.lib.roofline.STAGES``) + the stage's size keys (``batch``, ``resolution``, ``samples``,
      ``grid``, ``points``, ``views``): the roofline then computes them from the config.
  ``note``: free text shown in the table (e.g. "skips empty space").

On CUDA the ``benchmark`` fixture's clock synchronizes the device (``cuda_timer``), so suites
just call ``benchmark(fn)``.

The run's machine info in the JSON is extended with torch / CUDA / triton / xformers versions,
the GPU name and driver, and the path each op takes (``lrm_fast.ops.describe_all``).
"""
from __future__ import annotations

import os
import time

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
    """Tag one benchmark case so the report can pair it (see module docstring for the keys)."""
    benchmark.group = f"{stage}:{size}"
    benchmark.extra_info.update(stage=stage, size=size, backend=backend, fast=bool(fast), device=DEVICE,
                                dtype=str(dtype).replace("torch.", ""), mode=MODE, **extra)
    if peak_mem_mb is not None:
        benchmark.extra_info["peak_mem_mb"] = round(float(peak_mem_mb), 2)


def cuda_timer() -> float:
    """pytest-benchmark's clock on CUDA: wait for queued kernels, then read the clock. Kernels are
    asynchronous; without this a case would time only its launches (fake speedups)."""
    torch.cuda.synchronize()
    return time.perf_counter()


@pytest.fixture
def benchmark(benchmark):
    """pytest-benchmark's fixture, with the synchronizing clock on CUDA (every suite gets it
    without doing anything; ``benchmark(fn)`` and ``benchmark.pedantic`` both use it)."""
    if DEVICE == "cuda" and hasattr(benchmark, "_timer"):
        benchmark._timer = cuda_timer
    return benchmark


def pytest_collect_file(file_path, parent):
    """Collect ``bench/suites/bench_*.py`` (pytest.ini's default pattern only knows ``test_*.py``), so the
    README's plain ``python -m pytest`` runs every suite in smoke mode. Files named on the command
    line are collected by pytest itself; returning them here too would run them twice."""
    if file_path.suffix != ".py" or not file_path.name.startswith("bench_"):
        return None
    if parent.session.isinitpath(file_path):
        return None
    import fnmatch

    if any(fnmatch.fnmatch(file_path.name, p) for p in parent.config.getini("python_files")):
        return None  # pytest.ini already collects bench_*.py itself
    return pytest.Module.from_parent(parent, path=file_path)


def pytest_configure(config):
    if MODE == "smoke" and hasattr(config.option, "benchmark_disable"):
        if not getattr(config.option, "benchmark_enable", False):
            config.option.benchmark_disable = True


def machine_details() -> dict:
    """Versions and devices that the numbers depend on (also used by bench/report.py)."""
    import importlib
    import platform

    def version(mod):
        try:
            return getattr(importlib.import_module(mod), "__version__", "installed")
        except Exception as e:  # noqa: BLE001 - any import failure is reported as text
            return f"not available ({type(e).__name__})"

    info = {"python": platform.python_version(), "torch": torch.__version__,
            "torch_cuda": torch.version.cuda, "triton": version("triton"), "xformers": version("xformers"),
            "timm": version("timm"), "lrm_fast_mode": MODE, "device": DEVICE,
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    try:
        from lrm_fast import _C  # noqa: F401
        info["lrm_fast_C"] = "loaded"
    except Exception as e:  # noqa: BLE001
        info["lrm_fast_C"] = f"not built ({type(e).__name__})"
    if DEVICE == "cuda":
        props = torch.cuda.get_device_properties(0)
        info["gpu"] = props.name
        info["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
        info["gpu_capability"] = f"{props.major}.{props.minor}"
        try:
            import subprocess

            info["driver"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=20).stdout.strip().splitlines()[0]
        except Exception:  # noqa: BLE001 - nvidia-smi missing or slow: not fatal
            info["driver"] = "unknown"
    try:
        from lrm_fast.ops import describe_all

        paths = {"cpu float32": describe_all("cpu")}
        if DEVICE == "cuda":
            paths["cuda float32"] = describe_all("cuda", torch.float32)
            paths["cuda bfloat16"] = describe_all("cuda", torch.bfloat16)
        info["kernel_paths"] = paths
    except Exception as e:  # noqa: BLE001
        info["kernel_paths"] = f"unavailable: {type(e).__name__}: {e}"
    return info


def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info["lrm_fast"] = machine_details()


@pytest.fixture(autouse=True)
def _time_budget():
    """Skip the remaining cases once ``LRM_FAST_BENCH_DEADLINE`` (epoch seconds) has passed, so a
    time-limited run (``bench.report --time-budget``, gpu_suite.sh) ends normally and still writes
    its JSON: pytest-benchmark writes nothing when interrupted in the middle of a case."""
    deadline = os.environ.get("LRM_FAST_BENCH_DEADLINE")
    if deadline and time.time() > float(deadline):
        pytest.skip("benchmark time budget used up (LRM_FAST_BENCH_DEADLINE)")


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session, exitstatus):
    """Drop benchmarks that recorded no round before pytest-benchmark saves its JSON. A run stopped
    inside a case (SIGINT from a time limit) leaves that case with no data, and pytest-benchmark
    then fails on ``min([])`` and writes nothing, losing every finished case too (the first GPU
    run lost its image_to_triplane, mesh and train results so)."""
    bs = getattr(session.config, "_benchmarksession", None)
    if bs is not None and getattr(bs, "benchmarks", None):
        bs.benchmarks[:] = [b for b in bs.benchmarks if _has_rounds(b)]


def _has_rounds(bench) -> bool:
    try:
        return len(bench.stats.data) > 0
    except AttributeError:
        return True


@pytest.fixture
def device():
    return DEVICE
