"""Volume renderer: planes + cameras -> images. Two samplers (``RenderConfig.sampler``), chosen per
render in ``_render_rays``: ``"openlrm"`` (OpenLRM ``ImportanceRenderer`` + ``MipRayMarcher2``, below)
and ``"triposr"`` (TripoSR's uniform bins in a shrunk box, ``_render_rays_triposr``).

Per ray with the openlrm sampler (chunked over rays, all batch items at once):

1. ray through the pixel center (``ops.generate_rays``), clipped to the box (``ops.ray_box``);
2. ``S/2`` stratified depths in [near, far] (``ops.stratified``; jittered when training);
3. raw field outputs at those points;
4. coarse weights -> ``S/2`` importance depths (``ops.importance``), raw field outputs at them,
   both sets merged into one sorted set (``ops.merge_samples``);
5. per sample, OpenLRM's in-box filter: outside the box raw density ``-1e4`` (activated: 0) and
   color 0, else the field's activations; intervals between adjacent samples: midpoint
   colors/raw densities/depths, ``density(.)``, deltas (OpenLRM ``MipRayMarcher2``), or, with
   ``midpoint=False``, the samples themselves (all of step 5 is written once, in
   ``ops/per_sample.py``, which the field, both paths here and the fused op's twin call);
6. compositing on the background.

Steps 5-6 (and the coarse weights of step 4) are one op, ``ops.composite_samples`` (its twin is
written with the steps above); a field that overrides its activations, or a plain-sigmoid rgb, runs
them unfused (``_gate``, ``_intervals``, ``ops.composite``). Steps 2-6 live in ``_march``, which
both backends run: the reference on every ray with the pure-torch twins, the fast path with the
C++/CUDA kernels (no [R, S] autograd intermediates for the compositing, whose backward is analytic)
on the CPU only on the rays that hit the box (missed rays cost nothing: their outputs are the
background, depth 0, opacity 0, exactly what the reference computes for them), on a GPU on every
ray of the batch at once (``compact_misses``: the per-item compaction was launch-bound there).

Outputs ``rgb [B, V, H, W, 3]``, ``depth [B, V, H, W]``, ``opacity [B, V, H, W]``. Everything here is
a pure function of (planes, field weights, cameras): reconstruct once, render many views.
``early_stop`` (default 0: exact) lets the fast compositing kernel stop a ray once its
transmittance is below it.
"""
from __future__ import annotations

import torch
from torch import nn

from ..config import RenderConfig
from ..ops import (_dispatch, composite, composite_weights, generate_rays, importance, merge_samples, per_sample,
                   ray_box, ray_points, stratified)
from ..ops.composite import composite_samples, composite_samples_weights
from ..field.occupancy import OccupancyGrid
from ..field.triplane import TriplaneField
from .skipping import march_skip, skips


def _as_background(background, B: int, V: int, dtype, device) -> torch.Tensor:
    bg = torch.as_tensor(background, dtype=dtype, device=device)
    if bg.dim() == 0:
        bg = bg.expand(3)
    if bg.shape == (3,):
        return bg.expand(B, V, 3)
    if bg.shape == (B, V, 3):
        return bg
    raise ValueError(f"background must be a number, [3] or [B, V, 3] = {(B, V, 3)}, got {tuple(bg.shape)}")


class Renderer(nn.Module):
    backend = "auto"
    early_stop = 0.0  # fast path only: transmittance below which a ray stops compositing
    compact_misses = "auto"  # fast path only: see _compacts
    skip_stats: dict | None = None  # set to a dict to count the samples empty-space skipping evaluates

    def __init__(self, cfg: RenderConfig, field: TriplaneField):
        super().__init__()
        self.cfg = cfg
        self.field = field

    # -- the field: used, not owned ---------------------------------------------------------------
    # The renderer renders with a field that its owner holds (``LRM.field``): it is no submodule
    # here, so a model's state dict has each field weight once (``field.*``). A device or dtype move
    # of the renderer (``.to``, ``.cuda``, ``.double``) and ``train``/``eval`` still reach the field,
    # so a renderer on its own keeps working as one unit.
    def __setattr__(self, name, value):
        if name == "field":
            self.__dict__.pop("field", None)
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        if recurse:
            self.field._apply(fn, recurse)  # idempotent where the owner moved it already
        return self

    def train(self, mode: bool = True):
        super().train(mode)
        self.field.train(mode)
        return self

    # -- one set of samples ---------------------------------------------------------------------
    def _query(self, planes, origins, dirs, depths, valid):
        """raw field outputs at ``origins + depths * dirs``. origins/dirs ``[B, R, 3]``,
        depths ``[B, R, S]``, valid ``[B, R]`` -> raw density ``[B, R, S]``, rgb ``[B, R, S, 3]``."""
        B, R, S = depths.shape
        pts = per_sample.sample_points(origins, dirs, depths)
        raw = self.field(planes, pts.reshape(B, R * S, 3)).reshape(B, R, S, 4)
        inside = per_sample.in_box(pts, self.cfg.box_min, self.cfg.box_max) & valid[..., None]
        return per_sample.gate(raw[..., 0], self.field.rgb(raw), inside)

    def _intervals(self, depths, sigma_raw, rgb):
        """Samples -> intervals: (rgb [.., S', 3], sigma [.., S'], deltas, interval depths)."""
        return per_sample.intervals(depths, sigma_raw, rgb, self.cfg.midpoint, self.field.density)

    def _use_fast(self, t: torch.Tensor) -> bool:
        if self.backend == "reference":
            return False
        name, _, _ = _dispatch.resolve("composite", self.backend, t)
        return name == "cpp"

    def _compacts(self, t: torch.Tensor) -> bool:
        """Whether the fast path marches only the rays that hit the box, batch item by batch item.
        ``compact_misses``: ``"auto"`` (default) compacts on the CPU, where a missed ray's samples
        cost real time, and marches every ray of the whole batch at once on a GPU, where the
        per-item loop (a host sync and ~10 launches per item and chunk) dominated: a demo training
        step on an H200 took 1.33 s on the compacting fast path vs 0.24 s on the reference path,
        which marches all items at once (``docs/readme/gpu.md``). ``"always"`` / ``"never"`` force it."""
        mode = self.compact_misses
        if mode not in ("auto", "always", "never"):
            raise ValueError(f"compact_misses must be auto|always|never, got {mode!r}")
        return mode == "always" or (mode == "auto" and not t.is_cuda)

    def _render_rays_fast(self, planes, origins, dirs, bg, jitter: bool, generator, mask=None):
        """The fast path of ``_render_rays`` (same signature and outputs): per batch item, only the
        rays that hit the box are marched (``_march``, with this backend's kernels), or, where
        ``_compacts`` says no, every ray of every item in one ``_march``, misses masked after."""
        cfg = self.cfg
        B, R, _ = origins.shape
        near, far, hit = ray_box(origins, dirs, cfg.box_min, cfg.box_max, backend=self.backend)
        if not self._compacts(origins):
            # a missed ray has near = far = 0: its samples sit at its origin, outside the box, and
            # are gated out; the mask makes its outputs exactly (background, 0, 0)
            c, dep, op = self._march_any(planes, origins, dirs, near, far, bg, jitter, generator, mask)
            return (torch.where(hit[..., None], c, bg.to(c.dtype)), torch.where(hit, dep, 0.0),
                    torch.where(hit, op, 0.0))
        colors, depths_out, opacities = [], [], []
        for b in range(B):
            idx = hit[b].nonzero().squeeze(1)
            if idx.numel() == 0:
                colors.append(bg[b])
                depths_out.append(origins.new_zeros(R))
                opacities.append(origins.new_zeros(R))
                continue
            every = idx.numel() == R  # a close-up view: no gather and no scatter

            def take(x):
                return x[b:b + 1] if every else x[b, idx][None]

            c, dep, op = self._march_any(planes[b:b + 1], take(origins), take(dirs), take(near), take(far), take(bg),
                                         jitter, generator, None if mask is None else mask[b:b + 1])
            if every:
                c, dep, op = c[0], dep[0], op[0]
            else:
                c = bg[b].index_put((idx,), c[0])
                dep = origins.new_zeros(R).index_put((idx,), dep[0])
                op = origins.new_zeros(R).index_put((idx,), op[0])
            colors.append(c)
            depths_out.append(dep)
            opacities.append(op)
        return torch.stack(colors), torch.stack(depths_out), torch.stack(opacities)

    def _fusable(self, t: torch.Tensor) -> bool:
        """The fused compositing op reimplements the field's rgb/density activations (OpenLRM's
        widened sigmoid; softplus or exp density): a field subclass that overrides them, or a plain
        sigmoid rgb (TripoSR's), takes the unfused ops (gate + activate with the field's own methods,
        intervals, ``composite``)."""
        f = type(self.field)
        if not (f.rgb is TriplaneField.rgb and f.density is TriplaneField.density):
            return False
        if self.field.cfg.rgb_activation != "sigmoid_wide":
            return False
        return self.backend == "reference" or _dispatch.resolve("composite_samples", self.backend, t)[0] == "cpp"

    def _raw(self, planes, origins, dirs, depths):
        """raw field outputs ``[B * R, S, 4]`` at ``origins + depths * dirs``: origins/dirs ``[B * R, 3]``,
        depths ``[B * R, S]``, planes ``[B, 3, C, H, W]`` (rays grouped by batch item)."""
        BR, S = depths.shape
        B = planes.shape[0]
        pts = ray_points(origins, dirs, depths, backend=self.backend)
        # in the depths' dtype (a bf16 field under autocast): the merge and compositing kernels
        # take one dtype, and the compositing runs in float32 anyway
        return self.field(planes, pts.reshape(B, (BR // B) * S, 3)).reshape(BR, S, -1).to(depths.dtype)

    def _gate(self, raw, depths, origins, dirs):
        """The unfused twin of the fused op's first step (OpenLRM's in-box filter): raw ``[R, S, 4]``
        -> raw density ``[R, S]`` (``-1e4`` outside the box) and activated rgb ``[R, S, 3]`` (0 outside)."""
        pts = ray_points(origins, dirs, depths, backend="reference")  # the bits _raw used
        inside = per_sample.in_box(pts, self.cfg.box_min, self.cfg.box_max)
        return per_sample.gate(raw[..., 0], self.field.rgb(raw), inside)

    def _march(self, planes, origins, dirs, near, far, bg, jitter, generator):
        """Steps 2-6 of the module docstring for a set of rays, with ``self.backend``'s ops: the
        reference renderer runs it on every ray, the fast path on the rays that hit the box.

        planes ``[B, 3, C, H, W]``; origins/dirs/bg ``[B, R, 3]``, near/far ``[B, R]`` (from ``ray_box``)
        -> rgb ``[B, R, 3]``, depth, opacity ``[B, R]``.
        """
        cfg, be = self.cfg, self.backend
        B, R = near.shape
        o, d = origins.reshape(B * R, 3), dirs.reshape(B * R, 3)
        n_coarse = cfg.samples_per_ray // 2 if cfg.importance else cfg.samples_per_ray
        depths = stratified(near.reshape(-1), far.reshape(-1), n_coarse, jitter=jitter, generator=generator,
                            backend=be)
        raw = self._raw(planes, o, d, depths)
        fused = self._fusable(depths)
        fc = self.field.cfg
        kw = dict(box_min=cfg.box_min, box_max=cfg.box_max, density_bias=fc.density_bias,
                  density_activation=fc.density_activation, midpoint=cfg.midpoint)
        if cfg.importance:
            with torch.no_grad():
                if fused:
                    w = composite_samples_weights(raw, depths, o, d, backend=be, **kw)
                else:
                    _, sig_c, del_c, _ = self._intervals(depths, *self._gate(raw, depths, o, d))
                    w = composite_weights(sig_c, del_c.to(sig_c.dtype), backend=be)
                fine = importance(depths, w.float(), cfg.samples_per_ray - n_coarse, det=not jitter,
                                  generator=generator, backend=be)
                if jitter:  # random CDF levels give unsorted draws; merge_samples wants sorted sets
                    fine = fine.sort(-1).values
            depths, raw = merge_samples(depths, raw, fine, self._raw(planes, o, d, fine), backend=be)
        bg = bg.reshape(B * R, 3).to(depths.dtype)
        if fused:
            color, depth, opacity = composite_samples(raw, depths, o, d, bg, early_stop=self.early_stop,
                                                      backend=be, **kw)
        else:
            rgb_i, sigma_i, deltas, mids = self._intervals(depths, *self._gate(raw, depths, o, d))
            color, depth, opacity = composite(rgb_i, sigma_i, deltas.to(sigma_i.dtype), mids.to(sigma_i.dtype),
                                              bg.to(sigma_i.dtype), backend=be, early_stop=self.early_stop)
        return color.reshape(B, R, 3), depth.reshape(B, R), opacity.reshape(B, R)

    def _render_rays_triposr(self, planes, origins, dirs, bg, jitter: bool, generator):
        """TripoSR's sampler (``RenderConfig.sampler="triposr"``): S samples at bin centers
        ``near + (i + 0.5) / S * (far - near)`` (with ``jitter``, at a uniform random place inside
        each bin instead: TripoSR has no training renderer of its own), no importance pass, no
        midpoint averaging, and every sample's delta is ``1 / S`` (not scaled by far - near: TripoSR's
        own quirk, kept so its checkpoints render as in TripoSR). Its ray-box test too: the box shrunk
        by ``1 - box_shrink``, rays with ``far - near <= min_span`` are misses (background).
        ``early_stop`` goes to the compositing op as on the openlrm sampler."""
        cfg, be = self.cfg, self.backend
        B, R, _ = origins.shape
        S = cfg.samples_per_ray
        k = 1.0 - cfg.box_shrink
        near, far, hit = ray_box(origins, dirs, cfg.box_min * k, cfg.box_max * k, backend=be)
        if cfg.min_span > 0:
            hit = hit & (far - near > cfg.min_span)
            near, far = torch.where(hit, near, 0.0), torch.where(hit, far, 0.0)
        if jitter:
            u = torch.rand((B, R, S), generator=generator, device=near.device, dtype=near.dtype)
            steps = (torch.arange(S, device=near.device, dtype=near.dtype) + u) / S
        else:
            steps = (torch.arange(S, device=near.device, dtype=near.dtype) + 0.5) / S
        depths = near[..., None] + steps * (far - near)[..., None]
        sigma_raw, rgb = self._query(planes, origins, dirs, depths, hit)
        sigma = self.field.density(sigma_raw).reshape(B * R, S)
        color, depth, opacity = composite(
            rgb.reshape(B * R, S, 3), sigma, torch.full_like(sigma, 1.0 / S),
            depths.reshape(B * R, S).to(sigma.dtype), bg.reshape(B * R, 3).to(sigma.dtype), backend=be,
            early_stop=self.early_stop)
        return color.reshape(B, R, 3), depth.reshape(B, R), opacity.reshape(B, R)

    def _march_any(self, planes, origins, dirs, near, far, bg, jitter, generator, mask):
        """``_march``, or with an occupancy mask ``[B, G, G, G]`` its empty-space skipping twin
        (``render/skipping.py``)."""
        if mask is None:
            return self._march(planes, origins, dirs, near, far, bg, jitter, generator)
        return march_skip(self, planes, origins, dirs, near, far, bg, mask, self.skip_stats)

    def _render_rays(self, planes, origins, dirs, bg, jitter: bool, generator, mask=None):
        """origins/dirs ``[B, R, 3]``, bg ``[B, R, 3]`` -> rgb ``[B, R, 3]``, depth, opacity ``[B, R]``."""
        if self.cfg.sampler == "triposr":
            return self._render_rays_triposr(planes, origins, dirs, bg, jitter, generator)
        if self._use_fast(origins):
            return self._render_rays_fast(planes, origins, dirs, bg, jitter, generator, mask)
        cfg = self.cfg
        near, far, hit = ray_box(origins, dirs, cfg.box_min, cfg.box_max, backend=self.backend)
        color, depth, opacity = self._march_any(planes, origins, dirs, near, far, bg, jitter, generator, mask)
        # a missed ray's samples all sit at its origin, outside the box, so it already renders as
        # (background, 0, 0); the mask makes that exact even for an origin on a box face
        return (torch.where(hit[..., None], color, bg.to(color.dtype)), torch.where(hit, depth, 0.0),
                torch.where(hit, opacity, 0.0))

    def forward(self, planes: torch.Tensor, c2w: torch.Tensor, intrinsics: torch.Tensor,
                height: int, width: int | None = None, background=None,
                pixels: torch.Tensor | None = None, jitter: bool = False,
                generator: torch.Generator | None = None,
                occupancy: OccupancyGrid | None = None) -> dict[str, torch.Tensor]:
        """Render views of each triplane.

        Args:
            planes: ``[B, 3, C, H', W']``.
            c2w: ``[B, V, 4, 4]`` OpenGL camera-to-world. intrinsics: ``[B, V, 4]`` normalized.
            height, width: output size (width defaults to height).
            background: number, ``[3]`` or ``[B, V, 3]`` (default ``cfg.background``).
            pixels: optional ``[B, V, R, 2]`` (row, col) subset; then outputs are ``[B, V, R, ...]``.
            jitter: random stratified offsets and random importance draws (training).
            occupancy: an ``OccupancyGrid`` of these planes (``field/occupancy.py``): skip empty
                space (inference; ``cfg.occupancy_tau`` sets the accuracy). None: the exact render.
        Returns:
            dict with ``rgb [B, V, H, W, 3]``, ``depth [B, V, H, W]``, ``opacity [B, V, H, W]``.
        """
        width = height if width is None else width
        if c2w.dim() != 4 or c2w.shape[-2:] != (4, 4):
            raise ValueError(f"render cameras c2w must be [B, V, 4, 4], got {tuple(c2w.shape)}")
        B, V = c2w.shape[:2]
        if planes.shape[0] != B:
            raise ValueError(f"{planes.shape[0]} triplanes but cameras for batch {B}")
        dtype = planes.dtype if planes.dtype in (torch.float32, torch.float64) else torch.float32
        c2w, intrinsics = c2w.to(dtype), intrinsics.to(dtype)
        # Rays always come from the twin (O(rays) work, ~1% of a render): the in-box test of the
        # first sample, which lies exactly on the box face, flips with the last bit of a ray, so a
        # fast path that must render the reference's image needs the reference's exact rays.
        origins, dirs = generate_rays(c2w, intrinsics, height, width, pixels, backend="reference")
        R = origins.shape[2]
        bg = _as_background(self.cfg.background if background is None else background, B, V,
                            dtype, planes.device)
        bg = bg[:, :, None].expand(B, V, R, 3).reshape(B, V * R, 3)
        origins, dirs = origins.reshape(B, V * R, 3), dirs.reshape(B, V * R, 3)
        chunk = max(1, self.cfg.chunk_rays // max(B, 1))
        mask = None
        if occupancy is not None and self.cfg.sampler != "openlrm":
            raise ValueError(f"render sampler {self.cfg.sampler!r} cannot skip empty space: pass occupancy=None")
        if occupancy is not None and skips(self, planes, jitter):
            if occupancy.max_raw.shape[0] != B:
                raise ValueError(f"occupancy grid of {occupancy.max_raw.shape[0]} triplanes for {B} triplanes")
            fc = self.field.cfg
            mask = occupancy.mask(self.cfg.occupancy_tau, fc.density_bias, fc.density_activation)
        outs = [self._render_rays(planes, origins[:, s:s + chunk], dirs[:, s:s + chunk], bg[:, s:s + chunk],
                                  jitter, generator, mask)
                for s in range(0, V * R, chunk)]
        color, depth, opacity = (torch.cat(x, 1) for x in zip(*outs)) if outs else (
            bg, bg.new_zeros(B, 0), bg.new_zeros(B, 0))
        shape = (B, V, height, width) if pixels is None else (B, V, R)
        return {"rgb": color.reshape(*shape, 3), "depth": depth.reshape(shape), "opacity": opacity.reshape(shape)}
