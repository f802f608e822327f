"""bench.report's data: the cases of a pytest-benchmark JSON (``bench/suites/conftest.py``'s
``record()``), their fast/reference pairs, and the result files (``<date>-<device>.json``,
written atomically). Imports nothing heavy (no torch), so ``--from-json`` is instant."""
from __future__ import annotations

import datetime as _dt
import json
import os
import re
import tempfile
from dataclasses import dataclass, field

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RESULTS_DIR = os.path.join(ROOT, "bench", "results")


@dataclass
class Case:
    name: str
    stage: str
    size: str
    backend: str
    fast: bool
    device: str
    dtype: str
    time_s: float | None
    mem_mb: float | None
    rounds: int | None = None
    note: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def key(self) -> tuple:
        return (self.stage, self.size, self.device, self.dtype)


@dataclass
class Row:
    stage: str
    size: str
    device: str
    dtype: str
    backend: str
    ref: Case | None
    fast: Case

    @property
    def same_path(self) -> bool:
        return self.fast.backend == "reference"

    @property
    def speedup(self) -> float | None:
        if self.ref is None or not self.ref.time_s or not self.fast.time_s:
            return None
        return self.ref.time_s / self.fast.time_s

    @property
    def mem_ratio(self) -> float | None:
        r, f = (self.ref.mem_mb if self.ref else None), self.fast.mem_mb
        if r is None or f is None or r <= 0 or f <= 0:
            return None
        return r / f


def load(path: str) -> dict:
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"benchmark result file not found: {path}") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not a pytest-benchmark JSON file ({e})") from None
    if not isinstance(data, dict) or "benchmarks" not in data:
        raise ValueError(f"{path}: not a pytest-benchmark JSON file (no 'benchmarks' key)")
    return data


def cases(result: dict, stat: str = "min") -> list[Case]:
    """Benchmarks that followed bench/suites/conftest.py ``record()``; others are ignored."""
    out = []
    for b in result.get("benchmarks", []):
        ex = b.get("extra_info") or {}
        if "stage" not in ex or "backend" not in ex:
            continue
        stats = b.get("stats") or {}
        t = stats.get(stat)
        mem = ex.get("peak_mem_mb")
        out.append(Case(name=b.get("name", "?"), stage=str(ex["stage"]), size=str(ex.get("size", "")),
                        backend=str(ex["backend"]), fast=bool(ex.get("fast", ex["backend"] != "reference")),
                        device=str(ex.get("device", "?")), dtype=str(ex.get("dtype", "float32")),
                        time_s=float(t) if t is not None else None,
                        mem_mb=float(mem) if mem is not None and float(mem) >= 0 else None,
                        rounds=stats.get("rounds"), note=str(ex.get("note", "")), extra=ex))
    return out


def pair(cs: list[Case]) -> list[Row]:
    """Each fast case with the reference case of the same stage, size, device and dtype."""
    refs: dict[tuple, Case] = {}
    for c in cs:
        if not c.fast:
            refs.setdefault(c.key, c)
    rows = [Row(c.stage, c.size, c.device, c.dtype, c.backend, refs.get(c.key), c) for c in cs if c.fast]
    # reference cases with no fast counterpart still show up (speedup "-")
    fast_keys = {c.key for c in cs if c.fast}
    rows += [Row(c.stage, c.size, c.device, c.dtype, "-", c, c) for k, c in refs.items() if k not in fast_keys]
    return sorted(rows, key=lambda r: (r.stage, r.device, r.dtype, _size_order(r.size), r.backend))


def _size_order(size: str):
    nums = [int(x) for x in re.findall(r"\d+", size)]
    return (nums[0] if nums else 0, size)


# ---- files -----------------------------------------------------------------------------------
def write_atomic(path: str, text: str) -> None:
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; results are for everyone to read
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def strip_raw_timings(result: dict) -> dict:
    """Drop each case's per-round timings (``stats.data``: thousands of numbers for fast GPU
    cases) from a result that is kept in the repository; the statistics stay."""
    out = json.loads(json.dumps(result))
    for b in out.get("benchmarks", []):
        (b.get("stats") or {}).pop("data", None)
    return out


def result_stem(result: dict) -> str:
    """``<date>-<device>``: 2026-11-26-cpu, 2026-11-26-h100."""
    date = (result.get("datetime") or _dt.datetime.now(_dt.timezone.utc).isoformat())[:10]
    lf = (result.get("machine_info") or {}).get("lrm_fast") or {}
    dev = "cpu"
    if lf.get("device") == "cuda":
        m = re.search(r"(H100|H200|A100|L40S|L4|A10G|RTX ?\d+)", lf.get("gpu", ""), re.I)
        dev = (m.group(1) if m else "gpu").replace(" ", "").lower()
    return f"{date}-{dev}"
