"""Count what a piece of code dispatches: every op (an op is at least one kernel launch on a GPU) and
every host sync (an op whose result the host must wait for: a scalar read, a data-dependent shape).
The measuring tool of the GPU issue's launch and sync budget (fast by construction, proven on CPU).

``with LaunchCounter() as c: render(...)`` then ``c.ops`` (total ops), ``c.syncs`` (total syncs),
``c.by_op`` (name -> count) and ``c.sync_ops``. It is a ``TorchDispatchMode``, so it sees the ops of the
Python path that runs, on any device: on CPU it counts what the same code dispatches on a GPU, as long
as the code takes the GPU's path (where the code branches on the device, select that path on CPU).
Views and metadata-only ops (``aten.view``, ``aten.t``, ...) are not kernels and are not counted."""
from __future__ import annotations

from collections import Counter

import torch
from torch.utils._python_dispatch import TorchDispatchMode

# ops whose output the host must read before it can go on (a sync on a GPU)
SYNC_OPS = {
    "aten::_local_scalar_dense",   # .item(), int(t), bool(t), float(t); not .tolist() or .cpu() (unseen on CPU)
    "aten::nonzero", "aten::nonzero_static", "aten::masked_select", "aten::unique_dim", "aten::_unique2",
    "aten::unique_consecutive", "aten::unique", "aten::argwhere",
    "aten::_assert_async", "aten::equal", "aten::is_nonzero", "aten::repeat_interleave",
}
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


class LaunchCounter(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.by_op: Counter = Counter()
        self.sync_ops: Counter = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func._schema.name
        if name not in NO_KERNEL:
            self.by_op[name] += 1
            if _is_sync(name, args):
                self.sync_ops[name] += 1
        return func(*args, **(kwargs or {}))

    @property
    def ops(self) -> int:
        return sum(self.by_op.values())

    @property
    def syncs(self) -> int:
        return sum(self.sync_ops.values())
