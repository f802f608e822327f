"""Rays, samples and compositing: the cpp kernels (lrm_fast._C) vs the pure-torch twins.

Cases (each reference and cpp in the same run, same inputs):
  * ``rays+samples``: generate_rays + ray_box + stratified (64) + importance (64) for one view;
  * ``composite_fwd``: compositing forward, 128 intervals per ray;
  * ``composite_fwdbwd``: forward + backward to rgb, sigma, background.
Sizes: smoke 16x16 (S=16); full 128x128 and 512x512 with 64+64 samples.
Run: ``LRM_FAST_BENCH=full .venv/bin/python -m pytest bench/bench_raymarch.py -p no:cacheprovider``.
"""
import pytest
import torch


from bench._mem import peak_memory_mb, saved_tensors_mb
from bench.conftest import record, sizes
from lrm_fast.model.camera import default_intrinsics, orbit_cameras
from lrm_fast.ops import composite, generate_rays, importance, ray_box, stratified
from lrm_fast.ops.raymarch import load_extension

pytestmark = pytest.mark.skipif(not load_extension()[0], reason=load_extension()[1])

SIZES = sizes(smoke=[(16, 8)], full=[(128, 64), (512, 64)], gpu=[(128, 64), (512, 64)])
BACKENDS = ["reference", "cpp"]


def _ids(p):
    return f"{p[0]}x{p[0]}-{p[1]}+{p[1]}"


def _rays_and_samples(res, n, backend, device):
    c2w = orbit_cameras([30.0], [20.0], device=device)
    K = default_intrinsics(device=device)[None]
    o, d = generate_rays(c2w, K, res, res, backend=backend)
    near, far, _ = ray_box(o[0], d[0], backend=backend)
    depths = stratified(near, far, n, backend=backend)
    w = torch.rand(depths.shape[0], n - 1, device=device, generator=None)
    return importance(depths, w, n, backend=backend)


@pytest.mark.parametrize("size", SIZES, ids=_ids)
@pytest.mark.parametrize("backend", BACKENDS)
def test_rays_and_samples(benchmark, size, backend, device):
    res, n = size
    torch.manual_seed(0)
    fn = lambda: _rays_and_samples(res, n, backend, device)
    mem = peak_memory_mb(fn, device)
    record(benchmark, "rays+samples", _ids(size), backend, backend != "reference", mem)
    benchmark(fn)


def _composite_inputs(res, n, device, grad):
    g = torch.Generator(device=device).manual_seed(0)
    R, S = res * res, 2 * n
    rgb = torch.rand(R, S, 3, device=device, generator=g)
    sigma = torch.rand(R, S, device=device, generator=g) * 4
    deltas = torch.full((R, S), 2.0 / S, device=device)
    depths = torch.cumsum(deltas, 1)
    bg = torch.ones(3, device=device)
    if grad:
        rgb.requires_grad_()
        sigma.requires_grad_()
    return rgb, sigma, deltas, depths, bg


@pytest.mark.parametrize("size", SIZES, ids=_ids)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", ["fwd", "fwdbwd"])
def test_composite(benchmark, size, backend, mode, device):
    res, n = size
    args = _composite_inputs(res, n, device, mode == "fwdbwd")

    def fn():
        if mode == "fwd":
            with torch.no_grad():
                return composite(*args, backend=backend)
        c, d, o = composite(*args, backend=backend)
        (c.sum() + d.sum() + o.sum()).backward()

    mem = peak_memory_mb(fn, device)
    extra = {"saved_mb": round(saved_tensors_mb(fn), 2)} if mode == "fwdbwd" else {}
    record(benchmark, f"composite_{mode}", _ids(size), backend, backend != "reference", mem, **extra)
    benchmark(fn)
