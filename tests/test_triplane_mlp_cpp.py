"""The ``cpp`` backend of ``triplane_mlp`` (csrc/triplane_mlp_cpu.cpp) against its twin."""
from __future__ import annotations

import pytest
import torch

from lrm_fast.ops import _dispatch
from lrm_fast.ops.triplane_mlp import _cpp_probe, triplane_mlp
from tests._twin import check_twin


def _built():
    from lrm_fast.ops.raymarch import load_extension

    return load_extension()[0] and _cpp_probe(torch.empty(1, 3, 1, 1, 1))[0]


pytestmark = pytest.mark.skipif(not _built(), reason="lrm_fast._C (with triplane_mlp_fwd) not built")


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


def _texel_edge_case(seed):
    """Planes [1, 3, 8, 4, 6] and points on texel centers, edges, box faces, just outside and far away."""
    g = torch.Generator().manual_seed(seed)
    H, W = 4, 6
    planes = torch.randn(1, 3, 8, H, W, generator=g)
    vals = torch.tensor([-1.0, 1.0, -1 + 1 / W, 1 - 1 / W, 0.0, -1.2, 1.2, 1 + 1 / W, -1 - 0.5 / H, 1e6, -1e6])
    pts = torch.cartesian_prod(vals, vals, vals)[None]
    ws, bs = _mlp(24, 16, 3, 4, g)
    return planes, pts, ws, bs


def test_points_on_texel_centers_edges_and_faces():
    _check(*_texel_edge_case(3), "concat", "relu")


def test_no_bias_and_noncontiguous_inputs():
    g = torch.Generator().manual_seed(4)
    planes = torch.randn(2, 3, 9, 6, 5, generator=g).transpose(3, 4)     # [2, 3, 9, 5, 6] strided
    pts = torch.rand(2, 3, 41, generator=g).transpose(1, 2) * 2 - 1      # [2, 41, 3] strided
    ws, bs = _mlp(27, 16, 3, 4, g, bias=False)
    ws = [w.t().contiguous().t() for w in ws]                              # column-major weights
    assert not planes.is_contiguous() and not pts.is_contiguous() and not ws[0].is_contiguous()
    _check(planes, pts, ws, bs, "concat", "silu")


def test_auto_picks_cpp_with_grad_and_refuses_points_grad():
    planes, pts, ws, bs = _case(1, 8, 8, 4, 4, "concat", 2)
    with torch.no_grad():
        assert _dispatch.resolve("triplane_mlp", "auto", planes, pts)[0] == "cpp"
    planes.requires_grad_(True)
    assert _dispatch.resolve("triplane_mlp", "auto", planes, pts)[0] == "cpp"
    # the fused kernel does not differentiate the points: auto takes the reference, cpp refuses
    pts.requires_grad_(True)
    name, _, why = _dispatch.resolve("triplane_mlp", "auto", planes, pts)
    assert name == "reference" and "points require grad" in why
    with pytest.raises(RuntimeError, match="points require grad"):
        triplane_mlp(planes, pts, ws, bs, backend="cpp")
    with torch.no_grad():   # no gradient wanted: points requiring grad are fine
        assert _dispatch.resolve("triplane_mlp", "auto", planes, pts)[0] == "cpp"


def test_refuses_other_dtypes():
    planes = torch.randn(1, 3, 4, 4, 4, dtype=torch.float64)
    ok, why = _cpp_probe(planes, torch.zeros(1, 2, 3, dtype=torch.float64))
    assert not ok and "float64" in why


def test_bad_inputs_name_the_problem():
    planes, pts, ws, bs = _case(1, 8, 8, 4, 4, "concat", 2)
    op = torch.ops.lrm_fast.triplane_mlp_fwd
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


# ---------------------------------------------------------------------------------------------
# backward (lrm_fast::triplane_mlp_bwd through the autograd formula of triplane_mlp_fwd)


def _check_grads(planes, pts, ws, bs, agg, act, v=None):
    """cpp vs the twin, forward and backward (planes, weights, biases; cotangent v or a seeded
    random one)."""
    L, has_b = len(ws), [b is not None for b in bs]

    def call(backend):
        def f(planes, *wb):
            it = iter(wb[L:])
            return triplane_mlp(planes, pts, list(wb[:L]), [next(it) if h else None for h in has_b], agg, act,
                                backend=backend)
        return f

    inputs = [planes, *ws, *[b for b in bs if b is not None]]
    names = ["out", "planes"] + [f"weights[{i}]" for i in range(L)] + [f"biases[{i}]" for i, h in enumerate(has_b) if h]
    # sums over N points: absolute error scales with the gradient's magnitude
    check_twin(call("cpp"), call("reference"), inputs, wrt=range(len(inputs)), names=names, seed=7,
               cots=None if v is None else [v],
               tol=lambda b: dict(rtol=1e-4, atol=1e-5 * max(1.0, b.abs().amax().item() if b.numel() else 0.0)))


@pytest.mark.parametrize("agg", ["concat", "sum", "mean"])
@pytest.mark.parametrize("act", ["relu", "silu", "softplus"])
@pytest.mark.parametrize("layers", [2, 4])
@pytest.mark.parametrize("C", [8, 40, 13])   # 13: not in the compile-time channel switch
def test_backward_matches_twin(agg, act, layers, C):
    planes, pts, ws, bs = _case(2, 37, C, 5, 7, agg, layers, seed=C + layers)   # odd, non-square planes
    _check_grads(planes, pts, ws, bs, agg, act)


@pytest.mark.parametrize("B,N", [(2, 0), (2, 1), (2, 37), (2, 200), (1, 200)])   # 200: 3 full blocks + tail
def test_backward_sizes(B, N):
    planes, pts, ws, bs = _case(B, N, 8, 6, 4, "concat", 3, seed=B * 100 + N)
    _check_grads(planes, pts, ws, bs, "concat", "silu")


@pytest.mark.parametrize("threads", [1, 3])
def test_backward_thread_counts(threads):
    """Slots (one per thread) split the blocks mid-batch-item: partial plane buffers must add up."""
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        planes, pts, ws, bs = _case(3, 150, 8, 5, 5, "mean", 3, seed=11)
        _check_grads(planes, pts, ws, bs, "mean", "relu")
    finally:
        torch.set_num_threads(old)


def test_backward_points_on_texel_centers_edges_and_outside():
    _check_grads(*_texel_edge_case(5), "concat", "relu")


def test_backward_no_bias_noncontiguous_and_expanded_v_out():
    g = torch.Generator().manual_seed(6)
    planes = torch.randn(2, 3, 9, 6, 5, generator=g).transpose(3, 4)
    pts = torch.rand(2, 3, 41, generator=g).transpose(1, 2) * 2 - 1
    ws, bs = _mlp(27, 16, 3, 4, g, bias=False)
    ws = [w.t().contiguous().t() for w in ws]
    _check_grads(planes, pts, ws, bs, "concat", "softplus")
    # out.sum() hands the op an expanded (stride-0) v_out
    _check_grads(planes, pts, ws, bs, "concat", "softplus", v=torch.ones(1, 1, 1).expand(2, 41, 4))


def test_backward_only_some_inputs_require_grad():
    planes, pts, ws, bs = _case(1, 50, 8, 4, 4, "concat", 3, seed=9)
    ws = [w.clone().requires_grad_(i == 1) for i, w in enumerate(ws)]
    out = triplane_mlp(planes, pts, ws, bs, backend="cpp")
    (gw,) = torch.autograd.grad(out.square().sum(), [ws[1]])
    ws_r = [w.detach().clone().requires_grad_(i == 1) for i, w in enumerate(ws)]
    (gw_r,) = torch.autograd.grad(triplane_mlp(planes, pts, ws_r, bs, backend="reference").square().sum(), [ws_r[1]])
    torch.testing.assert_close(gw, gw_r, rtol=1e-4, atol=1e-4)


def _op_args(N=37, C=8, agg=0, grad=True):
    planes, pts, ws, bs = _case(2, N, C, 5, 7, "concat" if agg == 0 else "sum", 3, seed=21)
    for t in [planes, *ws, *bs]:
        t.requires_grad_(grad)
    return planes, pts, ws, bs


def test_autograd_saves_nothing_per_point_per_hidden_unit():
    """Saved for backward: the inputs only (planes, points, weights, biases), nothing O(N * hidden)."""
    N, hidden = 3000, 16
    planes, pts, ws, bs = _case(1, N, 8, 4, 4, "concat", 4, seed=3)
    for t in [planes, *ws, *bs]:
        t.requires_grad_(True)
    sizes = {}
    for backend in ("reference", "cpp"):
        saved = []

        def pack(t, saved=saved):
            saved.append(t.numel())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = triplane_mlp(planes, pts, ws, bs, backend=backend)
        sizes[backend] = saved
        out.sum().backward()
    assert max(sizes["reference"]) >= N * hidden        # the twin does keep per-layer activations
    assert max(sizes["cpp"]) <= N * 3 and sum(sizes["cpp"]) < N * hidden


def test_double_backward_says_unsupported():
    planes, pts, ws, bs = _op_args(grad=True)
    out = triplane_mlp(planes, pts, ws, bs, backend="cpp")
    (g,) = torch.autograd.grad(out.square().sum(), [planes], create_graph=True)
    with pytest.raises(RuntimeError, match="no double backward"):
        g.sum().backward()


def test_bwd_bad_inputs_name_the_problem():
    planes, pts, ws, bs = _op_args(grad=False)
    op = torch.ops.lrm_fast.triplane_mlp_bwd
    with pytest.raises(RuntimeError, match="v_out must have shape"):
        op(torch.zeros(2, 37, 3), planes, pts, ws, bs, 0, 0)
    with pytest.raises(RuntimeError, match="v_out has dtype"):
        op(torch.zeros(2, 37, 4, dtype=torch.float64), planes, pts, ws, bs, 0, 0)
    with pytest.raises(RuntimeError, match=r"triplane_mlp_bwd: weights\[1\] must be \[out, 16\]"):
        op(torch.zeros(2, 37, 4), planes, pts, [ws[0], ws[1][:, :5], ws[2]], bs, 0, 0)


def test_renderer_fast_field_backward_matches_reference(tiny_model, monkeypatch):
    """Render-level: gradients to the planes and every field parameter, cpp field vs reference."""
    from lrm_fast.model.camera import default_intrinsics, orbit_cameras

    used = []
    resolve = _dispatch.resolve

    def spy(op, backend, *tensors):
        res = resolve(op, backend, *tensors)
        if op == "triplane_mlp":
            used.append((backend, res[0]))
        return res

    monkeypatch.setattr(_dispatch, "resolve", spy)

    r = tiny_model.renderer
    field = r.field
    for m in field.linears:   # non-zero biases so every bias gradient path matters
        torch.nn.init.normal_(m.bias, std=0.3)
    C = field.linears[0].in_features // (3 if field.cfg.aggregate == "concat" else 1)
    torch.manual_seed(4)
    planes = torch.randn(1, 3, C, 8, 8) * 2
    c2w = orbit_cameras([30.0], [15.0])[None]
    K = default_intrinsics()[None, None]
    got = {}
    try:
        for be in ("fast", "reference"):
            r.backend = field.backend = be
            p = planes.clone().requires_grad_()
            o = r(p, c2w, K, 12)
            g = torch.autograd.grad(o["rgb"].sum() + o["opacity"].sum(), [p] + list(field.parameters()))
            got[be] = [o["rgb"], *g]
    finally:
        r.backend = field.backend = "auto"
    # the fast render's field queries (with grad) really ran the C++ field
    assert {name for be, name in used if be == "fast"} == {"cpp"}
    assert {name for be, name in used if be == "reference"} == {"reference"}
    for a, b in zip(got["fast"], got["reference"]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=2e-5 * max(1.0, b.abs().max().item()))


_ISA_CHECK = r"""
import torch
from lrm_fast.ops.triplane_mlp import triplane_mlp
g = torch.Generator().manual_seed(1)
worst = 0.0
for C, agg, act, hidden in ((13, "concat", "silu", 21), (40, "mean", "relu", 64), (8, "sum", "softplus", 21)):
    planes = torch.randn(2, 3, C, 5, 7, generator=g)
    pts = (torch.rand(2, 150, 3, generator=g) * 2 - 1) * 1.2
    dims = [3 * C if agg == "concat" else C, hidden, hidden, 4]
    ws = [torch.randn(dims[i + 1], dims[i], generator=g) / dims[i] ** 0.5 for i in range(3)]
    bs = [torch.randn(dims[i + 1], generator=g) * 0.1 for i in range(3)]
    v = torch.randn(2, 150, 4, generator=g)
    res = []
    for be in ("reference", "cpp"):
        p = [planes.clone().requires_grad_()] + [t.clone().requires_grad_() for t in ws + bs]
        out = triplane_mlp(p[0], pts, p[1:4], p[4:], agg, act, backend=be)
        res.append([out, *torch.autograd.grad(out, p, v)])
    for a, b in zip(*res):
        worst = max(worst, ((a - b).abs() / (1e-5 * max(1.0, b.abs().max().item()) + 1e-4 * b.abs())).max().item())
print("WORST", worst)
"""


@pytest.mark.parametrize("isa", ["native", "avx2", "plain"])
def test_each_simd_build_matches_twin(isa):
    """The AVX-512 / AVX2 / portable kernels are picked at load time; LRM_FAST_CPU_ISA caps the
    choice, so each build is checked here (in a fresh process) whatever this CPU supports.
    Hidden width 21: every row tile of the weight-gradient kernel (8, 4 and 1 rows)."""
    import os
    import subprocess
    import sys

    env = dict(os.environ)
    env.pop("LRM_FAST_CPU_ISA", None)
    if isa != "native":
        env["LRM_FAST_CPU_ISA"] = isa
    r = subprocess.run([sys.executable, "-c", _ISA_CHECK], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    worst = float(r.stdout.split("WORST")[-1])
    assert worst <= 1.0, f"{isa}: error {worst:.2f}x the tolerance"


def test_auto_with_grad_and_few_points_takes_the_reference():
    """The cpp backward's per-thread plane buffers cost more than the reference's backward when
    points are few for the plane size; auto then runs the reference, an explicit "cpp" still the kernel."""
    import importlib

    tm = importlib.import_module("lrm_fast.ops.triplane_mlp")  # the module (the package exports the function)
    calls = []
    impl = next(i for i in tm._dispatch.implementations(tm.OP) if i.name == "cpp")

    def spy(*args):
        calls.append("cpp")
        return impl.fn(*args)

    tm._dispatch.register(tm.OP, "cpp", spy, impl.probe, prefer=impl.prefer, ext_ops=impl.ext_ops)
    try:
        planes = torch.randn(1, 3, 8, 32, 32, requires_grad=True)   # 24576 values
        w = [torch.randn(16, 24), torch.randn(4, 16)]
        b = [torch.zeros(16), torch.zeros(4)]
        few, many = torch.rand(1, 100, 3) * 2 - 1, torch.rand(1, 400, 3) * 2 - 1
        tm.triplane_mlp(planes, few, w, b)
        assert calls == []
        tm.triplane_mlp(planes, many, w, b)
        assert calls == ["cpp"]
        tm.triplane_mlp(planes, few, w, b, backend="cpp")
        with torch.no_grad():
            tm.triplane_mlp(planes, few, w, b)
        assert calls == ["cpp", "cpp", "cpp"]
    finally:
        tm._dispatch.register(tm.OP, "cpp", impl.fn, impl.probe, prefer=impl.prefer, ext_ops=impl.ext_ops)
