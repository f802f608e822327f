"""Configs and named presets.

Every size of the model is a plain dataclass so it round-trips through JSON (our checkpoint
format stores it in ``config.json``). Presets:

=========  =====================================================================================
demo       the shipped demo model (``lrm_fast/assets/demo``), ~3.1M params, trained by this project on
           its synthetic primitives at 64 px on a CPU (see its MODEL_CARD.md).
tiny       test-sized model: a 1-layer 32-wide ViT, 1-layer decoder; forward+backward of a 32x32
           render runs on a CPU in about a second. Random weights only.
small      OpenLRM v1.1 ``openlrm-mix-small-1.1``: DINOv2 ViT-S/14 + 4 registers at 224 px,
           12 layers x 512 wide x 8 heads, triplane 32 -> 64 with 32 channels (~111M params).
base       OpenLRM v1.1 ``openlrm-mix-base-1.1``: DINOv2 ViT-B/14 reg4 at 336 px, 12 x 768 x 12,
           triplane channels 48 (~260M).
large      OpenLRM v1.1 ``openlrm-mix-large-1.1``: DINOv2 ViT-B/14 reg4 at 448 px,
           16 x 1024 x 16, triplane channels 80, 128 samples per ray (~452M).
paper      The LRM paper (Hong et al. 2023): DINO ViT-B/16 at 512 px, 16 x 1024 x 16,
           triplane 32 -> 64 with 80 channels, 20-d camera feature (4x4 extrinsics + fx,fy,cx,cy),
           128 samples per ray (~451M).
triposr    TripoSR (stabilityai/TripoSR): DINO ViT-B/16 at 512 px, 16 x 1024 self-then-cross blocks
           with GEGLU, no camera input, 40-channel triplane, 10-layer SiLU MLP (~420M). Loading its
           checkpoint: ``lrm_fast.load_model("path/to/TripoSR")`` (io/checkpoint.py).
=========  =====================================================================================

Sizes follow OpenLRM's released configs (``configs/train-sample.yaml`` and the model cards):
camera embedding 1024, triplane low-res 32, high-res 64, NeRF MLP 4 layers x 64 wide (ReLU).
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field as _field
from typing import Any


@dataclass
class EncoderConfig:
    """Image encoder (timm ViT).

    ``kind``: ``"dino"`` (DINO v1, ViT-B/16; ImageNet mean/std normalization, as OpenLRM v1.0 and
    the paper) or ``"dinov2"`` (DINOv2 with 4 register tokens; OpenLRM v1.1 feeds it [0, 1] RGB
    with *no* normalization, and drops the register tokens from its output).
    ``overrides``: extra ``timm.create_model`` kwargs (embed_dim, depth, ...) used by ``tiny``.
    """

    kind: str = "dinov2"
    timm_name: str = "vit_base_patch14_reg4_dinov2"
    image_size: int = 336
    feat_dim: int = 768
    foreground_ratio: float = 0.8  # object's bbox side / image side after recentering (OpenLRM
                                   # recenter border 0.2; TripoSR 0.85); 0 = no recentering
    input_background: float | None = None  # RGBA inputs are composited on this (None: the render
                                           # background; TripoSR: gray 0.5, though it renders on white)
    freeze: bool = False
    overrides: dict = _field(default_factory=dict)
    # LayerNorm eps of every norm in the ViT; None = timm's (1e-6). Hugging Face ViTs (DINO v1 as
    # TripoSR and OpenLRM v1.0 load it) use their config's ``layer_norm_eps`` (1e-12).
    norm_eps: float | None = None


@dataclass
class DecoderConfig:
    """Image-to-triplane transformer (OpenLRM ``TransformerDecoder`` with ``cond_mod`` blocks)."""

    dim: int = 768
    layers: int = 12
    heads: int = 12
    mlp_ratio: float = 4.0
    eps: float = 1e-6          # OpenLRM's LayerNorm eps (all norms of the decoder)
    attn_bias: bool = False    # OpenLRM: nn.MultiheadAttention(bias=False)
    # TripoSR-style switches (see io/checkpoint.py); OpenLRM values are the defaults.
    modulation: bool = True    # adaLN modulation by the camera embedding
    self_first: bool = False   # TripoSR runs self-attention before cross-attention
    mlp: str = "gelu"          # "gelu" (OpenLRM) or "geglu" (TripoSR)
    # TripoSR's Transformer1D wraps the blocks: x + proj_out(blocks(proj_in(GroupNorm(x)))) and has no
    # final LayerNorm. in_norm_groups > 0 turns that on (model/lrm.py); 0 = OpenLRM.
    in_norm_groups: int = 0
    attn_out_bias: bool = False  # TripoSR's attention output Linear has a bias (q/k/v do not)
    grad_checkpointing: bool = False


@dataclass
class TriplaneConfig:
    low_res: int = 32          # token grid per plane (3 * low_res^2 tokens)
    high_res: int = 64         # after the 2x2 stride-2 transposed conv
    channels: int = 48         # C of each plane
    # "openlrm": plane 2 indexed (u, v) = (z, y), as ops/triplane_mlp.py. "triposr": TripoSR samples
    # plane 2 at (y, z); the model transposes that plane once after upsampling (model/triplane.py).
    plane_layout: str = "openlrm"


@dataclass
class FieldConfig:
    """Triplane NeRF MLP (OpenLRM ``OSGDecoder``): concat 3 plane features -> MLP -> 1 + 3."""

    hidden: int = 64
    layers: int = 4            # number of Linear layers (OpenLRM: 4 => 3 hidden layers)
    activation: str = "relu"
    aggregate: str = "concat"  # "concat" (OpenLRM), "sum" or "mean"
    density_activation: str = "softplus"   # softplus(x - 1) (OpenLRM) or "exp" (TripoSR: exp(x - 1))
    density_bias: float = -1.0
    rgb_activation: str = "sigmoid_wide"   # sigmoid * 1.002 - 0.001 (OpenLRM) or "sigmoid" (TripoSR)
    coord_scale: float = 1.0   # field coordinate = world point * coord_scale (TripoSR: 1 / 0.87)


@dataclass
class RenderConfig:
    """Volume rendering (OpenLRM ``ImportanceRenderer`` + ``MipRayMarcher2``)."""

    samples_per_ray: int = 96  # half stratified, half importance (OpenLRM)
    importance: bool = True
    box_min: float = -1.0
    box_max: float = 1.0
    midpoint: bool = True      # OpenLRM averages adjacent samples (MipRayMarcher2); TripoSR does not
    background: float = 1.0    # white, as OpenLRM's inference
    chunk_rays: int = 16384
    mesh_threshold: float = 3.0
    mesh_resolution: int = 384
    # TripoSR's marcher: S samples at the midpoints of S equal bins of [near, far], every sample with
    # delta = 1 / S (TripoSR's quirk: not scaled by far - near), none dropped, no midpoint averaging.
    # renderer.py implements it when True (see docs/readme/api.md); False = OpenLRM's (stratified +
    # importance + MipRayMarcher2).
    uniform_bins: bool = False
    # TripoSR's ray-box test (uniform_bins only): it intersects rays with the box shrunk by
    # (1 - box_shrink) (1e-3) and counts rays with far - near <= min_span (0.01) as misses.
    box_shrink: float = 0.0
    min_span: float = 0.0
    # Empty-space skipping (render/occupancy.py; docs/readme/bench.md has the measurements):
    # Reconstruction.render renders through a cached occupancy grid of occupancy_resolution^3 cells
    # unless skip_empty is False or render(exact=True); occupancy_tau is the optical depth of the
    # empty space a ray may lose (a pixel moves by about that much at most).
    skip_empty: bool = True
    occupancy_resolution: int = 64
    occupancy_tau: float = 1e-2
    # by default (render(exact=None)) skip only where the grid leaves at most this fraction of its
    # cells occupied: on the demo model (90% occupied: a trained fog) skipping measured slower than
    # the exact render, on the fitted base field (14%) faster (docs/readme/bench.md)
    skip_max_occupied: float = 0.5


@dataclass
class CameraConfig:
    """Camera feature: ``"principle"`` = 3x4 c2w + fx,fy,cx,cy (16, OpenLRM);
    ``"paper"`` = 4x4 extrinsics + fx,fy,cx,cy (20, the LRM paper)."""

    feature: str = "principle"
    embed_dim: int = 1024
    source_distance: float = 2.0
    source_focal: float = 0.75     # normalized fx = fy of OpenLRM's default source camera
    use_camera: bool = True        # False for TripoSR (no camera conditioning)
    # azimuth (degrees, orbit_cameras convention) of the view the input image was taken from;
    # TripoSR's front camera sits on +x = our azimuth 90.
    front_azimuth: float = 0.0


@dataclass
class LRMConfig:
    name: str = "base"
    encoder: EncoderConfig = _field(default_factory=EncoderConfig)
    decoder: DecoderConfig = _field(default_factory=DecoderConfig)
    triplane: TriplaneConfig = _field(default_factory=TriplaneConfig)
    field: FieldConfig = _field(default_factory=FieldConfig)
    render: RenderConfig = _field(default_factory=RenderConfig)
    camera: CameraConfig = _field(default_factory=CameraConfig)

    # ---- serialization -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LRMConfig":
        kinds = {f.name: f.type for f in dataclasses.fields(cls)}
        sub = {"encoder": EncoderConfig, "decoder": DecoderConfig, "triplane": TriplaneConfig,
               "field": FieldConfig, "render": RenderConfig, "camera": CameraConfig}
        kwargs: dict[str, Any] = {}
        for key, value in d.items():
            if key not in kinds:
                raise ValueError(f"unknown LRMConfig key {key!r} (known: {sorted(kinds)})")
            if key in sub:
                known = {f.name for f in dataclasses.fields(sub[key])}
                bad = set(value) - known
                if bad:
                    raise ValueError(f"unknown {key} config keys {sorted(bad)} (known: {sorted(known)})")
                kwargs[key] = sub[key](**value)
            else:
                kwargs[key] = value
        return cls(**kwargs)

    @classmethod
    def preset(cls, name: str) -> "LRMConfig":
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
        return cls.from_dict(PRESETS[name]())

    def replace(self, **sections: dict) -> "LRMConfig":
        """A copy with some fields of some sections changed: ``cfg.replace(render={"chunk_rays": 4096})``."""
        d = self.to_dict()
        for key, value in sections.items():
            if isinstance(value, dict):
                d[key] = {**d[key], **value}
            else:
                d[key] = value
        return LRMConfig.from_dict(d)


def _tiny() -> dict:
    return dict(
        name="tiny",
        encoder=dict(kind="dinov2", timm_name="vit_small_patch14_reg4_dinov2", image_size=28,
                     feat_dim=32, overrides=dict(embed_dim=32, depth=1, num_heads=2)),
        decoder=dict(dim=32, layers=1, heads=2),
        triplane=dict(low_res=4, high_res=8, channels=8),
        field=dict(hidden=16),
        render=dict(samples_per_ray=8, mesh_resolution=32, chunk_rays=4096),
        camera=dict(embed_dim=32),
    )


def _small() -> dict:
    return dict(
        name="small",
        encoder=dict(kind="dinov2", timm_name="vit_small_patch14_reg4_dinov2", image_size=224,
                     feat_dim=384),
        decoder=dict(dim=512, layers=12, heads=8),
        triplane=dict(channels=32),
        render=dict(samples_per_ray=96),
    )


def _base() -> dict:
    return dict(
        name="base",
        encoder=dict(kind="dinov2", timm_name="vit_base_patch14_reg4_dinov2", image_size=336,
                     feat_dim=768),
        decoder=dict(dim=768, layers=12, heads=12),
        triplane=dict(channels=48),
        render=dict(samples_per_ray=96),
    )


def _large() -> dict:
    return dict(
        name="large",
        encoder=dict(kind="dinov2", timm_name="vit_base_patch14_reg4_dinov2", image_size=448,
                     feat_dim=768),
        decoder=dict(dim=1024, layers=16, heads=16),
        triplane=dict(channels=80),
        render=dict(samples_per_ray=128),
    )


def _paper() -> dict:
    return dict(
        name="paper",
        encoder=dict(kind="dino", timm_name="vit_base_patch16_224.dino", image_size=512,
                     feat_dim=768),
        decoder=dict(dim=1024, layers=16, heads=16),
        triplane=dict(channels=80),
        render=dict(samples_per_ray=128),
        camera=dict(feature="paper"),
    )


def _triposr() -> dict:
    """TripoSR (stabilityai/TripoSR ``config.yaml``): DINO ViT-B/16 at 512 px, Transformer1D 16 x 1024
    (16 heads x 64), triplane 32 -> 64 with 40 channels, 10-layer SiLU NeRF MLP, exp density,
    128 uniform samples in a radius-0.87 box, inputs on gray / renders on white, front camera on +x
    at 1.9, fov 40 (``tsr/models/nerf_renderer.py``, ``run.py``)."""
    return dict(
        name="triposr",
        encoder=dict(kind="dino", timm_name="vit_base_patch16_224.dino", image_size=512, feat_dim=768,
                     foreground_ratio=0.85, input_background=0.5, norm_eps=1e-12),
        decoder=dict(dim=1024, layers=16, heads=16, eps=1e-5, modulation=False, self_first=True,
                     mlp="geglu", in_norm_groups=32, attn_out_bias=True),
        triplane=dict(channels=40, plane_layout="triposr"),
        field=dict(hidden=64, layers=10, activation="silu", density_activation="exp",
                   rgb_activation="sigmoid", coord_scale=1 / 0.87),
        render=dict(samples_per_ray=128, importance=False, midpoint=False, uniform_bins=True,
                    box_min=-0.87, box_max=0.87, background=1.0, mesh_threshold=25.0, mesh_resolution=256,
                    box_shrink=1e-3, min_span=0.01),
        camera=dict(use_camera=False, source_distance=1.9, source_focal=0.5 / math.tan(math.radians(20.0)),
                    front_azimuth=90.0),
    )


def _demo() -> dict:
    # Trained on this project's synthetic data on a shared 2-core CPU (lrm_fast/assets/demo): 64 px
    # input, a narrow 3-layer ViT with 8 px patches, a 3-layer decoder on 3 x 8 x 8 tokens, a 16 px
    # triplane; sized so a training step takes about a second there.
    return dict(
        name="demo",
        encoder=dict(kind="dinov2", timm_name="vit_small_patch14_reg4_dinov2", image_size=64,
                     feat_dim=128, overrides=dict(embed_dim=128, depth=3, num_heads=4, patch_size=8),
                     # trained on un-recentered canonical renders: inference must not recenter either
                     foreground_ratio=0.0),
        decoder=dict(dim=192, layers=3, heads=4),
        triplane=dict(low_res=8, high_res=16, channels=32),
        field=dict(hidden=64),
        render=dict(samples_per_ray=32, mesh_resolution=128, chunk_rays=8192),
        camera=dict(embed_dim=192),
    )


PRESETS = {"tiny": _tiny, "demo": _demo, "small": _small, "base": _base, "large": _large, "paper": _paper,
           "triposr": _triposr}
