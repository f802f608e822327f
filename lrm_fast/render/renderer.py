"""Volume renderer: planes + cameras -> images. It composes three parts and reaches into none:
rays (``ops.generate_rays``, ``ops.ray_box``), a **marcher** (``marching.py``: rays -> colour, depth,
opacity; chosen by name from ``MARCHERS``) and the field it renders with (``field/triplane.py``,
held by its owner, ``LRM.field``; see ``Renderer.__setattr__``).

Per ray with the openlrm sampler (``RenderConfig.sampler``; every ray of every batch item and view in
one pass, chunked only where the memory budget forces it: ``Renderer.max_memory``, ``ray_bytes``):

1. ray through the pixel center (``ops.generate_rays``), clipped to the box (``ops.ray_box``);
2. ``S/2`` stratified depths in [near, far] (``ops.stratified``; jittered when training);
3. raw field outputs at those points;
4. coarse weights -> ``S/2`` importance depths (``ops.importance``), raw field outputs at them,
   both sets merged into one sorted set (``ops.merge_samples``);
5. per sample, OpenLRM's in-box filter: outside the box raw density ``-1e4`` (activated: 0) and
   color 0, else the field's activations; intervals between adjacent samples: midpoint
   colors/raw densities/depths, ``density(.)``, deltas (OpenLRM ``MipRayMarcher2``), or, with
   ``midpoint=False``, the samples themselves (all of step 5 is written once, in
   ``ops/per_sample.py``, with the activations of ``field/activations.py``);
6. compositing on the background.

Steps 2-6 are a marcher's (``marcher_name`` picks it): ``"exact"`` runs steps 5-6 (and the coarse
weights of step 4) as one op, ``ops.composite_samples``; ``"reference"``, for a field that overrides
its activations or a plain-sigmoid rgb, runs them unfused (gate, intervals, ``ops.composite``);
``"skipping"`` drops the samples in empty space of an occupancy grid (``render/skipping.py``);
``"uniform"`` is TripoSR's sampler. Which rays a marcher gets is the renderer's part: the reference
backend marches every ray with the pure-torch twins; the fast path (the C++/CUDA kernels, no [R, S]
autograd intermediates for the compositing, whose backward is analytic) on the CPU only the rays
that hit the box (missed rays cost nothing: their outputs are the background, depth 0, opacity 0,
exactly what the reference computes for them), on a GPU every ray of the batch at once
(``compact_misses``: the per-item compaction was launch-bound there).

Outputs ``rgb [B, V, H, W, 3]``, ``depth [B, V, H, W]``, ``opacity [B, V, H, W]``. Everything here is
a pure function of (planes, field weights, cameras): reconstruct once, render many views.
``early_stop`` (default 0: exact) stops a ray's compositing once its transmittance is below it, on
every marcher (the compositing twins implement the kernels' rule, ``ops/composite.py``).
"""
from __future__ import annotations

import dataclasses

import torch
from torch import nn

from ..config import RenderConfig
from ..field.occupancy import OccupancyGrid
from ..field.triplane import TriplaneField
from ..memory import MemoryBudget
from ..ops import _dispatch, generate_rays, ray_box
from .marching import ExactMarcher, MarchContext, ReferenceMarcher, Sampling, UniformMarcher
from .skipping import SkippingMarcher, UniformSkippingMarcher

# the fused compositing op's implementations that take the exact marcher (cpp; triton where lrm_fast._C
# has no CUDA kernels: ops/composite.py registers it after cpp)
FUSED = ("cpp", "triton")
# the marchers, by name (``marching.py``): the renderer picks one per call (``Renderer.marcher_name``)
MARCHERS = {m.name: m for m in (ExactMarcher(), ReferenceMarcher(), SkippingMarcher(), UniformMarcher(),
                                UniformSkippingMarcher())}


def ray_bytes(rc: RenderConfig, field: TriplaneField, channels: int, itemsize: int, grad: bool) -> int:
    """Bytes one ray's march may hold at once, counted generously (``Renderer.forward`` sizes its ray
    chunks from it): ``samples_per_ray`` samples (all of them, as the exact marcher holds coarse and
    importance samples together; the skipping marcher holds fewer), each with its depth, point and
    the three planes' sampling coordinates, the field's per-point intermediates (the 3 planes'
    ``C``-channel features and their aggregate, every hidden layer before and after its activation:
    the reference op's autograd graph; the fused ops hold less), its raw outputs (and the merged
    copy), the compositing's per-sample gates, intervals and weights; plus the ray's own origin,
    direction, near/far, background and outputs. With autograd on (``grad``) every per-sample
    quantity is kept for backward and gets a gradient of its size: x 3."""
    fc = field.cfg
    width_in = 3 * channels if fc.aggregate == "concat" else channels
    per_sample = (1 + 3 + 6                      # depth, point, 3 planes' (u, v)
                  + 3 * channels + width_in      # features per plane, aggregated
                  + 2 * fc.hidden * (fc.layers - 1)  # hidden layers, pre- and post-activation
                  + 2 * 4                        # raw outputs, merged copy
                  + 12)                          # gate, activations, intervals, weights
    per_ray = 32                                 # origin, dir, near, far, hit, bg, rgb, depth, opacity
    return (rc.samples_per_ray * per_sample * (3 if grad else 1) + per_ray) * itemsize


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
    early_stop = 0.0  # transmittance below which a ray stops compositing (0: exact; every marcher)
    compact_misses = "auto"  # fast path only: see _compacts
    skip_stats: dict | None = None  # set to a dict to count the samples empty-space skipping evaluates
    # working memory of one render: None (the default budget: a share of what the device has free),
    # bytes, a size string ("4GB") or a MemoryBudget (``memory.py``); the API's and the CLI's max_memory
    max_memory = None

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
        if name == "field":  # a plain attribute: nn.Module would register it as a submodule
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

    # -- which marcher, which rays ----------------------------------------------------------------
    def _use_fast(self, t: torch.Tensor) -> bool:
        if self.backend == "reference":
            return False
        name, _, _ = _dispatch.resolve("composite", self.backend, t)
        return name == "cpp"

    def _compacts(self, t: torch.Tensor) -> bool:
        """Whether the fast path marches only the rays that hit the box (``_march_hits``).
        ``compact_misses``: ``"auto"`` (default) compacts on the CPU, where a missed ray's samples
        cost real time, and marches every ray of the whole batch at once on a GPU, where the
        compaction's host sync (the hit count) and gathers cost more than the misses' samples (the
        per-item compaction it replaced: a demo training step on an H200 took 1.33 s vs 0.24 s on the
        reference path, ``docs/readme/gpu.md``). ``"always"`` / ``"never"`` force it."""
        mode = self.compact_misses
        if mode not in ("auto", "always", "never"):
            raise ValueError(f"compact_misses must be auto|always|never, got {mode!r}")
        return mode == "always" or (mode == "auto" and not t.is_cuda)

    def _fusable(self, t: torch.Tensor) -> bool:
        """The fused compositing op reimplements the field's rgb/density activations (OpenLRM's
        widened sigmoid; softplus or exp density): a field subclass that overrides them, or a plain
        sigmoid rgb (TripoSR's), takes the ``"reference"`` marcher (gate + activate with the field's
        own methods, intervals, ``composite``)."""
        f = type(self.field)
        if not (f.rgb is TriplaneField.rgb and f.density is TriplaneField.density):
            return False
        if self.field.cfg.rgb_activation != "sigmoid_wide":
            return False
        return self.backend == "reference" or _dispatch.resolve("composite_samples", self.backend, t)[0] in FUSED

    def can_skip(self, t: torch.Tensor, jitter: bool = False) -> bool:
        """Whether this renderer can skip empty space here: inference (no jitter, no gradient), OpenLRM's
        fused path or TripoSR's sampler; unfused OpenLRM fields render exactly."""
        if jitter or torch.is_grad_enabled() and t.requires_grad:
            return False
        return self.cfg.sampler == "triposr" or self._fusable(t)

    def occupancy_mask(self, grid: OccupancyGrid) -> torch.Tensor:
        """``[B, G, G, G]`` bool: the cells of ``grid`` this renderer samples (``OccupancyGrid.mask`` at
        ``cfg.occupancy_tau``, the field's density activation and the sampler's ``cfg.ray_path``)."""
        fc = self.field.cfg
        return grid.mask(self.cfg.occupancy_tau, fc.density_bias, fc.density_activation, self.cfg.ray_path)

    def occupied_fraction(self, grid: OccupancyGrid) -> float:
        """The fraction of ``grid``'s cells ``occupancy_mask`` keeps (the default's ``skip_max_occupied`` rule)."""
        return float(self.occupancy_mask(grid).float().mean())

    def marcher_name(self, t: torch.Tensor, skipping: bool = False) -> str:
        """The marcher (``MARCHERS``) this renderer uses for rays like ``t``: ``"uniform"`` for TripoSR's
        sampler (``"uniform_skipping"`` with an occupancy mask), else ``"skipping"`` with an occupancy
        mask, ``"exact"`` where the fused compositing op takes the field, ``"reference"`` where it does not."""
        if self.cfg.sampler == "triposr":
            return "uniform_skipping" if skipping else "uniform"
        if skipping:
            return "skipping"
        return "exact" if self._fusable(t) else "reference"

    def _march_hits(self, march, ctx, origins, dirs, near, far, hit, bg):
        """The CPU fast path's compaction (``_compacts``): only the rays that hit the box are marched,
        those of every batch item packed together (one ``nonzero`` for the batch; the field query is
        the context's packed one, ``MarchContext.ray_ends``); a missed ray is (background, 0, 0)
        without a sample."""
        B, R, _ = origins.shape
        idx = hit.reshape(-1).nonzero().squeeze(1)
        if idx.numel() == B * R:  # close-ups: every ray hits, no gather and no scatter
            return march(ctx, origins, dirs, near, far, bg)
        color, depth, opacity = bg.reshape(B * R, 3), origins.new_zeros(B * R), origins.new_zeros(B * R)
        if idx.numel():
            ends = torch.cat([hit.new_zeros(1, dtype=torch.long), hit.sum(1).cumsum(0)])

            def take(x):
                return x.reshape(B * R, *x.shape[2:])[idx][None]

            c, dep, op = march(dataclasses.replace(ctx, ray_ends=ends), take(origins), take(dirs), take(near),
                               take(far), take(bg))
            color, depth, opacity = (x.index_put((idx,), y[0]) for x, y in ((color, c), (depth, dep), (opacity, op)))
        return color.reshape(B, R, 3), depth.reshape(B, R), opacity.reshape(B, R)

    def _render_rays(self, ctx: MarchContext, origins, dirs, bg):
        """origins/dirs ``[B, R, 3]``, bg ``[B, R, 3]`` -> rgb ``[B, R, 3]``, depth, opacity ``[B, R]``:
        the marcher of ``marcher_name`` on these rays (all of them, or, on the CPU fast path, the
        hits of every item: ``_march_hits``)."""
        march = MARCHERS[self.marcher_name(origins, ctx.mask is not None)]
        if isinstance(march, UniformMarcher):  # its own ray-box test (a shrunk box); misses gated inside
            return march(ctx, origins, dirs, None, None, bg)
        cfg = self.cfg
        near, far, hit = ray_box(origins, dirs, cfg.box_min, cfg.box_max, backend=self.backend)
        # (the skipping marcher drops a missed ray's samples itself: they lie outside the box)
        if march.name != "skipping" and self._use_fast(origins) and self._compacts(origins):
            return self._march_hits(march, ctx, origins, dirs, near, far, hit, bg)
        color, depth, opacity = march(ctx, origins, dirs, near, far, bg)
        # a missed ray has near = far = 0: its samples sit at its origin, outside the box, and are
        # gated out, so it already renders as (background, 0, 0); the mask makes that exact even for
        # an origin on a box face
        return (torch.where(hit[..., None], color, bg.to(color.dtype)), torch.where(hit, depth, 0.0),
                torch.where(hit, opacity, 0.0))

    def rays_per_pass(self, planes: torch.Tensor, rays: int) -> int:
        """Rays per batch item in one pass, decided once per render from the memory budget
        (``max_memory``) and ``ray_bytes``: every ray of the batch (``rays`` per item, all views) when
        they fit, one set of launches whatever the batch and the image size; else the fewest equal
        chunks, each over all batch items at once."""
        grad = torch.is_grad_enabled() and (planes.requires_grad
                                            or any(p.requires_grad for p in self.field.parameters()))
        itemsize = max(planes.element_size(), 4)  # depths and compositing run in float32 at least
        each = planes.shape[0] * ray_bytes(self.cfg, self.field, planes.shape[2], itemsize, grad)
        return MemoryBudget.resolve(self.max_memory, planes.device).chunks(each, rays)

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
        # materialized once (a view's origin and each view's background are broadcast): the ops take
        # contiguous rays, and a copy here at every batch size keeps the launches batch-invariant
        bg = bg[:, :, None].expand(B, V, R, 3).reshape(B, V * R, 3).contiguous()
        origins, dirs = origins.reshape(B, V * R, 3).contiguous(), dirs.reshape(B, V * R, 3).contiguous()
        mask = None
        if occupancy is not None and self.can_skip(planes, jitter):
            if occupancy.max_raw.shape[0] != B:
                raise ValueError(f"occupancy grid of {occupancy.max_raw.shape[0]} triplanes for {B} triplanes")
            mask = self.occupancy_mask(occupancy)
        ctx = MarchContext(self.field, planes, Sampling.of(self.cfg, self.field.cfg), self.backend, self.early_stop,
                           jitter, generator, mask, self.skip_stats)
        chunk = self.rays_per_pass(planes, V * R)
        if chunk < V * R:  # each chunk's rays of all items, copied contiguous (a view for one item only)
            outs = [self._render_rays(ctx, *(x[:, s:s + chunk].clone() for x in (origins, dirs, bg)))
                    for s in range(0, V * R, chunk)]
        else:
            outs = [self._render_rays(ctx, origins, dirs, bg)] if V * R else []
        color, depth, opacity = (torch.cat(x, 1) for x in zip(*outs)) if outs else (
            bg, bg.new_zeros(B, 0), bg.new_zeros(B, 0))
        shape = (B, V, height, width) if pixels is None else (B, V, R)
        return {"rgb": color.reshape(*shape, 3), "depth": depth.reshape(shape), "opacity": opacity.reshape(shape)}
