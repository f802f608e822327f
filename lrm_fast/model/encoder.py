"""Image encoder: a timm ViT (DINO v1 or DINOv2 with registers) returning all tokens.

* ``kind="dino"`` (paper, OpenLRM v1.0): ImageNet mean/std normalization of the [0, 1] input,
  tokens = [CLS, patches] after the final LayerNorm (HF ``last_hidden_state``).
* ``kind="dinov2"`` (OpenLRM v1.1): the [0, 1] image is fed *without* normalization (as OpenLRM's
  ``Dinov2Wrapper``), the 4 register tokens are dropped: tokens = [CLS, patches] after the norm
  (``x_norm_clstoken`` + ``x_norm_patchtokens``).

Backend: ``"reference"`` runs timm's explicit attention (``fused_attn=False``); ``"fast"``/``"auto"``
turn timm's fused path on (``F.scaled_dot_product_attention``) in every attention block, whatever
``TIMM_FUSED_ATTN`` said at import.

Weights are never downloaded: ``pretrained=False`` always; a local file can be loaded with
``lrm_fast.io.checkpoint.load_encoder_weights(encoder, path)`` (timm / torch state dict).
"""
from __future__ import annotations

import os

import torch
from torch import nn

from ..config import EncoderConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageEncoder(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import timm

        self.cfg = cfg
        self.vit = timm.create_model(cfg.timm_name, pretrained=False, img_size=cfg.image_size,
                                     num_classes=0, dynamic_img_size=False, **cfg.overrides)
        if self.vit.embed_dim != cfg.feat_dim:
            raise ValueError(f"encoder {cfg.timm_name} has width {self.vit.embed_dim}, config says "
                             f"feat_dim={cfg.feat_dim}")
        if cfg.norm_eps is not None:  # e.g. Hugging Face ViT's layer_norm_eps (1e-12)
            for m in self.vit.modules():
                if isinstance(m, nn.LayerNorm):
                    m.eps = float(cfg.norm_eps)
        self.num_prefix = getattr(self.vit, "num_prefix_tokens", 1)
        self.normalize = cfg.kind == "dino"
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        if cfg.freeze:
            self.vit.requires_grad_(False)
        self.backend = "auto"

    @property
    def backend(self) -> str:
        return self._backend

    @backend.setter
    def backend(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError(f"encoder backend must be a string, got {type(value).__name__}")
        self._backend = value
        for m in self.vit.modules():
            if hasattr(m, "fused_attn"):
                m.fused_attn = value != "reference"

    @property
    def num_tokens(self) -> int:
        return 1 + self.vit.patch_embed.num_patches

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """image ``[B, 3, S, S]`` RGB in [0, 1] -> tokens ``[B, 1 + N_patches, C_enc]``."""
        if image.dim() != 4 or image.shape[1] != 3:
            raise ValueError(f"encoder expects [B, 3, H, W] images, got {tuple(image.shape)}")
        if image.shape[-2:] != (self.cfg.image_size, self.cfg.image_size):
            raise ValueError(f"encoder expects {self.cfg.image_size}x{self.cfg.image_size} images, "
                             f"got {tuple(image.shape[-2:])}; preprocess first (lrm_fast.io.images)")
        if self.normalize:
            image = (image - self.mean.to(image.dtype)) / self.std.to(image.dtype)
        tokens = self.vit.forward_features(image)
        if self.num_prefix > 1:  # drop register tokens, keep CLS
            tokens = torch.cat([tokens[:, :1], tokens[:, self.num_prefix:]], 1)
        return tokens
