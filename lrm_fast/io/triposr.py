"""TripoSR checkpoints (``config.yaml`` + ``model.ckpt``, a plain state dict of ``tsr.system.TSR``) -> ours.

The model is the ``triposr`` decoder block (``model/decoder.py``: ``TripoSRDecoder``) and render
sampler. Name mapping (TripoSR -> ours), the part that is not a rename:

* The image tokenizer is an HF ``ViTModel`` built from the ViT ``config.json`` its config.yaml names
  (``image_tokenizer.pretrained_model_name_or_path``): heads, LayerNorm eps (``norm_eps``), patch
  size and MLP width come from there (``triposr_vit_config``: a local config.json, else
  ``facebook/dino-vitb16``'s built-in facts), checked against the tensors; weights as
  ``io/vit_weights.py``.
* ``tokenizer.embeddings [3, C, h, w]`` -> ``pos_embed [1, 3hw, C]`` (plane-major);
  ``backbone.{norm, proj_in, proj_out}`` -> ``transformer.{in_norm, proj_in, proj_out}``;
  ``attn1`` (self, first) / ``attn2`` (cross) ``to_q/to_k/to_v/to_out.0`` -> fused ``qkv`` / ``q`` + ``kv``
  / ``proj``; ``ff.net.0.proj`` / ``ff.net.2`` -> ``mlp.0.proj`` / ``mlp.1``;
  ``post_processor.upsample`` -> ``upsampler.upsampler``; ``decoder.layers.*`` -> ``field.net.*``.
"""
from __future__ import annotations

import re

import torch

from ..config import LRMConfig
from .vit_weights import DEFAULT_HF_VIT, DINO_VITB16_CONFIG, hf_vit_to_timm, take, take_renamed, check_vit, hf_vit_config


def read_yaml(path: str) -> dict:
    try:
        import yaml
    except ImportError:  # pyyaml is a dependency, but keep the error readable
        raise RuntimeError("reading TripoSR's config.yaml needs pyyaml (pip install pyyaml)") from None
    with open(path) as f:
        return yaml.safe_load(f) or {}




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



def triposr_vit_config(yaml_cfg: dict | None, folder: str | None) -> tuple[dict, str]:
    """(ViT config dict, where it came from) for a TripoSR checkpoint folder.

    The yaml names the ViT (``image_tokenizer.pretrained_model_name_or_path``; TripoSR's default and
    the release: ``facebook/dino-vitb16``), looked up as ``hf_vit_config`` does."""
    name = str(((yaml_cfg or {}).get("image_tokenizer") or {}).get("pretrained_model_name_or_path",
                                                                   DEFAULT_HF_VIT))
    return hf_vit_config(name, folder, "TripoSR config.yaml (image_tokenizer.pretrained_model_name_or_path)")



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
    v = check_vit(*(vit or (dict(DINO_VITB16_CONFIG), f"built-in {DEFAULT_HF_VIT}")), enc_sd)
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
    enc_src = take(sd, "image_tokenizer.model.")
    if "embeddings.cls_token" not in enc_src:
        raise KeyError("TripoSR checkpoint lacks image_tokenizer.model.embeddings.cls_token")
    cfg = _triposr_config(yaml_cfg, image_size, enc_src, sd, vit_config)
    grid = cfg.encoder.image_size // int(cfg.encoder.overrides.get("patch_size", 16))
    out = {"encoder.vit." + k: v for k, v in hf_vit_to_timm(enc_src, grid).items()}
    emb = sd.pop("tokenizer.embeddings")  # [3, C, h, w] -> plane-major tokens [1, 3*h*w, C]
    out["pos_embed"] = emb.permute(0, 2, 3, 1).reshape(1, -1, emb.shape[1])
    for a, b in (("backbone.norm.", "transformer.in_norm."), ("backbone.proj_in.", "transformer.proj_in."),
                 ("backbone.proj_out.", "transformer.proj_out."), ("post_processor.upsample.", "upsampler.upsampler."),
                 ("decoder.layers.", "field.net.")):
        out.update(take_renamed(sd, a, b))
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
