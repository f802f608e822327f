"""Triplane field -> colored mesh: density on a grid, marching cubes, vertex colors from the field.

The grid spans the render box ``[box_min, box_max]^3`` (OpenLRM [-1, 1], TripoSR [-0.87, 0.87]) with
``resolution`` points per axis; the surface is the ``threshold`` level set of the *activated*
density (OpenLRM extracts at 384^3 with 3.0, TripoSR at 256^3 with 25.0; defaults come from
``RenderConfig.mesh_resolution`` / ``mesh_threshold``). Marching cubes: scikit-image's
``measure.marching_cubes`` (Lewiner). Vertices are in world coordinates; faces wind so normals point
out of the object (from high to low density).

Coarse-to-fine (``coarse_to_fine=True``; opt-in, off by default): the density is first queried on a grid 4x
coarser per axis; fine points are queried exactly only inside coarse cells where the surface may
pass: the threshold lies within the cell's corner range widened by the largest change along any
nearby coarse edge (dilated by one cell). The rest take the trilinear upsampling of the coarse grid,
which lies on the same side of the threshold, so marching cubes places no surface there. Smooth
(trained) fields refine a thin shell around the surface; noisy ones (random weights) refine almost
everything, i.e. cost about as much as the dense grid instead of losing surface. A blob smaller than
a coarse cell in a region where the coarse values vary less than its height can still be missed;
``coarse_to_fine=False`` (the default) queries every point. Measured limit: on the *untrained*
base preset at 256^3 the coarse grid (stride 4 = one triplane texel) aliases the texel-periodic
noise of the random field and the mesh lost ~19% of its faces, so it stays opt-in until it is
validated on trained weights; on smooth fields (tests, bench "mesh-smooth-field") it is exact.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

COARSE_STRIDE = 4


def _grid_axis(res: int, lo: float, hi: float, device, dtype=torch.float32) -> torch.Tensor:
    return torch.linspace(lo, hi, res, device=device, dtype=dtype)


def _query_points(density_fn: Callable[[torch.Tensor], torch.Tensor], pts: torch.Tensor, chunk: int,
                  progress=None) -> torch.Tensor:
    """density_fn over ``pts [N, 3]`` in chunks -> ``[N]`` fp32."""
    out = torch.empty(pts.shape[0], dtype=torch.float32, device=pts.device)
    for s in range(0, pts.shape[0], chunk):
        out[s:s + chunk] = density_fn(pts[s:s + chunk]).float().reshape(-1)
        if progress is not None:
            progress.update(min(chunk, pts.shape[0] - s))
    return out


def density_grid(density_fn: Callable[[torch.Tensor], torch.Tensor], resolution: int, box_min: float,
                 box_max: float, threshold: float, device=None, coarse_to_fine: bool = False,
                 chunk: int = 262144, progress: bool = False) -> tuple[np.ndarray, int]:
    """Density ``[R, R, R]`` (fp32 numpy; index ``[i, j, k]`` = point ``(x_i, y_j, z_k)``) and the
    number of points actually queried.

    ``density_fn(points [N, 3]) -> [N]`` takes world points."""
    R = int(resolution)
    if R < 2:
        raise ValueError(f"mesh resolution must be >= 2, got {resolution}")
    s = COARSE_STRIDE
    use_c2f = coarse_to_fine and R >= 8 * s
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(desc="mesh: density grid", unit="pt", unit_scale=True, leave=False)
    try:
        if not use_c2f:
            if bar is not None:
                bar.total = R ** 3
            ax = _grid_axis(R, box_min, box_max, device)
            pts = torch.stack(torch.meshgrid(ax, ax, ax, indexing="ij"), -1).reshape(-1, 3)
            return _query_points(density_fn, pts, chunk, bar).reshape(R, R, R).cpu().numpy(), R ** 3
        # coarse points sit on every s-th fine point; the last coarse cell may reach past the box
        # (the field is defined there too), the fine grid is cropped back to R afterwards
        Rc = -(-(R - 1) // s) + 1
        Rf = (Rc - 1) * s + 1
        h = (box_max - box_min) / (R - 1)
        axc = box_min + h * s * torch.arange(Rc, device=device, dtype=torch.float32)
        ptsc = torch.stack(torch.meshgrid(axc, axc, axc, indexing="ij"), -1).reshape(-1, 3)
        if bar is not None:
            bar.total = Rc ** 3
        coarse = _query_points(density_fn, ptsc, chunk, bar).reshape(Rc, Rc, Rc)
        # A cell is refined when the threshold lies within its corner range widened by the largest
        # change along any coarse edge nearby (a local Lipschitz bound): a smooth field refines only
        # cells the surface crosses, a noisy one (untrained weights) refines nearly everything,
        # i.e. falls back to the dense grid instead of missing surface between coarse corners.
        c = coarse[None, None]
        cmax = F.max_pool3d(c, 2, 1)
        cmin = -F.max_pool3d(-c, 2, 1)
        edge = torch.zeros_like(cmax)
        for d in range(3):
            e = (c.narrow(2 + d, 1, Rc - 1) - c.narrow(2 + d, 0, Rc - 1)).abs()
            e = F.max_pool3d(e, [1 if k == d else 2 for k in range(3)], 1)
            edge = torch.maximum(edge, e)
        var = F.max_pool3d(edge, 3, 1, padding=1)
        active = (cmin - var <= threshold) & (cmax + var >= threshold)
        active = F.max_pool3d(active.float(), 3, 1, padding=1)[0, 0] > 0       # dilate by one cell
        fine = F.interpolate(coarse[None, None], size=(Rf, Rf, Rf), mode="trilinear",
                             align_corners=True)[0, 0, :R, :R, :R].contiguous()
        idx = active.nonzero()                                                   # [M, 3] coarse cells
        n = Rc ** 3
        if idx.numel():
            off = torch.arange(s + 1, device=idx.device)
            o = torch.stack(torch.meshgrid(off, off, off, indexing="ij"), -1).reshape(-1, 3)
            pts_idx = (idx[:, None] * s + o[None]).reshape(-1, 3)
            pts_idx = pts_idx[(pts_idx < R).all(-1)]
            flat = torch.unique(pts_idx[:, 0] * R * R + pts_idx[:, 1] * R + pts_idx[:, 2])
            ijk = torch.stack([flat // (R * R), (flat // R) % R, flat % R], -1)
            pts = box_min + h * ijk.to(torch.float32)
            if bar is not None:
                bar.total = Rc ** 3 + pts.shape[0]
            fine.view(-1)[flat] = _query_points(density_fn, pts, chunk, bar)
            n += pts.shape[0]
        return fine.cpu().numpy(), n
    finally:
        if bar is not None:
            bar.close()


def marching_cubes(grid: np.ndarray, threshold: float, box_min: float, box_max: float):
    """(vertices ``[V, 3]`` world fp32, faces ``[F, 3]`` int64, outward winding) of the level set."""
    from skimage import measure

    if not np.isfinite(grid).all():
        raise ValueError("density grid contains NaN/inf; the model produced non-finite densities")
    gmin, gmax = float(grid.min()), float(grid.max())
    if gmax <= threshold:
        raise ValueError(f"empty mesh: the density never exceeds the threshold {threshold:g} (max {gmax:.3g}); "
                         "the object is empty at this threshold, try a lower one")
    if gmin >= threshold:
        raise ValueError(f"full mesh: the density is above the threshold {threshold:g} everywhere in the box "
                         f"(min {gmin:.3g}); try a higher threshold")
    verts, faces, _, _ = measure.marching_cubes(grid, level=threshold, allow_degenerate=False)
    R = grid.shape[0]
    verts = box_min + verts * ((box_max - box_min) / (R - 1))
    # skimage winds faces with normals toward decreasing values' opposite; flip so they point outward
    # (from high density inside to low outside)
    return verts.astype(np.float32), np.ascontiguousarray(faces[:, ::-1]).astype(np.int64)


def _largest_component(mesh):
    parts = mesh.split(only_watertight=False)
    if len(parts) <= 1:
        return mesh
    return max(parts, key=lambda m: len(m.faces))


@torch.inference_mode()
def extract_mesh(model, planes: torch.Tensor, resolution: int | None = None, threshold: float | None = None,
                 largest_component: bool = False, coarse_to_fine: bool = False, chunk: int = 262144,
                 progress: bool = False):
    """A ``trimesh.Trimesh`` with per-vertex RGBA colors from one triplane ``[1, 3, C, H, W]``.

    ``threshold="auto"`` (used for untrained presets, whose densities have no meaningful scale) takes
    the 75th percentile of the dense grid's densities.

    Density and colors come from ``model.field`` (the fast triplane-MLP kernel where available).
    Raises ``ValueError`` with the density range when nothing crosses the threshold."""
    import trimesh

    if planes.dim() != 5 or planes.shape[0] != 1 or planes.shape[1] != 3:
        raise ValueError(f"extract_mesh takes one triplane [1, 3, C, H, W], got {tuple(planes.shape)}")
    rc = model.cfg.render
    resolution = rc.mesh_resolution if resolution is None else int(resolution)
    auto = isinstance(threshold, str)
    if auto and threshold != "auto":
        raise ValueError(f"mesh threshold must be a number or 'auto', got {threshold!r}")
    threshold = rc.mesh_threshold if threshold is None else (0.0 if auto else float(threshold))
    field = model.field

    def density(pts: torch.Tensor) -> torch.Tensor:
        # points stay fp32 (bf16 would quantize coordinates to ~1/128 of the box); the op decides
        raw = field(planes, pts[None])
        return field.density(raw[..., 0].float())[0]

    grid, _ = density_grid(density, resolution, rc.box_min, rc.box_max, threshold, planes.device,
                           coarse_to_fine and not auto, chunk, progress)
    if auto:  # untrained weights: no meaningful level; take the densest quarter of the box
        threshold = float(np.quantile(grid, 0.75))
    verts, faces = marching_cubes(grid, threshold, rc.box_min, rc.box_max)
    mesh = trimesh.Trimesh(verts, faces, process=False)
    if largest_component:
        mesh = _largest_component(mesh)
    v = torch.from_numpy(np.asarray(mesh.vertices, dtype=np.float32)).to(planes.device)
    rgb = torch.cat([field.rgb(field(planes, v[None, s:s + chunk]).float())[0]
                     for s in range(0, v.shape[0], chunk)], 0) if v.shape[0] else v.new_zeros(0, 3)
    colors = (rgb.clamp(0, 1).cpu().numpy() * 255 + 0.5).astype(np.uint8)
    mesh.visual.vertex_colors = np.concatenate([colors, np.full_like(colors[:, :1], 255)], 1)
    return mesh


def sphere_density(radius: float = 0.5, peak: float = 10.0) -> Callable[[torch.Tensor], torch.Tensor]:
    """A test density: ``peak * (1 - |p| / radius)`` clipped at 0 (level ``t`` -> sphere of radius
    ``radius * (1 - t / peak)``)."""
    return lambda p: (peak * (1 - p.norm(dim=-1) / radius)).clamp_min(0)


__all__ = ["extract_mesh", "density_grid", "marching_cubes", "sphere_density", "COARSE_STRIDE"]
