"""Textured mesh export (lrm_fast/texture.py): decimation, UV atlas, rasterization, bake, GLB/OBJ files.

Truths: closed-form colour functions (a Python one, and the tiny model's field set up so that its
colour is a closed form of xyz), float64 barycentrics computed here, the reference triplane-MLP op."""
import os
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("xatlas")
pytest.importorskip("fast_simplification")

import trimesh  # noqa: E402

from lrm_fast.io.export import save_textured_mesh  # noqa: E402
from lrm_fast.mesh import density_grid, marching_cubes, sphere_density  # noqa: E402
from lrm_fast.texture import (bake_texture, check_texture_args, decimate, field_color_fn, rasterize_uv,  # noqa: E402
                              texture_mesh, unwrap)

Q = 0.5 / 255  # uint8 rounding


def _sphere(res=32):
    v, f = marching_cubes(density_grid(sphere_density(0.5, 10.0), res, -1, 1, 3.0)[0], 3.0, -1, 1)
    return trimesh.Trimesh(v, f, process=False)


def smooth_color(p: torch.Tensor) -> torch.Tensor:
    p = p.double()
    return torch.stack([0.5 + 0.4 * torch.sin(3 * p[:, 0]), 0.5 + 0.4 * torch.cos(2 * p[:, 1]), 0.5 + p[:, 2]], -1)


def _image(mesh) -> np.ndarray:
    m = mesh.visual.material
    img = getattr(m, "baseColorTexture", None)
    img = m.image if img is None else img
    return np.asarray(img.convert("RGB"))


def _random_surface(mesh, n=3000, seed=0):
    """(3D points, their UVs, face ids, barycentrics) of random points on the mesh's faces."""
    rng = np.random.default_rng(seed)
    fi = rng.integers(0, len(mesh.faces), n)
    w = rng.dirichlet([1, 1, 1], n)
    f = np.asarray(mesh.faces)[fi]
    P = (w[:, :, None] * np.asarray(mesh.vertices, np.float64)[f]).sum(1)
    UV = (w[:, :, None] * np.asarray(mesh.visual.uv, np.float64)[f]).sum(1)
    return P, UV, fi, w


def _texel_points(mesh, fi, UV):
    """For sample points, their texel (row, col) and, where the texel's centre lies in the same UV
    triangle, the 3D point of that centre (float64 barycentrics computed here)."""
    img = _image(mesh)
    S = img.shape[0]
    col = np.clip(np.floor(UV[:, 0] * S), 0, S - 1).astype(int)
    j = np.clip(np.floor(UV[:, 1] * S), 0, S - 1).astype(int)
    c = np.stack([(col + 0.5) / S, (j + 0.5) / S], -1)
    f = np.asarray(mesh.faces)[fi]
    a, b, d = (np.asarray(mesh.visual.uv, np.float64)[f[:, k]] for k in range(3))

    def cross(u, v):
        return u[:, 0] * v[:, 1] - u[:, 1] * v[:, 0]

    area = cross(b - a, d - a)
    w = np.stack([cross(b - c, d - c), cross(d - c, a - c), cross(a - c, b - c)], -1) / area[:, None]
    inside = (w >= 1e-7).all(-1)
    P = (w[:, :, None] * np.asarray(mesh.vertices, np.float64)[f]).sum(1)
    return img[S - 1 - j, col] / 255.0, P, inside


def _sample_bilinear(mesh, UV):
    return trimesh.visual.color.uv_to_interpolated_color(UV, mesh.visual.material.baseColorTexture
                                                         if hasattr(mesh.visual.material, "baseColorTexture")
                                                         else mesh.visual.material.image)[:, :3] / 255.0


# ---------------------------------------------------------------------------------------- arguments

@pytest.mark.parametrize("size", [100, 8, 0, -16, 1024.0, "1024", True, 16384])
def test_bad_texture_size_is_one_line_error(size):
    with pytest.raises(ValueError, match="texture size must be a power of two") as e:
        check_texture_args(size, None)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("faces", [3, 0, -1, 2.5, "100", True])
def test_bad_face_budget_is_one_line_error(faces):
    with pytest.raises(ValueError, match="face budget must be an integer >= 4") as e:
        check_texture_args(1024, faces)
    assert "\n" not in str(e.value)
    assert check_texture_args(16, 4) == (16, 4) and check_texture_args(2048, None) == (2048, None)


def test_missing_package_is_one_line_error(monkeypatch):
    m = _sphere(16)
    monkeypatch.setitem(sys.modules, "xatlas", None)
    with pytest.raises(RuntimeError, match=r"needs the 'xatlas' package \(pip install xatlas\)"):
        unwrap(m.vertices, m.faces, 64)
    monkeypatch.setitem(sys.modules, "fast_simplification", None)
    with pytest.raises(RuntimeError, match="pip install fast-simplification"):
        decimate(m.vertices, m.faces, 10)


@pytest.mark.parametrize("argv, match", [
    (["--texture", "--texture-size", "100"], "texture size must be a power of two"),
    (["--texture", "--faces", "3"], "face budget must be an integer >= 4"),
    (["--texture-size", "64"], "--texture-size needs --texture"),
    (["--texture", "--formats", "glb,ply"], "cannot write ply"),
])
def test_cli_bad_texture_arguments(argv, match, capsys, tmp_path):
    from lrm_fast.cli import main

    assert main(["reconstruct", "--out", str(tmp_path), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert match in err and "\n" not in err
    assert not os.listdir(tmp_path)  # failed before loading a model or writing anything


# ---------------------------------------------------------------------------------------- pieces

def test_rasterize_square_barycentrics_are_exact():
    """Two triangles tiling [0, 1]^2: every texel centre is covered, and its barycentric weights
    rebuild the centre (a float64 closed form)."""
    uv = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], np.float64)
    faces = np.array([[0, 1, 2], [0, 2, 3]])
    S = 16
    fid, bary = rasterize_uv(uv, faces, S)
    assert (fid >= 0).all()
    centre = (bary[..., :, None] * torch.as_tensor(uv)[torch.as_tensor(faces)[fid]]).sum(-2)
    jj, ii = torch.meshgrid(torch.arange(S), torch.arange(S), indexing="ij")
    truth = torch.stack([(ii + 0.5) / S, (jj + 0.5) / S], -1).double()
    torch.testing.assert_close(centre, truth, atol=1e-12, rtol=0)
    assert (bary >= -1e-9).all() and torch.allclose(bary.sum(-1), torch.ones(S, S, dtype=torch.float64))
    # a right triangle at 64 texels: centres (i + .5, j + .5) with i, j >= 6 and i + j <= 63, i.e.
    # 52 * 53 / 2 of them; a zero-area triangle covers nothing
    fid, _ = rasterize_uv(np.array([[0.1, 0.1], [0.9, 0.1], [0.1, 0.9], [0.5, 0.5]]), np.array([[0, 1, 2], [3, 3, 3]]), 64)
    j, i = torch.nonzero(fid == 0).unbind(-1)
    assert len(i) == 52 * 53 // 2 and i.min() == 6 and j.min() == 6 and (i + j).max() == 63 and not (fid == 1).any()


def test_decimation_respects_the_budget():
    m = _sphere(32)
    assert len(m.faces) > 900
    for budget in (500, 100, 4):
        v, f = decimate(m.vertices, m.faces, budget)
        assert 0 < len(f) <= budget
        assert f.min() >= 0 and f.max() == len(v) - 1 and len(np.unique(f)) == len(v)  # no unreferenced vertices
    v, f = decimate(m.vertices, m.faces, 10 ** 6)
    assert len(f) == len(m.faces)
    col = texture_mesh(m, smooth_color, faces=300, texture=False)
    assert len(col.faces) <= 300 and col.visual.kind == "vertex"
    np.testing.assert_allclose(col.visual.vertex_colors[:, :3] / 255.0,
                               smooth_color(torch.as_tensor(col.vertices)).clamp(0, 1).numpy(), atol=Q + 1e-6)


# ---------------------------------------------------------------------------------------- the bake

@pytest.fixture(scope="module")
def textured_sphere():
    return texture_mesh(_sphere(32), smooth_color, texture_size=256)


def test_uvs_in_unit_square_and_texture_non_empty(textured_sphere):
    tm = textured_sphere
    assert tm.visual.kind == "texture"
    uv = np.asarray(tm.visual.uv)
    assert uv.shape == (len(tm.vertices), 2) and uv.min() >= 0 and uv.max() <= 1
    img = _image(tm)
    assert img.shape == (256, 256, 3) and img.dtype == np.uint8 and img.std() > 10
    # every face has a real UV triangle and the charts cover a good part of the atlas
    f = np.asarray(tm.faces)
    e1, e2 = uv[f[:, 1]] - uv[f[:, 0]], uv[f[:, 2]] - uv[f[:, 0]]
    area = np.abs(e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]).sum() / 2
    assert 0.4 < area <= 1.0


def test_texels_equal_the_colour_at_their_surface_points(textured_sphere):
    tm = textured_sphere
    P, UV, fi, _ = _random_surface(tm)
    texel, Pc, inside = _texel_points(tm, fi, UV)
    assert inside.sum() > 1000
    truth = smooth_color(torch.as_tensor(Pc[inside])).clamp(0, 1).numpy()
    np.testing.assert_allclose(texel[inside], truth, atol=Q + 1e-6)
    # bilinear sampling anywhere on the surface stays within a texel's worth of colour change
    err = np.abs(_sample_bilinear(tm, UV) - smooth_color(torch.as_tensor(P)).clamp(0, 1).numpy())
    assert err.max() < 0.03


def test_dilation_keeps_background_out_of_chart_borders(textured_sphere):
    """Bilinear samples at the vertices (every chart border runs through them) keep the colour there;
    without the dilation they mix in the background (so the check would catch a bleed)."""
    from PIL import Image

    tm = textured_sphere
    V, Fc, uv = tm.vertices, tm.faces, np.asarray(tm.visual.uv)
    truth = smooth_color(torch.as_tensor(np.asarray(V, np.float64))).clamp(0, 1).numpy()
    assert np.abs(_sample_bilinear(tm, uv) - truth).max() < 0.03

    def red(p):
        return torch.tensor([1.0, 0.0, 0.0]).expand(len(p), 3)

    for dilation, lo, hi in ((4, 254 / 255, 1.0), (0, 0.0, 0.9)):
        img, mask = bake_texture(red, V, Fc, uv, 256, dilation=dilation, background=(0, 0, 0))
        assert mask.mean() > 0.4
        r = trimesh.visual.color.uv_to_interpolated_color(uv, Image.fromarray(img))[:, 0] / 255.0
        assert lo <= r.min() <= hi, (dilation, r.min())


@pytest.mark.parametrize("fmt", ["glb", "obj"])
def test_saved_file_reloads_with_uvs_and_texture(textured_sphere, tmp_path, fmt):
    tm = textured_sphere
    written = save_textured_mesh(tm, str(tmp_path / f"sphere.{fmt}"))
    names = sorted(os.path.basename(w) for w in written)
    assert names == (["sphere.glb"] if fmt == "glb" else ["sphere.mtl", "sphere.obj", "sphere_texture.png"])
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".tmp-")]
    r = trimesh.load(str(tmp_path / f"sphere.{fmt}"), force="mesh", process=False)
    assert r.visual.kind == "texture" and len(r.faces) == len(tm.faces)
    uv = np.asarray(r.visual.uv)
    assert uv.min() >= 0 and uv.max() <= 1
    np.testing.assert_array_equal(_image(r), _image(tm))  # PNG is lossless
    # colours sampled on the reloaded mesh (its own vertices, UVs and image) are the field's
    P, UV, fi, _ = _random_surface(r, seed=1)
    texel, Pc, inside = _texel_points(r, fi, UV)
    np.testing.assert_allclose(texel[inside], smooth_color(torch.as_tensor(Pc[inside])).clamp(0, 1).numpy(),
                               atol=Q + 2e-5)  # obj stores coordinates with 8 digits
    np.testing.assert_allclose(_sample_bilinear(r, UV), _sample_bilinear(tm, _random_surface(tm, seed=1)[1]),
                               atol=0.02 if fmt == "obj" else 1e-9)


def test_textured_mesh_refuses_ply_and_untextured(textured_sphere, tmp_path):
    with pytest.raises(ValueError, match="must be .glb or .obj"):
        save_textured_mesh(textured_sphere, str(tmp_path / "a.ply"))
    with pytest.raises(ValueError, match="no UV texture"):
        save_textured_mesh(_sphere(16), str(tmp_path / "a.glb"))


# ---------------------------------------------------------------------------------------- through the model

def _closed_form_field(model):
    """Set the tiny model's field so its colour is a closed form of the point, whatever the plane
    order or transposes: planes ch0 = 1 + 0.3 (s + t), ch1 = 2 + 0.5 s t (bilinear sampling
    reproduces both exactly inside the texel centres), summed over the planes by the first layer
    (x + y + z and xy + yz + zx), passed on by identity layers (all positive, ReLU is identity), then
    r = sw(2 * 0.6 (x + y + z)), g = sw(4 * 0.5 (xy + yz + zx)), b = sw(0) (sw = widened sigmoid)."""
    f = model.field
    C, H = model.cfg.triplane.channels, model.cfg.triplane.high_res
    c = -1 + (2 * torch.arange(H) + 1) / H               # texel-centre coordinates (align_corners=False)
    t, s = torch.meshgrid(c, c, indexing="ij")           # rows index the plane's 2nd coordinate
    planes = torch.zeros(1, 3, C, H, H)
    planes[0, :, 0] = 1 + 0.3 * (s + t)
    planes[0, :, 1] = 2 + 0.5 * s * t
    lin = f.linears
    with torch.no_grad():
        for m in lin:
            m.weight.zero_()
            m.bias.zero_()
        for p in range(3):
            lin[0].weight[0, p * C + 0] = 1.0
            lin[0].weight[1, p * C + 1] = 1.0
        for m in lin[1:-1]:
            m.weight[0, 0] = m.weight[1, 1] = 1.0
        lin[-1].weight[0, 0] = 1.0                       # density: anything
        lin[-1].weight[1, 0], lin[-1].bias[1] = 2.0, -6.0
        lin[-1].weight[2, 1], lin[-1].bias[2] = 4.0, -24.0

    def truth(p):
        p = torch.as_tensor(p, dtype=torch.float64)
        x, y, z = p.unbind(-1)
        sw = lambda a: torch.sigmoid(a) * 1.002 - 0.001  # noqa: E731
        return torch.stack([sw(1.2 * (x + y + z)), sw(2.0 * (x * y + y * z + z * x)), sw(0 * x)], -1).numpy()

    return planes, truth


def test_field_bake_matches_closed_form_colour(tiny_model):
    model = tiny_model.eval()
    planes, truth = _closed_form_field(model)
    color = field_color_fn(model, planes)
    pts = torch.rand(500, 3, generator=torch.Generator().manual_seed(0)) * 1.6 - 0.8
    np.testing.assert_allclose(color(pts).numpy(), truth(pts), atol=2e-6)  # the field really is the closed form
    tm = texture_mesh(_sphere(32), color, texture_size=128, faces=400)
    assert len(tm.faces) <= 400
    P, UV, fi, _ = _random_surface(tm, seed=2)
    texel, Pc, inside = _texel_points(tm, fi, UV)
    assert inside.sum() > 500
    np.testing.assert_allclose(texel[inside], truth(Pc[inside]), atol=Q + 1e-5)


def test_api_mesh_and_save_textured(tiny_model, tmp_path):
    """rec.mesh(texture=True) on the tiny preset: texels equal the reference field op's colour at
    their surface points; rec.save writes a GLB and an OBJ that reload with their textures."""
    from lrm_fast.api import reconstruct
    from lrm_fast.ops import triplane_mlp

    model = tiny_model.eval()
    model.untrained = True
    with torch.no_grad():
        model.field.linears[-1].bias[0] = 3.0  # a real surface, as tests/test_mesh.py
    rec = reconstruct(model, np.full((40, 40, 3), 128, np.uint8), remove_background="none")
    with pytest.raises(ValueError, match="power of two"):
        rec.mesh(texture=True, texture_size=48)
    tm = rec.mesh(texture=True, texture_size=64, faces=300)
    assert tm.visual.kind == "texture" and len(tm.faces) <= 300
    assert np.asarray(tm.visual.uv).min() >= 0 and np.asarray(tm.visual.uv).max() <= 1
    P, UV, fi, _ = _random_surface(tm, seed=3)
    texel, Pc, inside = _texel_points(tm, fi, UV)
    assert inside.sum() > 300
    f = model.field
    lin = f.linears
    raw = triplane_mlp(rec.triplane, torch.as_tensor(Pc[inside], dtype=torch.float32)[None], [m.weight for m in lin],
                       [m.bias for m in lin], backend="reference")
    ref = f.rgb(raw)[0].clamp(0, 1).detach().numpy()
    np.testing.assert_allclose(texel[inside], ref, atol=Q + 1e-5)
    vc = rec.mesh(faces=300)
    assert vc.visual.kind == "vertex" and len(vc.faces) <= 300
    with pytest.raises(RuntimeError, match="above the budget of 4"):  # 17 separate pieces
        rec.mesh(faces=4)

    written = rec.save(str(tmp_path), formats=("glb", "obj"), names=["obj"], texture=True, texture_size=32, faces=200)
    assert sorted(os.path.basename(w) for w in written) == ["obj.glb", "obj.mtl", "obj.obj", "obj_texture.png"]
    for ext in ("glb", "obj"):
        r = trimesh.load(str(tmp_path / f"obj.{ext}"), force="mesh", process=False)
        assert r.visual.kind == "texture" and _image(r).shape == (32, 32, 3) and len(r.faces) <= 200
    with pytest.raises(ValueError, match="cannot be written as ply"):
        rec.save(str(tmp_path), formats=("ply",), texture=True)


def test_cli_texture_end_to_end(tmp_path):
    """`lrm-fast reconstruct --texture` on the shipped sample with the shipped demo model (a coarse
    grid to stay fast): the GLB opens in trimesh with its UVs and texture, the OBJ with its MTL + PNG."""
    from lrm_fast.cli import main

    out = tmp_path / "out"
    assert main(["reconstruct", "--out", str(out), "--formats", "glb,obj", "--mc-resolution", "48",
                 "--texture", "--texture-size", "64", "--faces", "1500", "--quiet"]) == 0
    from lrm_fast.batch import record_path

    written = set(os.listdir(out / "sample")) - {os.path.basename(record_path(str(out), "sample"))}
    assert sorted(written) == ["sample.glb", "sample.mtl", "sample.obj", "sample_texture.png"]
    for ext in ("glb", "obj"):
        r = trimesh.load(str(out / "sample" / f"sample.{ext}"), force="mesh", process=False)
        uv = np.asarray(r.visual.uv)
        assert r.visual.kind == "texture" and 0 < len(r.faces) <= 1500 and _image(r).shape == (64, 64, 3)
        assert uv.min() >= 0 and uv.max() <= 1 and _image(r).std() > 0
