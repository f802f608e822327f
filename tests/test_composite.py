"""composite: the cpp kernel (lrm_fast._C) against its pure-torch twin, forward and backward."""
import pytest
import torch

from lrm_fast.ops import composite, composite_weights
from lrm_fast.ops.raymarch import load_extension
from tests._twin import DEVICES, assert_close, check_twin

pytestmark = pytest.mark.skipif(not load_extension()[0], reason=load_extension()[1])

TOL = {torch.float32: dict(atol=2e-5, rtol=1e-4), torch.float64: dict(atol=1e-10, rtol=1e-9)}


def _inputs(R, S, dtype, device="cpu", scale=3.0, seed=0, bg_shape=(3,)):
    g = torch.Generator().manual_seed(seed)
    rgb = torch.rand(R, S, 3, generator=g, dtype=dtype)
    sigma = torch.rand(R, S, generator=g, dtype=dtype) * scale
    deltas = torch.rand(R, S, generator=g, dtype=dtype) * 0.3 + 0.01
    depths = torch.cumsum(deltas, 1) + 1.0
    bg = torch.rand(*bg_shape, generator=g, dtype=dtype)
    return [t.to(device) for t in (rgb, sigma, deltas, depths, bg)]


def _compare(args, **kw):
    """cpp vs the twin, forward and backward (d rgb, d sigma, d background)."""
    check_twin(lambda *a: composite(*a, backend="cpp", **kw), lambda *a: composite(*a, backend="reference", **kw), args,
               wrt=(0, 1, 4), tol=TOL, names=("color", "depth", "opacity", "v_rgb", "v_sigma", "v_bg"))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("R,S", [(1, 1), (7, 5), (33, 64), (4, 2), (300, 48)])
def test_matches_twin(R, S, dtype, device):
    _compare(_inputs(R, S, dtype, device=device))


@pytest.mark.parametrize("case", ["zero_density", "huge_density", "per_ray_background", "one_opaque"])
def test_edge_cases(case):
    dtype = torch.float64
    rgb, sigma, deltas, depths, bg = _inputs(6, 9, dtype, bg_shape=(6, 3) if case == "per_ray_background" else (3,))
    if case == "zero_density":
        sigma.zero_()
    elif case == "huge_density":
        sigma.fill_(1e6)
    elif case == "one_opaque":
        sigma[:, 4] = 1e4
    _compare((rgb, sigma, deltas, depths, bg))


def test_empty_batch_and_empty_rays():
    for R, S in ((0, 8), (3, 0)):
        args = _inputs(R, S, torch.float32)
        ref = composite(*args, backend="reference")
        fast = composite(*args, backend="cpp")
        for a, b in zip(ref, fast):
            torch.testing.assert_close(b, a)


def test_non_contiguous_inputs():
    rgb, sigma, deltas, depths, bg = _inputs(8, 12, torch.float64)
    rgb_nc = rgb.transpose(0, 1).contiguous().transpose(0, 1)
    sigma_nc = sigma.t().contiguous().t()
    assert not rgb_nc.is_contiguous() and not sigma_nc.is_contiguous()
    _compare((rgb_nc, sigma_nc, deltas[:, :], depths, bg))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("early_stop", [1e-3, 0.3])
def test_early_stop_matches_twin(early_stop, dtype, device):
    """The twin stops as the kernel does (module docstring of ops/composite.py): the same truncated
    sums, forward and backward."""
    args = _inputs(64, 32, dtype, device=device, scale=30.0)
    _compare(args, early_stop=early_stop)
    stopped = composite(*args, backend="reference", early_stop=early_stop)[2]
    full = composite(*args, backend="reference")[2]
    assert (stopped < full).any(), "the case should stop early on some rays"
    assert ((full - stopped) <= early_stop).all()


def test_early_stop_twin_keeps_the_stopping_interval():
    """One ray by hand: T_1 = 0.5, T_2 = 0.05, T_3 = 0.0025; with early_stop 0.1 intervals 0 and 1
    are used (interval 1 takes T below 0.1), interval 2 is not."""
    dtype = torch.float64
    alpha = torch.tensor([[0.5, 0.9, 0.95]], dtype=dtype)
    deltas = torch.ones_like(alpha)
    sigma = -torch.log1p(-alpha)
    rgb = torch.rand(1, 3, 3, dtype=dtype, generator=torch.Generator().manual_seed(0))
    depths = torch.tensor([[1.0, 2.0, 3.0]], dtype=dtype)
    bg = torch.zeros(3, dtype=dtype)
    color, depth, opacity = composite(rgb, sigma, deltas, depths, bg, backend="reference", early_stop=0.1)
    w = torch.tensor([0.5, 0.5 * 0.9], dtype=dtype)  # T_EPS is below float64's resolution here
    torch.testing.assert_close(opacity, w.sum()[None])
    torch.testing.assert_close(color, (w[:, None] * rgb[0, :2]).sum(0)[None])
    torch.testing.assert_close(depth, ((w * depths[0, :2]).sum() / w.sum())[None])


def test_early_stop_is_bounded_and_backward_consistent():
    dtype = torch.float64
    rgb, sigma, deltas, depths, bg = _inputs(16, 32, dtype, scale=30.0)
    thresh = 1e-3
    ref = composite(rgb, sigma, deltas, depths, bg, backend="reference")
    fast = composite(rgb, sigma, deltas, depths, bg, backend="cpp", early_stop=thresh)
    for a, b in zip(ref, fast):
        assert (a - b).abs().max() <= 3 * thresh
    # the backward of the stopped forward is exact for that (truncated) function: gradcheck it
    rgb, sigma, bg = (t[:3, :6].clone().requires_grad_() if t.dim() > 1 else t.clone().requires_grad_()
                      for t in (rgb, sigma, bg))
    f = lambda r, s, b: composite(r, s, deltas[:3, :6], depths[:3, :6], b, backend="cpp", early_stop=0.3)
    assert torch.autograd.gradcheck(f, (rgb, sigma, bg))


@pytest.mark.filterwarnings("ignore:Input #")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_gradcheck(dtype):
    rgb, sigma, deltas, depths, bg = _inputs(3, 5, dtype)
    args = [t.clone().requires_grad_() for t in (rgb, sigma, bg)]
    f = lambda r, s, b: composite(r, s, deltas, depths, b, backend="cpp")
    kw = {} if dtype == torch.float64 else dict(eps=1e-3, atol=5e-3, rtol=5e-3)
    assert torch.autograd.gradcheck(f, args, **kw)


def test_weights_match_twin():
    _, sigma, deltas, _, _ = _inputs(9, 11, torch.float64)
    torch.testing.assert_close(composite_weights(sigma, deltas, backend="cpp"),
                               composite_weights(sigma, deltas, backend="reference"))


def test_bad_inputs_name_the_problem():
    rgb, sigma, deltas, depths, bg = _inputs(4, 6, torch.float32)
    with pytest.raises(RuntimeError, match="deltas has dtype"):
        torch.ops.lrm_fast.composite_fwd(rgb, sigma, deltas.double(), depths, bg.expand(4, 3), 0.0)
    with pytest.raises(RuntimeError, match="must be float32 or float64"):
        torch.ops.lrm_fast.composite_fwd(rgb.half(), sigma.half(), deltas.half(), depths.half(),
                                         bg.half().expand(4, 3), 0.0)
    with pytest.raises(RuntimeError, match="background must have shape"):
        torch.ops.lrm_fast.composite_fwd(rgb, sigma, deltas, depths, bg.expand(5, 3), 0.0)
    with pytest.raises(ValueError, match="composite shape mismatch"):
        composite(rgb[:, :5], sigma, deltas, depths, bg, backend="cpp")


def test_probe_declines_half_on_auto():
    rgb, sigma, deltas, depths, bg = (t.to(torch.bfloat16) for t in _inputs(2, 3, torch.float32))
    from lrm_fast.ops import _dispatch

    name, _, why = _dispatch.resolve("composite", "auto", sigma)
    assert name == "reference" and "bfloat16" in why
    with pytest.raises(RuntimeError, match="cannot run here"):
        composite(rgb, sigma, deltas, depths, bg, backend="cpp")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda_matches_cpu(dtype):
    args = _inputs(300, 48, dtype, device="cuda")
    cpu = composite(*(t.cpu() for t in args), backend="cpp")
    gpu = composite(*args, backend="cpp")
    for a, b in zip(cpu, gpu):
        torch.testing.assert_close(b.cpu(), a, **TOL[dtype])


@pytest.mark.gpu
def test_cuda_opcheck_and_gradcheck():
    rgb, sigma, deltas, depths, bg = _inputs(3, 5, torch.float64, device="cuda")
    args = [t.clone().requires_grad_() for t in (rgb, sigma, bg)]
    assert torch.autograd.gradcheck(lambda r, s, b: composite(r, s, deltas, depths, b, backend="cpp"), args)
    torch.library.opcheck(torch.ops.lrm_fast.composite_fwd,
                          (rgb.float(), sigma.float().requires_grad_(), deltas.float(), depths.float(),
                           bg.float().expand(3, 3).contiguous(), 0.0))


# -- fused: raw field samples -> pixels (composite_samples) -----------------------------------

from lrm_fast.ops.composite import _composite_samples_ref, composite_samples, composite_samples_weights  # noqa: E402


def _sample_inputs(R, S, dtype, device="cpu"):
    g = torch.Generator().manual_seed(0)
    t = torch.sort(torch.rand(R, S, generator=g, dtype=dtype) * 3 + 0.5, -1).values
    o = torch.tensor([0.0, 0.0, -2.5], dtype=dtype).expand(R, 3).contiguous()
    d = torch.nn.functional.normalize(torch.randn(R, 3, generator=g, dtype=dtype) * 0.3
                                      + torch.tensor([0.0, 0.0, 1.0], dtype=dtype), dim=-1)
    raw = torch.randn(R, S, 4, generator=g, dtype=dtype) * 3
    bg = torch.rand(3, generator=g, dtype=dtype)
    return [x.to(device) for x in (raw, t, o, d, bg)]


def _compare_samples(args, tol=TOL, **kw):
    """composite_samples: cpp vs the twin, forward and backward (d raw, d background)."""
    check_twin(lambda *a: composite_samples(*a, backend="cpp", **kw),
               lambda *a: composite_samples(*a, backend="reference", **kw), args, wrt=(0, 4), tol=tol,
               names=("color", "depth", "opacity", "v_raw", "v_bg"))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("midpoint", [True, False])
@pytest.mark.parametrize("act", ["softplus", "exp"])
@pytest.mark.parametrize("R,S", [(9, 12), (300, 40)])
def test_composite_samples_matches_twin(R, S, dtype, midpoint, act, device):
    args = _sample_inputs(R, S, dtype, device=device)
    kw = dict(midpoint=midpoint, density_activation=act)
    _compare_samples(args, **kw)
    raw, t, o, d, _ = args
    check_twin(lambda *a: composite_samples_weights(*a, backend="cpp", **kw),
               lambda *a: composite_samples_weights(*a, backend="reference", **kw), (raw, t, o, d), tol=TOL)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("midpoint", [True, False])
def test_composite_samples_early_stop_matches_twin(midpoint, dtype, device):
    args = _sample_inputs(64, 24, dtype, device=device)
    args[0][..., 0] += 6.0  # denser, so rays stop inside the ray
    kw = dict(midpoint=midpoint, early_stop=1e-2)
    _compare_samples(args, **kw)
    stopped = composite_samples(*args, backend="reference", **kw)[2]
    assert (stopped < composite_samples(*args, backend="reference", midpoint=midpoint)[2]).any()


def test_composite_samples_gradcheck():
    """(opcheck of every lrm_fast op: tests/test_twin_signatures.py)"""
    raw, t, o, d, bg = _sample_inputs(3, 6, torch.float64)
    f = lambda r, b: composite_samples(r, t, o, d, b, backend="cpp")
    assert torch.autograd.gradcheck(f, (raw.requires_grad_(), bg.requires_grad_()))


def test_composite_samples_edge_cases():
    # one sample per ray (no interval), empty batch, a ray entirely outside the box
    for R, S in ((4, 1), (0, 5)):
        args = _sample_inputs(R, S, torch.float64)
        for a, b in zip(composite_samples(*args, backend="reference"), composite_samples(*args, backend="cpp")):
            torch.testing.assert_close(b, a)
    raw, t, o, d, bg = _sample_inputs(3, 8, torch.float64)
    o = o.clone()
    o[1] = torch.tensor([5.0, 5.0, 5.0], dtype=torch.float64)
    _compare_samples((raw, t, o, d, bg), tol=dict(atol=1e-7, rtol=1e-7))  # assert_close's float64 default


# -- float32 vector path (composite_vec_cpu.h) against the float64 scalar path ----------------
# float32 CPU calls run the chunked SIMD code; float64 runs the scalar per-ray code shared with
# CUDA. Sizes hit the chunk (32 intervals) and SIMD tails; cases cover gating, huge/zero density,
# both activations, midpoint on/off and early stop. LRM_FAST_COMPOSITE_SCALAR=1 forces the scalar
# path for float32 (read at each call).

VEC_TOL = dict(atol=3e-5, rtol=3e-4)


def _vec_sample_inputs(R, S, case, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = torch.sort(torch.rand(R, S, generator=g, dtype=torch.float64) * 3 + 0.5, -1).values
    o = torch.tensor([0.0, 0.0, -2.5], dtype=torch.float64).expand(R, 3).clone()
    d = torch.nn.functional.normalize(torch.randn(R, 3, generator=g, dtype=torch.float64) * 0.3
                                      + torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64), dim=-1)
    raw = torch.randn(R, S, 4, generator=g, dtype=torch.float64) * 3
    bg = torch.rand(R, 3, generator=g, dtype=torch.float64)
    if case == "huge":  # opaque after a few samples: alpha = 1, T drops by 1e-10 per interval
        raw[:, S // 3:, 0] = 1e4
    elif case == "zero":  # no density anywhere (as gated): T stays 1, depth = last interval
        raw[..., 0] = -1e4
    elif case == "gated":  # every other ray entirely outside the box
        o[::2] = torch.tensor([5.0, 5.0, 5.0], dtype=torch.float64)
    elif case == "exp_clamp":  # density logits above the exp activation's clamp (15)
        raw[..., 0] = raw[..., 0] * 8
    # float32 inputs; the float64 scalar run gets the same values cast up
    return [x.float() for x in (raw, t, o, d, bg)]


def _gate_agrees(t, o, d):
    """[R] bool: every sample of the ray is gated alike in float32 and float64."""
    def inbox(t, o, d):
        p = o[:, None] + t[..., None] * d[:, None]
        return ((p >= -1.0) & (p <= 1.0)).all(-1)
    return (inbox(t, o, d) == inbox(t.double(), o.double(), d.double())).all(-1)


def _samples_fwd_bwd(raw, t, o, d, bg, act, mid, thresh, n_used=None):
    ops = torch.ops.lrm_fast
    p = (-1.0, 1.0, -1.0, act, mid)
    color, depth, opacity, t_final, nu = ops.composite_samples_fwd(raw, t, o, d, bg, *p, thresh)
    nu = nu if n_used is None else n_used
    g = torch.Generator().manual_seed(3)
    vc = torch.randn(color.shape, generator=g, dtype=torch.float64).to(color.dtype)
    vd = torch.randn(depth.shape, generator=g, dtype=torch.float64).to(color.dtype)
    vo = torch.randn(opacity.shape, generator=g, dtype=torch.float64).to(color.dtype)
    v_raw, v_bg = ops.composite_samples_bwd(vc, vd, vo, raw, t, o, d, bg, *p, depth, opacity, t_final, nu)
    w = ops.composite_samples_weights(raw, t, o, d, *p)
    return dict(color=color, depth=depth, opacity=opacity, n_used=nu, v_raw=v_raw, v_bg=v_bg, weights=w)


def _close(a, b, name, **tol):
    assert_close(a, b, name, **(tol or VEC_TOL))


@pytest.fixture(params=["native", "avx2", "plain"])
def isa(request):
    """Each vector test runs the CPU's own compilation, the AVX2+FMA one and the plain x86-64 one
    (lrm_fast::cpu_isa, csrc/cpu_isa.h: the cap only selects narrower builds than the CPU has)."""
    torch.ops.lrm_fast.cpu_isa(request.param)
    yield request.param
    torch.ops.lrm_fast.cpu_isa("native")


@pytest.mark.parametrize("S", [2, 3, 17, 64, 129])
@pytest.mark.parametrize("case", ["mixed", "huge", "zero", "gated", "exp_clamp"])
@pytest.mark.parametrize("act,mid", [(0, True), (1, True), (0, False), (1, False)])
def test_vector_samples_match_float64(S, case, act, mid, isa, monkeypatch):
    args = _vec_sample_inputs(6, S, case, seed=S)
    ref = _samples_fwd_bwd(*(x.double() for x in args), act, mid, 0.0)
    fwd32 = torch.ops.lrm_fast.composite_samples_fwd(*args, -1.0, 1.0, -1.0, act, mid, 0.0)
    # where opaque intervals (alpha = 1, keep = 1e-10) drop T through the 1e-20 floor, float32 and
    # float64 may stop an interval or two apart (the contributions there are < 1e-20)
    assert (fwd32[4] - ref["n_used"]).abs().max() <= (2 if case in ("huge", "exp_clamp") else 0)
    vec = _samples_fwd_bwd(*args, act, mid, 0.0, n_used=ref["n_used"])
    monkeypatch.setenv("LRM_FAST_COMPOSITE_SCALAR", "1")
    sca = _samples_fwd_bwd(*args, act, mid, 0.0, n_used=ref["n_used"])
    monkeypatch.delenv("LRM_FAST_COMPOSITE_SCALAR")
    # depth = sum(w t) / opacity is ill-conditioned in float32 where the opacity is ~1e-7 (both
    # float32 paths agree there; float64 differs): compare it with float64 where opacity > 1e-3
    # float64 rounds o + t d differently: a sample within an ulp of a box face may be gated in one
    # dtype only (a real difference of the inputs' rounding, not of the kernels): such rays are
    # compared with the scalar float32 path only
    g = _gate_agrees(*args[1:4])
    ok = g & (ref["opacity"] > 1e-3)
    for k in ("color", "depth", "opacity", "v_bg", "weights"):
        _close(vec[k][ok if k == "depth" else g], ref[k][ok if k == "depth" else g], k)
        _close(vec[k], sca[k], k + " (vs scalar float32)")
    # v_raw of the density logit scales with delta * T: compare against its own magnitude. The
    # scalar path walks back from the float32 forward's T_final, so only where the float32 and
    # float64 forwards used the same intervals
    same = fwd32[4] == ref["n_used"]
    # (the depth cotangent is divided by the opacity: ill-conditioned in float32 where it is ~0)
    for other, rows, what in ((ref, ok, "float64"), (sca, same, "scalar float32")):
        _close(vec["v_raw"][rows], other["v_raw"][rows], f"v_raw (vs {what})",
               atol=3e-5 * max(1.0, other["v_raw"].abs().max().item()), rtol=3e-4)


@pytest.mark.parametrize("S", [3, 64, 129])
@pytest.mark.parametrize("case", ["mixed", "huge"])
def test_vector_samples_early_stop(S, case, isa):
    args = _vec_sample_inputs(16, S, case, seed=S + 1)
    args[0][..., 0] += 8.0  # denser, so rays terminate inside the ray
    thresh = 1e-2
    ref = _samples_fwd_bwd(*(x.double() for x in args), 0, True, thresh)
    # backward at the float64 forward's n_used: both are then the gradient of the same truncation
    vec = _samples_fwd_bwd(*args, 0, True, thresh, n_used=ref["n_used"])
    full = _samples_fwd_bwd(*args, 0, True, 0.0)
    assert (ref["n_used"] < S - 1).any(), "the case should stop early on some rays"
    fwd32 = torch.ops.lrm_fast.composite_samples_fwd(*args[:4], args[4], -1.0, 1.0, -1.0, 0, True, thresh)
    same = (fwd32[4] == ref["n_used"]) & _gate_agrees(*args[1:4])
    assert same.float().mean() >= 0.8  # a ray whose T lands on the threshold may stop one later
    for k, i in (("color", 0), ("depth", 1), ("opacity", 2)):
        _close(fwd32[i][same], ref[k][same], k)
        assert (fwd32[i] - full[k]).abs().max() <= 3 * thresh  # stopping changes at most ~thresh
    for k in ("v_raw", "v_bg"):
        _close(vec[k][same], ref[k][same], k, atol=3e-5 * max(1.0, ref[k].abs().max().item()), rtol=3e-4)


@pytest.mark.parametrize("S", [1, 2, 3, 17, 64, 129])
@pytest.mark.parametrize("thresh", [0.0, 1e-2])
def test_vector_plain_composite_match_float64(S, thresh, isa):
    rgb, sigma, deltas, depths, bg = _inputs(7, S, torch.float64, scale=6.0, seed=S, bg_shape=(7, 3))
    if S > 4:
        sigma[0] = 0.0
        sigma[1, S // 2] = 1e6  # opaque: alpha = 1
    ops = torch.ops.lrm_fast
    out = {}
    for dt in (torch.float64, torch.float32):
        a = [x.to(dt) for x in (rgb, sigma, deltas, depths, bg)]
        c, dep, op, tf, nu = ops.composite_fwd(*a, thresh)
        if dt == torch.float32:
            same = nu == out[torch.float64][4]
            assert same.float().mean() >= 0.85
            nu = out[torch.float64][4]  # backward of the same truncation
        g = torch.Generator().manual_seed(5)
        v = [torch.randn(x.shape, generator=g, dtype=torch.float64).to(dt) for x in (c, dep, op)]
        grads = ops.composite_bwd(*v, *a, dep, op, tf, nu)
        out[dt] = (c, dep, op, tf, nu) + tuple(grads) + (ops.composite_weights(a[1], a[2]),)
    f64, f32 = out[torch.float64], out[torch.float32]
    same = f32[4] == f64[4]
    for i, k in ((0, "color"), (1, "depth"), (2, "opacity")):
        _close(f32[i][same], f64[i][same], k)
    for i, k in ((5, "v_rgb"), (6, "v_sigma"), (7, "v_bg"), (8, "weights")):
        _close(f32[i], f64[i], k, atol=3e-5 * max(1.0, f64[i].abs().max().item()), rtol=3e-4)


def test_vector_and_scalar_float32_agree(monkeypatch):
    """The env switch really selects the other path, and both float32 paths agree."""
    args = _vec_sample_inputs(40, 100, "mixed")
    vec = _samples_fwd_bwd(*args, 0, True, 0.0)
    monkeypatch.setenv("LRM_FAST_COMPOSITE_SCALAR", "1")
    sca = _samples_fwd_bwd(*args, 0, True, 0.0)
    monkeypatch.delenv("LRM_FAST_COMPOSITE_SCALAR")
    assert not torch.equal(vec["color"], sca["color"]) or not torch.equal(vec["v_raw"], sca["v_raw"])
    for k in ("color", "depth", "opacity", "v_bg", "weights"):
        _close(vec[k], sca[k], k)
    _close(vec["v_raw"], sca["v_raw"], "v_raw", atol=3e-5 * max(1.0, sca["v_raw"].abs().max().item()), rtol=3e-4)


def test_vector_gate_bit_exact_on_box_faces(isa):
    """Samples exactly on a box face (t chosen so o + t d == bmax in float32) are in the box, as the
    renderer's torch expression says; the vector gate must agree bit for bit."""
    R, S = 8, 40
    o = torch.tensor([0.0, 0.0, -2.0]).expand(R, 3).contiguous()
    d = torch.tensor([0.0, 0.0, 1.0]).expand(R, 3).contiguous()
    t = torch.linspace(0.5, 3.0, S).expand(R, S).contiguous()
    t[:, 5] = 1.0   # p_z = -1 exactly: inside
    t[:, 30] = 3.0  # p_z = 1 exactly: inside
    raw = torch.randn(R, S, 4, generator=torch.Generator().manual_seed(0))
    bg = torch.rand(R, 3)
    for mid in (True, False):
        ref = _composite_samples_ref(raw.double(), t.double(), o.double(), d.double(), bg.double(), midpoint=mid)
        fast = composite_samples(raw, t, o, d, bg, midpoint=mid, backend="cpp")
        for a, b in zip(ref, fast):
            _close(b, a, "out")


def test_vector_backward_writes_zero_tail(isa):
    """The vector backward returns v_raw from at::empty and must write the zeros of the samples that
    no used interval reaches itself (early stop): freed NaN memory of the same size is likely to be
    handed out again, so a missing write shows up as NaN."""
    args = _vec_sample_inputs(4, 64, "huge", seed=7)
    p = (-1.0, 1.0, -1.0, 0, True)
    color, depth, opacity, t_final, nu = torch.ops.lrm_fast.composite_samples_fwd(*args, *p, 0.0)
    assert (nu < 63).sum() >= 2  # (ray 1 of this seed runs outside the box and never stops)
    for _ in range(3):
        junk = torch.full((4, 64, 4), float("nan"))
        del junk
        v_raw, _ = torch.ops.lrm_fast.composite_samples_bwd(torch.ones(4, 3), torch.ones(4), torch.ones(4), *args,
                                                           *p, depth, opacity, t_final, nu)
        assert torch.isfinite(v_raw).all()
        for r in range(4):
            assert (v_raw[r, int(nu[r]) + 1:] == 0).all()
