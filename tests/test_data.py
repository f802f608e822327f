"""Synthetic data (exact ray casting, OpenLRM layout, determinism) and the multi-view loader."""
import json
import math
import os

import numpy as np
import pytest
import torch

from lrm_fast.data import synthetic as syn
from lrm_fast.data.openlrm import MultiViewDataset, collate, list_objects, resize_rgba
from lrm_fast.model.camera import camera_features, canonical_pose

EYE = np.eye(3, dtype=np.float32)


def _prim(kind, size, rot=EYE, center=(0, 0, 0), texture="solid"):
    return syn.Primitive(kind, np.array(center, np.float32), rot, np.array(size, np.float32),
                         np.array([0.8, 0.2, 0.2], np.float32), np.array([0.1, 0.1, 0.9], np.float32), texture, 3.0)


def _canonical_np(distance=2.0):
    return canonical_pose(distance).double().numpy()[None]


def test_sphere_silhouette_area_matches_projection():
    r, d, W, f = 0.5, 2.0, 129, 0.75
    rgba, depth = syn.render_object([_prim("sphere", [r])], _canonical_np(d), W, f)
    area = rgba[0, ..., 3].sum()
    # the tangent cone has half-angle asin(r/d); on the image plane a circle of radius f*W*tan
    expected = math.pi * (f * W * math.tan(math.asin(r / d))) ** 2
    assert abs(area - expected) / expected < 0.01
    # nearest point of the sphere is straight ahead at d - r
    assert depth[0, W // 2, W // 2] == pytest.approx(d - r, abs=1e-4)


def test_box_face_depth():
    # camera on -y at distance 2 sees only the y = -0.5 face: depth * (dir . forward) = 1.5 everywhere
    W = 33
    c2w = _canonical_np(2.0)
    rgba, depth = syn.render_object([_prim("box", [0.5, 0.5, 0.5])], c2w, W)
    _, dirs = syn.camera_rays(c2w, 0.75, W, W)
    fwd = dirs[0, :, 1].reshape(W, W)   # +y is the viewing direction
    hit = rgba[0, ..., 3] > 0
    assert hit.sum() > 0.2 * W * W
    np.testing.assert_allclose((depth[0] * fwd)[hit], 1.5, atol=2e-3)
    assert depth[0, W // 2, W // 2] == pytest.approx(1.5, abs=1e-3)


@pytest.mark.parametrize("kind,size", [("sphere", [0.4]), ("box", [0.3, 0.4, 0.2]), ("cylinder", [0.3, 0.4]),
                                       ("cone", [0.35, 0.4]), ("torus", [0.4, 0.12])])
def test_hits_lie_on_the_surface(kind, size):
    rng = np.random.default_rng(0)
    o = rng.normal(size=(4000, 3)).astype(np.float32)
    o = 2.0 * o / np.linalg.norm(o, axis=-1, keepdims=True)
    tgt = rng.uniform(-0.5, 0.5, size=(4000, 3)).astype(np.float32)
    d = (tgt - o) / np.linalg.norm(tgt - o, axis=-1, keepdims=True)
    t, p, n = syn._HIT[kind](o, d, np.array(size, np.float32))
    hit = np.isfinite(t)
    assert hit.mean() > 0.05
    p = p[hit]
    if kind == "sphere":
        res = np.linalg.norm(p, axis=-1) - size[0]
    elif kind == "box":
        res = (np.abs(p) / np.array(size)).max(-1) - 1
    elif kind == "cylinder":
        res = np.maximum(np.hypot(p[:, 0], p[:, 1]) / size[0], np.abs(p[:, 2]) / size[1]) - 1
    elif kind == "cone":
        r, h = size
        side = np.hypot(p[:, 0], p[:, 1]) - r * (h - p[:, 2]) / (2 * h)
        res = np.where(np.abs(p[:, 2] + h) < 1e-4, 0.0, side)
    else:
        res = syn._torus_sdf(p, *size)
    assert np.abs(res).max() < 2e-3
    assert np.allclose(np.linalg.norm(n[hit], axis=-1), 1, atol=1e-3)
    # no ray that hits starts inside: the hit is the first one (t > 0)
    assert (t[hit] > 0).all()


def test_object_deterministic_and_inside_box():
    a = syn.make_object(3, 7, 4, 16)
    b = syn.make_object(3, 7, 4, 16)
    np.testing.assert_array_equal(a[2], b[2])
    np.testing.assert_array_equal(a[1], b[1])
    c = syn.make_object(3, 8, 4, 16)
    assert not np.array_equal(a[2], c[2])
    for i in range(30):
        for p in syn.random_object(syn.object_rng(0, i)):
            assert np.linalg.norm(p.center) + p.bound_radius() <= 0.95 + 1e-5


@pytest.fixture(scope="module")
def dataset_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("syn"))
    syn.make_dataset(root, 4, n_views=5, resolution=16, seed=0, workers=1)
    return root


def test_layout_and_multiprocess_determinism(dataset_root, tmp_path):
    uids = json.load(open(os.path.join(dataset_root, "meta.json")))
    assert uids == [f"s0_{i:06d}" for i in range(4)]
    obj = os.path.join(dataset_root, uids[0])
    assert sorted(os.listdir(os.path.join(obj, "rgba"))) == [f"{v:03d}.png" for v in range(5)]
    assert np.load(os.path.join(obj, "pose", "000.npy")).shape == (3, 4)
    K = np.load(os.path.join(obj, "intrinsics.npy"))
    np.testing.assert_allclose(K, [[12, 12], [8, 8], [16, 16]])
    other = str(tmp_path / "mp")
    syn.make_dataset(other, 4, n_views=5, resolution=16, seed=0, workers=2)
    for u in uids:
        for sub, name in (("rgba", "004.png"), ("pose", "004.npy"), ("depth", "002.npy")):
            with open(os.path.join(dataset_root, u, sub, name), "rb") as f1, open(os.path.join(other, u, sub, name), "rb") as f2:
                assert f1.read() == f2.read()
    assert not [d for d in os.listdir(other) if d.endswith(".tmp")]


def test_loader_shapes_and_normalization(dataset_root):
    ds = MultiViewDataset(dataset_root, side_views=2, source_size=28, render_size=12, patch=8, seed=1)
    it = ds[1]
    assert it["source_image"].shape == (3, 28, 28) and it["source_camera"].shape == (16,)
    assert it["c2w"].shape == (3, 4, 4) and it["intrinsics"].shape == (3, 4)
    assert it["pixels"].shape == (3, 64, 2) and it["rgb"].shape == (3, 64, 3) and it["alpha"].shape == (3, 64)
    assert it["pixels"].min() >= 0 and it["pixels"].max() < 12
    torch.testing.assert_close(it["c2w"][0], canonical_pose(2.0), atol=1e-5, rtol=0)
    torch.testing.assert_close(it["source_camera"], camera_features(canonical_pose(2.0), it["intrinsics"][0]),
                               atol=1e-5, rtol=0)
    torch.testing.assert_close(it["intrinsics"][0], torch.tensor([0.75, 0.75, 0.5, 0.5]))
    # same item twice (pure function of seed, epoch, index); another epoch differs
    again = ds[1]
    torch.testing.assert_close(again["rgb"], it["rgb"])
    ds.set_epoch(1)
    assert not torch.equal(ds[1]["pixels"], it["pixels"])
    # targets are the image on the chosen background
    b = collate([it, again])
    assert b["rgb"].shape == (2, 3, 64, 3) and b["index"].tolist() == [1, 1]
    assert ((it["rgb"] - it["bg"][:, None]).abs().amax(-1)[it["alpha"] == 0] < 1e-6).all()


def test_normalization_is_rigid(dataset_root):
    from lrm_fast.data.openlrm import load_view

    ds = MultiViewDataset(dataset_root, side_views=4, render_size=16, patch=None, seed=0, source_view=2)
    it = ds[0]
    folder = os.path.join(dataset_root, ds.uids[0])
    # view 0 of the item is view 2 on disk; relative poses are unchanged by the normalization
    raw = {v: load_view(folder, v)[1] for v in range(5)}
    src = raw[2]
    for k in range(1, 5):
        rel_norm = torch.linalg.inv(it["c2w"][0]) @ it["c2w"][k]
        match = [v for v in range(5) if torch.allclose(torch.linalg.inv(src) @ raw[v], rel_norm, atol=1e-4)]
        assert len(match) == 1


def test_resize_rgba_no_background_bleed():
    rgba = torch.zeros(4, 8, 8)
    rgba[:3] = torch.tensor([0.2, 0.4, 0.6])[:, None, None]
    rgba[3, 2:6, 2:6] = 1
    out = resize_rgba(rgba, 4)
    covered = out[3] > 0
    torch.testing.assert_close(out[:3, covered], torch.tensor([0.2, 0.4, 0.6])[:, None].expand(3, int(covered.sum())))


def test_corrupt_and_missing_files_are_skipped(dataset_root, tmp_path, caplog):
    import shutil

    root = str(tmp_path / "bad")
    shutil.copytree(dataset_root, root)
    uids = list_objects(root)
    with open(os.path.join(root, uids[0], "rgba", "000.png"), "wb") as f:
        f.write(b"not a png")
    os.remove(os.path.join(root, uids[1], "intrinsics.npy"))
    ds = MultiViewDataset(root, side_views=4, render_size=16, patch=None)
    got = [ds[i]["index"] for i in range(4)]
    assert got == [2, 2, 2, 3] and ds.skipped == 2
    assert "skipping object" in caplog.text
    with pytest.raises(FileNotFoundError, match="dataset root not found"):
        MultiViewDataset(str(tmp_path / "nope"))
    with pytest.raises(RuntimeError, match="no loadable object"):
        MultiViewDataset(dataset_root, side_views=5, render_size=16, patch=8)[0]   # 5 views on disk, 6 needed
    with pytest.raises(ValueError, match="n_objects"):
        syn.make_dataset(root, 0)
