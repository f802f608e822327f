"""The renderer's empty-space skipping with an occupancy grid (``field/occupancy.py``: the grid and
its rule).

**Skipping** (``SkippingMarcher``, inference, OpenLRM's fused path): the coarse samples are the exact
render's stratified depths; only those in occupied cells and their neighbours along the ray
(a midpoint interval needs both of its samples) are sent to the field. The coarse weights of the
kept samples (``composite_samples_packed_weights``; the weight of the interval that bridges a gap
of dropped samples goes to its first sample) are scattered back onto the exact render's coarse
intervals (dropped intervals: weight 0, what the exact render gives them to within ``tau``) and
drive the unchanged importance sampler, so the importance depths are the exact render's wherever
the weights are. Coarse and importance samples are merged in the exact render's order, again only
the occupied ones and their neighbours are kept (the few neighbours the coarse pass did not
evaluate are evaluated now), and the kept samples are composited in the packed layout
(``composite_samples_packed``). Every interval with an occupied sample is then the exact render's
interval, bit for bit in its inputs.
"""
from __future__ import annotations

import torch

from ..ops import importance, stratified
from ..ops.occupancy import (composite_samples_packed, composite_samples_packed_weights, occupancy_gather,
                             occupancy_mark, occupancy_merge, occupancy_pack, occupancy_unpack)
from .marching import MarchContext, Marcher


def _offsets(counts: torch.Tensor) -> torch.Tensor:
    off = counts.new_zeros(counts.shape[0] + 1)
    torch.cumsum(counts, 0, out=off[1:])
    return off


def _longest(off: torch.Tensor, rays_per_item: int) -> torch.Tensor:
    """The largest batch item's count of packed samples (offsets ``off`` of rays grouped by item), 0-dim."""
    ends = off[::rays_per_item]
    return (ends[1:] - ends[:-1]).max()


def _read(*sizes: torch.Tensor) -> list:
    """Every size a pass needs on the host (0-dim int64 tensors) in one read: one sync for all of them
    (the packing ops and the padded field query take them instead of reading each their own)."""
    return torch.stack(sizes).tolist()


class SkippingMarcher(Marcher):
    """The exact marcher with empty-space skipping (module docstring), inference only: ``ctx.mask``
    ``[B, G, G, G]`` bool (an occupancy grid's ``mask``); rays as every marcher's (``marching.py``).
    ``ctx.stats`` (optional dict) accumulates the samples evaluated by the field (``"evaluated"``),
    those of the exact render (``"dense"``) and the rays. Every per-ray step is an op with a twin
    (``ops/occupancy.py``) and C++/CUDA kernels."""

    name = "skipping"

    def __call__(self, ctx: MarchContext, origins, dirs, near, far, bg):
        s, be, mask, stats = ctx.sampling, ctx.backend, ctx.mask, ctx.stats
        B, R = near.shape
        o, d = origins.reshape(B * R, 3), dirs.reshape(B * R, 3)
        box = (float(s.box_min), float(s.box_max))
        n_coarse = s.n_coarse
        kw = s.kw

        tc = stratified(near.reshape(-1), far.reshape(-1), n_coarse, jitter=False, backend=be)
        occ_c, keep_c, counts_c = occupancy_mark(o, d, tc, mask, R, *box, backend=be)
        off_c = _offsets(counts_c)
        n_c, longest_c = _read(off_c[-1], _longest(off_c, R))
        t_p, pts = occupancy_pack(o, d, tc, keep_c, off_c, n_c, backend=be)
        raw_p = ctx.raw_packed(pts, off_c[::R], longest_c).to(tc.dtype)
        evaluated, dense, off = raw_p.shape[0], tc.numel(), off_c
        if s.importance:
            w_p = composite_samples_packed_weights(raw_p, t_p, off_c, o, d, backend=be, **kw)
            w = occupancy_unpack(w_p, keep_c, off_c, backend=be)
            fine = importance(tc, w[:, :-1].float(), s.samples_per_ray - n_coarse, det=True, backend=be)
            t, keep, src, counts, need = occupancy_merge(o, d, tc, occ_c, keep_c, off_c, fine, mask, R, *box,
                                                         backend=be)
            off, off_n = _offsets(counts), _offsets(need)
            n, n_need, longest_n = _read(off[-1], off_n[-1], _longest(off_n, R))
            t_p, raw_p, pts_n, pos_n = occupancy_gather(o, d, t, keep, src, off, off_n, raw_p, n, n_need,
                                                        backend=be)
            if n_need:
                raw_p[pos_n] = ctx.raw_packed(pts_n, off_n[::R], longest_n).to(raw_p.dtype)
            evaluated += n_need
            dense = t.numel()
        if stats is not None:
            stats["evaluated"] = stats.get("evaluated", 0) + evaluated
            stats["dense"] = stats.get("dense", 0) + dense
            stats["rays"] = stats.get("rays", 0) + B * R
        color, depth, opacity = composite_samples_packed(raw_p, t_p, off, o, d, bg.reshape(B * R, 3).to(tc.dtype),
                                                         early_stop=ctx.early_stop, backend=be, **kw)
        return color.reshape(B, R, 3), depth.reshape(B, R), opacity.reshape(B, R)
