"""Count what a piece of code dispatches: every op (an op is at least one kernel launch on a GPU) and
every host sync (an op whose result the host must wait for: a scalar read, a data-dependent shape).
The measuring tool of the GPU issue's launch and sync budget (fast by construction, proven on CPU).

``with LaunchCounter() as c: render(...)`` then ``c.ops`` (total ops), ``c.syncs`` (total syncs),
``c.by_op`` (name -> count) and ``c.sync_ops``; a scalar read (``.item()``, ``int(t)``) is a sync and
no launch. It is a ``TorchDispatchMode``, so it sees the ops of the Python path that runs, on any
device: on CPU it counts what the same code dispatches on a GPU, as long as the code takes the GPU's
path (where the code branches on the device, select that path on CPU).
Views and metadata-only ops (``aten.view``, ``aten.t``, ...) are not kernels and are not counted.

Two kinds of host sync never reach the dispatcher as an op of their own, and are counted apart: a
``Tensor.tolist()`` / ``.numpy()`` read (seen as a torch function: ``HOST_READS``), and the syncs
inside our custom ops' CUDA kernels, which read the output sizes their caller did not give
(``KERNEL_SYNCS``: counted on any device, as the CUDA path would sync)."""
from __future__ import annotations

from collections import Counter

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

# ops whose output the host must read before it can go on (a sync on a GPU)
SYNC_OPS = {
    "aten::_local_scalar_dense",   # .item(), int(t), bool(t), float(t) (.tolist(): HOST_READS; .cpu(): a copy, unseen)
    "aten::nonzero", "aten::nonzero_static", "aten::masked_select", "aten::unique_dim", "aten::_unique2",
    "aten::unique_consecutive", "aten::unique", "aten::argwhere",
    "aten::_assert_async", "aten::equal", "aten::is_nonzero", "aten::repeat_interleave",
}
# a scalar read: a sync (a copy to the host), counted as one and not as a launch
HOST_SCALAR = {"aten::_local_scalar_dense"}
# reads of a tensor's data by the host that bypass the dispatcher
HOST_READS = {"tolist", "numpy"}
# custom ops whose CUDA kernels sync inside: their size arguments, each one not given (-1) a size the
# kernel reads (csrc/occupancy_ops.h packed_total)
KERNEL_SYNCS = {"lrm_fast::occupancy_pack": ("n",), "lrm_fast::occupancy_gather": ("n", "n_need")}
# metadata only: no kernel
NO_KERNEL = {
    "aten::view", "aten::_unsafe_view", "aten::reshape", "aten::t", "aten::transpose", "aten::permute",
    "aten::unsqueeze", "aten::squeeze", "aten::expand", "aten::slice", "aten::select", "aten::alias",
    "aten::as_strided", "aten::detach", "aten::split", "aten::split_with_sizes", "aten::unbind",
    "aten::narrow", "aten::chunk", "aten::unflatten", "aten::flatten", "aten::lift_fresh", "aten::empty",
    "aten::empty_like", "aten::empty_strided", "aten::movedim", "aten::view_as", "aten::expand_as",
    "aten::diagonal", "aten::_reshape_alias", "aten::sym_size", "aten::sym_numel", "aten::sym_stride",
    "aten::dim", "aten::size", "aten::stride", "aten::numel", "aten::is_same_size", "aten::result_type",
}


def _is_sync(name: str, args) -> bool:
    if name in SYNC_OPS:
        return True
    if name in ("aten::index", "aten::index_put", "aten::index_put_", "aten::_index_put_impl_"):
        idx = args[1] if len(args) > 1 else ()
        return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in (idx or ()))
    return False


def _kernel_syncs(func, args, kwargs) -> int:
    names = [a.name for a in func._schema.arguments]
    given = dict(zip(names, args), **kwargs)
    return sum(given.get(size, -1) < 0 for size in KERNEL_SYNCS[func._schema.name])


class _HostReads(TorchFunctionMode):
    def __init__(self, sync_ops: Counter):
        super().__init__()
        self.sync_ops = sync_ops

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in HOST_READS:
            self.sync_ops[f"Tensor.{name}"] += 1
        return func(*args, **(kwargs or {}))


class LaunchCounter(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.by_op: Counter = Counter()
        self.sync_ops: Counter = Counter()
        self._reads = _HostReads(self.sync_ops)

    def __enter__(self):
        self._reads.__enter__()
        return super().__enter__()

    def __exit__(self, *exc):
        try:
            return super().__exit__(*exc)
        finally:
            self._reads.__exit__(*exc)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func._schema.name
        if name in HOST_SCALAR:  # a sync, not a launch: the same launches read or not
            self.sync_ops[name] += 1
        elif name not in NO_KERNEL:
            self.by_op[name] += 1
            if _is_sync(name, args):
                self.sync_ops[name] += 1
            elif name in KERNEL_SYNCS and (n := _kernel_syncs(func, args, kwargs or {})):
                self.sync_ops[name] += n
        return func(*args, **(kwargs or {}))

    @property
    def ops(self) -> int:
        return sum(self.by_op.values())

    @property
    def syncs(self) -> int:
        return sum(self.sync_ops.values())


def count_render(model, batch: int, res: int, views: int = 1, skipping: bool = False,
                 max_memory=1 << 40) -> LaunchCounter:
    """The counts of one inference render of ``model`` (``batch`` random triplanes, ``views`` orbit
    views of ``res``^2) on the path a CUDA device takes (every ray at once: ``compact_misses="never"``),
    exact or, with ``skipping``, through an occupancy grid that keeps every in-box cell (tau 0).
    ``max_memory``: the renderer's budget (default: big enough that nothing chunks)."""
    from lrm_fast.cameras import default_intrinsics, orbit_cameras
    from lrm_fast.field.occupancy import build_occupancy

    r = model.renderer
    tp = model.cfg.triplane
    planes = torch.randn(batch, 3, tp.channels, tp.high_res, tp.high_res, generator=torch.Generator().manual_seed(0))
    az = [360.0 * i / views for i in range(views)]
    c2w = orbit_cameras(az, [20.0] * views, 2.0)[None].repeat(batch, 1, 1, 1)
    K = default_intrinsics(0.75)[None, None].repeat(batch, views, 1)
    saved = r.compact_misses, r.max_memory, r.cfg.occupancy_tau
    r.compact_misses, r.max_memory = "never", max_memory
    try:
        with torch.no_grad():
            grid = None
            if skipping:
                r.cfg.occupancy_tau = 0.0
                grid = build_occupancy(model.field, planes, 8)
            with LaunchCounter() as c:
                r(planes, c2w, K, res, occupancy=grid)
    finally:
        r.compact_misses, r.max_memory, r.cfg.occupancy_tau = saved
    return c


def count_train_step(root: str, batch: int, res: int, out_dir: str) -> LaunchCounter:
    """The counts of one training step (``Trainer.train_step``, tiny preset, whole ``res``^2 views,
    one side view per object, fp32) on the path a CUDA device takes (every ray at once), counted on
    the second step (the first makes the optimizer's state). ``root``: a dataset of at least
    ``batch`` objects (``data.synthetic.make_dataset``)."""
    from lrm_fast.train.config import TrainConfig
    from lrm_fast.train.trainer import Trainer

    cfg = TrainConfig.from_dict(dict(
        model="tiny", data_root=root, side_views=1, source_views=1, render_size=res, patch=None,
        batch_size=batch, steps=2, warmup=1, out_dir=out_dir, progress=False, precision="fp32", device="cpu",
        model_overrides={"encoder": {"foreground_ratio": 0.0}}))
    threads = torch.get_num_threads()
    try:
        tr = Trainer(cfg)
        tr.model.renderer.compact_misses, tr.model.renderer.max_memory = "never", 1 << 40
        batches = tr.batches()
        tr.train_step(next(batches))
        b = next(batches)
        with LaunchCounter() as c:
            tr.train_step(b)
    finally:
        torch.set_num_threads(threads)
    return c


def budget_table(out_dir: str) -> str:
    """The launch and sync budget, as a markdown table: one exact render, one skipping render and one
    training step of the tiny preset on the path a CUDA device takes (counted on the CPU), 1 vs 8
    batch items and a small vs a large view (the ops must not grow with either)."""
    import os

    from lrm_fast.config import LRMConfig
    from lrm_fast.data.synthetic import make_dataset
    from lrm_fast.model.lrm import LRM

    torch.manual_seed(0)
    model = LRM(LRMConfig.preset("tiny")).eval()
    rows = []
    for B, res in ((1, 64), (8, 64), (1, 512)):
        c = count_render(model, B, res)
        rows.append(("exact render", B, f"{res}^2", c))
    for B, res in ((1, 64), (8, 64), (1, 512)):
        c = count_render(model, B, res, skipping=True)
        rows.append(("skipping render", B, f"{res}^2", c))
    root = os.path.join(out_dir, "data")
    make_dataset(root, 8, n_views=2, resolution=128, seed=0)
    for B, res in ((1, 32), (8, 32), (1, 128)):
        c = count_train_step(root, B, res, os.path.join(out_dir, f"train-{B}-{res}"))
        rows.append(("training step", B, f"{res}^2", c))
    lines = ["| launches (tiny, CUDA path) | batch | view | ops | host syncs | sync ops |", "|---|---|---|---|---|---|"]
    for what, B, view, c in rows:
        syncs = ", ".join(f"{k.split('::')[-1]} {n}" for k, n in sorted(c.sync_ops.items())) or "-"
        lines.append(f"| {what} | {B} | {view} | {c.ops} | {c.syncs} | {syncs} |")
    return "\n".join(lines)
