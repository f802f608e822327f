"""Multi-head attention used by every attention layer of the decoder.

``attention(q, k, v)`` with q ``[B, Lq, H, Dh]``, k and v ``[B, Lk, H, Dh]`` (xformers' BMHK
layout, the natural layout after a Linear projection) returns ``[B, Lq, H, Dh]``:

    out = softmax(q @ k^T / sqrt(Dh)) @ v

No mask, no dropout (LRM uses neither). Cross-attention simply has Lq != Lk.

Backends: ``reference`` (explicit matmul-softmax-matmul, the spec), ``sdpa``
(``F.scaled_dot_product_attention``, any device), and where registered ``xformers``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from . import _dispatch

OP = "attention"


def _attention_ref(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The spec: explicit softmax(QK^T/sqrt(d))V, in the inputs' dtype. [B,Lq,H,D] -> [B,Lq,H,D]."""
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # [B, H, L, D]
    scores = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(q.shape[-1]))
    out = scores.softmax(dim=-1) @ v
    return out.transpose(1, 2)


def _attention_sdpa(q, k, v):
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    return out.transpose(1, 2)


def _probe_sdpa(*tensors):
    return True, "torch scaled_dot_product_attention"


_dispatch.register_reference(OP, _attention_ref)
_dispatch.register(OP, "sdpa", _attention_sdpa, _probe_sdpa)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """softmax(q k^T / sqrt(Dh)) v.

    Args:
        q: ``[B, Lq, H, Dh]``. k, v: ``[B, Lk, H, Dh]``; same dtype and device as q.
        backend: ``"reference" | "sdpa" | "xformers" | "auto" | "fast"``.
    Returns:
        ``[B, Lq, H, Dh]``.
    """
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(f"attention expects 4-d [B, L, H, Dh] q/k/v, got {tuple(q.shape)}, "
                         f"{tuple(k.shape)}, {tuple(v.shape)}")
    if k.shape != v.shape or q.shape[0] != k.shape[0] or q.shape[2:] != k.shape[2:]:
        raise ValueError(f"attention shape mismatch: q {tuple(q.shape)}, k {tuple(k.shape)}, "
                         f"v {tuple(v.shape)}")
    _, fn, _ = _dispatch.resolve(OP, backend, q, k, v)
    return fn(q, k, v)
