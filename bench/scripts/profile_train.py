"""Where a training step's time goes: data loading vs the step itself, per backend, plus the top
kernels / ops of one profiled step.

    python -m bench.scripts.profile_train configs/demo-gpu.yaml --data DIR [--steps 6] [--backend auto,reference]

The first GPU run trained the demo recipe at ~1.4 s per step on an H200 (15 items/s), far below
what the model's size predicts; this tells whether the loader, the fast field's backward (plane
atomics) or host syncs are the cause. Data: ``lrm-fast make-data DIR --recipe demo --objects 200``.
Prints a markdown table; ``--out FILE`` also writes it.
"""
from __future__ import annotations

import argparse
import time

import torch

from lrm_fast.train.config import TrainConfig
from lrm_fast.train.trainer import Trainer


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def profile_backend(cfg_path: str, data: str, backend: str, steps: int, overrides: dict) -> tuple[list, str]:
    cfg = TrainConfig.load(cfg_path, dict(overrides, data_root=data, backend=backend, out_dir=f"/tmp/prof-{backend}",
                                          progress=False, max_minutes=None))
    tr = Trainer(cfg)
    dev = tr.device
    it = tr.batches()
    rows = []
    for i in range(steps):
        t0 = time.perf_counter()
        batch = next(it)
        t1 = time.perf_counter()
        tr.train_step(batch)
        _sync(dev)
        t2 = time.perf_counter()
        rows.append((i, t1 - t0, t2 - t1))
    table = ""
    acts = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    batch = next(it)
    with torch.profiler.profile(activities=acts) as prof:
        tr.train_step(batch)
        _sync(dev)
    key = "cuda_time_total" if dev.type == "cuda" else "cpu_time_total"
    try:
        table = prof.key_averages().table(sort_by=key, row_limit=18, max_name_column_width=60)
    except Exception as e:  # noqa: BLE001 - a profiler without CUDA events still gives the timings
        table = f"(profiler table unavailable: {type(e).__name__}: {e})"
    return rows, table


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("config")
    p.add_argument("--data", required=True)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--backend", default="auto,reference")
    p.add_argument("--set", action="append", default=[], help="key=value config override (yaml value)")
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    import yaml

    overrides = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in a.set)}
    lines = ["# Training step profile", "", f"config `{a.config}`, overrides {overrides}", ""]
    for backend in a.backend.split(","):
        rows, table = profile_backend(a.config, a.data, backend, a.steps, overrides)
        steady = rows[2:] or rows
        lines += [f"## backend={backend}", "", "| step | data s | step s |", "|---:|---:|---:|"]
        lines += [f"| {i} | {d:.3f} | {s:.3f} |" for i, d, s in rows]
        lines += ["", f"steady mean: data {sum(r[1] for r in steady) / len(steady):.3f} s, "
                      f"step {sum(r[2] for r in steady) / len(steady):.3f} s", "", "```", table, "```", ""]
        print("\n".join(lines[-(len(rows) + 8):]), flush=True)
    if a.out:
        with open(a.out, "w") as f:
            f.write("\n".join(lines))


if __name__ == "__main__":
    main()
