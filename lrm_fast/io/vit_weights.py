"""ViT weight maps shared by the converters (``io/openlrm.py``, ``io/triposr.py``): the originals'
image encoders -> timm, and the offline lookup of the Hugging Face ViT config a checkpoint names.

* DINOv2 -> timm (``vit_*_patch14_reg4_dinov2``, ``no_embed_class``): ``register_tokens`` ->
  ``reg_token``; ``cls_token + pos_embed[:, 0]`` -> ``cls_token``; ``pos_embed[:, 1:]`` resampled to
  our image size exactly as DINOv2's ``interpolate_pos_encoding`` does at run time (bicubic,
  ``scale_factor = (g + 0.1) / G``, no antialias; identity when the grids match); ``mask_token`` dropped;
  chunked ``blocks.c.i.`` -> ``blocks.i.``; SwiGLU ``w12/w3`` -> ``fc1/fc2``.
* HF ``ViTModel`` (DINO v1) -> timm ``vit_base_patch16_224.dino``: ``query/key/value`` -> ``qkv``,
  ``layernorm_before/after`` -> ``norm1/2``, ``intermediate/output.dense`` -> ``mlp.fc1/fc2``,
  ``position_embeddings`` resampled as HF's ``interpolate_pos_encoding`` (transformers <= 4.4x:
  bicubic, ``scale_factor = (g + 0.1) / G``); ``pooler.*`` is unused by LRMs and dropped.
* The HF ViT config (``hf_vit_config``): heads, LayerNorm eps, patch size and MLP width of a DINO v1
  encoder come from the config.json of the ViT the checkpoint names (a local file or the local
  Hugging Face cache; ``facebook/dino-vitb16``'s facts are built in), checked against the tensors
  (``check_vit``).
"""
from __future__ import annotations

import json
import math
import os
import re

import torch
import torch.nn.functional as F


def resample_grid(pos: torch.Tensor, new: int, offset: float = 0.1, antialias: bool = False) -> torch.Tensor:
    """pos ``[1, G*G, D]`` (patch positions only) -> ``[1, new*new, D]`` as DINO/DINOv2/HF-ViT do at
    run time: ``interpolate(scale_factor=(new + offset) / G, bicubic, align_corners=False,
    antialias)``; the identity when ``new == G`` (they skip interpolation then). DINOv2's hub builds
    its registers variants (``dinov2_vit*14_reg``) with ``interpolate_offset=0`` and
    ``interpolate_antialias=True``; the others, DINO v1 and HF's ViT (transformers <= 4.4x) with
    offset 0.1 and no antialias."""
    N, D = pos.shape[1], pos.shape[2]
    G = int(round(math.sqrt(N)))
    if G * G != N:
        raise ValueError(f"position embedding with {N} patch positions is not a square grid")
    if G == new:
        return pos
    grid = pos.reshape(1, G, G, D).permute(0, 3, 1, 2).float()
    s = (new + offset) / G
    out = F.interpolate(grid, scale_factor=(s, s), mode="bicubic", align_corners=False, antialias=antialias)
    if out.shape[-1] != new:  # floor(G * s) can miss by one for some sizes; fall back to the size
        out = F.interpolate(grid, size=(new, new), mode="bicubic", align_corners=False, antialias=antialias)
    return out.permute(0, 2, 3, 1).reshape(1, new * new, D).to(pos.dtype)


def take(sd: dict, prefix: str) -> dict:
    """Pop every key under ``prefix`` (returned without it)."""
    out = {k[len(prefix):]: sd.pop(k) for k in [k for k in sd if k.startswith(prefix)]}
    return out


def dinov2_to_timm(src: dict, grid: int, registers_interp: bool | None = None) -> dict:
    """facebookresearch/dinov2 ViT names -> timm ``vit_*_patch14[_reg4]_dinov2`` at ``grid``^2 patches.

    ``registers_interp``: the position grid is resampled as DINOv2's registers variants do
    (antialiased bicubic, offset 0; see ``resample_grid``); None = when the weights hold register tokens."""
    out = {}
    src = dict(src)
    src.pop("mask_token", None)
    pos = src.pop("pos_embed")
    cls = src.pop("cls_token")
    reg = ("register_tokens" in src) if registers_interp is None else registers_interp
    interp = dict(offset=0.0, antialias=True) if reg else dict(offset=0.1, antialias=False)
    if "register_tokens" in src:  # timm no_embed_class: cls/reg tokens carry no position
        out["reg_token"] = src.pop("register_tokens")
        out["cls_token"] = cls + pos[:, :1]
        out["pos_embed"] = resample_grid(pos[:, 1:], grid, **interp)
    else:
        out["cls_token"] = cls
        out["pos_embed"] = torch.cat([pos[:, :1], resample_grid(pos[:, 1:], grid, **interp)], 1)
    for k, v in src.items():
        k = re.sub(r"^blocks\.\d+\.(\d+)\.", r"blocks.\1.", k)      # block_chunks > 0
        k = re.sub(r"\.mlp\.w12\.", ".mlp.fc1.", k)
        k = re.sub(r"\.mlp\.w3\.", ".mlp.fc2.", k)
        out[k] = v
    return out


def hf_vit_to_timm(src: dict, grid: int) -> dict:
    """Hugging Face ``ViTModel`` names (DINO v1) -> timm ``vit_base_patch16_224.dino`` names."""
    out = {}
    src = {k: v for k, v in src.items() if not k.startswith("pooler.")}
    out["cls_token"] = src.pop("embeddings.cls_token")
    pos = src.pop("embeddings.position_embeddings")
    out["pos_embed"] = torch.cat([pos[:, :1], resample_grid(pos[:, 1:], grid)], 1)
    out["patch_embed.proj.weight"] = src.pop("embeddings.patch_embeddings.projection.weight")
    out["patch_embed.proj.bias"] = src.pop("embeddings.patch_embeddings.projection.bias")
    out["norm.weight"] = src.pop("layernorm.weight")
    out["norm.bias"] = src.pop("layernorm.bias")
    layers = sorted({int(m.group(1)) for k in src if (m := re.match(r"encoder\.layer\.(\d+)\.", k))})
    for i in layers:
        p, q = f"encoder.layer.{i}.", f"blocks.{i}."
        for t in ("weight", "bias"):
            out[q + f"attn.qkv.{t}"] = torch.cat([src.pop(p + f"attention.attention.{n}.{t}")
                                                  for n in ("query", "key", "value")], 0)
            out[q + f"attn.proj.{t}"] = src.pop(p + f"attention.output.dense.{t}")
            out[q + f"norm1.{t}"] = src.pop(p + f"layernorm_before.{t}")
            out[q + f"norm2.{t}"] = src.pop(p + f"layernorm_after.{t}")
            out[q + f"mlp.fc1.{t}"] = src.pop(p + f"intermediate.dense.{t}")
            out[q + f"mlp.fc2.{t}"] = src.pop(p + f"output.dense.{t}")
    if src:
        raise ValueError(f"unexpected ViT encoder keys: {sorted(src)[:8]}")
    return out



def take_renamed(sd: dict, a: str, b: str) -> dict:
    return {b + k: v for k, v in take(sd, a).items()}



# facebook/dino-vitb16's config.json: the ViT that TripoSR's released config.yaml names
# (``image_tokenizer.pretrained_model_name_or_path``) and whose config TripoSR fetches from the hub at
# run time. Built in so the published folder loads offline; a local config.json wins (see
# ``triposr_vit_config``).
DINO_VITB16_CONFIG = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                          image_size=224, patch_size=16, num_channels=3, layer_norm_eps=1e-12, hidden_act="gelu",
                          qkv_bias=True)
DEFAULT_HF_VIT = "facebook/dino-vitb16"  # TripoSR's DINOSingleImageTokenizer default, OpenLRM v1.0's encoder


def hf_vit_config(name: str, folder: str | None, what: str) -> tuple[dict, str]:
    """(HF ViT config dict, where it came from) for the ViT ``name`` a checkpoint names (``what``
    says where, for errors). Looked up offline only: ``<name>/config.json`` as a path (absolute, or
    relative to the checkpoint folder), then the local Hugging Face cache; if neither exists, the
    built-in facts of ``facebook/dino-vitb16`` when that is the name, else an error."""
    cands = [name if os.path.isabs(name) else os.path.join(folder or ".", name)]
    for c in cands:
        f = os.path.join(c, "config.json") if os.path.isdir(c) else c
        if os.path.isfile(f) and f.endswith(".json"):
            with open(f) as fh:
                try:
                    return json.load(fh), f
                except json.JSONDecodeError as e:
                    raise ValueError(f"{f}: not a JSON ViT config ({e})") from None
    if re.fullmatch(r"[\w.-]+/[\w.-]+", name):
        try:
            from huggingface_hub import try_to_load_from_cache

            f = try_to_load_from_cache(name, "config.json")
        except Exception:  # noqa: BLE001 - no hub library or no cache: fall through
            f = None
        if isinstance(f, str) and os.path.isfile(f):
            with open(f) as fh:
                return json.load(fh), f
    if name == DEFAULT_HF_VIT:
        return dict(DINO_VITB16_CONFIG), f"built-in {DEFAULT_HF_VIT}"
    raise FileNotFoundError(f"{what} names the ViT {name!r}: no config.json at {cands[0]} nor in the local "
                            f"Hugging Face cache, and only {DEFAULT_HF_VIT}'s is built in")



def check_vit(vit: dict, src: str, enc_sd: dict, prefix: str = "image_tokenizer.model.") -> dict:
    """The ViT facts our encoder needs, checked against the checkpoint's tensors (one-line errors
    naming the file's key: ``prefix`` + the ViT's own)."""
    def get(k, default=None):
        v = vit.get(k, default)
        if v is None:
            raise KeyError(f"ViT config {src} lacks {k!r}")
        return v
    hidden, heads = int(get("hidden_size")), int(get("num_attention_heads"))
    layers, inter, patch = int(get("num_hidden_layers")), int(get("intermediate_size")), int(get("patch_size"))
    if get("hidden_act", "gelu") != "gelu":
        raise ValueError(f"ViT config {src}: hidden_act {vit['hidden_act']!r} not supported (gelu)")
    if not vit.get("qkv_bias", True):
        raise ValueError(f"ViT config {src}: qkv_bias false not supported")
    if hidden % heads:
        raise ValueError(f"ViT config {src}: hidden_size {hidden} not divisible by num_attention_heads {heads}")
    k = "embeddings.patch_embeddings.projection.weight"
    checks = [(k, (hidden, int(vit.get("num_channels", 3)), patch, patch)),
              ("embeddings.cls_token", (1, 1, hidden))]
    for i in range(layers):
        checks.append((f"encoder.layer.{i}.intermediate.dense.weight", (inter, hidden)))
    for key, shape in checks:
        if key not in enc_sd:
            raise KeyError(f"checkpoint lacks {prefix}{key} (ViT config {src} has {layers} layers)")
        if tuple(enc_sd[key].shape) != shape:
            raise ValueError(f"{prefix}{key} has shape {tuple(enc_sd[key].shape)}, ViT config "
                             f"{src} implies {shape}")
    extra = sorted({int(m.group(1)) for kk in enc_sd if (m := re.match(r"encoder\.layer\.(\d+)\.", kk))} - set(range(layers)))
    if extra:
        raise ValueError(f"{prefix}encoder.layer.{extra[0]}.*: ViT config {src} has only {layers} layers")
    return dict(hidden=hidden, heads=heads, layers=layers, inter=inter, patch=patch,
                eps=float(vit.get("layer_norm_eps", 1e-12)))


