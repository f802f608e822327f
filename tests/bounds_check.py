"""Bounds checking for Triton kernels run under the interpreter (``TRITON_INTERPRET=1``).

A GPU reports an out-of-bounds access as ``cudaErrorIllegalAddress`` somewhere later, without the
kernel, the argument or the offset. Under the interpreter every ``tl.load`` / ``tl.store`` /
``tl.atomic_*`` is a numpy call on real addresses; inside :func:`checked_launches` each one is
checked before it runs:

* every launch's tensor arguments are copied into buffers with guard zones (``guard`` bytes before
  and after, filled with a sentinel), so an access just past an argument cannot land in a
  neighbouring allocation; the results are copied back after the launch and the guards must be
  intact;
* every address that its mask lets through must lie, with its whole element, inside one tensor
  argument's extent (``data_ptr`` .. last element), and all active lanes of one access must lie in
  the same argument (a pointer tile comes from one base in these kernels);
* a violation raises :class:`OutOfBounds` naming the kernel, the operation, the program id, the
  argument nearest below the address, the byte offset and the argument's size.

What it cannot see: anything the interpreter does not model, i.e. the compiled code's own
addresses (shared memory, tensor-core operand descriptors, layouts, ``num_warps``). The
interpreter runs each program sequentially with numpy int arithmetic of the same widths as the
kernel's (int32 wraps as on the GPU, so an offset overflow shows up as an out-of-bounds address).

Usage (``TRITON_INTERPRET=1`` must be set before triton is first imported)::

    from bounds_check import checked_launches  (tests/bounds_check.py: on the path of the tests)
    with checked_launches() as log:
        run_the_op()
    # log.launches: [(kernel name, grid, {arg: bytes})], log.accesses: number of checked accesses

Unmasked loads/stores and the interpreter's tensor-descriptor loads/stores go through the masked
load/store checked here; atomics (rmw and cas) are checked too.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os

import numpy as np
import torch

SENTINEL = 0xA5


class OutOfBounds(RuntimeError):
    """An access outside every tensor argument of the launch (or across two of them)."""


@dataclasses.dataclass
class _Arg:
    name: str
    start: int
    end: int          # one past the last byte of the extent


@dataclasses.dataclass
class CheckLog:
    launches: list = dataclasses.field(default_factory=list)   # (kernel, grid, {arg: nbytes})
    accesses: int = 0       # checked memory operations (one per program and tl.load/store/atomic)
    lanes: int = 0          # checked active addresses


_state: dict = {"args": None, "kernel": None, "log": None}


def _extent_elems(t: torch.Tensor) -> int:
    if t.numel() == 0:
        return 0
    return 1 + sum((s - 1) * st for s, st in zip(t.shape, t.stride()))


def _guarded_copy(t: torch.Tensor, guard: int):
    """(view, buffer, guard elements): t's values in the middle of a fresh buffer with guards."""
    esz = t.element_size()
    g = -(-guard // esz)
    n = _extent_elems(t)
    raw = torch.full(((2 * g + n) * esz,), SENTINEL, dtype=torch.uint8)
    flat = raw.view(t.dtype)
    view = flat.as_strided(t.shape, t.stride(), g)
    if n:
        view.copy_(t.detach().cpu())
    return view, raw, g * esz


def _describe(addr: int, args: list) -> str:
    below = [a for a in args if a.start <= addr]
    if not below:
        a = min(args, key=lambda a: a.start) if args else None
        return f"{addr:#x} below every argument" + (f" ({a.start - addr} B before {a.name!r})" if a else "")
    a = max(below, key=lambda a: a.start)
    return (f"argument {a.name!r} + {addr - a.start} B (its extent is {a.end - a.start} B"
            f"{', i.e. past its end by ' + str(addr - a.end) + ' B' if addr >= a.end else ''})")


def _check(op: str, ptrs, mask, elem_bytes: int) -> None:
    args = _state["args"]
    if args is None:
        return
    p = np.asarray(ptrs).astype(np.uint64, copy=False)
    m = np.ones(p.shape, dtype=bool) if mask is None else np.broadcast_to(np.asarray(mask, dtype=bool), p.shape)
    active = p[m].astype(np.int64)
    log = _state["log"]
    log.accesses += 1
    log.lanes += int(active.size)
    if not active.size:
        return
    starts = np.array([a.start for a in args], dtype=np.int64)
    ends = np.array([a.end for a in args], dtype=np.int64)
    order = np.argsort(starts)
    idx = np.searchsorted(starts[order], active, side="right") - 1
    ok = idx >= 0
    arg_of = np.where(ok, order[np.maximum(idx, 0)], -1)
    ok &= active + elem_bytes <= np.where(arg_of >= 0, ends[arg_of], 0)
    from triton.runtime.interpreter import interpreter_builder

    pid = getattr(interpreter_builder, "grid_idx", None)
    where = f"kernel {_state['kernel']}, program {pid}, {op} of {elem_bytes}-byte elements"
    if not ok.all():
        bad = active[~ok]
        raise OutOfBounds(f"{where}: {bad.size} of {active.size} active lanes out of bounds; first at "
                          f"{_describe(int(bad[0]), args)}; last at {_describe(int(bad[-1]), args)}")
    used = np.unique(arg_of)
    if used.size > 1:
        names = ", ".join(repr(args[i].name) for i in used)
        raise OutOfBounds(f"{where}: one access spans several arguments ({names}): a pointer tile left "
                          f"its base tensor")


@contextlib.contextmanager
def checked_launches(guard: int = 4096):
    """Check every interpreted Triton launch inside the block (see the module docstring)."""
    if os.environ.get("TRITON_INTERPRET") != "1":
        raise RuntimeError("checked_launches needs TRITON_INTERPRET=1 set before triton is imported")
    import triton.runtime.interpreter as I

    B, G = I.InterpreterBuilder, I.GridExecutor
    saved = {name: getattr(B, name) for name in ("create_masked_load", "create_masked_store", "create_atomic_rmw",
                                                 "create_atomic_cas")}
    saved_call = G.__call__
    log = CheckLog()

    def esize(handle) -> int:
        return handle.get_element_ty().primitive_bitwidth // 8

    def masked_load(self, ptrs, mask, other, *a, **k):
        _check("load", ptrs.data, mask.data, esize(ptrs))
        return saved["create_masked_load"](self, ptrs, mask, other, *a, **k)

    def masked_store(self, ptrs, value, mask, *a, **k):
        _check("store", ptrs.data, mask.data, esize(ptrs))
        return saved["create_masked_store"](self, ptrs, value, mask, *a, **k)

    def atomic_rmw(self, op, ptr, val, mask, *a, **k):
        _check(f"atomic {op}", ptr.data, mask.data, esize(ptr))
        return saved["create_atomic_rmw"](self, op, ptr, val, mask, *a, **k)

    def atomic_cas(self, ptr, cmp, val, *a, **k):
        _check("atomic cas", ptr.data, None, esize(ptr))
        return saved["create_atomic_cas"](self, ptr, cmp, val, *a, **k)

    def call(self, *args, **kwargs):
        names = list(self.arg_names)
        bound = dict(zip(names, args))
        bound.update(kwargs)
        storages = {}
        for name, v in bound.items():
            if isinstance(v, torch.Tensor):
                key = v.untyped_storage().data_ptr()
                if key in storages and v.numel():
                    raise OutOfBounds(f"kernel {self.fn.__name__}: arguments {storages[key]!r} and {name!r} share "
                                      f"a storage; the checker needs separate tensors")
                storages[key] = name
        copies, ranges = {}, []
        for name, v in bound.items():
            if isinstance(v, torch.Tensor):
                view, raw, g = _guarded_copy(v, guard)
                copies[name] = (v, view, raw, g)
                start = view.data_ptr()
                ranges.append(_Arg(name, start, start + _extent_elems(v) * v.element_size()))
        new_args = [copies[n][1] if n in copies else a for n, a in zip(names, args)]
        new_kwargs = {k: (copies[k][1] if k in copies else v) for k, v in kwargs.items()}
        prev = dict(_state)
        _state.update(args=ranges, kernel=self.fn.__name__, log=log)
        try:
            out = saved_call(self, *new_args, **new_kwargs)
        finally:
            _state.update(prev)
        for name, (orig, view, raw, g) in copies.items():
            n = _extent_elems(orig) * orig.element_size()
            head, tail = raw[:g], raw[g + n:]
            if bool((head != SENTINEL).any()) or bool((tail != SENTINEL).any()):
                raise OutOfBounds(f"kernel {self.fn.__name__}: the guard zone around {name!r} was written")
            if orig.numel():
                orig.copy_(view.to(orig.device))
        grid = self.grid if not callable(self.grid) else "callable"
        log.launches.append((self.fn.__name__, grid,
                             {n: _extent_elems(c[0]) * c[0].element_size() for n, c in copies.items()}))
        return out

    B.create_masked_load, B.create_masked_store = masked_load, masked_store
    B.create_atomic_rmw, B.create_atomic_cas = atomic_rmw, atomic_cas
    G.__call__ = call
    try:
        yield log
    finally:
        for name, f in saved.items():
            setattr(B, name, f)
        G.__call__ = saved_call
