"""Rays and samples along them: camera -> rays, ray-box intersection, stratified and importance
sampling. All functions are the OpenLRM (EG3D-derived) conventions, written out:

Cameras
    ``c2w [..., 4, 4]``: Blender/OpenGL camera-to-world (camera looks along its -z axis, +y up).
    ``intrinsics [..., 4]``: ``fx, fy, cx, cy`` *normalized* by the image width/height
    (OpenLRM's ``get_normalized_camera_intrinsics``), so the same camera renders at any resolution.
Pixels
    pixel (row i, col j) of an ``H x W`` image has normalized coordinates
    ``x = (j + 0.5) / W``, ``y = (i + 0.5) / H``; its OpenCV camera-space direction is
    ``((x - cx) / fx, (y - cy) / fy, 1)``, which is ``(dx, -dy, -1)`` in OpenGL camera space
    (OpenLRM's ``_opencv2blender``). World directions are unit length.
Box
    the field lives in ``[box_min, box_max]^3`` (OpenLRM: [-1, 1]^3, ``box_warp = 2``).

Backends: ``reference`` (torch ops, the spec), and ``cpp`` (lrm_fast._C: one C++/CUDA kernel per
op, threads over rays, the per-ray math shared by CPU and GPU in csrc/raymarch.h). The ``cpp`` ops
carry no gradient (cameras and sample depths are constants of a render); the probe declines
inputs that require one, so ``auto`` falls back to the reference there.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import _dispatch, _ext, per_sample
from ._ext import cpp_probe, load_extension  # noqa: F401  (re-exported: tests and bench import them here)


# ------------------------------------------------------------------------------------------
# ray generation


def _generate_rays_ref(c2w, intrinsics, height: int, width: int, pixels=None):
    """Rounded as OpenLRM's ``RaySampler`` (v1.0 and v1.1, no skew): pixel centers as
    ``col * (1 / W) + 0.5 / W``, the camera point ``((x - cx) / fx, (y - cy) / fy, 1, 1)`` taken to
    the world by one ``bmm`` with ``c2w @ diag(1, -1, -1, 1)`` (OpenCV -> OpenGL, exact), the
    camera position subtracted again, normalized. Its first stratified sample lies exactly on the
    box face and its in-box test flips with the last bit of a direction, so matching its renders
    needs its rays bit for bit, not just to rounding (docs/readme/parity.md)."""
    lead = c2w.shape[:-2]
    dtype, device = c2w.dtype, c2w.device
    n = 1
    for s in lead:
        n *= s
    if pixels is None:
        rows = torch.arange(height, device=device, dtype=dtype)
        cols = torch.arange(width, device=device, dtype=dtype)
        ii, jj = torch.meshgrid(rows, cols, indexing="ij")
        ij = torch.stack([ii.reshape(-1), jj.reshape(-1)], -1).expand(*lead, height * width, 2)
    else:
        ij = pixels.to(dtype).expand(*lead, *pixels.shape[-2:])
    R = ij.shape[-2]
    ij = ij.reshape(n, R, 2)
    x = ij[..., 1] * (1.0 / width) + 0.5 / width
    y = ij[..., 0] * (1.0 / height) + 0.5 / height
    fx, fy, cx, cy = (intrinsics.reshape(n, 4)[:, k:k + 1] for k in range(4))
    x_lift, y_lift = (x - cx) / fx, (y - cy) / fy
    one = torch.ones_like(x_lift)
    cam = torch.stack([x_lift, y_lift, one, one], -1)                                # [n, R, 4]
    flip = torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=dtype, device=device)
    m = torch.bmm(c2w.reshape(n, 4, 4), torch.diag(flip).expand(n, 4, 4))           # OpenGL -> OpenCV camera
    world = torch.bmm(m, cam.permute(0, 2, 1)).permute(0, 2, 1)[..., :3]
    pos = c2w.reshape(n, 4, 4)[:, None, :3, 3]
    dirs = F.normalize(world - pos, dim=2)
    origins = pos.expand_as(dirs)
    return origins.reshape(*lead, R, 3), dirs.reshape(*lead, R, 3)


def generate_rays(c2w: torch.Tensor, intrinsics: torch.Tensor, height: int, width: int,
                  pixels: torch.Tensor | None = None, backend: str = "auto"):
    """Camera rays through pixel centers.

    Args:
        c2w: ``[..., 4, 4]`` OpenGL camera-to-world. intrinsics: ``[..., 4]`` normalized fx,fy,cx,cy.
        height, width: image size in pixels.
        pixels: optional ``[..., R, 2]`` integer (row, col) subset (training patches); default all
            ``H*W`` pixels in row-major order.
    Returns:
        origins, directions: ``[..., R, 3]`` (directions unit length).
    """
    if c2w.shape[-2:] != (4, 4):
        raise ValueError(f"c2w must be [..., 4, 4], got {tuple(c2w.shape)}")
    if intrinsics.shape[-1] != 4 or intrinsics.shape[:-1] != c2w.shape[:-2]:
        raise ValueError(f"intrinsics must be [..., 4] matching c2w {tuple(c2w.shape[:-2])}, "
                         f"got {tuple(intrinsics.shape)}")
    _, fn, _ = _dispatch.resolve("generate_rays", backend, c2w)
    return fn(c2w, intrinsics, height, width, pixels)


# ------------------------------------------------------------------------------------------
# ray-box


def _ray_box_ref(origins, dirs, box_min: float, box_max: float):
    inv = 1.0 / torch.where(dirs == 0, torch.full_like(dirs, 1e-12), dirs)
    t0 = (box_min - origins) * inv
    t1 = (box_max - origins) * inv
    near = torch.minimum(t0, t1).amax(-1).clamp_min(0.0)
    far = torch.maximum(t0, t1).amin(-1)
    hit = far > near
    near = torch.where(hit, near, torch.zeros_like(near))
    far = torch.where(hit, far, torch.zeros_like(far))
    return near, far, hit


def ray_box(origins: torch.Tensor, dirs: torch.Tensor, box_min: float = -1.0, box_max: float = 1.0,
            backend: str = "auto"):
    """Slab intersection of rays with the axis-aligned box ``[box_min, box_max]^3``.

    Returns ``near, far [...]`` (``near >= 0``: a camera inside the box starts at 0) and
    ``hit [...]`` bool. Rays that miss get ``near = far = 0`` and ``hit = False`` (never NaN).
    """
    if origins.shape != dirs.shape or origins.shape[-1] != 3:
        raise ValueError(f"origins/dirs must both be [..., 3], got {tuple(origins.shape)}, {tuple(dirs.shape)}")
    _, fn, _ = _dispatch.resolve("ray_box", backend, origins)
    return fn(origins, dirs, box_min, box_max)


# ------------------------------------------------------------------------------------------
# sampling


def _stratified_ref(near, far, n: int, jitter: bool, generator=None):
    steps = torch.linspace(0.0, 1.0, n, device=near.device, dtype=near.dtype)
    span = (far - near)[..., None]
    depths = near[..., None] + steps * span
    if jitter:
        delta = span / max(n - 1, 1)
        u = torch.rand(depths.shape, device=near.device, dtype=near.dtype, generator=generator)
        depths = depths + u * delta
    return depths


def stratified(near: torch.Tensor, far: torch.Tensor, n: int, jitter: bool = False,
               generator: torch.Generator | None = None, backend: str = "auto") -> torch.Tensor:
    """``n`` depths per ray from ``near`` to ``far`` (OpenLRM ``sample_stratified``).

    ``depths[k] = near + k / (n - 1) * (far - near)``, plus, with ``jitter``, a uniform offset in
    ``[0, (far - near) / (n - 1))`` per sample (so a jittered last sample may pass ``far``; it falls
    outside the box and gets zero density, as in OpenLRM). near/far ``[R]`` -> ``[R, n]``.
    """
    if near.shape != far.shape:
        raise ValueError(f"near/far shapes differ: {tuple(near.shape)} vs {tuple(far.shape)}")
    if n < 1:
        raise ValueError(f"need at least one sample per ray, got n={n}")
    _, fn, _ = _dispatch.resolve("stratified", backend, near)
    return fn(near, far, n, jitter, generator)


def smooth_weights(weights: torch.Tensor) -> torch.Tensor:
    """OpenLRM/EG3D weight smoothing before importance sampling: max-pool(2, pad 1), avg-pool(2),
    + 0.01. ``[R, S-1] -> [R, S-1]``."""
    w = F.max_pool1d(weights[:, None].float(), 2, 1, padding=1)
    w = F.avg_pool1d(w, 2, 1)[:, 0]
    return w + 0.01


def _sample_pdf_ref(bins, weights, n: int, det: bool, generator=None, eps: float = 1e-5):
    """Inverse-CDF sampling (NeRF ``sample_pdf``): bins ``[R, K+1]``, weights ``[R, K]``."""
    R, K = weights.shape
    weights = weights + eps
    pdf = weights / weights.sum(-1, keepdim=True)
    cdf = torch.cat([torch.zeros_like(pdf[:, :1]), torch.cumsum(pdf, -1)], -1)  # [R, K+1]
    if det:
        u = torch.linspace(0.0, 1.0, n, device=bins.device, dtype=cdf.dtype).expand(R, n)
    else:
        u = torch.rand(R, n, device=bins.device, dtype=cdf.dtype, generator=generator)
    u = u.contiguous()
    inds = torch.searchsorted(cdf, u, right=True)
    below = (inds - 1).clamp_min(0)
    above = inds.clamp_max(K)
    cdf_lo, cdf_hi = cdf.gather(1, below), cdf.gather(1, above)
    bin_lo, bin_hi = bins.gather(1, below), bins.gather(1, above)
    denom = cdf_hi - cdf_lo
    denom = torch.where(denom < eps, torch.ones_like(denom), denom)
    return bin_lo + (u - cdf_lo) / denom * (bin_hi - bin_lo)


def _importance_ref(depths, weights, n: int, det: bool, generator=None):
    with torch.no_grad():
        S = depths.shape[-1]
        w = smooth_weights(weights)[:, 1:-1]                 # [R, S-3]
        mids = 0.5 * (depths[:, :-1] + depths[:, 1:])        # [R, S-1]; OpenLRM uses the first S-2
        return _sample_pdf_ref(mids[:, : S - 2].contiguous(), w, n, det, generator).to(depths.dtype)


def importance(depths: torch.Tensor, weights: torch.Tensor, n: int, det: bool = True,
               generator: torch.Generator | None = None, backend: str = "auto") -> torch.Tensor:
    """Importance (hierarchical) resampling as OpenLRM's ``sample_importance``.

    Args:
        depths: ``[R, S]`` sorted coarse depths (S >= 4).
        weights: ``[R, S-1]`` compositing weights of the coarse intervals (midpoint rendering).
        n: samples to draw. det: evenly spaced CDF levels ``linspace(0, 1, n)`` instead of uniform
            random ones (OpenLRM always draws random ones; we use det for inference so a render
            is a pure function of its inputs).
    Returns:
        ``[R, n]`` new depths (not sorted against the coarse ones; no gradient).

    Weights are smoothed (``smooth_weights``), trimmed to ``[1:-1]`` and drawn against the first
    ``S-2`` interval midpoints, exactly as OpenLRM (it leaves the last midpoint unused).
    """
    if depths.dim() != 2 or weights.shape != (depths.shape[0], depths.shape[1] - 1):
        raise ValueError(f"importance expects depths [R, S] and weights [R, S-1], got "
                         f"{tuple(depths.shape)} and {tuple(weights.shape)}")
    if depths.shape[1] < 4:
        raise ValueError(f"importance sampling needs >= 4 coarse samples per ray, got {depths.shape[1]}")
    _, fn, _ = _dispatch.resolve("importance", backend, depths)
    return fn(depths, weights, n, det, generator)


_ray_points_ref = per_sample.sample_points


def ray_points(origins: torch.Tensor, dirs: torch.Tensor, depths: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """Sample points along rays: origins, dirs ``[R, 3]``, depths ``[R, S]`` -> ``[R, S, 3]``,
    ``origins + depths * dirs`` rounded as the twin's two torch ops (the renderer's in-box gate
    recomputes them and must agree bit for bit). No gradient (rays and depths are constants of
    the sampling; the ``cpp`` probe refuses inputs that require one)."""
    if depths.dim() != 2 or origins.shape != (depths.shape[0], 3) or dirs.shape != (depths.shape[0], 3):
        raise ValueError(f"ray_points expects origins/dirs [R, 3] and depths [R, S], got {tuple(origins.shape)}, "
                         f"{tuple(dirs.shape)}, {tuple(depths.shape)}")
    _, fn, _ = _dispatch.resolve("ray_points", backend, depths, origins, dirs)
    return fn(origins, dirs, depths)


def _merge_samples_ref(t_a, v_a, t_b, v_b):
    t, order = torch.sort(torch.cat([t_a, t_b], -1), dim=-1, stable=True)
    v = torch.cat([v_a, v_b], 1).gather(1, order[..., None].expand(-1, -1, v_a.shape[-1]))
    return t, v


def merge_samples(t_a: torch.Tensor, v_a: torch.Tensor, t_b: torch.Tensor, v_b: torch.Tensor,
                  backend: str = "auto") -> "tuple[torch.Tensor, torch.Tensor]":
    """Merge two sorted sample sets of each ray (coarse + importance) into one sorted set.

    Args:
        t_a: ``[R, A]`` depths, sorted along dim 1. v_a: ``[R, A, K]`` values per sample (raw field
            outputs). t_b: ``[R, B]`` sorted depths. v_b: ``[R, B, K]``.
    Returns:
        t ``[R, A + B]`` sorted, v ``[R, A + B, K]``: ``torch.sort(cat([t_a, t_b]), stable=True)`` and
        the values gathered in that order (the twin does exactly that). On equal depths the sample of
        ``a`` comes first. Gradients flow to ``v_a`` and ``v_b`` (depths are sampling constants).

    The ``cpp`` kernel is one linear merge per ray (no [R, A + B] sort, index tensor or gather); its
    backward walks the same merge to route ``v_v`` back. Unsorted inputs give an unsorted result
    there, so callers sort their draws first (cheap: ``[R, B]`` depths, before the field query).
    """
    if t_a.dim() != 2 or t_b.dim() != 2 or t_a.shape[0] != t_b.shape[0]:
        raise ValueError(f"merge_samples expects t_a [R, A] and t_b [R, B], got {tuple(t_a.shape)}, {tuple(t_b.shape)}")
    if v_a.dim() != 3 or v_a.shape[:2] != t_a.shape or v_b.shape != (*t_b.shape, v_a.shape[-1]):
        raise ValueError(f"merge_samples expects v_a [R, A, K] and v_b [R, B, K] matching the depths, got "
                         f"{tuple(v_a.shape)}, {tuple(v_b.shape)} for t_a {tuple(t_a.shape)}, t_b {tuple(t_b.shape)}")
    name, fn, _ = _dispatch.resolve("merge_samples", backend, t_a, v_a, t_b, v_b)
    return fn(t_a, v_a, t_b, v_b)


for _op, _fn in (("generate_rays", _generate_rays_ref), ("ray_box", _ray_box_ref),
                 ("stratified", _stratified_ref), ("importance", _importance_ref),
                 ("merge_samples", _merge_samples_ref), ("ray_points", _ray_points_ref)):
    _dispatch.register_reference(_op, _fn)


# ------------------------------------------------------------------------------------------
# cpp backend (lrm_fast._C, loaded by ops/_ext.py): fake kernels and autograd, registered at import

@_ext.register_fake("generate_rays")
def _(c2w, intrinsics, height, width, pixels):
    R = height * width if pixels is None else pixels.shape[1]
    return c2w.new_empty(c2w.shape[0], R, 3), c2w.new_empty(c2w.shape[0], R, 3)


@_ext.register_fake("ray_box")
def _(origins, dirs, box_min, box_max):
    R = origins.shape[0]
    return origins.new_empty(R), origins.new_empty(R), origins.new_empty(R, dtype=torch.bool)


@_ext.register_fake("stratified")
def _(near, far, n, u):
    return near.new_empty(near.shape[0], n)


@_ext.register_fake("importance")
def _(depths, weights, n, u):
    return depths.new_empty(depths.shape[0], n)


@_ext.register_fake("ray_points")
def _(origins, dirs, depths):
    return depths.new_empty(*depths.shape, 3)


@_ext.register_fake("merge_samples")
def _(t_a, v_a, t_b, v_b):
    R, n = t_a.shape[0], t_a.shape[1] + t_b.shape[1]
    return t_a.new_empty(R, n), v_a.new_empty(R, n, v_a.shape[2])


@_ext.register_fake("merge_samples_bwd")
def _(v_v, t_a, t_b):
    K = v_v.shape[2]
    return v_v.new_empty(t_a.shape[0], t_a.shape[1], K), v_v.new_empty(t_b.shape[0], t_b.shape[1], K)


def _merge_setup_context(ctx, inputs, output):
    t_a, _, t_b, _ = inputs
    ctx.save_for_backward(t_a, t_b)
    ctx.mark_non_differentiable(output[0])


def _merge_backward(ctx, v_t, v_v):
    t_a, t_b = ctx.saved_tensors
    v_a, v_b = torch.ops.lrm_fast.merge_samples_bwd(v_v, t_a, t_b)
    return None, v_a, None, v_b


_ext.register_autograd("merge_samples", _merge_backward, setup_context=_merge_setup_context)


def _ray_points_cpp(origins, dirs, depths):
    return torch.ops.lrm_fast.ray_points(origins, dirs, depths)


def _merge_samples_cpp(t_a, v_a, t_b, v_b):
    return torch.ops.lrm_fast.merge_samples(t_a, v_a, t_b, v_b)


def _generate_rays_cpp(c2w, intrinsics, height: int, width: int, pixels=None):
    lead = c2w.shape[:-2]
    c = c2w.reshape(-1, 4, 4)
    K = intrinsics.to(c2w.dtype).reshape(-1, 4)
    p = None
    if pixels is not None:
        if pixels.shape[:-2] != lead:
            raise ValueError(f"pixels must be [..., R, 2] with leading dims {tuple(lead)}, got {tuple(pixels.shape)}")
        p = pixels.reshape(c.shape[0], -1, 2)
    o, d = torch.ops.lrm_fast.generate_rays(c, K, height, width, p)
    return o.reshape(*lead, -1, 3), d.reshape(*lead, -1, 3)


def _ray_box_cpp(origins, dirs, box_min: float, box_max: float):
    lead = origins.shape[:-1]
    near, far, hit = torch.ops.lrm_fast.ray_box(origins.reshape(-1, 3), dirs.to(origins.dtype).reshape(-1, 3),
                                                float(box_min), float(box_max))
    return near.reshape(lead), far.reshape(lead), hit.reshape(lead)


def _stratified_cpp(near, far, n: int, jitter: bool, generator=None):
    lead = near.shape
    u = None
    if jitter:  # the twin's draws, same shape and order: same generator -> same depths
        u = torch.rand((*lead, n), device=near.device, dtype=near.dtype, generator=generator).reshape(-1, n)
    out = torch.ops.lrm_fast.stratified(near.reshape(-1), far.to(near.dtype).reshape(-1), n, u)
    return out.reshape(*lead, n)


def _importance_cpp(depths, weights, n: int, det: bool, generator=None):
    R = depths.shape[0]
    u = None
    if not det:  # the twin draws float32 levels (its CDF is float32)
        u = torch.rand(R, n, device=depths.device, dtype=torch.float32, generator=generator)
    return torch.ops.lrm_fast.importance(depths.detach(), weights.detach().float(), n, u)


for _op, _fn in (("generate_rays", _generate_rays_cpp), ("ray_box", _ray_box_cpp),
                 ("stratified", _stratified_cpp), ("importance", _importance_cpp),
                 ("merge_samples", _merge_samples_cpp), ("ray_points", _ray_points_cpp)):
    _dispatch.register(_op, "cpp", _fn, cpp_probe(_op),
                       ext_ops=(_op, "merge_samples_bwd") if _op == "merge_samples" else (_op,))
