"""The camera embedder (OpenLRM ``CameraEmbedder``). The camera geometry it embeds (poses,
intrinsics, normalization, the camera feature) lives in ``lrm_fast/cameras.py``; its names are
re-exported here for code written against this module."""
from __future__ import annotations

import torch
from torch import nn

from ..cameras import (FEATURE_DIMS, camera_features, canonical_pose, default_intrinsics,  # noqa: F401
                       look_at, normalize_cameras, orbit_cameras)


class CameraEmbedder(nn.Module):
    """Linear -> SiLU -> Linear (OpenLRM ``CameraEmbedder``: raw_dim -> embed_dim -> embed_dim)."""

    def __init__(self, raw_dim: int, embed_dim: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(raw_dim, embed_dim), nn.SiLU(), nn.Linear(embed_dim, embed_dim))

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        return self.mlp(feature)
