"""The per-sample math of the renderer's tail, written once: the in-box gate, the field's rgb and
density activations, the masked raw density, and samples -> intervals.

One Python owner for all of it: the field (``field/triplane.py``: ``rgb``, ``density``), both
renderer paths (``render/renderer.py``: the unfused ops and TripoSR's uniform bins) and the twin of
the fused op (``ops/composite.py``: ``_composite_samples_ref``) call these functions, so they
cannot drift apart. The C++/CUDA kernels (``csrc/composite_samples.h`` and the vector CPU path
``csrc/composite_vec_cpu_impl.h``) write the same arithmetic; the twin tests
(``tests/test_composite.py``) prove they agree, bit for bit on the gate.

Conventions (OpenLRM ``OSGDecoder`` / ``ImportanceRenderer`` / ``MipRayMarcher2``):

* gate: a sample at point ``p`` is in the box iff ``box_min <= p_i <= box_max`` for all three axes
  (faces included); outside, its raw density is ``MASKED_RAW_DENSITY`` (activated: 0 in float32)
  and its color 0;
* rgb: ``"sigmoid_wide"`` ``sigmoid(x) * (1 + 2 * 0.001) - 0.001`` (MipNeRF's widened sigmoid,
  OpenLRM), or ``"sigmoid"`` (TripoSR);
* density: ``softplus(x + bias)`` (OpenLRM, ``bias = -1``) or ``exp(min(x + bias, 15))`` (TripoSR);
* the activations themselves, their names and constants (the sentinel, the rgb pad, the exp
  clamp) are one table, ``field/activations.py``; these functions apply it;
* intervals (``midpoint=True``, MipRayMarcher2): interval ``k`` between samples ``k`` and ``k+1``
  has the mean color, the density of the mean raw density, the mean depth and length
  ``t_{k+1} - t_k``; with ``midpoint=False`` the first ``S-1`` samples themselves.
"""
from __future__ import annotations

from typing import Callable

import torch

from ..field.activations import (DENSITY, DENSITY_ACTIVATIONS, EXP_CLAMP, MASKED_RAW_DENSITY, RGB,  # noqa: F401
                                  RGB_ACTIVATIONS, RGB_PAD, lookup)


def sample_points(origins: torch.Tensor, dirs: torch.Tensor, depths: torch.Tensor) -> torch.Tensor:
    """origins, dirs ``[..., 3]``, depths ``[..., S]`` -> points ``[..., S, 3]``: ``o + t d``, rounded
    as these two torch ops (the gate of a fast path must see the bits its field query saw)."""
    return origins[..., None, :] + depths[..., None] * dirs[..., None, :]


def in_box(points: torch.Tensor, box_min: float, box_max: float) -> torch.Tensor:
    """points ``[..., 3]`` -> bool ``[...]``: inside ``[box_min, box_max]^3``, faces included."""
    return ((points >= box_min) & (points <= box_max)).all(-1)


def rgb_activation(logits: torch.Tensor, kind: str = "sigmoid_wide") -> torch.Tensor:
    """rgb logits ``[..., 3]`` -> colors (see the module docstring)."""
    return lookup(RGB, kind, "rgb activation").fn(logits)


def density_activation(raw_density: torch.Tensor, bias: float = -1.0, kind: str = "softplus") -> torch.Tensor:
    """raw densities ``[...]`` -> densities ``>= 0`` (see the module docstring)."""
    act = lookup(DENSITY, kind, "density activation")
    return act.fn(raw_density + bias)


def gate(raw_density: torch.Tensor, rgb: torch.Tensor, inside: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """OpenLRM's in-box filter: raw density ``[...]`` and activated rgb ``[..., 3]`` of samples,
    ``inside`` bool ``[...]`` -> (raw density, ``MASKED_RAW_DENSITY`` outside; rgb, 0 outside)."""
    sigma_raw = torch.where(inside, raw_density, torch.full_like(raw_density, MASKED_RAW_DENSITY))
    return sigma_raw, torch.where(inside[..., None], rgb, torch.zeros_like(rgb))


def intervals(depths: torch.Tensor, sigma_raw: torch.Tensor, rgb: torch.Tensor, midpoint: bool,
              density: Callable[[torch.Tensor], torch.Tensor]):
    """Samples -> intervals. depths, sigma_raw ``[..., S]``, rgb ``[..., S, 3]``, ``density`` the
    activation (raw -> density) -> (rgb ``[..., S-1, 3]``, sigma ``[..., S-1]``, deltas, interval
    depths ``[..., S-1]``)."""
    deltas = depths[..., 1:] - depths[..., :-1]
    if midpoint:
        sigma = density(0.5 * (sigma_raw[..., 1:] + sigma_raw[..., :-1]))
        rgb = 0.5 * (rgb[..., 1:, :] + rgb[..., :-1, :])
        mids = 0.5 * (depths[..., 1:] + depths[..., :-1])
        return rgb, sigma, deltas, mids
    return rgb[..., :-1, :], density(sigma_raw[..., :-1]), deltas, depths[..., :-1]
