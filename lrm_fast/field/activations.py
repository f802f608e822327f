"""The field's activations, one table: the single Python source of their names, kernel codes and
constants.

Three kinds, each a dict ``name -> Activation``:

* ``HIDDEN``: the field MLP's hidden activation (``FieldConfig.activation``): ``relu``, ``silu``
  (TripoSR), ``softplus`` (torch's: beta 1, threshold ``SOFTPLUS_THRESHOLD``); with the module
  ``TriplaneField`` builds, the function the MLP's twin applies and the interval rule of the
  density bounds (``field/bounds.py``);
* ``DENSITY``: raw density (after ``density_bias``) -> density (``FieldConfig.density_activation``):
  ``softplus`` (OpenLRM) or ``exp`` clamped at ``EXP_CLAMP`` (TripoSR's trunc_exp region), with its
  inverse (the occupancy grid's ``raw_cut``);
* ``RGB``: logits -> colours (``FieldConfig.rgb_activation``): ``sigmoid_wide``,
  ``sigmoid(x) * (1 + 2 * RGB_PAD) - RGB_PAD`` (MipNeRF's widened sigmoid, OpenLRM), or ``sigmoid``
  (TripoSR).

``MASKED_RAW_DENSITY`` is the raw density of a sample outside the box (``ops/per_sample.py``'s gate;
activated: 0 in float32).

The kernels cannot import this module (they sit below it, ``docs/architecture.md`` section 2), so
they write the same codes and constants: the Triton kernel (``kernels/triplane_mlp.py``: ``ACT_*``
codes, the softplus threshold) and the C++/CUDA code (``csrc/triplane_mlp.h``: the hidden
activation enum; ``csrc/composite_samples.h`` and ``csrc/composite_vec_cpu_impl.h``: the density
codes, the sentinel, the rgb pad, the exp clamp). ``tests/test_activations.py`` reads those sources
and holds them to this table.

This module sits at the ops layer (``lrm_fast.field.activations``: layer 1), below the rest of the
field package, because the ops' twins apply these activations.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

MASKED_RAW_DENSITY = -1e4  # raw density of a sample outside the box
RGB_PAD = 0.001  # the widened sigmoid's margin: sigmoid(x) * (1 + 2 * RGB_PAD) - RGB_PAD
EXP_CLAMP = 15.0  # exp density: the raw value is clamped to this before exp (TripoSR's trunc_exp region)
SOFTPLUS_THRESHOLD = 20.0  # torch's softplus (beta 1): x above it passes through unchanged
SILU_ARGMIN = -1.2784645427610738  # silu decreases below this point and increases above


@dataclass(frozen=True)
class Activation:
    """One activation: ``fn`` (torch, elementwise), ``code`` (the kernels' integer for it) and, where
    the kind needs them, ``module`` (an ``nn.Module`` class), ``interval`` ((lo, hi) -> the image's
    (lo, hi)), ``curvature`` (``max |fn''|`` of a smooth one: the density bounds' linear relaxation)
    and ``inverse`` (a Python float -> the float it comes from)."""

    name: str
    code: int
    fn: Callable[[torch.Tensor], torch.Tensor]
    module: type | None = None
    interval: Callable | None = None
    inverse: Callable[[float], float] | None = None
    curvature: float | None = None


def _relu_interval(lo, hi):
    return lo.clamp_min(0), hi.clamp_min(0)


def _softplus_interval(lo, hi):
    return F.softplus(lo), F.softplus(hi)


def _silu_interval(lo, hi):
    """silu decreases below ``SILU_ARGMIN`` and increases above; its minimum is ``silu(SILU_ARGMIN)``."""
    xs = SILU_ARGMIN
    fl, fh = F.silu(lo), F.silu(hi)
    mn = torch.where((lo <= xs) & (hi >= xs), torch.full_like(lo, xs / (1 + np.exp(-xs))), torch.minimum(fl, fh))
    return mn, torch.maximum(fl, fh)


def _exp_clamped(x: torch.Tensor) -> torch.Tensor:
    return torch.exp(x.clamp_max(EXP_CLAMP))


def _softplus_inverse(s: float) -> float:  # softplus^-1(s) = s + log(1 - exp(-s))
    return s + math.log(-math.expm1(-s))


def _sigmoid_wide(x: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(x) * (1 + 2 * RGB_PAD) - RGB_PAD


HIDDEN = {
    "relu": Activation("relu", 0, F.relu, nn.ReLU, _relu_interval),
    # silu'' = s'(x) (2 + x (1 - 2 s(x))) peaks at x = 0: 1/2; softplus'' = s'(x) <= 1/4
    "silu": Activation("silu", 1, F.silu, nn.SiLU, _silu_interval, curvature=0.5),
    "softplus": Activation("softplus", 2, F.softplus, nn.Softplus, _softplus_interval, curvature=0.25),
}
DENSITY = {
    "softplus": Activation("softplus", 0, F.softplus, inverse=_softplus_inverse),
    "exp": Activation("exp", 1, _exp_clamped, inverse=math.log),
}
RGB = {
    "sigmoid_wide": Activation("sigmoid_wide", 0, _sigmoid_wide),
    "sigmoid": Activation("sigmoid", 1, torch.sigmoid),
}
RGB_ACTIVATIONS = tuple(RGB)
DENSITY_ACTIVATIONS = tuple(DENSITY)
HIDDEN_ACTIVATIONS = tuple(HIDDEN)


def lookup(table: dict[str, Activation], name: str, what: str) -> Activation:
    """``table[name]``, or a one-line ``ValueError`` naming the choices."""
    try:
        return table[name]
    except KeyError:
        raise ValueError(f"unknown {what} {name!r} ({', '.join(table)})") from None
