"""Backend resolution shared by every op in ``lrm_fast.ops``.

Each op registers its twin (``register_reference``) and its implementations in order of
preference, each with a probe ``probe(*tensors) -> (ok: bool, reason: str)``. Every implementation
takes exactly its twin's arguments (names, order, defaults), so no option of a kernel lacks a
reference, and names the ``torch.ops.lrm_fast`` ops it runs (``ext_ops``);
``tests/test_twin_signatures.py`` holds both to it. ``backend`` values:

* ``"reference"``: the pure-PyTorch twin, the spec.
* an implementation's own name (``"sdpa"``, ``"xformers"``, ``"triton"``, ``"cpp"``): that one;
  if its probe fails the call raises with the probe's reason.
* ``"fast"`` / ``"auto"``: the first fast implementation whose probe passes, else the reference.
  (``"fast"`` is kept as a synonym so model code can say what it means; neither ever fails.)
  An implementation may also register ``prefer(*tensors) -> (ok, reason)``, asked only here: it
  can run these inputs but measured slower than the reference for them, so auto passes it over
  (an explicit request by name still runs it).

The model passes the string down and each op decides per call from the tensors' device and
dtype. The one module that branches on it is the renderer (``render/renderer.py``): it takes its
fast path (fused compositing, missed rays skipped) when the compositing ops resolve to ``cpp`` (the
fused one to ``cpp`` or ``triton``: ``renderer.FUSED``), else its reference path (docs/architecture.md section 3). ``describe(op, device, dtype)`` explains the choice for
``lrm-fast info``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

import torch

ProbeFn = Callable[..., "tuple[bool, str]"]


@dataclass
class Impl:
    name: str
    fn: Callable
    probe: ProbeFn
    prefer: ProbeFn | None = None  # auto/fast only: False where the reference is faster for these inputs
    ext_ops: tuple[str, ...] = ()  # the torch.ops.lrm_fast.* ops it calls, forward and backward


_REGISTRY: dict[str, list[Impl]] = {}
_REFERENCE: dict[str, Callable] = {}

GENERIC = ("auto", "fast")


def register_reference(op: str, fn: Callable) -> None:
    _REFERENCE[op] = fn
    _REGISTRY.setdefault(op, [])


def register(op: str, name: str, fn: Callable, probe: ProbeFn, prefer: ProbeFn | None = None,
             ext_ops: "tuple[str, ...]" = ()) -> None:
    """``fn`` takes exactly the twin's arguments (names, order, defaults; tests/test_twin_signatures.py);
    ``ext_ops`` names the ``torch.ops.lrm_fast`` ops it runs, so each one is opchecked."""
    impls = _REGISTRY.setdefault(op, [])
    impls[:] = [i for i in impls if i.name != name] + [Impl(name, fn, probe, prefer, tuple(ext_ops))]


def registered() -> "tuple[str, ...]":
    """Every op registered so far, in registration order (``lrm_fast.ops.OPS`` after the import)."""
    return tuple(_REGISTRY)


def reference(op: str) -> Callable:
    """The twin of ``op``."""
    return _REFERENCE[op]


def implementations(op: str) -> "list[Impl]":
    """The fast implementations of ``op``, in order of preference."""
    return list(_REGISTRY.get(op, []))


def names(op: str) -> list[str]:
    return ["reference"] + [i.name for i in _REGISTRY.get(op, [])]


def resolve(op: str, backend: str, *tensors) -> tuple[str, Callable, str]:
    """Pick the implementation of ``op`` for these tensors. Returns (name, fn, reason)."""
    if backend == "reference":
        return "reference", _REFERENCE[op], "requested"
    impls = _REGISTRY.get(op, [])
    if backend in GENERIC:
        reasons = []
        for impl in impls:
            ok, why = impl.probe(*tensors)
            if ok and impl.prefer is not None:
                preferred, why_not = impl.prefer(*tensors)
                if not preferred:
                    ok, why = False, why_not
            if ok:
                # say why the preferred ones were passed over, e.g. "sdpa (...; xformers: no cpu kernel)"
                return impl.name, impl.fn, "; ".join([why] + [f"not {r}" for r in reasons])
            reasons.append(f"{impl.name}: {why}")
        return "reference", _REFERENCE[op], "; ".join(reasons) or "no fast implementation"
    for impl in impls:
        if impl.name == backend:
            ok, why = impl.probe(*tensors)
            if not ok:
                raise RuntimeError(f"{op}: backend {backend!r} cannot run here: {why}")
            return impl.name, impl.fn, why
    raise ValueError(f"{op}: unknown backend {backend!r}; choose one of {names(op) + list(GENERIC)}")


def describe(op: str, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
             backend: str = "auto") -> str:
    """One line: which path ``op`` takes for a tensor of this device/dtype, and why."""
    t = torch.empty(0, device="meta", dtype=dtype)
    probe_tensor = _FakeDevice(t, torch.device(device))
    name, _, why = resolve(op, backend, probe_tensor)
    return f"{op}: {name} ({why})"


def interpreting() -> bool:
    """Whether Triton's interpreter is on (``TRITON_INTERPRET=1``: numpy on the CPU, for tests)."""
    return os.environ.get("TRITON_INTERPRET") == "1"


def triton_ready(t) -> "tuple[bool, str]":
    """The part of every Triton implementation's probe that is about the machine, not the inputs:
    CUDA tensors, or CPU tensors under the interpreter, and triton importable. Cheap checks first:
    importing triton costs seconds, and CPU runs never use it unless testing."""
    dev = t.device
    if dev.type == "cpu" and not interpreting():
        return False, "CPU tensors need TRITON_INTERPRET=1 (Triton's interpreter, for tests only)"
    if dev.type not in ("cuda", "cpu"):
        return False, f"device {dev.type} not supported"
    try:
        import triton  # noqa: F401
    except Exception as e:  # noqa: BLE001 - any import failure means "not here"
        return False, f"triton not importable ({type(e).__name__}: {e})"
    return True, "interpreter" if dev.type == "cpu" else "CUDA"


def triton_prefer(t, *_) -> "tuple[bool, str]":
    """The ``prefer`` of every Triton implementation: auto/fast never pick an interpreter: on the CPU
    the Triton kernels only run under ``TRITON_INTERPRET=1`` (numpy, for tests), so only the
    backend's own name runs them there."""
    if t.device.type == "cpu":
        return False, "CPU tensors run Triton only in its interpreter (TRITON_INTERPRET=1), which auto never picks"
    return True, ""


class _FakeDevice:
    """A stand-in tensor for probes in ``describe`` (probes read .device, .dtype, .shape)."""

    def __init__(self, t: torch.Tensor, device: torch.device):
        self.dtype = t.dtype
        self.device = device
        self.shape = t.shape
        self.is_cuda = device.type == "cuda"

    def dim(self):
        return 0
