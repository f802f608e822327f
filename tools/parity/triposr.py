"""Record what TripoSR's own code computes, stage by stage, for the parity tests (tests/parity/test_triposr.py).

    PYTHONPATH=<site-packages with transformers==4.35.0 omegaconf einops>:<TripoSR checkout> \\
        python tools/parity/triposr.py --triposr <TripoSR checkout at d26e331> --out tests/parity/fixtures/triposr

This script is ours; it imports TripoSR's modules from the checkout named on the command line and
never copies their code. It

1. writes a small TripoSR checkpoint in TripoSR's own layout: ``config.yaml`` (the released file's
   keys and class paths, small sizes), ``model.ckpt`` (a plain ``state_dict`` of ``tsr.system.TSR``)
   and the ViT ``config.json`` the yaml names (``vit/config.json``: a Hugging Face ``ViTConfig``;
   the released model names ``facebook/dino-vitb16`` on the hub);
2. fills every weight from a seeded generator at scales chosen so that each stage is sensitive
   (see ``_synthetic_weights``);
3. loads that folder back with ``TSR.from_pretrained`` and runs TripoSR's code: its image
   preprocessor, image tokenizer (HF ``ViTModel`` with ``interpolate_pos_encoding=True``, as the
   pinned transformers 4.35 computes it), backbone, post-processor, ``renderer.query_triplane`` at
   points and on its marching-cubes grid (``MarchingCubeHelper.grid_vertices``, as its
   ``extract_mesh`` queries it), and its renderer on ``get_spherical_cameras`` rays (some views far
   enough away that rays miss the box);
4. saves every stage in ``stages.npz`` (float32) and pins versions and settings in ``meta.json``.

Nothing is downloaded: ``hf_hub_download`` in TripoSR's tokenizer is pointed at the local ViT config,
and modules that TripoSR imports only for features not used here (``rembg``; ``torchmcubes``, whose
marching cubes we replace by scikit-image on the recorded grid) are stubbed when missing.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import commit, stub_missing, synthetic_weights, to_numpy, versions, write_fixture  # noqa: E402

TRIPOSR_COMMIT = "d26e33181947bbbc4c6fc0f5734e1ec6c080956e"  # d26e331

# The fixture's model: the released config.yaml's structure at test size. The ViT has 4 heads of 16
# (not width / 64 = 1) and LayerNorm eps 1e-12; its position grid (32 px / 8 = 4) is interpolated to
# the 48 px input (6 x 6), so the tokenizer's head count, eps and transformers 4.35's
# ``scale_factor=(g + 0.1) / G`` interpolation all show in the tokens.
COND_SIZE = 48
VIT = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, image_size=32,
           patch_size=8, num_channels=3, layer_norm_eps=1e-12, hidden_act="gelu", qkv_bias=True,
           hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
VIT_NAME = "vit"   # config.yaml's pretrained_model_name_or_path: a folder next to it with config.json
PLANE = 4          # token grid per plane -> 8 x 8 planes
WIDTH = 64         # 4 heads x 16
CHANNELS = 8       # triplane channels
RADIUS = 0.87
SAMPLES = 64       # samples per ray (the released model: 128)
MC_RES = 20        # marching-cubes grid for the mesh stage
VIEWS = [          # (n_views, elevation, distance, resolution): TripoSR's get_spherical_cameras arguments
    (4, 15.0, 1.9, 16),    # run.py's distance 1.9 and fov 40: every ray hits the box. Not 3 views: with
                           # n_views == 3 its torch.cross(lookat, up) (no dim) crosses over the views axis
    (4, -30.0, 3.6, 24),   # farther away: ~23% of the rays miss the box (background), 16 of them
                           # only graze it (0 < far - near <= 0.01: misses for TripoSR, not for a plain slab test)
]
FOVY = 40.0

CONFIG_YAML = f"""\
cond_image_size: {COND_SIZE}

image_tokenizer_cls: tsr.models.tokenizers.image.DINOSingleImageTokenizer
image_tokenizer:
  pretrained_model_name_or_path: "{VIT_NAME}"

tokenizer_cls: tsr.models.tokenizers.triplane.Triplane1DTokenizer
tokenizer:
  plane_size: {PLANE}
  num_channels: {WIDTH}

backbone_cls: tsr.models.transformer.transformer_1d.Transformer1D
backbone:
  in_channels: ${{tokenizer.num_channels}}
  num_attention_heads: 4
  attention_head_dim: 16
  num_layers: 2
  cross_attention_dim: {VIT["hidden_size"]}
  norm_num_groups: 8

post_processor_cls: tsr.models.network_utils.TriplaneUpsampleNetwork
post_processor:
  in_channels: {WIDTH}
  out_channels: {CHANNELS}

decoder_cls: tsr.models.network_utils.NeRFMLP
decoder:
  in_channels: {3 * CHANNELS}
  n_neurons: 32
  n_hidden_layers: 3
  activation: silu

renderer_cls: tsr.models.nerf_renderer.TriplaneNeRFRenderer
renderer:
  radius: {RADIUS}
  feature_reduction: concat
  density_activation: exp
  density_bias: -1.0
  num_samples_per_ray: {SAMPLES}
"""


def _synthetic_weights(model: torch.nn.Module, seed: int = 1234) -> None:
    """Every parameter from N(0, 1) x a per-kind scale (seeded; independent of TripoSR's init).

    Scales: linear / conv weights 1 / sqrt(fan_in) (activations stay O(1) through the stack), except
    the backbone's attention queries and keys at 2.5 / sqrt(fan_in), so attention logits are O(5) and
    a missing 1/sqrt(d), a wrong head split or a wrong head count shows; biases 0.2; norm weights
    1 + 0.3 N, norm biases 0.2 N (an ignored affine shows); ViT position embedding and CLS at 1
    (comparable with the patch embedding, so its interpolation shows); the triplane tokens at 1; the
    NeRF MLP's last layer is scaled and biased so that the density exp(x - 1) spans about 0.05 .. 300
    inside the box (renders neither empty nor opaque, the mesh level crosses the box) and colors stay
    away from saturation."""
    def matrix(name, leaf, p, n):
        fan_in = p[0].numel()
        s = 1 / math.sqrt(fan_in)
        if ".attn" in name and (".to_q." in name or ".to_k." in name):
            s *= 2.5
        return s * n

    synthetic_weights(model, seed, is_norm=lambda name, leaf, p: any(s in name for s in ("norm", "layernorm"))
                      and p.dim() == 1, is_bias=lambda leaf: leaf == "bias",
                      is_embedding=lambda name, leaf: name.endswith(("cls_token", "position_embeddings"))
                      or name == "tokenizer.embeddings", matrix=matrix)
    with torch.no_grad():
        # the triplanes at about +-5 instead of +-15 (their fp32 rounding noise, inherited from the
        # backbone's +-10 tokens, shrinks with them), the NeRF MLP's first layer 3x to compensate
        model.post_processor.upsample.weight /= 3.0
        model.post_processor.upsample.bias /= 3.0
        model.decoder.layers[0].weight *= 3.0
        last = model.decoder.layers[-1]
        last.weight[0] *= 2.0           # density logit spread
        last.bias[0] = 2.5              # density exp(x + 2.5 - 1) ~ 4.5 at x = 0
        last.weight[1:] *= 1.5


def _image() -> np.ndarray:
    """A deterministic 48 x 48 RGB uint8 image: a colored disc on gray with a gradient and a stripe."""
    S = COND_SIZE
    y, x = np.mgrid[0:S, 0:S].astype(np.float64)
    c = (S - 1) / 2
    r = np.hypot(x - c, y - c) / S
    img = np.full((S, S, 3), 0.5)
    disc = r < 0.33
    img[disc, 0] = 0.2 + 0.6 * (x[disc] / S)
    img[disc, 1] = 0.8 - 0.5 * (y[disc] / S)
    img[disc, 2] = 0.3 + 0.4 * np.sin(x[disc] / 3.0) ** 2
    img[(np.abs(x - y) < 2) & disc] = [0.95, 0.9, 0.1]
    return np.clip(np.round(img * 255), 0, 255).astype(np.uint8)


def _points(g: torch.Generator) -> torch.Tensor:
    """Field query points (world, TripoSR's frame): inside the radius-0.87 box, a few just outside
    (grid_sample pads with zeros there) and exactly on the box faces."""
    inside = (torch.rand(200, 3, generator=g, dtype=torch.float64) * 2 - 1) * RADIUS * 0.999
    outside = (torch.rand(24, 3, generator=g, dtype=torch.float64) * 2 - 1) * RADIUS * 1.15
    faces = (torch.rand(8, 3, generator=g, dtype=torch.float64) * 2 - 1) * RADIUS
    faces[torch.arange(8), torch.arange(8) % 3] = RADIUS * torch.tensor([1.0, -1.0], dtype=torch.float64).repeat(4)
    return torch.cat([inside, outside, faces]).float()


def _render_view(model, scene_code, rays_o, rays_d) -> torch.Tensor:
    """TripoSR's renderer on one view ``[H, W, 3]`` rays -> (rgb ``[H, W, 3]``, miss mask ``[H, W]``).

    At d26e331 ``TriplaneNeRFRenderer._forward`` keeps only the valid rays' ``t_near``/``t_far`` but
    not their origins and directions, so any call with a ray that misses the box raises (a shape
    error; one missed ray alone fails in ``NeRFMLP.forward`` on zero points). Its code states what a
    missed ray gets: ``comp_rgb``/``opacity`` start at 0 and ``comp_rgb += 1 - opacity``, i.e. white.
    So: the rays that hit (by TripoSR's own ``rays_intersect_bbox``) go through its renderer in one
    call, the missed ones get that background, and the mask says which pixels are which."""
    from tsr.utils import rays_intersect_bbox

    H, W, _ = rays_o.shape
    o, d = rays_o.reshape(-1, 3), rays_d.reshape(-1, 3)
    _, _, valid = rays_intersect_bbox(o, d, model.renderer.cfg.radius)
    if valid.all():
        return model.renderer(model.decoder, scene_code, rays_o, rays_d), ~valid.reshape(H, W)
    out = torch.ones(o.shape[0], 3)
    idx = valid.nonzero()[:, 0]
    if idx.numel():
        out[idx] = model.renderer(model.decoder, scene_code, o[idx], d[idx])
    return out.reshape(H, W, 3), ~valid.reshape(H, W)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--triposr", required=True, help="TripoSR checkout (commit d26e331)")
    ap.add_argument("--out", required=True, help="fixture folder to (re)write")
    args = ap.parse_args(argv)

    sys.path.insert(0, os.path.abspath(args.triposr))
    # TripoSR imports rembg (background removal) and torchmcubes (marching cubes) at module level;
    # neither is used here
    stub_missing(("rembg", "torchmcubes"), ("remove", "new_session", "marching_cubes"))
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    torch.use_deterministic_algorithms(True)

    import transformers
    from transformers import ViTConfig

    import tsr.models.tokenizers.image as tsr_image
    from tsr.models.isosurface import MarchingCubeHelper
    from tsr.system import TSR
    from tsr.utils import get_spherical_cameras, rays_intersect_bbox, scale_tensor

    if transformers.__version__ != "4.35.0":
        raise SystemExit(f"TripoSR pins transformers==4.35.0; this environment has {transformers.__version__}")

    out = os.path.abspath(args.out)
    os.makedirs(os.path.join(out, VIT_NAME), exist_ok=True)
    with open(os.path.join(out, "config.yaml"), "w") as f:
        f.write(CONFIG_YAML)
    ViTConfig(**VIT).save_pretrained(os.path.join(out, VIT_NAME))

    def local_hub(repo_id, filename, **kw):  # TripoSR's tokenizer asks the hub for the ViT config
        path = os.path.join(out, repo_id, filename)
        if not os.path.exists(path):
            raise FileNotFoundError(f"no local {filename} for {repo_id!r} at {path}")
        return path
    tsr_image.hf_hub_download = local_hub

    # 1-2: build TripoSR's model from the yaml, synthetic weights, write model.ckpt
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(os.path.join(out, "config.yaml"))
    OmegaConf.resolve(cfg)
    torch.manual_seed(0)
    model = TSR(cfg)
    _synthetic_weights(model)
    torch.save(model.state_dict(), os.path.join(out, "model.ckpt"))

    # 3: TripoSR's own loader and forward
    model = TSR.from_pretrained(out, config_name="config.yaml", weight_name="model.ckpt").eval()
    st: dict[str, np.ndarray] = {}
    grazing: dict[str, int] = {}
    img = _image()
    with torch.no_grad():
        rgb_cond = model.image_processor(img, model.cfg.cond_image_size)[:, None]   # [1, 1, S, S, 3]
        st["image"] = rgb_cond[:, 0].permute(0, 3, 1, 2).contiguous()                 # [1, 3, S, S]
        from einops import rearrange

        tok = model.image_tokenizer(rearrange(rgb_cond, "B Nv H W C -> B Nv C H W", Nv=1))
        tok = rearrange(tok, "B Nv C Nt -> B (Nv Nt) C", Nv=1)
        st["tokens"] = tok                                                            # [1, 1 + N, C_vit]
        triplane_tokens = model.backbone(model.tokenizer(1), encoder_hidden_states=tok)
        st["backbone"] = triplane_tokens                                              # [1, D, 3 h w]
        scene_codes = model.post_processor(model.tokenizer.detokenize(triplane_tokens))
        st["scene_codes"] = scene_codes                                               # [1, 3, C, H, W]
        ref = model(img, device="cpu")                          # the whole forward in one call
        if not torch.equal(ref, scene_codes):
            raise SystemExit("TSR.forward differs from the stage-by-stage run")

        g = torch.Generator().manual_seed(7)
        pts = _points(g)
        q = model.renderer.query_triplane(model.decoder, pts, scene_codes[0])
        st["points"] = pts
        st["point_density_raw"] = q["density"][..., 0]
        st["point_features"] = q["features"]
        st["point_density"] = q["density_act"][..., 0]
        st["point_color"] = q["color"]

        helper = MarchingCubeHelper(MC_RES)
        grid_pts = scale_tensor(helper.grid_vertices, helper.points_range, (-RADIUS, RADIUS))
        dens = model.renderer.query_triplane(model.decoder, grid_pts, scene_codes[0])["density_act"]
        st["density_grid"] = dens.reshape(MC_RES, MC_RES, MC_RES)

        for k, (n, elev, dist, res) in enumerate(VIEWS):
            rays_o, rays_d = get_spherical_cameras(n, elev, dist, FOVY, res, res)
            st[f"rays_o_{k}"], st[f"rays_d_{k}"] = rays_o, rays_d                     # [V, H, W, 3]
            views = [_render_view(model, scene_codes[0], rays_o[i], rays_d[i]) for i in range(n)]
            st[f"render_{k}"] = torch.stack([v[0] for v in views])                    # [V, H, W, 3]
            st[f"miss_{k}"] = torch.stack([v[1] for v in views])                      # [V, H, W] bool
            tn, tf, _ = rays_intersect_bbox(rays_o.reshape(-1, 3), rays_d.reshape(-1, 3), RADIUS, valid_thresh=0.0)
            span = (tf - tn)[:, 0]
            grazing[f"render_{k}"] = int(((span > 0) & (span <= 0.01)).sum())

    d = st["density_grid"]
    level = float(np.round(np.quantile(d.numpy(), 0.6), 1))
    st = to_numpy(st)
    meta = {
        "original": "VAST-AI-Research/TripoSR",
        "commit": TRIPOSR_COMMIT,
        "checkout_head": commit(args.triposr),
        "versions": versions(("transformers", "omegaconf", "einops")),
        "generator": "tools/parity/triposr.py",
        "device": "cpu", "dtype": "float32",
        "vit_config": os.path.join(VIT_NAME, "config.json"),
        "cond_image_size": COND_SIZE,
        "render": {"fovy_deg": FOVY,
                   "views": [{"n_views": n, "elevation_deg": e, "distance": dist, "resolution": res}
                             for n, e, dist, res in VIEWS]},
        "mesh": {"resolution": MC_RES, "threshold": level},
        "miss_fraction": {f"render_{k}": float(st[f"miss_{k}"].mean()) for k in range(len(VIEWS))},
        "grazing_rays": grazing,
    }
    write_fixture(out, st, meta)
    sizes = {n: os.path.getsize(os.path.join(out, n)) for n in ("model.ckpt", "stages.npz")}
    print(json.dumps({"out": out, "sizes": sizes, "mesh_threshold": level, "miss_fraction": meta["miss_fraction"],
                      "grazing_rays": grazing}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
