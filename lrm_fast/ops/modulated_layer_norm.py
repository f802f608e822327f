"""Modulated LayerNorm (adaLN without gate, OpenLRM ``ModLN``): ``LayerNorm(x) * (1 + scale) + shift``.

The op of the decoder's ``ModLN`` (``model/decoder.py``). Backends: ``reference`` (the spec, as
OpenLRM writes it) and ``folded``: the LayerNorm's affine folds into the per-sample ``[B, D]``
modulation, so the whole ModLN is one non-affine LayerNorm + one ``addcmul`` (two passes over
``[B, L, D]`` instead of four). Under bf16 autocast LayerNorm runs in fp32 (autocast's fp32
list), so norms keep fp32 statistics.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import _dispatch

MODLN_OP = "modulated_layer_norm"


def _modulated_layer_norm_ref(x, weight, bias, shift, scale, eps):
    """The spec (OpenLRM ``ModLN``): ``LayerNorm(x) * (1 + scale) + shift``."""
    y = F.layer_norm(x, x.shape[-1:], weight, bias, eps)
    return y * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


def _modulated_layer_norm_folded(x, weight, bias, shift, scale, eps):
    # (xhat * w + b) * (1 + s) + t == xhat * [w (1 + s)] + [b (1 + s) + t]: the affine folds into
    # two [B, D] vectors, leaving one plain LayerNorm and one addcmul over [B, L, D]. The [B, D]
    # vectors are formed in fp32 (free at this size) so folding adds no low-precision rounding.
    acc = torch.promote_types(scale.dtype, torch.float32)  # fp32, or fp64 for gradcheck
    s1 = 1 + scale.to(acc)
    w = s1 if weight is None else weight.to(acc) * s1
    b = shift.to(acc) if bias is None else torch.addcmul(shift.to(acc), bias.to(acc), s1)
    xhat = F.layer_norm(x, x.shape[-1:], None, None, eps)  # fp32 under CUDA autocast (fp32 list)
    # the reference's result dtype: its LayerNorm output (same autocast policy as xhat's) promoted
    # with the modulation
    out_dtype = torch.promote_types(xhat.dtype, torch.promote_types(shift.dtype, scale.dtype))
    if xhat.dtype in (torch.bfloat16, torch.float16) and not torch.is_grad_enabled():
        # inference on low-precision activations (the bf16 runner on CPU): a mixed-dtype addcmul
        # is a slow unvectorized path on CPU (measured 2x slower than the unfused reference), so
        # round the two [B, D] vectors once and stay in the activations' dtype
        return torch.addcmul(b.to(xhat.dtype).unsqueeze(1), xhat, w.to(xhat.dtype).unsqueeze(1)).to(out_dtype)
    return torch.addcmul(b.unsqueeze(1), xhat, w.unsqueeze(1)).to(out_dtype)


def _probe_folded(*tensors):
    return True, "non-affine LayerNorm + one addcmul (affine folded into the [B, D] modulation)"


_dispatch.register_reference(MODLN_OP, _modulated_layer_norm_ref)
_dispatch.register(MODLN_OP, "folded", _modulated_layer_norm_folded, _probe_folded)


def modulated_layer_norm(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
                         shift: torch.Tensor, scale: torch.Tensor, eps: float,
                         backend: str = "auto") -> torch.Tensor:
    """adaLN without gate: ``LayerNorm(x; weight, bias) * (1 + scale) + shift``.

    Args:
        x: ``[B, L, D]``. weight, bias: ``[D]`` or None. shift, scale: ``[B, D]``.
    Returns:
        ``[B, L, D]`` (dtype by PyTorch's type promotion of x's norm and the modulation).
    """
    if x.dim() != 3 or shift.shape != (x.shape[0], x.shape[2]) or scale.shape != shift.shape:
        raise ValueError(f"modulated_layer_norm expects x [B, L, D] and shift/scale [B, D], got x "
                         f"{tuple(x.shape)}, shift {tuple(shift.shape)}, scale {tuple(scale.shape)}")
    _, fn, _ = _dispatch.resolve(MODLN_OP, backend, x)
    return fn(x, weight, bias, shift, scale, eps)
