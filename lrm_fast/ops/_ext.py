"""The C++/CUDA extension ``lrm_fast._C`` and the plumbing every op that uses it shares.

Importing this module imports ``lrm_fast._C`` once (its static initializers define the ops under
``torch.ops.lrm_fast``, schemas in ``csrc/ext.cpp``). Each op module then registers, at its own
import, the fake (meta) kernels and the autograd formulas of its ops with ``register_fake`` /
``register_autograd`` below (as pytorch/extension-cpp's ``ops.py`` does); those are no-ops where
the extension is not built or lacks the op, so the package imports without it and every op runs
its PyTorch twin. ``cpp_probe(op)`` is the probe the ops hand to ``_dispatch``.
"""
from __future__ import annotations

from typing import Callable

import torch

try:
    from .. import _C  # noqa: F401  (importing registers torch.ops.lrm_fast.*)
except (ImportError, OSError) as _e:
    STATE: "tuple[bool, str]" = (False, f"lrm_fast._C not built ({_e}); build with "
                                        "`python setup.py build_ext --inplace` or `pip install --no-build-isolation -e .`")
else:
    STATE = (True, "lrm_fast._C")

LIB = "lrm_fast::"
CPP_DTYPES = (torch.float32, torch.float64)
# the ops whose kernels have no backward; their twins are differentiable, so the probe declines
# inputs that want a gradient and auto takes the twin
NO_BACKWARD = ("generate_rays", "ray_box", "stratified", "ray_points")


def load_extension() -> "tuple[bool, str]":
    """(ok, reason): whether ``lrm_fast._C`` is importable (decided once, at import)."""
    return STATE


def defined(op: str) -> bool:
    """Whether the loaded extension defines ``lrm_fast::<op>`` (an older build may lack one)."""
    if not STATE[0]:
        return False
    try:
        return hasattr(torch.ops.lrm_fast, op)
    except Exception:  # noqa: BLE001 - torch.ops raises its own error types for a missing namespace
        return False


@torch.compiler.assume_constant_result
def has_kernel(op: str, key: str) -> bool:
    """Whether ``lrm_fast::<op>`` has a kernel for dispatch key ``key`` ("CPU", "CUDA"). Fixed for the
    process (the library loads once, at import): torch.compile reads it while tracing and keeps the
    answer, so a probe inside a compiled render is no graph break."""
    return defined(op) and torch._C._dispatch_has_kernel_for_dispatch_key(LIB + op, key)


def register_fake(op: str) -> Callable[[Callable], Callable]:
    """Decorator: the fake (meta) kernel of ``lrm_fast::<op>`` (torch.compile, opcheck); a no-op
    where the extension does not define the op."""
    def deco(fn):
        if defined(op):
            torch.library.register_fake(LIB + op)(fn)
        return fn
    return deco


def register_autograd(op: str, backward: Callable, setup_context: Callable) -> None:
    """The autograd formula of ``lrm_fast::<op>``; a no-op where the extension does not define it."""
    if defined(op):
        torch.library.register_autograd(LIB + op, backward, setup_context=setup_context)


def cpp_probe(op: str):
    """The probe of op ``op``'s ``cpp`` backend: extension built, device kernel compiled,
    float32/float64, no gradient wanted (for the ops without a backward)."""
    def probe(*tensors):
        ok, why = STATE
        if not ok:
            return False, why
        t = tensors[0]
        dev = t.device.type
        if dev not in ("cpu", "cuda"):
            return False, f"no kernel for device {dev}"
        if not has_kernel(op, dev.upper()):
            return False, f"lrm_fast._C was built without {dev.upper()} kernels (rebuild with nvcc + FORCE_CUDA=1)"
        if t.dtype not in CPP_DTYPES:
            return False, f"{str(t.dtype).replace('torch.', '')} inputs (the kernel takes float32/float64)"
        if (op in NO_BACKWARD and torch.is_grad_enabled()
                and any(getattr(x, "requires_grad", False) for x in tensors)):
            return False, "inputs require grad and this op has no backward in lrm_fast._C"
        if (op == "merge_samples" and torch.is_grad_enabled()
                and any(getattr(x, "requires_grad", False) for x in tensors[0::2])):
            return False, "depths require grad (the kernel's backward covers the values only)"
        if op in ("merge_samples", "ray_points") and any(x.dtype != t.dtype or x.device != t.device for x in tensors[1:]):
            return False, "inputs of different dtypes or devices"
        return True, f"lrm_fast._C {dev} kernel"
    return probe
