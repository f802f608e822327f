"""triplane_mlp (sample 3 planes + aggregate + NeRF MLP): the fast paths vs the reference.

The op every render sample and every mesh-grid cell goes through (``lrm_fast.ops.triplane_mlp``),
benchmarked two ways in this one file:

1. ``field_query`` / ``field_train``: the presets' own fields (``TriplaneField``), ``backend="fast"``
   (whatever auto resolves to: ``triton`` on CUDA, ``cpp`` on CPU where lrm_fast._C is built;
   without either it is the reference itself and the report marks the pair as "same path") vs the
   reference. ``query``: inference, no autograd (a mesh grid); ``train``: forward + backward to
   planes and MLP weights (a training step; the cpp backward recomputes each 64-point block, so
   autograd keeps only the inputs).
2. ``triplane_mlp_fwd`` / ``triplane_mlp_fwdbwd``: each named backend at fixed sizes.

Stages of part 2 (one group per stage and size, reference and fast in the same run):
  * ``triplane_mlp_fwd``: forward under ``no_grad`` (rendering / mesh extraction);
  * ``triplane_mlp_fwdbwd``: forward + backward w.r.t. planes and every weight/bias (training).
Field: the base preset's (C = 48 planes of 64 x 64, concat, MLP 144 -> 64 -> 64 -> 64 -> 4, ReLU).

Sizes:
  * GPU (full mode on CUDA): 2^18 points (a render chunk) and 2^20 (training), fp32 and bf16.
  * CPU full: the reference at 2^14 points. The fused path needs CUDA; on CPU it only runs under
    Triton's interpreter (``TRITON_INTERPRET=1`` set before the run), ~1000x slower than torch, so
    its CPU time measures the interpreter, not the kernel: it is recorded as backend
    ``triton-interpreter`` and only in smoke mode at a tiny size, as a "does it run" check.
  * CPU ``cpp``: the C++ fused field (forward, float32) at the same sizes as the reference.
  * smoke: 256 points of an 8-channel 8 x 8 field, once each.
"""
from __future__ import annotations

import os

import pytest
import torch

from bench.lib.mem import peak_memory_mb
from bench.suites.conftest import DEVICE, MODE, record, sizes
from lrm_fast.config import LRMConfig
from lrm_fast.ops import _dispatch, triplane_mlp
from lrm_fast.ops.triplane_mlp import _cpp_probe
from lrm_fast.field.triplane import TriplaneField

# (name, C, plane_res, n_points, dtype)
SIZES = sizes(
    smoke=[("C8-8x8-256pts", 8, 8, 256, "float32")],
    full=[("C48-64x64-2^14pts", 48, 64, 2**14, "float32"), ("C48-64x64-2^18pts", 48, 64, 2**18, "float32")],
    gpu=[("C48-64x64-2^18pts", 48, 64, 2**18, "float32"),
         ("C48-64x64-2^18pts", 48, 64, 2**18, "bfloat16"),
         ("C48-64x64-2^20pts", 48, 64, 2**20, "float32"),
         ("C48-64x64-2^20pts", 48, 64, 2**20, "bfloat16")],
)


def _fast_backend() -> str | None:
    """Name recorded for the fused path here, or None when it cannot run / would mislead."""
    if DEVICE == "cuda":
        return "triton"
    if os.environ.get("TRITON_INTERPRET") == "1" and MODE == "smoke":
        return "triton-interpreter"
    return None


def _field(C: int, res: int, n: int, dtype: torch.dtype, grad: bool):
    g = torch.Generator().manual_seed(0)
    planes = torch.randn(1, 3, C, res, res, generator=g).to(DEVICE, dtype).requires_grad_(grad)
    pts = (torch.rand(1, n, 3, generator=g) * 2 - 1).to(DEVICE)
    dims = [3 * C, 64, 64, 64, 4]
    ws = [(torch.randn(dims[i + 1], dims[i], generator=g) / dims[i] ** 0.5).to(DEVICE).requires_grad_(grad)
          for i in range(4)]
    bs = [torch.zeros(dims[i + 1], device=DEVICE).requires_grad_(grad) for i in range(4)]
    return planes, pts, ws, bs


def _in_forked_child_safe(fn):
    """On CPU bench.lib.mem runs fn in a forked child; a child that enters an OpenMP region the
    parent already used hangs forever in libgomp (measured here), so go single-threaded first.
    (Only the child's thread count changes; timings in the parent are untouched.)"""
    if DEVICE != "cpu":
        return fn
    return lambda: (torch.set_num_threads(1), fn())


def _sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


@pytest.mark.parametrize("stage", ["triplane_mlp_fwd", "triplane_mlp_fwdbwd"])
@pytest.mark.parametrize("which", ["reference", "fast", "cpp"])
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}-{s[4]}")
def test_triplane_mlp(benchmark, size, which, stage):
    name, C, res, n, dt = size
    if which == "cpp":
        # the C++ fused CPU field (csrc/triplane_mlp_cpu.cpp): CPU float32, forward and backward
        if DEVICE != "cpu" or dt != "float32":
            pytest.skip("the cpp field is CPU float32 only")
        with torch.no_grad():
            ok, why = _cpp_probe(torch.empty(1, 3, 1, 1, 1))
        if not ok:
            pytest.skip(f"cpp field unavailable: {why}")
        backend = "cpp"
    else:
        backend = "reference" if which == "reference" else _fast_backend()
    if backend is None:
        pytest.skip("the fused Triton path needs CUDA (CPU: only under TRITON_INTERPRET=1, smoke size)")
    op_backend = backend if backend in ("cpp", "reference") else "triton"
    dtype = getattr(torch, dt)
    train = stage == "triplane_mlp_fwdbwd"
    planes, pts, ws, bs = _field(C, res, n, dtype, train)

    def step():
        if train:
            out = triplane_mlp(planes, pts, ws, bs, backend=op_backend)
            # a scalar loss touching every output channel, like the renderer's composite
            torch.autograd.grad(out.float().square().mean(), [planes] + ws + bs)
        else:
            with torch.no_grad():
                triplane_mlp(planes, pts, ws, bs, backend=op_backend)
        _sync()

    step()  # warm-up: Triton compiles on first call; not timed, not in the memory peak
    peak = peak_memory_mb(_in_forked_child_safe(step), DEVICE)
    record(benchmark, stage, f"{name}-{dt}", backend, fast=which != "reference", peak_mem_mb=peak, dtype=dt,
           n_points=n, channels=C)
    benchmark(step)


# ---------------------------------------------------------------------------------------------
# part 1: the presets' fields, auto's fast path vs the reference

# (size name, preset, points per batch item): 64^3 = a coarse mesh grid, 256^3 = a mesh at the resolution of
# the targets (docs/architecture.md section 6).
PRESET_SIZES = sizes(smoke=[("tiny-512", "tiny", 512)],
              full=[("small-32^3", "small", 32 ** 3), ("base-64^3", "base", 64 ** 3),
                    ("triposr-64^3", "triposr", 64 ** 3)],   # TripoSR's field: 10 SiLU layers of 64
              gpu=[("base-128^3", "base", 128 ** 3), ("base-256^3", "base", 256 ** 3),
                   ("paper-256^3", "paper", 256 ** 3), ("triposr-256^3", "triposr", 256 ** 3)])
DTYPES = ["float32"] if DEVICE == "cpu" else ["float32", "bfloat16"]


def _inputs(preset: str, n_points: int, dtype: torch.dtype, grad: bool):
    cfg = LRMConfig.preset(preset)
    gen = torch.Generator().manual_seed(0)
    t = cfg.triplane
    planes = torch.randn(1, 3, t.channels, t.high_res, t.high_res, generator=gen)
    points = torch.rand(1, n_points, 3, generator=gen) * 2 - 1
    torch.manual_seed(0)
    field = TriplaneField(t.channels, cfg.field)
    planes, points = planes.to(DEVICE, dtype), points.to(DEVICE, dtype)
    field = field.to(DEVICE, dtype)
    planes.requires_grad_(grad)
    field.requires_grad_(grad)
    lin = field.linears
    return cfg, planes, points, [m.weight for m in lin], [m.bias for m in lin]


def _work(cfg, n_points: int) -> dict:
    """flops/bytes of one forward query (bench/lib/roofline.py's field model)."""
    from bench.lib.roofline import field_query

    w = field_query(cfg, n_points)
    return {"flops": w.flops, "bytes": w.bytes}


def _backend_name(backend: str, planes, points, ws, bs) -> str:
    """The path ``triplane_mlp`` takes for these inputs (the same resolve call it makes)."""
    return _dispatch.resolve("triplane_mlp", backend, planes, points, *ws, *bs)[0]


@pytest.mark.parametrize("backend", ["reference", "fast"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size,preset,n_points", PRESET_SIZES, ids=[s[0] for s in PRESET_SIZES])
def test_field_query(benchmark, size, preset, n_points, dtype, backend):
    dt = getattr(torch, dtype)
    cfg, planes, points, ws, bs = _inputs(preset, n_points, dt, grad=False)

    @torch.no_grad()
    def fn():
        return triplane_mlp(planes, points, ws, bs, cfg.field.aggregate, cfg.field.activation, backend=backend)

    mem = peak_memory_mb(fn, DEVICE)
    out = benchmark(fn)
    assert out.shape == (1, n_points, 4) and torch.isfinite(out.float()).all()
    record(benchmark, "field_query", size, _backend_name(backend, planes, points, ws, bs), backend != "reference",
           peak_mem_mb=mem, dtype=dtype, preset=preset, points=n_points, **_work(cfg, n_points))


TRAIN_SIZES = sizes(smoke=[("tiny-512", "tiny", 512)],
                    full=[("small-16^3", "small", 16 ** 3), ("base-32^3", "base", 32 ** 3),
                          ("base-64^3", "base", 64 ** 3)],
                    gpu=[("base-64x64x96", "base", 64 * 64 * 96), ("base-128x128x96", "base", 128 * 128 * 96)])


@pytest.mark.parametrize("backend", ["reference", "fast"])
@pytest.mark.parametrize("size,preset,n_points", TRAIN_SIZES, ids=[s[0] for s in TRAIN_SIZES])
def test_field_train(benchmark, size, preset, n_points, backend):
    """Forward + backward (fp32): gradients to the planes and all MLP weights."""
    cfg, planes, points, ws, bs = _inputs(preset, n_points, torch.float32, grad=True)
    params = [planes, *ws, *bs]

    def fn():
        out = triplane_mlp(planes, points, ws, bs, cfg.field.aggregate, cfg.field.activation, backend=backend)
        return torch.autograd.grad(out.square().mean(), params)

    mem = peak_memory_mb(fn, DEVICE)
    grads = benchmark(fn)
    assert grads[0].shape == planes.shape
    work = _work(cfg, n_points)
    record(benchmark, "field_train", size, _backend_name(backend, planes, points, ws, bs), backend != "reference",
           peak_mem_mb=mem, preset=preset, points=n_points,
           flops=3 * work["flops"], bytes=3 * work["bytes"], note="fwd+bwd, flops ~3x forward")
