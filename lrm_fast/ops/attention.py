"""Multi-head attention used by every attention layer of the decoder.

``attention(q, k, v)`` with q ``[B, Lq, H, Dh]``, k and v ``[B, Lk, H, Dh]`` (xformers' BMHK
layout, the natural layout after a Linear projection) returns ``[B, Lq, H, Dh]``:

    out = softmax(q @ k^T / sqrt(Dh)) @ v

No mask, no dropout (LRM uses neither). Cross-attention simply has Lq != Lk.

Backends, in order of preference for ``"auto"``:

* ``xformers``: ``xformers.ops.memory_efficient_attention`` (CUDA only). It takes BMHK as is, so
  no layout conversion at all. Chosen only where a tiny forward+backward call really dispatched
  for this (device, dtype, head_dim): importing xformers is not enough (0.0.35 with torch 2.14
  imports but its own kernels fail to load; on CPU it has no operator at all). The probe runs
  once per key and is cached, so it never runs inside a CUDA graph capture after warm-up.
* ``sdpa``: ``F.scaled_dot_product_attention`` (any device; flash / memory-efficient / cuDNN
  kernels on CUDA, a fused flash-style kernel on CPU). The one layout change BMHK -> BHMK is a
  stride permutation (a view), done here once; SDPA accepts the strided input.
* ``reference``: explicit matmul-softmax-matmul in the inputs' dtype, the spec.
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


# -- sdpa -------------------------------------------------------------------------------------
def _attention_sdpa(q, k, v):
    # BMHK -> BHMK as a view; the output comes back as a view too (the caller's reshape copies
    # only if it must).
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    return out.transpose(1, 2)


def _probe_sdpa(*tensors):
    return True, "torch scaled_dot_product_attention"


# -- xformers ---------------------------------------------------------------------------------
_XF_CACHE: dict[tuple, tuple[bool, str]] = {}
_XF_IMPORT: list = []  # [module] or [exception], filled on first use (import costs ~1-2 s)


def _xformers_ops():
    if not _XF_IMPORT:
        try:
            import xformers.ops as xops  # noqa: PLC0415 - heavy optional import, lazily

            _XF_IMPORT.append(xops)
        except Exception as e:  # noqa: BLE001 - any import failure means "not available"
            _XF_IMPORT.append(e)
    mod = _XF_IMPORT[0]
    if isinstance(mod, Exception):
        raise mod
    return mod


def _attention_xformers(q, k, v):
    return _xformers_ops().memory_efficient_attention(q, k, v)


def _short(e: BaseException) -> str:
    msg = str(e).strip().splitlines()
    return f"{type(e).__name__}: {msg[0][:160] if msg else ''}"


def probe_xformers(device: torch.device, dtype: torch.dtype, head_dim: int) -> tuple[bool, str]:
    """Whether xformers' kernels really run forward AND backward for this (device, dtype, head_dim).

    Runs a tiny BMHK call (and its backward, training uses this path) once per key and caches
    the answer with its reason; an import error or "No operator found" becomes the reason."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    key = (str(device), dtype, int(head_dim))
    if key in _XF_CACHE:
        return _XF_CACHE[key]
    if device.type != "cuda":
        ans = (False, f"xformers has no {device.type} kernel")
    else:
        try:
            xops = _xformers_ops()
            g = torch.Generator(device=device).manual_seed(0)
            q, k, v = (torch.randn(1, n, 1, head_dim, device=device, dtype=dtype, generator=g)
                       .requires_grad_() for n in (8, 5, 5))
            out = xops.memory_efficient_attention(q, k, v)
            out.float().sum().backward()
            ref = _attention_ref(q.detach().float(), k.detach().float(), v.detach().float())
            if not torch.allclose(out.detach().float(), ref, atol=2e-2, rtol=2e-2):
                ans = (False, "xformers ran but disagreed with the reference on the probe")
            elif any(t.grad is None or not torch.isfinite(t.grad).all() for t in (q, k, v)):
                ans = (False, "xformers backward gave no/non-finite gradients on the probe")
            else:
                ans = (True, f"xformers memory_efficient_attention dispatches on {device.type} "
                             f"{str(dtype).replace('torch.', '')} head_dim {head_dim}")
        except Exception as e:  # noqa: BLE001 - whatever fails, the answer is "cannot run here"
            ans = (False, f"xformers cannot run here ({_short(e)})")
    _XF_CACHE[key] = ans
    return ans


def _probe_xformers(q, *rest):
    # ``describe`` passes a shape-less stand-in: probe with the presets' most common head dim.
    head_dim = q.shape[-1] if len(q.shape) == 4 else 64
    return probe_xformers(q.device, q.dtype, head_dim)


_dispatch.register_reference(OP, _attention_ref)
_dispatch.register(OP, "xformers", _attention_xformers, _probe_xformers)
_dispatch.register(OP, "sdpa", _attention_sdpa, _probe_sdpa)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """softmax(q k^T / sqrt(Dh)) v.

    Args:
        q: ``[B, Lq, H, Dh]``. k, v: ``[B, Lk, H, Dh]``; same dtype and device as q.
        backend: ``"reference" | "sdpa" | "xformers" | "auto" | "fast"``.
    Returns:
        ``[B, Lq, H, Dh]`` in q's dtype.
    """
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(f"attention expects 4-d [B, L, H, Dh] q/k/v, got {tuple(q.shape)}, "
                         f"{tuple(k.shape)}, {tuple(v.shape)}")
    if k.shape != v.shape or q.shape[0] != k.shape[0] or q.shape[2:] != k.shape[2:]:
        raise ValueError(f"attention shape mismatch: q {tuple(q.shape)}, k {tuple(k.shape)}, "
                         f"v {tuple(v.shape)}")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"attention dtype mismatch: q {q.dtype}, k {k.dtype}, v {v.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError(f"attention device mismatch: q {q.device}, k {k.device}, v {v.device}")
    if not q.is_floating_point():
        raise ValueError(f"attention expects floating-point q/k/v, got {q.dtype}")
    _, fn, _ = _dispatch.resolve(OP, backend, q, k, v)
    return fn(q, k, v)
