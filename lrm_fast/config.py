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
triposr    TripoSR (stabilityai/TripoSR): DINO ViT-B/16 at 512 px, 16 x 1024 blocks of the ``triposr``
           decoder block (self-then-cross, GEGLU, no camera input), 40-channel triplane, 10-layer SiLU
           MLP (~420M), the ``triposr`` render sampler. Loading its checkpoint:
           ``lrm_fast.load_model("path/to/TripoSR")`` (io/triposr.py).

Variants: ``DecoderConfig.block`` and ``RenderConfig.sampler`` (``"openlrm"`` | ``"triposr"``) each
name one implementation that owns its parts; a field that the chosen variant does not read must keep
its neutral value (the dataclasses raise a one-line ValueError at construction). Config dicts written
before the variants are mapped by ``upgrade_config_dict``.
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
    # how a file becomes the encoder input (PREPROCESS below): "default" (this project's),
    # "triposr" / "openlrm" (the originals' own programs); None: by the family (``preprocess_for``)
    preprocess: str | None = None
    freeze: bool = False
    overrides: dict = _field(default_factory=dict)
    # LayerNorm eps of every norm in the ViT; None = timm's (1e-6). Hugging Face ViTs (DINO v1 as
    # TripoSR and OpenLRM v1.0 load it) use their config's ``layer_norm_eps`` (1e-12).
    norm_eps: float | None = None

    def __post_init__(self):
        if self.preprocess is not None and self.preprocess not in PREPROCESS:
            raise ValueError(f"unknown encoder preprocess {self.preprocess!r} ({', '.join(PREPROCESS)})")


# how a file becomes the encoder input (lrm_fast.io.images.prepare)
PREPROCESS = ("default", "triposr", "openlrm")


def preprocess_for(cfg: "LRMConfig") -> str:
    """The preprocessing a model's checkpoints were made with: ``cfg.encoder.preprocess`` when set
    (a config may name one), else by the family: TripoSR's block -> ``"triposr"``, an
    OpenLRM checkpoint (``lrm_fast.io.openlrm`` names its config ``openlrm-<version>-<width>``;
    its architecture is otherwise the small/base/large preset's, which our own training uses with
    ``"default"``) -> ``"openlrm"``, anything else -> ``"default"``."""
    if cfg.encoder.preprocess is not None:
        return cfg.encoder.preprocess
    if cfg.decoder.block == "triposr":
        return "triposr"
    if str(cfg.name).startswith("openlrm-"):
        return "openlrm"
    return "default"


BLOCKS = ("openlrm", "triposr")
SAMPLERS = ("openlrm", "triposr")


def _unread(section: str, variant: str, obj, defaults: dict) -> None:
    """One-line ValueError for any field in ``defaults`` that ``obj`` sets to another value: the
    chosen variant does not read it, so a non-default value would be silently ignored."""
    for name, default in defaults.items():
        if getattr(obj, name) != default:
            raise ValueError(f"{section}.{name}={getattr(obj, name)!r} is not read by {variant} "
                             f"(it must be {default!r})")


@dataclass
class DecoderConfig:
    """Image-to-triplane transformer. ``block`` picks the variant; each owns its parts
    (``model/decoder.py``):

    * ``"openlrm"`` (OpenLRM ``TransformerDecoder`` with ``cond_mod`` blocks): cross-attention, then
      self-attention, then a GELU MLP, each after an adaLN LayerNorm modulated by the camera
      embedding; a final LayerNorm; attention biases per ``attn_bias``.
    * ``"triposr"`` (TripoSR ``Transformer1D``): ``x + proj_out(blocks(proj_in(GroupNorm(x))))`` with
      ``in_norm_groups`` groups, no final LayerNorm; blocks run self-attention, then cross-attention,
      then a GEGLU MLP, each after a plain LayerNorm (no camera input); q/k/v without bias, the
      attention output Linear with one.

    ``attn_bias`` is read only by ``openlrm``, ``in_norm_groups`` only by ``triposr`` (required there).
    """

    dim: int = 768
    layers: int = 12
    heads: int = 12
    mlp_ratio: float = 4.0
    eps: float = 1e-6          # LayerNorm eps of every norm in the blocks (OpenLRM 1e-6, TripoSR 1e-5)
    block: str = "openlrm"     # "openlrm" | "triposr" (see above)
    attn_bias: bool = False    # openlrm: nn.MultiheadAttention(bias=False)
    in_norm_groups: int = 0    # triposr: GroupNorm groups of the Transformer1D input norm (TripoSR 32)
    grad_checkpointing: bool = False

    def __post_init__(self):
        if self.block not in BLOCKS:
            raise ValueError(f"unknown decoder block {self.block!r} ({', '.join(BLOCKS)})")
        if self.block == "openlrm":
            _unread("decoder", "block 'openlrm'", self, {"in_norm_groups": 0})
        else:
            _unread("decoder", "block 'triposr'", self, {"attn_bias": False})
            if self.in_norm_groups <= 0 or self.dim % self.in_norm_groups:
                raise ValueError(f"decoder.in_norm_groups={self.in_norm_groups!r}: block 'triposr' needs a "
                                 f"positive number of GroupNorm groups dividing dim {self.dim}")


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
    """Volume rendering. ``sampler`` picks how each ray is sampled (``render/renderer.py``):

    * ``"openlrm"`` (OpenLRM ``ImportanceRenderer`` + ``MipRayMarcher2``): stratified samples in the
      box, then (``importance``) as many importance samples, compositing over midpoints of adjacent
      samples (``midpoint``); empty-space skipping (``skip_empty``, ``occupancy_*``) for inference.
    * ``"triposr"`` (TripoSR's marcher): S samples at the midpoints of S equal bins of [near, far]
      (jittered inside their bins when training), every sample with delta = 1 / S (TripoSR's quirk:
      not scaled by far - near), none dropped, no midpoint averaging; its ray-box test intersects
      rays with the box shrunk by (1 - ``box_shrink``) and counts rays with far - near <= ``min_span``
      as misses.

    Empty-space skipping (``skip_empty``, ``occupancy_*``) is read by both: ``openlrm`` skips with
    ``render/skipping.py``'s ``SkippingMarcher``, ``triposr`` with its ``UniformSkippingMarcher``.

    A field that the chosen sampler does not read must keep its neutral value (``__post_init__``
    raises otherwise): ``importance`` and ``midpoint`` (True) belong to ``openlrm``; ``box_shrink`` and
    ``min_span`` (0) to ``triposr``.
    """

    samples_per_ray: int = 96  # openlrm: half stratified, half importance
    box_min: float = -1.0
    box_max: float = 1.0
    background: float = 1.0    # white, as OpenLRM's inference
    mesh_threshold: float = 3.0
    mesh_resolution: int = 384
    sampler: str = "openlrm"   # "openlrm" | "triposr" (see above)
    # openlrm sampler only
    importance: bool = True
    midpoint: bool = True      # OpenLRM averages adjacent samples (MipRayMarcher2)
    # Empty-space skipping (both samplers; field/occupancy.py, render/skipping.py; docs/readme/bench.md has the
    # measurements): Reconstruction.render renders through a cached occupancy grid of
    # occupancy_resolution^3 cells unless skip_empty is False or render(exact=True); occupancy_tau is
    # the optical depth of the empty space a ray may lose (a pixel moves by about that much at most).
    # None (default): on (set at construction; configs of the uniform sampler written before it could
    # skip say False).
    skip_empty: bool | None = None
    occupancy_resolution: int = 64
    occupancy_tau: float = 1e-2
    # by default (render(exact=None)) skip only where the grid leaves at most this fraction of its
    # cells occupied: on the demo model (90% occupied: a trained fog) skipping measured slower than
    # the exact render, on the fitted base field (14%) faster (docs/readme/bench.md)
    skip_max_occupied: float = 0.5
    # triposr sampler only (TripoSR: 1e-3 and 0.01)
    box_shrink: float = 0.0
    min_span: float = 0.0

    @property
    def ray_path(self) -> float | None:
        """The most a ray's sample deltas add up to where the sampler fixes it, for the occupancy rule
        (``OccupancyGrid.sigma_skip``): 1 for ``triposr`` (S deltas of 1 / S, whatever the ray's
        length); None for ``openlrm``, whose deltas are world lengths (the box diagonal bounds them)."""
        return 1.0 if self.sampler == "triposr" else None

    def __post_init__(self):
        if self.sampler not in SAMPLERS:
            raise ValueError(f"unknown render sampler {self.sampler!r} ({', '.join(SAMPLERS)})")
        if self.skip_empty is None:
            self.skip_empty = True
        if self.sampler == "openlrm":
            _unread("render", "sampler 'openlrm'", self, {"box_shrink": 0.0, "min_span": 0.0})
        else:
            _unread("render", "sampler 'triposr'", self, {"importance": True, "midpoint": True})


@dataclass
class CameraConfig:
    """Camera feature: ``"principle"`` = 3x4 c2w + fx,fy,cx,cy (16, OpenLRM);
    ``"paper"`` = 4x4 extrinsics + fx,fy,cx,cy (20, the LRM paper). ``feature`` and ``embed_dim``
    are read only by the ``openlrm`` decoder block (the one with a camera input, ``LRMConfig.uses_camera``);
    the source camera's pose and focal and ``front_azimuth`` place the views of every model."""

    feature: str = "principle"
    embed_dim: int = 1024
    source_distance: float = 2.0
    source_focal: float = 0.75     # normalized fx = fy of OpenLRM's default source camera
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

    def __post_init__(self):
        if self.decoder.block == "triposr":  # no camera input: the camera embedder is not built
            _unread("camera", "decoder block 'triposr' (no camera input)", self.camera,
                    {"feature": "principle", "embed_dim": 1024})

    @property
    def uses_camera(self) -> bool:
        """Whether the model takes a source camera (the ``openlrm`` decoder block's adaLN input)."""
        return self.decoder.block == "openlrm"

    # ---- serialization -------------------------------------------------------------------
    @property
    def input_background(self) -> float:
        """The background an RGBA input is composited on before the encoder: the encoder's own
        ``input_background``, else the render background (inference, training and the benchmark alike)."""
        bg = self.encoder.input_background
        return float(self.render.background if bg is None else bg)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LRMConfig":
        """From a config dict (``config.json``); dicts written before the variants (flat TripoSR
        switches) are mapped first (``upgrade_config_dict``)."""
        d = upgrade_config_dict(d)
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
        """A copy with some fields of some sections changed: ``cfg.replace(render={"samples_per_ray": 64})``."""
        d = self.to_dict()
        for key, value in sections.items():
            if isinstance(value, dict):
                d[key] = {**d[key], **value}
            else:
                d[key] = value
        return LRMConfig.from_dict(d)


# The flat switches that described TripoSR before ``DecoderConfig.block`` / ``RenderConfig.sampler``
# (config.json files written until then carry them): their OpenLRM and TripoSR values.
_OLD_DECODER = {"modulation": (True, False), "self_first": (False, True), "mlp": ("gelu", "geglu"),
                "attn_out_bias": (False, True)}


def upgrade_config_dict(d: dict[str, Any]) -> dict[str, Any]:
    """A config dict in today's form, from one that may predate the variants (a copy; today's dicts
    come back unchanged).

    * decoder ``modulation`` / ``self_first`` / ``mlp`` / ``attn_out_bias`` (+ ``in_norm_groups``):
      all at OpenLRM's values -> ``block="openlrm"``, all at TripoSR's -> ``block="triposr"``; a mix
      was never a model either original computes: ValueError naming the switches.
    * camera ``use_camera``: must agree with the block (dropped); under ``triposr`` the camera
      ``feature`` / ``embed_dim``, which nothing read, go back to their defaults.
    * render ``uniform_bins`` -> ``sampler`` (``"triposr"`` when True); the switches the old code
      ignored on the path it took are set to their neutral values, so the model renders as before
      (uniform bins: ``importance``, ``midpoint`` -> True, ``skip_empty`` -> False; stratified:
      ``box_shrink``, ``min_span`` -> 0).
    * render ``chunk_rays`` (a fixed ray chunk) is dropped: the renderer sizes its chunks from the
      memory budget (``Renderer.max_memory``, the API's and CLI's ``max_memory``).
    """
    d = {k: (dict(v) if isinstance(v, dict) else v) for k, v in d.items()}
    dec, cam, ren = d.get("decoder"), d.get("camera"), d.get("render")
    old = {k: dec.pop(k) for k in list(_OLD_DECODER) if k in dec} if isinstance(dec, dict) else {}
    if isinstance(dec, dict) and "block" not in dec and old:
        groups = int(dec.get("in_norm_groups", 0) or 0)
        if all(old[k] == v[0] for k, v in _OLD_DECODER.items() if k in old) and groups == 0:
            dec["block"] = "openlrm"
        elif all(k in old and old[k] == v[1] for k, v in _OLD_DECODER.items()) and groups > 0:
            dec["block"] = "triposr"
        else:
            raise ValueError(f"config decoder switches {dict(sorted(old.items()))}, in_norm_groups={groups} match no "
                             "decoder block: 'openlrm' is modulation=True, self_first=False, mlp='gelu', "
                             "attn_out_bias=False, in_norm_groups=0; 'triposr' is modulation=False, self_first=True, "
                             "mlp='geglu', attn_out_bias=True, in_norm_groups>0")
    elif old:
        raise ValueError(f"config decoder has block={dec['block']!r} and the old switches {sorted(old)}: drop them")
    block = dec.get("block", "openlrm") if isinstance(dec, dict) else "openlrm"
    if isinstance(cam, dict) and "use_camera" in cam:
        if bool(cam.pop("use_camera")) != (block == "openlrm"):
            raise ValueError(f"config camera.use_camera disagrees with decoder block {block!r} "
                             "(openlrm takes a camera, triposr does not)")
        if block == "triposr":
            cam.pop("feature", None)
            cam.pop("embed_dim", None)
    if isinstance(ren, dict):
        ren.pop("chunk_rays", None)
    if isinstance(ren, dict) and "uniform_bins" in ren:
        uniform = bool(ren.pop("uniform_bins"))
        if "sampler" in ren:
            raise ValueError("config render has both sampler and the old uniform_bins: drop uniform_bins")
        ren["sampler"] = "triposr" if uniform else "openlrm"
        if uniform:
            ren.update(importance=True, midpoint=True, skip_empty=False)
        else:
            ren.update(box_shrink=0.0, min_span=0.0)
    return d


def _tiny() -> dict:
    return dict(
        name="tiny",
        encoder=dict(kind="dinov2", timm_name="vit_small_patch14_reg4_dinov2", image_size=28,
                     feat_dim=32, overrides=dict(embed_dim=32, depth=1, num_heads=2)),
        decoder=dict(dim=32, layers=1, heads=2),
        triplane=dict(low_res=4, high_res=8, channels=8),
        field=dict(hidden=16),
        render=dict(samples_per_ray=8, mesh_resolution=32),
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
        decoder=dict(dim=1024, layers=16, heads=16, eps=1e-5, block="triposr", in_norm_groups=32),
        triplane=dict(channels=40, plane_layout="triposr"),
        field=dict(hidden=64, layers=10, activation="silu", density_activation="exp",
                   rgb_activation="sigmoid", coord_scale=1 / 0.87),
        render=dict(samples_per_ray=128, sampler="triposr",
                    box_min=-0.87, box_max=0.87, background=1.0, mesh_threshold=25.0, mesh_resolution=256,
                    box_shrink=1e-3, min_span=0.01),
        camera=dict(source_distance=1.9, source_focal=0.5 / math.tan(math.radians(20.0)),
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
        render=dict(samples_per_ray=32, mesh_resolution=128),
        camera=dict(embed_dim=192),
    )


PRESETS = {"tiny": _tiny, "demo": _demo, "small": _small, "base": _base, "large": _large, "paper": _paper,
           "triposr": _triposr}
