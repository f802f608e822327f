"""Image-to-triplane transformer decoders: one class per ``DecoderConfig.block``, each owning its parts.

``block="openlrm"`` (OpenLRM ``TransformerDecoder`` with ``cond_mod`` blocks): ``TriplaneDecoder`` of
``OpenLRMBlock``s. Each layer (pre-norm, residual):

    x = x + CrossAttn(ModLN_1(x, c), tokens)
    x = x + SelfAttn(ModLN_2(x, c))
    x = x + MLP(ModLN_3(x, c))              MLP = Linear(D, 4D) -> GELU -> Linear(4D, D)

``ModLN(x, c) = LayerNorm(x) * (1 + scale) + shift`` with ``shift, scale = Linear(SiLU(c)).chunk(2)``
(DiT adaLN without the gate; shift first, as OpenLRM). After the last layer a plain LayerNorm.
Attention has no biases (OpenLRM: ``nn.MultiheadAttention(bias=False)``; ``attn_bias`` turns them on).

``block="triposr"`` (TripoSR ``Transformer1D`` of ``BasicTransformerBlock``s): ``TripoSRDecoder``,
``x + proj_out(blocks(proj_in(GroupNorm(x))))`` with no final LayerNorm, of ``TripoSRBlock``s:

    x = x + SelfAttn(LN_1(x))
    x = x + CrossAttn(LN_2(x), tokens)
    x = x + MLP(LN_3(x))                    MLP = GEGLU(D, 4D) -> Linear(4D, D)

plain LayerNorms (no camera input), q/k/v without bias, the attention output Linear with one.

Projections are fused (self: one qkv Linear; cross: q and one kv Linear); ``io/openlrm.py`` and
``io/triposr.py`` map the originals' names. ``build_decoder(cfg, ...)`` picks the class.

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


class SelfAttention(nn.Module):
    backend = "auto"

    def __init__(self, dim: int, heads: int, bias: bool, out_bias: bool | None = None):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=bias)
        self.proj = nn.Linear(dim, dim, bias=bias if out_bias is None else out_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, L, D = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.heads, D // self.heads).unbind(2)
        return self.proj(attention(q, k, v, backend=self.backend).reshape(B, L, D))


class CrossAttention(nn.Module):
    backend = "auto"

    def __init__(self, dim: int, cond_dim: int, heads: int, bias: bool, out_bias: bool | None = None):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim, bias=bias)
        self.kv = nn.Linear(cond_dim, 2 * dim, bias=bias)
        self.proj = nn.Linear(dim, dim, bias=bias if out_bias is None else out_bias)

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


class OpenLRMBlock(nn.Module):
    """OpenLRM's ``ConditionModulationBlock``: cross, self, GELU MLP, each after a camera-modulated LN."""

    def __init__(self, cfg: DecoderConfig, cond_dim: int, mod_dim: int):
        super().__init__()
        D = cfg.dim
        self.norm1, self.norm2, self.norm3 = (ModLN(D, mod_dim, cfg.eps) for _ in range(3))
        self.cross_attn = CrossAttention(D, cond_dim, cfg.heads, cfg.attn_bias)
        self.self_attn = SelfAttention(D, cfg.heads, cfg.attn_bias)
        hidden = int(D * cfg.mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(D, hidden), nn.GELU(), nn.Linear(hidden, D))

    def forward(self, x: torch.Tensor, cond: torch.Tensor, mod: torch.Tensor) -> torch.Tensor:
        x = x + self.cross_attn(self.norm1(x, mod), cond)
        x = x + self.self_attn(self.norm2(x, mod))
        return x + self.mlp(self.norm3(x, mod))


class TripoSRBlock(nn.Module):
    """TripoSR's ``BasicTransformerBlock``: self, cross, GEGLU MLP, each after a plain LayerNorm."""

    def __init__(self, cfg: DecoderConfig, cond_dim: int):
        super().__init__()
        D = cfg.dim
        self.norm1, self.norm2, self.norm3 = (nn.LayerNorm(D, eps=cfg.eps) for _ in range(3))
        self.self_attn = SelfAttention(D, cfg.heads, bias=False, out_bias=True)
        self.cross_attn = CrossAttention(D, cond_dim, cfg.heads, bias=False, out_bias=True)
        hidden = int(D * cfg.mlp_ratio)
        self.mlp = nn.Sequential(GEGLU(D, hidden), nn.Linear(hidden, D))

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.norm1(x))
        x = x + self.cross_attn(self.norm2(x), cond)
        return x + self.mlp(self.norm3(x))


def _run_blocks(decoder: nn.Module, x: torch.Tensor, *args) -> torch.Tensor:
    for layer in decoder.layers:
        if decoder.cfg.grad_checkpointing and decoder.training and torch.is_grad_enabled():
            x = checkpoint(layer, x, *args, use_reentrant=False)
        else:
            x = layer(x, *args)
    return x


class TriplaneDecoder(nn.Module):
    """``block="openlrm"``: L ``OpenLRMBlock``s + final LayerNorm. x ``[B, L, D]``, cond ``[B, Lc, Dc]``,
    mod ``[B, Dm]`` (the camera embedding) -> ``[B, L, D]``."""

    takes_camera = True

    def __init__(self, cfg: DecoderConfig, cond_dim: int, mod_dim: int):
        super().__init__()
        self.cfg = cfg
        self.layers = nn.ModuleList(OpenLRMBlock(cfg, cond_dim, mod_dim) for _ in range(cfg.layers))
        self.norm = nn.LayerNorm(cfg.dim, eps=cfg.eps)

    def forward(self, x: torch.Tensor, cond: torch.Tensor, mod: torch.Tensor) -> torch.Tensor:
        if mod is None:
            raise ValueError("the openlrm decoder block needs the camera embedding (mod), got None")
        return self.norm(_run_blocks(self, x, cond, mod))


class TripoSRDecoder(nn.Module):
    """``block="triposr"``: TripoSR's ``Transformer1D``, ``x + proj_out(blocks(proj_in(GroupNorm(x))))``
    (GroupNorm eps 1e-6, as diffusers'), no final LayerNorm, no camera input. x ``[B, L, D]``,
    cond ``[B, Lc, Dc]`` -> ``[B, L, D]``."""

    takes_camera = False

    def __init__(self, cfg: DecoderConfig, cond_dim: int):
        super().__init__()
        D = cfg.dim
        self.cfg = cfg
        self.in_norm = nn.GroupNorm(cfg.in_norm_groups, D, eps=1e-6)
        self.proj_in = nn.Linear(D, D)
        self.layers = nn.ModuleList(TripoSRBlock(cfg, cond_dim) for _ in range(cfg.layers))
        self.proj_out = nn.Linear(D, D)

    def forward(self, x: torch.Tensor, cond: torch.Tensor, mod: torch.Tensor | None = None) -> torch.Tensor:
        if mod is not None:
            raise ValueError("the triposr decoder block takes no camera embedding (mod must be None)")
        h = self.in_norm(x.transpose(1, 2)).transpose(1, 2)
        return x + self.proj_out(_run_blocks(self, self.proj_in(h), cond))


def build_decoder(cfg: DecoderConfig, cond_dim: int, mod_dim: int) -> nn.Module:
    """The decoder of ``cfg.block`` (``DecoderConfig`` has validated it)."""
    if cfg.block == "triposr":
        return TripoSRDecoder(cfg, cond_dim)
    return TriplaneDecoder(cfg, cond_dim, mod_dim)
