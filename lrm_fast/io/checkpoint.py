"""Checkpoints: ours (``model.safetensors`` + ``config.json``) and converters from OpenLRM / TripoSR.

Formats, detected from the files and the state dict's keys (never from the folder's name):

==============  ==================================================================================
``lrm_fast``    ours: ``config.json`` (``LRMConfig.to_json``) + ``model.safetensors`` (our names).
``openlrm-1.1`` OpenLRM v1.1 (``openlrm-mix-*-1.1``): ``config.json`` with ``transformer_dim`` ...
                + ``model.safetensors`` (names of ``openlrm.models.modeling_lrm.ModelLRM``; DINOv2
                vendored from facebookresearch/dinov2 under ``encoder.model.``).
``openlrm-1.0`` OpenLRM v1.0: ``model.pth`` = ``{"weights": state_dict, "kwargs": {"model": ...}}``
                (``LRMGenerator``; DINO v1 as a Hugging Face ``ViTModel`` under ``encoder.model.``;
                pos-embed / deconv inside ``transformer.``).
``triposr``     TripoSR: ``config.yaml`` + ``model.ckpt`` (a plain state dict of ``tsr.system.TSR``).
==============  ==================================================================================

Name mapping (foreign -> ours), the part that is not a rename:

* ``nn.MultiheadAttention`` cross-attention: ``q_proj_weight`` -> ``q.weight``;
  ``cat(k_proj_weight, v_proj_weight)`` -> ``kv.weight``. When the token width equals the decoder
  width PyTorch stores one ``in_proj_weight [3D, D]`` instead: rows ``[:D]`` -> ``q``, ``[D:]`` -> ``kv``.
  Self-attention ``in_proj_weight`` -> ``qkv.weight``; ``out_proj`` -> ``proj``.
* OpenLRM MLP ``mlp.{0,3}`` (Linear, GELU, Dropout, Linear) -> ``mlp.{0,2}``.
* DINOv2 -> timm (``vit_*_patch14_reg4_dinov2``, ``no_embed_class``): ``register_tokens`` ->
  ``reg_token``; ``cls_token + pos_embed[:, 0]`` -> ``cls_token``; ``pos_embed[:, 1:]`` resampled to
  our image size exactly as DINOv2's ``interpolate_pos_encoding`` does at run time (bicubic,
  ``scale_factor = (g + 0.1) / G``, no antialias; identity when the grids match); ``mask_token`` dropped;
  chunked ``blocks.c.i.`` -> ``blocks.i.``; SwiGLU ``w12/w3`` -> ``fc1/fc2``.
* HF ``ViTModel`` (DINO v1) -> timm ``vit_base_patch16_224.dino``: ``query/key/value`` -> ``qkv``,
  ``layernorm_before/after`` -> ``norm1/2``, ``intermediate/output.dense`` -> ``mlp.fc1/fc2``,
  ``position_embeddings`` resampled as HF's ``interpolate_pos_encoding`` (transformers <= 4.4x:
  bicubic, ``scale_factor = (g + 0.1) / G``); ``pooler.*`` is unused by LRMs and dropped.
  (HF's LayerNorm eps is 1e-12, timm's 1e-6: a ~1e-6 relative difference, not corrected.)
* TripoSR's image tokenizer is an HF ``ViTModel`` built from the ViT ``config.json`` its config.yaml
  names (``image_tokenizer.pretrained_model_name_or_path``): heads, LayerNorm eps (``norm_eps``),
  patch size and MLP width come from there (``triposr_vit_config``: a local config.json, else
  ``facebook/dino-vitb16``'s built-in facts), checked against the tensors.
* TripoSR: ``tokenizer.embeddings [3, C, h, w]`` -> ``pos_embed [1, 3hw, C]`` (plane-major);
  ``backbone.{norm, proj_in, proj_out}`` -> ``transformer_{in_norm, proj_in, proj_out}``;
  ``attn1`` (self, first) / ``attn2`` (cross) ``to_q/to_k/to_v/to_out.0`` -> fused ``qkv`` / ``q`` + ``kv``
  / ``proj``; ``ff.net.0.proj`` / ``ff.net.2`` -> ``mlp.0.proj`` / ``mlp.1``;
  ``post_processor.upsample`` -> ``upsampler.upsampler``; ``decoder.layers.*`` -> ``field.net.*``.

Every pickle is read with ``torch.load(weights_only=True)``. Missing, unexpected and mis-shaped keys
are reported by name.
"""
from __future__ import annotations

import json
import math
import os
import re

import torch
import torch.nn.functional as F

from ..config import LRMConfig
from ..model.encoder import IMAGENET_MEAN, IMAGENET_STD, ImageEncoder
from ..model.lrm import LRM
from .export import atomic_path

FORMATS = ("lrm_fast", "openlrm-1.1", "openlrm-1.0", "triposr")


# ---------------------------------------------------------------------------------------------
# reading / writing
# ---------------------------------------------------------------------------------------------
def read_state_dict(path: str) -> dict[str, torch.Tensor]:
    """A state dict from a .safetensors file or a pickle (loaded with ``weights_only=True``)."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        try:
            return load_file(path)
        except Exception as e:  # safetensors raises its own error types for truncated/corrupt files
            raise ValueError(f"{path}: not a readable safetensors file ({e})") from None
    sd = _load_pickle(path)
    for key in ("state_dict", "model", "weights"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError(f"{path}: does not hold a state dict of tensors")
    return sd


def load_encoder_weights(encoder: ImageEncoder, path: str) -> None:
    """Load an image encoder's backbone weights from a local timm/torch state-dict file
    (safetensors or pickle); the classifier head may be missing."""
    sd = read_state_dict(path)
    missing, unexpected = encoder.vit.load_state_dict(sd, strict=False)
    missing = [k for k in missing if not k.startswith("head")]
    if missing or unexpected:
        raise ValueError(f"{path}: encoder weights do not match {encoder.cfg.timm_name}: missing "
                         f"{missing[:8]}, unexpected {unexpected[:8]}")


def _load_pickle(path: str):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - truncated zip, foreign pickle, not a torch file at all
        raise ValueError(f"{path}: not a loadable torch checkpoint with weights_only=True ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''})") from None


def _atomic_write_bytes(path: str, write) -> None:
    tmp = atomic_path(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _own_state_dict(model, dtype=None) -> dict[str, torch.Tensor]:
    # ``renderer.field`` is the same module as ``field``: store it once (safetensors refuses shared
    # tensors) and re-tie it on load.
    return {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().cpu().contiguous().clone()
            for k, v in model.state_dict().items() if not k.startswith("renderer.field.")}


def save_checkpoint(model, out_dir: str, dtype: torch.dtype | None = None) -> list[str]:
    """Write ``model.safetensors`` + ``config.json`` into ``out_dir``, each atomically (temp file + rename).

    Returns the two paths."""
    from safetensors.torch import save_file

    os.makedirs(out_dir, exist_ok=True)
    sd = _own_state_dict(model, dtype)
    st = os.path.join(out_dir, "model.safetensors")
    _atomic_write_bytes(st, lambda tmp: save_file(sd, tmp, metadata={"format": "lrm_fast"}))
    cj = os.path.join(out_dir, "config.json")

    def _w(tmp):
        with open(tmp, "w") as f:
            f.write(model.cfg.to_json())
    _atomic_write_bytes(cj, _w)
    return [st, cj]


# ---------------------------------------------------------------------------------------------
# detection
# ---------------------------------------------------------------------------------------------
def _files(path: str) -> dict[str, str]:
    """Which known files the path gives: keys config_json, safetensors, pth, yaml, ckpt."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if os.path.isdir(path):
        names = {n: os.path.join(path, n) for n in os.listdir(path)}
        out = {}
        if "config.json" in names:
            out["config_json"] = names["config.json"]
        if "config.yaml" in names:
            out["yaml"] = names["config.yaml"]
        for n, p in sorted(names.items()):
            if n.endswith(".safetensors"):
                out.setdefault("safetensors", p)
            elif n.endswith(".pth") or n.endswith(".pt") or n.endswith(".bin"):
                out.setdefault("pth", p)
            elif n.endswith(".ckpt"):
                out.setdefault("ckpt", p)
        return out
    d = os.path.dirname(os.path.abspath(path))
    out = {}
    if path.endswith(".safetensors"):
        out["safetensors"] = path
    elif path.endswith(".ckpt"):
        out["ckpt"] = path
    else:
        out["pth"] = path
    for n, k in (("config.json", "config_json"), ("config.yaml", "yaml")):
        if os.path.exists(os.path.join(d, n)):
            out[k] = os.path.join(d, n)
    return out


def detect_format(keys) -> str:
    """The checkpoint format from its state-dict keys (see module docstring)."""
    keys = list(keys)
    has = lambda prefix: any(k.startswith(prefix) for k in keys)  # noqa: E731
    if has("image_tokenizer.") and has("backbone."):
        return "triposr"
    if has("synthesizer.decoder.") and has("transformer.pos_embed"):
        return "openlrm-1.0"
    if has("synthesizer.decoder.") and has("pos_embed"):
        return "openlrm-1.1"
    if has("field.net.") and has("encoder.vit."):
        return "lrm_fast"
    raise ValueError("unrecognized checkpoint: expected lrm_fast (field.net.*), OpenLRM (synthesizer.decoder.*) "
                     f"or TripoSR (image_tokenizer.*, backbone.*) keys; first keys: {keys[:6]}")


# ---------------------------------------------------------------------------------------------
# shared pieces of the converters
# ---------------------------------------------------------------------------------------------
def _resample_grid(pos: torch.Tensor, new: int, offset: float = 0.1, antialias: bool = False) -> torch.Tensor:
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


def _take(sd: dict, prefix: str) -> dict:
    """Pop every key under ``prefix`` (returned without it)."""
    out = {k[len(prefix):]: sd.pop(k) for k in [k for k in sd if k.startswith(prefix)]}
    return out


def _dinov2_to_timm(src: dict, grid: int, registers_interp: bool | None = None) -> dict:
    """facebookresearch/dinov2 ViT names -> timm ``vit_*_patch14[_reg4]_dinov2`` at ``grid``^2 patches.

    ``registers_interp``: the position grid is resampled as DINOv2's registers variants do
    (antialiased bicubic, offset 0; see ``_resample_grid``); None = when the weights hold register tokens."""
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
        out["pos_embed"] = _resample_grid(pos[:, 1:], grid, **interp)
    else:
        out["cls_token"] = cls
        out["pos_embed"] = torch.cat([pos[:, :1], _resample_grid(pos[:, 1:], grid, **interp)], 1)
    for k, v in src.items():
        k = re.sub(r"^blocks\.\d+\.(\d+)\.", r"blocks.\1.", k)      # block_chunks > 0
        k = re.sub(r"\.mlp\.w12\.", ".mlp.fc1.", k)
        k = re.sub(r"\.mlp\.w3\.", ".mlp.fc2.", k)
        out[k] = v
    return out


def _hf_vit_to_timm(src: dict, grid: int) -> dict:
    """Hugging Face ``ViTModel`` names (DINO v1) -> timm ``vit_base_patch16_224.dino`` names."""
    out = {}
    src = {k: v for k, v in src.items() if not k.startswith("pooler.")}
    out["cls_token"] = src.pop("embeddings.cls_token")
    pos = src.pop("embeddings.position_embeddings")
    out["pos_embed"] = torch.cat([pos[:, :1], _resample_grid(pos[:, 1:], grid)], 1)
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
    name = str(kw.get("encoder_model_name") or _TRIPOSR_DEFAULT_VIT)
    vit, src = hf_vit_config(name, folder, "OpenLRM's encoder_model_name")
    return _check_vit(vit, src, enc_sd, "encoder.model."), src


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
    enc_src = _take(sd, "encoder.model.")
    cfg = _openlrm_config(kwargs, version, image_size, enc_src, infer, folder, notes)
    patch = int(cfg.encoder.overrides.get("patch_size", 14 if cfg.encoder.kind == "dinov2" else 16))
    grid = cfg.encoder.image_size // patch
    if cfg.encoder.kind == "dinov2":
        name = str(kwargs.get("encoder_model_name", ""))
        m = _DINOV2_HUB.match(name)
        enc = _dinov2_to_timm(enc_src, grid, registers_interp=bool(m.group(1)) if m else None)
    else:
        enc = _hf_vit_to_timm(enc_src, grid)
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
    out.update(_take_renamed(sd, "camera_embedder.", "camera_embedder."))
    out.update(_take_renamed(sd, "synthesizer.decoder.net.", "field.net."))
    out.update(_openlrm_blocks(sd, cfg.decoder.dim))
    out.update(sd)  # whatever is left is reported as unexpected by name
    return cfg, out


def _take_renamed(sd: dict, a: str, b: str) -> dict:
    return {b + k: v for k, v in _take(sd, a).items()}


# facebook/dino-vitb16's config.json: the ViT that TripoSR's released config.yaml names
# (``image_tokenizer.pretrained_model_name_or_path``) and whose config TripoSR fetches from the hub at
# run time. Built in so the published folder loads offline; a local config.json wins (see
# ``triposr_vit_config``).
DINO_VITB16_CONFIG = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                          image_size=224, patch_size=16, num_channels=3, layer_norm_eps=1e-12, hidden_act="gelu",
                          qkv_bias=True)
_TRIPOSR_DEFAULT_VIT = "facebook/dino-vitb16"  # TripoSR's DINOSingleImageTokenizer default


def _yaml_ref(y: dict, v):
    """Resolve an OmegaConf interpolation ``${a.b}`` (TripoSR's config.yaml uses them) against ``y``."""
    m = re.fullmatch(r"\$\{([\w.]+)\}", v) if isinstance(v, str) else None
    if not m:
        return v
    node = y
    for part in m.group(1).split("."):
        if not isinstance(node, dict) or part not in node:
            raise ValueError(f"TripoSR config.yaml: cannot resolve {v}")
        node = node[part]
    return node


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
    if name == _TRIPOSR_DEFAULT_VIT:
        return dict(DINO_VITB16_CONFIG), f"built-in {_TRIPOSR_DEFAULT_VIT}"
    raise FileNotFoundError(f"{what} names the ViT {name!r}: no config.json at {cands[0]} nor in the local "
                            f"Hugging Face cache, and only {_TRIPOSR_DEFAULT_VIT}'s is built in")


def triposr_vit_config(yaml_cfg: dict | None, folder: str | None) -> tuple[dict, str]:
    """(ViT config dict, where it came from) for a TripoSR checkpoint folder.

    The yaml names the ViT (``image_tokenizer.pretrained_model_name_or_path``; TripoSR's default and
    the release: ``facebook/dino-vitb16``), looked up as ``hf_vit_config`` does."""
    name = str(((yaml_cfg or {}).get("image_tokenizer") or {}).get("pretrained_model_name_or_path",
                                                                   _TRIPOSR_DEFAULT_VIT))
    return hf_vit_config(name, folder, "TripoSR config.yaml (image_tokenizer.pretrained_model_name_or_path)")


def _check_vit(vit: dict, src: str, enc_sd: dict, prefix: str = "image_tokenizer.model.") -> dict:
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


def _triposr_config(yaml_cfg: dict | None, image_size: int | None, enc_sd: dict, sd: dict,
                    vit: tuple[dict, str] | None = None):
    d = LRMConfig.preset("triposr").to_dict()
    y = yaml_cfg or {}
    bb, tok, pp, dec, ren = (y.get(k, {}) or {} for k in ("backbone", "tokenizer", "post_processor", "decoder", "renderer"))
    if bb:
        heads, hdim = int(bb.get("num_attention_heads", 16)), int(bb.get("attention_head_dim", 88))
        d["decoder"].update(dim=heads * hdim, layers=int(bb.get("num_layers", 1)), heads=heads,
                            in_norm_groups=int(bb.get("norm_num_groups", 32)))
        cin = _yaml_ref(y, bb.get("in_channels"))
        if cin is not None and int(cin) != heads * hdim:
            raise ValueError(f"TripoSR backbone.in_channels {cin} != num_attention_heads x attention_head_dim "
                             f"{heads * hdim}: not supported")
    if tok:
        d["triplane"].update(low_res=int(tok.get("plane_size", 32)), high_res=2 * int(tok.get("plane_size", 32)))
    if pp:
        d["triplane"]["channels"] = int(pp.get("out_channels", 40))
    if dec:
        d["field"].update(hidden=int(dec.get("n_neurons", 64)), layers=int(dec.get("n_hidden_layers", 9)) + 1,
                          activation=str(dec.get("activation", "relu")))
    if ren:
        r = float(ren.get("radius", 0.87))
        d["render"].update(box_min=-r, box_max=r, samples_per_ray=int(ren.get("num_samples_per_ray", 128)))
        d["field"].update(coord_scale=1.0 / r, density_bias=float(ren.get("density_bias", -1.0)))
        if ren.get("feature_reduction", "concat") not in ("concat", "mean"):
            raise ValueError(f"TripoSR feature_reduction {ren['feature_reduction']!r} not supported")
        d["field"]["aggregate"] = ren.get("feature_reduction", "concat")
        act = str(ren.get("density_activation", "exp"))
        if act not in ("exp", "softplus"):
            raise ValueError(f"TripoSR renderer.density_activation {act!r} not supported (exp, softplus)")
        d["field"]["density_activation"] = act
        if str(ren.get("color_activation", "sigmoid")) != "sigmoid":
            raise ValueError(f"TripoSR renderer.color_activation {ren['color_activation']!r} not supported (sigmoid)")
    if "cond_image_size" in y:
        d["encoder"]["image_size"] = int(y["cond_image_size"])
    if image_size:
        d["encoder"]["image_size"] = image_size
    # sizes the yaml does not carry (or synthetic checkpoints) come from the tensors themselves
    if "tokenizer.embeddings" in sd:
        _, C, h, _ = sd["tokenizer.embeddings"].shape
        if bb and int(C) != d["decoder"]["dim"]:
            raise ValueError(f"tokenizer.embeddings has {C} channels, config.yaml's backbone is "
                             f"{d['decoder']['heads']} heads x {d['decoder']['dim'] // d['decoder']['heads']}")
        d["decoder"]["dim"] = int(C)
        d["triplane"].update(low_res=int(h), high_res=2 * int(h))
    if "post_processor.upsample.weight" in sd:
        d["triplane"]["channels"] = int(sd["post_processor.upsample.weight"].shape[1])
    blocks = {int(m.group(1)) for k in sd if (m := re.match(r"backbone\.transformer_blocks\.(\d+)\.", k))}
    if blocks:
        d["decoder"]["layers"] = len(blocks)
    lin = sorted({int(m.group(1)) for k in sd if (m := re.match(r"decoder\.layers\.(\d+)\.weight", k))})
    if lin:
        d["field"]["layers"] = len(lin)
        d["field"]["hidden"] = int(sd[f"decoder.layers.{lin[0]}.weight"].shape[0])
    # the image tokenizer: HF ViTModel built from the ViT config the yaml names (heads, eps, patch
    # and MLP width come from there, not from the width)
    v = _check_vit(*(vit or (dict(DINO_VITB16_CONFIG), f"built-in {_TRIPOSR_DEFAULT_VIT}")), enc_sd)
    d["encoder"]["feat_dim"] = v["hidden"]
    d["encoder"]["norm_eps"] = v["eps"]
    if d["encoder"]["image_size"] % v["patch"]:
        raise ValueError(f"TripoSR cond_image_size {d['encoder']['image_size']} is not a multiple of the ViT's "
                         f"patch size {v['patch']}")
    std = dict(hidden=768, heads=12, layers=12, inter=3072, patch=16)
    d["encoder"]["overrides"] = {} if all(v[k] == std[k] for k in std) else dict(
        embed_dim=v["hidden"], depth=v["layers"], num_heads=v["heads"], patch_size=v["patch"],
        mlp_ratio=v["inter"] / v["hidden"])
    d["name"] = "triposr"
    return LRMConfig.from_dict(d)


def convert_triposr(sd: dict, yaml_cfg: dict | None = None, image_size: int | None = None,
                    vit_config: tuple[dict, str] | None = None):
    """TripoSR state dict (+ its parsed config.yaml and the (ViT config, source) it names; default
    the built-in ``facebook/dino-vitb16``) -> (LRMConfig, our state dict)."""
    sd = dict(sd)
    enc_src = _take(sd, "image_tokenizer.model.")
    if "embeddings.cls_token" not in enc_src:
        raise KeyError("TripoSR checkpoint lacks image_tokenizer.model.embeddings.cls_token")
    cfg = _triposr_config(yaml_cfg, image_size, enc_src, sd, vit_config)
    grid = cfg.encoder.image_size // int(cfg.encoder.overrides.get("patch_size", 16))
    out = {"encoder.vit." + k: v for k, v in _hf_vit_to_timm(enc_src, grid).items()}
    emb = sd.pop("tokenizer.embeddings")  # [3, C, h, w] -> plane-major tokens [1, 3*h*w, C]
    out["pos_embed"] = emb.permute(0, 2, 3, 1).reshape(1, -1, emb.shape[1])
    for a, b in (("backbone.norm.", "transformer_in_norm."), ("backbone.proj_in.", "transformer_proj_in."),
                 ("backbone.proj_out.", "transformer_proj_out."), ("post_processor.upsample.", "upsampler.upsampler."),
                 ("decoder.layers.", "field.net.")):
        out.update(_take_renamed(sd, a, b))
    for k in list(sd):
        m = re.match(r"backbone\.transformer_blocks\.(\d+)\.(.*)$", k)
        if not m:
            continue
        p, rest = f"transformer.layers.{m.group(1)}.", m.group(2)
        v = sd.pop(k)
        if rest.startswith(("norm1.", "norm2.", "norm3.")):
            out[p + rest] = v
        elif rest.startswith("ff.net.0.proj."):
            out[p + "mlp.0.proj." + rest[len("ff.net.0.proj."):]] = v
        elif rest.startswith("ff.net.2."):
            out[p + "mlp.1." + rest[len("ff.net.2."):]] = v
        elif rest.startswith(("attn1.to_out.0.", "attn2.to_out.0.")):
            att = "self_attn" if rest.startswith("attn1") else "cross_attn"
            out[p + f"{att}.proj." + rest[len("attn1.to_out.0."):]] = v
        elif re.match(r"attn[12]\.to_[qkv]\.weight$", rest):
            out.setdefault(p + "_qkv", {})[rest[:10]] = v
        else:
            out["backbone.transformer_blocks." + m.group(1) + "." + rest] = v  # unexpected
    for k in [k for k in out if k.endswith("._qkv")]:
        parts, p = out.pop(k), k[:-4]
        try:
            out[p + "self_attn.qkv.weight"] = torch.cat([parts["attn1.to_q"], parts["attn1.to_k"], parts["attn1.to_v"]], 0)
            out[p + "cross_attn.q.weight"] = parts["attn2.to_q"]
            out[p + "cross_attn.kv.weight"] = torch.cat([parts["attn2.to_k"], parts["attn2.to_v"]], 0)
        except KeyError as e:
            raise KeyError(f"TripoSR block {p}: missing attention weight {e}") from None
    out.update(sd)
    return cfg, out


# ---------------------------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------------------------
def _load_into(cfg, sd: dict, source: str, backend: str, names: dict | None = None):
    """``names`` (optional): our key -> the file's key, for error messages about converted keys."""
    with torch.device("meta"):
        model = LRM(cfg, backend=backend)
    want = {k: v for k, v in model.state_dict().items() if not k.startswith("renderer.field.")}
    # files written before the field was stored once carry ``renderer.field.*`` copies of ``field.*``
    dup = [k for k in sd if k.startswith("renderer.field.") and k[len("renderer."):] in sd]
    if dup and all(torch.equal(sd[k], sd[k[len("renderer."):]]) for k in dup):
        sd = {k: v for k, v in sd.items() if k not in set(dup)}
    missing = sorted(set(want) - set(sd))
    unexpected = sorted(set(sd) - set(want))
    names = names or {}
    shapes = [f"{k}{f' (file: {names[k]})' if k in names else ''} {tuple(sd[k].shape)} vs {tuple(want[k].shape)}"
              for k in sorted(set(sd) & set(want)) if tuple(sd[k].shape) != tuple(want[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} keys {missing[:8]}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} keys {unexpected[:8]}")
        if shapes:
            parts.append(f"mis-shaped {len(shapes)} (checkpoint vs model) {shapes[:8]}")
        raise ValueError(f"{source}: state dict does not match the config: " + "; ".join(parts))
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in sd.items()},
                          strict=False, assign=True)
    model.renderer.field = model.field  # re-tie (assign replaced field's parameters in place)
    return _materialize_buffers(model)


def _read_yaml(path: str) -> dict:
    try:
        import yaml
    except ImportError:  # pyyaml is a dependency, but keep the error readable
        raise RuntimeError("reading TripoSR's config.yaml needs pyyaml (pip install pyyaml)") from None
    with open(path) as f:
        return yaml.safe_load(f) or {}


def load_foreign(path: str, image_size: int | None = None, names: dict | None = None, notes: dict | None = None):
    """(LRMConfig, our state dict, format) from any supported checkpoint path (file or folder).

    ``names``: a dict to fill with our key -> the file's key for every tensor taken over unchanged
    under another name (error messages name what the user's file calls it). ``notes``: a dict to
    fill with choices the file does not settle (OpenLRM's input size, where the ViT's facts came from)."""
    files = _files(path)
    if "safetensors" in files:
        raw = read_state_dict(files["safetensors"])
    elif "pth" in files:
        raw = _load_pickle(files["pth"])
    elif "ckpt" in files:
        raw = _load_pickle(files["ckpt"])
    else:
        raise FileNotFoundError(f"{path}: no model file (model.safetensors, model.pth or model.ckpt)")
    kwargs = infer = None
    if isinstance(raw, dict) and isinstance(raw.get("kwargs"), dict):  # OpenLRM v1.0 model.pth
        kwargs = raw["kwargs"].get("model", raw["kwargs"])
        infer = raw["kwargs"].get("infer") if isinstance(raw["kwargs"].get("infer"), dict) else None
    if isinstance(raw, dict):
        for key in ("weights", "state_dict", "model"):
            if isinstance(raw.get(key), dict):
                raw = raw[key]
                break
    if not isinstance(raw, dict) or not raw or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise ValueError(f"{path}: does not hold a state dict of tensors")
    fmt = detect_format(raw.keys())
    if fmt == "lrm_fast":
        if "config_json" not in files:
            raise FileNotFoundError(f"{path}: lrm_fast weights without config.json beside them")
        with open(files["config_json"]) as f:
            cfg = LRMConfig.from_dict(json.load(f))
        return cfg, dict(raw), fmt
    if fmt.startswith("openlrm"):
        if kwargs is None:
            if "config_json" not in files:
                raise FileNotFoundError(f"{path}: OpenLRM weights without config.json (its model kwargs)")
            with open(files["config_json"]) as f:
                kwargs = json.load(f)
        folder = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
        cfg, sd = convert_openlrm(raw, kwargs, fmt, image_size, infer, folder, notes)
        if names is not None:
            origin = {id(v): k for k, v in raw.items()}
            names.update({k: origin[id(v)] for k, v in sd.items() if id(v) in origin and origin[id(v)] != k})
        return cfg, sd, fmt
    y = _read_yaml(files["yaml"]) if "yaml" in files else None
    folder = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
    cfg, sd = convert_triposr(raw, y, image_size, triposr_vit_config(y, folder))
    if names is not None:
        origin = {id(v): k for k, v in raw.items()}
        names.update({k: origin[id(v)] for k, v in sd.items() if id(v) in origin and origin[id(v)] != k})
    return cfg, sd, fmt


def load_checkpoint(path: str, backend: str = "auto", image_size: int | None = None):
    """Any supported checkpoint (ours, OpenLRM v1.0 / v1.1, TripoSR; see module docstring) -> LRM (fp32, cpu).

    ``image_size`` overrides the encoder input size of converted checkpoints (OpenLRM v1.1 does not
    store it; we use its released inference configs: 224 / 336 / 448 px for the 512 / 768 /
    1024-wide decoders, the nearest width's for others; v1.0 stores it in ``kwargs["infer"]``).
    The format found is stored as ``model.checkpoint_format``, the choices the file did not settle
    as ``model.checkpoint_notes`` (``lrm-fast info PATH`` prints both)."""
    names: dict = {}
    notes: dict = {}
    cfg, sd, fmt = load_foreign(path, image_size, names, notes)
    model = _load_into(cfg, sd, path, backend, names)
    model.checkpoint_format = fmt
    model.checkpoint_notes = notes
    return model


def convert_checkpoint(src: str, dst: str, dtype: torch.dtype | None = None, image_size: int | None = None) -> str:
    """Convert any supported checkpoint to ours (folder ``dst``); returns the detected source format."""
    model = load_checkpoint(src, backend="reference", image_size=image_size)
    save_checkpoint(model, dst, dtype)
    return model.checkpoint_format


def _materialize_buffers(model):
    model.encoder.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
    model.encoder.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
    for name, buf in list(model.named_buffers()):
        if buf.is_meta:
            raise RuntimeError(f"buffer {name} was not materialized when loading the checkpoint")
    return model.float()
