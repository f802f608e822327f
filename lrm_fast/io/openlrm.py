"""OpenLRM checkpoints (v1.0 ``model.pth``, v1.1 ``config.json`` + ``model.safetensors``) -> ours.

Name mapping (OpenLRM -> ours), the part that is not a rename (the image encoder: ``io/vit_weights.py``):

* ``nn.MultiheadAttention`` cross-attention: ``q_proj_weight`` -> ``q.weight``;
  ``cat(k_proj_weight, v_proj_weight)`` -> ``kv.weight``. When the token width equals the decoder
  width PyTorch stores one ``in_proj_weight [3D, D]`` instead: rows ``[:D]`` -> ``q``, ``[D:]`` -> ``kv``.
  Self-attention ``in_proj_weight`` -> ``qkv.weight``; ``out_proj`` -> ``proj``.
* OpenLRM MLP ``mlp.{0,3}`` (Linear, GELU, Dropout, Linear) -> ``mlp.{0,2}``.
* v1.0 keeps the position embedding and the deconv inside ``transformer.``; v1.1 at the top.

The model is the ``openlrm`` decoder block and render sampler; OpenLRM does not store its encoder
input size (``openlrm_source_size``).
"""
from __future__ import annotations

import re

import torch

from ..config import LRMConfig
from .vit_weights import DEFAULT_HF_VIT, dinov2_to_timm, hf_vit_to_timm, take, take_renamed, check_vit, hf_vit_config


def _openlrm_blocks(sd: dict, D: int) -> dict:
    """OpenLRM ``transformer.layers.N.*`` + ``transformer.norm`` -> ours (see module docstring)."""
    out = {}
    for k in list(sd):
        m = re.match(r"transformer\.layers\.(\d+)\.(.*)$", k)
        if not m:
            if k.startswith("transformer.norm."):
                out[k] = sd.pop(k)
            continue
        i, rest = m.group(1), m.group(2)
        p = f"transformer.layers.{i}."
        v = sd.pop(k)
        if rest.startswith("cross_attn."):
            r = rest[len("cross_attn."):]
            if r == "q_proj_weight":
                out[p + "cross_attn.q.weight"] = v
            elif r in ("k_proj_weight", "v_proj_weight"):
                out.setdefault(p + "cross_attn._kv", {})[r[0]] = v
            elif r == "in_proj_weight":
                out[p + "cross_attn.q.weight"], out[p + "cross_attn.kv.weight"] = v[:D], v[D:]
            elif r == "in_proj_bias":
                out[p + "cross_attn.q.bias"], out[p + "cross_attn.kv.bias"] = v[:D], v[D:]
            elif r.startswith("out_proj."):
                out[p + "cross_attn.proj." + r[len("out_proj."):]] = v
            else:
                out[k] = v  # reported as unexpected
        elif rest.startswith("self_attn."):
            r = rest[len("self_attn."):]
            if r == "in_proj_weight":
                out[p + "self_attn.qkv.weight"] = v
            elif r == "in_proj_bias":
                out[p + "self_attn.qkv.bias"] = v
            elif r.startswith("out_proj."):
                out[p + "self_attn.proj." + r[len("out_proj."):]] = v
            else:
                out[k] = v
        elif rest.startswith("mlp.3."):
            out[p + "mlp.2." + rest[len("mlp.3."):]] = v
        else:  # norm{1,2,3}.{norm,mlp.1}.*, mlp.0.*
            out[p + rest] = v
    for k in [k for k in out if k.endswith("cross_attn._kv")]:
        kv = out.pop(k)
        if set(kv) != {"k", "v"}:
            raise ValueError(f"{k[:-4]}: k_proj_weight / v_proj_weight must come together")
        out[k[:-4] + ".kv.weight"] = torch.cat([kv["k"], kv["v"]], 0)
    return out



# OpenLRM does not store its encoder input size: its runner reads it from the inference config the
# user picks for a model. The released models and their configs (configs/infer-{s,b,l}.yaml at v1.1):
# (transformer_dim, name, config, source_size)
_OPENLRM_RELEASED = ((512, "openlrm-mix-small-1.1", "infer-s.yaml", 224),
                     (768, "openlrm-mix-base-1.1", "infer-b.yaml", 336),
                     (1024, "openlrm-mix-large-1.1", "infer-l.yaml", 448))
_OPENLRM_SOURCE_SIZE = {d: size for d, _, _, size in _OPENLRM_RELEASED}
_OPENLRM_DINOV2_TIMM = {384: "vit_small_patch14_reg4_dinov2", 768: "vit_base_patch14_reg4_dinov2",
                        1024: "vit_large_patch14_reg4_dinov2"}
_DINOV2_HUB = re.compile(r"dinov2_vit[sblg]14(_reg)?$")


def openlrm_source_size(kw: dict, infer: dict | None = None) -> tuple[int, str]:
    """(encoder input size, why) for an OpenLRM checkpoint without an explicit size.

    v1.0's ``model.pth`` stores it (``kwargs["infer"]["source_size"]``); v1.1 does not, so the
    released inference config of the released model with the nearest decoder width applies
    (ties: the smaller)."""
    if infer and infer.get("source_size"):
        return int(infer["source_size"]), "from the checkpoint's infer kwargs (source_size)"
    D = int(kw["transformer_dim"])
    d, name, conf, size = min(_OPENLRM_RELEASED, key=lambda r: (abs(r[0] - D), r[0]))
    how = "its" if d == D else f"the nearest released decoder width ({d}):"
    return size, (f"not stored in OpenLRM checkpoints; OpenLRM's configs/{conf} of {name}, {how} "
                  f"transformer_dim {D}; override with image_size=")


def _openlrm_hf_vit(kw: dict, folder: str | None, enc_sd: dict) -> tuple[dict, str]:
    """The HF ``ViTModel`` config an OpenLRM DINO v1 encoder was built from (``encoder_model_name``,
    default ``facebook/dino-vitb16``), looked up offline as ``hf_vit_config`` does, checked against
    the tensors: heads, LayerNorm eps, patch size and MLP width come from there, not from the width."""
    name = str(kw.get("encoder_model_name") or DEFAULT_HF_VIT)
    vit, src = hf_vit_config(name, folder, "OpenLRM's encoder_model_name")
    return check_vit(vit, src, enc_sd, "encoder.model."), src


def _openlrm_config(kw: dict, version: str, image_size: int | None, enc_sd: dict, infer: dict | None = None,
                    folder: str | None = None, notes: dict | None = None) -> "LRMConfig":
    need = ("camera_embed_dim", "transformer_dim", "transformer_layers", "transformer_heads",
            "triplane_low_res", "triplane_high_res", "triplane_dim")
    miss = [k for k in need if k not in kw]
    if miss:
        raise KeyError(f"OpenLRM model config lacks {miss}")
    D = int(kw["transformer_dim"])
    if image_size:
        size, why = int(image_size), "given (image_size=)"
    else:
        size, why = openlrm_source_size(kw, infer)
    feat = int(kw.get("encoder_feat_dim", 768))
    dino_v1 = "embeddings.cls_token" in enc_sd   # HF ViTModel names (v1.0; v1.1 with encoder_type dino)
    if version == "openlrm-1.1" and not dino_v1:
        name = str(kw.get("encoder_model_name", ""))
        enc = dict(kind="dinov2", timm_name=_OPENLRM_DINOV2_TIMM.get(feat, "vit_base_patch14_reg4_dinov2"),
                   image_size=size, feat_dim=feat)
        if "register_tokens" not in enc_sd:
            enc["timm_name"] = enc["timm_name"].replace("_reg4", "")
        depth = len({m.group(1) for k in enc_sd if (m := re.match(r"blocks\.(?:\d+\.)?(\d+)\.norm1", k))})
        heads = feat // 64   # every DINOv2 hub architecture has 64-wide heads
        # non-standard encoder sizes (e.g. synthetic test checkpoints) need explicit timm overrides
        enc["overrides"] = {} if (depth == 12 and feat in (384, 768)) else dict(embed_dim=feat, depth=depth,
                                                                                 num_heads=max(1, heads))
        vit_src = f"DINOv2 {name or '(unnamed)'}"
    else:
        v, vit_src = _openlrm_hf_vit(kw, folder, enc_sd)
        if v["hidden"] != feat:
            raise ValueError(f"OpenLRM encoder_feat_dim {feat} != hidden_size {v['hidden']} of the ViT config {vit_src}")
        enc = dict(kind="dino", timm_name="vit_base_patch16_224.dino", image_size=size, feat_dim=feat,
                   norm_eps=v["eps"])
        std = dict(hidden=768, heads=12, layers=12, inter=3072, patch=16)
        enc["overrides"] = {} if all(v[k] == std[k] for k in std) else dict(
            embed_dim=v["hidden"], depth=v["layers"], num_heads=v["heads"], patch_size=v["patch"],
            mlp_ratio=v["inter"] / v["hidden"])
        if size % v["patch"]:
            raise ValueError(f"OpenLRM source size {size} is not a multiple of the ViT's patch size {v['patch']}")
    if notes is not None:
        notes["image_size"] = f"{size} ({why})"
        notes["encoder_facts_from"] = vit_src
    return LRMConfig.from_dict(dict(
        name=f"{version}-{D}",
        encoder=enc,
        decoder=dict(dim=D, layers=int(kw["transformer_layers"]), heads=int(kw["transformer_heads"])),
        triplane=dict(low_res=int(kw["triplane_low_res"]), high_res=int(kw["triplane_high_res"]),
                      channels=int(kw["triplane_dim"])),
        render=dict(samples_per_ray=int(kw.get("rendering_samples_per_ray", 96))),
        camera=dict(embed_dim=int(kw["camera_embed_dim"])),
    ))


def convert_openlrm(sd: dict, kwargs: dict, version: str, image_size: int | None = None, infer: dict | None = None,
                    folder: str | None = None, notes: dict | None = None):
    """OpenLRM state dict + its model kwargs (+ v1.0's infer kwargs, the checkpoint's folder for a
    local ViT config) -> (LRMConfig, our state dict). ``notes`` (a dict) gets where the input size
    and the encoder's facts came from."""
    sd = dict(sd)
    enc_src = take(sd, "encoder.model.")
    cfg = _openlrm_config(kwargs, version, image_size, enc_src, infer, folder, notes)
    patch = int(cfg.encoder.overrides.get("patch_size", 14 if cfg.encoder.kind == "dinov2" else 16))
    grid = cfg.encoder.image_size // patch
    if cfg.encoder.kind == "dinov2":
        name = str(kwargs.get("encoder_model_name", ""))
        m = _DINOV2_HUB.match(name)
        enc = dinov2_to_timm(enc_src, grid, registers_interp=bool(m.group(1)) if m else None)
    else:
        enc = hf_vit_to_timm(enc_src, grid)
    out = {"encoder.vit." + k: v for k, v in enc.items()}
    if version == "openlrm-1.0":
        for a, b in (("transformer.pos_embed", "pos_embed"), ("transformer.deconv.weight", "upsampler.upsampler.weight"),
                     ("transformer.deconv.bias", "upsampler.upsampler.bias")):
            if a in sd:
                out[b] = sd.pop(a)
    else:
        for a, b in (("upsampler.weight", "upsampler.upsampler.weight"), ("upsampler.bias", "upsampler.upsampler.bias")):
            if a in sd:
                out[b] = sd.pop(a)
        if "pos_embed" in sd:
            out["pos_embed"] = sd.pop("pos_embed")
    out.update(take_renamed(sd, "camera_embedder.", "camera_embedder."))
    out.update(take_renamed(sd, "synthesizer.decoder.net.", "field.net."))
    out.update(_openlrm_blocks(sd, cfg.decoder.dim))
    out.update(sd)  # whatever is left is reported as unexpected by name
    return cfg, out
