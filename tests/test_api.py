"""The public API on the tiny preset: inputs of every kind, shapes, formats written and re-loadable."""
import os

import numpy as np
import pytest
import torch
from PIL import Image

import lrm_fast
from lrm_fast.api import DEFAULT_MODEL

SAMPLE = os.path.join(os.path.dirname(lrm_fast.__file__), "assets", "sample.png")


@pytest.fixture(scope="module")
def model():
    return lrm_fast.load_model("tiny", device="cpu")


def test_public_names_only():
    assert set(lrm_fast.__all__) == {"LRM", "LRMConfig", "Reconstruction", "load_model", "reconstruct", "reconstruct_many", "remove_background", "info",
                                    "__version__"}
    from lrm_fast.api import _resolve_model_path

    assert DEFAULT_MODEL in lrm_fast.config.PRESETS or os.path.isdir(_resolve_model_path(DEFAULT_MODEL))


def test_load_model_defaults(model):
    p = next(model.parameters())
    assert p.dtype == torch.float32 and p.device.type == "cpu" and not model.training and model.untrained
    assert lrm_fast.load_model("tiny", dtype="bf16").pos_embed.dtype == torch.bfloat16
    with pytest.raises(FileNotFoundError, match="neither a preset"):
        lrm_fast.load_model("no/such/model")
    demo = lrm_fast.load_model()  # no argument: the shipped demo model (trained weights, fp32 on CPU)
    assert demo.cfg.name == "demo" and not demo.untrained and demo.pos_embed.dtype == torch.float32
    with pytest.raises(ValueError, match="unknown dtype"):
        lrm_fast.load_model("tiny", dtype="int3")


def test_inputs_of_every_kind(model):
    S = model.cfg.encoder.image_size
    arr = np.array(Image.open(SAMPLE).convert("RGBA"))
    inputs = [SAMPLE, Image.open(SAMPLE), arr, torch.from_numpy(arr).permute(2, 0, 1)]
    recs = [model.reconstruct(x) for x in inputs]
    for r in recs:
        assert r.triplane.shape == (1, 3, 8, 8, 8) and r.inputs.shape == (1, 3, S, S)
        torch.testing.assert_close(r.triplane, recs[0].triplane, atol=1e-5, rtol=1e-5)
    batch = lrm_fast.reconstruct(model, [SAMPLE, arr])
    assert batch.triplane.shape[0] == 2
    torch.testing.assert_close(batch.triplane[1:], recs[0].triplane, atol=1e-5, rtol=1e-5)
    assert lrm_fast.reconstruct(model, torch.rand(3, 4, 40, 40)).batch_size == 3
    assert not batch.triplane.requires_grad


class _NoCut:
    def __init__(self, model):
        self.model = model

    def reconstruct(self, x, **kw):
        return self.model.reconstruct(x, remove_background="none", **kw)


def test_camera_validation(model):
    x = np.zeros((40, 40, 3), np.uint8)
    model = _NoCut(model)  # an all-black photo has no foreground to cut out: use it as is
    with pytest.raises(ValueError, match=r"camera feature must be \[16\] or \[B, 16\]"):
        model.reconstruct(x, camera=torch.zeros(12))
    with pytest.raises(ValueError, match="2 cameras for 1 images"):
        model.reconstruct(x, camera=torch.zeros(2, 16))
    with pytest.raises(ValueError, match="c2w must be"):
        model.reconstruct(x, camera=(torch.eye(3), torch.zeros(4)))
    with pytest.raises(ValueError, match="NaN"):
        model.reconstruct(x, camera=torch.full((16,), float("nan")))
    from lrm_fast.model.camera import canonical_pose, default_intrinsics

    a = model.reconstruct(x, camera=(canonical_pose(), default_intrinsics())).triplane
    torch.testing.assert_close(a, model.reconstruct(x).triplane)   # the default source camera


def test_render_orbit_and_cameras(model):
    rec = model.reconstruct(SAMPLE)
    out = rec.render(azimuths=[0, 90, 180], elevations=20, resolution=12)
    assert out["rgb"].shape == (1, 3, 12, 12, 3) and out["depth"].shape == (1, 3, 12, 12)
    from lrm_fast.model.camera import orbit_cameras

    c2w = orbit_cameras([0, 90, 180], 20, 2.0)
    same = rec.render(c2w, resolution=12)
    torch.testing.assert_close(same["rgb"], out["rgb"])
    chunked = rec.render(azimuths=[0, 90, 180], elevations=20, resolution=12, views_per_chunk=1)
    torch.testing.assert_close(chunked["rgb"], out["rgb"])
    assert rec.turntable(5, 8).shape == (1, 5, 8, 8, 3)
    with pytest.raises(ValueError, match="render cameras must be"):
        rec.render(torch.eye(4), resolution=8)
    with pytest.raises(ValueError, match="azimuths but"):
        rec.render(azimuths=[0, 1, 2], elevations=[0, 1], resolution=8)


def test_max_memory_sets_the_renderer_budget_for_the_call(model, monkeypatch):
    """``render(max_memory=...)`` hands the budget to the renderer for the call only (restored after, also
    on an error); the views do not depend on it; a bad value is a one-line error naming ``max_memory``."""
    from lrm_fast.memory import MemoryBudget

    rec = model.reconstruct(SAMPLE)
    seen = []
    render = model.render

    def spy(*a, **k):
        seen.append(getattr(model.renderer, "max_memory", None))
        return render(*a, **k)

    monkeypatch.setattr(model, "render", spy)
    before = getattr(model.renderer, "max_memory", None)
    small = rec.render(azimuths=[0, 90], resolution=10, max_memory="64MB")["rgb"]
    assert seen == [MemoryBudget(64 * 10 ** 6)] and getattr(model.renderer, "max_memory", None) == before
    torch.testing.assert_close(small, rec.render(azimuths=[0, 90], resolution=10)["rgb"])
    assert seen[-1] == before                     # None: the renderer's own setting
    for bad in ("lots", -5, "0GB"):
        with pytest.raises(ValueError, match="max_memory"):
            rec.render(resolution=8, max_memory=bad)
        with pytest.raises(ValueError, match="max_memory"):
            rec.mesh(resolution=20, max_memory=bad)
    import numpy as np

    # the same mesh (bit for bit where the field kernel rounds per point: tests/test_mesh.py; the tiny
    # preset's matmul path may round a density differently in another chunk size)
    a, b = rec.mesh(resolution=40, max_memory="1MB"), rec.mesh(resolution=40, max_memory="8GB")
    np.testing.assert_allclose(a.vertices, b.vertices, atol=1e-3)
    np.testing.assert_array_equal(a.faces, b.faces)


def test_mesh_and_save_formats_reload(model, tmp_path):
    import imageio.v2 as imageio
    import trimesh

    rec = model.reconstruct([SAMPLE, SAMPLE])
    mesh = rec.mesh(resolution=24)
    assert isinstance(mesh, trimesh.Trimesh) and len(mesh.faces) > 0 and mesh.visual.vertex_colors.shape[1] == 4
    written = rec.save(str(tmp_path), formats=("glb", "obj", "ply", "mp4", "png"), n_views=4, resolution=16,
                       mc_resolution=24, names=["a", "b"])
    names = sorted(os.path.basename(w) for w in written)
    for stem in ("a", "b"):
        for ext in (".glb", ".obj", ".ply", ".mp4", "_input.png", "_view000.png", "_view003.png"):
            assert stem + ext in names
    for ext in ("glb", "obj", "ply"):
        m = trimesh.load(str(tmp_path / f"a.{ext}"), force="mesh")
        assert len(m.faces) == len(mesh.faces) and len(m.vertices) > 0
    assert trimesh.load(str(tmp_path / "a.ply")).visual.vertex_colors.shape[0] == len(mesh.vertices)
    frames = imageio.mimread(str(tmp_path / "a.mp4"))
    assert len(frames) == 4 and frames[0].shape == (16, 16, 3)
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp")]
    with pytest.raises(ValueError, match="unknown output format"):
        rec.save(str(tmp_path), formats=("fbx",))
    with pytest.raises(ValueError, match="1 names for 2"):
        rec.save(str(tmp_path), names=["x"])


def test_lrm_method_and_function_agree(model):
    a = model.reconstruct(SAMPLE).triplane
    b = lrm_fast.reconstruct(model, SAMPLE).triplane
    torch.testing.assert_close(a, b)


def test_triposr_variant_api(tmp_path):
    """A TripoSR-config model (tiny sizes): no camera input, front view at +x, its own box."""
    from lrm_fast.config import LRMConfig

    cfg = LRMConfig.preset("triposr").replace(
        encoder=dict(image_size=32, feat_dim=64, overrides=dict(embed_dim=64, depth=1, num_heads=1)),
        decoder=dict(dim=64, layers=1, heads=2, in_norm_groups=4), triplane=dict(low_res=4, high_res=8, channels=8),
        field=dict(hidden=16, layers=3), render=dict(samples_per_ray=8))
    m = lrm_fast.LRM(cfg).eval()
    m.untrained = True
    rec = m.reconstruct(SAMPLE)
    assert rec.triplane.shape == (1, 3, 8, 8, 8)
    with pytest.raises(ValueError, match="takes no source camera"):
        m.reconstruct(SAMPLE, camera=torch.zeros(16))
    assert rec.render(azimuths=[0], resolution=8)["rgb"].shape == (1, 1, 8, 8, 3)
    mesh = rec.mesh(resolution=24)
    assert np.abs(mesh.vertices).max() <= 0.87 + 1e-5


@pytest.mark.gpu
def test_gpu_end_to_end_bf16(tmp_path):
    """On CUDA: dtype auto = bf16, the whole path (reconstruct, render, mesh, save) runs on the GPU, and
    the fast backend's mesh matches the reference backend's within a voxel."""
    # the GPU machine may lack these (bench/scripts/prepare_gpu_wheels.sh carries trimesh / imageio-ffmpeg)
    for mod in ("skimage", "trimesh", "imageio"):
        pytest.importorskip(mod)
    m = lrm_fast.load_model("small", device="cuda")
    assert next(m.parameters()).dtype == torch.bfloat16
    rec = m.reconstruct([SAMPLE, SAMPLE])
    assert rec.triplane.device.type == "cuda" and rec.triplane.dtype == torch.bfloat16
    assert rec.render(azimuths=[0, 90], resolution=64)["rgb"].shape == (2, 2, 64, 64, 3)
    fast = rec.mesh(resolution=128, threshold="auto")
    m.set_backend("reference")
    ref = rec.mesh(resolution=128, threshold="auto", coarse_to_fine=False)
    m.set_backend("auto")
    assert abs(len(fast.faces) - len(ref.faces)) <= 0.02 * len(ref.faces)
    a, b = np.asarray(fast.bounds), np.asarray(ref.bounds)
    assert np.abs(a - b).max() <= 2 * 2 / 127
    pytest.importorskip("imageio_ffmpeg")   # mp4
    written = rec.save(str(tmp_path), formats=("glb", "mp4"), n_views=8, resolution=64, mc_resolution=96)
    assert len(written) == 4
