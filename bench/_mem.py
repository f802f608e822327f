"""Honest peak-memory measurement for one benchmark case.

* CUDA: ``torch.cuda.max_memory_allocated`` around the call, minus what was allocated before.
* CPU: torch has no CPU peak counter, so the case runs in a forked child: the child resets the
  kernel's RSS high-water mark (``/proc/self/clear_refs`` = 5), runs ``fn`` once and reports
  ``VmHWM - VmRSS(before)``. That is the real extra memory the case needed, whatever allocated it.
  (The child runs single-threaded, see below; memory, not time, is measured there.)

Usage in a benchmark::

    from bench._mem import peak_memory_mb
    benchmark.extra_info["peak_mem_mb"] = peak_memory_mb(lambda: op(*args), device)
"""
from __future__ import annotations

import os

import torch


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return -1


def peak_memory_mb(fn, device: str | torch.device = "cpu") -> float:
    """Peak extra memory (MiB) of running ``fn()`` once on ``device``; -1.0 where not measurable."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    if not os.path.exists("/proc/self/clear_refs") or not hasattr(os, "fork"):
        return -1.0
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(r)
        try:
            # libgomp's thread pool does not survive fork: an OpenMP parallel region in the child
            # (any large torch op, or a C++ kernel using at::parallel_for) hangs once the parent
            # has used the pool. One thread takes the serial path; memory is what we measure.
            torch.set_num_threads(1)
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            before = _status_kb("VmRSS")
            fn()
            peak = _status_kb("VmHWM")
            os.write(w, str((peak - before) / 1024).encode())
        except BaseException:  # noqa: BLE001 - report failure as "not measurable"
            os.write(w, b"-1")
        finally:
            os._exit(0)
    os.close(w)
    data = b""
    while chunk := os.read(r, 64):
        data += chunk
    os.close(r)
    os.waitpid(pid, 0)
    return float(data or b"-1")
