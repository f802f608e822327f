"""Occupancy grid and empty-space skipping: the packed compositing ops (C++ against the twin and
against the dense op applied ray by ray), the grid's construction (brute force), the sample
lookup (closed form), the skipping renderer against the exact render, and the exact switch."""
import math
import os

import pytest
import torch

from lrm_fast.config import FieldConfig, RenderConfig
from lrm_fast.model.camera import default_intrinsics, orbit_cameras
from lrm_fast.ops import _dispatch
from lrm_fast.ops.composite import _composite_samples_ref, composite_samples_weights
from lrm_fast.ops.occupancy import (composite_samples_packed, composite_samples_packed_weights, occupancy_gather,
                                    occupancy_lookup, occupancy_mark, occupancy_merge, occupancy_pack,
                                    occupancy_unpack, offsets_from_mask, ray_indices, with_neighbours)
from lrm_fast.field.triplane import TriplaneField
from lrm_fast.field.occupancy import OccupancyGrid, build_occupancy
from lrm_fast.render.renderer import Renderer
from tests._twin import DEVICES, check_twin

HAS_CPP = _dispatch.resolve("composite_samples_packed", "auto", torch.zeros(1))[0] == "cpp"
needs_cpp = pytest.mark.skipif(not HAS_CPP, reason="lrm_fast._C not built")


def _packed_case(counts, dtype=torch.float64, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    R, N = len(counts), sum(counts)
    off = torch.zeros(R + 1, dtype=torch.long)
    off[1:] = torch.tensor(counts, dtype=torch.long).cumsum(0)
    o = torch.randn(R, 3, generator=g, dtype=dtype) * 0.3 - torch.tensor([0.0, 2.2, 0.0], dtype=dtype)
    d = torch.nn.functional.normalize(torch.tensor([0.0, 1.0, 0.0], dtype=dtype) +
                                      0.2 * torch.randn(R, 3, generator=g, dtype=dtype), dim=-1)
    t = torch.cat([torch.sort(torch.rand(c, generator=g, dtype=dtype) * 3.4 + 0.6).values for c in counts]) \
        if N else torch.zeros(0, dtype=dtype)
    raw = torch.randn(N, 4, generator=g, dtype=dtype) * 3
    bg = torch.rand(R, 3, generator=g, dtype=dtype)
    return [x.to(device) for x in (raw, t, off, o, d, bg)]


def _per_ray(raw, t, off, o, d, bg, **kw):
    """The truth: composite.py's dense twin on each ray's own slice."""
    cols, deps, ops = [], [], []
    for i in range(off.shape[0] - 1):
        a, b = int(off[i]), int(off[i + 1])
        if b - a < 2:  # no interval
            cols.append(bg[i][None]), deps.append(bg.new_zeros(1)), ops.append(bg.new_zeros(1))
            continue
        c, dd, op = _composite_samples_ref(raw[None, a:b], t[None, a:b], o[i:i + 1], d[i:i + 1], bg[i:i + 1], **kw)
        cols.append(c), deps.append(dd), ops.append(op)
    return torch.cat(cols), torch.cat(deps), torch.cat(ops)


COUNTS = [0, 1, 2, 5, 17, 40, 3, 0, 33]
PARAMS = [dict(), dict(midpoint=False), dict(density_activation="exp"), dict(box_min=-0.5, box_max=0.7)]


@pytest.mark.parametrize("backend", ["reference", pytest.param("cpp", marks=needs_cpp)])
@pytest.mark.parametrize("kw", PARAMS, ids=lambda k: ",".join(f"{a}={b}" for a, b in k.items()) or "default")
def test_packed_equals_dense_op_ray_by_ray(backend, kw):
    raw, t, off, o, d, bg = _packed_case(COUNTS)
    got = composite_samples_packed(raw, t, off, o, d, bg, backend=backend, **kw)
    want = _per_ray(raw, t, off, o, d, bg, **kw)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)


FWD_TOL = dict(rtol=1e-5, atol=2e-6)   # float32 forward, cpp vs the twin
GRAD_TOL = dict(rtol=1e-4, atol=1e-5)  # float32 forward and backward


def _cpp_vs_twin(args, tol, wrt=(), **kw):
    check_twin(lambda *a: composite_samples_packed(*a, backend="cpp", **kw),
               lambda *a: composite_samples_packed(*a, backend="reference", **kw), args, wrt=wrt, tol=tol)


@needs_cpp
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("scalar", [False, True])
@pytest.mark.parametrize("kw", PARAMS, ids=["default", "nomid", "exp", "box"])
def test_packed_cpp_float32_matches_twin(scalar, kw, device, monkeypatch):
    if scalar:
        monkeypatch.setenv("LRM_FAST_COMPOSITE_SCALAR", "1")
    _cpp_vs_twin(_packed_case([0, 1, 2, 7, 64, 100, 31, 33], dtype=torch.float32, device=device), FWD_TOL, **kw)


@needs_cpp
@pytest.mark.parametrize("isa", ["plain", "avx2"])
def test_packed_cpp_lower_isa(isa, monkeypatch):
    monkeypatch.setenv("LRM_FAST_CPU_ISA", isa)
    _cpp_vs_twin(_packed_case([5, 64, 0, 37], dtype=torch.float32), FWD_TOL)


@pytest.mark.parametrize("backend", ["reference", pytest.param("cpp", marks=needs_cpp)])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_packed_weights(backend, dtype):
    counts = [0, 1, 2, 6, 30]
    raw, t, off, o, d, _ = _packed_case(counts, dtype=dtype)
    w = composite_samples_packed_weights(raw, t, off, o, d, backend=backend)
    assert w.shape == t.shape
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-6)
    for i, c in enumerate(counts):
        a = int(off[i])
        if c == 0:
            continue
        assert w[a + c - 1] == 0  # the ray's last sample closes no interval
        if c >= 2:
            want = composite_samples_weights(raw[None, a:a + c], t[None, a:a + c], o[i:i + 1], d[i:i + 1],
                                             backend="reference")[0]
            torch.testing.assert_close(w[a:a + c - 1], want, **tol)


@needs_cpp
def test_packed_gradcheck_and_grads_match_twin():
    raw, t, off, o, d, bg = _packed_case([3, 0, 6, 1, 9])
    raw.requires_grad_(True)
    bg.requires_grad_(True)

    def f(raw, bg):
        return composite_samples_packed(raw, t, off, o, d, bg, backend="cpp")

    assert torch.autograd.gradcheck(f, (raw, bg), atol=1e-7)
    for kw in PARAMS[:3]:
        _cpp_vs_twin(_packed_case([4, 0, 40, 1, 70], dtype=torch.float32, seed=3), GRAD_TOL, wrt=(0, 5), **kw)


@needs_cpp
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_packed_early_stop_matches_twin(dtype, device):
    """early_stop on packed rays: the twin stops as the kernel does, forward and backward."""
    args = _packed_case([0, 1, 2, 9, 40, 3, 64, 17], dtype=dtype, seed=5, device=device)
    args[0][:, 0] += 6.0  # denser, so rays stop inside the ray
    tol = GRAD_TOL if dtype == torch.float32 else dict(rtol=1e-9, atol=1e-10)
    _cpp_vs_twin(args, tol, wrt=(0, 5), early_stop=1e-2)
    stopped = composite_samples_packed(*args, backend="reference", early_stop=1e-2)[2]
    assert (stopped < composite_samples_packed(*args, backend="reference")[2]).any()


@needs_cpp
def test_packed_bad_inputs_are_one_line_errors():
    raw, t, off, o, d, bg = _packed_case([3, 4])
    with pytest.raises(ValueError, match="offsets"):
        composite_samples_packed(raw, t, off.int(), o, d, bg, backend="cpp")
    with pytest.raises(ValueError, match="origins/dirs"):
        composite_samples_packed(raw, t, off, o[:1], d[:1], bg, backend="cpp")
    bad = off.clone()
    bad[1] = 9
    with pytest.raises(RuntimeError, match="non-decreasing"):
        composite_samples_packed(raw, t, bad, o, d, bg, backend="cpp")
    bad = off.clone()
    bad[-1] = 6
    with pytest.raises(RuntimeError, match="end at N"):
        composite_samples_packed(raw, t, bad, o, d, bg, backend="cpp")


def test_offsets_and_ray_indices():
    mask = torch.tensor([[1, 0, 1], [0, 0, 0], [1, 1, 1]], dtype=torch.bool)
    off = offsets_from_mask(mask)
    assert off.tolist() == [0, 2, 2, 5]
    assert ray_indices(off).tolist() == [0, 0, 2, 2, 2]
    assert with_neighbours(torch.tensor([[0, 0, 1, 0, 0, 0, 1]], dtype=torch.bool)).int().tolist() == \
        [[0, 1, 1, 1, 0, 1, 1]]


def test_occupancy_lookup_closed_form():
    G = 4  # cells of 0.5 over [-1, 1]
    mask = torch.zeros(2, G, G, G, dtype=torch.bool)
    mask[0, 1, 2, 3] = True
    mask[1, 0, 0, 0] = True
    pts = torch.tensor([[[-0.4, 0.2, 0.9], [-0.5, 0.0, 1.0], [-0.51, 0.2, 0.9], [-0.4, 0.2, 1.01]],
                        [[-1.0, -1.0, -1.0], [-0.9, -0.6, -0.51], [-0.5, -1.0, -1.0], [0.0, 0.0, 0.0]]])
    got = occupancy_lookup(mask, pts, -1.0, 1.0, item=torch.tensor([0, 1]))
    # cell 1 covers [-0.5, 0), cell 2 [0, 0.5), cell 3 [0.5, 1] (the upper face belongs to the last cell)
    assert got.tolist() == [[True, True, False, False], [True, True, False, False]]


@pytest.mark.parametrize("G, dtype", [(64, torch.float32), (256, torch.float32), (8, torch.float64),
                                      (300, torch.float32), (8, torch.bfloat16)])
def test_occupancy_lookup_matches_a_per_point_loop(G, dtype):
    """The lookup (its cell index in the points' float where that is exact, in int64 otherwise: G^3 over
    2^24 or a 16-bit float) against a plain per-point loop (the same float cell coordinate, then the
    index by hand), on points inside, on cell faces and outside."""
    g = torch.Generator().manual_seed(G)
    mask = torch.rand(2, G, G, G, generator=g) > 0.5
    pts = (torch.rand(2, 50, 3, generator=g) * 2.4 - 1.2).to(dtype)
    pts[:, :10] = (torch.randint(0, G + 1, (2, 10, 3), generator=g) * (2.0 / G) - 1.0).to(dtype)   # on faces
    got = occupancy_lookup(mask, pts, -1.0, 1.0, item=torch.tensor([0, 1]))
    for b in range(2):
        for n in range(50):
            p = pts[b, n]
            inside = bool(((p >= -1.0) & (p <= 1.0)).all())
            u = ((p - -1.0) * (G / 2.0)).floor()              # the cell coordinate in the points' own float
            ijk = [min(max(int(c), 0), G - 1) for c in u.tolist()]
            want = inside and bool(mask[b, ijk[0], ijk[1], ijk[2]])
            assert bool(got[b, n]) == want, (b, n, p.tolist())


def _steps(backend, dtype, seed=0, sized=False):
    """The renderer's skipping steps on random rays through a random grid (2 items); ``sized``: the
    packing ops given their output sizes, as the renderer gives them."""
    g = torch.Generator().manual_seed(seed)
    B, R, A, F, G = 2, 40, 12, 9, 6
    o = torch.randn(B * R, 3, generator=g, dtype=dtype) * 0.2 - torch.tensor([0.0, 2.0, 0.0], dtype=dtype)
    d = torch.nn.functional.normalize(torch.tensor([0.0, 1.0, 0.0], dtype=dtype) +
                                      0.3 * torch.randn(B * R, 3, generator=g, dtype=dtype), dim=-1)
    tc = torch.linspace(0.8, 3.2, A, dtype=dtype).expand(B * R, A).contiguous()
    tc[::7] = 2.0 - torch.tensor(0.0, dtype=dtype)  # repeated depths (ties) on some rays
    tf = torch.sort(torch.rand(B * R, F, generator=g, dtype=dtype) * 2.4 + 0.8).values
    tf[::5, :3] = tc[::5, 4:7]                        # importance depths equal to coarse ones
    tf = tf.sort(1).values                            # (both sets sorted, as the renderer's)
    grid = torch.rand(B, G, G, G, generator=g) < 0.3
    occ, keep, counts = occupancy_mark(o, d, tc, grid, R, -1.0, 1.0, backend=backend)
    off = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
    t_p, pts = occupancy_pack(o, d, tc, keep, off, *[int(off[-1])] * sized, backend=backend)
    raw_c = torch.randn(t_p.shape[0], 4, generator=g, dtype=dtype)
    w = occupancy_unpack(raw_c[:, 0].contiguous(), keep, off, backend=backend)
    t, keep_m, src, cnt, need = occupancy_merge(o, d, tc, occ, keep, off, tf, grid, R, -1.0, 1.0, backend=backend)
    off_m = torch.cat([cnt.new_zeros(1), cnt.cumsum(0)])
    off_n = torch.cat([need.new_zeros(1), need.cumsum(0)])
    sizes = (int(off_m[-1]), int(off_n[-1])) if sized else ()
    gathered = occupancy_gather(o, d, t, keep_m, src, off_m, off_n, raw_c, *sizes, backend=backend)
    return (occ, keep, counts, t_p, pts, w, t, keep_m, src, cnt, need) + tuple(gathered)


@needs_cpp
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_skip_steps_cpp_equal_twins(dtype):
    got, want = _steps("cpp", dtype), _steps("reference", dtype)
    for i, (g, w) in enumerate(zip(got, want)):
        assert g.dtype == w.dtype and torch.equal(g, w), i
    occ, keep, counts = want[:3]
    assert 0 < int(counts.sum()) < keep.numel() and bool((keep | ~occ).all())
    src, need = want[8], want[10]
    assert int(need.sum()) > 0 and bool((src == -2).any()) and bool((src >= 0).any())


@pytest.mark.parametrize("backend", ["reference", pytest.param("cpp", marks=needs_cpp)])
def test_skip_steps_take_their_sizes(backend):
    """Given their output sizes (the renderer reads them all in one sync), the packing ops return what
    they return reading them; a wrong size is a one-line error where checking it is free (the twin,
    the CPU kernel; CUDA trusts it)."""
    got, want = _steps(backend, torch.float32, sized=True), _steps(backend, torch.float32)
    for i, (g, w) in enumerate(zip(got, want)):
        assert g.dtype == w.dtype and torch.equal(g, w), i
    o, d = torch.zeros(2, 3), torch.tensor([[0.0, 0.0, 1.0]] * 2)
    t, keep = torch.linspace(-1, 1, 4).repeat(2, 1), torch.tensor([[True, True, False, False]] * 2)
    off, off_n = torch.tensor([0, 2, 4]), torch.tensor([0, 1, 1])
    with pytest.raises((ValueError, RuntimeError), match=r"occupancy_pack: n must be 4.*got 5"):
        occupancy_pack(o, d, t, keep, off, 5, backend=backend)
    src = torch.where(keep, torch.tensor([[0, -1, -2, -2], [1, 2, -2, -2]]), -2)
    with pytest.raises((ValueError, RuntimeError), match=r"occupancy_gather: n_need must be 1.*got 0"):
        occupancy_gather(o, d, t, keep, src, off, off_n, torch.zeros(3, 4), 4, 0, backend=backend)


def test_skip_steps_twins_closed_form():
    """The twins against a plain Python walk of one ray."""
    occ, keep, counts, t_p, pts, w, t, keep_m, src, cnt, need, t_g, raw_g, pts_n, pos_n = _steps("reference",
                                                                                                  torch.float64)
    for r in range(occ.shape[0]):
        o_ = occ[r].tolist()
        k_ = [o_[k] or (k > 0 and o_[k - 1]) or (k + 1 < len(o_) and o_[k + 1]) for k in range(len(o_))]
        assert keep[r].tolist() == k_
    assert torch.equal(t_g, t[keep_m])
    assert torch.equal(pts_n.shape[0] * torch.ones(()), need.sum().double())


class BallField(TriplaneField):
    """An analytic field with real empty space: a ball of radius 0.45 at (0.1, 0, 0) whose raw
    density falls steeply from 8 inside to -30 outside, colours from position."""

    def __init__(self):
        super().__init__(4, FieldConfig(hidden=8))

    def forward(self, planes, points):
        r = (points - points.new_tensor([0.1, 0.0, 0.0])).norm(dim=-1)
        dens = (8.0 - 100.0 * (r - 0.45)).clamp(-30.0, 8.0)
        return torch.cat([dens[..., None], 2.0 * points], -1)


def _views(n=3, res=24):
    c2w = orbit_cameras(torch.linspace(0, 300, n).tolist(), [20.0] * n, 2.0)[None]
    return c2w, default_intrinsics().expand(1, n, 4), res


def test_build_occupancy_is_the_lattice_max_dilated():
    field = BallField()
    planes = torch.zeros(1, 3, 4, 2, 2)
    G = 10
    grid = build_occupancy(field, planes, G, subdiv=2, dilate=1)
    n = 2 * G + 1
    x = torch.linspace(-1, 1, n, dtype=torch.float64)
    lat = field(planes, torch.stack(torch.meshgrid(x, x, x, indexing="ij"), -1).reshape(1, -1, 3).float())
    lat = lat[0, :, 0].reshape(n, n, n)
    cell = torch.full((G, G, G), -math.inf)
    for i in range(G):
        for j in range(G):
            for k in range(G):
                cell[i, j, k] = lat[2 * i:2 * i + 3, 2 * j:2 * j + 3, 2 * k:2 * k + 3].max()
    want = torch.full((G, G, G), -math.inf)
    for i in range(G):
        for j in range(G):
            for k in range(G):
                want[i, j, k] = cell[max(i - 1, 0):i + 2, max(j - 1, 0):j + 2, max(k - 1, 0):k + 2].max()
    torch.testing.assert_close(grid.max_raw[0], want)
    # the rule: empty iff max density <= tau / diagonal
    tau = 1e-3
    s = tau / (2 * math.sqrt(3))
    assert torch.equal(grid.mask(tau), torch.nn.functional.softplus(grid.max_raw - 1.0) > s)
    assert 0.05 < grid.occupied_fraction(tau) < 0.9


def _tiny_planes(model):
    tp = model.cfg.triplane
    return torch.randn(1, 3, tp.channels, tp.high_res, tp.high_res, generator=torch.Generator().manual_seed(1))


def _renderer(field, tau, backend, samples=32):
    r = Renderer(RenderConfig(samples_per_ray=samples, occupancy_tau=tau), field)
    r.backend = backend
    field.backend = backend
    return r


def _psnr(a, b):
    return -10 * math.log10(max(float((a - b).square().mean()), 1e-30))


@pytest.mark.parametrize("backend", ["reference", pytest.param("auto", marks=needs_cpp)])
def test_skipping_renderer_on_a_field_with_empty_space(backend):
    field = BallField()
    planes = torch.zeros(1, 3, 4, 2, 2)
    c2w, K, res = _views()
    r = _renderer(field, 1e-3, backend)
    grid = build_occupancy(field, planes, 32)
    with torch.no_grad():
        exact = r(planes, c2w, K, res)
        r.skip_stats = {}
        skip = r(planes, c2w, K, res, occupancy=grid)
    stats = r.skip_stats
    assert stats["evaluated"] < 0.6 * stats["dense"], stats  # most samples are in empty space
    assert _psnr(skip["rgb"], exact["rgb"]) > 60
    torch.testing.assert_close(skip["opacity"], exact["opacity"], atol=1e-3, rtol=0)
    hit = exact["opacity"] > 0.5
    torch.testing.assert_close(skip["depth"][hit], exact["depth"][hit], atol=1e-3, rtol=0)


@pytest.mark.parametrize("backend", ["reference", pytest.param("auto", marks=needs_cpp)])
def test_skipping_with_tau_zero_keeps_every_in_box_sample(backend, tiny_model):
    """tau = 0: every cell is occupied, only samples outside the box (gated to zero density) are
    dropped, so the render equals the exact one to float rounding."""
    tiny_model.set_backend(backend)
    r = tiny_model.renderer
    r.cfg.occupancy_tau = 0.0
    planes = _tiny_planes(tiny_model)
    c2w, K, res = _views(2, 12)
    grid = build_occupancy(tiny_model.field, planes, 8)
    with torch.no_grad():
        exact = r(planes, c2w, K, res)
        skip = r(planes, c2w, K, res, occupancy=grid)
    torch.testing.assert_close(skip["rgb"], exact["rgb"], atol=2e-6, rtol=0)
    torch.testing.assert_close(skip["opacity"], exact["opacity"], atol=2e-6, rtol=0)


def test_training_and_jitter_never_skip(tiny_model):
    r = tiny_model.renderer
    planes = _tiny_planes(tiny_model)
    grid = OccupancyGrid(torch.zeros(1, 4, 4, 4))  # claims everything is empty
    c2w, K, res = _views(1, 8)
    with torch.no_grad():
        exact = r(planes, c2w, K, res, jitter=True, generator=torch.Generator().manual_seed(0))
        out = r(planes, c2w, K, res, jitter=True, generator=torch.Generator().manual_seed(0), occupancy=grid)
    assert torch.equal(out["rgb"], exact["rgb"])
    p = planes.clone().requires_grad_(True)
    out = r(p, c2w, K, res, occupancy=grid)
    assert torch.equal(out["rgb"].detach(), r(planes, c2w, K, res)["rgb"].detach())


def test_grid_batch_mismatch_is_an_error(tiny_model):
    planes = _tiny_planes(tiny_model)
    c2w, K, res = _views(1, 4)
    with torch.no_grad(), pytest.raises(ValueError, match="occupancy grid of 2 triplanes"):
        tiny_model.renderer(planes, c2w, K, res, occupancy=OccupancyGrid(torch.zeros(2, 4, 4, 4)))


@pytest.fixture(scope="module")
def demo_rec():
    import lrm_fast

    model = lrm_fast.load_model()
    here = os.path.dirname(os.path.abspath(lrm_fast.__file__))
    return model.reconstruct(os.path.join(here, "assets", "sample.png"))


def test_exact_switch_is_todays_render_bit_for_bit(demo_rec):
    rec = demo_rec
    cfg = rec.model.cfg.render
    c2w = orbit_cameras([30.0, 200.0], [15.0, 15.0], rec.model.cfg.camera.source_distance)[None]
    K = default_intrinsics(rec.model.cfg.camera.source_focal).expand(1, 2, 4)
    with torch.inference_mode():
        today = rec.model.render(rec.triplane, c2w, K, 20)
    saved = cfg.skip_empty
    try:
        for skip_default in (False, True):
            cfg.skip_empty = skip_default
            got = rec.render((c2w[0], K[0]), resolution=20, exact=True)
            for k in today:
                assert torch.equal(got[k], today[k]), k
        cfg.skip_empty = False
        got = rec.render((c2w[0], K[0]), resolution=20)  # skip_empty off: exact
        assert torch.equal(got["rgb"], today["rgb"])
    finally:
        cfg.skip_empty = saved


def test_demo_model_skipping_accuracy_and_cache(demo_rec):
    rec = demo_rec
    grid = rec.occupancy()
    assert rec.occupancy() is grid  # built once, reused
    assert grid.resolution == rec.model.cfg.render.occupancy_resolution
    r = rec.model.renderer
    r.skip_stats = {}
    try:
        skip = rec.render(azimuths=[0, 120, 240], elevations=15, resolution=24, exact=False)
        stats = r.skip_stats
    finally:
        r.skip_stats = None
    exact = rec.render(azimuths=[0, 120, 240], elevations=15, resolution=24, exact=True)
    assert _psnr(skip["rgb"], exact["rgb"]) >= 45
    assert stats["evaluated"] < stats["dense"]


def test_default_render_builds_the_grid_only_where_it_pays(monkeypatch):
    """A default render of fewer dense samples than ``GRID_SAMPLES_RATIO`` x the grid's lattice points
    renders exactly without building the grid (bit for bit the exact render); a larger one builds it
    and skips; once built, the grid serves small renders too."""
    from bench.lib.fitted_field import load_fitted_field
    from lrm_fast import api

    planes, model = load_fitted_field(preset="triposr")
    rc = model.cfg.render
    monkeypatch.setattr(rc, "occupancy_resolution", 16)            # 33^3 lattice points: a quick grid
    lattice = (2 * 16 + 1) ** 3
    small = int((api.GRID_SAMPLES_RATIO * lattice / rc.samples_per_ray) ** 0.5)   # one view just below
    rec = api.Reconstruction(model, planes)
    r = model.renderer
    with torch.inference_mode():
        got = rec.render(azimuths=[30.0], resolution=small)
        assert not rec._grids
        exact = rec.render(azimuths=[30.0], resolution=small, exact=True)
        for k in exact:
            assert torch.equal(got[k], exact[k]), k
        r.skip_stats = {}
        try:
            rec.render(azimuths=[30.0, 150.0], resolution=small + 2)          # 2 views: past the line
            assert rec._grids and r.skip_stats["dense"] > 0
            r.skip_stats = {}
            rec.render(azimuths=[30.0], resolution=small)                      # the grid is there now
            assert r.skip_stats["evaluated"] < r.skip_stats["dense"]
        finally:
            r.skip_stats = None


@pytest.mark.gpu
def test_packed_cuda_matches_cpu():
    for kw in PARAMS:
        raw, t, off, o, d, bg = _packed_case([0, 1, 2, 7, 64, 100, 31, 33], dtype=torch.float32)
        want = composite_samples_packed(raw, t, off, o, d, bg, backend="cpp", **kw)
        cu = [x.cuda() for x in (raw, t, off, o, d, bg)]
        got = composite_samples_packed(*cu, backend="cpp", **kw)
        for g, w in zip(got, want):
            torch.testing.assert_close(g.cpu(), w, rtol=1e-5, atol=2e-6)
        wc = composite_samples_packed_weights(*cu[:5], backend="cpp", **kw)
        torch.testing.assert_close(wc.cpu(), composite_samples_packed_weights(raw, t, off, o, d, backend="cpp", **kw),
                                   rtol=1e-5, atol=1e-6)
    raw, t, off, o, d, bg = [x.cuda() for x in _packed_case([3, 0, 6, 1, 9])]
    raw.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda r_: composite_samples_packed(r_, t, off, o, d, bg, backend="cpp"), (raw,),
                                    atol=1e-7)


def test_bounded_grid_is_conservative_and_cheaper_on_the_fitted_field():
    """build_occupancy(bounds=...): blocks proven empty skip their lattice queries and store the proven
    max instead, so the grid is >= the plain lattice grid everywhere and marks the same cells at tau."""
    from bench.lib.fitted_field import load_fitted_field
    from lrm_fast.api import occupancy_grid
    from lrm_fast.field.occupancy import build_occupancy

    planes, model = load_fitted_field()
    rc, fc = model.cfg.render, model.field.cfg
    calls = []
    field = model.field
    orig = field.forward

    def counting(p, x):
        calls.append(x.shape[1])
        return orig(p, x)

    with torch.inference_mode():
        plain = build_occupancy(field, planes, 32, rc.box_min, rc.box_max)
        field.forward = counting
        try:
            bounded = occupancy_grid(model, planes, 32)
        finally:
            del field.forward
    assert (bounded.max_raw >= plain.max_raw).all()
    args = (rc.occupancy_tau, fc.density_bias, fc.density_activation)
    assert torch.equal(bounded.mask(*args), plain.mask(*args))
    assert sum(calls) < 0.7 * 65 ** 3


@pytest.mark.parametrize("res, most", [(32, 0.9), (64, 0.65)])
def test_coarse_first_grid_marks_the_lattice_cells_on_the_fitted_triposr_field(res, most):
    """build_occupancy(coarse_cut=...), what proven_occupancy builds for TripoSR's SiLU field: the even
    lattice points first, then the rest only in blocks the coarse estimate does not put a decade below
    the cut. On the fitted TripoSR field it marks exactly the full lattice's cells at the default tau,
    with fewer queries (measured 2026-12-08: 0.82 of the lattice's at 32^3, 0.57 at 64^3)."""
    from bench.lib.fitted_field import load_fitted_field
    from lrm_fast.api import occupancy_grid
    from lrm_fast.field.occupancy import build_occupancy

    planes, model = load_fitted_field(preset="triposr")
    rc, r, field = model.cfg.render, model.renderer, model.field
    calls = []
    orig = field.forward

    def counting(p, x):
        calls.append(x.shape[1])
        return orig(p, x)

    with torch.inference_mode():
        plain = build_occupancy(field, planes, res, rc.box_min, rc.box_max)
        field.forward = counting
        try:
            coarse = occupancy_grid(model, planes, res)
        finally:
            del field.forward
    assert torch.equal(r.occupancy_mask(coarse), r.occupancy_mask(plain))
    assert 0.05 < r.occupied_fraction(plain) < 0.5
    assert (res + 1) ** 3 < sum(calls) < most * (2 * res + 1) ** 3, sum(calls) / (2 * res + 1) ** 3


def test_coarse_first_grid_limits():
    """A field far below the coarse cut: only the even lattice points are queried and every cell holds
    their max; a field above it everywhere: every point is queried and the grid is the full lattice's."""
    from lrm_fast.field.occupancy import build_occupancy

    calls = []

    class Const(torch.nn.Module):
        def __init__(self, v):
            super().__init__()
            self.v = v

        def forward(self, p, x):
            calls.append(x.shape[1])
            return torch.full((*x.shape[:2], 4), self.v) + x[..., :1] * 1e-3

    planes = torch.zeros(1, 3, 2, 4, 4)
    lo = build_occupancy(Const(-50.0), planes, 8, -1.0, 1.0, chunk=4096, coarse_cut=-10.0)
    assert sum(calls) == 9 ** 3 and (lo.max_raw < -49).all()
    calls.clear()
    hi = build_occupancy(Const(5.0), planes, 8, -1.0, 1.0, chunk=4096, coarse_cut=-10.0)
    assert sum(calls) == 17 ** 3
    assert torch.equal(hi.max_raw, build_occupancy(Const(5.0), planes, 8, -1.0, 1.0, chunk=4096).max_raw)


@pytest.mark.parametrize("backend", ["reference", pytest.param("auto", marks=needs_cpp)])
def test_packed_field_query_is_one_call_equal_to_per_item_queries(tiny_model, backend):
    """``MarchContext.raw_packed`` queries the packed points of every batch item in one field call
    (padded to the longest item): each item's outputs are a per-item query's, an empty item included:
    bit for bit on the fused op (computed point by point), to float rounding on the reference (its
    matmuls' blocking depends on the number of rows: a 1-ulp difference in a few outputs)."""
    from lrm_fast.render.marching import MarchContext, Sampling

    tiny_model.set_backend(backend)
    field = tiny_model.field
    tp = tiny_model.cfg.triplane
    planes = torch.randn(3, 3, tp.channels, tp.high_res, tp.high_res, generator=torch.Generator().manual_seed(2))
    R = 4
    counts = torch.tensor([3, 0, 5, 1, 0, 0, 0, 0, 2, 7, 1, 4])  # per ray; item 1 has no point
    offsets = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
    points = torch.rand(int(counts.sum()), 3, generator=torch.Generator().manual_seed(3)) * 2 - 1
    ctx = MarchContext(field, planes, Sampling.of(tiny_model.cfg.render, tiny_model.cfg.field), backend)
    calls = []
    handle = field.register_forward_hook(lambda *a: calls.append(1))
    with torch.no_grad():
        got = ctx.raw_packed(points, offsets[::R])
        assert torch.equal(ctx.raw_packed(points, offsets[::R], 14), got)  # the longest item's count, given
    handle.remove()
    assert len(calls) == 2
    ends = offsets[::R].tolist()
    with torch.no_grad():
        want = torch.cat([field(planes[b:b + 1], points[ends[b]:ends[b + 1]][None])[0] for b in range(3)])
    if backend == "reference":
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)
    else:
        assert torch.equal(got, want)
