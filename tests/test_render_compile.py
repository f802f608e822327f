"""The exact render is one graph: ``torch.compile(fullgraph=True)`` captures a whole exact-mode render
of the tiny preset on the path a GPU takes (``compact_misses="never"``), with the reference ops and with
the C++ ops (their fake kernels let the tracer through), and the compiled render gives the eager one's
image. The GPU issue's precondition for a CUDA graph / ``mode="reduce-overhead"`` of the whole step."""
import pytest
import torch
import torch._dynamo

from lrm_fast.cameras import default_intrinsics, orbit_cameras
from lrm_fast.ops._ext import load_extension


@pytest.mark.parametrize("backend", ["reference", "cpp"])
def test_exact_render_is_one_graph(tiny_model, backend):
    if backend == "cpp" and not load_extension()[0]:
        pytest.skip(load_extension()[1])
    m = tiny_model.eval().set_backend(backend)
    m.renderer.compact_misses = "never"
    C, H = m.cfg.triplane.channels, m.cfg.triplane.high_res
    planes = torch.randn(1, 3, C, H, H)
    c2w = orbit_cameras([30.0], [20.0], 2.0)[None]
    K = default_intrinsics(0.75).expand(1, 1, 4)
    assert m.renderer.marcher_name(planes) == "exact"

    def render(p, c, k):
        out = m.render(p, c, k, 16)
        return out["rgb"], out["depth"], out["opacity"]

    torch._dynamo.reset()
    try:
        with torch.no_grad():
            explained = torch._dynamo.explain(render)(planes, c2w, K)
            assert explained.graph_break_count == 0, [r.reason for r in explained.break_reasons]
            assert explained.graph_count == 1
            want = render(planes, c2w, K)
            got = torch.compile(render, fullgraph=True, backend="eager")(planes, c2w, K)
    finally:
        torch._dynamo.reset()
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)
