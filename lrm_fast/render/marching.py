"""Marchers: rays in -> colour, depth, opacity out, one class per way of placing samples along a ray.

A marcher takes a set of rays of every batch item at once (``origins``/``dirs``/``bg`` ``[B, R, 3]``,
``near``/``far`` ``[B, R]`` from ``ops.ray_box``) and a ``MarchContext`` (the field and the triplanes,
the sampling settings, the backend, the RNG), and returns rgb ``[B, R, 3]``, depth, opacity
``[B, R]``. It reads the field only through its public interface (``field(planes, points)``,
``field.rgb``, ``field.density``) and writes nothing back. The renderer (``renderer.py``) picks one
by name (``MARCHERS``) and decides which rays it gets (chunks; on the CPU's fast path only the rays
that hit the box); it never knows how the samples were placed (as nerfacc's estimators).

* ``"exact"``: OpenLRM's sampler (``ImportanceRenderer`` + ``MipRayMarcher2``): ``S/2`` stratified
  depths, the coarse weights, ``S/2`` importance depths, both sets merged, then the fused compositing
  op (``ops.composite_samples``: gate, activations, midpoint intervals, compositing in one kernel);
* ``"reference"``: the same samples, composited with the op's unfused steps (``ops/per_sample.py``'s
  gate, the field's own ``rgb``/``density``, intervals, ``ops.composite``): the path of a field that
  overrides its activations, or a plain-sigmoid rgb, which the fused op does not implement;
* ``"skipping"``: ``"exact"``'s samples less those in empty space of an occupancy grid, in the
  packed layout (``render/skipping.py``);
* ``"uniform"``: TripoSR's bin-centre samples in a shrunk box (``RenderConfig.sampler="triposr"``).

The sampling settings that every op call shares (box, density bias and activation, midpoint) are
one frozen ``Sampling``, made once per render from ``RenderConfig`` + ``FieldConfig``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import FieldConfig, RenderConfig
from ..ops import composite, composite_weights, importance, merge_samples, per_sample, ray_box, ray_points, stratified
from ..ops.composite import composite_samples, composite_samples_weights


@dataclass(frozen=True)
class Sampling:
    """The sampling settings of one render, from ``RenderConfig`` + ``FieldConfig`` (``of``).
    ``kw``: the keyword arguments the fused and packed compositing ops take."""

    box_min: float
    box_max: float
    density_bias: float
    density_activation: str
    midpoint: bool
    samples_per_ray: int
    importance: bool
    box_shrink: float = 0.0
    min_span: float = 0.0

    @classmethod
    def of(cls, rc: RenderConfig, fc: FieldConfig) -> "Sampling":
        return cls(rc.box_min, rc.box_max, fc.density_bias, fc.density_activation, rc.midpoint,
                   rc.samples_per_ray, rc.importance, rc.box_shrink, rc.min_span)

    @property
    def n_coarse(self) -> int:
        """Stratified samples per ray: half of them with importance sampling, else all."""
        return self.samples_per_ray // 2 if self.importance else self.samples_per_ray

    @property
    def kw(self) -> dict:
        return dict(box_min=self.box_min, box_max=self.box_max, density_bias=self.density_bias,
                    density_activation=self.density_activation, midpoint=self.midpoint)


@dataclass
class MarchContext:
    """What a marcher renders with: ``field`` (a ``TriplaneField``) on ``planes [B, 3, C, H, W]``,
    ``sampling``, the ops' ``backend``, ``early_stop`` (the compositing ops' transmittance floor),
    ``jitter`` + ``generator`` (training: random strata and importance draws), ``mask`` (an
    occupancy mask ``[B, G, G, G]``, the skipping marcher's), ``stats`` (a dict the skipping
    marcher counts its samples in, or None) and ``ray_ends`` (``[B + 1]``: the rays come packed, item
    ``b`` owning rays ``ray_ends[b] .. ray_ends[b + 1] - 1``, passed as one item ``[1, sum, ...]``: the
    CPU fast path's compaction; None: ``R`` rays per item)."""

    field: object
    planes: torch.Tensor
    sampling: Sampling
    backend: str = "auto"
    early_stop: float = 0.0
    jitter: bool = False
    generator: torch.Generator | None = None
    mask: torch.Tensor | None = None
    stats: dict | None = None
    ray_ends: torch.Tensor | None = None

    def raw(self, origins, dirs, depths):
        """raw field outputs ``[B * R, S, 4]`` at ``origins + depths * dirs``: origins/dirs ``[B * R, 3]``,
        depths ``[B * R, S]`` (rays grouped by batch item: each item's points go with its planes; ``R``
        rays per item, or, with ``ray_ends``, each item's own count)."""
        BR, S = depths.shape
        B = self.planes.shape[0]
        pts = ray_points(origins, dirs, depths, backend=self.backend)
        # in the depths' dtype (a bf16 field under autocast): the merge and compositing kernels
        # take one dtype, and the compositing runs in float32 anyway
        if self.ray_ends is not None:
            return self.raw_packed(pts.reshape(BR * S, 3), self.ray_ends * S).reshape(BR, S, -1).to(depths.dtype)
        return self.field(self.planes, pts.reshape(B, (BR // B) * S, 3)).reshape(BR, S, -1).to(depths.dtype)

    def raw_packed(self, points, ends, longest: int | None = None):
        """raw field outputs ``[N, 4]`` at packed ``points [N, 3]`` grouped by batch item: item ``b`` owns
        points ``ends[b] .. ends[b + 1] - 1`` (``ends [B + 1]``; each item's points go with its planes).

        One field call for every item: item ``b``'s points are padded to the longest item's count,
        ``[B, Nmax, 3]`` (zeros after its own), queried, and gathered back. ``longest``: ``Nmax`` if the
        caller has it (the skipping marcher reads it with its other sizes in one copy); None: read
        here, one host sync (none for one item). The launches do not depend on the batch. A point's
        outputs are its own (the field is per point): on the fused field op a per-item query's bit
        for bit."""
        planes = self.planes
        B, N = planes.shape[0], points.shape[0]
        if N == 0:
            return points.new_zeros(0, 4)
        ends = ends.contiguous()
        if longest is None:
            longest = (ends[1:] - ends[:-1]).max()  # (one item: N, no read; same launches)
        n_max = N if B == 1 else int(longest)
        i = torch.arange(N, device=points.device)
        item = torch.searchsorted(ends, i, right=True) - 1
        pos = i - ends[item]
        padded = points.new_zeros(B, n_max, 3).index_put_((item, pos), points)
        return self.field(planes, padded)[item, pos]


class Marcher:
    """rays -> (rgb ``[B, R, 3]``, depth ``[B, R]``, opacity ``[B, R]``): see the module docstring."""

    name = ""

    def __call__(self, ctx: MarchContext, origins, dirs, near, far, bg):
        raise NotImplementedError


class ExactMarcher(Marcher):
    """OpenLRM's stratified + importance samples on every given ray, the fused compositing op."""

    name = "exact"

    def weights(self, ctx: MarchContext, raw, depths, o, d):
        """The coarse samples' compositing weights ``[R, S - 1]`` (they drive importance sampling)."""
        return composite_samples_weights(raw, depths, o, d, backend=ctx.backend, **ctx.sampling.kw)

    def composite(self, ctx: MarchContext, raw, depths, o, d, bg):
        return composite_samples(raw, depths, o, d, bg, early_stop=ctx.early_stop, backend=ctx.backend,
                                 **ctx.sampling.kw)

    def __call__(self, ctx: MarchContext, origins, dirs, near, far, bg):
        s, be = ctx.sampling, ctx.backend
        B, R = near.shape
        o, d = origins.reshape(B * R, 3), dirs.reshape(B * R, 3)
        n_coarse = s.n_coarse
        depths = stratified(near.reshape(-1), far.reshape(-1), n_coarse, jitter=ctx.jitter, generator=ctx.generator,
                            backend=be)
        raw = ctx.raw(o, d, depths)
        if s.importance:
            with torch.no_grad():
                w = self.weights(ctx, raw, depths, o, d)
                fine = importance(depths, w.float(), s.samples_per_ray - n_coarse, det=not ctx.jitter,
                                  generator=ctx.generator, backend=be)
                if ctx.jitter:  # random CDF levels give unsorted draws; merge_samples wants sorted sets
                    fine = fine.sort(-1).values
            depths, raw = merge_samples(depths, raw, fine, ctx.raw(o, d, fine), backend=be)
        bg = bg.reshape(B * R, 3).to(depths.dtype)
        color, depth, opacity = self.composite(ctx, raw, depths, o, d, bg)
        return color.reshape(B, R, 3), depth.reshape(B, R), opacity.reshape(B, R)


class ReferenceMarcher(ExactMarcher):
    """``ExactMarcher``'s samples, composited with the fused op's unfused steps and the field's own
    activations (a field that overrides them, or a plain-sigmoid rgb)."""

    name = "reference"

    @staticmethod
    def _intervals(ctx: MarchContext, raw, depths, o, d):
        """The unfused twin of the fused op's first steps: OpenLRM's in-box filter on raw ``[R, S, 4]``
        (raw density ``-1e4`` and rgb 0 outside the box), then samples -> intervals."""
        pts = ray_points(o, d, depths, backend="reference")  # the bits ctx.raw used
        inside = per_sample.in_box(pts, ctx.sampling.box_min, ctx.sampling.box_max)
        sigma_raw, rgb = per_sample.gate(raw[..., 0], ctx.field.rgb(raw), inside)
        return per_sample.intervals(depths, sigma_raw, rgb, ctx.sampling.midpoint, ctx.field.density)

    def weights(self, ctx, raw, depths, o, d):
        _, sig_c, del_c, _ = self._intervals(ctx, raw, depths, o, d)
        return composite_weights(sig_c, del_c.to(sig_c.dtype), backend=ctx.backend)

    def composite(self, ctx, raw, depths, o, d, bg):
        rgb_i, sigma_i, deltas, mids = self._intervals(ctx, raw, depths, o, d)
        return composite(rgb_i, sigma_i, deltas.to(sigma_i.dtype), mids.to(sigma_i.dtype), bg.to(sigma_i.dtype),
                         backend=ctx.backend, early_stop=ctx.early_stop)


class UniformMarcher(Marcher):
    """TripoSR's sampler (``RenderConfig.sampler="triposr"``): S samples at bin centers
    ``near + (i + 0.5) / S * (far - near)`` (with ``jitter``, at a uniform random place inside
    each bin instead: TripoSR has no training renderer of its own), no importance pass, no
    midpoint averaging, and every sample's delta is ``1 / S`` (not scaled by far - near: TripoSR's
    own quirk, kept so its checkpoints render as in TripoSR). Its ray-box test too: the box shrunk
    by ``1 - box_shrink``, rays with ``far - near <= min_span`` are misses (background); so it takes
    no ``near``/``far`` (pass None) and makes its own. ``early_stop`` goes to the compositing op as
    on the exact marcher."""

    name = "uniform"

    @staticmethod
    def samples(ctx: MarchContext, origins, dirs):
        """TripoSR's samples of rays ``[B, R, 3]``: (depths ``[B, R, S]``, points ``[B, R, S, 3]``, hit
        ``[B, R]``: the rays its shrunk-box test keeps)."""
        s, be = ctx.sampling, ctx.backend
        B, R, _ = origins.shape
        S = s.samples_per_ray
        k = 1.0 - s.box_shrink
        near, far, hit = ray_box(origins, dirs, s.box_min * k, s.box_max * k, backend=be)
        if s.min_span > 0:
            hit = hit & (far - near > s.min_span)
            near, far = torch.where(hit, near, 0.0), torch.where(hit, far, 0.0)
        if ctx.jitter:
            u = torch.rand((B, R, S), generator=ctx.generator, device=near.device, dtype=near.dtype)
            steps = (torch.arange(S, device=near.device, dtype=near.dtype) + u) / S
        else:
            steps = (torch.arange(S, device=near.device, dtype=near.dtype) + 0.5) / S
        depths = near[..., None] + steps * (far - near)[..., None]
        return depths, per_sample.sample_points(origins, dirs, depths), hit

    @staticmethod
    def composite(ctx: MarchContext, raw, depths, inside, bg):
        """Raw field outputs ``[B, R, S, 4]`` -> (rgb ``[B, R, 3]``, depth, opacity ``[B, R]``): gated to
        ``inside`` ``[B, R, S]`` (raw density ``-1e4``, rgb 0 elsewhere), activated, composited with
        delta ``1 / S`` on ``bg``."""
        B, R, S = depths.shape
        sigma_raw, rgb = per_sample.gate(raw[..., 0], ctx.field.rgb(raw), inside)
        sigma = ctx.field.density(sigma_raw).reshape(B * R, S)
        color, depth, opacity = UniformMarcher.composite_activated(
            ctx, rgb.reshape(B * R, S, 3), sigma, depths.reshape(B * R, S), bg.reshape(B * R, 3), 1.0 / S)
        return color.reshape(B, R, 3), depth.reshape(B, R), opacity.reshape(B, R)

    @staticmethod
    def composite_activated(ctx: MarchContext, rgb, sigma, depths, bg, delta: float):
        """Activated samples (rgb ``[N, K, 3]``, density ``sigma [N, K]``, ``depths [N, K]``) of ``N`` rays ->
        (rgb ``[N, 3]``, depth, opacity ``[N]``), every sample with the sampler's ``delta``, on ``bg [N, 3]``."""
        return composite(rgb, sigma, torch.full_like(sigma, delta), depths.to(sigma.dtype), bg.to(sigma.dtype),
                         backend=ctx.backend, early_stop=ctx.early_stop)

    def __call__(self, ctx: MarchContext, origins, dirs, near, far, bg):
        s = ctx.sampling
        depths, pts, hit = self.samples(ctx, origins, dirs)
        B, R, S = depths.shape
        # raw field outputs at the samples, gated to the box and the hit rays
        raw = ctx.field(ctx.planes, pts.reshape(B, R * S, 3)).reshape(B, R, S, 4)
        inside = per_sample.in_box(pts, s.box_min, s.box_max) & hit[..., None]
        return self.composite(ctx, raw, depths, inside, bg)
