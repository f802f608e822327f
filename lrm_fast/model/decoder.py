"""Image-to-triplane transformer decoder (OpenLRM ``TransformerDecoder`` with ``cond_mod`` blocks).

Each layer (pre-norm, residual):

    x = x + CrossAttn(ModLN_1(x, c), tokens)
    x = x + SelfAttn(ModLN_2(x, c))
    x = x + MLP(ModLN_3(x, c))              MLP = Linear(D, 4D) -> GELU -> Linear(4D, D)

``ModLN(x, c) = LayerNorm(x) * (1 + scale) + shift`` with ``shift, scale = Linear(SiLU(c)).chunk(2)``
(DiT adaLN without the gate; shift first, as OpenLRM). After the last layer a plain LayerNorm.
Attention has no biases (OpenLRM: ``nn.MultiheadAttention(bias=False)``). Projections are fused
(self: one qkv Linear; cross: q and one kv Linear); ``io/checkpoint.py`` maps OpenLRM's names.

TripoSR switches (``DecoderConfig``): ``modulation=False`` (plain LayerNorm), ``self_first=True``
and ``mlp="geglu"``.

Speed (backend ``"fast"``/``"auto"``): attention goes through ``ops.attention`` (xformers or SDPA,
one dispatcher); the modulation is the op ``ops.modulated_layer_norm``, whose fast form folds the
LayerNorm's affine into the per-sample ``[B, D]`` modulation so the whole ModLN is one
non-affine LayerNorm + one ``addcmul`` (two passes over ``[B, L, D]`` instead of four). Under
bf16 autocast LayerNorm runs in fp32 (autocast's fp32 list), so norms keep fp32 statistics.
For fixed-shape inference see ``model/compiled.py``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..config import DecoderConfig
from ..ops import attention, modulated_layer_norm

class ModLN(nn.Module):
    """adaLN modulation: LayerNorm(x) * (1 + scale) + shift (OpenLRM ``ModLN``)."""

    backend = "auto"

    def __init__(self, dim: int, mod_dim: int, eps: float):
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.mlp = nn.Sequential(nn.SiLU(), nn.Linear(mod_dim, 2 * dim))

    def forward(self, x: torch.Tensor, mod: torch.Tensor) -> torch.Tensor:
        shift, scale = self.mlp(mod).chunk(2, dim=-1)
        return modulated_layer_norm(x, self.norm.weight, self.norm.bias, shift, scale, self.norm.eps,
                                    backend=self.backend)


class PlainLN(nn.LayerNorm):
    """LayerNorm that ignores the modulation input (TripoSR has no camera modulation)."""

    def forward(self, x: torch.Tensor, mod: torch.Tensor | None = None) -> torch.Tensor:
        return super().forward(x)


class SelfAttention(nn.Module):
    backend = "auto"

    def __init__(self, dim: int, heads: int, bias: bool):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=bias)
        self.proj = nn.Linear(dim, dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, L, D = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.heads, D // self.heads).unbind(2)
        return self.proj(attention(q, k, v, backend=self.backend).reshape(B, L, D))


class CrossAttention(nn.Module):
    backend = "auto"

    def __init__(self, dim: int, cond_dim: int, heads: int, bias: bool):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim, bias=bias)
        self.kv = nn.Linear(cond_dim, 2 * dim, bias=bias)
        self.proj = nn.Linear(dim, dim, bias=bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        B, L, D = x.shape
        h = self.heads
        q = self.q(x).view(B, L, h, D // h)
        k, v = self.kv(cond).view(B, cond.shape[1], 2, h, D // h).unbind(2)
        return self.proj(attention(q, k, v, backend=self.backend).reshape(B, L, D))


class GEGLU(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.proj = nn.Linear(dim, 2 * hidden)

    def forward(self, x):
        a, gate = self.proj(x).chunk(2, dim=-1)
        return a * F.gelu(gate)


def _mlp(dim: int, ratio: float, kind: str) -> nn.Sequential:
    hidden = int(dim * ratio)
    if kind == "gelu":
        return nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
    if kind == "geglu":
        return nn.Sequential(GEGLU(dim, hidden), nn.Linear(hidden, dim))
    raise ValueError(f"unknown decoder mlp {kind!r} (gelu, geglu)")


class DecoderBlock(nn.Module):
    def __init__(self, cfg: DecoderConfig, cond_dim: int, mod_dim: int):
        super().__init__()
        D = cfg.dim
        if cfg.modulation:
            self.norm1, self.norm2, self.norm3 = (ModLN(D, mod_dim, cfg.eps) for _ in range(3))
        else:
            self.norm1, self.norm2, self.norm3 = (PlainLN(D, eps=cfg.eps) for _ in range(3))
        self.cross_attn = CrossAttention(D, cond_dim, cfg.heads, cfg.attn_bias)
        self.self_attn = SelfAttention(D, cfg.heads, cfg.attn_bias)
        self.mlp = _mlp(D, cfg.mlp_ratio, cfg.mlp)
        self.self_first = cfg.self_first

    def forward(self, x: torch.Tensor, cond: torch.Tensor, mod: torch.Tensor | None) -> torch.Tensor:
        if self.self_first:
            x = x + self.self_attn(self.norm1(x, mod))
            x = x + self.cross_attn(self.norm2(x, mod), cond)
        else:
            x = x + self.cross_attn(self.norm1(x, mod), cond)
            x = x + self.self_attn(self.norm2(x, mod))
        return x + self.mlp(self.norm3(x, mod))


class TriplaneDecoder(nn.Module):
    """L blocks + final LayerNorm. x ``[B, L, D]``, cond ``[B, Lc, Dc]``, mod ``[B, Dm]`` -> ``[B, L, D]``."""

    def __init__(self, cfg: DecoderConfig, cond_dim: int, mod_dim: int):
        super().__init__()
        self.cfg = cfg
        self.layers = nn.ModuleList(DecoderBlock(cfg, cond_dim, mod_dim) for _ in range(cfg.layers))
        self.norm = nn.LayerNorm(cfg.dim, eps=cfg.eps)

    def forward(self, x: torch.Tensor, cond: torch.Tensor, mod: torch.Tensor | None) -> torch.Tensor:
        for layer in self.layers:
            if self.cfg.grad_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(layer, x, cond, mod, use_reentrant=False)
            else:
                x = layer(x, cond, mod)
        return self.norm(x)
