"""Training step (forward + backward + AdamW update): time and peak memory, reference vs fast backend.

Sizes: smoke = ``tiny`` preset, batch 2, 1 side view, 8x8 patches; full (CPU) = the ``demo`` preset as it
trains (batch 4, 2 side views, 24x24 patches, 16 samples/ray) and as ``configs/demo-rich.yaml`` trains it
(batch 8, 2 side views, 16x16 patches) on 1 and on 2 torch threads (``-t1`` / ``-t2``: the thread lever on
this 2-core CPU); gpu = ``demo`` at batch 16 with 32x32 patches and ``small`` at batch 4 with 64x64
patches and 48 samples/ray.
The same global batch (data fixed per step) is used for both backends, so only the kernels differ.
``bench.report`` lists the steps per minute of every case under its table (``bench.lib.format.train_rates``):
reference on 1 thread is where the demo recipe started, fast on 2 threads is where it trains now.
"""
from __future__ import annotations

import pytest
import torch

from bench.lib.mem import peak_memory_mb
from bench.suites.conftest import DEVICE, record, sizes

CASES = sizes(
    smoke=[("tiny-b2", dict(model="tiny", batch_size=2, side_views=1, render_size=16, patch=8,
                            train_samples_per_ray=8))],
    full=[("demo-b4", dict(model="demo", batch_size=4, side_views=2, render_size=64, patch=24,
                           train_samples_per_ray=16))]
    + [(f"demo-rich-b8-t{n}", dict(model="demo", batch_size=8, side_views=2, render_size=64, patch=16,
                                   train_samples_per_ray=16, threads=n)) for n in (1, 2)],
    gpu=[("demo-b16", dict(model="demo", batch_size=16, side_views=3, render_size=64, patch=32,
                           train_samples_per_ray=32)),
         ("small-b4", dict(model="small", batch_size=4, side_views=3, render_size=128, patch=64,
                           train_samples_per_ray=48, grad_checkpointing=True))],
)


_CHILD = r"""
import json, sys
from lrm_fast.train.config import TrainConfig
from lrm_fast.train.trainer import Trainer
def kb(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
tr = Trainer(TrainConfig.from_dict(json.loads(sys.argv[1])))
batch = next(tr.batches())
open("/proc/self/clear_refs", "w").write("5")
before = kb("VmRSS")
tr.train_step(batch)
print((kb("VmHWM") - before) / 1024)
"""


def _cpu_peak_mb(cfg) -> float:
    """Extra resident memory (MiB) of one training step, in a fresh process; -1 if not measurable."""
    import json
    import os
    import subprocess
    import sys

    if not os.path.exists("/proc/self/clear_refs"):
        return -1.0
    out = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(cfg.to_dict())], capture_output=True,
                         text=True, timeout=600)
    try:
        return float(out.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return -1.0


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    from lrm_fast.data.synthetic import make_dataset

    root = str(tmp_path_factory.mktemp("bench_train_data"))
    res = max(c[1]["render_size"] for c in CASES)
    make_dataset(root, 8, n_views=4, resolution=res, seed=0, workers=1)
    return root


@pytest.mark.parametrize("backend", ["reference", "fast"])
@pytest.mark.parametrize("name,case", CASES, ids=[c[0] for c in CASES])
def test_train_step(benchmark, data_root, tmp_path, name, case, backend):
    from lrm_fast.train.config import TrainConfig
    from lrm_fast.train.trainer import Trainer

    cfg = TrainConfig.from_dict(dict(case, data_root=data_root, out_dir=str(tmp_path), backend=backend,
                                     steps=1000, warmup=1, progress=False, jitter=True))
    threads_before = torch.get_num_threads()
    tr = Trainer(cfg)  # applies cfg.threads to the process; put back below so later cases are unaffected
    try:
        _time_step(benchmark, tr, cfg, name, backend)
    finally:
        torch.set_num_threads(threads_before)


def _time_step(benchmark, tr, cfg, name, backend):
    batch = next(tr.batches())

    def step():
        tr.train_step(batch)
        if DEVICE == "cuda":
            torch.cuda.synchronize()

    # CPU: bench.lib.mem's forked child hangs here (a futex held at fork time), so the step's extra
    # memory is measured in a fresh interpreter instead: VmHWM after one step minus VmRSS before it
    mem = _cpu_peak_mb(cfg) if DEVICE == "cpu" else None
    step()  # warm-up (allocator, lazy kernel loads)
    benchmark.pedantic(step, rounds=3 if DEVICE == "cpu" else 10, iterations=1)
    if DEVICE == "cuda":
        mem = peak_memory_mb(step, DEVICE)
    dtype = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}[tr.precision]
    record(benchmark, "train_step", name, backend, fast=backend != "reference",
           peak_mem_mb=mem, dtype=dtype,
           items_per_step=cfg.batch_size, rays_per_step=cfg.batch_size * (1 + cfg.side_views) * cfg.patch ** 2,
           threads=torch.get_num_threads())
