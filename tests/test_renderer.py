"""The reference renderer against closed forms."""
import math

import pytest
import torch
import torch.nn.functional as F

from lrm_fast.config import FieldConfig, RenderConfig
from lrm_fast.model.camera import canonical_pose, default_intrinsics
from lrm_fast.render.field import TriplaneField
from lrm_fast.render.renderer import Renderer


class ConstantField(TriplaneField):
    """sigma = softplus(raw - 1) = const inside the box; color from position (not used here)."""

    def __init__(self, sigma: float, halfspace: bool = False):
        super().__init__(4, FieldConfig(hidden=8))
        self.raw = math.log(math.expm1(sigma)) + 1.0
        self.halfspace = halfspace

    def forward(self, planes, points):
        raw = torch.zeros(*points.shape[:-1], 4, dtype=points.dtype)
        raw[..., 0] = self.raw
        if self.halfspace:  # opaque for y > 0, empty for y < 0
            raw[..., 0] = torch.where(points[..., 1] > 0, torch.full_like(raw[..., 0], 1e3),
                                      torch.full_like(raw[..., 0], -1e3))
        return raw


def _render(field, n, importance=False):
    r = Renderer(RenderConfig(samples_per_ray=n, importance=importance, background=0.0), field)
    c2w = canonical_pose(2.0)[None, None]          # at (0, -2, 0) looking along +y
    K = default_intrinsics()[None, None]
    return r(torch.zeros(1, 3, 4, 2, 2), c2w, K, 1)  # one ray through the center


@pytest.mark.parametrize("sigma", [0.3, 1.0])
def test_constant_density_box_opacity_converges(sigma):
    exact = 1 - math.exp(-sigma * 2.0)               # the ray crosses the box over length 2
    # constant density: every sample count is exact up to OpenLRM's 1e-10 per-interval epsilon
    errs = [abs(_render(ConstantField(sigma), n)["opacity"].item() - exact) for n in (4, 16, 64)]
    assert max(errs) < 1e-5, errs


def test_opaque_halfspace_depth():
    for n, imp in ((64, False), (32, True)):
        out = _render(ConstantField(1.0, halfspace=True), n, importance=imp)
        assert out["opacity"].item() == pytest.approx(1.0, abs=1e-4)
        spacing = 2.0 / (n // (2 if imp else 1) - 1)
        assert abs(out["depth"].item() - 2.0) < spacing  # the plane y=0 is 2 units from the camera


def test_empty_space_is_background_and_missing_rays_are_clean():
    field = ConstantField(1.0)
    field.raw = -1e4
    r = Renderer(RenderConfig(samples_per_ray=8, background=0.25), field)
    c2w = torch.eye(4)[None, None].clone()
    c2w[..., :3, 3] = torch.tensor([0.0, 0.0, 5.0])  # looking down -z from z=5: hits the box
    c2w2 = c2w.clone()
    c2w2[..., :3, 3] = torch.tensor([5.0, 0.0, 5.0])  # looking down -z at x=5: misses the box
    out = r(torch.zeros(1, 3, 4, 2, 2), torch.cat([c2w, c2w2], 1), default_intrinsics()[None, None].expand(1, 2, 4), 4)
    assert torch.allclose(out["rgb"], torch.full_like(out["rgb"], 0.25))
    assert torch.isfinite(out["depth"]).all() and (out["opacity"] == 0).all()


def test_chunking_does_not_change_the_image(tiny_model):
    from lrm_fast.model.camera import orbit_cameras

    planes = torch.randn(1, 3, 8, 8, 8)
    c2w = orbit_cameras([20.0], [15.0])[None]
    K = default_intrinsics()[None, None]
    a = tiny_model.renderer(planes, c2w, K, 12)
    tiny_model.renderer.cfg = RenderConfig(**{**tiny_model.renderer.cfg.__dict__, "chunk_rays": 7})
    b = tiny_model.renderer(planes, c2w, K, 12)
    torch.testing.assert_close(a["rgb"], b["rgb"])


def test_field_activations_match_openlrm():
    f = TriplaneField(4, FieldConfig())
    x = torch.linspace(-5, 5, 11)
    torch.testing.assert_close(f.density(x), F.softplus(x - 1))
    raw = torch.zeros(1, 4)
    assert f.rgb(raw)[0, 0].item() == pytest.approx(0.5)
    assert f.rgb(torch.full((1, 4), -100.0))[0, 0].item() == pytest.approx(-0.001)
