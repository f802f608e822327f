"""Training configuration (``lrm-fast train CONFIG``): one flat dataclass read from YAML or JSON.

``model`` is a preset name (``"demo"``, ``"tiny"``, ...) or a full ``LRMConfig`` dict;
``model_overrides`` changes sections of it (``{"render": {"samples_per_ray": 32}}``).
``batch_size`` is the *global* batch: with torchrun each of the ``W`` processes takes every W-th item,
so a run gives the same losses whatever ``W`` (when ``batch_size`` is divisible by it).
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any


@dataclass
class TrainConfig:
    # model
    model: Any = "demo"
    model_overrides: dict = field(default_factory=dict)
    init_from: str | None = None          # checkpoint folder to fine-tune from
    grad_checkpointing: bool = False      # decoder layers recomputed in backward
    freeze_encoder: bool = False
    backend: str = "auto"
    # data
    data_root: str = "data/synthetic"
    data_meta: str | None = None
    side_views: int = 3
    source_views: int | None = None       # source drawn from views 0..k-1 only (None: any view)
    source_size: int | None = None        # default: the encoder's image size
    render_size: int = 64                 # supervision resolution
    patch: int | None = 32                # random patch x patch crop per view (None: whole view)
    backgrounds: list = field(default_factory=lambda: [0.0, 0.5, 1.0])
    num_workers: int = 0
    # optimization
    batch_size: int = 8
    steps: int = 1000
    lr: float = 4e-4
    # lr multiplier per top-level module of the model ("field", "upsampler", "transformer", "encoder",
    # "camera_embedder", "pos_embed"); unnamed modules train at lr. {} = one lr for all (OpenLRM)
    lr_scale: dict = field(default_factory=dict)
    min_lr_ratio: float = 0.1
    warmup: int = 100
    weight_decay: float = 0.05
    betas: list = field(default_factory=lambda: [0.9, 0.95])
    grad_clip: float = 1.0
    # loss
    lpips_weight: float = 0.0
    lpips_net: str = "vgg"
    lpips_weights: str | None = None      # local torchvision backbone state dict
    lpips_random: bool = False            # random LPIPS backbone: tests only
    mask_weight: float = 0.0              # MSE(opacity, alpha); 0 = OpenLRM's loss
    chroma_weight: float = 0.0            # extra weight on the colour part of the MSE (losses.chroma_mse); 0 = OpenLRM's
    # rendering at train time
    train_samples_per_ray: int | None = None
    # retired (must stay None): the renderer now marches every ray of the step in one pass, chunked
    # only where the memory budget forces it (Renderer.max_memory), which is what this was set for
    train_chunk_rays: int | None = None
    jitter: bool = True
    # torch.compile the forward (image -> planes -> rendered rays) as one graph: CUDA graphs on a GPU
    # ("reduce-overhead"), inductor elsewhere (minutes of compiling on a small CPU). The jitter then
    # draws from the device's default generator, seeded per step (a generator object is not traced)
    compile: bool = False
    # precision / device
    precision: str = "auto"               # auto (bf16 on GPU, fp32 on CPU) | fp32 | bf16 | fp16
    device: str = "auto"
    threads: int | None = None            # torch CPU threads (1 is steadier on a shared, oversubscribed CPU)
    # bookkeeping
    out_dir: str = "runs/train"
    seed: int = 0
    log_every: int = 10
    ckpt_every: int = 200
    max_minutes: float | None = None      # stop (and checkpoint) after this wall time
    time_schedule: bool = False           # cosine LR over max_minutes of wall time instead of over steps
    export_dtype: str = "float32"         # dtype of the exported model/ folder
    progress: bool = True
    # held-out PSNR while training (lrm_fast/train/heldout.py): every eval_every steps (0 = never),
    # eval_objects objects of eval_recipe, eval_views side views each at eval_resolution px
    eval_every: int = 0
    eval_objects: int = 8
    eval_recipe: str = "demo"
    eval_views: int = 2
    eval_resolution: int = 64

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        bad = sorted(set(d) - known)
        if bad:
            raise ValueError(f"unknown train config keys {bad} (known: {sorted(known)})")
        cfg = cls(**d)
        cfg.validate()
        return cfg

    @classmethod
    def load(cls, path: str, overrides: dict | None = None) -> "TrainConfig":
        if not os.path.exists(path):
            raise FileNotFoundError(f"train config not found: {path}")
        with open(path) as f:
            text = f.read()
        if path.endswith((".yaml", ".yml")):
            import yaml

            d = yaml.safe_load(text) or {}
        else:
            d = json.loads(text)
        if not isinstance(d, dict):
            raise ValueError(f"{path}: a train config must be a mapping")
        d.update(overrides or {})
        return cls.from_dict(d)

    def validate(self) -> None:
        if self.train_chunk_rays is not None:
            raise ValueError("train_chunk_rays is retired: the renderer sizes its ray chunks from the memory "
                             "budget (max_memory); drop the key")
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            raise ValueError(f"precision must be auto|fp32|bf16|fp16, got {self.precision!r}")
        for k in ("batch_size", "steps", "render_size", "log_every", "ckpt_every"):
            if int(getattr(self, k)) < 1:
                raise ValueError(f"{k} must be >= 1, got {getattr(self, k)}")
        if self.eval_every < 0 or (self.eval_every and min(self.eval_objects, self.eval_views, self.eval_resolution) < 1):
            raise ValueError(f"eval_every must be >= 0 and eval_objects, eval_views, eval_resolution >= 1, got "
                             f"{self.eval_every}, {self.eval_objects}, {self.eval_views}, {self.eval_resolution}")
        if self.eval_every:
            from ..data.synthetic import EVAL_RECIPES

            if self.eval_recipe not in EVAL_RECIPES:
                raise ValueError(f"eval_recipe must be one of {list(EVAL_RECIPES)}, got {self.eval_recipe!r}")
        for k in ("mask_weight", "chroma_weight", "lpips_weight"):
            if not float(getattr(self, k)) >= 0:
                raise ValueError(f"{k} must be >= 0, got {getattr(self, k)!r}")
        if self.patch is not None and not 1 <= self.patch <= self.render_size:
            raise ValueError(f"patch must be in [1, render_size={self.render_size}], got {self.patch}")
        if not isinstance(self.lr_scale, dict) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in self.lr_scale.values()):
            raise ValueError(f"lr_scale must map module names to positive numbers, got {self.lr_scale!r}")
        if self.lpips_weight > 0 and self.lpips_weights is None and not self.lpips_random:
            raise ValueError("lpips_weight > 0 needs lpips_weights (local backbone file) or lpips_random")
        if self.lpips_weight > 0 and (self.patch or self.render_size) < 16:
            raise ValueError(f"LPIPS needs patches of at least 16 px (4 poolings), got {self.patch or self.render_size}")
        if self.lpips_weight > 0 and self.patch is None and self.render_size > 256:
            raise ValueError("LPIPS on whole views above 256 px: set patch")

    def model_config(self):
        from ..config import LRMConfig

        base = LRMConfig.preset(self.model) if isinstance(self.model, str) else LRMConfig.from_dict(self.model)
        if self.init_from:
            with open(os.path.join(self.init_from, "config.json")) as f:
                base = LRMConfig.from_dict(json.load(f))
        cfg = base.replace(**self.model_overrides) if self.model_overrides else base
        return cfg.replace(decoder={"grad_checkpointing": bool(self.grad_checkpointing)},
                           encoder={"freeze": bool(self.freeze_encoder or cfg.encoder.freeze)})
