"""Empty-space skipping for TripoSR's sampler (``render/skipping.py``: ``UniformSkippingMarcher``): the
accuracy rule of the OpenLRM path (PSNR >= 45 dB against the exact uniform render) on the fitted
TripoSR field, far fewer field queries, and the marcher's limits on a random field."""
from __future__ import annotations

import math

import torch

from lrm_fast.cameras import default_intrinsics, orbit_cameras
from lrm_fast.field.occupancy import OccupancyGrid, build_occupancy


def _psnr(a, b):
    return -10 * math.log10(max(float((a - b).square().mean()), 1e-30))


def _views(model, res):
    cam = model.cfg.camera
    c2w = orbit_cameras([cam.front_azimuth, 200.0, 300.0], [0.0, 25.0, -15.0], cam.source_distance)[None]
    return c2w, default_intrinsics(cam.source_focal).expand(1, 3, 4), res


def test_uniform_skipping_on_the_fitted_triposr_field():
    from bench.lib.fitted_field import load_fitted_field
    from lrm_fast.api import occupancy_grid

    planes, model = load_fitted_field(preset="triposr")
    r = model.renderer
    c2w, K, res = _views(model, 32)
    with torch.inference_mode():
        grid = occupancy_grid(model, planes, 32)
        exact = r(planes, c2w, K, res)
        r.skip_stats = {}
        skip = r(planes, c2w, K, res, occupancy=grid)
    st, r.skip_stats = r.skip_stats, None
    assert st["dense"] == 3 * res * res * model.cfg.render.samples_per_ray
    assert st["evaluated"] < 0.4 * st["dense"], st    # empty space and the inside of the object (0.31 measured)
    for k in ("rgb", "opacity"):
        assert _psnr(skip[k], exact[k]) >= 45.0, (k, _psnr(skip[k], exact[k]))
    assert exact["opacity"].mean() > 0.1                      # the views show the object


def _random_triposr(res=6):
    from lrm_fast.config import LRMConfig
    from lrm_fast.field.triplane import TriplaneField
    from lrm_fast.render.renderer import Renderer

    cfg = LRMConfig.preset("triposr")
    rc = cfg.render
    rc.samples_per_ray = 16
    field = TriplaneField(8, cfg.field).eval()
    planes = torch.randn(1, 3, 8, 8, 8, generator=torch.Generator().manual_seed(0))
    return Renderer(rc, field), field, planes, cfg


def test_uniform_skipping_limits():
    """Every cell occupied: the exact render up to the transmittance floor; every cell empty: the
    background, no field query; training (jitter) or gradients: the exact render."""
    r, field, planes, cfg = _random_triposr()
    c2w = orbit_cameras([90.0, 200.0], [0.0, 30.0], 1.9)[None]
    K = default_intrinsics(cfg.camera.source_focal).expand(1, 2, 4)
    full = OccupancyGrid(torch.full((1, 4, 4, 4), 1e4), -0.87, 0.87)
    empty = OccupancyGrid(torch.full((1, 4, 4, 4), -1e4), -0.87, 0.87)
    with torch.no_grad():
        exact = r(planes, c2w, K, 6)
        r.skip_stats = {}
        a = r(planes, c2w, K, 6, occupancy=full)
        torch.testing.assert_close(a["rgb"], exact["rgb"], atol=2e-4, rtol=0)
        torch.testing.assert_close(a["opacity"], exact["opacity"], atol=2e-4, rtol=0)
        r.skip_stats = {}
        b = r(planes, c2w, K, 6, occupancy=empty)
        assert r.skip_stats["evaluated"] == 0
        assert torch.equal(b["rgb"], torch.ones_like(b["rgb"])) and not b["opacity"].any()
        j = r(planes, c2w, K, 6, jitter=True, generator=torch.Generator().manual_seed(0), occupancy=empty)
        j0 = r(planes, c2w, K, 6, jitter=True, generator=torch.Generator().manual_seed(0))
    r.skip_stats = None
    assert torch.equal(j["rgb"], j0["rgb"])
    grid = build_occupancy(field, planes, 4, -0.87, 0.87)
    assert grid.max_raw.shape == (1, 4, 4, 4)


def test_uniform_rule_is_tau_itself():
    """TripoSR's deltas add up to 1 on every ray (``RenderConfig.ray_path``), so its grid's rule is
    ``sigma_skip = tau``, not OpenLRM's ``tau`` over the box diagonal. Closed form at the rule's edge: a
    field of constant density ``sigma0`` (zero planes) is all empty at ``tau = sigma0 / 0.99``, and the
    skipped render (the background) is within ``tau`` of the exact one (opacity ``1 - exp(-sigma0)``);
    at ``tau = 0.99 sigma0`` every cell stays occupied."""
    from lrm_fast.config import RenderConfig
    from lrm_fast.field.activations import DENSITY

    assert RenderConfig().ray_path is None and RenderConfig(sampler="triposr").ray_path == 1.0
    g = OccupancyGrid(torch.zeros(1, 2, 2, 2), -1.0, 1.0)
    assert math.isclose(g.sigma_skip(0.3), 0.3 / (2 * math.sqrt(3))) and g.sigma_skip(0.3, 1.0) == 0.3
    r, field, planes, cfg = _random_triposr()
    planes = torch.zeros_like(planes)
    fc = field.cfg
    c2w = orbit_cameras([90.0, 200.0], [0.0, 30.0], 1.9)[None]
    K = default_intrinsics(cfg.camera.source_focal).expand(1, 2, 4)
    with torch.no_grad():
        raw0 = field(planes, torch.zeros(1, 1, 3))[0, 0, 0].item()
        sigma0 = float(DENSITY[fc.density_activation].fn(torch.tensor(raw0 + fc.density_bias, dtype=torch.float64)))
        grid = build_occupancy(field, planes, 4, -0.87, 0.87)
        exact = r(planes, c2w, K, 6)
        hit = exact["opacity"] > 0
        assert hit.any()
        torch.testing.assert_close(exact["opacity"][hit], torch.full_like(exact["opacity"][hit], 1 - math.exp(-sigma0)),
                                   atol=1e-6, rtol=1e-4)
        saved = r.cfg.occupancy_tau
        try:
            r.cfg.occupancy_tau = sigma0 / 0.99
            assert not r.occupancy_mask(grid).any()
            r.skip_stats = {}
            skip = r(planes, c2w, K, 6, occupancy=grid)
            assert r.skip_stats["evaluated"] == 0
            for k in ("rgb", "opacity"):
                assert float((skip[k] - exact[k]).abs().max()) <= r.cfg.occupancy_tau
            r.cfg.occupancy_tau = sigma0 * 0.99
            assert r.occupancy_mask(grid).all()
        finally:
            r.cfg.occupancy_tau, r.skip_stats = saved, None


def test_uniform_skipping_with_every_cell_occupied_is_the_exact_render(monkeypatch):
    """With no transmittance floor and every cell occupied the skipping marcher evaluates every sample
    and composites each ray's samples in order with the sampler's delta: the exact uniform render, bit for bit."""
    from lrm_fast.render import skipping

    monkeypatch.setattr(skipping, "TRANSMITTANCE_FLOOR", 1e-300)   # exp(-690): no ray gets there
    r, field, planes, cfg = _random_triposr()
    c2w = orbit_cameras([90.0, 200.0], [0.0, 30.0], 1.9)[None]
    K = default_intrinsics(cfg.camera.source_focal).expand(1, 2, 4)
    full = OccupancyGrid(torch.full((1, 4, 4, 4), 1e4), -0.87, 0.87)
    with torch.no_grad():
        exact = r(planes, c2w, K, 6)
        r.skip_stats = {}
        a = r(planes, c2w, K, 6, occupancy=full)
    st, r.skip_stats = r.skip_stats, None
    assert st["evaluated"] == int((exact["opacity"] > 0).sum()) * cfg.render.samples_per_ray
    for k in ("rgb", "depth", "opacity"):
        assert torch.equal(a[k], exact[k]), k
