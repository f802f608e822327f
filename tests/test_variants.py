"""The model variants (``DecoderConfig.block``, ``RenderConfig.sampler``): every switch that the chosen
variant does not read is rejected at construction, config dicts and weights written before the
variants load as they were (``config.upgrade_config_dict``, ``io.checkpoint.upgrade_state_dict``),
and the triposr sampler honours ``jitter`` and ``early_stop``."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from lrm_fast.cameras import canonical_pose, default_intrinsics
from lrm_fast.config import (PRESETS, DecoderConfig, FieldConfig, LRMConfig, RenderConfig,
                             upgrade_config_dict)
from lrm_fast.io import checkpoint as ck
from lrm_fast.model.decoder import TripoSRDecoder, TriplaneDecoder
from lrm_fast.model.lrm import LRM
from lrm_fast.render.renderer import Renderer

ROOT = Path(__file__).resolve().parent.parent
OLD = Path(__file__).resolve().parent / "fixtures" / "pre_variant" / "triposr"


# ---- validation at construction -----------------------------------------------------------------
@pytest.mark.parametrize("make, match", [
    (lambda: DecoderConfig(block="vit"), "unknown decoder block 'vit'"),
    (lambda: DecoderConfig(in_norm_groups=32), r"decoder.in_norm_groups=32 is not read by block 'openlrm'"),
    (lambda: DecoderConfig(block="triposr"), r"in_norm_groups=0: block 'triposr' needs"),
    (lambda: DecoderConfig(block="triposr", dim=64, in_norm_groups=5), r"dividing dim 64"),
    (lambda: DecoderConfig(block="triposr", in_norm_groups=32, attn_bias=True),
     r"decoder.attn_bias=True is not read by block 'triposr'"),
    (lambda: RenderConfig(sampler="nerfacc"), "unknown render sampler 'nerfacc'"),
    (lambda: RenderConfig(box_shrink=1e-3), r"render.box_shrink=0.001 is not read by sampler 'openlrm'"),
    (lambda: RenderConfig(min_span=0.01), r"render.min_span=0.01 is not read by sampler 'openlrm'"),
    (lambda: RenderConfig(sampler="triposr", skip_empty=False, importance=False),
     r"render.importance=False is not read by sampler 'triposr'"),
    (lambda: RenderConfig(sampler="triposr", skip_empty=False, midpoint=False),
     r"render.midpoint=False is not read by sampler 'triposr'"),
    (lambda: LRMConfig.preset("triposr").replace(camera={"embed_dim": 32}),
     r"camera.embed_dim=32 is not read by decoder block 'triposr'"),
    (lambda: LRMConfig.preset("triposr").replace(camera={"feature": "paper"}),
     r"camera.feature='paper' is not read by decoder block 'triposr'"),
])
def test_unread_switches_raise_one_line(make, match):
    with pytest.raises(ValueError, match=match) as e:
        make()
    assert "\n" not in str(e.value)


def test_presets_pick_their_variants():
    for name in PRESETS:
        cfg = LRMConfig.preset(name)
        want = "triposr" if name == "triposr" else "openlrm"
        assert (cfg.decoder.block, cfg.render.sampler, cfg.uses_camera) == (want, want, want == "openlrm")
    with torch.device("meta"):
        tri, tiny = LRM(LRMConfig.preset("triposr")), LRM(LRMConfig.preset("tiny"))
    assert isinstance(tri.transformer, TripoSRDecoder) and tri.camera_embedder is None
    assert isinstance(tiny.transformer, TriplaneDecoder) and tiny.camera_embedder is not None


def test_openlrm_renderer_with_changed_sampler_switches_still_validates():
    """``replace`` rebuilds the dataclasses, so a config edited into an unread switch raises too."""
    cfg = LRMConfig.preset("tiny")
    assert cfg.replace(render={"importance": False, "midpoint": False}).render.sampler == "openlrm"
    with pytest.raises(ValueError, match="box_shrink"):
        cfg.replace(render={"box_shrink": 1e-3})


# ---- old config dicts ---------------------------------------------------------------------------
def _old_triposr_dict() -> dict:
    return json.loads((OLD / "config.json").read_text())


def test_old_triposr_config_maps_to_the_variants():
    old = _old_triposr_dict()
    assert old["decoder"]["mlp"] == "geglu" and old["render"]["uniform_bins"] is True  # the old form
    cfg = LRMConfig.from_dict(old)
    assert cfg.decoder.block == "triposr" and cfg.decoder.in_norm_groups == 4
    assert cfg.render.sampler == "triposr" and not cfg.render.skip_empty
    assert (cfg.render.box_shrink, cfg.render.min_span) == (1e-3, 0.01)
    assert not cfg.uses_camera
    # the same config today's preset + the same sizes gives (the old uniform sampler could not skip:
    # it keeps rendering exactly, today's preset skips by default)
    today = LRMConfig.preset("triposr").replace(
        encoder=old["encoder"], decoder=dict(dim=32, layers=1, heads=2, in_norm_groups=4),
        triplane=old["triplane"], field=old["field"], render=dict(samples_per_ray=8, skip_empty=False))
    assert cfg.to_dict() == today.to_dict()
    assert LRMConfig.from_dict(cfg.to_dict()) == cfg                 # today's dicts round-trip
    assert upgrade_config_dict(cfg.to_dict()) == cfg.to_dict()       # and are left as they are


def test_old_openlrm_config_maps_to_the_variants():
    """The first shipped demo model's config.json predates the variants (flat OpenLRM switches)."""
    old = json.loads((OLD.parent / "openlrm-demo" / "config.json").read_text())
    assert old["decoder"]["modulation"] is True and old["render"]["uniform_bins"] is False
    cfg = LRMConfig.from_dict(old)
    assert (cfg.decoder.block, cfg.render.sampler) == ("openlrm", "openlrm")
    assert cfg.decoder == LRMConfig.preset("demo").decoder
    # a retired key (chunk_rays: the renderer chunks from the memory budget now) is dropped
    assert old["render"]["chunk_rays"] == 8192 and not hasattr(cfg.render, "chunk_rays")


def test_old_config_mapping_rejects_what_no_original_computes():
    old = _old_triposr_dict()
    mixed = {**old, "decoder": {**old["decoder"], "self_first": False}}
    with pytest.raises(ValueError, match="match no decoder block") as e:
        LRMConfig.from_dict(mixed)
    assert "self_first" in str(e.value) and "\n" not in str(e.value)
    no_groups = {**old, "decoder": {**old["decoder"], "in_norm_groups": 0}}
    with pytest.raises(ValueError, match="match no decoder block"):
        LRMConfig.from_dict(no_groups)
    with pytest.raises(ValueError, match="use_camera disagrees with decoder block 'triposr'"):
        LRMConfig.from_dict({**old, "camera": {**old["camera"], "use_camera": True}})
    both = {**old, "render": {**old["render"], "sampler": "triposr"}}
    with pytest.raises(ValueError, match="both sampler and the old uniform_bins"):
        LRMConfig.from_dict(both)
    new_and_old = LRMConfig.preset("tiny").to_dict()
    new_and_old["decoder"]["mlp"] = "gelu"
    with pytest.raises(ValueError, match="old switches"):
        LRMConfig.from_dict(new_and_old)


def test_old_config_mapping_keeps_what_the_old_code_ignored_out():
    """The old code ignored box_shrink / min_span off the uniform-bins path and importance / midpoint
    / skip_empty on it: the mapping sets them to their neutral values (the same render)."""
    d = LRMConfig.preset("tiny").to_dict()
    d["render"].pop("sampler")
    d["render"].update(uniform_bins=False, box_shrink=1e-3, min_span=0.5)
    cfg = LRMConfig.from_dict(d)
    assert (cfg.render.sampler, cfg.render.box_shrink, cfg.render.min_span) == ("openlrm", 0.0, 0.0)
    old = _old_triposr_dict()
    assert (old["render"]["importance"], old["render"]["midpoint"]) == (False, False)
    r = LRMConfig.from_dict(old).render
    assert (r.importance, r.midpoint, r.skip_empty) == (True, True, False)


# ---- old weights --------------------------------------------------------------------------------
def test_old_triposr_checkpoint_loads_and_computes_what_the_old_code_did():
    """Our file from before the variants (old config switches, ``transformer_in_norm.*`` names),
    against the outputs the old code recorded from it."""
    want = torch.load(OLD / "outputs.pt", weights_only=True)
    model = ck.load_checkpoint(str(OLD), backend="reference").eval()
    assert model.checkpoint_format == "lrm_fast" and isinstance(model.transformer, TripoSRDecoder)
    with torch.no_grad():
        planes = model.forward_planes(want["image"])
        out = model.render(planes, canonical_pose(1.9)[None, None], default_intrinsics(0.75)[None, None], 6)
    torch.testing.assert_close(planes, want["planes"], atol=1e-6, rtol=1e-5)
    for k in ("rgb", "depth", "opacity"):
        torch.testing.assert_close(out[k], want[k], atol=1e-6, rtol=1e-5)


def test_upgrade_state_dict_renames_and_drops_tied_copies():
    t = torch.ones(2)
    sd = {"transformer_in_norm.weight": t, "transformer_proj_out.bias": t, "field.net.0.weight": t,
          "renderer.field.net.0.weight": t.clone()}
    assert set(ck.upgrade_state_dict(sd)) == {"transformer.in_norm.weight", "transformer.proj_out.bias",
                                              "field.net.0.weight"}
    sd["renderer.field.net.0.weight"] = t * 2  # a copy that differs is kept (and reported on load)
    assert "renderer.field.net.0.weight" in ck.upgrade_state_dict(sd)
    assert ck.is_tied_copy("renderer.field.net.0.weight") and not ck.is_tied_copy("field.net.0.weight")


# ---- the triposr sampler ------------------------------------------------------------------------
class _ConstantField(torch.nn.Module):
    """Raw density ``raw`` and rgb logits 0 everywhere."""

    backend = "auto"

    def __init__(self, raw: float, cfg: FieldConfig):
        super().__init__()
        self.raw, self.cfg = raw, cfg

    def forward(self, planes, points):
        out = torch.zeros(*points.shape[:-1], 4, dtype=points.dtype)
        out[..., 0] = self.raw
        return out

    def rgb(self, raw):
        return torch.sigmoid(raw[..., 1:4])

    def density(self, raw_density):
        return torch.exp(raw_density - 1.0)


def _triposr_renderer(sigma=0.7):
    cfg = RenderConfig(samples_per_ray=16, sampler="triposr", skip_empty=False, background=0.0)
    return Renderer(cfg, _ConstantField(math.log(sigma) + 1.0, FieldConfig(density_activation="exp")))


def _cams():
    return canonical_pose(2.0)[None, None], default_intrinsics()[None, None]


def test_triposr_sampler_honours_jitter():
    """Jittered depths move inside their bins: a constant field keeps its closed-form opacity (16
    samples x sigma / 16), the depth moves, and a seed repeats it."""
    r, (c2w, K) = _triposr_renderer(), _cams()
    planes = torch.zeros(1, 3, 4, 2, 2)
    exact = r(planes, c2w, K, 3)
    a = r(planes, c2w, K, 3, jitter=True, generator=torch.Generator().manual_seed(0))
    b = r(planes, c2w, K, 3, jitter=True, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(a["opacity"], exact["opacity"], atol=1e-6, rtol=1e-6)
    assert exact["opacity"][0, 0, 1, 1].item() == pytest.approx(1 - math.exp(-0.7), abs=1e-5)
    assert not torch.equal(a["depth"], exact["depth"])
    torch.testing.assert_close(a["depth"], b["depth"], atol=0, rtol=0)


def test_triposr_sampler_honours_early_stop(monkeypatch):
    from lrm_fast.render import marching as R  # the uniform marcher composites there

    seen = []
    comp = R.composite
    monkeypatch.setattr(R, "composite", lambda *a, **k: seen.append(k.get("early_stop")) or comp(*a, **k))
    r, (c2w, K) = _triposr_renderer(), _cams()
    monkeypatch.setattr(r, "early_stop", 1e-3)
    r(torch.zeros(1, 3, 4, 2, 2), c2w, K, 2)
    assert seen and all(s == 1e-3 for s in seen)


def test_skip_empty_default_is_on_for_both_samplers():
    """The default (None) turns skipping on for both samplers (triposr skips with the uniform skipping
    marcher, render/skipping.py); False stays False."""
    assert RenderConfig().skip_empty is True
    assert RenderConfig(sampler="triposr").skip_empty is True
    assert RenderConfig(sampler="triposr", skip_empty=False).skip_empty is False
    assert RenderConfig(sampler="openlrm", skip_empty=False).skip_empty is False
