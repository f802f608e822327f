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

Backends: ``reference`` (torch cumprod under autograd, the spec), and ``cpp`` (lrm_fast._C: one
pass per ray, no [R, S] intermediates; analytic backward with O(rays) saved state: the reverse walk
recovers each T_k from the stored final transmittance, see csrc/composite.h). The ``cpp`` forward
stops a ray once T < max(early_stop, 1e-20): with the default ``early_stop=0`` the skipped
samples change each output by less than 1e-20 (absolute), far below float32 resolution; with
``early_stop > 0`` by at most ``early_stop`` per channel. The reference never stops early.
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


# ------------------------------------------------------------------------------------------
# cpp backend (lrm_fast._C)


def _setup_context(ctx, inputs, output):
    rgb, sigma, deltas, depths, background, thresh = inputs
    color, depth, opacity, t_final, n_used = output
    ctx.save_for_backward(rgb, sigma, deltas, depths, background, depth, opacity, t_final, n_used)
    ctx.mark_non_differentiable(t_final, n_used)


def _backward(ctx, v_color, v_depth, v_opacity, v_t_final, v_n_used):
    rgb, sigma, deltas, depths, background, depth, opacity, t_final, n_used = ctx.saved_tensors
    v_rgb, v_sigma, v_bg = torch.ops.lrm_fast.composite_bwd(
        v_color, v_depth, v_opacity, rgb, sigma, deltas, depths, background, depth, opacity, t_final, n_used)
    # deltas and depths are constants of the sampling (see the module docstring)
    return v_rgb, v_sigma, None, None, v_bg, None


_AUTOGRAD_DONE = False


def _register_autograd():
    """Called by ``raymarch.load_extension`` once lrm_fast._C has defined the ops."""
    global _AUTOGRAD_DONE
    if not _AUTOGRAD_DONE:
        torch.library.register_autograd("lrm_fast::composite_fwd", _backward, setup_context=_setup_context)
        _AUTOGRAD_DONE = True


def _composite_cpp(rgb, sigma, deltas, depths, background, early_stop: float = 0.0):
    R = sigma.shape[0]
    dt = sigma.dtype
    bg = background.to(dt).expand(R, 3)
    color, depth, opacity, _, _ = torch.ops.lrm_fast.composite_fwd(
        rgb.to(dt), sigma, deltas.to(dt), depths.to(dt), bg, float(early_stop))
    return color, depth, opacity


def _weights_cpp(sigma, deltas):
    return torch.ops.lrm_fast.composite_weights(sigma.detach(), deltas.detach().to(sigma.dtype))


def _register_cpp():
    from .raymarch import cpp_probe

    _dispatch.register(OP, "cpp", _composite_cpp, cpp_probe("composite_fwd"))
    _dispatch.register("composite_weights", "cpp", _weights_cpp, cpp_probe("composite_weights"))


_register_cpp()


def composite_weights(sigma: torch.Tensor, deltas: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """The per-interval weights ``w_k = alpha_k T_k`` ``[R, S]`` (no gradient needed: they only
    drive importance sampling)."""
    if sigma.shape != deltas.shape or sigma.dim() != 2:
        raise ValueError(f"sigma/deltas must both be [R, S], got {tuple(sigma.shape)}, {tuple(deltas.shape)}")
    _, fn, _ = _dispatch.resolve("composite_weights", backend, sigma)
    return fn(sigma, deltas)


def composite(rgb: torch.Tensor, sigma: torch.Tensor, deltas: torch.Tensor, depths: torch.Tensor,
              background: torch.Tensor, backend: str = "auto", early_stop: float = 0.0):
    """Composite samples into pixels. See the module docstring for the formula.

    Args:
        rgb: ``[R, S, 3]`` interval colors. sigma: ``[R, S]`` activated densities (>= 0).
        deltas: ``[R, S]`` interval lengths. depths: ``[R, S]`` interval depths (for the depth map).
        background: ``[3]`` or ``[R, 3]`` color behind the volume.
        backend: ``"reference" | "cpp" | "auto" | "fast"``.
        early_stop: ``cpp`` only: stop a ray once its transmittance falls below this (the
            reference ignores it; see the module docstring for the bound).
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
    if early_stop < 0 or early_stop >= 1:
        raise ValueError(f"early_stop must be in [0, 1), got {early_stop}")
    name, fn, _ = _dispatch.resolve(OP, backend, sigma)
    if name == "cpp":
        return fn(rgb, sigma, deltas, depths, background, early_stop)
    return fn(rgb, sigma, deltas, depths, background)
