"""Checkpoints: our format round-trips; OpenLRM v1.1 / v1.0 and TripoSR converters round-trip through
our model. The foreign state dicts are built here from the public key names and shapes of OpenLRM
(openlrm/models/{modeling_lrm,block,modulate}.py, vendored DINOv2, HF ViTModel for v1.0) and TripoSR
(tsr/system.py, tsr/models/{transformer,network_utils,tokenizers}), by the inverse of the mapping in
lrm_fast/io/{openlrm,triposr,vit_weights}.py, written out key by key."""
import json
import os

import pytest
import torch
from torch import nn

from lrm_fast.config import LRMConfig
from lrm_fast.io import checkpoint as ck
from lrm_fast.io import openlrm as ol
from lrm_fast.io import vit_weights as vw
from lrm_fast.model.lrm import LRM


def _randomize(model):
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return model


def _compare(a: LRM, b: LRM, image_size: int, use_camera=True):
    torch.manual_seed(3)
    img = torch.rand(2, 3, image_size, image_size)
    pa, pb = a.eval().forward_planes(img), b.eval().forward_planes(img)
    torch.testing.assert_close(pb, pa, atol=1e-5, rtol=1e-5)
    from lrm_fast.model.camera import default_intrinsics, orbit_cameras

    c2w = orbit_cameras([0.0, 90.0], 20.0, a.cfg.camera.source_distance)[None].expand(2, -1, -1, -1)
    K = default_intrinsics(0.75).expand(2, 2, 4)
    ra, rb = a.render(pa, c2w, K, 6)["rgb"], b.render(pa, c2w, K, 6)["rgb"]
    torch.testing.assert_close(rb, ra, atol=1e-5, rtol=1e-5)


def test_ours_round_trip(tmp_path, tiny_cfg):
    m = _randomize(LRM(tiny_cfg))
    paths = ck.save_checkpoint(m, str(tmp_path / "ck"))
    assert sorted(os.path.basename(p) for p in paths) == ["config.json", "model.safetensors"]
    assert not [f for f in os.listdir(tmp_path / "ck") if f.startswith(".tmp")]
    m2 = ck.load_checkpoint(str(tmp_path / "ck"))
    assert m2.checkpoint_format == "lrm_fast" and m2.renderer.field is m2.field
    _compare(m, m2, tiny_cfg.encoder.image_size)


def test_load_errors_name_the_problem(tmp_path, tiny_cfg):
    with pytest.raises(FileNotFoundError, match="nope"):
        ck.load_checkpoint(str(tmp_path / "nope"))
    m = LRM(tiny_cfg)
    ck.save_checkpoint(m, str(tmp_path / "ck"))
    # a config that does not fit the weights: mis-shaped keys are named with both shapes
    cfg = json.loads((tmp_path / "ck" / "config.json").read_text())
    cfg["field"]["hidden"] = 24
    (tmp_path / "ck" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"mis-shaped .*field\.net\.0\.weight \(16, 24\) vs \(24, 24\)"):
        ck.load_checkpoint(str(tmp_path / "ck"))
    # missing / unexpected keys are named
    from safetensors.torch import load_file, save_file

    sd = load_file(str(tmp_path / "ck" / "model.safetensors"))
    sd["extra.weight"] = torch.zeros(1)
    sd.pop("transformer.norm.bias")
    cfg["field"]["hidden"] = 16
    (tmp_path / "ck" / "config.json").write_text(json.dumps(cfg))
    save_file(sd, str(tmp_path / "ck" / "model.safetensors"))
    with pytest.raises(ValueError, match=r"missing 1 keys \['transformer.norm.bias'\].*unexpected 1 keys \['extra.weight'\]"):
        ck.load_checkpoint(str(tmp_path / "ck"))
    # a truncated weights file
    (tmp_path / "ck" / "model.safetensors").write_bytes(b"\x10\x00\x00")
    with pytest.raises(ValueError, match="model.safetensors"):
        ck.load_checkpoint(str(tmp_path / "ck"))
    # unknown keys altogether
    bad = tmp_path / "bad.pth"
    torch.save({"foo.weight": torch.zeros(2)}, bad)
    with pytest.raises(ValueError, match="unrecognized checkpoint"):
        ck.load_checkpoint(str(bad))


def test_pickles_load_weights_only(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    p = tmp_path / "evil.pth"
    torch.save({"weights": {"a": torch.zeros(1)}, "x": Evil()}, p)
    with pytest.raises(ValueError, match="weights_only"):
        ck.load_checkpoint(str(p))


# ---------------------------------------------------------------------------------------------
# OpenLRM v1.1
# ---------------------------------------------------------------------------------------------
def _openlrm11_cfg(D=32, feat=64):
    return LRMConfig.from_dict(dict(
        name="t", encoder=dict(kind="dinov2", timm_name="vit_base_patch14_reg4_dinov2", image_size=28,
                               feat_dim=feat, overrides=dict(embed_dim=feat, depth=1, num_heads=feat // 64)),
        decoder=dict(dim=D, layers=2, heads=2), triplane=dict(low_res=4, high_res=8, channels=8),
        render=dict(samples_per_ray=8), camera=dict(embed_dim=32)))


def _timm_dinov2_to_openlrm(enc: dict, prefix: str) -> dict:
    out = {}
    cls_pos = torch.randn_like(enc["cls_token"][:, 0])[:, None]
    out[prefix + "cls_token"] = enc["cls_token"] - cls_pos
    out[prefix + "pos_embed"] = torch.cat([cls_pos, enc["pos_embed"]], 1)
    out[prefix + "register_tokens"] = enc["reg_token"]
    out[prefix + "mask_token"] = torch.zeros(1, enc["cls_token"].shape[-1])
    for k, v in enc.items():
        if k not in ("cls_token", "pos_embed", "reg_token"):
            out[prefix + k] = v
    return out


def _ours_to_openlrm_blocks(sd: dict, D: int, fused_cross: bool) -> dict:
    out = {}
    for k, v in sd.items():
        if not k.startswith("transformer."):
            continue
        k2 = k
        if ".cross_attn.q.weight" in k:
            if fused_cross:
                kv = sd[k.replace(".q.", ".kv.")]
                out[k.replace("q.weight", "in_proj_weight")] = torch.cat([v, kv], 0)
            else:
                out[k.replace("q.weight", "q_proj_weight")] = v
            continue
        if ".cross_attn.kv.weight" in k:
            if not fused_cross:
                out[k.replace("kv.weight", "k_proj_weight")], out[k.replace("kv.weight", "v_proj_weight")] = v[:D], v[D:]
            continue
        k2 = k2.replace(".self_attn.qkv.weight", ".self_attn.in_proj_weight")
        k2 = k2.replace(".cross_attn.proj.", ".cross_attn.out_proj.").replace(".self_attn.proj.", ".self_attn.out_proj.")
        k2 = k2.replace(".mlp.2.", ".mlp.3.")
        out[k2] = v
    return out


@pytest.mark.parametrize("fused_cross", [False, True])
def test_openlrm_v11_round_trip(tmp_path, fused_cross):
    # fused_cross: token width == decoder width, where nn.MultiheadAttention stores one in_proj_weight
    D, feat = (64, 64) if fused_cross else (32, 64)
    ours = _randomize(LRM(_openlrm11_cfg(D, feat)))
    sd = ours.state_dict()
    enc = {k[len("encoder.vit."):]: v for k, v in sd.items() if k.startswith("encoder.vit.")}
    foreign = _timm_dinov2_to_openlrm(enc, "encoder.model.")
    foreign.update({k: v for k, v in sd.items() if k.startswith("camera_embedder.") or k == "pos_embed"})
    foreign.update(_ours_to_openlrm_blocks(sd, D, fused_cross))
    foreign["upsampler.weight"], foreign["upsampler.bias"] = sd["upsampler.upsampler.weight"], sd["upsampler.upsampler.bias"]
    foreign.update({"synthesizer.decoder.net." + k[len("field.net."):]: v for k, v in sd.items() if k.startswith("field.net.")})
    # the keys the issue lists for v1.1
    assert "transformer.layers.0.norm1.mlp.1.weight" in foreign and "transformer.layers.0.mlp.3.bias" in foreign
    assert "transformer.layers.0.self_attn.in_proj_weight" in foreign
    assert ("transformer.layers.0.cross_attn.in_proj_weight" if fused_cross else
            "transformer.layers.0.cross_attn.k_proj_weight") in foreign
    d = tmp_path / "openlrm-mix-tiny-1.1"
    d.mkdir()
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in foreign.items()}, str(d / "model.safetensors"))
    (d / "config.json").write_text(json.dumps(dict(
        camera_embed_dim=32, rendering_samples_per_ray=8, transformer_dim=D, transformer_layers=2,
        transformer_heads=2, triplane_low_res=4, triplane_high_res=8, triplane_dim=8, encoder_type="dinov2",
        encoder_model_name="dinov2_vits14_reg", encoder_feat_dim=feat, encoder_freeze=False)))
    import lrm_fast

    m = lrm_fast.load_model(str(d), image_size=28, device="cpu")
    assert m.checkpoint_format == "openlrm-1.1" and m.untrained is False
    _compare(ours, m, 28)
    # and converting to ours gives the same model
    from lrm_fast.io.checkpoint import convert_checkpoint

    assert convert_checkpoint(str(d), str(tmp_path / "conv"), image_size=28) == "openlrm-1.1"
    _compare(ours, lrm_fast.load_model(str(tmp_path / "conv")), 28)


@pytest.mark.parametrize("kdim", [24, 32])
def test_multihead_attention_mapping_matches_torch(kdim):
    """OpenLRM's cross/self attention is torch's nn.MultiheadAttention(bias=False): our fused q/kv/qkv
    Linears loaded through the converter give its outputs."""
    from lrm_fast.config import DecoderConfig
    from lrm_fast.model.decoder import CrossAttention, SelfAttention

    torch.manual_seed(0)
    D, H = 32, 4
    cross = nn.MultiheadAttention(D, H, kdim=kdim, vdim=kdim, bias=False, batch_first=True)
    selfa = nn.MultiheadAttention(D, H, bias=False, batch_first=True)
    sd = {f"transformer.layers.0.cross_attn.{k}": v for k, v in cross.state_dict().items()}
    sd.update({f"transformer.layers.0.self_attn.{k}": v for k, v in selfa.state_dict().items()})
    conv = ol._openlrm_blocks(dict(sd), D)
    ours_c, ours_s = CrossAttention(D, kdim, H, False), SelfAttention(D, H, False)
    ours_c.load_state_dict({k.split("cross_attn.")[1]: v for k, v in conv.items() if "cross_attn" in k})
    ours_s.load_state_dict({k.split("self_attn.")[1]: v for k, v in conv.items() if "self_attn" in k})
    x, c = torch.randn(2, 5, D), torch.randn(2, 7, kdim)
    torch.testing.assert_close(ours_c(x, c), cross(x, c, c, need_weights=False)[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours_s(x), selfa(x, x, x, need_weights=False)[0], atol=1e-5, rtol=1e-5)
    assert DecoderConfig().attn_bias is False


def test_pos_embed_resampling():
    pos = torch.randn(1, 37 * 37, 8)
    out = vw.resample_grid(pos, 24)
    assert out.shape == (1, 576, 8)
    assert vw.resample_grid(pos, 37) is pos  # DINOv2 skips interpolation at its native grid
    # a smooth (linear) embedding stays close to linear after bicubic resampling
    lin = torch.linspace(-1, 1, 37)
    grid = (lin[:, None] + 2 * lin[None, :]).reshape(1, -1, 1)
    r = vw.resample_grid(grid, 16).reshape(16, 16)
    assert r[0, 0] < r[0, -1] and r[0, 0] < r[-1, 0] and torch.isfinite(r).all()
    with pytest.raises(ValueError, match="square"):
        vw.resample_grid(torch.randn(1, 10, 8), 4)


def test_dinov2_chunked_and_swiglu_names():
    src = {"cls_token": torch.zeros(1, 1, 4), "pos_embed": torch.zeros(1, 5, 4), "register_tokens": torch.zeros(1, 4, 4),
           "blocks.1.3.mlp.w12.weight": torch.zeros(2), "blocks.0.0.norm1.weight": torch.zeros(2),
           "blocks.2.attn.qkv.weight": torch.zeros(2), "blocks.2.mlp.w3.bias": torch.zeros(2)}
    out = vw.dinov2_to_timm(src, 2)
    assert {"blocks.3.mlp.fc1.weight", "blocks.0.norm1.weight", "blocks.2.attn.qkv.weight", "blocks.2.mlp.fc2.bias",
            "reg_token"} <= set(out)


# ---------------------------------------------------------------------------------------------
# OpenLRM v1.0 (HF ViT DINO) and TripoSR
# ---------------------------------------------------------------------------------------------
def _timm_vit_to_hf(enc: dict, prefix: str) -> dict:
    out = {prefix + "embeddings.cls_token": enc["cls_token"], prefix + "embeddings.position_embeddings": enc["pos_embed"],
           prefix + "embeddings.patch_embeddings.projection.weight": enc["patch_embed.proj.weight"],
           prefix + "embeddings.patch_embeddings.projection.bias": enc["patch_embed.proj.bias"],
           prefix + "layernorm.weight": enc["norm.weight"], prefix + "layernorm.bias": enc["norm.bias"],
           prefix + "pooler.dense.weight": torch.zeros(4, 4), prefix + "pooler.dense.bias": torch.zeros(4)}
    n = len({k.split(".")[1] for k in enc if k.startswith("blocks.")})
    for i in range(n):
        b, p = f"blocks.{i}.", f"{prefix}encoder.layer.{i}."
        for t in ("weight", "bias"):
            q, k, v = enc[b + f"attn.qkv.{t}"].chunk(3, 0)
            out[p + f"attention.attention.query.{t}"], out[p + f"attention.attention.key.{t}"] = q, k
            out[p + f"attention.attention.value.{t}"] = v
            out[p + f"attention.output.dense.{t}"] = enc[b + f"attn.proj.{t}"]
            out[p + f"layernorm_before.{t}"], out[p + f"layernorm_after.{t}"] = enc[b + f"norm1.{t}"], enc[b + f"norm2.{t}"]
            out[p + f"intermediate.dense.{t}"], out[p + f"output.dense.{t}"] = enc[b + f"mlp.fc1.{t}"], enc[b + f"mlp.fc2.{t}"]
    return out


_DINO_ENC = dict(kind="dino", timm_name="vit_base_patch16_224.dino", image_size=32, feat_dim=64,
                 overrides=dict(embed_dim=64, depth=1, num_heads=1))


def test_openlrm_v10_round_trip(tmp_path):
    cfg = LRMConfig.from_dict(dict(name="t", encoder=_DINO_ENC, decoder=dict(dim=32, layers=1, heads=2),
                                   triplane=dict(low_res=4, high_res=8, channels=8), render=dict(samples_per_ray=8),
                                   camera=dict(embed_dim=32)))
    ours = _randomize(LRM(cfg))
    sd = ours.state_dict()
    enc = {k[len("encoder.vit."):]: v for k, v in sd.items() if k.startswith("encoder.vit.")}
    foreign = _timm_vit_to_hf(enc, "encoder.model.")
    foreign["transformer.pos_embed"] = sd["pos_embed"]
    foreign["transformer.deconv.weight"], foreign["transformer.deconv.bias"] = sd["upsampler.upsampler.weight"], sd["upsampler.upsampler.bias"]
    foreign.update({k: v for k, v in sd.items() if k.startswith("camera_embedder.")})
    foreign.update(_ours_to_openlrm_blocks(sd, 32, fused_cross=False))
    foreign.update({"synthesizer.decoder.net." + k[len("field.net."):]: v for k, v in sd.items() if k.startswith("field.net.")})
    kwargs = dict(camera_embed_dim=32, rendering_samples_per_ray=8, transformer_dim=32, transformer_layers=1,
                  transformer_heads=2, triplane_low_res=4, triplane_high_res=8, triplane_dim=8,
                  encoder_freeze=False, encoder_model_name="facebook/dino-vitb16", encoder_feat_dim=64)
    torch.save({"weights": foreign, "kwargs": {"model": kwargs}}, tmp_path / "model.pth")
    # the kwargs name facebook/dino-vitb16, whose built-in facts (768 wide) do not fit: the error names the key
    with pytest.raises(ValueError, match="encoder.model.embeddings.patch_embeddings.projection.weight"):
        ck.load_checkpoint(str(tmp_path / "model.pth"), image_size=32)
    # the ViT config the kwargs name, beside model.pth (heads, eps, patch and MLP width come from it)
    (tmp_path / "vit").mkdir()
    (tmp_path / "vit" / "config.json").write_text(json.dumps(dict(
        hidden_size=64, num_hidden_layers=1, num_attention_heads=1, intermediate_size=256, patch_size=16,
        layer_norm_eps=1e-6, hidden_act="gelu", qkv_bias=True)))
    kwargs["encoder_model_name"] = "vit"
    torch.save({"weights": foreign, "kwargs": {"model": kwargs, "infer": {"source_size": 32}}}, tmp_path / "model.pth")
    m = ck.load_checkpoint(str(tmp_path / "model.pth"))   # the size from its infer kwargs
    assert m.checkpoint_format == "openlrm-1.0" and m.cfg.encoder.image_size == 32
    assert "infer kwargs" in m.checkpoint_notes["image_size"]
    _compare(ours, m, 32)


def _triposr_cfg():
    return LRMConfig.preset("triposr").replace(
        encoder=_DINO_ENC, decoder=dict(dim=64, layers=1, heads=2, in_norm_groups=4),
        triplane=dict(low_res=4, high_res=8, channels=8), field=dict(hidden=16, layers=3),
        render=dict(samples_per_ray=8))


def test_triposr_round_trip(tmp_path):
    cfg = _triposr_cfg()
    ours = _randomize(LRM(cfg))
    sd = ours.state_dict()
    enc = {k[len("encoder.vit."):]: v for k, v in sd.items() if k.startswith("encoder.vit.")}
    f = _timm_vit_to_hf(enc, "image_tokenizer.model.")
    pos = sd["pos_embed"]
    f["tokenizer.embeddings"] = pos.reshape(3, 4, 4, 64).permute(0, 3, 1, 2).contiguous()
    for a, b in (("transformer.in_norm.", "backbone.norm."), ("transformer.proj_in.", "backbone.proj_in."),
                 ("transformer.proj_out.", "backbone.proj_out."), ("upsampler.upsampler.", "post_processor.upsample."),
                 ("field.net.", "decoder.layers.")):
        f.update({b + k[len(a):]: v for k, v in sd.items() if k.startswith(a)})
    p, q = "transformer.layers.0.", "backbone.transformer_blocks.0."
    for n in ("norm1", "norm2", "norm3"):
        f[q + n + ".weight"], f[q + n + ".bias"] = sd[p + n + ".weight"], sd[p + n + ".bias"]
    f[q + "attn1.to_q.weight"], f[q + "attn1.to_k.weight"], f[q + "attn1.to_v.weight"] = sd[p + "self_attn.qkv.weight"].chunk(3)
    f[q + "attn2.to_q.weight"] = sd[p + "cross_attn.q.weight"]
    f[q + "attn2.to_k.weight"], f[q + "attn2.to_v.weight"] = sd[p + "cross_attn.kv.weight"].chunk(2)
    for att, n in (("self_attn", "attn1"), ("cross_attn", "attn2")):
        f[q + f"{n}.to_out.0.weight"], f[q + f"{n}.to_out.0.bias"] = sd[p + f"{att}.proj.weight"], sd[p + f"{att}.proj.bias"]
    f[q + "ff.net.0.proj.weight"], f[q + "ff.net.0.proj.bias"] = sd[p + "mlp.0.proj.weight"], sd[p + "mlp.0.proj.bias"]
    f[q + "ff.net.2.weight"], f[q + "ff.net.2.bias"] = sd[p + "mlp.1.weight"], sd[p + "mlp.1.bias"]
    d = tmp_path / "TripoSR"
    d.mkdir()
    torch.save(f, d / "model.ckpt")
    # the ViT config the yaml names (TripoSR reads heads / eps / patch from it, not from the width)
    (d / "vit").mkdir()
    (d / "vit" / "config.json").write_text(json.dumps(dict(
        hidden_size=64, num_hidden_layers=1, num_attention_heads=1, intermediate_size=256, patch_size=16,
        layer_norm_eps=1e-6, hidden_act="gelu", qkv_bias=True)))
    (d / "config.yaml").write_text(
        "cond_image_size: 32\n"
        "image_tokenizer: {pretrained_model_name_or_path: vit}\n"
        "tokenizer: {plane_size: 4, num_channels: 64}\n"
        "backbone: {in_channels: 64, num_attention_heads: 2, attention_head_dim: 32, num_layers: 1, "
        "cross_attention_dim: 64, norm_num_groups: 4}\n"
        "post_processor: {in_channels: 64, out_channels: 8}\n"
        "decoder: {in_channels: 24, n_neurons: 16, n_hidden_layers: 2, activation: silu}\n"
        "renderer: {radius: 0.87, feature_reduction: concat, density_activation: exp, density_bias: -1.0, "
        "num_samples_per_ray: 8}\n")
    import lrm_fast

    m = lrm_fast.load_model(str(d))
    assert m.checkpoint_format == "triposr" and m.camera_embedder is None
    assert m.cfg.render.box_max == pytest.approx(0.87) and m.cfg.field.coord_scale == pytest.approx(1 / 0.87)
    _compare(ours, m, 32)
    # missing attention weight is named
    f.pop(q + "attn2.to_k.weight")
    torch.save(f, d / "model.ckpt")
    with pytest.raises(KeyError, match="attn2.to_k"):
        lrm_fast.load_model(str(d))


def test_triposr_plane_layout_transposes_plane2():
    """TripoSR samples plane 2 at (y, z); after our transpose, our field at (x, y, z) reads what
    TripoSR's grid_sample reads."""
    import torch.nn.functional as F

    from lrm_fast.ops.triplane_mlp import sample_triplane

    cfg = _triposr_cfg()
    m = LRM(cfg)
    tokens = torch.randn(1, 3 * 16, 64)
    ours = m.upsampler(tokens)
    up = m.upsampler.upsampler
    raw = up(tokens.view(1, 3, 4, 4, 64).permute(0, 1, 4, 2, 3).reshape(3, 64, 4, 4))  # TripoSR's planes
    pts = torch.rand(1, 50, 3) * 2 - 1
    idx = torch.stack([pts[0][:, [0, 1]], pts[0][:, [0, 2]], pts[0][:, [1, 2]]])       # TripoSR's indices2D
    theirs = F.grid_sample(raw, idx[:, None], align_corners=False, mode="bilinear")   # [3, C, 1, N]
    torch.testing.assert_close(sample_triplane(ours, pts)[0], theirs[:, :, 0].permute(0, 2, 1))


def test_load_encoder_weights_round_trip_and_mismatch(tmp_path):
    from safetensors.torch import save_file

    from lrm_fast.model.encoder import ImageEncoder

    cfg = LRMConfig.preset("tiny").encoder
    torch.manual_seed(0)
    src, dst = ImageEncoder(cfg), ImageEncoder(cfg)
    path = str(tmp_path / "vit.safetensors")
    save_file({k: v.contiguous() for k, v in src.vit.state_dict().items()}, path)
    ck.load_encoder_weights(dst, path)
    for k, v in src.vit.state_dict().items():
        assert torch.equal(dst.vit.state_dict()[k], v), k
    save_file({"not.a.vit.key": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match="vit.safetensors: encoder weights do not match"):
        ck.load_encoder_weights(dst, path)


def test_field_is_stored_once_and_old_tied_copies_load(tmp_path, tiny_cfg):
    """The model owns its field once: ``state_dict()`` has each field weight once (``field.*``), the
    renderer renders with that same module. State dicts written while the renderer also held it carry
    ``renderer.field.*`` copies; they load through ``load_state_dict`` and ``load_checkpoint`` alike."""
    from safetensors.torch import save_file

    m = _randomize(LRM(tiny_cfg))
    sd = m.state_dict()
    assert not [k for k in sd if k.startswith("renderer.")]
    assert sorted(k for k in sd if k.startswith("field.")) == sorted("field." + k for k in m.field.state_dict())
    assert m.renderer.field is m.field and not list(m.renderer.parameters())
    old = dict(sd)
    old.update({"renderer." + k: v.clone() for k, v in sd.items() if k.startswith("field.")})
    fresh = LRM(tiny_cfg)
    fresh.load_state_dict(old)  # strict: the copies are dropped, nothing missing or unexpected
    for k, v in sd.items():
        assert torch.equal(fresh.state_dict()[k], v), k
    assert fresh.renderer.field is fresh.field
    # our file format, written in the old form
    ck.save_checkpoint(m, str(tmp_path / "old"))
    save_file({k: v.contiguous() for k, v in old.items()}, str(tmp_path / "old" / "model.safetensors"))
    m2 = ck.load_checkpoint(str(tmp_path / "old"))
    assert m2.renderer.field is m2.field
    _compare(m, m2, tiny_cfg.encoder.image_size)
    # a copy that differs from its field.* twin is no copy: it is reported, not silently dropped
    old["renderer.field.net.0.bias"] = old["renderer.field.net.0.bias"] + 1
    with pytest.raises(RuntimeError, match="renderer.field.net.0.bias"):
        LRM(tiny_cfg).load_state_dict(old)
