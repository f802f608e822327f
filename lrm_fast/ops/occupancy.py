"""Packed (ragged) samples for empty-space skipping: compositing ops and the per-sample index math.

With an occupancy grid the renderer drops the samples that lie in empty space, so rays carry
different numbers of samples. They are stored back to back (nerfacc's packed layout, as CSR
offsets): ray ``i`` owns samples ``offsets[i] .. offsets[i + 1] - 1`` of ``t [N]`` (sorted within the
ray) and ``raw [N, 4]``; ``offsets [R + 1]`` int64 starts at 0 and ends at ``N`` (nerfacc's
``packed_info [R, 2]`` is ``(offsets[:-1], offsets.diff())``; its ``ray_indices [N]`` is
``ray_indices(offsets)``).

``composite_samples_packed`` is ``composite_samples`` (``ops/composite.py``: in-box gate, OpenLRM
activations, midpoint intervals, compositing) applied to each ray's own samples: a ray with ``S_i``
samples has the ``S_i - 1`` intervals between them. A ray with fewer than 2 samples has no
interval: background, depth 0, opacity 0. Gradients flow to ``raw`` and ``background``.
``early_stop`` stops a ray as in ``composite`` (``ops/composite.py``'s docstring), twin included.

Backends: ``reference`` (the twin: rays padded to the longest one with samples that add exactly
nothing, then ``composite.py``'s own twin), and ``cpp`` (lrm_fast._C, CPU and CUDA: one ray per
thread running the same per-ray functions as the dense op, ``csrc/occupancy_*``; analytic backward).
"""
from __future__ import annotations

import torch

from . import _dispatch, _ext, per_sample
from .composite import DENSITY_ACTS, _composite_samples_ref
from .per_sample import MASKED_RAW_DENSITY, gate, in_box, sample_points

OP = "composite_samples_packed"


def offsets_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """``mask [R, S]`` bool (which samples of each ray are kept) -> ``offsets [R + 1]`` int64: the
    packed layout of ``x[mask]`` (row-major order keeps each ray's samples together and sorted)."""
    off = mask.new_zeros(mask.shape[0] + 1, dtype=torch.long)
    torch.cumsum(mask.sum(1), 0, out=off[1:])
    return off


def ray_indices(offsets: torch.Tensor) -> torch.Tensor:
    """``offsets [R + 1]`` -> ``[N]`` the ray of each packed sample (nerfacc's ``ray_indices``)."""
    counts = offsets.diff()
    return torch.repeat_interleave(torch.arange(counts.shape[0], device=offsets.device), counts)


def _check(raw, t, offsets, origins, dirs, background=None):
    if t.dim() != 1 or raw.shape != (t.shape[0], 4):
        raise ValueError(f"{OP} expects raw [N, 4] and t [N], got {tuple(raw.shape)}, {tuple(t.shape)}")
    if offsets.dim() != 1 or offsets.shape[0] < 1 or offsets.dtype != torch.long:
        raise ValueError(f"{OP} expects offsets [R + 1] int64, got {tuple(offsets.shape)} {offsets.dtype}")
    R = offsets.shape[0] - 1
    if origins.shape != (R, 3) or dirs.shape != (R, 3):
        raise ValueError(f"{OP}: origins/dirs must be [R, 3] with R = {R} (offsets [R + 1]), got "
                         f"{tuple(origins.shape)}, {tuple(dirs.shape)}")
    if background is not None and background.shape not in ((3,), (R, 3)):
        raise ValueError(f"{OP}: background must be [3] or [R, 3] with R = {R}, got {tuple(background.shape)}")
    return R


def _pad(raw, t, offsets):
    """Packed -> dense ``[R, Smax]`` rows that add exactly nothing past each ray's end: padding
    samples repeat the ray's last depth (delta 0) with raw density -1e4, so every padded interval
    has alpha 0 (and weight 0). Returns raw_d, t_d, counts, valid."""
    counts = offsets.diff()
    R = counts.shape[0]
    smax = int(counts.max()) if R else 0
    ar = torch.arange(smax, device=t.device)
    valid = ar < counts[:, None]
    last = (offsets[1:] - 1).clamp_min(0)
    idx = torch.where(valid, offsets[:-1, None] + ar, last[:, None]).clamp_max(max(t.shape[0] - 1, 0))
    if t.shape[0] == 0:
        return raw.new_zeros(R, smax, 4), t.new_zeros(R, smax), counts, valid
    t_d = t[idx]
    raw_d = raw[idx]
    pad_raw = torch.cat([torch.full_like(raw_d[..., :1], MASKED_RAW_DENSITY), raw_d[..., 1:]], -1)
    raw_d = torch.where(valid[..., None], raw_d, pad_raw)
    return raw_d, t_d, counts, valid


def _packed_ref(raw, t, offsets, origins, dirs, background, box_min=-1.0, box_max=1.0, density_bias=-1.0,
                density_activation="softplus", midpoint=True, early_stop=0.0):
    """The twin: each ray padded (``_pad``), ``composite.py``'s twin of the dense fused op, and the
    one output padding changes fixed (the depth of a ray without weight: the depth of its own last
    interval, or 0 for a ray with fewer than 2 samples). Padding never stops a ray early (its
    intervals leave T as it is, times 1 + 1e-10)."""
    raw_d, t_d, counts, _ = _pad(raw, t, offsets)
    R = counts.shape[0]
    bg = background.expand(R, 3)
    color, depth, opacity = _composite_samples_ref(raw_d, t_d, origins, dirs, bg, box_min, box_max, density_bias,
                                                   density_activation, midpoint, early_stop)
    if t_d.shape[1] >= 2:
        k = (counts - 2).clamp_min(0)[:, None]  # the ray's last interval
        a, b = t_d.gather(1, k)[:, 0], t_d.gather(1, k + 1)[:, 0]
        last_depth = 0.5 * (a + b) if midpoint else a
    else:
        last_depth = torch.zeros_like(depth)
    last_depth = torch.where(counts >= 2, last_depth, torch.zeros_like(last_depth))
    depth = torch.where(opacity > 0, depth, last_depth)
    return color, depth, opacity


def _packed_weights_ref(raw, t, offsets, origins, dirs, box_min=-1.0, box_max=1.0, density_bias=-1.0,
                        density_activation="softplus", midpoint=True):
    with torch.no_grad():
        raw_d, t_d, counts, valid = _pad(raw, t, offsets)
        inside = in_box(sample_points(origins, dirs, t_d), box_min, box_max) & valid
        sr, _ = gate(raw_d[..., 0], raw_d[..., 1:4], inside)
        x = 0.5 * (sr[:, 1:] + sr[:, :-1]) if midpoint else sr[:, :-1]
        sigma = per_sample.density_activation(x, density_bias, density_activation)
        alpha = 1.0 - torch.exp(-sigma * (t_d[:, 1:] - t_d[:, :-1]))
        shifted = torch.cat([torch.ones_like(alpha[:, :1]), 1.0 - alpha + 1e-10], -1)
        w = alpha * torch.cumprod(shifted, -1)[:, :-1]
        w = torch.cat([w, w.new_zeros(w.shape[0], 1)], -1)  # the last sample of a ray: 0
        return w[valid]


# ------------------------------------------------------------------------------------------
# cpp backend (lrm_fast._C, loaded by ops/_ext.py): fake kernels and autograd, registered at import


@_ext.register_fake("composite_samples_packed_fwd")
def _(raw, t, offsets, origins, dirs, background, box_min, box_max, bias, act, midpoint, thresh):
    R = offsets.shape[0] - 1
    return (t.new_empty(R, 3), t.new_empty(R), t.new_empty(R), t.new_empty(R), t.new_empty(R, dtype=torch.int32))


@_ext.register_fake("composite_samples_packed_bwd")
def _(v_color, v_depth, v_opacity, raw, t, offsets, origins, dirs, background, box_min, box_max, bias, act,
      midpoint, depth, opacity, t_final, n_used):
    return raw.new_empty(raw.shape), background.new_empty(background.shape)


@_ext.register_fake("composite_samples_packed_weights")
def _(raw, t, offsets, origins, dirs, box_min, box_max, bias, act, midpoint):
    return t.new_empty(t.shape)


def _setup_context(ctx, inputs, output):
    raw, t, offsets, origins, dirs, background, box_min, box_max, bias, act, midpoint, thresh = inputs
    color, depth, opacity, t_final, n_used = output
    ctx.params = (box_min, box_max, bias, act, midpoint)
    ctx.save_for_backward(raw, t, offsets, origins, dirs, background, depth, opacity, t_final, n_used)
    ctx.mark_non_differentiable(t_final, n_used)


def _backward(ctx, v_color, v_depth, v_opacity, v_t_final, v_n_used):
    raw, t, offsets, origins, dirs, background, depth, opacity, t_final, n_used = ctx.saved_tensors
    v_raw, v_bg = torch.ops.lrm_fast.composite_samples_packed_bwd(
        v_color.contiguous(), v_depth.contiguous(), v_opacity.contiguous(), raw, t, offsets, origins, dirs,
        background, *ctx.params, depth, opacity, t_final, n_used)
    return v_raw, None, None, None, None, v_bg, None, None, None, None, None, None


_ext.register_autograd("composite_samples_packed_fwd", _backward, setup_context=_setup_context)


def _packed_cpp(raw, t, offsets, origins, dirs, background, box_min=-1.0, box_max=1.0, density_bias=-1.0,
                density_activation="softplus", midpoint=True, early_stop=0.0):
    dt = t.dtype
    color, depth, opacity, _, _ = torch.ops.lrm_fast.composite_samples_packed_fwd(
        raw.to(dt), t, offsets, origins.to(dt), dirs.to(dt), background.to(dt).contiguous(), float(box_min),
        float(box_max), float(density_bias), DENSITY_ACTS[density_activation], bool(midpoint), float(early_stop))
    return color, depth, opacity


def _packed_weights_cpp(raw, t, offsets, origins, dirs, box_min=-1.0, box_max=1.0, density_bias=-1.0,
                        density_activation="softplus", midpoint=True):
    dt = t.dtype
    return torch.ops.lrm_fast.composite_samples_packed_weights(
        raw.detach().to(dt), t.detach(), offsets, origins.detach().to(dt), dirs.detach().to(dt), float(box_min),
        float(box_max), float(density_bias), DENSITY_ACTS[density_activation], bool(midpoint))


_dispatch.register_reference(OP, _packed_ref)
_dispatch.register(OP, "cpp", _packed_cpp, _ext.cpp_probe("composite_samples_packed_fwd"),
                   ext_ops=("composite_samples_packed_fwd", "composite_samples_packed_bwd"))
_dispatch.register_reference(OP + "_weights", _packed_weights_ref)
_dispatch.register(OP + "_weights", "cpp", _packed_weights_cpp, _ext.cpp_probe("composite_samples_packed_weights"),
                   ext_ops=("composite_samples_packed_weights",))


def composite_samples_packed(raw: torch.Tensor, t: torch.Tensor, offsets: torch.Tensor, origins: torch.Tensor,
                             dirs: torch.Tensor, background: torch.Tensor, box_min: float = -1.0,
                             box_max: float = 1.0, density_bias: float = -1.0, density_activation: str = "softplus",
                             midpoint: bool = True, early_stop: float = 0.0, backend: str = "auto"):
    """Fused renderer tail on packed samples (module docstring): raw ``[N, 4]``, t ``[N]``, offsets
    ``[R + 1]`` int64, origins/dirs ``[R, 3]``, background ``[3]`` or ``[R, 3]`` -> rgb ``[R, 3]``,
    depth ``[R]``, opacity ``[R]``. ``early_stop`` (``cpp`` only) as ``composite_samples``."""
    R = _check(raw, t, offsets, origins, dirs, background)
    if density_activation not in DENSITY_ACTS:
        raise ValueError(f"unknown density activation {density_activation!r} ({sorted(DENSITY_ACTS)})")
    if early_stop < 0 or early_stop >= 1:
        raise ValueError(f"early_stop must be in [0, 1), got {early_stop}")
    _, fn, _ = _dispatch.resolve(OP, backend, t)
    bg = background.to(t.dtype).expand(R, 3)
    return fn(raw, t, offsets, origins, dirs, bg, box_min, box_max, density_bias, density_activation, midpoint,
              early_stop)


def composite_samples_packed_weights(raw, t, offsets, origins, dirs, box_min=-1.0, box_max=1.0, density_bias=-1.0,
                                     density_activation="softplus", midpoint=True, backend: str = "auto"):
    """The interval weights of ``composite_samples_packed`` as ``[N]`` (no gradient): entry
    ``offsets[i] + k`` is the weight of ray ``i``'s interval ``k`` (its samples ``k`` and ``k + 1``);
    each ray's last sample gets 0."""
    _check(raw, t, offsets, origins, dirs)
    _, fn, _ = _dispatch.resolve(OP + "_weights", backend, t)
    return fn(raw, t, offsets, origins, dirs, box_min, box_max, density_bias, density_activation, midpoint)


# ------------------------------------------------------------------------------------------
# per-sample occupancy (index math; O(samples) torch ops)


def occupancy_lookup(mask: torch.Tensor, points: torch.Tensor, box_min: float, box_max: float,
                     item: torch.Tensor | None = None) -> torch.Tensor:
    """Whether each point lies in an occupied cell: mask ``[B, G, G, G]`` bool over the box
    ``[box_min, box_max]^3`` (cell ``(i, j, k)`` covers ``x`` in ``box_min + [i, i + 1) * h``, and so on,
    ``h = (box_max - box_min) / G``; a point on the upper face belongs to the last cell), points
    ``[R, S, 3]``, item ``[R]`` the batch item of each ray (None: all item 0) -> ``[R, S]`` bool.
    Points outside the box (the renderer's in-box gate, same comparison) are never occupied."""
    G = mask.shape[-1]
    inbox = in_box(points, box_min, box_max)
    ijk = ((points - box_min) * (G / (box_max - box_min))).floor_().clamp_(0, G - 1)
    if points.dtype in (torch.float32, torch.float64) and G ** 3 <= 1 << 24:
        # the cell index in the points' float (whole numbers below 2^24: exact), one int64 conversion
        flat = ((ijk[..., 0] * G + ijk[..., 1]) * G + ijk[..., 2]).long()
    else:
        ijk = ijk.long()
        flat = (ijk[..., 0] * G + ijk[..., 1]) * G + ijk[..., 2]
    if item is not None and mask.shape[0] > 1:
        flat = flat + (item * (G * G * G))[:, None]
    return mask.reshape(-1)[flat] & inbox


def with_neighbours(keep: torch.Tensor) -> torch.Tensor:
    """``keep [R, S]`` -> keep, or-ed with its two neighbours along each ray: the samples a kept
    sample shares an interval with (a midpoint interval needs both of its samples)."""
    out = keep.clone()
    out[:, 1:] |= keep[:, :-1]
    out[:, :-1] |= keep[:, 1:]
    return out


# ------------------------------------------------------------------------------------------
# the renderer's per-ray skipping steps (render/skipping.py's algorithm): twins here, kernels in
# csrc/occupancy.h (CPU + CUDA). Rays are grouped by batch item: ray r belongs to item
# r // rays_per_item of grid [B, G, G, G] bool.


def _items(R, rays_per_item, device):
    return torch.arange(R, device=device) // rays_per_item


def _mark_ref(origins, dirs, t, grid, rays_per_item: int, box_min: float, box_max: float):
    pts = sample_points(origins, dirs, t)
    occ = occupancy_lookup(grid, pts, box_min, box_max, _items(t.shape[0], rays_per_item, t.device))
    keep = with_neighbours(occ)
    return occ, keep, keep.sum(1)


def _sized(op, name, n, offsets):
    """A caller's packed total ``n`` (-1: none given) must be the layout's, ``offsets[-1]`` (the
    kernels' ``packed_total`` checks it where that is free and trusts it on CUDA; the twin checks)."""
    if n >= 0 and n != (got := int(offsets[-1])):
        raise ValueError(f"{op}: {name} must be {got} (the offsets' last entry), got {n}")


def _pack_ref(origins, dirs, t, keep, offsets, n=-1):
    pts = sample_points(origins, dirs, t)
    _sized("occupancy_pack", "n", n, offsets)
    return t[keep], pts[keep]


def _unpack_ref(values, keep, offsets):
    out = values.new_zeros(keep.shape)
    out[keep] = values
    return out


def _merge_ref(origins, dirs, t_c, occ_c, keep_c, offsets_c, t_f, grid, rays_per_item: int, box_min: float,
               box_max: float):
    R = t_c.shape[0]
    t, order = torch.sort(torch.cat([t_c, t_f], 1), dim=1, stable=True)  # merge_samples' order
    pts_f = sample_points(origins, dirs, t_f)
    occ_f = occupancy_lookup(grid, pts_f, box_min, box_max, _items(R, rays_per_item, t_c.device))
    keep = with_neighbours(torch.cat([occ_c, occ_f], 1).gather(1, order))
    rank = offsets_c[:-1, None] + keep_c.long().cumsum(1) - 1
    src_c = torch.where(keep_c, rank, torch.full_like(rank, -1))
    src = torch.cat([src_c, torch.full_like(t_f, -1, dtype=torch.long)], 1).gather(1, order)
    src = torch.where(keep, src, torch.full_like(src, -2))
    return t, keep, src, keep.sum(1), (src == -1).sum(1)


def _gather_ref(origins, dirs, t, keep, src, offsets, offsets_need, raw_c, n=-1, n_need=-1):
    _sized("occupancy_gather", "n", n, offsets)
    _sized("occupancy_gather", "n_need", n_need, offsets_need)
    s = src[keep]
    have = s >= 0
    raw_p = torch.where(have[:, None], raw_c[s.clamp_min(0)] if raw_c.shape[0] else raw_c.new_zeros(s.shape[0], 4),
                        torch.zeros((), dtype=raw_c.dtype))
    pts = sample_points(origins, dirs, t)[keep]
    return t[keep], raw_p, pts[~have], (~have).nonzero().squeeze(1)


# the kernels, with the twins' signatures (the ops have no backward: indices and depths only)

def _mark_cpp(origins, dirs, t, grid, rays_per_item: int, box_min: float, box_max: float):
    return torch.ops.lrm_fast.occupancy_mark(origins, dirs, t, grid, rays_per_item, box_min, box_max)


def _pack_cpp(origins, dirs, t, keep, offsets, n=-1):
    return torch.ops.lrm_fast.occupancy_pack(origins, dirs, t, keep, offsets, n)


def _unpack_cpp(values, keep, offsets):
    return torch.ops.lrm_fast.occupancy_unpack(values, keep, offsets)


def _merge_cpp(origins, dirs, t_c, occ_c, keep_c, offsets_c, t_f, grid, rays_per_item: int, box_min: float,
               box_max: float):
    return torch.ops.lrm_fast.occupancy_merge(origins, dirs, t_c, occ_c, keep_c, offsets_c, t_f, grid, rays_per_item,
                                              box_min, box_max)


def _gather_cpp(origins, dirs, t, keep, src, offsets, offsets_need, raw_c, n=-1, n_need=-1):
    return torch.ops.lrm_fast.occupancy_gather(origins, dirs, t, keep, src, offsets, offsets_need, raw_c, n, n_need)


# fake kernels (torch.compile, opcheck); the packed lengths N = offsets[-1] are data: the caller's
# sizes where it gives them, else new dynamic sizes


def _size(n):
    return torch.library.get_ctx().new_dynamic_size() if isinstance(n, int) and n < 0 else n


@_ext.register_fake("occupancy_mark")
def _(origins, dirs, t, grid, rays_per_item, box_min, box_max):
    R, S = t.shape
    return (t.new_empty(R, S, dtype=torch.bool), t.new_empty(R, S, dtype=torch.bool),
            t.new_empty(R, dtype=torch.long))


@_ext.register_fake("occupancy_pack")
def _(origins, dirs, t, keep, offsets, n=-1):
    n = _size(n)
    return t.new_empty(n), t.new_empty(n, 3)


@_ext.register_fake("occupancy_unpack")
def _(values, keep, offsets):
    return values.new_empty(keep.shape)


@_ext.register_fake("occupancy_merge")
def _(origins, dirs, t_c, occ_c, keep_c, offsets_c, t_f, grid, rays_per_item, box_min, box_max):
    R, n = t_c.shape[0], t_c.shape[1] + t_f.shape[1]
    return (t_c.new_empty(R, n), t_c.new_empty(R, n, dtype=torch.bool), t_c.new_empty(R, n, dtype=torch.long),
            t_c.new_empty(R, dtype=torch.long), t_c.new_empty(R, dtype=torch.long))


@_ext.register_fake("occupancy_gather")
def _(origins, dirs, t, keep, src, offsets, offsets_need, raw_c, n=-1, n_need=-1):
    n, n_need = _size(n), _size(n_need)
    return t.new_empty(n), t.new_empty(n, 4), t.new_empty(n_need, 3), t.new_empty(n_need, dtype=torch.long)


_STEPS = {"occupancy_mark": (_mark_ref, _mark_cpp), "occupancy_pack": (_pack_ref, _pack_cpp),
          "occupancy_unpack": (_unpack_ref, _unpack_cpp), "occupancy_merge": (_merge_ref, _merge_cpp),
          "occupancy_gather": (_gather_ref, _gather_cpp)}
for _op, (_ref, _cpp) in _STEPS.items():
    _dispatch.register_reference(_op, _ref)
    _dispatch.register(_op, "cpp", _cpp, _ext.cpp_probe(_op), ext_ops=(_op,))


def _step(op: str, backend: str, *args):
    _, fn, _ = _dispatch.resolve(op, backend, args[2])  # probed on the depths: dtype and device
    return fn(*args)


def occupancy_mark(origins, dirs, t, grid, rays_per_item: int, box_min: float, box_max: float, backend="auto"):
    """Coarse pass: origins/dirs ``[R, 3]``, t ``[R, S]``, grid ``[B, G, G, G]`` bool -> occ ``[R, S]``
    bool (``occupancy_lookup``), keep ``[R, S]`` (``with_neighbours(occ)``), counts ``[R]`` int64."""
    return _step("occupancy_mark", backend, origins, dirs, t, grid, int(rays_per_item), float(box_min),
                 float(box_max))


def occupancy_pack(origins, dirs, t, keep, offsets, n: int = -1, backend="auto"):
    """The kept samples, packed: t ``[N]`` and their points ``o + t d`` ``[N, 3]`` (ray_points' rounding).
    ``n``: ``N = offsets[-1]`` if the caller has it (-1: the op reads it, on CUDA a host sync; a wrong
    ``n`` is an error wherever checking it is free, and is trusted on CUDA)."""
    return _step("occupancy_pack", backend, origins, dirs, t, keep, offsets, n)


def occupancy_unpack(values, keep, offsets, backend="auto"):
    """Packed ``values [N]`` back onto ``keep [R, S]``'s samples, 0 elsewhere -> ``[R, S]``."""
    _, fn, _ = _dispatch.resolve("occupancy_unpack", backend, values)
    return fn(values, keep, offsets)


def occupancy_merge(origins, dirs, t_c, occ_c, keep_c, offsets_c, t_f, grid, rays_per_item: int, box_min: float,
                    box_max: float, backend="auto"):
    """Merged pass: coarse ``t_c [R, A]`` (with its ``occ_c``, ``keep_c`` and packed ``offsets_c``) and
    importance ``t_f [R, B]`` merged as ``merge_samples`` -> t ``[R, A + B]``, keep (occupied or next to
    an occupied sample, merged order), src ``[R, A + B]`` int64 (packed coarse index holding the raw
    outputs; -1: to evaluate; -2: dropped), counts and counts to evaluate ``[R]``."""
    return _step("occupancy_merge", backend, origins, dirs, t_c, occ_c, keep_c, offsets_c, t_f, grid,
                 int(rays_per_item), float(box_min), float(box_max))


def occupancy_gather(origins, dirs, t, keep, src, offsets, offsets_need, raw_c, n: int = -1, n_need: int = -1,
                     backend="auto"):
    """The merged kept samples, packed: t ``[N]``, raw ``[N, 4]`` (coarse outputs copied, zeros where
    the field must still run), the points to evaluate ``[Nn, 3]`` and their packed positions ``[Nn]``.
    ``n``, ``n_need``: ``N = offsets[-1]`` and ``Nn = offsets_need[-1]`` as ``occupancy_pack``'s ``n``."""
    return _step("occupancy_gather", backend, origins, dirs, t, keep, src, offsets, offsets_need, raw_c, n, n_need)
