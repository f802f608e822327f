"""Mesh extraction: dense vs coarse-to-fine (the same mesh on analytic fields, the fitted field, the demo
model, the parity checkpoints, random weights), accuracy on an analytic sphere, empty/full grids, colors."""
import os

import numpy as np
import pytest
import torch

from lrm_fast.field.bounds import field_density_bounds
from lrm_fast.mesh import density_grid, extract_mesh, marching_cubes, marching_cubes_slabs, sphere_density


@pytest.mark.parametrize("R", [33, 48, 64])
def test_coarse_to_fine_matches_dense(R):
    f = sphere_density(0.5, 10.0)
    dense, n_dense = density_grid(f, R, -1, 1, 3.0, coarse_to_fine=False)
    c2f, n_c2f = density_grid(f, R, -1, 1, 3.0, coarse_to_fine=True)
    assert n_c2f < (0.3 if R >= 64 else 1.0) * n_dense
    vd, fd = marching_cubes(dense, 3.0, -1, 1)
    vc, fc = marching_cubes(c2f, 3.0, -1, 1)
    assert len(vd) == len(vc) and len(fd) == len(fc)
    np.testing.assert_allclose(vc, vd, atol=1e-5)


def _same_mesh_dense_and_c2f(model, planes, R, threshold):
    """Dense grid vs coarse-to-fine through extract_mesh's own path: the same vertices and faces."""
    f = model.field

    def dens(p):
        return f.density(f(planes, p[None])[..., 0].float())[0]

    box = (model.cfg.render.box_min, model.cfg.render.box_max)
    with torch.inference_mode():
        g, n_dense = density_grid(dens, R, *box, 0.0)
        if threshold == "auto":
            threshold = float(np.quantile(g, 0.75))
        g2, n_c2f = density_grid(dens, R, *box, threshold, coarse_to_fine=True,
                                 bounds_fn=field_density_bounds(f, planes))
    np.testing.assert_array_equal(g > threshold, g2 > threshold)
    vd, fd = marching_cubes(g, threshold, *box)
    vc, fc = marching_cubes(g2, threshold, *box)
    np.testing.assert_array_equal(fc, fd)
    np.testing.assert_array_equal(vc, vd)
    return n_c2f / n_dense


def test_noisy_untrained_field_is_still_exact(tiny_model):
    """Random weights give a field that crosses any level between coarse corners (the old sampled rule
    lost ~19% of the faces on the base preset): the proven bound refines where it must."""
    from lrm_fast.api import reconstruct

    rec = reconstruct(tiny_model.eval(), np.full((40, 40, 3), 128, np.uint8), remove_background="none")
    _same_mesh_dense_and_c2f(tiny_model, rec.triplane, 64, "auto")


def test_fitted_field_c2f_is_exact_and_cheaper():
    from bench.lib.fitted_field import load_fitted_field

    planes, model = load_fitted_field()
    frac = _same_mesh_dense_and_c2f(model, planes, 64, model.cfg.render.mesh_threshold)
    assert frac < 0.9    # 64^3: a coarse cell is 4 texels wide; at 256^3 ~15% (docs/readme/bench.md)


def test_fitted_triposr_field_c2f_is_exact():
    """TripoSR's fitted field: its bound decides no block (field/bounds.py), so coarse-to-fine queries
    the whole grid after two levels of bounds, and the mesh is the dense one."""
    from bench.lib.fitted_field import load_fitted_field

    planes, model = load_fitted_field(preset="triposr")
    frac = _same_mesh_dense_and_c2f(model, planes, 64, model.cfg.render.mesh_threshold)
    assert frac <= 1.0


def test_demo_model_on_the_sample_c2f_is_exact():
    import lrm_fast

    model = lrm_fast.load_model(device="cpu", dtype="float32")
    sample = os.path.join(os.path.dirname(lrm_fast.__file__), "assets", "sample.png")
    rec = model.reconstruct(sample)
    _same_mesh_dense_and_c2f(model, rec.triplane, 64, model.cfg.render.mesh_threshold)


@pytest.mark.parametrize("version", ["openlrm-v1.1", "openlrm-v1.0", "triposr"])
def test_parity_checkpoints_c2f_is_exact(version):
    """The parity fixtures' checkpoints (tests/parity/fixtures), their input image, their mesh level."""
    import json
    from pathlib import Path

    import lrm_fast

    d = Path(__file__).parent / "parity" / "fixtures" / version
    meta = json.loads((d / "meta.json").read_text())
    stages = np.load(d / "stages.npz")
    model = lrm_fast.load_model(str(d), device="cpu", dtype="float32")
    with torch.inference_mode():
        image = (torch.from_numpy(stages["image_u8"]).float() / 255.0 if "image_u8" in stages.files
                 else torch.from_numpy(stages["image"]))               # TripoSR's fixture stores floats
        planes = model.forward_planes(image)
    _same_mesh_dense_and_c2f(model, planes, 48, meta["mesh"]["threshold"])


def test_field_bounds_contain_the_field():
    """field_density_bounds over random boxes contains the field at points inside them (ReLU: CROWN;
    SiLU and exp, TripoSR-like: interval arithmetic)."""
    from lrm_fast.config import FieldConfig
    from lrm_fast.field.triplane import TriplaneField

    torch.manual_seed(0)
    for cfg in (FieldConfig(), FieldConfig(activation="silu", layers=5, density_activation="exp",
                                           coord_scale=1 / 0.87)):
        field = TriplaneField(8, cfg)
        planes = torch.randn(1, 3, 8, 16, 16)
        lo = torch.rand(300, 3) * 2.2 - 1.1
        hi = lo + torch.rand(300, 3) * 0.3
        dmin, dmax = field_density_bounds(field, planes)(lo, hi)
        t = torch.rand(300, 40, 3)
        pts = lo[:, None] + t * (hi - lo)[:, None]
        with torch.inference_mode():
            d = field.density(field(planes, pts.reshape(1, -1, 3))[..., 0])[0].reshape(300, 40)
        assert (d >= dmin[:, None] - 1e-6).all() and (d <= dmax[:, None] + 1e-6).all()
        assert torch.isfinite(dmax).all()
        if cfg.activation == "relu":                             # not vacuous (softplus density, ReLU MLP)
            assert (dmax - dmin).median() < 1e3


def test_two_spheres_off_grid_are_both_found():
    def f(p):
        a = 10 * (1 - (p - torch.tensor([0.5, 0.1, -0.2])).norm(dim=-1) / 0.12)
        b = 10 * (1 - (p + torch.tensor([0.4, 0.3, 0.1])).norm(dim=-1) / 0.3)
        return torch.maximum(a, b).clamp_min(0)

    def bounds(lo, hi):  # each blob falls with the distance to its centre; the max of two bounds
        out = []
        for c, r in (([0.5, 0.1, -0.2], 0.12), ([-0.4, -0.3, -0.1], 0.3)):
            c = torch.tensor(c)
            near = torch.maximum(torch.maximum(lo - c, c - hi), torch.zeros(())).norm(dim=-1)
            far = torch.maximum((lo - c).abs(), (hi - c).abs()).norm(dim=-1)
            out.append(((10 * (1 - far / r)).clamp_min(0), (10 * (1 - near / r)).clamp_min(0)))
        return torch.maximum(out[0][0], out[1][0]), torch.maximum(out[0][1], out[1][1])

    dense, n_dense = density_grid(f, 96, -1, 1, 3.0, coarse_to_fine=False)
    c2f, n_c2f = density_grid(f, 96, -1, 1, 3.0, coarse_to_fine=True, bounds_fn=bounds)
    np.testing.assert_array_equal(dense > 3.0, c2f > 3.0)
    assert n_c2f < 0.3 * n_dense
    no_bound, n = density_grid(f, 96, -1, 1, 3.0, coarse_to_fine=True)   # a bare function: dense
    assert n == n_dense and np.array_equal(no_bound, dense)


def test_sphere_is_accurate_and_outward():
    import trimesh

    v, f = marching_cubes(density_grid(sphere_density(0.5, 10.0), 64, -1, 1, 3.0)[0], 3.0, -1, 1)
    r = np.linalg.norm(v, axis=1)
    assert np.abs(r - 0.35).max() < 2 / 63  # within a voxel of the analytic radius 0.5 * (1 - 3/10)
    m = trimesh.Trimesh(v, f, process=False)
    assert m.is_watertight and m.volume > 0  # positive volume <=> outward normals


def test_empty_and_full_grids_are_clear_errors():
    with pytest.raises(ValueError, match="empty mesh.*never exceeds the threshold 3"):
        marching_cubes(np.zeros((8, 8, 8), np.float32), 3.0, -1, 1)
    with pytest.raises(ValueError, match="full mesh"):
        marching_cubes(np.full((8, 8, 8), 5.0, np.float32), 3.0, -1, 1)
    with pytest.raises(ValueError, match="NaN"):
        marching_cubes(np.full((8, 8, 8), np.nan, np.float32), 3.0, -1, 1)
    with pytest.raises(ValueError, match="resolution"):
        density_grid(sphere_density(), 1, -1, 1, 3.0)


def test_extract_mesh_from_model_has_colors(tiny_model):
    import trimesh

    torch.manual_seed(0)
    planes = torch.randn(1, 3, 8, 8, 8)
    with torch.no_grad():  # give the field a real surface: density = softplus(raw - 1), raw from the last layer
        tiny_model.field.linears[-1].bias[0] = 3.0
    m = extract_mesh(tiny_model, planes, resolution=32, threshold="auto")
    assert isinstance(m, trimesh.Trimesh) and len(m.faces) > 0
    colors = np.asarray(m.visual.vertex_colors)
    assert colors.shape == (len(m.vertices), 4) and colors.dtype == np.uint8
    assert np.abs(m.vertices).max() <= 1.0 + 1e-6
    with pytest.raises(ValueError, match="one triplane"):
        extract_mesh(tiny_model, torch.randn(2, 3, 8, 8, 8))
    with pytest.raises(ValueError, match="empty mesh"):
        extract_mesh(tiny_model, planes, resolution=16, threshold=1e6)


@pytest.mark.parametrize("radius,open_without", [(0.5, False), (2.0, True)])
def test_watertight_closes_the_surface_at_the_box(radius, open_without):
    """A ball that pokes out of the box is cut open by it; ``close=True`` lids it with the box's faces
    (vertices stay in the box, volume = ball cap inside the box), and a ball inside stays as it was."""
    import trimesh

    g, _ = density_grid(sphere_density(radius, 10.0), 40, -1, 1, 3.0)
    v0, f0 = marching_cubes(g, 3.0, -1, 1)
    v1, f1 = marching_cubes(g, 3.0, -1, 1, close=True)
    m0, m1 = trimesh.Trimesh(v0, f0, process=False), trimesh.Trimesh(v1, f1, process=False)
    assert m0.is_watertight is not open_without
    assert m1.is_watertight and m1.volume > 0 and np.abs(v1).max() <= 1.0
    if not open_without:
        assert len(f1) == len(f0) and abs(m1.volume - m0.volume) < 1e-5
        np.testing.assert_allclose(np.sort(v1, 0), np.sort(v0, 0), atol=1e-6)
    else:  # ball of radius 1.4 cut by the cube [-1, 1]^3 (Monte Carlo volume ~7.68)
        assert abs(m1.volume - 7.68) < 0.15
    full, _ = density_grid(sphere_density(3.0, 10.0), 16, -1, 1, 3.0)  # above the level everywhere
    v2, f2 = marching_cubes(full, 3.0, -1, 1, close=True)
    m2 = trimesh.Trimesh(v2, f2, process=False)
    assert m2.is_watertight and abs(m2.volume - 8.0) < 1e-3


def test_watertight_mesh_from_the_model(tiny_model):
    torch.manual_seed(0)
    planes = torch.randn(1, 3, 8, 8, 8)
    with torch.no_grad():  # dense everywhere near the faces: the open mesh has a boundary
        tiny_model.field.linears[-1].bias[0] = 3.0
    m = extract_mesh(tiny_model, planes, resolution=24, threshold="auto", watertight=True)
    assert m.is_watertight and np.abs(m.vertices).max() <= 1.0


def test_field_bounds_with_chunks_of_different_footprints():
    """The bound's footprint table is built in chunks of 4096 footprints; fine grids (R = 1000, 1024:
    cells narrower than a texel) have chunks whose cells straddle a texel centre next to chunks whose
    cells do not, and the per-chunk breakpoint counts did not concatenate ("Expected size 9 but got
    size 6", ``extract_mesh`` at 1000^3). Here: 4096 thin boxes across texel centres, then 4096 between
    two centres; the bounds must still contain the field at the boxes' corners."""
    from bench.lib.fitted_field import load_fitted_field

    planes, model = load_fitted_field()
    W = planes.shape[-1]
    centres = (2 * torch.arange(W, dtype=torch.float64) + 1) / W - 1
    straddle = centres[4:36].repeat_interleave(128) - 1e-3 + torch.linspace(0, 1e-3, 4096, dtype=torch.float64)
    between = centres[40] + torch.linspace(1e-3, 0.02, 4096, dtype=torch.float64)
    lo1 = torch.cat([straddle, between]).float()
    lo, hi = lo1[:, None].expand(-1, 3), (lo1 + 0.004)[:, None].expand(-1, 3)
    dmin, dmax = field_density_bounds(model.field, planes)(lo, hi)
    assert dmin.shape == (8192,) and (dmin <= dmax).all()
    with torch.no_grad():
        for corner in (lo, hi):
            d = model.field.density(model.field(planes, corner[None])[..., 0])[0]
            assert (d >= dmin - 1e-5).all() and (d <= dmax + 1e-5).all()


def test_c2f_with_no_surface_is_the_empty_mesh_error(tiny_model):
    """Every block decided at the first level (no surface anywhere) used to crash on an empty list."""
    planes = torch.zeros(1, 3, 8, 8, 8)
    with torch.no_grad():
        tiny_model.field.linears[-1].bias[0] = -50.0
    with pytest.raises(ValueError, match="empty mesh"):
        extract_mesh(tiny_model, planes, resolution=64, threshold=3.0)


def _same_faces(m0, m1):
    """Same mesh up to vertex order (and the last bit of a coordinate): same counts, volume, vertices."""
    assert len(m0.faces) == len(m1.faces) and len(m0.vertices) == len(m1.vertices)
    assert abs(m0.volume - m1.volume) < 1e-5 and m0.is_watertight == m1.is_watertight
    np.testing.assert_allclose(np.sort(m0.vertices, 0), np.sort(m1.vertices, 0), atol=1e-6)
    np.testing.assert_array_equal(np.sort(m0.visual.vertex_colors, 0), np.sort(m1.visual.vertex_colors, 0))


@pytest.mark.parametrize("slab", [3, 16])
def test_slab_meshing_is_the_whole_grid_mesh(slab):
    """Large grids are made and meshed a slab of rows at a time (1024^3 in a few hundred MB): the same
    mesh as the whole grid in one marching cubes, coarse-to-fine and dense, open and watertight."""
    from bench.lib.fitted_field import load_fitted_field

    planes, model = load_fitted_field()
    th = model.cfg.render.mesh_threshold
    for c2f in (True, False):
        whole = extract_mesh(model, planes, resolution=48, threshold=th, coarse_to_fine=c2f)
        _same_faces(whole, extract_mesh(model, planes, resolution=48, threshold=th, coarse_to_fine=c2f, slab=slab))
    g, _ = density_grid(sphere_density(2.0, 10.0), 33, -1, 1, 3.0)   # a ball cut open by the box
    import trimesh
    for close in (False, True):
        m0 = trimesh.Trimesh(*marching_cubes(g, 3.0, -1, 1, close=close), process=False)
        m1 = trimesh.Trimesh(*marching_cubes_slabs(lambda a, b: g[a:b], 33, 3.0, -1, 1, slab, close=close),
                             process=False)
        m0.visual.vertex_colors = m1.visual.vertex_colors = np.zeros(4, np.uint8)
        _same_faces(m0, m1)


def test_slab_rows_from_the_byte_budget():
    from lrm_fast.mesh import GRID_POINT_BYTES, GRID_SHARE, SLAB_ROWS_MAX, slab_rows

    assert slab_rows(16, "64GB") == 15 and slab_rows(384, "64GB") == SLAB_ROWS_MAX   # speed caps a big budget
    assert slab_rows(1024, 1 << 31) == int((1 << 31) * GRID_SHARE) // (GRID_POINT_BYTES * 1024 ** 2)
    assert slab_rows(1000, 1 << 20) == 4                                     # at least 4 rows
    with pytest.raises(ValueError, match="slab"):
        marching_cubes_slabs(lambda a, b: np.zeros((b - a, 8, 8), np.float32), 8, 1.0, -1, 1, 0)


def test_tiny_budget_gives_the_same_mesh_bit_for_bit():
    """``max_memory`` only sizes slabs and query chunks: a budget small enough for many slabs and many
    chunks gives the large budget's mesh, vertices, faces and colours bitwise in the same order."""
    from bench.lib.fitted_field import load_fitted_field
    from lrm_fast.memory import MemoryBudget
    from lrm_fast.mesh import query_chunk, slab_rows

    planes, model = load_fitted_field()
    th, R, tiny = model.cfg.render.mesh_threshold, 48, "2MB"
    assert slab_rows(R, tiny) <= 10
    assert query_chunk(MemoryBudget.resolve(tiny), model.field.query_bytes()) < 1000
    for c2f, close in ((True, False), (False, False), (True, True)):
        big = extract_mesh(model, planes, resolution=R, threshold=th, coarse_to_fine=c2f, watertight=close,
                           max_memory="64GB", slab=R - 1)                  # one piece
        small = extract_mesh(model, planes, resolution=R, threshold=th, coarse_to_fine=c2f, watertight=close,
                             max_memory=tiny)
        np.testing.assert_array_equal(big.vertices, small.vertices)
        np.testing.assert_array_equal(big.faces, small.faces)
        np.testing.assert_array_equal(big.visual.vertex_colors, small.visual.vertex_colors)


_PEAK_SCRIPT = r"""
import ctypes, sys
import torch
from bench.lib.fitted_field import load_fitted_field
from lrm_fast.mesh import extract_mesh

def kb(field):
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith(field + ":"))

torch.set_num_threads(1)
planes, model = load_fitted_field()
extract_mesh(model, planes, resolution=40, max_memory=sys.argv[2])        # imports, pools, first-call caches
ctypes.CDLL("libc.so.6").malloc_trim(0)
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
before = kb("VmRSS")
extract_mesh(model, planes, resolution=int(sys.argv[1]), max_memory=sys.argv[2], coarse_to_fine=False)
print((kb("VmHWM") - before) / 1024)
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux's RSS high-water reset")
def test_mesh_peak_memory_stays_within_the_budget():
    """The extra RSS of a 160^3 dense mesh (fitted field, a fresh process) under ``max_memory="12MB"``
    stays within the budget plus 40 MB of slack (the mesh itself, ~3 MB, allocator and skimage
    bookkeeping); the same mesh under a large budget (``SLAB_ROWS_MAX`` rows a slab, one query chunk
    a slab) takes more (measured: 35 MB vs 71 MB)."""
    import subprocess
    import sys

    def peak(budget):
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        out = subprocess.run([sys.executable, "-c", _PEAK_SCRIPT, "160", budget], capture_output=True, text=True,
                             cwd=root, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert out.returncode == 0, out.stderr[-2000:]
        return float(out.stdout.split()[-1])

    small, big = peak("12MB"), peak("8GB")
    assert small <= 12 + 40, (small, big)
    assert big > small + 20, (small, big)
