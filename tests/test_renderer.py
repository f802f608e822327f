"""The reference renderer against closed forms."""
import math

import pytest
import torch
import torch.nn.functional as F

from lrm_fast.config import FieldConfig, RenderConfig
from lrm_fast.model.camera import canonical_pose, default_intrinsics
from lrm_fast.field.triplane import TriplaneField
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


@pytest.mark.parametrize("compact", ["auto", "never"])
def test_chunking_forced_by_the_memory_budget_does_not_change_the_image(tiny_model, compact, monkeypatch):
    """A budget too small for the render splits the rays of all batch items into equal chunks; each
    ray's samples and field outputs are its own, so the image is the one-pass image bit for bit."""
    from lrm_fast.model.camera import orbit_cameras
    from lrm_fast.render.renderer import ray_bytes

    r = tiny_model.renderer
    monkeypatch.setattr(r, "compact_misses", compact)
    planes = torch.randn(2, 3, 8, 8, 8)
    c2w = orbit_cameras([20.0, 100.0], [15.0, -30.0])[None].repeat(2, 1, 1, 1)
    K = default_intrinsics()[None, None].expand(2, 2, 4)
    with torch.no_grad():
        r.max_memory = 1 << 40
        assert r.rays_per_pass(planes, 2 * 144) == 2 * 144
        a = r(planes, c2w, K, 12)
        r.max_memory = 2 * 7 * ray_bytes(r.cfg, r.field, 8, 4, False)  # 7 rays of each item per pass
        assert r.rays_per_pass(planes, 2 * 144) == 7
        b = r(planes, c2w, K, 12)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_field_activations_match_openlrm():
    f = TriplaneField(4, FieldConfig())
    x = torch.linspace(-5, 5, 11)
    torch.testing.assert_close(f.density(x), F.softplus(x - 1))
    raw = torch.zeros(1, 4)
    assert f.rgb(raw)[0, 0].item() == pytest.approx(0.5)
    assert f.rgb(torch.full((1, 4), -100.0))[0, 0].item() == pytest.approx(-0.001)


# -- fast backend (lrm_fast._C kernels) against the reference renderer ------------------------

def _fast_available():
    from lrm_fast.ops.raymarch import load_extension

    return load_extension()[0]


@pytest.mark.skipif(not _fast_available(), reason="lrm_fast._C not built")
@pytest.mark.parametrize("importance", [True, False])
@pytest.mark.parametrize("midpoint", [True, False])
@pytest.mark.parametrize("compact", ["always", "never"])
def test_fast_backend_renders_the_reference_image(tiny_model, importance, midpoint, compact, monkeypatch):
    """Both fast layouts: missed rays compacted away per batch item (the CPU default) and one march
    over every ray of the batch with misses masked after (the GPU default)."""
    from lrm_fast.model.camera import orbit_cameras

    r = tiny_model.renderer
    monkeypatch.setattr(r, "compact_misses", compact)
    r.cfg = RenderConfig(**{**r.cfg.__dict__, "samples_per_ray": 12, "importance": importance, "midpoint": midpoint})
    torch.manual_seed(1)
    planes = torch.randn(2, 3, 8, 8, 8, requires_grad=True)
    c2w = orbit_cameras([20.0, 140.0], [15.0, -40.0])[None].repeat(2, 1, 1, 1)
    c2w[1, 1, :3, 3] *= 2.5                          # far away: many rays miss the box
    K = default_intrinsics()[None, None].expand(2, 2, 4)
    outs, grads = [], []
    for backend in ("reference", "fast"):
        r.backend = backend
        out = r(planes, c2w, K, 10, background=torch.tensor([0.2, 0.5, 0.9]))
        loss = out["rgb"].square().sum() + out["depth"].sum() * 0.1 + out["opacity"].sum()
        grads.append(torch.autograd.grad(loss, planes)[0])
        outs.append(out)
    r.backend = "auto"
    for k in ("rgb", "depth", "opacity"):
        torch.testing.assert_close(outs[1][k], outs[0][k], atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(grads[1], grads[0], atol=1e-5, rtol=1e-4)


@pytest.mark.skipif(not _fast_available(), reason="lrm_fast._C not built")
@pytest.mark.parametrize("compact", ["always", "never"])
def test_fast_backend_missed_rays_and_pixels(tiny_model, compact, monkeypatch):
    r = tiny_model.renderer
    monkeypatch.setattr(r, "compact_misses", compact)
    c2w = torch.eye(4)[None, None].repeat(1, 2, 1, 1)
    c2w[0, 0, :3, 3] = torch.tensor([0.0, 0.0, 5.0])
    c2w[0, 1, :3, 3] = torch.tensor([5.0, 0.0, 5.0])     # every ray misses
    K = default_intrinsics()[None, None].expand(1, 2, 4)
    pixels = torch.tensor([[[0, 0], [3, 2], [5, 5]]]).expand(1, 2, 3, 2)
    planes = torch.randn(1, 3, 8, 8, 8)
    outs = []
    for backend in ("reference", "fast"):
        r.backend = backend
        outs.append(r(planes, c2w, K, 6, pixels=pixels))
    r.backend = "auto"
    for k in ("rgb", "depth", "opacity"):
        assert outs[1][k].shape == (1, 2, 3) + ((3,) if k == "rgb" else ())
        torch.testing.assert_close(outs[1][k], outs[0][k], atol=2e-5, rtol=1e-4)
    assert (outs[1]["opacity"][0, 1] == 0).all()


@pytest.mark.skipif(not _fast_available(), reason="lrm_fast._C not built")
def test_fast_backend_unfused_path_for_custom_activations(tiny_model):
    """A field that overrides its activations cannot use the fused kernel: the fast renderer
    then composites with the unfused cpp ops and still renders the reference image."""
    from lrm_fast.model.camera import orbit_cameras

    class HalfColors(type(tiny_model.renderer.field)):
        def rgb(self, raw):
            return 0.5 * torch.sigmoid(raw[..., 1:4])

    field = HalfColors(8, tiny_model.renderer.field.cfg)
    field.load_state_dict(tiny_model.renderer.field.state_dict())
    r = Renderer(RenderConfig(samples_per_ray=12), field)
    assert not r._fusable(torch.zeros(1))
    planes = torch.randn(1, 3, 8, 8, 8)
    c2w = orbit_cameras([30.0], [10.0])[None]
    K = default_intrinsics()[None, None]
    outs = []
    for backend in ("reference", "fast"):
        r.backend = backend
        outs.append(r(planes, c2w, K, 8))
    for k in ("rgb", "depth", "opacity"):
        torch.testing.assert_close(outs[1][k], outs[0][k], atol=2e-5, rtol=1e-4)


@pytest.mark.skipif(not _fast_available(), reason="lrm_fast._C not built")
def test_fast_backend_jittered_training_render_matches_the_reference(tiny_model):
    """Training renders (jittered strata, random importance draws, which come out unsorted and are
    sorted before the merge): the same generator seed gives the same image and gradients. (Pixels
    near the center, so every ray hits the box: the fast path draws random numbers for hitting
    rays only, so with misses the two backends draw different, equally valid, jitters.)"""
    from lrm_fast.model.camera import orbit_cameras

    r = tiny_model.renderer
    r.cfg = RenderConfig(**{**r.cfg.__dict__, "samples_per_ray": 16})
    planes = torch.randn(1, 3, 8, 8, 8, generator=torch.Generator().manual_seed(4), requires_grad=True)
    c2w = orbit_cameras([50.0], [25.0])[None]
    K = default_intrinsics()[None, None]
    pixels = torch.randint(6, 10, (1, 1, 40, 2), generator=torch.Generator().manual_seed(2))
    outs, grads = [], []
    for backend in ("reference", "fast"):
        r.backend = r.field.backend = backend
        out = r(planes, c2w, K, 16, pixels=pixels, jitter=True, generator=torch.Generator().manual_seed(9))
        grads.append(torch.autograd.grad(out["rgb"].sum() + out["opacity"].sum(), [planes, *r.field.parameters()]))
        outs.append(out)
    r.backend = r.field.backend = "auto"
    for k in ("rgb", "depth", "opacity"):
        torch.testing.assert_close(outs[1][k], outs[0][k], atol=2e-5, rtol=1e-4)
    for g1, g0 in zip(grads[1], grads[0]):
        torch.testing.assert_close(g1, g0, atol=1e-4, rtol=1e-3)


@pytest.mark.skipif(not _fast_available(), reason="lrm_fast._C not built")
def test_plain_sigmoid_field_with_importance_takes_the_unfused_path():
    """The fused op hard-codes OpenLRM's widened sigmoid; a plain-sigmoid field (TripoSR's
    activation with the OpenLRM sampler) must not go through it."""
    from lrm_fast.model.camera import orbit_cameras

    field = TriplaneField(8, FieldConfig(hidden=16, rgb_activation="sigmoid"))
    r = Renderer(RenderConfig(samples_per_ray=12), field)
    assert not r._fusable(torch.zeros(1))
    planes = torch.randn(1, 3, 8, 8, 8, generator=torch.Generator().manual_seed(5)) * 3
    c2w = orbit_cameras([30.0], [10.0])[None]
    K = default_intrinsics()[None, None]
    outs = []
    for backend in ("reference", "fast"):
        r.backend = field.backend = backend
        outs.append(r(planes, c2w, K, 8))
    for k in ("rgb", "depth", "opacity"):
        torch.testing.assert_close(outs[1][k], outs[0][k], atol=2e-5, rtol=1e-4)
    # and the widened sigmoid renders a different image from the same weights
    wide = Renderer(RenderConfig(samples_per_ray=12), TriplaneField(8, FieldConfig(hidden=16)))
    wide.field.load_state_dict(field.state_dict())
    assert not torch.equal(wide(planes, c2w, K, 8)["rgb"], outs[0]["rgb"])


@pytest.mark.gpu
@pytest.mark.parametrize("compact", ["auto", "always"])
def test_cuda_fast_backend_renders_the_reference_image(tiny_model, compact, monkeypatch):
    from lrm_fast.model.camera import orbit_cameras

    r = tiny_model.renderer.cuda()
    monkeypatch.setattr(r, "compact_misses", compact)
    r.cfg = RenderConfig(**{**r.cfg.__dict__, "samples_per_ray": 24})
    torch.manual_seed(1)
    planes = torch.randn(1, 3, 8, 8, 8, device="cuda", requires_grad=True)
    c2w = orbit_cameras([20.0, 140.0], [15.0, -40.0], device="cuda")[None]
    K = default_intrinsics(device="cuda")[None, None].expand(1, 2, 4)
    outs, grads = [], []
    for backend in ("reference", "fast"):
        r.backend = backend
        out = r(planes, c2w, K, 16)
        grads.append(torch.autograd.grad(out["rgb"].sum() + out["opacity"].sum(), planes)[0])
        outs.append(out)
    r.backend = "auto"
    for k in ("rgb", "depth", "opacity"):
        torch.testing.assert_close(outs[1][k], outs[0][k], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(grads[1], grads[0], atol=1e-4, rtol=1e-3)


def test_uniform_bins_triposr_sampling():
    """TripoSR's renderer: S bin-center samples, each with delta 1/S (not scaled by the chord)."""
    sigma = 0.7
    field = ConstantField(1.0)
    field.cfg = FieldConfig(hidden=8, density_activation="softplus")
    field.raw = math.log(math.expm1(sigma)) + 1.0
    r = Renderer(RenderConfig(samples_per_ray=16, sampler="triposr", skip_empty=False, background=0.0), field)
    out = r(torch.zeros(1, 3, 4, 2, 2), canonical_pose(2.0)[None, None], default_intrinsics()[None, None], 1)
    # 16 samples inside the box, each contributing sigma * 1/16: total optical depth = sigma
    assert out["opacity"].item() == pytest.approx(1 - math.exp(-sigma), abs=1e-5)
    assert out["depth"].item() > 1.0 and out["depth"].item() < 3.0


def test_compact_misses_policy(tiny_model, monkeypatch):
    r = tiny_model.renderer
    t = torch.zeros(1)
    assert r._compacts(t)                     # auto on the CPU: compact
    monkeypatch.setattr(r, "compact_misses", "never")
    assert not r._compacts(t)
    monkeypatch.setattr(r, "compact_misses", "sometimes")
    with pytest.raises(ValueError, match="compact_misses"):
        r._compacts(t)

