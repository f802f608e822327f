"""The ``cpp`` backend of ``triplane_mlp`` (csrc/triplane_field_cpu.cpp) against its twin."""
from __future__ import annotations

import pytest
import torch

from lrm_fast.ops import _dispatch
from lrm_fast.ops.triplane_mlp import _cpp_probe, triplane_mlp


def _built():
    from lrm_fast.ops.raymarch import load_extension

    return load_extension()[0] and _cpp_probe(torch.empty(1, 3, 1, 1, 1))[0]


pytestmark = pytest.mark.skipif(not _built(), reason="lrm_fast._C (with triplane_field_fwd) not built")


def _mlp(in_dim, hidden, layers, out, g, bias=True):
    dims = [in_dim] + [hidden] * (layers - 1) + [out]
    ws = [torch.randn(dims[i + 1], dims[i], generator=g) / dims[i] ** 0.5 for i in range(layers)]
    bs = [torch.randn(dims[i + 1], generator=g) * 0.1 if bias else None for i in range(layers)]
    return ws, bs


def _case(B, N, C, H, W, agg, layers, seed=0, spread=1.3):
    g = torch.Generator().manual_seed(seed)
    planes = torch.randn(B, 3, C, H, W, generator=g)
    pts = (torch.rand(B, N, 3, generator=g) * 2 - 1) * spread   # some outside [-1, 1]^3
    ws, bs = _mlp(3 * C if agg == "concat" else C, 16, layers, 4, g)
    return planes, pts, ws, bs


def _check(planes, pts, ws, bs, agg, act):
    with torch.no_grad():
        ref = triplane_mlp(planes, pts, ws, bs, agg, act, backend="reference")
        got = triplane_mlp(planes, pts, ws, bs, agg, act, backend="cpp")
    assert got.shape == ref.shape and got.dtype == ref.dtype
    torch.testing.assert_close(got, ref, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("agg", ["concat", "sum", "mean"])
@pytest.mark.parametrize("act", ["relu", "silu", "softplus"])
@pytest.mark.parametrize("layers", [2, 4])   # 1 and 3 hidden layers
@pytest.mark.parametrize("C", [8, 40])
def test_forward_matches_twin(agg, act, layers, C):
    planes, pts, ws, bs = _case(2, 37, C, 5, 7, agg, layers)   # odd, non-square planes
    _check(planes, pts, ws, bs, agg, act)


@pytest.mark.parametrize("B,N", [(1, 0), (1, 1), (3, 37), (2, 200)])
def test_sizes_and_batches(B, N):
    planes, pts, ws, bs = _case(B, N, 8, 6, 4, "concat", 3, seed=B * 100 + N)
    _check(planes, pts, ws, bs, "concat", "relu")


def test_points_on_texel_centers_edges_and_faces():
    g = torch.Generator().manual_seed(3)
    H, W = 4, 6
    planes = torch.randn(1, 3, 8, H, W, generator=g)
    vals = torch.tensor([-1.0, 1.0, -1 + 1 / W, 1 - 1 / W, 0.0, -1.2, 1.2, 1 + 1 / W, -1 - 0.5 / H, 1e6, -1e6])
    pts = torch.cartesian_prod(vals, vals, vals)[None]
    ws, bs = _mlp(24, 16, 3, 4, g)
    _check(planes, pts, ws, bs, "concat", "relu")


def test_no_bias_and_noncontiguous_inputs():
    g = torch.Generator().manual_seed(4)
    planes = torch.randn(2, 3, 9, 6, 5, generator=g).transpose(3, 4)     # [2, 3, 9, 5, 6] strided
    pts = torch.rand(2, 3, 41, generator=g).transpose(1, 2) * 2 - 1      # [2, 41, 3] strided
    ws, bs = _mlp(27, 16, 3, 4, g, bias=False)
    ws = [w.t().contiguous().t() for w in ws]                              # column-major weights
    assert not planes.is_contiguous() and not pts.is_contiguous() and not ws[0].is_contiguous()
    _check(planes, pts, ws, bs, "concat", "silu")


def test_auto_picks_cpp_without_grad_and_refuses_grad():
    planes, pts, ws, bs = _case(1, 8, 8, 4, 4, "concat", 2)
    with torch.no_grad():
        assert _dispatch.resolve("triplane_mlp", "auto", planes, pts)[0] == "cpp"
    planes.requires_grad_(True)
    name, _, why = _dispatch.resolve("triplane_mlp", "auto", planes, pts)
    assert name == "reference" and "grad" in why
    with pytest.raises(RuntimeError, match="require grad"):
        triplane_mlp(planes, pts, ws, bs, backend="cpp")
    # parameters that want gradients: the cpp entry takes the differentiable twin
    planes.requires_grad_(False)
    ws[0].requires_grad_(True)
    out = triplane_mlp(planes, pts, ws, bs, backend="cpp")
    out.sum().backward()
    assert ws[0].grad is not None


def test_refuses_other_dtypes():
    planes = torch.randn(1, 3, 4, 4, 4, dtype=torch.float64)
    ok, why = _cpp_probe(planes, torch.zeros(1, 2, 3, dtype=torch.float64))
    assert not ok and "float64" in why


def test_bad_inputs_name_the_problem():
    planes, pts, ws, bs = _case(1, 8, 8, 4, 4, "concat", 2)
    op = torch.ops.lrm_fast.triplane_field_fwd
    bs = [b for b in bs]
    with pytest.raises(RuntimeError, match=r"weights\[1\] must be \[out, 16\]"):
        op(planes, pts, [ws[0], ws[1][:, :5]], bs, 0, 0)
    with pytest.raises(RuntimeError, match=r"biases\[0\] must be \[16\]"):
        op(planes, pts, ws, [bs[0][:3], bs[1]], 0, 0)
    with pytest.raises(RuntimeError, match="points must be"):
        op(planes, pts[..., :2], ws, bs, 0, 0)
    with pytest.raises(RuntimeError, match="points has dtype"):
        op(planes, pts.double(), ws, bs, 0, 0)
    with pytest.raises(RuntimeError, match="aggregate code"):
        op(planes, pts, ws, bs, 5, 0)


def test_renderer_fast_backend_matches_reference_16px(tiny_model):
    from lrm_fast.model.camera import default_intrinsics, orbit_cameras

    r = tiny_model.renderer
    torch.manual_seed(2)
    planes = torch.randn(1, 3, tiny_model.renderer.field.linears[0].in_features // 3
                         if tiny_model.renderer.field.cfg.aggregate == "concat"
                         else tiny_model.renderer.field.linears[0].in_features, 8, 8)
    c2w = orbit_cameras([30.0, 200.0], [10.0, -20.0])[None]
    K = default_intrinsics()[None, None].expand(1, 2, 4)
    outs = []
    with torch.no_grad():
        for backend in ("reference", "fast"):
            r.backend = backend
            outs.append(r(planes, c2w, K, 16))
    r.backend = "auto"
    for k in ("rgb", "depth", "opacity"):
        torch.testing.assert_close(outs[1][k], outs[0][k], atol=2e-5, rtol=1e-4)
