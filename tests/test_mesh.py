"""Mesh extraction: dense vs coarse-to-fine, accuracy on an analytic sphere, empty/full grids, colors."""
import numpy as np
import pytest
import torch

from lrm_fast.mesh import density_grid, extract_mesh, marching_cubes, sphere_density


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


def test_noisy_untrained_field_falls_back_to_dense(tiny_model):
    """Random weights give a field that crosses any level between coarse corners: coarse-to-fine must
    then refine (almost) everywhere rather than lose surface (seen on the base preset at 256^3)."""
    from lrm_fast.api import reconstruct

    rec = reconstruct(tiny_model.eval(), np.full((40, 40, 3), 128, np.uint8))
    f, P = tiny_model.field, rec.triplane

    def dens(p):
        return f.density(f(P, p[None])[..., 0])[0]

    with torch.inference_mode():
        g, _ = density_grid(dens, 64, -1, 1, 0.0, coarse_to_fine=False)
        t = float(np.quantile(g, 0.75))
        g2, _ = density_grid(dens, 64, -1, 1, t, coarse_to_fine=True)
    assert ((g > t) != (g2 > t)).sum() <= 2
    assert abs(len(marching_cubes(g, t, -1, 1)[1]) - len(marching_cubes(g2, t, -1, 1)[1])) <= 0.001 * len(marching_cubes(g, t, -1, 1)[1])


def test_two_spheres_off_grid_are_both_found():
    def f(p):
        a = 10 * (1 - (p - torch.tensor([0.5, 0.1, -0.2])).norm(dim=-1) / 0.12)
        b = 10 * (1 - (p + torch.tensor([0.4, 0.3, 0.1])).norm(dim=-1) / 0.3)
        return torch.maximum(a, b).clamp_min(0)

    dense, _ = density_grid(f, 96, -1, 1, 3.0, coarse_to_fine=False)
    c2f, _ = density_grid(f, 96, -1, 1, 3.0, coarse_to_fine=True)
    np.testing.assert_array_equal(dense > 3.0, c2f > 3.0)


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
