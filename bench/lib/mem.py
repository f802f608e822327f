"""Honest peak-memory measurement for one benchmark case.

* CUDA: ``torch.cuda.max_memory_allocated`` around the call, minus what was allocated before.
* CPU: torch has no CPU peak counter, so the case runs in a forked child: the child resets the
  kernel's RSS high-water mark (``/proc/self/clear_refs`` = 5), runs ``fn`` once and reports
  ``VmHWM - VmRSS(before)``. That is the real extra memory the case needed, whatever allocated it.
  (The child runs PyTorch single-threaded: memory, not time, is measured there. It *must* call
  ``torch.set_num_threads(1)`` first: once the parent has used its OpenMP pool, a forked child
  that enters a parallel region waits forever for pool threads that fork did not copy. A child
  that still hangs is killed after ``LRM_FAST_MEM_TIMEOUT`` seconds (default 900) and reported -1.)

Usage in a benchmark::

    from bench.lib.mem import peak_memory_mb
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


def _release_free_heap() -> None:
    """Give the heap's free pages back to the OS (glibc ``malloc_trim``) before the baseline is read.

    Without it, memory that earlier cases freed (still resident, so inside ``VmRSS(before)``) is
    reused by this case without raising the high-water mark, and a case measured after a bigger
    one looks smaller than it is: order-dependent numbers, biased towards whichever case of a pair
    runs second."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: numbers may be low after big cases
        pass


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
            torch.set_num_threads(1)  # see the module docstring: OpenMP pools do not survive fork
            _release_free_heap()
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
    import select
    import signal
    import time

    deadline = time.monotonic() + float(os.environ.get("LRM_FAST_MEM_TIMEOUT", "900"))
    data = b""
    while True:
        ready, _, _ = select.select([r], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:  # hung child: give up on this measurement, never on the benchmark run
            os.kill(pid, signal.SIGKILL)
            data = b"-1"
            break
        chunk = os.read(r, 64)
        if not chunk:
            break
        data += chunk
    os.close(r)
    os.waitpid(pid, 0)
    return float(data or b"-1")


def saved_tensors_mb(fn) -> float:
    """MiB of tensors autograd keeps for the backward during ``fn()`` (exact and allocator-free,
    unlike RSS: glibc reuses freed heap, which hides small peaks from peak_memory_mb on CPU)."""
    total = 0
    seen = set()

    def pack(t):
        nonlocal total
        key = (t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
        if key not in seen:
            seen.add(key)
            total += t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return total / 2**20


class PeakMemory:
    """Peak extra memory (MiB) of the code inside ``with PeakMemory(device) as m: ...`` -> ``m.mb``,
    measured in this process (no fork, so it cannot hang like ``peak_memory_mb``'s child on CPU).

    CUDA: ``max_memory_allocated`` minus what was allocated before (tensors only). CPU: the kernel's
    RSS high-water mark, reset first (``/proc/self/clear_refs`` = 5), minus the RSS before: the
    resident memory the code added, whatever allocated it; -1.0 where ``/proc`` cannot say."""

    def __init__(self, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.mb = -1.0

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self._base = -1
            if os.path.exists("/proc/self/clear_refs"):
                _release_free_heap()
                try:
                    with open("/proc/self/clear_refs", "w") as f:
                        f.write("5")
                    self._base = _status_kb("VmRSS")
                except OSError:  # not permitted here: no CPU number
                    pass
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is not None:
            return
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.mb = (torch.cuda.max_memory_allocated(self.device) - self._base) / 2**20
        elif self._base >= 0:
            self.mb = max(0.0, (_status_kb("VmHWM") - self._base) / 1024)
