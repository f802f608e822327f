"""Triplane field query (sample 3 planes + aggregate + NeRF MLP): reference vs the fast path.

The op every render sample and every mesh-grid cell goes through (``lrm_fast.ops.triplane_mlp``).
Cases: ``query`` (inference, no autograd: what a mesh grid does) and ``train`` (forward +
backward to planes and MLP weights: what a training step does). The fast backend is whatever
``backend="fast"`` resolves to for these tensors: ``triton`` on CUDA, ``cpp`` on CPU where
lrm_fast._C is built (forward and backward: the backward recomputes each 64-point block, so
autograd keeps only the inputs); without either it is the reference itself and the report marks
the pair as "same path".
"""
from __future__ import annotations

import pytest
import torch

from bench._mem import peak_memory_mb
from bench.conftest import DEVICE, record, sizes
from lrm_fast.config import LRMConfig
from lrm_fast.ops import _dispatch, triplane_mlp
from lrm_fast.render.field import TriplaneField

# (size name, preset, points per batch item): 64^3 = a coarse mesh grid, 256^3 = the DESIGN floor.
SIZES = sizes(smoke=[("tiny-512", "tiny", 512)],
              full=[("small-32^3", "small", 32 ** 3), ("base-64^3", "base", 64 ** 3)],
              gpu=[("base-128^3", "base", 128 ** 3), ("base-256^3", "base", 256 ** 3),
                   ("paper-256^3", "paper", 256 ** 3)])
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
    """flops/bytes of one forward query (bench/roofline.py's field model)."""
    from bench.roofline import field_query

    w = field_query(cfg, n_points)
    return {"flops": w.flops, "bytes": w.bytes}


def _backend_name(backend: str, planes, points, ws, bs) -> str:
    """The path ``triplane_mlp`` takes for these inputs (the same resolve call it makes)."""
    return _dispatch.resolve("triplane_mlp", backend, planes, points, *ws, *bs)[0]


@pytest.mark.parametrize("backend", ["reference", "fast"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size,preset,n_points", SIZES, ids=[s[0] for s in SIZES])
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
