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
recovers each T_k from the stored final transmittance, see csrc/composite.h). The fused op
``composite_samples`` (and its weights) also has ``triton`` (``kernels/composite.py``: tiles of
``[rays, samples]`` read coalesced, a recomputing backward; registered after ``cpp``, so ``auto``
takes it only where ``lrm_fast._C`` has no kernel for the device).

Early stop: with ``early_stop > 0`` a ray stops compositing once its transmittance falls below it:
interval ``k`` is used while ``T_1 .. T_k`` are all ``>= early_stop`` (the interval whose update
takes T below the threshold is the last one used; the weights after it are 0, and the depth
divides by the opacity of the used ones). The twin computes exactly that (``_used``), so the
truncated function and its gradient have a reference; its outputs differ from the full sum by at
most ``early_stop`` per channel. The ``cpp`` forward also stops, with the default
``early_stop=0``, once T < 1e-20 (it keeps T a normal float for its reverse walk); the twin does
not model that floor, which changes each output by less than 1e-20 (absolute), far below float32
resolution.
"""
from __future__ import annotations

import torch

from ..field.activations import DENSITY, EXP_CLAMP, MASKED_RAW_DENSITY, RGB_PAD, SOFTPLUS_THRESHOLD
from . import _dispatch, _ext, per_sample

OP = "composite"
T_EPS = 1e-10
T_FLOOR = 1e-20  # csrc/composite.h's COMPOSITE_T_FLOOR: the kernels stop below max(early_stop, this)


def _composite_ref(rgb, sigma, deltas, depths, background, early_stop: float = 0.0):
    R, S = sigma.shape
    bg = background.expand(R, 3) if background.dim() == 1 else background
    if S == 0:
        zero = sigma.new_zeros(R)
        return bg.clone(), zero, zero.clone()
    w = _weights_ref(sigma, deltas)
    if early_stop > 0:
        w = torch.where(_used(sigma, deltas, early_stop), w, torch.zeros((), dtype=w.dtype, device=w.device))
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


def _used(sigma, deltas, early_stop: float):
    """``[R, S]`` bool: the intervals a ray composites before it stops (module docstring): interval
    ``k`` while ``T_1 .. T_k >= max(early_stop, T_FLOOR)``, so the one that takes T below is used."""
    with torch.no_grad():
        alpha = 1.0 - torch.exp(-sigma * deltas)
        trans = torch.cumprod(1.0 - alpha + T_EPS, -1)  # T_1 .. T_S
        below = (trans[:, :-1] < max(early_stop, T_FLOOR)).cumsum(-1) > 0  # stopped before interval k + 1
        return torch.cat([torch.ones_like(below[:, :1]), ~below], -1)


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


# ------------------------------------------------------------------------------------------
# fused: raw field samples -> pixels (the renderer's fast path)

DENSITY_ACTS = {name: a.code for name, a in DENSITY.items()}  # the kernels' codes (field/activations.py)


def _sample_intervals(raw, t, origins, dirs, box_min, box_max, density_bias, density_activation, midpoint):
    """The renderer's unfused steps for the fused op, from ``per_sample`` (the one owner of the
    gate and activations): raw ``[R, S, 4]`` -> intervals (rgb, sigma, deltas, depths)."""
    inside = per_sample.in_box(per_sample.sample_points(origins, dirs, t), box_min, box_max)
    sr, rgb = per_sample.gate(raw[..., 0], per_sample.rgb_activation(raw[..., 1:4]), inside)
    return per_sample.intervals(t, sr, rgb, midpoint,
                                lambda x: per_sample.density_activation(x, density_bias, density_activation))


def _composite_samples_ref(raw, t, origins, dirs, background, box_min=-1.0, box_max=1.0, density_bias=-1.0,
                           density_activation="softplus", midpoint=True, early_stop=0.0):
    """The twin of the fused op, written with the renderer's own steps (``per_sample``'s gate,
    activations and intervals, then ``composite``): raw ``[R, S, 4]``, t ``[R, S]``, origins/dirs
    ``[R, 3]``, background ``[R, 3]`` -> rgb ``[R, 3]``, depth, opacity ``[R]``."""
    rgb_i, sigma, deltas, depth_i = _sample_intervals(raw, t, origins, dirs, box_min, box_max, density_bias,
                                                      density_activation, midpoint)
    return _composite_ref(rgb_i, sigma, deltas, depth_i, background, early_stop)


def _samples_setup_context(ctx, inputs, output):
    raw, t, origins, dirs, background, box_min, box_max, bias, act, midpoint, thresh = inputs
    color, depth, opacity, t_final, n_used = output
    ctx.params = (box_min, box_max, bias, act, midpoint)
    ctx.save_for_backward(raw, t, origins, dirs, background, depth, opacity, t_final, n_used)
    ctx.mark_non_differentiable(t_final, n_used)


def _samples_backward(ctx, v_color, v_depth, v_opacity, v_t_final, v_n_used):
    raw, t, origins, dirs, background, depth, opacity, t_final, n_used = ctx.saved_tensors
    v_raw, v_bg = torch.ops.lrm_fast.composite_samples_bwd(
        v_color, v_depth, v_opacity, raw, t, origins, dirs, background, *ctx.params, depth, opacity, t_final, n_used)
    return v_raw, None, None, None, v_bg, None, None, None, None, None, None


def composite_samples(raw: torch.Tensor, t: torch.Tensor, origins: torch.Tensor, dirs: torch.Tensor,
                      background: torch.Tensor, box_min: float = -1.0, box_max: float = 1.0,
                      density_bias: float = -1.0, density_activation: str = "softplus", midpoint: bool = True,
                      early_stop: float = 0.0, backend: str = "auto"):
    """Fused renderer tail: raw field outputs at sorted sample depths -> pixels.

    Args:
        raw: ``[R, S, 4]`` raw field outputs (density logit, rgb logits). t: ``[R, S]`` sorted depths.
        origins, dirs: ``[R, 3]``. background: ``[3]`` or ``[R, 3]``.
        early_stop: as ``composite`` (the module docstring), over the ``S - 1`` intervals.
    Returns:
        rgb ``[R, 3]``, depth ``[R]``, opacity ``[R]``, equal to ``_composite_samples_ref`` (the
        renderer's reference steps). Gradients flow to ``raw`` and ``background``.
    """
    if t.dim() != 2 or raw.shape != (*t.shape, 4):
        raise ValueError(f"composite_samples expects raw [R, S, 4] and t [R, S], got {tuple(raw.shape)}, {tuple(t.shape)}")
    if density_activation not in DENSITY_ACTS:
        raise ValueError(f"unknown density activation {density_activation!r} ({sorted(DENSITY_ACTS)})")
    R = t.shape[0]
    if background.shape not in ((3,), (R, 3)) or origins.shape != (R, 3) or dirs.shape != (R, 3):
        raise ValueError(f"origins/dirs must be [R, 3] and background [3] or [R, 3] with R = {R}")
    if early_stop < 0 or early_stop >= 1:
        raise ValueError(f"early_stop must be in [0, 1), got {early_stop}")
    _, fn, _ = _dispatch.resolve("composite_samples", backend, t)
    bg = background.to(t.dtype).expand(R, 3)
    return fn(raw, t, origins, dirs, bg, box_min, box_max, density_bias, density_activation, midpoint, early_stop)


def _composite_samples_cpp(raw, t, origins, dirs, background, box_min=-1.0, box_max=1.0, density_bias=-1.0,
                           density_activation="softplus", midpoint=True, early_stop=0.0):
    color, depth, opacity, _, _ = torch.ops.lrm_fast.composite_samples_fwd(
        raw.to(t.dtype), t, origins.to(t.dtype), dirs.to(t.dtype), background, float(box_min), float(box_max),
        float(density_bias), DENSITY_ACTS[density_activation], bool(midpoint), float(early_stop))
    return color, depth, opacity


def composite_samples_weights(raw, t, origins, dirs, box_min=-1.0, box_max=1.0, density_bias=-1.0,
                              density_activation="softplus", midpoint=True, backend: str = "auto"):
    """The interval weights ``[R, S-1]`` of ``composite_samples`` (no gradient; they drive
    importance sampling)."""
    _, fn, _ = _dispatch.resolve("composite_samples_weights", backend, t)
    return fn(raw, t, origins, dirs, box_min, box_max, density_bias, density_activation, midpoint)


def _composite_samples_weights_ref(raw, t, origins, dirs, box_min=-1.0, box_max=1.0, density_bias=-1.0,
                                   density_activation="softplus", midpoint=True):
    with torch.no_grad():
        _, sigma, deltas, _ = _sample_intervals(raw, t, origins, dirs, box_min, box_max, density_bias,
                                                density_activation, midpoint)
        return _weights_ref(sigma, deltas)


def _composite_samples_weights_cpp(raw, t, origins, dirs, box_min=-1.0, box_max=1.0, density_bias=-1.0,
                                   density_activation="softplus", midpoint=True):
    return torch.ops.lrm_fast.composite_samples_weights(
        raw.detach().to(t.dtype), t.detach(), origins.detach().to(t.dtype), dirs.detach().to(t.dtype), float(box_min),
        float(box_max), float(density_bias), DENSITY_ACTS[density_activation], bool(midpoint))


# ------------------------------------------------------------------------------------------
# triton backend of the fused op (kernels/composite.py, imported lazily as lrm_fast.kernels.composite)

TRITON_MAX_SAMPLES = 4096  # one ray's samples are one register row; longer rays take the cpp kernel
# elements per forward tile, half in the backward; 4 warps: 8 and 4 elements per thread of each of
# the ~40 live tile tensors. Untuned (no GPU yet): measure_gpu.py times 512 / 1024 / 2048; tests
# shrink it to run several programs at small sizes
TRITON_TILE = 1024


def _triton_launch(S: int, backward: bool) -> "tuple[int, int, int]":
    """(SP, BLOCK_R, num_warps): samples padded to a power of two (tl.arange), and enough rays per
    program for a ``TRITON_TILE``-element tile (half in the backward, which holds three intervals)."""
    SP = max(2, 1 << max(0, S - 1).bit_length())
    BLOCK_R = max(1, (TRITON_TILE // 2 if backward else TRITON_TILE) // SP)
    return SP, BLOCK_R, 4


def _triton_consts(t, box_min, box_max, density_bias, density_activation, stop):
    """The kernels' scalars as a tensor of the inputs' dtype, and their constexprs (the one home of
    the activations' constants: field/activations.py)."""
    params = torch.tensor([box_min, box_max, density_bias, stop], dtype=t.dtype, device=t.device)
    return params, dict(ACT=DENSITY_ACTS[density_activation], MASKED=MASKED_RAW_DENSITY, PAD=RGB_PAD,
                        SP_THRESH=SOFTPLUS_THRESHOLD, EXP_CLAMP=EXP_CLAMP)


def _triton_fwd(raw, t, origins, dirs, bg, box_min, box_max, density_bias, density_activation, midpoint, stop,
                weights: bool):
    from lrm_fast.kernels import composite as K

    R, S = t.shape
    SP, BLOCK_R, warps = _triton_launch(S, backward=False)
    params, consts = _triton_consts(t, box_min, box_max, density_bias, density_activation, stop)
    # the outputs of the other mode are 1-element stand-ins the kernel never touches
    one = (1,)
    color, depth, opacity = (t.new_empty(*(one if weights else shape)) for shape in ((R, 3), (R,), (R,)))
    w = t.new_empty(R, max(S - 1, 0)) if weights else t.new_empty(1)
    if weights:
        bg = t.new_empty(1)
    if R:
        # fp fusion off: the gate's o + t d must round as the twin's two torch ops
        K.composite_samples_fwd_kernel[(-(-R // BLOCK_R),)](
            raw, t, origins, dirs, bg, color, depth, opacity, w, params, R, S, MIDPOINT=bool(midpoint),
            WEIGHTS=weights, BLOCK_R=BLOCK_R, SP=SP, num_warps=warps, enable_fp_fusion=False, **consts)
    return w if weights else (color, depth, opacity)


class _CompositeSamplesTriton(torch.autograd.Function):
    """Saves the inputs and the per-ray outputs the backward needs (depth, opacity), nothing per
    sample: the backward kernel recomputes the forward in registers."""

    @staticmethod
    def forward(ctx, raw, t, origins, dirs, bg, box_min, box_max, density_bias, density_activation, midpoint, stop):
        color, depth, opacity = _triton_fwd(raw, t, origins, dirs, bg, box_min, box_max, density_bias,
                                            density_activation, midpoint, stop, weights=False)
        ctx.params = (box_min, box_max, density_bias, density_activation, midpoint, stop)
        ctx.save_for_backward(raw, t, origins, dirs, bg, depth, opacity)
        return color, depth, opacity

    @staticmethod
    def backward(ctx, v_color, v_depth, v_opacity):
        from lrm_fast.kernels import composite as K

        raw, t, origins, dirs, bg, depth, opacity = ctx.saved_tensors
        box_min, box_max, density_bias, density_activation, midpoint, stop = ctx.params
        R, S = t.shape
        v_raw = None
        if ctx.needs_input_grad[0]:
            SP, BLOCK_R, warps = _triton_launch(S, backward=True)
            params, consts = _triton_consts(t, box_min, box_max, density_bias, density_activation, stop)
            v_raw = torch.empty_like(raw)
            if R and S:
                K.composite_samples_bwd_kernel[(-(-R // BLOCK_R),)](
                    raw, t, origins, dirs, bg, depth, opacity, v_color.contiguous(), v_depth.contiguous(),
                    v_opacity.contiguous(), v_raw, params, R, S, MIDPOINT=bool(midpoint), BLOCK_R=BLOCK_R, SP=SP,
                    num_warps=warps, enable_fp_fusion=False, **consts)
        v_bg = (1.0 - opacity)[:, None] * v_color if ctx.needs_input_grad[4] else None
        return v_raw, None, None, None, v_bg, None, None, None, None, None, None


def _triton_inputs(raw, t, origins, dirs):
    dt = t.dtype
    return raw.to(dt).contiguous(), t.contiguous(), origins.to(dt).contiguous(), dirs.to(dt).contiguous()


def _composite_samples_triton(raw, t, origins, dirs, background, box_min=-1.0, box_max=1.0, density_bias=-1.0,
                              density_activation="softplus", midpoint=True, early_stop=0.0):
    raw, t, origins, dirs = _triton_inputs(raw, t, origins, dirs)
    bg = background.to(t.dtype).expand(t.shape[0], 3).contiguous()
    # deltas and depths are constants of the sampling, as for the cpp kernel (the module docstring)
    return _CompositeSamplesTriton.apply(raw, t.detach(), origins.detach(), dirs.detach(), bg, float(box_min),
                                         float(box_max), float(density_bias), density_activation, bool(midpoint),
                                         max(float(early_stop), T_FLOOR))


def _composite_samples_weights_triton(raw, t, origins, dirs, box_min=-1.0, box_max=1.0, density_bias=-1.0,
                                      density_activation="softplus", midpoint=True):
    raw, t, origins, dirs = _triton_inputs(raw.detach(), t.detach(), origins.detach(), dirs.detach())
    return _triton_fwd(raw, t, origins, dirs, None, box_min, box_max, density_bias, density_activation,
                       midpoint, 0.0, weights=True)


def _triton_probe(raw, t=None, *_):
    """Triton's machine checks (``_dispatch.triton_ready``), then the inputs: float32/float64 depths
    (the kernels compute in the depths' dtype, as the cpp ones) and rays short enough for one tile."""
    ok, where = _dispatch.triton_ready(raw)
    if not ok:
        return False, where
    t = raw if t is None else t
    if t.dtype not in _ext.CPP_DTYPES:
        return False, f"{str(t.dtype).replace('torch.', '')} inputs (the kernel takes float32/float64)"
    if t.dim() == 2 and t.shape[1] > TRITON_MAX_SAMPLES:
        return False, f"{t.shape[1]} samples per ray > {TRITON_MAX_SAMPLES} (one register tile per ray)"
    return True, f"tiled compositing Triton kernel ({where})"


def _composite_cpp(rgb, sigma, deltas, depths, background, early_stop: float = 0.0):
    R = sigma.shape[0]
    dt = sigma.dtype
    bg = background.to(dt).expand(R, 3)
    color, depth, opacity, _, _ = torch.ops.lrm_fast.composite_fwd(
        rgb.to(dt), sigma, deltas.to(dt), depths.to(dt), bg, float(early_stop))
    return color, depth, opacity


def _weights_cpp(sigma, deltas):
    return torch.ops.lrm_fast.composite_weights(sigma.detach(), deltas.detach().to(sigma.dtype))


# the fake kernels (torch.compile, opcheck), autograd formulas and cpp implementations of this
# file's ops, registered at import (no-ops where lrm_fast._C is not built)

@_ext.register_fake("composite_fwd")
def _(rgb, sigma, deltas, depths, background, thresh):
    R = sigma.shape[0]
    return (sigma.new_empty(R, 3), sigma.new_empty(R), sigma.new_empty(R), sigma.new_empty(R),
            sigma.new_empty(R, dtype=torch.int32))


@_ext.register_fake("composite_bwd")
def _(v_color, v_depth, v_opacity, rgb, sigma, deltas, depths, background, depth, opacity, t_final, n_used):
    return rgb.new_empty(rgb.shape), sigma.new_empty(sigma.shape), background.new_empty(background.shape)


@_ext.register_fake("composite_weights")
def _(sigma, deltas):
    return sigma.new_empty(sigma.shape)


@_ext.register_fake("composite_samples_fwd")
def _(raw, t, origins, dirs, background, box_min, box_max, bias, act, midpoint, thresh):
    R = t.shape[0]
    return (t.new_empty(R, 3), t.new_empty(R), t.new_empty(R), t.new_empty(R), t.new_empty(R, dtype=torch.int32))


@_ext.register_fake("composite_samples_bwd")
def _(v_color, v_depth, v_opacity, raw, t, origins, dirs, background, box_min, box_max, bias, act, midpoint,
      depth, opacity, t_final, n_used):
    return raw.new_empty(raw.shape), background.new_empty(background.shape)


@_ext.register_fake("composite_samples_weights")
def _(raw, t, origins, dirs, box_min, box_max, bias, act, midpoint):
    return t.new_empty(t.shape[0], max(t.shape[1] - 1, 0))


_ext.register_autograd("composite_fwd", _backward, setup_context=_setup_context)
_ext.register_autograd("composite_samples_fwd", _samples_backward, setup_context=_samples_setup_context)
_dispatch.register(OP, "cpp", _composite_cpp, _ext.cpp_probe("composite_fwd"),
                   ext_ops=("composite_fwd", "composite_bwd"))
_dispatch.register("composite_weights", "cpp", _weights_cpp, _ext.cpp_probe("composite_weights"),
                   ext_ops=("composite_weights",))
_dispatch.register_reference("composite_samples", _composite_samples_ref)
_dispatch.register("composite_samples", "cpp", _composite_samples_cpp, _ext.cpp_probe("composite_samples_fwd"),
                   ext_ops=("composite_samples_fwd", "composite_samples_bwd"))
_dispatch.register_reference("composite_samples_weights", _composite_samples_weights_ref)
_dispatch.register("composite_samples_weights", "cpp", _composite_samples_weights_cpp,
                   _ext.cpp_probe("composite_samples_weights"), ext_ops=("composite_samples_weights",))
# after cpp: auto keeps the measured CUDA kernel until the device table shows the tiled one faster;
# it takes over where lrm_fast._C has no CUDA kernels, and backend="triton" names it
_dispatch.register("composite_samples", "triton", _composite_samples_triton, _triton_probe,
                   prefer=_dispatch.triton_prefer)
_dispatch.register("composite_samples_weights", "triton", _composite_samples_weights_triton, _triton_probe,
                   prefer=_dispatch.triton_prefer)


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
        early_stop: stop a ray once its transmittance falls below this (0: never; the module
            docstring gives the rule and the bound).
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
    _, fn, _ = _dispatch.resolve(OP, backend, sigma)
    return fn(rgb, sigma, deltas, depths, background, early_stop)
