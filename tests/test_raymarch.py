"""Rays and samples: the cpp kernels (lrm_fast._C) against their pure-torch twins."""
import pytest
import torch

from lrm_fast.model.camera import default_intrinsics, orbit_cameras
from lrm_fast.ops import generate_rays, importance, ray_box, stratified
from lrm_fast.ops.raymarch import load_extension
from tests._twin import DEVICES, EXACT, check_twin

pytestmark = pytest.mark.skipif(not load_extension()[0], reason=load_extension()[1])


def _cams(dtype=torch.float32, device="cpu"):
    c2w = orbit_cameras([0.0, 45.0, 200.0], [10.0, -20.0, 80.0]).to(dtype)   # [3, 4, 4]
    K = default_intrinsics().to(dtype).expand(3, 4).clone()
    K[1, 0] *= 1.3                                                       # fx != fy on one camera
    return c2w.to(device)[None], K.to(device)[None]                     # [1, 3, ...]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("hw", [(5, 7), (1, 1)])
def test_generate_rays(dtype, hw):
    c2w, K = _cams(dtype)
    ref = generate_rays(c2w, K, *hw, backend="reference")
    fast = generate_rays(c2w, K, *hw, backend="cpp")
    for a, b in zip(ref, fast):
        assert b.shape == a.shape
        torch.testing.assert_close(b, a)


def test_generate_rays_pixel_subset_and_noncontiguous():
    c2w, K = _cams(torch.float64)
    g = torch.Generator().manual_seed(0)
    pixels = torch.stack([torch.randint(0, 9, (1, 3, 11), generator=g),
                          torch.randint(0, 6, (1, 3, 11), generator=g)], -1)     # [1, 3, 11, 2]
    c2w_nc = c2w.transpose(-1, -2).contiguous().transpose(-1, -2)
    ref = generate_rays(c2w, K, 9, 6, pixels, backend="reference")
    fast = generate_rays(c2w_nc, K, 9, 6, pixels.int(), backend="cpp")
    for a, b in zip(ref, fast):
        torch.testing.assert_close(b, a)


def test_generate_rays_bad_inputs():
    c2w, K = _cams()
    with pytest.raises(RuntimeError, match="intrinsics has dtype"):
        torch.ops.lrm_fast.generate_rays(c2w[0], K[0].double(), 4, 4, None)
    with pytest.raises(RuntimeError, match="pixels must be an integer tensor"):
        torch.ops.lrm_fast.generate_rays(c2w[0], K[0], 4, 4, torch.zeros(3, 2, 2))
    with pytest.raises(RuntimeError, match="height and width must be positive"):
        torch.ops.lrm_fast.generate_rays(c2w[0], K[0], 0, 4, None)


def _rays(dtype):
    g = torch.Generator().manual_seed(0)
    o = torch.randn(200, 3, generator=g, dtype=dtype) * 2.5
    d = torch.nn.functional.normalize(torch.randn(200, 3, generator=g, dtype=dtype), dim=-1)
    # edge cases: axis-aligned (zero components), grazing a face, inside the box, pointing away
    o[0], d[0] = torch.tensor([0.0, 0.0, 3.0]), torch.tensor([0.0, 0.0, -1.0])
    o[1], d[1] = torch.tensor([1.0, -3.0, 0.2]), torch.tensor([0.0, 1.0, 0.0])   # on the x = 1 face
    o[2], d[2] = torch.tensor([0.1, 0.2, 0.3]), torch.tensor([0.6, 0.0, 0.8])    # inside
    o[3], d[3] = torch.tensor([0.0, 0.0, 3.0]), torch.tensor([0.0, 0.0, 1.0])    # away
    o[4], d[4] = torch.tensor([5.0, 0.0, 5.0]), torch.tensor([0.0, 0.0, -1.0])   # misses
    return o, d


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_ray_box(dtype):
    o, d = _rays(dtype)
    ref = ray_box(o, d, -1.0, 1.0, backend="reference")
    fast = ray_box(o, d, -1.0, 1.0, backend="cpp")
    for a, b in zip(ref, fast):
        torch.testing.assert_close(b, a)
    near, far, hit = fast
    assert not hit[3] and not hit[4] and hit[0] and hit[2]
    assert torch.isfinite(near).all() and torch.isfinite(far).all()
    assert (near[~hit] == 0).all() and (far[~hit] == 0).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n", [1, 2, 33])
@pytest.mark.parametrize("jitter", [False, True])
def test_stratified(dtype, n, jitter):
    g = torch.Generator().manual_seed(0)
    near = torch.rand(5, 7, generator=g, dtype=dtype)
    far = near + torch.rand(5, 7, generator=g, dtype=dtype)
    ref = stratified(near, far, n, jitter, torch.Generator().manual_seed(3), backend="reference")
    fast = stratified(near, far, n, jitter, torch.Generator().manual_seed(3), backend="cpp")
    torch.testing.assert_close(fast, ref)


def test_stratified_empty_batch():
    z = torch.zeros(0)
    assert stratified(z, z, 4, backend="cpp").shape == (0, 4)


def _coarse(dtype, R=40, S=16):
    g = torch.Generator().manual_seed(0)
    depths = torch.sort(torch.rand(R, S, generator=g, dtype=dtype) * 2 + 1, -1).values
    w = torch.rand(R, S - 1, generator=g) ** 4
    w[0] = 0.0          # an empty ray: uniform pdf from the smoothing's +0.01
    w[1] = 0.0          # a sharp surface
    w[1, (S - 1) // 2] = 1.0
    return depths, w


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("det", [True, False])
@pytest.mark.parametrize("S,n", [(16, 16), (4, 3), (9, 1)])
def test_importance(dtype, det, S, n):
    depths, w = _coarse(dtype, S=S)
    ref = importance(depths, w, n, det, torch.Generator().manual_seed(5), backend="reference")
    fast = importance(depths, w, n, det, torch.Generator().manual_seed(5), backend="cpp")
    # the CDF is float32 in both; summation order may differ by an ulp
    torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-5)


def test_importance_bad_inputs():
    depths, w = _coarse(torch.float32)
    with pytest.raises(RuntimeError, match="weights must have shape"):
        torch.ops.lrm_fast.importance(depths, w[:, :-1].contiguous(), 4, None)
    with pytest.raises(RuntimeError, match="S >= 4"):
        torch.ops.lrm_fast.importance(depths[:, :3].contiguous(), w[:, :2].contiguous(), 4, None)


def test_auto_declines_when_a_gradient_is_wanted():
    from lrm_fast.ops import _dispatch

    c2w, K = _cams()
    name, _, why = _dispatch.resolve("generate_rays", "auto", c2w.requires_grad_())
    assert name == "reference" and "require grad" in why


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda_matches_twin(dtype):
    c2w, K = _cams(dtype, "cuda")
    for a, b in zip(generate_rays(c2w, K, 13, 9, backend="reference"), generate_rays(c2w, K, 13, 9, backend="cpp")):
        torch.testing.assert_close(b, a)
    o, d = (t.cuda() for t in _rays(dtype))
    for a, b in zip(ray_box(o, d, backend="reference"), ray_box(o, d, backend="cpp")):
        torch.testing.assert_close(b, a)
    near, far, _ = ray_box(o, d, backend="cpp")
    gen = lambda: torch.Generator("cuda").manual_seed(0)
    torch.testing.assert_close(stratified(near, far, 7, True, gen(), backend="cpp"),
                               stratified(near, far, 7, True, gen(), backend="reference"))
    depths, w = (t.cuda() for t in _coarse(dtype))
    for det in (True, False):
        torch.testing.assert_close(importance(depths, w, 12, det, gen(), backend="cpp"),
                                   importance(depths, w, 12, det, gen(), backend="reference"), atol=1e-5, rtol=1e-5)


# ---- merge_samples: coarse + importance sets -> one sorted set ----------------------------------

def _sorted_sets(R, A, B, K, dtype, ties=False):
    gen = torch.Generator().manual_seed(3)
    ta = torch.rand(R, A, generator=gen, dtype=dtype).sort(-1).values
    tb = torch.rand(R, B, generator=gen, dtype=dtype).sort(-1).values
    if ties and A and B:  # equal depths across the sets: the stable order puts `a` first
        tb[:, 0] = ta[:, A // 2]
        tb = tb.sort(-1).values
    va = torch.randn(R, A, K, generator=gen, dtype=dtype)
    vb = torch.randn(R, B, K, generator=gen, dtype=dtype)
    return ta, va, tb, vb



@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("R,A,B,K", [(7, 5, 4, 4), (3, 1, 6, 2), (2, 6, 0, 4), (2, 0, 3, 4), (0, 4, 4, 4),
                                     (130, 64, 64, 4), (300, 64, 64, 4)])
@pytest.mark.parametrize("ties", [False, True])
def test_merge_samples_matches_twin_forward_and_backward(dtype, R, A, B, K, ties, device):
    from lrm_fast.ops import merge_samples

    args = [x.to(device) for x in _sorted_sets(R, A, B, K, dtype, ties)]
    # a merge moves values: bit-exact, forward and backward
    t, _, _, _ = check_twin(lambda *a: merge_samples(*a, backend="cpp"),
                            lambda *a: merge_samples(*a, backend="reference"), args, wrt=(1, 3), tol=EXACT,
                            names=("t", "v", "v_a", "v_b"))
    assert torch.all(t[:, 1:] >= t[:, :-1])



def test_merge_samples_gradcheck_and_noncontiguous():
    from lrm_fast.ops import merge_samples

    ta, va, tb, vb = _sorted_sets(5, 6, 3, 4, torch.float64)
    a, b = va.clone().requires_grad_(), vb.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda x, y: merge_samples(ta, x, tb, y, backend="cpp")[1], (a, b))
    # non-contiguous values (a slice of a wider tensor) and depths (a transposed copy)
    wide = torch.randn(5, 6, 8, dtype=torch.float64)
    tt = ta.t().contiguous().t()
    got = merge_samples(tt, wide[..., ::2], tb, vb, backend="cpp")
    want = merge_samples(ta, wide[..., ::2].contiguous(), tb, vb, backend="reference")
    assert all(torch.equal(x, y) for x, y in zip(got, want))



def test_merge_samples_bad_inputs_and_dispatch():
    from lrm_fast.ops import _dispatch, merge_samples

    ta, va, tb, vb = _sorted_sets(3, 4, 2, 4, torch.float32)
    with pytest.raises(ValueError, match="v_b"):
        merge_samples(ta, va, tb, vb[..., :3])
    with pytest.raises(ValueError, match="t_a"):
        merge_samples(ta[0], va, tb, vb)
    with pytest.raises(RuntimeError, match="v_b has dtype"):
        torch.ops.lrm_fast.merge_samples(ta, va, tb, vb.double())
    with pytest.raises(RuntimeError, match="v_v must be"):
        torch.ops.lrm_fast.merge_samples_bwd(va, ta, tb)
    # depths that require grad, or mixed dtypes: the twin runs (the kernel has no depth gradient)
    assert _dispatch.resolve("merge_samples", "auto", ta.requires_grad_(), va, tb, vb)[0] == "reference"
    assert _dispatch.resolve("merge_samples", "auto", ta.detach(), va.double(), tb, vb)[0] == "reference"
    assert _dispatch.resolve("merge_samples", "auto", ta.detach(), va, tb, vb)[0] == "cpp"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("R,S", [(37, 13), (1, 1), (0, 5), (3, 0)])
def test_ray_points_bit_exact_with_twin(dtype, R, S):
    from lrm_fast.ops import ray_points

    gen = torch.Generator().manual_seed(1)
    o = torch.randn(R, 3, generator=gen, dtype=dtype) * 3
    d = torch.nn.functional.normalize(torch.randn(R, 3, generator=gen, dtype=dtype), dim=-1)
    t = torch.rand(R, S, generator=gen, dtype=dtype) * 4
    got, want = ray_points(o, d, t, backend="cpp"), ray_points(o, d, t, backend="reference")
    assert got.shape == (R, S, 3) and torch.equal(got, want)  # the renderer's gate relies on the bits
    if R and S:
        assert torch.equal(ray_points(o.t().contiguous().t(), d, t.t().contiguous().t(), backend="cpp"), want)


def test_ray_points_bad_inputs_and_no_grad():
    from lrm_fast.ops import _dispatch, ray_points

    o, d, t = torch.zeros(4, 3), torch.ones(4, 3), torch.rand(4, 6)
    with pytest.raises(ValueError, match="depths"):
        ray_points(o, d, t[0])
    with pytest.raises(RuntimeError, match="dirs has dtype"):
        torch.ops.lrm_fast.ray_points(o, d.double(), t)
    assert _dispatch.resolve("ray_points", "auto", t.requires_grad_(), o, d)[0] == "reference"


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda_ray_points_match_twin(dtype):
    from lrm_fast.ops import ray_points

    ta = _sorted_sets(300, 64, 64, 4, dtype, ties=True)[0].cuda()
    o = torch.randn(300, 3, dtype=dtype, device="cuda")
    d = torch.nn.functional.normalize(torch.randn(300, 3, dtype=dtype, device="cuda"), dim=-1)
    assert torch.equal(ray_points(o, d, ta, backend="cpp"), ray_points(o, d, ta, backend="reference"))
