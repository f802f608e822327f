"""Triplane NeRF field (OpenLRM ``OSGDecoder``): features of the 3 planes -> MLP -> rgb + density.

MLP: ``Linear(3C, 64) -> ReLU -> [Linear(64, 64) -> ReLU] x (layers - 2) -> Linear(64, 4)``, biases
initialized to zero. Output channel 0 is the raw density, 1:4 the rgb logits.
Activations (OpenLRM; one table, ``field/activations.py``, applied by ``ops/per_sample.py``, which
the renderer and the fused compositing op share):
    rgb     = sigmoid(x) * (1 + 2 * 0.001) - 0.001     (MipNeRF's widened sigmoid)
    density = softplus(x - 1)                           (``density_bias = -1``)
TripoSR variant (``density_activation="exp"``): density = exp(x - 1), ``rgb_activation="sigmoid"``
(plain), SiLU, 10 layers, and ``coord_scale = 1/0.87``: world points in its radius-0.87 box are
scaled into the normalized [-1, 1]^3 box before the planes are sampled.
"""
from __future__ import annotations

import torch
from torch import nn

from ..config import FieldConfig
from ..ops import per_sample, triplane_mlp
from .activations import HIDDEN, RGB

_ACT_MODULES = {name: a.module for name, a in HIDDEN.items()}


class TriplaneField(nn.Module):
    backend = "auto"

    def __init__(self, channels: int, cfg: FieldConfig):
        super().__init__()
        self.cfg = cfg
        if cfg.layers < 2:
            raise ValueError(f"field MLP needs >= 2 layers, got {cfg.layers}")
        if cfg.rgb_activation not in RGB:
            raise ValueError(f"unknown field rgb_activation {cfg.rgb_activation!r} ({', '.join(RGB)})")
        if cfg.activation not in _ACT_MODULES:
            raise ValueError(f"unknown field activation {cfg.activation!r} ({sorted(_ACT_MODULES)})")
        width_in = 3 * channels if cfg.aggregate == "concat" else channels
        act = _ACT_MODULES[cfg.activation]
        mods: list[nn.Module] = [nn.Linear(width_in, cfg.hidden), act()]
        for _ in range(cfg.layers - 2):
            mods += [nn.Linear(cfg.hidden, cfg.hidden), act()]
        mods.append(nn.Linear(cfg.hidden, 4))
        self.net = nn.Sequential(*mods)
        for m in self.net:
            if isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    @property
    def linears(self) -> list[nn.Linear]:
        return [m for m in self.net if isinstance(m, nn.Linear)]

    def forward(self, planes: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """planes ``[B, 3, C, H, W]``, points ``[B, N, 3]`` -> raw outputs ``[B, N, 4]``."""
        lin = self.linears
        if self.cfg.coord_scale != 1.0:  # TripoSR: world box of radius 0.87 -> normalized [-1, 1]
            points = points * self.cfg.coord_scale
        return triplane_mlp(planes, points, [m.weight for m in lin], [m.bias for m in lin],
                            aggregate=self.cfg.aggregate, activation=self.cfg.activation,
                            backend=self.backend)

    def rgb(self, raw: torch.Tensor) -> torch.Tensor:
        """raw outputs ``[..., 4]`` -> colors ``[..., 3]`` (``ops.per_sample.rgb_activation``)."""
        return per_sample.rgb_activation(raw[..., 1:4], self.cfg.rgb_activation)

    def density(self, raw_density: torch.Tensor) -> torch.Tensor:
        """raw densities ``[...]`` -> densities (``ops.per_sample.density_activation``)."""
        return per_sample.density_activation(raw_density, self.cfg.density_bias, self.cfg.density_activation)

    def query_bytes(self) -> int:
        """Bytes one point of a field query may hold at once, counted generously, for chunked stages
        to size their point chunks from a ``MemoryBudget`` (``budget.count(field.query_bytes())``): the
        point (fp32 xyz, the int64 grid index it came from), the 3 planes' sampled features (fp32,
        twice: the corners' blend and the aggregated MLP input), every MLP layer's activations (fp32,
        twice: before and after the activation), the raw output and its activated copies."""
        lin = self.linears
        width_in = lin[0].in_features
        feats = width_in if self.cfg.aggregate == "concat" else 3 * width_in
        hidden = sum(m.out_features for m in lin[:-1])
        return 4 * (2 * feats + 2 * hidden + 3 * 4) + 12 + 24

    def query(self, planes: torch.Tensor, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Activated (density ``[B, N]``, rgb ``[B, N, 3]``) at points (OpenLRM ``run_model_activated``)."""
        raw = self(planes, points)
        return self.density(raw[..., 0]), self.rgb(raw)
