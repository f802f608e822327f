"""Triplane tokens <-> planes.

The decoder's ``3 * h * w`` tokens are plane-major: token ``p*h*w + i*w + j`` is plane ``p``, row
``i``, column ``j`` (OpenLRM ``reshape_upsample``: ``view(N, 3, H, W, D)``). Each plane is upsampled by
one shared ``ConvTranspose2d(D, C, kernel 2, stride 2)``. Output ``[B, 3, C, 2h, 2w]``; ``plane_layout="triposr"`` transposes plane 2 (see config). Plane order
and which coordinates index each plane are defined in ``ops/triplane_mlp.py``.
"""
from __future__ import annotations

import torch
from torch import nn

from ..config import TriplaneConfig


class TriplaneUpsampler(nn.Module):
    def __init__(self, dim: int, cfg: TriplaneConfig):
        super().__init__()
        if cfg.high_res != 2 * cfg.low_res:
            raise ValueError(f"triplane high_res must be 2 * low_res, got {cfg.low_res} -> {cfg.high_res}")
        self.res = cfg.low_res
        if cfg.plane_layout not in ("openlrm", "triposr"):
            raise ValueError(f"unknown triplane plane_layout {cfg.plane_layout!r} (openlrm, triposr)")
        self.transpose_plane2 = cfg.plane_layout == "triposr"
        self.upsampler = nn.ConvTranspose2d(dim, cfg.channels, kernel_size=2, stride=2, padding=0)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens ``[B, 3*h*w, D]`` -> planes ``[B, 3, C, 2h, 2w]``."""
        B, L, D = tokens.shape
        h = self.res
        x = tokens.view(B, 3, h, h, D).permute(0, 1, 4, 2, 3).reshape(B * 3, D, h, h)
        x = self.upsampler(x)
        x = x.view(B, 3, *x.shape[1:])
        if self.transpose_plane2:
            # TripoSR samples plane 2 at (y, z), ours at (z, y): one transpose here keeps every op
            # on a single convention (exact: H == W and grid_sample's align_corners=False is symmetric)
            x = torch.stack([x[:, 0], x[:, 1], x[:, 2].transpose(-1, -2)], 1)
        return x
