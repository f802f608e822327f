"""The memory budget: how many bytes a render, a field query or a mesh may hold at once.

Users give ``max_memory`` (API) / ``--max-memory`` (CLI) as bytes or a size string (``"4GB"``,
``"512MiB"``, ``"1.5g"``); the default is what the device has free now (``available``), less a margin
for what the caller holds already. Every chunked loop in the package takes its chunk size from one
``MemoryBudget`` (``count``: how many items of a given size fit), decided once per call before its
loop, not from fixed constants: a small job runs as one pass (one set of launches on a GPU), a big
one in as few chunks as the budget allows.

The budget bounds the working memory the chunked stage allocates; what lives outside it (the model's
weights, the planes, the output image or mesh) is the caller's. It is an estimate from bytes per item,
so callers count generously (every intermediate the item's pass allocates, forward and, when training,
backward).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

import torch

# share of the free memory a default budget takes: the rest is headroom for the allocator's
# fragmentation and for what other code allocates meanwhile
DEFAULT_SHARE = 0.75

_UNITS = {"": 1, "b": 1, "k": 1e3, "kb": 1e3, "m": 1e6, "mb": 1e6, "g": 1e9, "gb": 1e9, "t": 1e12, "tb": 1e12,
          "kib": 2 ** 10, "mib": 2 ** 20, "gib": 2 ** 30, "tib": 2 ** 40}


def parse_memory(value) -> int | None:
    """``value`` as bytes: an int/float (bytes), a size string (``"4GB"``, ``"512 MiB"``, ``"1.5g"``;
    k/m/g/t are powers of 1000, KiB/MiB/GiB powers of 1024), or None / ``"auto"`` (None: the default)."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "auto")):
        return None
    if isinstance(value, bool):
        raise ValueError(f"max_memory must be bytes or a size like '4GB', got {value!r}")
    if isinstance(value, (int, float)):
        n = value
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(value))
        if m is None or m.group(2).lower() not in _UNITS:
            raise ValueError(f"max_memory must be bytes or a size like '4GB', '512MiB', got {value!r}")
        n = float(m.group(1)) * _UNITS[m.group(2).lower()]
    if not n > 0:
        raise ValueError(f"max_memory must be positive, got {value!r}")
    return int(n)


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _cgroup_free() -> int | None:
    """What a cgroup (v2 or v1) memory limit leaves, where one is set (containers)."""
    for limit, usage in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                         ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            with open(limit) as f:
                lim = f.read().strip()
            with open(usage) as f:
                used = int(f.read().strip())
        except (OSError, ValueError):
            continue
        if lim.isdigit() and int(lim) < 1 << 60:
            return max(0, int(lim) - used)
    return None


@torch.compiler.assume_constant_result
def available(device: str | torch.device = "cpu") -> int:
    """Bytes free on ``device`` now: a CUDA device's free memory (``torch.cuda.mem_get_info``, plus
    what PyTorch's caching allocator holds unused); on the CPU the kernel's MemAvailable, capped by a
    cgroup limit where one is set. A constant to ``torch.compile`` (read once, when it traces: a
    compiled render's chunking is decided at compile time, not by a file read inside the graph)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        free, _ = torch.cuda.mem_get_info(dev)
        return int(free + torch.cuda.memory_reserved(dev) - torch.cuda.memory_allocated(dev))
    if dev.type != "cpu":
        return 8 << 30  # no way to ask (mps, meta): a laptop-sized guess
    free = [x for x in (_meminfo_available(), _cgroup_free()) if x is not None]
    if not free:
        try:
            free = [os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")]
        except (ValueError, OSError, AttributeError):
            free = [8 << 30]
    return int(min(free))


@dataclass(frozen=True)
class MemoryBudget:
    """``bytes``: the working memory a chunked stage may hold at once; ``source``: where that came
    from (``"max_memory"`` or ``"free on <device>"``), for messages and ``lrm-fast info``."""

    bytes: int
    source: str = "max_memory"

    @classmethod
    def resolve(cls, max_memory=None, device: str | torch.device = "cpu") -> "MemoryBudget":
        """``max_memory`` (bytes, a size string, a ``MemoryBudget``, or None / ``"auto"``: ``DEFAULT_SHARE``
        of what ``device`` has free now)."""
        if isinstance(max_memory, MemoryBudget):
            return max_memory
        n = parse_memory(max_memory)
        if n is not None:
            return cls(n, "max_memory")
        return cls(max(1 << 26, int(available(device) * DEFAULT_SHARE)), f"free on {torch.device(device).type}")

    def count(self, bytes_each: float, total: int | None = None, share: float = 1.0, minimum: int = 1) -> int:
        """How many items of ``bytes_each`` bytes fit in ``share`` of the budget (at least ``minimum``;
        at most ``total`` where given, so a job that fits is one pass)."""
        n = max(int(minimum), int(self.bytes * share // max(float(bytes_each), 1.0)))
        return n if total is None else max(1, min(n, int(total)))

    def chunks(self, bytes_each: float, total: int, share: float = 1.0, minimum: int = 1) -> int:
        """The chunk length for ``total`` items, balanced: the fewest chunks the budget allows, of equal
        length (the last one shorter by less than the number of chunks)."""
        if total <= 0:
            return 1
        n = self.count(bytes_each, total, share, minimum)
        k = -(-total // n)  # chunks needed
        return -(-total // k)

    def __str__(self) -> str:
        return f"{self.bytes / 2 ** 30:.2f} GiB ({self.source})"


__all__ = ["DEFAULT_SHARE", "MemoryBudget", "available", "parse_memory"]
