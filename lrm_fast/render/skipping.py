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

**Uniform skipping** (``UniformSkippingMarcher``, inference, TripoSR's sampler): TripoSR's bin-centre
samples, of which only those in occupied cells go to the field; a sample has no neighbour to share an
interval with (no midpoint averaging, delta ``1 / S``), so a dropped sample is simply density 0. With
the fixed delta a ray's dropped optical depth is at most ``sigma_skip`` (``S`` samples of ``1 / S``), so
the grid's rule for this sampler is ``sigma_skip = tau`` itself (``RenderConfig.ray_path`` = 1, not the
box diagonal of OpenLRM's world-length deltas): the dropped depth stays below ``tau``. The samples are
taken front to back in ``SEGMENTS`` segments; a ray whose transmittance has fallen below
``TRANSMITTANCE_FLOOR`` takes no more samples (the samples behind it could add less than that to its
pixel; inside an opaque object they are most of the occupied ones).
The kept samples of each ray, activated as they are evaluated, are composited in order by the exact
render's op (``UniformMarcher.composite_activated``) with the sampler's delta ``1 / S``, padded to the
longest ray's count with density 0 and colour 0: a skipped sample would be density 0, which neither
adds colour nor attenuates, so this is the exact render's compositing with the skipped samples left out.
"""
from __future__ import annotations

import math

import torch

from ..ops import importance, stratified
from ..ops.occupancy import (composite_samples_packed, composite_samples_packed_weights, occupancy_gather,
                             occupancy_lookup, occupancy_mark, occupancy_merge, occupancy_pack, occupancy_unpack)
from .marching import MarchContext, Marcher, UniformMarcher

SEGMENTS = 8                    # uniform skipping: front-to-back passes over a ray's samples
TRANSMITTANCE_FLOOR = 1e-4      # uniform skipping: a ray stops taking samples below this transmittance


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


class UniformSkippingMarcher(UniformMarcher):
    """TripoSR's sampler with empty-space skipping and a transmittance floor (module docstring),
    inference only: ``ctx.mask`` ``[B, G, G, G]`` bool (an occupancy grid's ``mask``). ``ctx.stats`` as
    ``SkippingMarcher``'s (``"dense"``: the samples the exact uniform render evaluates, every one)."""

    name = "uniform_skipping"

    def __call__(self, ctx: MarchContext, origins, dirs, near, far, bg):
        s, stats = ctx.sampling, ctx.stats
        depths, pts, hit = self.samples(ctx, origins, dirs)
        B, R, S = depths.shape
        items = torch.arange(B, device=pts.device).repeat_interleave(R)
        pts = pts.reshape(B * R, S, 3)
        # the lookup holds the exact render's in-box gate (a point outside the box is never occupied)
        occ = occupancy_lookup(ctx.mask, pts, s.box_min, s.box_max, items) & hit.reshape(B * R, 1)
        # only the rays with an occupied sample are marched; the others are (background, 0, 0)
        active = occ.any(1).nonzero()[:, 0]
        row = torch.full((B * R,), -1, dtype=torch.int64, device=pts.device)
        row[active] = torch.arange(active.shape[0], device=pts.device)
        taken = torch.zeros(active.shape[0], S, dtype=torch.bool, device=pts.device)
        kept = []                                   # per pass: (row, column, density, rgb) of its samples
        depth_left = torch.full((B * R,), -math.log(TRANSMITTANCE_FLOOR), dtype=torch.float32, device=pts.device)
        seg = -(-S // SEGMENTS)
        evaluated = 0
        for s0 in range(0, S, seg):
            take = occ[:, s0:s0 + seg] & (depth_left > 0)[:, None]
            idx = take.nonzero()
            if not idx.shape[0]:
                continue
            ray, col = idx[:, 0], idx[:, 1] + s0
            per_item = torch.zeros(B, dtype=torch.int64, device=pts.device).index_add_(  # rays are item-major
                0, torch.div(ray, R, rounding_mode="floor"), torch.ones_like(ray))
            out = ctx.raw_packed(pts[ray, col], _offsets(per_item)).to(pts.dtype)
            sigma = ctx.field.density(out[:, 0])
            taken[row[ray], col] = True
            kept.append((row[ray], col, sigma, ctx.field.rgb(out)))
            depth_left.index_add_(0, ray, sigma.float() / -S)
            evaluated += idx.shape[0]
        if stats is not None:
            stats["evaluated"] = stats.get("evaluated", 0) + evaluated
            stats["dense"] = stats.get("dense", 0) + B * R * S
            stats["rays"] = stats.get("rays", 0) + B * R
        bg = bg.reshape(B * R, 3)
        color, depth, opacity = bg.clone(), bg.new_zeros(B * R), bg.new_zeros(B * R)
        if kept:
            # each active ray's samples in order in [A, K] (K: the most any ray took), padded with density 0
            rr, cc, sigma, rgb = (torch.cat(x) for x in zip(*kept))
            count = taken.sum(1)
            K = int(count.max())
            pos = taken.cumsum(1)[rr, cc] - 1
            A = active.shape[0]
            sigma_k, rgb_k, dep_k = sigma.new_zeros(A, K), rgb.new_zeros(A, K, 3), sigma.new_zeros(A, K)
            sigma_k[rr, pos], rgb_k[rr, pos] = sigma, rgb
            dep_k[rr, pos] = depths.reshape(B * R, S)[active][rr, cc].to(sigma.dtype)
            c, d, o = self.composite_activated(ctx, rgb_k, sigma_k, dep_k, bg[active], 1.0 / S)
            color[active], depth[active], opacity[active] = c.to(bg.dtype), d.to(bg.dtype), o.to(bg.dtype)
        return color.reshape(B, R, 3), depth.reshape(B, R), opacity.reshape(B, R)
