"""bench/lib/roofline.py: analytic FLOPs vs docs/architecture.md section 6 and vs torch's FlopCounterMode.

FlopCounterMode counts 2 FLOPs per multiply-add of matmuls/convolutions (what our analytic model
counts); it does not count CPU fused SDPA, so timm's attention is switched to its explicit path
(``fused_attn = False``) for the count. Bigger presets are counted on the meta device (no memory,
no compute) one component at a time.
"""
import json

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from bench.lib import roofline as rf
from lrm_fast.config import LRMConfig


def _count(fn) -> int:
    fc = FlopCounterMode(display=False)
    with fc:
        fn()
    return fc.get_total_flops()


def _unfused(model):
    for m in model.modules():
        if hasattr(m, "fused_attn"):
            m.fused_attn = False
    return model


def test_design_floors_count_two_flops_per_mac():
    base, paper = LRMConfig.preset("base"), LRMConfig.preset("paper")
    assert rf.image_to_triplane(base).flops == pytest.approx(1.15e12, rel=0.02)
    assert rf.image_to_triplane(paper).flops == pytest.approx(2.5e12, rel=0.03)
    assert rf.render_view(base, 512).flops == pytest.approx(0.9e12, rel=0.05)
    assert rf.mesh_grid(base, 256).flops == pytest.approx(0.6e12, rel=0.05)
    # H100 floors as docs/architecture.md states them (1.2 ms, 2.6 ms)
    assert rf.image_to_triplane(base).floor_s("H100") == pytest.approx(1.2e-3, rel=0.05)
    assert rf.image_to_triplane(paper).floor_s("H100") == pytest.approx(2.6e-3, rel=0.05)


def test_tiny_image_to_triplane_matches_flop_counter():
    from lrm_fast.model.lrm import LRM

    cfg = LRMConfig.preset("tiny")
    torch.manual_seed(0)
    model = _unfused(LRM(cfg, backend="reference").eval().requires_grad_(False))
    img = torch.rand(1, 3, cfg.encoder.image_size, cfg.encoder.image_size)
    counted = _count(lambda: model.forward_planes(img))
    assert counted == pytest.approx(rf.image_to_triplane(cfg).flops, rel=1e-6)


@pytest.mark.parametrize("preset", ["small", "paper"])
def test_preset_components_match_flop_counter_on_meta(preset):
    from lrm_fast.model.lrm import LRM

    cfg = LRMConfig.preset(preset)
    with torch.device("meta"):
        model = _unfused(LRM(cfg, backend="reference").eval().requires_grad_(False))
        img = torch.empty(1, 3, cfg.encoder.image_size, cfg.encoder.image_size)
        cam = torch.empty(1, 16 if cfg.camera.feature == "principle" else 20)
    tokens = model.encoder(img)
    assert tokens.shape[1] == rf.encoder_tokens(cfg)
    assert _count(lambda: model.encoder(img)) == pytest.approx(rf.encoder(cfg).flops, rel=1e-6)
    mod = model.camera_embedder(cam)
    assert _count(lambda: model.camera_embedder(cam)) == pytest.approx(rf.camera(cfg).flops, rel=1e-6)
    x = model.pos_embed.expand(1, -1, -1)
    assert _count(lambda: model.transformer(x, tokens, mod)) == pytest.approx(rf.decoder(cfg).flops, rel=1e-6)
    y = model.transformer(x, tokens, mod)
    assert _count(lambda: model.upsampler(y)) == pytest.approx(rf.upsampler(cfg).flops, rel=1e-6)


def test_field_and_render_match_flop_counter():
    from lrm_fast.model.camera import default_intrinsics, orbit_cameras
    from lrm_fast.model.lrm import LRM

    cfg = LRMConfig.preset("tiny")
    torch.manual_seed(0)
    model = LRM(cfg, backend="reference").eval().requires_grad_(False)
    t = cfg.triplane
    planes = torch.randn(1, 3, t.channels, t.high_res, t.high_res)
    pts = torch.rand(1, 1000, 3) * 2 - 1
    assert _count(lambda: model.field(planes, pts)) == pytest.approx(1000 * rf.field_mlp_flops_per_point(cfg))
    res = 8
    c2w = orbit_cameras([30.0], 20.0)[None]
    K = default_intrinsics().expand(1, 1, 4)
    counted = _count(lambda: model.render(planes, c2w, K, res))
    # the analytic model adds bilinear taps and compositing (not matmuls): compare the MLP part
    mlp = res * res * cfg.render.samples_per_ray * rf.field_mlp_flops_per_point(cfg)
    assert counted == pytest.approx(mlp, rel=0.02)
    assert rf.render_view(cfg, res).flops > mlp


def test_achieved_from_result_file(tmp_path, capsys):
    cfg = LRMConfig.preset("base")
    w = rf.image_to_triplane(cfg)
    result = {"machine_info": {"lrm_fast": {"device": "cuda", "gpu": "NVIDIA H100 80GB HBM3"}},
              "benchmarks": [
                  {"group": "image_to_triplane:base", "stats": {"min": 4e-3},
                   "extra_info": {"backend": "sdpa", "dtype": "bfloat16", "preset": "base",
                                  "roofline": "image_to_triplane", "batch": 1}},
                  {"group": "field:x", "stats": {"min": 1e-3},
                   "extra_info": {"backend": "triton", "dtype": "bfloat16", "flops": 1e11, "bytes": 1e9}},
                  {"group": "decoder:paper/bfloat16", "stats": {"min": 1e-2},
                   "extra_info": {"backend": "sdpa", "dtype": "bfloat16", "stage": "decoder", "size": "paper/bfloat16"}},
                  {"group": "other", "stats": {"min": 1.0}, "extra_info": {"backend": "reference"}}]}
    rows = rf.achieved(result)
    assert len(rows) == 3 and rows[0]["gpu"] == "H100"
    assert rows[2]["flops"] == rf.decoder(LRMConfig.preset("paper")).flops
    assert rows[0]["frac_compute"] == pytest.approx(w.flops / 4e-3 / 989e12)
    assert rows[1]["tflops"] == pytest.approx(100.0)
    assert rows[1]["frac_bandwidth"] == pytest.approx(1e12 / 3.35e12)
    p = tmp_path / "r.json"
    p.write_text(json.dumps(result))
    assert rf.main(["--preset", "tiny", "--results", str(p)]) == 0
    out = capsys.readouterr().out
    assert "image_to_triplane:base" in out and "| tiny | image -> triplane |" in out
    with pytest.raises(ValueError, match="unknown roofline stage"):
        rf.stage_work("nope", cfg)
