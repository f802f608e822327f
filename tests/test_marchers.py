"""The renderer as marchers (``lrm_fast/render/marching.py``): one interface (rays of every batch
item -> colour, depth, opacity), chosen by name; the renderer only decides which rays go in."""
import ast
import pathlib

import torch

from lrm_fast.config import FieldConfig, RenderConfig
from lrm_fast.field.triplane import TriplaneField
from lrm_fast.model.camera import default_intrinsics, orbit_cameras
from lrm_fast.ops import generate_rays, ray_box
from lrm_fast.render.marching import MarchContext, Sampling
from lrm_fast.render.renderer import MARCHERS, Renderer

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _scene(B=2, res=6):
    torch.manual_seed(0)
    field = TriplaneField(8, FieldConfig(hidden=16))
    planes = torch.randn(B, 3, 8, 8, 8) * 2
    c2w = orbit_cameras([30.0, 200.0], [10.0, -20.0], 2.0)[None].expand(B, -1, -1, -1)
    K = default_intrinsics(0.75)[None, None].expand(B, 2, 4)
    return field, planes, c2w, K, res


def test_marchers_by_name():
    assert set(MARCHERS) == {"exact", "reference", "skipping", "uniform", "uniform_skipping"}
    assert all(m.name == n for n, m in MARCHERS.items())
    t = torch.zeros(1)
    wide = Renderer(RenderConfig(), TriplaneField(8, FieldConfig(hidden=16)))
    plain = Renderer(RenderConfig(), TriplaneField(8, FieldConfig(hidden=16, rgb_activation="sigmoid")))
    tsr = Renderer(RenderConfig(sampler="triposr"), TriplaneField(8, FieldConfig(hidden=16)))
    wide.backend = plain.backend = "reference"
    assert wide.marcher_name(t) == "exact" and wide.marcher_name(t, skipping=True) == "skipping"
    assert plain.marcher_name(t) == "reference"
    assert tsr.marcher_name(t) == "uniform" and tsr.marcher_name(t, skipping=True) == "uniform_skipping"


def test_a_marcher_alone_renders_the_renderers_image():
    """The exact marcher, called on the rays of both batch items at once with a context built from the
    configs, gives the renderer's pixels (reference backend: every ray, no per-item loop)."""
    field, planes, c2w, K, res = _scene()
    rc = RenderConfig(samples_per_ray=12, background=0.5)
    r = Renderer(rc, field)
    r.backend = field.backend = "reference"
    want = r(planes, c2w, K, res)
    B, V = c2w.shape[:2]
    o, d = generate_rays(c2w, K, res, res, None, backend="reference")
    o, d = o.reshape(B, -1, 3), d.reshape(B, -1, 3)
    near, far, hit = ray_box(o, d, rc.box_min, rc.box_max, backend="reference")
    bg = torch.full_like(o, 0.5)
    ctx = MarchContext(field, planes, Sampling.of(rc, field.cfg), backend="reference")
    rgb, depth, opacity = MARCHERS["exact"](ctx, o, d, near, far, bg)
    rgb = torch.where(hit[..., None], rgb, bg)
    assert torch.equal(rgb.reshape(want["rgb"].shape), want["rgb"])
    assert torch.equal(torch.where(hit, opacity, 0.0).reshape(want["opacity"].shape), want["opacity"])
    # the unfused reference marcher composites the same samples to the same image
    rgb_ref, _, op_ref = MARCHERS["reference"](ctx, o, d, near, far, bg)
    torch.testing.assert_close(torch.where(hit[..., None], rgb_ref, bg).reshape(want["rgb"].shape), want["rgb"],
                               atol=1e-6, rtol=1e-5)


def test_sampling_is_built_once_from_the_configs():
    rc, fc = RenderConfig(samples_per_ray=10, midpoint=False), FieldConfig(density_bias=-0.5)
    s = Sampling.of(rc, fc)
    assert s.kw == dict(box_min=rc.box_min, box_max=rc.box_max, density_bias=-0.5, density_activation="softplus",
                        midpoint=False)
    assert s.n_coarse == 5 and Sampling.of(RenderConfig(samples_per_ray=10, importance=False), fc).n_coarse == 10


def test_marchers_reach_into_no_private_attribute():
    """A marcher reads the field and its context only through public names: no ``x._name`` on any
    object but ``self`` (the old skipping code called the renderer's private methods)."""
    for name in ("marching.py", "skipping.py"):
        tree = ast.parse((ROOT / "lrm_fast" / "render" / name).read_text())
        bad = [f"{name}:{n.lineno}: {ast.unparse(n)}" for n in ast.walk(tree)
               if isinstance(n, ast.Attribute) and n.attr.startswith("_") and not n.attr.startswith("__")
               and not (isinstance(n.value, ast.Name) and n.value.id in ("self", "cls"))]
        assert not bad, bad
