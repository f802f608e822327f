"""``ops.marching_cubes`` (torch, any device) against its twin, skimage's Lorensen marching cubes, and
``extract_mesh``'s on-device path (forced on the CPU with ``LRM_FAST_MESH_DEVICE=1``) against the host
path's grid meshed by skimage's Lorensen."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lrm_fast.mesh import density_grid, extract_mesh, field_density_grid, sphere_density
from lrm_fast.ops.marching_cubes import marching_cubes


def _triangles(v: np.ndarray, f: np.ndarray) -> set:
    """Triangles as position triples, rotated to start at the smallest corner: winding kept, order not."""
    out = set()
    for t in map(lambda x: tuple(map(tuple, x)), v[f]):
        r = t.index(min(t))
        out.add(t[r:] + t[:r])
    return out


def _twin(vol: np.ndarray, level: float):
    from skimage import measure

    v, f, _, _ = measure.marching_cubes(vol, level, method="lorensen", allow_degenerate=False)
    return v, f


def _check(vol: np.ndarray, level: float) -> int:
    """Same vertex positions (bit for bit, as a set) and the same triangles (positions, winding) as the
    twin; returns the face count."""
    v, f = marching_cubes(torch.from_numpy(vol), level)
    v, f = v.numpy(), f.numpy()
    assert v.dtype == np.float32 and f.dtype == np.int64 and f.shape[1] == 3
    assert len(np.unique(v, axis=0)) == len(v)                       # one vertex per position
    sv, sf = _twin(vol, level)
    np.testing.assert_array_equal(np.unique(v, axis=0), np.unique(sv, axis=0))
    assert _triangles(v, f) == _triangles(sv, sf)
    assert len(f) == len(sf)
    return len(f)


def _grid(shape, lo=-1.0, hi=1.0):
    axes = [np.linspace(lo, hi, n, dtype=np.float32) for n in shape]
    return np.meshgrid(*axes, indexing="ij")


def test_sphere_torus_and_touching_balls_match_the_twin():
    x, y, z = _grid((40, 40, 40))
    assert _check((0.7 - np.sqrt(x ** 2 + y ** 2 + z ** 2)).astype(np.float32), 0.1) > 0
    r = np.sqrt(x ** 2 + y ** 2)
    assert _check((0.25 - np.sqrt((r - 0.6) ** 2 + z ** 2)).astype(np.float32), 0.0) > 0
    balls = np.maximum(0.4 - np.sqrt((x - 0.4) ** 2 + y ** 2 + z ** 2), 0.4 - np.sqrt((x + 0.4) ** 2 + y ** 2 + z ** 2))
    assert _check(balls.astype(np.float32), 0.0) > 0


@pytest.mark.parametrize("shape", [(13, 17, 9), (2, 5, 7), (31, 8, 2), (2, 2, 2)])
def test_random_and_smooth_fields_of_any_shape_match_the_twin(shape):
    rng = np.random.default_rng(sum(shape))
    noise = rng.standard_normal(shape).astype(np.float32)
    _check(noise, 0.0)                                               # every ambiguous case occurs
    x, y, z = _grid(shape)
    smooth = np.sin(3 * x + 1) * np.cos(2 * y) + np.sin(4 * z - 0.5) * 0.7
    _check(smooth.astype(np.float32), 0.1)


def test_noise_surface_is_closed():
    """Every ambiguous case at once (white noise, walled in below the level): Lorensen's table still
    leaves no open edge, like Lewiner (whose triangles differ in those cubes)."""
    g = np.random.default_rng(3).standard_normal((16, 16, 16)).astype(np.float32)
    g[[0, -1]] = g[:, [0, -1]] = g[:, :, [0, -1]] = -5.0
    v, f = marching_cubes(torch.from_numpy(g), 0.0)
    edges = np.sort(f.numpy()[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), 1)
    _, count = np.unique(edges, axis=0, return_counts=True)
    assert len(f) > 1000 and (count == 2).all()


def test_values_exactly_at_the_level_give_merged_vertices_and_no_degenerate_faces():
    """A corner at the level puts the vertices of all its edges on it: one vertex there, and the
    triangles that collapse are dropped (skimage keeps some duplicate vertices; the positions agree)."""
    rng = np.random.default_rng(1)
    q = np.round(rng.standard_normal((15, 11, 12)) * 2).astype(np.float32)
    for level in (0.0, 1.0):
        assert (q == level).any()
        _check(q, level)
    v, f = marching_cubes(torch.from_numpy(q), 0.0)
    assert (f[:, 0] != f[:, 1]).all() and (f[:, 1] != f[:, 2]).all() and (f[:, 0] != f[:, 2]).all()


def test_level_between_float32_neighbours_is_decided_exactly():
    """The level is a float64 (like skimage's): a value just above it in float64 but equal to its
    float32 rounding is above."""
    level = 0.1                                                      # float32(0.1) > 0.1
    vol = np.full((3, 3, 3), -1.0, np.float32)
    vol[1, 1, 1] = np.float32(level)
    _check(vol, level)                  # its 6 edge vertices round onto it: one vertex, every face degenerate
    assert marching_cubes(torch.from_numpy(vol), level)[0].shape == (1, 3)
    vol[1, 1, 1] = np.nextafter(np.float32(level), np.float32(0))    # just below: no surface
    v, f = marching_cubes(torch.from_numpy(vol), level)
    assert v.shape == (0, 3) and f.shape == (0, 3)


def test_empty_full_and_bad_inputs():
    for vol in (torch.zeros(5, 6, 7), torch.ones(5, 6, 7)):
        v, f = marching_cubes(vol, 0.5)
        assert v.shape == (0, 3) and v.dtype == torch.float32 and f.shape == (0, 3) and f.dtype == torch.int64
    with pytest.raises(ValueError, match="3D tensor"):
        marching_cubes(torch.zeros(4, 4), 0.0)
    with pytest.raises(ValueError, match="at least 2 points"):
        marching_cubes(torch.zeros(4, 1, 4), 0.0)
    with pytest.raises(ValueError, match="floating-point"):
        marching_cubes(torch.zeros(4, 4, 4, dtype=torch.int32), 0.0)


def test_float64_input_is_meshed_as_float32_like_the_twin():
    x, y, z = _grid((20, 21, 22))
    vol = 0.6 - np.sqrt(x ** 2 + y ** 2 + z ** 2)
    v64, f64 = marching_cubes(torch.from_numpy(vol), 0.0)
    v32, f32 = marching_cubes(torch.from_numpy(vol.astype(np.float32)), 0.0)
    assert torch.equal(v64, v32) and torch.equal(f64, f32)


def _lorensen_mesh(grid: np.ndarray, threshold: float, box_min: float, box_max: float):
    """The host path's conventions (``mesh.marching_cubes``: world coordinates, outward winding) with
    skimage's Lorensen instead of Lewiner."""
    v, f = _twin(grid, threshold)
    h = np.float32((box_max - box_min) / (grid.shape[0] - 1))
    return box_min + v.astype(np.float32) * h, np.ascontiguousarray(f[:, ::-1])


def _surface(model, R, device="cpu"):
    """Random planes on which the tiny model's field has a surface (as in tests/test_mesh.py), and the
    level of its densest quarter at ``R``^3."""
    torch.manual_seed(0)
    planes = torch.randn(1, 3, 8, 8, 8).to(device)
    with torch.no_grad():
        model.field.linears[-1].bias[0] = 3.0
        return planes, float(np.quantile(field_density_grid(model, planes, R, 0.0), 0.75))


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
@pytest.mark.parametrize("c2f", [False, True])
def test_extract_mesh_on_device_is_the_host_grid_meshed_by_lorensen(tiny_model, monkeypatch, c2f, device):
    """On the CPU forced by ``LRM_FAST_MESH_DEVICE=1``; on CUDA the default."""
    import trimesh

    tiny_model.to(device)
    rc, R = tiny_model.cfg.render, 40
    planes, thr = _surface(tiny_model, R, device)
    with torch.no_grad():
        grid = field_density_grid(tiny_model, planes, R, thr)
    monkeypatch.setenv("LRM_FAST_MESH_DEVICE", "1" if device == "cpu" else "")
    m = extract_mesh(tiny_model, planes, resolution=R, threshold=thr, coarse_to_fine=c2f)
    monkeypatch.setenv("LRM_FAST_MESH_DEVICE", "0")
    host = extract_mesh(tiny_model, planes, resolution=R, threshold=thr, coarse_to_fine=c2f)
    rv, rf = _lorensen_mesh(grid, thr, rc.box_min, rc.box_max)
    v, f = np.asarray(m.vertices, np.float32), np.asarray(m.faces)
    np.testing.assert_array_equal(np.unique(v, axis=0), np.unique(rv, axis=0))
    assert _triangles(v, f) == _triangles(rv, rf)
    # colours: the host path's, vertex for vertex (the host's Lewiner mesh shares most vertices)
    host_col = {tuple(p): c for p, c in zip(np.asarray(host.vertices, np.float32),
                                            np.asarray(host.visual.vertex_colors))}
    cols = np.asarray(m.visual.vertex_colors)
    shared = [i for i, p in enumerate(map(tuple, v)) if p in host_col]
    assert len(shared) > 0.9 * len(v)
    host_cols = np.stack([host_col[tuple(v[i])] for i in shared]).astype(int)
    # the GPU's matmuls may round differently at another batch size (one batch here, chunks there)
    assert np.abs(cols[shared].astype(int) - host_cols).max() <= (0 if device == "cpu" else 1)
    assert isinstance(m, trimesh.Trimesh) and cols.shape == (len(v), 4)


def test_sphere_winding_flipped_as_mesh_py_does_is_outward():
    """skimage's winding flipped (what ``mesh.marching_cubes`` and the device path do) points out of the
    object, from high density to low."""
    import trimesh

    grid = torch.from_numpy(density_grid(sphere_density(0.5, 10.0), 48, -1, 1, 3.0)[0])
    v, f = marching_cubes(grid, 3.0)
    sphere = trimesh.Trimesh(v.numpy(), f.flip(1).numpy(), process=False)
    assert sphere.is_watertight and sphere.volume > 0                # positive volume <=> outward


def test_extract_mesh_on_device_largest_part_and_errors(tiny_model, monkeypatch):
    monkeypatch.setenv("LRM_FAST_MESH_DEVICE", "1")
    planes, thr = _surface(tiny_model, 32)
    full = extract_mesh(tiny_model, planes, resolution=32, threshold=thr)
    part = extract_mesh(tiny_model, planes, resolution=32, threshold=thr, largest_component=True)
    assert 0 < len(part.faces) <= len(full.faces)
    assert np.asarray(part.visual.vertex_colors).shape == (len(part.vertices), 4)
    with pytest.raises(ValueError, match="empty mesh"):
        extract_mesh(tiny_model, planes, resolution=16, threshold=1e6)
    monkeypatch.setenv("LRM_FAST_MESH_DEVICE", "maybe")
    with pytest.raises(ValueError, match="LRM_FAST_MESH_DEVICE"):
        extract_mesh(tiny_model, planes, resolution=16, threshold=thr)


@pytest.mark.gpu
def test_cuda_marching_cubes_matches_the_cpu_twin():
    x, y, z = _grid((96, 80, 64))
    vol = (0.6 - np.sqrt(x ** 2 + y ** 2 + z ** 2) + 0.05 * np.sin(9 * x) * np.cos(7 * y)).astype(np.float32)
    v, f = marching_cubes(torch.from_numpy(vol).cuda(), 0.0)
    assert v.is_cuda and f.is_cuda
    sv, sf = _twin(vol, 0.0)
    np.testing.assert_array_equal(np.unique(v.cpu().numpy(), axis=0), np.unique(sv, axis=0))
    assert _triangles(v.cpu().numpy(), f.cpu().numpy()) == _triangles(sv, sf)
