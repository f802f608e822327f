"""Full render of a triplane: the reference renderer vs the fast backend (lrm_fast._C kernels),
same model, same triplane, same cameras, in one run.

Model: the ``tiny`` preset (random weights; triplane 8 channels, field MLP 16 wide) with 64+64
samples per ray, so the renderer, not the field, is what is measured. Cases: forward (no grad)
and forward+backward (gradient to the triplane and the field's weights). Sizes: smoke 16x16,
full 128x128.

Two pairings:

* ``render_fwd`` / ``render_fwdbwd``: the one backend switch (``set_backend``): the reference
  renderer is pure PyTorch end to end (its field included), the fast one uses every fast kernel
  (rays, samples, merge, compositing and the C++ CPU field). This is what a user switches.
* ``render_fwd_samefield`` / ``render_fwdbwd_samefield``: the field is pinned to the fast path in
  both, so the ratio is what the ray-marching and compositing kernels alone buy.
Run: ``LRM_FAST_BENCH=full .venv/bin/python -m pytest bench/suites/bench_render.py -p no:cacheprovider``.
"""
import pytest
import torch


from bench.lib.mem import peak_memory_mb, saved_tensors_mb
from bench.suites.conftest import record, sizes
from lrm_fast.config import LRMConfig, RenderConfig
from lrm_fast.model.camera import default_intrinsics, orbit_cameras
from lrm_fast.ops.raymarch import load_extension

pytestmark = pytest.mark.skipif(not load_extension()[0], reason=load_extension()[1])

SIZES = sizes(smoke=[16], full=[128], gpu=[128, 512])


@pytest.fixture(scope="module")
def renderer():
    from lrm_fast.model.lrm import LRM

    torch.manual_seed(0)
    model = LRM(LRMConfig.preset("tiny"))
    r = model.renderer
    r.cfg = RenderConfig(**{**r.cfg.__dict__, "samples_per_ray": 128})
    return r


@pytest.mark.parametrize("res", SIZES)
@pytest.mark.parametrize("backend", ["reference", "fast"])
@pytest.mark.parametrize("mode", ["fwd", "fwdbwd"])
@pytest.mark.parametrize("field", ["switched", "samefield"])
def test_render(benchmark, renderer, res, backend, mode, field, device):
    renderer.to(device)
    torch.manual_seed(0)
    planes = torch.randn(1, 3, 8, 8, 8, device=device) * 2
    c2w = orbit_cameras([30.0], [20.0], device=device)[None]
    K = default_intrinsics(device=device)[None, None]

    def fn():
        renderer.backend = backend
        renderer.field.backend = backend if field == "switched" else "fast"
        if mode == "fwd":
            with torch.no_grad():
                return renderer(planes, c2w, K, res)
        p = planes.clone().requires_grad_()
        out = renderer(p, c2w, K, res)
        (out["rgb"].sum() + out["opacity"].sum()).backward()

    mem = peak_memory_mb(fn, device)
    extra = {"saved_mb": round(saved_tensors_mb(fn), 2)} if mode == "fwdbwd" else {}
    stage = f"render_{mode}" + ("_samefield" if field == "samefield" else "")
    record(benchmark, stage, f"{res}x{res}-64+64-tiny", backend, backend != "reference", mem, **extra)
    benchmark(fn)
