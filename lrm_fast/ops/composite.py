"""Alpha compositing of samples along rays (the volume rendering equation, discretized).

For a ray with intervals ``k = 0..S-1``: density ``sigma_k >= 0`` (already activated), length
``delta_k``, color ``c_k`` and depth ``t_k``:

    alpha_k = 1 - exp(-sigma_k * delta_k)
    T_k     = prod_{j<k} (1 - alpha_j + 1e-10)       (OpenLRM/EG3D keep the 1e-10)
    w_k     = alpha_k * T_k
    rgb     = sum_k w_k c_k + (1 - sum_k w_k) * background
    depth   = sum_k w_k t_k / sum_k w_k   (the ray's last depth where sum_k w_k == 0)
    opacity = sum_k w_k

OpenLRM's ``MipRayMarcher2`` first averages adjacent *samples* into intervals (colors and raw
densities at midpoints, then ``softplus(x - 1)``); that is done by the renderer before this op,
so the op is shared by OpenLRM-style and TripoSR-style rendering.

Gradients flow to ``rgb``, ``sigma`` and ``background``; ``deltas`` and ``depths`` come from
sampling and are treated as constants by the fast backend (the reference differentiates them too;
tests compare the gradients that both define).

Backends: ``reference`` (torch cumprod under autograd, the spec), and where registered ``cpp``
(lrm_fast._C: analytic backward with O(rays) memory).
"""
from __future__ import annotations

import torch

from . import _dispatch

OP = "composite"
T_EPS = 1e-10


def _composite_ref(rgb, sigma, deltas, depths, background):
    R, S = sigma.shape
    bg = background.expand(R, 3) if background.dim() == 1 else background
    if S == 0:
        zero = sigma.new_zeros(R)
        return bg.clone(), zero, zero.clone()
    w = _weights_ref(sigma, deltas)
    opacity = w.sum(-1)
    color = (w[..., None] * rgb).sum(-2) + (1.0 - opacity)[:, None] * bg
    num = (w * depths).sum(-1)
    depth = torch.where(opacity > 0, num / torch.where(opacity > 0, opacity, torch.ones_like(opacity)),
                        depths[:, -1])
    return color, depth, opacity


def _weights_ref(sigma, deltas):
    alpha = 1.0 - torch.exp(-sigma * deltas)
    shifted = torch.cat([torch.ones_like(alpha[:, :1]), 1.0 - alpha + T_EPS], -1)
    return alpha * torch.cumprod(shifted, -1)[:, :-1]


_dispatch.register_reference(OP, _composite_ref)
_dispatch.register_reference("composite_weights", _weights_ref)


def composite_weights(sigma: torch.Tensor, deltas: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """The per-interval weights ``w_k = alpha_k T_k`` ``[R, S]`` (no gradient needed: they only
    drive importance sampling)."""
    if sigma.shape != deltas.shape or sigma.dim() != 2:
        raise ValueError(f"sigma/deltas must both be [R, S], got {tuple(sigma.shape)}, {tuple(deltas.shape)}")
    _, fn, _ = _dispatch.resolve("composite_weights", backend, sigma)
    return fn(sigma, deltas)


def composite(rgb: torch.Tensor, sigma: torch.Tensor, deltas: torch.Tensor, depths: torch.Tensor,
              background: torch.Tensor, backend: str = "auto"):
    """Composite samples into pixels. See the module docstring for the formula.

    Args:
        rgb: ``[R, S, 3]`` interval colors. sigma: ``[R, S]`` activated densities (>= 0).
        deltas: ``[R, S]`` interval lengths. depths: ``[R, S]`` interval depths (for the depth map).
        background: ``[3]`` or ``[R, 3]`` color behind the volume.
        backend: ``"reference" | "cpp" | "auto" | "fast"``.
    Returns:
        rgb ``[R, 3]``, depth ``[R]``, opacity ``[R]``.
    """
    if sigma.dim() != 2:
        raise ValueError(f"sigma must be [R, S], got {tuple(sigma.shape)}")
    R, S = sigma.shape
    if rgb.shape != (R, S, 3) or deltas.shape != (R, S) or depths.shape != (R, S):
        raise ValueError(f"composite shape mismatch: rgb {tuple(rgb.shape)} (want {(R, S, 3)}), "
                         f"deltas {tuple(deltas.shape)}, depths {tuple(depths.shape)} (want {(R, S)})")
    if background.shape not in ((3,), (R, 3)):
        raise ValueError(f"background must be [3] or [R, 3], got {tuple(background.shape)}")
    _, fn, _ = _dispatch.resolve(OP, backend, sigma)
    return fn(rgb, sigma, deltas, depths, background)
