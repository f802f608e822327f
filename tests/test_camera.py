"""Camera conventions (OpenLRM): features, normalization, intrinsics, rays."""
import math

import torch

from lrm_fast.model.camera import (camera_features, canonical_pose, default_intrinsics, look_at,
                                   normalize_cameras, orbit_cameras)
from lrm_fast.ops import generate_rays


def test_feature_shapes():
    c2w = orbit_cameras([0, 45], [0, 10])
    K = default_intrinsics().expand(2, 4)
    assert camera_features(c2w, K).shape == (2, 16)
    assert camera_features(c2w, K, "paper").shape == (2, 20)
    f = camera_features(canonical_pose(2.0), default_intrinsics())
    assert f.tolist() == [1, 0, 0, 0, 0, 0, -1, -2, 0, 1, 0, 0, 0.75, 0.75, 0.5, 0.5]


def test_azimuth_zero_is_the_canonical_pose():
    torch.testing.assert_close(orbit_cameras([0.0], [0.0])[0], canonical_pose(2.0))


def test_normalization_puts_every_source_camera_at_canonical():
    torch.manual_seed(0)
    pos = torch.nn.functional.normalize(torch.randn(5, 3), dim=-1) * torch.rand(5, 1).add(1.5)
    src = look_at(pos)
    others = orbit_cameras([10, 200, 300], [5, -20, 60], 2.5)
    for i in range(5):
        out = normalize_cameras(src[i], torch.cat([src[i:i + 1], others]))
        torch.testing.assert_close(out[0], canonical_pose(2.0), atol=1e-5, rtol=0)
        # rigid: relative poses are preserved
        rel_before = torch.linalg.inv(src[i]) @ others[0]
        rel_after = torch.linalg.inv(out[0]) @ out[1]
        torch.testing.assert_close(rel_before[:3, :3], rel_after[:3, :3], atol=1e-5, rtol=0)
    auto = normalize_cameras(src[0], src[:1], distance=None)[0]
    assert math.isclose(auto[:3, 3].norm().item(), pos[0].norm().item(), rel_tol=1e-5)


def test_center_ray_looks_at_origin_and_rays_are_unit():
    c2w = orbit_cameras([30.0], [20.0])[None]
    o, d = generate_rays(c2w, default_intrinsics()[None, None].expand(1, 1, 4), 3, 3)
    center = d[0, 0, 4]
    torch.testing.assert_close(center, -o[0, 0, 4] / o[0, 0, 4].norm())
    torch.testing.assert_close(d.norm(dim=-1), torch.ones(1, 1, 9))


def test_intrinsics_normalization_is_resolution_independent():
    c2w = orbit_cameras([10.0], [5.0])[None]
    K = torch.tensor([[[0.9, 0.8, 0.45, 0.55]]])
    # the center pixel of any odd resolution sits at normalized (0.5, 0.5): same ray
    dirs = [generate_rays(c2w, K, n, n)[1][0, 0, (n * n) // 2] for n in (3, 9, 33)]
    torch.testing.assert_close(dirs[0], dirs[1])
    torch.testing.assert_close(dirs[0], dirs[2])
    # image rows go down: row 0 is above the center (positive camera-up component)
    _, d = generate_rays(canonical_pose(2.0)[None, None], default_intrinsics()[None, None], 3, 3)
    assert d[0, 0, 1, 2] > 0 and d[0, 0, 7, 2] < 0      # world z (up) of top/bottom middle pixels
    assert d[0, 0, 5, 0] > 0 and d[0, 0, 3, 0] < 0      # world x of right/left middle pixels
