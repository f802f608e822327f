"""Rays, samples and compositing: the cpp kernels (lrm_fast._C) vs the pure-torch twins.

Cases (each reference and cpp in the same run, same inputs):
  * ``rays+samples``: generate_rays + ray_box + stratified (64) + importance (64) for one view;
  * ``composite_fwd``: compositing forward, 128 intervals per ray;
  * ``composite_fwdbwd``: forward + backward to rgb, sigma, background;
  * ``composite_samples_fwd`` / ``_fwdbwd`` / ``composite_samples_weights``: the fused raw-samples
    op of the renderer's fast path (gate, activations, intervals, compositing), 128 samples per
    ray; on CPU also ``cpp-scalar`` (the scalar per-ray code, LRM_FAST_COMPOSITE_SCALAR=1) next to
    the vectorized ``cpp``.
Sizes: smoke 16x16 (S=16); full 128x128 and 512x512 with 64+64 samples.
Run: ``LRM_FAST_BENCH=full .venv/bin/python -m pytest bench/suites/bench_raymarch.py -p no:cacheprovider``.
"""
import pytest
import torch


from bench.lib.mem import peak_memory_mb, saved_tensors_mb
from bench.suites.conftest import record, sizes
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


# -- fused raw samples -> pixels (composite_samples, the renderer's fast path) ------------------
# backends: "reference" (the torch twin: the renderer's own gating/activation/_intervals/composite
# steps), "cpp" (float32: the vectorized CPU kernel; CUDA kernel on a GPU) and, on CPU,
# "cpp-scalar" (the same op with LRM_FAST_COMPOSITE_SCALAR=1: the scalar per-ray code the CPU ran
# before the vector path, i.e. the before/after of that change in one run).
SAMPLE_BACKENDS = ["reference", "cpp"] + (["cpp-scalar"] if not torch.cuda.is_available() else [])


def _sample_case_inputs(res, n, device, grad):
    g = torch.Generator().manual_seed(0)
    R, S = res * res, 2 * n
    # rays from z = -2.5 towards the unit box, samples over [1.4, 3.6] (about the box's chord),
    # raw field outputs ~ N(0, 3^2): mixed density, some samples gated outside the box
    t = torch.sort(torch.rand(R, S, generator=g) * 2.2 + 1.4, -1).values
    o = torch.tensor([0.0, 0.0, -2.5]).expand(R, 3).contiguous()
    d = torch.nn.functional.normalize(torch.randn(R, 3, generator=g) * 0.2 + torch.tensor([0.0, 0.0, 1.0]), dim=-1)
    raw = torch.randn(R, S, 4, generator=g) * 3
    bg = torch.ones(3)
    raw, t, o, d, bg = (x.to(device) for x in (raw, t, o, d, bg))
    if grad:
        raw.requires_grad_()
    return raw, t, o, d, bg


def _scalar_env(backend):
    """context: LRM_FAST_COMPOSITE_SCALAR=1 for the cpp-scalar backend"""
    import contextlib
    import os

    @contextlib.contextmanager
    def ctx():
        if backend != "cpp-scalar":
            yield
            return
        os.environ["LRM_FAST_COMPOSITE_SCALAR"] = "1"
        try:
            yield
        finally:
            del os.environ["LRM_FAST_COMPOSITE_SCALAR"]
    return ctx()


@pytest.mark.parametrize("size", SIZES, ids=_ids)
@pytest.mark.parametrize("backend", SAMPLE_BACKENDS)
@pytest.mark.parametrize("mode", ["fwd", "fwdbwd"])
def test_composite_samples(benchmark, size, backend, mode, device):
    from lrm_fast.ops.composite import composite_samples

    res, n = size
    args = _sample_case_inputs(res, n, device, mode == "fwdbwd")
    be = "cpp" if backend == "cpp-scalar" else backend

    def fn():
        with _scalar_env(backend):
            if mode == "fwd":
                with torch.no_grad():
                    return composite_samples(*args, backend=be)
            c, d, o = composite_samples(*args, backend=be)
            (c.sum() + d.sum() + o.sum()).backward()

    mem = peak_memory_mb(fn, device)
    record(benchmark, f"composite_samples_{mode}", _ids(size), backend, backend != "reference", mem,
           rays=res * res, samples=2 * n)
    benchmark(fn)


@pytest.mark.parametrize("size", SIZES, ids=_ids)
@pytest.mark.parametrize("backend", SAMPLE_BACKENDS)
def test_composite_samples_weights(benchmark, size, backend, device):
    from lrm_fast.ops.composite import composite_samples_weights

    res, n = size
    raw, t, o, d, _ = _sample_case_inputs(res, n, device, False)
    be = "cpp" if backend == "cpp-scalar" else backend

    def fn():
        with _scalar_env(backend):
            return composite_samples_weights(raw, t, o, d, backend=be)

    mem = peak_memory_mb(fn, device)
    record(benchmark, "composite_samples_weights", _ids(size), backend, backend != "reference", mem,
           rays=res * res, samples=2 * n)
    benchmark(fn)
