"""Record what OpenLRM's own code computes, stage by stage, for the parity tests (tests/parity/test_openlrm.py).

    # v1.1 (3DTopia/OpenLRM at 3108b69, past the v1.1.1 tag): config.json + model.safetensors
    PYTHONPATH=<site with huggingface_hub==0.23.0 accelerate==0.29.3 psutil> \\
        python tools/parity/openlrm.py --version 1.1 --openlrm <checkout at 3108b69> --out tests/parity/fixtures/openlrm-v1.1
    # v1.0 (its v1.0.0 tag, d4caebb): model.pth = {"weights", "kwargs": {"model", "infer"}}, DINO through transformers
    PYTHONPATH=<site with transformers==4.36.2 tokenizers==0.15.0 huggingface_hub==0.20.2> \\
        python tools/parity/openlrm.py --version 1.0 --openlrm <checkout at v1.0.0> --out tests/parity/fixtures/openlrm-v1.0

This script is ours; it imports OpenLRM's modules from the checkout named on the command line and
never copies their code. It

1. builds OpenLRM's model at a small size (v1.1: ``ModelLRM`` through its ``wrap_model_hub``, with the
   released ``encoder_model_name`` ``dinov2_vits14_reg`` whose architecture is shrunk for the fixture;
   v1.0: ``LRMGenerator`` with a small Hugging Face ViT config in ``vit/``, as its kwargs name it),
   fills every weight from a seeded generator at scales chosen so that each stage is sensitive
   (``_synthetic_weights``) and writes the checkpoint in the original's own layout with the
   original's own writer (v1.1: ``save_pretrained``) or format (v1.0: ``torch.save`` of the dict its
   ``LRMInferrer`` reads);
2. loads that checkpoint back with the original's loader (v1.1: ``from_pretrained``; v1.0: its
   ``LRMInferrer._load_checkpoint`` / ``_build_model`` steps) and runs its code stage by stage: encoder
   tokens, the runner's default source camera and its embedding, the transformer's tokens, the
   triplanes, ``synthesizer.forward_points`` (and the raw density of ``renderer.run_model``) at
   points, ``synthesizer.forward_grid`` (what its mesh extraction queries), and renders of several
   views per call as its runner does, with zero stratified jitter and deterministic importance
   sampling (OpenLRM draws both at random even at inference; ``u = linspace(0, 1)`` is its own
   ``sample_pdf(det=True)``), one set far enough away that many rays miss the box;
3. saves every stage in ``stages.npz`` and pins versions and settings in ``meta.json``.

Run in eager mode (``TORCH_COMPILE_DISABLE=1``: OpenLRM decorates several forwards with
``torch.compile``; compiled kernels only round differently) and with ``XFORMERS_DISABLED=1`` (its
DINOv2 then uses its own plain attention; xformers' kernels are CUDA kernels). Nothing is
downloaded: the DINOv2 hub function is called with ``pretrained=False`` and v1.0's
``ViTModel.from_pretrained`` is pointed at the local ViT config (weights come from the checkpoint).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ["TORCH_COMPILE_DISABLE"] = "1"
os.environ["XFORMERS_DISABLED"] = "1"

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import commit, deterministic_sampling, stub_missing, synthetic_weights, to_numpy, write_fixture  # noqa: E402
from _common import versions as common_versions  # noqa: E402

COMMITS = {"1.1": "3108b6902d27912e1dcdce76970eab51436f5b21",   # 3108b69, main past v1.1.1
           "1.0": "d4caebbea3f446904d9faafaf734e797fcc4ec89"}   # tag v1.0.0
LIBS = {"1.1": {"huggingface_hub": "0.23.0", "accelerate": "0.29.3"},
        "1.0": {"transformers": "4.36.2"}}                        # newest on the v1.0.0 tag's day

# Model sizes (both versions): decoder 2 layers x 48 wide x 4 heads of 12, camera embedding 32,
# 4 x 4 token planes -> 8 x 8 with 8 channels, OpenLRM's fixed 4-layer 64-wide NeRF MLP, 24 + 24
# samples per ray.
MODEL_KW = dict(camera_embed_dim=32, rendering_samples_per_ray=48, transformer_dim=48, transformer_layers=2,
                transformer_heads=4, triplane_low_res=4, triplane_high_res=8, triplane_dim=8)
# v1.1: the released encoder name (DINOv2 ViT-S/14 with 4 registers, antialiased position-embedding
# interpolation with offset 0) at 64 wide x 2 blocks (1 head of 64, as every DINOv2), LayerScale on,
# the hub's 518 px position grid (37 x 37) resampled to the 224 px input (16 x 16), as the released
# models resample it to 224 / 336 / 448 px. 224 px: OpenLRM does not store its input size; the
# loader takes it from the released inference config of the nearest model (infer-s.yaml).
V11_ENCODER = dict(encoder_type="dinov2", encoder_model_name="dinov2_vits14_reg", encoder_feat_dim=64,
                   encoder_freeze=False)
V11_VIT = dict(embed_dim=64, depth=2, num_heads=1, mlp_ratio=4)
V11_SOURCE = 224
# v1.0: an HF ViT (DINO v1 layout) with 4 heads of 12 (not width / 64), eps 1e-12, patch 16, its
# 64 px position grid (4 x 4) interpolated to the 96 px input (6 x 6); width 48 = the decoder's, so
# the cross-attention is stored as one in_proj_weight. Source size in model.pth's infer kwargs.
V10_VIT = dict(hidden_size=48, num_hidden_layers=2, num_attention_heads=4, intermediate_size=96, image_size=64,
               patch_size=16, num_channels=3, layer_norm_eps=1e-12, hidden_act="gelu", qkv_bias=True,
               hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
V10_PREPROCESSOR = dict(do_normalize=True, do_rescale=True, do_resize=True, image_mean=[0.485, 0.456, 0.406],
                        image_std=[0.229, 0.224, 0.225], resample=3, size={"height": 224, "width": 224})
V10_SOURCE = 96
V10_ENCODER = dict(encoder_model_name="vit", encoder_feat_dim=48, encoder_freeze=True)
V10_INFER = dict(source_size=V10_SOURCE, render_size=16)
VIT_NAME = "vit"

SOURCE_DIST = 2.0
MC_RES = 20
# render sets: (n_views, radius, height, resolution, views per synthesizer call). Set 0 is the
# runner's own (surrounding_views_linspace's radius 2.0, height 0.8, f 0.75); set 1 is farther away
# (many rays miss the box). Not 3 views per set: OpenLRM's center_looking_at_camera_pose takes
# torch.cross without dim, which crosses over the views axis when there are 3.
VIEWS = [(4, 2.0, 0.8, 16, 2), (4, 3.6, 1.5, 20, 4)]
FOCAL = 0.75
# the NeRF MLP's density row x gain, its bias: softplus(x - 1) spans ~0.05 .. 5. v1.0's gain is lower: its fp32 end-to-end rounding (both programs ~1e-5 from a float64
# run at the planes) would otherwise reach the 2e-5 point tolerance.
DENSITY_GAIN = {"1.1": 10.0, "1.0": 4.0}
BIAS_DENSITY = {"1.1": 2.0, "1.0": 4.0}
# marching-cubes level of the mesh stage: OpenLRM's mesh_thres (3.0) for v1.1; v1.0's density at
# this gain peaks at ~2.5, so its mesh is taken at 1.5 (a level is a parameter of the same code)
MESH_LEVEL = {"1.1": 3.0, "1.0": 1.5}


def _synthetic_weights(model: torch.nn.Module, seed: int, version: str) -> None:
    """Every parameter from N(0, 1) x a per-kind scale (seeded; independent of OpenLRM's init).

    Linear / conv weights 1 / sqrt(fan_in) (activations stay O(1)), except attention queries and
    keys (the decoder's cross and self attention, the ViT's qkv) at 2.5 / sqrt(fan_in), so logits
    are O(5) and a missing 1 / sqrt(d) or a wrong head split shows; biases 0.2; LayerNorm weights
    1 + 0.3 N and biases 0.2 N; DINOv2's LayerScale gammas 0.5 + 0.3 N (ignoring them shows); the
    ViT's CLS / register tokens and position embeddings at 1 (comparable with the patch embedding,
    so their interpolation and the registers show); the decoder's triplane tokens at 1; the NeRF
    MLP's density row scaled and biased (``DENSITY_GAIN``, ``BIAS_DENSITY``) so that the density
    softplus(x - 1) spans roughly 0.02 .. 5 inside the box (renders neither empty nor opaque; the
    mesh level crosses the box)."""
    def is_norm(name, leaf, p):
        return p.dim() == 1 and ("norm" in name or "layernorm" in name) and leaf in ("weight", "bias")

    def layer_scale(name, leaf, p, n):                                  # DINOv2 LayerScale
        return 0.5 + 0.3 * n if leaf == "gamma" else None

    def matrix(name, leaf, p, n):
        if "upsampler" in name or "deconv" in name:                     # ConvTranspose2d [D_in, C, 2, 2]
            fan_in = p.shape[0]
        else:
            fan_in = p[0].numel()
        v = n / math.sqrt(fan_in)
        if leaf in ("q_proj_weight", "k_proj_weight"):
            v = v * 2.5
        elif leaf == "in_proj_weight":                                  # rows [q; k; v]
            v[: 2 * (p.shape[0] // 3)] *= 2.5
        elif name.endswith("attn.qkv.weight"):                          # DINOv2 [q; k; v]
            v[: 2 * (p.shape[0] // 3)] *= 2.5
        elif name.endswith("attention.attention.query.weight") or name.endswith("attention.attention.key.weight"):
            v = v * 2.5
        return v

    synthetic_weights(model, seed, is_norm=is_norm, other=layer_scale,
                      is_bias=lambda leaf: leaf == "bias" or leaf.endswith("_bias"),
                      is_embedding=lambda name, leaf: leaf in ("cls_token", "register_tokens", "pos_embed",
                                                                "position_embeddings"),
                      matrix=matrix)
    with torch.no_grad():
        net = model.synthesizer.decoder.net
        last = net[-1]
        last.weight[0] *= DENSITY_GAIN[version]
        last.bias[0] = BIAS_DENSITY[version]
        last.weight[1:] *= 1.5


def _image(size: int) -> np.ndarray:
    """A deterministic RGB uint8 image: a colored disc on white with a gradient and a stripe."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    c = (size - 1) / 2
    r = np.hypot(x - c, y - c) / size
    img = np.ones((size, size, 3))
    disc = r < 0.36
    img[disc, 0] = 0.2 + 0.6 * (x[disc] / size)
    img[disc, 1] = 0.8 - 0.5 * (y[disc] / size)
    img[disc, 2] = 0.3 + 0.4 * np.sin(x[disc] / 5.0) ** 2
    img[(np.abs(x - y) < size / 40) & disc] = [0.95, 0.9, 0.1]
    return np.clip(np.round(img * 255), 0, 255).astype(np.uint8)


def _points(g: torch.Generator) -> torch.Tensor:
    """Field query points: inside [-1, 1]^3, a few just outside (grid_sample pads with zeros
    there) and exactly on the box faces."""
    inside = (torch.rand(200, 3, generator=g, dtype=torch.float64) * 2 - 1) * 0.999
    outside = (torch.rand(24, 3, generator=g, dtype=torch.float64) * 2 - 1) * 1.15
    faces = torch.rand(8, 3, generator=g, dtype=torch.float64) * 2 - 1
    faces[torch.arange(8), torch.arange(8) % 3] = torch.tensor([1.0, -1.0], dtype=torch.float64).repeat(4)
    return torch.cat([inside, outside, faces]).float()


def _camera_parts(cameras: torch.Tensor):
    """OpenLRM's 25-number render camera (4x4 c2w + 3x3 normalized K) -> c2w [.., 4, 4], [fx, fy, cx, cy]."""
    c2w = cameras[..., :16].reshape(*cameras.shape[:-1], 4, 4)
    K = cameras[..., 16:25].reshape(*cameras.shape[:-1], 3, 3)
    return c2w, torch.stack([K[..., 0, 0], K[..., 1, 1], K[..., 0, 2], K[..., 1, 2]], -1)


# ---------------------------------------------------------------------------------------------
# v1.1
# ---------------------------------------------------------------------------------------------
def _build_v11(out: str):
    from functools import partial

    from accelerate import PartialState

    PartialState(cpu=True)   # OpenLRM logs through accelerate, which wants its state (its runner makes an Accelerator)
    from openlrm.models.encoders.dinov2.hub import backbones
    from openlrm.models.encoders.dinov2.layers import MemEffAttention
    from openlrm.models.encoders.dinov2.models import vision_transformer as vits
    from openlrm.models.modeling_lrm import ModelLRM
    from openlrm.models.rendering.utils import renderer as renderer_mod
    from openlrm.utils.hf_hub import wrap_model_hub

    def small_vit(patch_size=16, num_register_tokens=0, **kwargs):   # the fixture's vit_small
        return vits.DinoVisionTransformer(patch_size=patch_size, num_register_tokens=num_register_tokens,
                                          block_fn=partial(vits._block_cls(**kwargs), attn_class=MemEffAttention),
                                          **V11_VIT, **kwargs)
    vits.vit_small = small_vit
    hub_fn = backbones.dinov2_vits14_reg
    backbones.dinov2_vits14_reg = lambda **kw: hub_fn(**{**kw, "pretrained": False})   # never download
    deterministic_sampling(renderer_mod.ImportanceRenderer)

    config = {**MODEL_KW, **V11_ENCODER}
    HfModel = wrap_model_hub(ModelLRM)
    torch.manual_seed(0)
    model = HfModel(config)
    _synthetic_weights(model, seed=1101, version="1.1")
    model.save_pretrained(out)        # OpenLRM's own writer: config.json + model.safetensors
    model = HfModel.from_pretrained(out).eval()   # its runner's loader
    enc = model.encoder.model
    settings = {"interpolate_antialias": enc.interpolate_antialias, "interpolate_offset": enc.interpolate_offset,
                "num_register_tokens": enc.num_register_tokens, "pos_grid": int(math.isqrt(enc.pos_embed.shape[1] - 1))}
    return model, settings


def _encode(model, img, cam, st: dict):
    """The stages before the transformer, as both versions' runners compute them: the input image
    (uint8), the source camera, the encoder's tokens and the camera embedding."""
    st["image_u8"] = (img * 255).round().to(torch.uint8)
    with torch.no_grad():
        st["source_camera"] = cam
        tokens = model.encoder(img)
        st["tokens"] = tokens
        emb = model.camera_embedder(cam)
        st["camera_embedding"] = emb
    return tokens, emb


def _run_v11(model, st: dict) -> None:
    from openlrm.datasets.cam_utils import (build_camera_principle, build_camera_standard, create_intrinsics,
                                            surrounding_views_linspace)

    img = torch.from_numpy(_image(V11_SOURCE)).permute(2, 0, 1)[None].float() / 255.0
    # LRMInferrer._default_source_camera(dist_to_center=2.0): canonical extrinsics, create_intrinsics(0.75, 0.5)
    ext = torch.tensor([[[1, 0, 0, 0], [0, 0, -1, -SOURCE_DIST], [0, 1, 0, 0]]], dtype=torch.float32)
    cam = build_camera_principle(ext, create_intrinsics(f=FOCAL, c=0.5).unsqueeze(0))
    tokens, emb = _encode(model, img, cam, st)
    with torch.no_grad():
        st["decoder_tokens"] = model.forward_transformer(tokens, emb)
        planes = model.reshape_upsample(st["decoder_tokens"])
        if not torch.equal(planes, model.forward_planes(img, cam)):
            raise SystemExit("forward_planes differs from the stage-by-stage run")
        st["planes"] = planes
        syn = model.synthesizer
        _points_and_grid(st, syn, planes)
        for k, (n, radius, height, res, per_call) in enumerate(VIEWS):
            # LRMInferrer._default_render_cameras / infer_video: surrounding views, f 0.75, c 0.5,
            # anchors 0, resolutions = render size, white background, per_call views per synthesizer call
            ext = surrounding_views_linspace(n_views=n, radius=radius, height=height)
            K = create_intrinsics(f=FOCAL, c=0.5).unsqueeze(0).repeat(n, 1, 1)
            cameras = build_camera_standard(ext, K).unsqueeze(0)
            anchors = torch.zeros(1, n, 2)
            resolutions = torch.ones(1, n, 1) * res
            bg = torch.ones(1, n, 1)
            outs = [syn(planes=planes, cameras=cameras[:, i:i + per_call], anchors=anchors[:, i:i + per_call],
                        resolutions=resolutions[:, i:i + per_call], bg_colors=bg[:, i:i + per_call], region_size=res)
                    for i in range(0, n, per_call)]
            _store_render(st, k, cameras, {key: torch.cat([o[key] for o in outs], 1) for key in outs[0]})
            c2w, Kn = cameras[0, :, :16].reshape(n, 4, 4), cameras[0, :, 16:25].reshape(n, 3, 3)
            _store_rays(st, k, syn, *syn.ray_sampler(c2w, Kn, resolutions[0], anchors[0], res))


# ---------------------------------------------------------------------------------------------
# v1.0
# ---------------------------------------------------------------------------------------------
def _build_v10(out: str):
    from transformers import ViTConfig, ViTModel

    import lrm.models.encoders.dino_wrapper as dino_wrapper
    from lrm.models.generator import LRMGenerator
    from lrm.models.rendering.utils import renderer as renderer_mod

    vit_dir = os.path.join(out, VIT_NAME)
    os.makedirs(vit_dir, exist_ok=True)
    ViTConfig(**V10_VIT).save_pretrained(vit_dir)
    with open(os.path.join(vit_dir, "preprocessor_config.json"), "w") as f:
        json.dump({**V10_PREPROCESSOR, "image_processor_type": "ViTImageProcessor"}, f, indent=2)

    class LocalViT:   # DinoWrapper._build_dino's ViTModel.from_pretrained without the hub's weights
        @staticmethod
        def from_pretrained(name, **kw):
            return ViTModel(ViTConfig.from_pretrained(name), **kw)
    dino_wrapper.ViTModel = LocalViT
    deterministic_sampling(renderer_mod.ImportanceRenderer)

    kwargs = {**MODEL_KW, **V10_ENCODER}
    cwd = os.getcwd()
    os.chdir(out)     # the kwargs name the ViT folder relative to the checkpoint, as we ship it
    try:
        torch.manual_seed(0)
        model = LRMGenerator(**kwargs)
        _synthetic_weights(model, seed=1001, version="1.0")
        path = os.path.join(out, "model.pth")
        torch.save({"weights": model.state_dict(), "kwargs": {"model": kwargs, "infer": V10_INFER}}, path)
        # LRMInferrer._load_checkpoint / _build_model
        ckpt = torch.load(path, map_location="cpu")
        model = LRMGenerator(**ckpt["kwargs"]["model"])
        model.load_state_dict(ckpt["weights"])
        model = model.eval()
    finally:
        os.chdir(cwd)
    return model, {"vit_config": os.path.join(VIT_NAME, "config.json")}


def _run_v10(model, st: dict) -> None:
    stub_missing(["mcubes", "imageio"])
    from lrm.inferrer import LRMInferrer

    runner = object.__new__(LRMInferrer)   # its camera helpers need no loaded model
    img = torch.from_numpy(_image(V10_SOURCE)).permute(2, 0, 1)[None].float() / 255.0
    cam = runner._default_source_camera(1)
    tokens, emb = _encode(model, img, cam, st)
    with torch.no_grad():
        tr = model.transformer
        x = tr.pos_embed.repeat(1, 1, 1)
        for layer in tr.layers:
            x = layer(x, tokens, emb)
        st["decoder_tokens"] = tr.norm(x)
        planes = model.forward_planes(img, cam)
        st["planes"] = planes
        syn = model.synthesizer
        _points_and_grid(st, syn, planes)
        from lrm.cam_utils import build_camera_standard

        for k, (n, radius, height, res, per_call) in enumerate(VIEWS):
            # LRMInferrer._default_render_cameras with _get_surrounding_views(M, radius, height) and
            # its _default_intrinsics (384 / 512 = 0.75, 256 / 512); infer_single renders chunk_size views per call
            ext = runner._get_surrounding_views(M=n, radius=radius, height=height)
            K = runner._default_intrinsics().unsqueeze(0).repeat(n, 1, 1)
            cameras = build_camera_standard(ext, K).unsqueeze(0)
            outs = [syn(planes, cameras[:, i:i + per_call], res) for i in range(0, n, per_call)]
            _store_render(st, k, cameras, {key: torch.cat([o[key] for o in outs], 1) for key in outs[0]})
            c2w, Kn = cameras[0, :, :16].reshape(n, 4, 4), cameras[0, :, 16:25].reshape(n, 3, 3)
            _store_rays(st, k, syn, *syn.ray_sampler(c2w, Kn, res))


# ---------------------------------------------------------------------------------------------
def _points_and_grid(st: dict, syn, planes) -> None:
    g = torch.Generator().manual_seed(7)
    pts = _points(g)[None]
    st["points"] = pts[0]
    raw = syn.renderer.run_model(planes, syn.decoder, pts, torch.zeros_like(pts), syn.rendering_kwargs)
    act = syn.forward_points(planes, pts)
    st["point_density_raw"] = raw["sigma"][0, :, 0]
    st["point_density"] = act["sigma"][0, :, 0]
    st["point_color"] = act["rgb"][0]
    st["density_grid"] = syn.forward_grid(planes=planes, grid_size=MC_RES)["sigma"][0, ..., 0]


def _store_render(st: dict, k: int, cameras: torch.Tensor, out: dict) -> None:
    c2w, K = _camera_parts(cameras[0])
    st[f"c2w_{k}"], st[f"intrinsics_{k}"] = c2w, K
    st[f"render_{k}"] = out["images_rgb"][0].permute(0, 2, 3, 1)        # [V, H, W, 3]
    st[f"opacity_{k}"] = out["images_weight"][0, :, 0]                  # [V, H, W]
    st[f"depth_{k}"] = out["images_depth"][0, :, 0]


def _store_rays(st: dict, k: int, syn, rays_o, rays_d) -> None:
    """Its RaySampler's rays for set k ([V, H*W, 3]) and which miss the box by its own
    get_ray_limits_box test (``ray_end > ray_start``, as ImportanceRenderer.forward decides)."""
    import importlib

    math_utils = importlib.import_module(type(syn).__module__.rsplit(".", 1)[0] + ".utils.math_utils")
    st[f"rays_o_{k}"], st[f"rays_d_{k}"] = rays_o, rays_d
    start, end = math_utils.get_ray_limits_box(rays_o, rays_d, box_side_length=syn.rendering_kwargs["box_warp"])
    V, H = st[f"render_{k}"].shape[:2]
    st[f"miss_{k}"] = ~(end > start)[..., 0].reshape(V, H, -1)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--version", required=True, choices=sorted(COMMITS))
    ap.add_argument("--openlrm", required=True, help="OpenLRM checkout (3108b69 for 1.1, tag v1.0.0 for 1.0)")
    ap.add_argument("--out", required=True, help="fixture folder to (re)write")
    args = ap.parse_args(argv)

    sys.path.insert(0, os.path.abspath(args.openlrm))
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    torch.use_deterministic_algorithms(True)
    versions = common_versions(("transformers", "huggingface_hub", "accelerate", "safetensors"))
    for mod, want in LIBS[args.version].items():
        if versions.get(mod) != want:
            raise SystemExit(f"OpenLRM {args.version} is recorded with {mod}=={want}; this environment has "
                             f"{versions.get(mod)}")
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    build, run = (_build_v11, _run_v11) if args.version == "1.1" else (_build_v10, _run_v10)
    model, settings = build(out)
    st: dict = {}
    run(model, st)

    d = st["density_grid"].numpy()
    level = MESH_LEVEL[args.version]
    st = to_numpy(st)
    miss = {f"render_{k}": float(st[f"miss_{k}"].mean()) for k in range(len(VIEWS))}
    meta = {
        "original": "3DTopia/OpenLRM",
        "version": args.version,
        "commit": COMMITS[args.version],
        "checkout_head": commit(args.openlrm),
        "versions": versions,
        "generator": "tools/parity/openlrm.py",
        "device": "cpu", "dtype": "float32",
        "eager": "TORCH_COMPILE_DISABLE=1 (OpenLRM's torch.compile decorators off), XFORMERS_DISABLED=1",
        "sampling": "zero stratified jitter, sample_pdf(det=True)",
        "source_size": int(st["image_u8"].shape[-1]),
        "settings": settings,
        "render": {"focal": FOCAL, "views": [{"n_views": n, "radius": r, "height": h, "resolution": res,
                                               "views_per_call": c} for n, r, h, res, c in VIEWS]},
        "mesh": {"resolution": MC_RES, "threshold": level,
                 "grid_fraction_above": float((d > level).mean())},
        "miss_fraction": miss,
    }
    write_fixture(out, st, meta)
    sizes = {n: os.path.getsize(os.path.join(out, n)) for n in os.listdir(out) if os.path.isfile(os.path.join(out, n))}
    print(json.dumps({"out": out, "sizes": sizes, "miss_fraction": miss,
                      "grid_fraction_above": meta["mesh"]["grid_fraction_above"],
                      "opacity": [[float(np.quantile(st[f"opacity_{k}"], q)) for q in (0.1, 0.5, 0.9)]
                                  for k in range(len(VIEWS))]}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
