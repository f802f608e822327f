"""Triplane field query: bilinear sampling of 3 planes + feature aggregation + NeRF MLP.

``triplane_mlp(planes, points, weights, biases)``:

* planes ``[B, 3, C, H, W]``; points ``[B, N, 3]`` in the normalized box [-1, 1]^3.
* Plane ``i`` is sampled at 2-d coordinates (u, v) with ``F.grid_sample(align_corners=False,
  padding_mode="zeros")`` semantics (u indexes W, v indexes H): plane 0 at (x, y), plane 1 at
  (x, z), plane 2 at (z, y). This is OpenLRM's ``generate_planes`` (EG3D with the issue-67 fix):
  ``coords @ inv(axes_i)[:, :2]``.
* aggregate: ``"concat"`` (OpenLRM: [f0, f1, f2] -> 3C), ``"sum"`` or ``"mean"`` (-> C).
* MLP: ``x -> act(x W0^T + b0) -> ... -> x W_{L-1}^T + b_{L-1}`` (no activation after the last).
  weights[i] ``[out_i, in_i]``, biases[i] ``[out_i]``, as ``nn.Linear`` stores them.
* returns the raw MLP output ``[B, N, out]`` (OpenLRM: channel 0 = raw density, 1:4 = rgb logits);
  activations are applied by the caller (``render/field.py``): cheap elementwise work.

Backends: ``reference`` (grid_sample + matmuls under autograd), and where registered ``triton``.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from . import _dispatch

OP = "triplane_mlp"

# (u, v) coordinate indices of each plane: plane 0 (x, y), plane 1 (x, z), plane 2 (z, y).
PLANE_AXES = ((0, 1), (0, 2), (2, 1))

_ACTS = {"relu": F.relu, "silu": F.silu, "softplus": F.softplus}


def sample_triplane(planes: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Bilinear features of each plane: planes [B,3,C,H,W], points [B,N,3] -> [B, 3, N, C]."""
    B, P, C, H, W = planes.shape
    N = points.shape[1]
    grids = torch.stack([points[..., list(ax)] for ax in PLANE_AXES], dim=1)  # [B, 3, N, 2]
    feats = F.grid_sample(planes.reshape(B * P, C, H, W), grids.reshape(B * P, 1, N, 2).to(planes.dtype),
                          mode="bilinear", padding_mode="zeros", align_corners=False)  # [B*3, C, 1, N]
    return feats.reshape(B, P, C, N).permute(0, 1, 3, 2)


def aggregate_features(feats: torch.Tensor, mode: str) -> torch.Tensor:
    """[B, 3, N, C] -> [B, N, 3C] (concat, plane-major as OpenLRM) or [B, N, C] (sum/mean)."""
    if mode == "concat":
        B, P, N, C = feats.shape
        return feats.permute(0, 2, 1, 3).reshape(B, N, P * C)
    if mode == "sum":
        return feats.sum(1)
    if mode == "mean":
        return feats.mean(1)
    raise ValueError(f"unknown triplane aggregate {mode!r} (concat, sum, mean)")


def _triplane_mlp_ref(planes, points, weights, biases, aggregate="concat", activation="relu"):
    x = aggregate_features(sample_triplane(planes, points), aggregate)
    act = _ACTS[activation]
    for i, (w, b) in enumerate(zip(weights, biases)):
        x = F.linear(x, w.to(x.dtype), None if b is None else b.to(x.dtype))
        if i < len(weights) - 1:
            x = act(x)
    return x


_dispatch.register_reference(OP, _triplane_mlp_ref)


def triplane_mlp(planes: torch.Tensor, points: torch.Tensor, weights: Sequence[torch.Tensor],
                 biases: Sequence[torch.Tensor | None], aggregate: str = "concat",
                 activation: str = "relu", backend: str = "auto") -> torch.Tensor:
    """Query a triplane NeRF field at points. See the module docstring for the exact semantics.

    Args:
        planes: ``[B, 3, C, H, W]`` float tensor.
        points: ``[B, N, 3]`` in [-1, 1]^3 (outside the box the features are zero).
        weights / biases: the MLP's Linear parameters, first layer's ``in`` = 3C (concat) or C.
        aggregate: ``"concat" | "sum" | "mean"``. activation: ``"relu" | "silu" | "softplus"``.
        backend: ``"reference" | "triton" | "auto" | "fast"``.
    Returns:
        ``[B, N, out]`` raw MLP outputs, in the planes' dtype.
    """
    if planes.dim() != 5 or planes.shape[1] != 3:
        raise ValueError(f"planes must be [B, 3, C, H, W], got {tuple(planes.shape)}")
    if points.dim() != 3 or points.shape[-1] != 3 or points.shape[0] != planes.shape[0]:
        raise ValueError(f"points must be [B, N, 3] with B={planes.shape[0]}, got {tuple(points.shape)}")
    if len(weights) != len(biases) or not weights:
        raise ValueError("weights and biases must be non-empty lists of the same length")
    if activation not in _ACTS:
        raise ValueError(f"unknown activation {activation!r} ({sorted(_ACTS)})")
    C = planes.shape[2]
    want = 3 * C if aggregate == "concat" else C
    if weights[0].shape[1] != want:
        raise ValueError(f"first MLP layer takes {weights[0].shape[1]} features but {aggregate} of "
                         f"{C}-channel planes gives {want}")
    _, fn, _ = _dispatch.resolve(OP, backend, planes, points)
    return fn(planes, points, list(weights), list(biases), aggregate, activation)
