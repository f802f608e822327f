"""Triplane field -> colored mesh: density on a grid, marching cubes, vertex colors from the field.

The grid spans the render box ``[box_min, box_max]^3`` (OpenLRM [-1, 1], TripoSR [-0.87, 0.87]) with
``resolution`` points per axis; the surface is the ``threshold`` level set of the *activated*
density (OpenLRM extracts at 384^3 with 3.0, TripoSR at 256^3 with 25.0; defaults come from
``RenderConfig.mesh_resolution`` / ``mesh_threshold``). Marching cubes: scikit-image's
``measure.marching_cubes`` (Lewiner) on the host; on CUDA (a numeric level, not watertight, no explicit
``slab``, the grid within the memory budget) the grid never leaves the device: ``ops.marching_cubes``
(Lorensen's tables, skimage's Lorensen vertex for vertex) meshes it there and the colours are one batched
field pass (``_extract_mesh_on_device``; ``LRM_FAST_MESH_DEVICE=1`` / ``0`` forces it on / off). Lewiner
and Lorensen differ only in ambiguous cubes (Lewiner decides their topology with its tests, Lorensen's
table one fixed way; both close the surface: tests/test_marching_cubes.py). Vertices are in world
coordinates; faces wind so normals point out of the object (from high to low density).

Coarse-to-fine (``coarse_to_fine=True``, the default ``COARSE_TO_FINE_DEFAULT``): cells of 4^3 fine
cubes; for each cell a
*proven* bound of the density over the cell (``field_density_bounds``, ``field/bounds.py``: each first-layer unit of the
field MLP is linear in the bilinearly sampled features, so its range over the cell is the range of
the projected planes at the footprint's breakpoints; interval arithmetic through the other layers; a
rounding margin for the fp32 kernel and the float32 interval arithmetic). Blocks of 4^3 cells, then
2^3, are bounded first, so empty space and the inside are decided in few bounds. Only the fine
points of cells whose bound contains the level are queried; the others take the float just above
or below the level, the side the bound proves. Every fine cube that the surface crosses lies in a refined cell, and marching cubes reads
only a crossing cube's own corners, so the mesh is the dense grid's, vertex for vertex and face for
face (tests: fitted field, demo model, parity checkpoints, random weights, analytic spheres). A
density function without a bound (a bare ``density_fn`` given to ``density_grid``) gets the dense
grid. Loose bounds cost speed, never surface: random weights refine nearly everything, and a level of
blocks and one of sub-blocks that each decide under ``C2F_MIN_DECIDED`` of them end the bounding
(TripoSR's field: the dense grid plus two cheap levels of bounds). Speed (2-core
CPU, same run): at 256^3 3.3x faster than the dense grid on the fitted base field, 1.3x on the demo
model (docs/readme/bench.md).
"""
from __future__ import annotations

import inspect
import os
from typing import Callable

import numpy as np
import torch

from .field.bounds import field_density_bounds
from .memory import MemoryBudget

COARSE_STRIDE = 4
# when the blocks of 4^3 and of 2^3 cells both decided less than this fraction of themselves, single
# cells (the costliest level) are not bounded: the bound is too loose to pay (TripoSR's 10 SiLU layers:
# it decides nothing, field/bounds.py), and every cell left is queried, as in the dense grid
C2F_MIN_DECIDED = 0.02
# what ``extract_mesh`` does when not told (``coarse_to_fine=None``); see the module docstring's speed note
COARSE_TO_FINE_DEFAULT = True
# Memory (``MemoryBudget``, one per call, decided before the loops): a slab of grid rows takes
# ``GRID_SHARE`` of the budget, the field queries the rest. Bytes per grid point of a slab, counted
# generously: the float32 grid, the coarse-to-fine masks (above / active, with their repeat_interleave
# copies), ``_close_at_box``'s padded copies, marching cubes' crop and level mask.
GRID_POINT_BYTES = 48
GRID_SHARE = 0.5
# at most this many rows a slab, whatever the budget: thinner slabs crop tighter around the surface
# (``_crop``), so marching cubes reads fewer cubes (384^3, fitted field: 1.7-2x faster than one piece)
SLAB_ROWS_MAX = 32
# bytes per point of a bare ``density_fn`` query (a field's own count is ``TriplaneField.query_bytes``)
POINT_BYTES = 2048
# bytes per box of one ``bounds_fn`` call (float64 corners and their copies, footprint keys, results)
BOX_BYTES = 512


def _grid_axis(res: int, lo: float, hi: float, device, dtype=torch.float32) -> torch.Tensor:
    return torch.linspace(lo, hi, res, device=device, dtype=dtype)


def _query_grid(density_fn: Callable[[torch.Tensor], torch.Tensor], axes, out: torch.Tensor, chunk: int,
                progress=None) -> None:
    """``out.view(-1)[f] = density_fn(points)`` over the product grid of ``axes`` (x, y, z), in chunks
    of ``chunk`` points whose coordinates are made per chunk (no full-grid point array)."""
    ax, ay, az = axes
    ny, nz = ay.shape[0], az.shape[0]
    flat_out = out.view(-1)
    n = flat_out.shape[0]
    for s in range(0, n, chunk):
        f = torch.arange(s, min(s + chunk, n), device=out.device)
        pts = torch.stack([ax[f // (ny * nz)], ay[(f // nz) % ny], az[f % nz]], -1)
        flat_out[s:s + f.shape[0]] = density_fn(pts).float().reshape(-1)
        if progress is not None:
            progress.update(f.shape[0])


def _cells_to_points(cells: torch.Tensor, s: int, R: int, rows: tuple[int, int] | None = None) -> torch.Tensor:
    """Cell mask ``[Rc-1]^3`` -> point mask ``[R]^3``: a fine point is set when any closed coarse cell
    containing it is (cell ``c`` holds fine indices ``c*s .. c*s+s`` along each axis). ``rows=(i0, i1)``:
    only fine rows ``i0 <= i < i1`` of the first axis (``[i1 - i0, R, R]``), from the cell rows they need."""
    i0, i1 = (0, R) if rows is None else rows
    c0 = max(0, i0 // s - 1)                      # fine row i needs cell rows i // s and, at i = k s, k - 1
    c1 = min(cells.shape[0], (i1 - 1) // s + 1)
    x = cells[c0:c1]
    for d in range(3):
        x = x.repeat_interleave(s, dim=d)                         # index i -> cell i // s
        one = list(x.shape)
        one[d] = 1
        x = torch.cat([x, x.new_zeros(one)], d)                   # length (Rc-1)*s + 1
        prev = torch.cat([x.new_zeros(one), x.narrow(d, 0, x.shape[d] - 1)], d)   # prev[i] = x[i-1]
        i = torch.arange(x.shape[d], device=x.device)
        shape = [1, 1, 1]
        shape[d] = -1
        shared = ((i % s == 0) & (i > 0)).view(shape)              # i = s, 2s, ..: also cell i//s - 1
        x = x | (prev & shared)
        # first axis: local index 0 is fine row c0 * s, below i0 whenever c0 > 0 (its cell c0 - 1 is not here)
        x = x.narrow(d, i0 - c0 * s, i1 - i0) if d == 0 else x.narrow(d, 0, R)
    return x.contiguous()


def query_chunk(budget: MemoryBudget, point_bytes: int = POINT_BYTES) -> int:
    """Points per density query: the queries' share (``1 - GRID_SHARE``) of ``budget``."""
    return budget.count(point_bytes, share=1 - GRID_SHARE, minimum=256)


def density_grid(density_fn: Callable[[torch.Tensor], torch.Tensor], resolution: int, box_min: float,
                 box_max: float, threshold: float, device=None, coarse_to_fine: bool = False,
                 chunk: int | None = None, progress: bool = False, bounds_fn=None,
                 max_memory=None, point_bytes: int = POINT_BYTES) -> tuple[np.ndarray, int]:
    """Density ``[R, R, R]`` (fp32 numpy; index ``[i, j, k]`` = point ``(x_i, y_j, z_k)``) and the
    number of points actually queried.

    ``density_fn(points [N, 3]) -> [N]`` takes world points. Coarse-to-fine needs a conservative
    bound of the density over a box: ``bounds_fn(lo [M, 3], hi [M, 3]) -> (dmin [M], dmax [M])``
    (or a ``density_fn.bounds`` attribute; ``field_density_bounds`` makes one for a triplane field).
    Without one the dense grid is queried: no rule that only sees samples can be exact.

    ``chunk``: points per query (default: ``query_chunk`` of the budget ``max_memory``, see
    ``lrm_fast.memory``, for ``point_bytes`` per point); the grid itself is the caller's."""
    grid, n = _density_grid_tensor(density_fn, resolution, box_min, box_max, threshold, device, coarse_to_fine, chunk,
                                   progress, bounds_fn, max_memory, point_bytes)
    return grid.cpu().numpy(), n


def _density_grid_tensor(density_fn, resolution, box_min, box_max, threshold, device, coarse_to_fine, chunk, progress,
                         bounds_fn, max_memory, point_bytes) -> tuple[torch.Tensor, int]:
    """``density_grid`` as a float32 tensor on ``device`` (the device mesh path keeps it there)."""
    R = int(resolution)
    budget = MemoryBudget.resolve(max_memory, device if device is not None else "cpu")
    chunk = query_chunk(budget, point_bytes) if chunk is None else int(chunk)
    if R < 2:
        raise ValueError(f"mesh resolution must be >= 2, got {resolution}")
    s = COARSE_STRIDE
    if bounds_fn is None:
        bounds_fn = getattr(density_fn, "bounds", None)
    use_c2f = coarse_to_fine and bounds_fn is not None and R >= 8 * s
    ax = _grid_axis(R, box_min, box_max, device)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(desc="mesh: density grid", unit="pt", unit_scale=True, leave=False)
    try:
        if not use_c2f:
            if bar is not None:
                bar.total = R ** 3
            grid = torch.empty(R, R, R, dtype=torch.float32, device=ax.device)
            _query_grid(density_fn, (ax, ax, ax), grid, chunk, bar)
            return grid, R ** 3
        above, active = _c2f_cells(bounds_fn, R, ax, box_min, box_max, float(threshold),
                                   budget.count(BOX_BYTES, share=1 - GRID_SHARE, minimum=4096))
        return _c2f_rows(density_fn, above, active, R, ax, float(threshold), chunk, bar)
    finally:
        if bar is not None:
            bar.close()


def _c2f_cells(bounds_fn, R, ax, box_min, box_max, threshold, box_chunk: int = 1 << 18):
    """Cells of ``s^3`` fine cubes (corners on every s-th fine point), per cell a conservative density
    bound (blocks of cells first); fine points of cells whose bound contains the threshold are queried
    exactly, the others take the float just above or below the threshold, the side their cells' bound
    proves. Every fine cube with a surface crossing lies in a refined cell, so marching cubes gives the
    dense result (the values away from the surface are not the field's).

    This pass decides the cells: ``(above, active)`` bool ``[nc]^3``; ``_c2f_rows`` makes fine rows from them.
    ``box_chunk``: boxes per ``bounds_fn`` call."""
    s = COARSE_STRIDE
    device = ax.device
    # coarse points sit on every s-th fine point; the last coarse cell may reach past the box (the field
    # is defined there too), the fine grid is cropped back to R afterwards
    Rc = -(-(R - 1) // s) + 1
    Rf = (Rc - 1) * s + 1
    h = (box_max - box_min) / (R - 1)
    extra = (box_min + h * torch.arange(R, Rf, dtype=torch.float64)).to(device=device, dtype=torch.float32)
    axc = torch.cat([ax, extra])[::s].contiguous()                  # the fine axis' own values where < R
    # per cell (Rc-1)^3: does the bound contain the threshold? (NaN bounds: yes)
    nc = Rc - 1
    lo_ax, hi_ax = axc[:-1], axc[1:]
    takes_level = "level" in inspect.signature(bounds_fn).parameters

    def bound(lo, hi):
        return bounds_fn(lo, hi, level=threshold) if takes_level else bounds_fn(lo, hi)

    # blocks of 4^3 cells first, then 2^3 sub-blocks of the undecided ones, then single cells: a block
    # whose bound is decided decides all its cells (empty space and the inside in one bound each)
    above = torch.zeros(nc, nc, nc, dtype=torch.bool, device=device)
    below = torch.zeros_like(above)
    todo = None                                     # undecided blocks of the previous level (flat ids)
    decided = []                                    # per level, the fraction of its blocks decided
    for B in (4, 2, 1):
        nb = -(-nc // B)
        if todo is None:
            cand = torch.arange(nb ** 3, device=device)
        else:                                       # children of the parent level's undecided blocks
            pb = -(-nc // (2 * B))
            pi, pj, pk = todo // (pb * pb), (todo // pb) % pb, todo % pb
            o = torch.arange(2, device=device)
            ci = (2 * pi[:, None, None, None] + o[:, None, None]).expand(-1, 2, 2, 2)
            cj = (2 * pj[:, None, None, None] + o[None, :, None]).expand(-1, 2, 2, 2)
            ck = (2 * pk[:, None, None, None] + o[None, None, :]).expand(-1, 2, 2, 2)
            keep = (ci < nb) & (cj < nb) & (ck < nb)
            cand = ((ci * nb + cj) * nb + ck)[keep]
        if cand.numel() == 0:                       # every block was decided a level up (e.g. no surface)
            break
        i, j, k = cand // (nb * nb), (cand // nb) % nb, cand % nb
        last = torch.clamp(torch.arange(nb, device=device) * B + B - 1, max=nc - 1)
        blo, bhi = lo_ax[::B], hi_ax[last]
        up_l, dn_l = [], []
        for st in range(0, cand.shape[0], box_chunk):
            sl = slice(st, st + box_chunk)
            dmin, dmax = bound(torch.stack([blo[i[sl]], blo[j[sl]], blo[k[sl]]], -1),
                               torch.stack([bhi[i[sl]], bhi[j[sl]], bhi[k[sl]]], -1))
            up_l.append((dmin > threshold).to(device))
            dn_l.append((dmax < threshold).to(device))
        up, dn = torch.cat(up_l), torch.cat(dn_l)
        for flag, out in ((up, above), (dn, below)):   # mark the decided blocks' cells
            sel = flag.nonzero()[:, 0]
            if sel.numel():
                o = torch.arange(B, device=device)
                ii = (i[sel, None] * B + o).clamp(max=nc - 1)
                jj = (j[sel, None] * B + o).clamp(max=nc - 1)
                kk = (k[sel, None] * B + o).clamp(max=nc - 1)
                out[ii[:, :, None, None], jj[:, None, :, None], kk[:, None, None, :]] = True
        todo = cand[~(up | dn)]
        decided.append(float((up | dn).float().mean()))
        if B == 2 and max(decided) < C2F_MIN_DECIDED:
            break
    return above, ~(above | below)


def _c2f_rows(density_fn, above, active, R, ax, threshold, chunk, bar, rows=None):
    """Fine rows ``i0 <= i < i1`` (default all) of the coarse-to-fine grid: ``([i1 - i0, R, R] float32, number
    of points queried)``. Points only in cells entirely above (below) the level take the float just above
    (below) it: marching cubes reads a cube's corners only to find crossings, and no such cube has a
    crossing (a point cannot be in both kinds of cells: a shared face would hold values above and below)."""
    s = COARSE_STRIDE
    device = ax.device
    i0, i1 = (0, R) if rows is None else rows
    up = torch.nextafter(torch.tensor(threshold, dtype=torch.float32), torch.tensor(np.inf, dtype=torch.float32))
    dn = torch.nextafter(torch.tensor(threshold, dtype=torch.float32), torch.tensor(-np.inf, dtype=torch.float32))
    fine = torch.where(_cells_to_points(above, s, R, (i0, i1)), up.to(device), dn.to(device))
    pts_active = _cells_to_points(active, s, R, (i0, i1))
    n_active = int(pts_active.sum())
    if bar is not None:
        bar.total = (bar.total or 0) + n_active
    step = max(1, chunk // (R * R))
    for r0 in range(0, i1 - i0, step):
        m = pts_active[r0:r0 + step]
        idx = m.nonzero()
        if not idx.shape[0]:
            continue
        for c0 in range(0, idx.shape[0], chunk):
            ijk = idx[c0:c0 + chunk]
            pts = torch.stack([ax[ijk[:, 0] + i0 + r0], ax[ijk[:, 1]], ax[ijk[:, 2]]], -1)
            fine[ijk[:, 0] + r0, ijk[:, 1], ijk[:, 2]] = density_fn(pts).float().reshape(-1)
            if bar is not None:
                bar.update(ijk.shape[0])
    return fine, n_active


def _close_at_box(grid: np.ndarray, threshold: float, start: bool = True, end: bool = True) -> np.ndarray:
    """``grid [n, R, R]`` padded by one layer of points outside the box whose values put every level
    crossing on a boundary edge halfway out: ``2 * threshold - value`` of the neighbouring boundary
    point where that point is above the level, else the float just below the level (no crossing).
    ``start`` / ``end``: pad the first axis before / after too (a slab inside the grid is not)."""
    below = np.nextafter(np.float32(threshold), np.float32(-np.inf))
    a0 = (int(start), int(end))
    out = np.pad(grid, (a0, (1, 1), (1, 1)), mode="edge")
    mirrored = np.minimum(np.float32(2 * threshold) - out, below).astype(np.float32)
    inner = np.zeros(out.shape, dtype=bool)
    inner[a0[0]:out.shape[0] - a0[1], 1:-1, 1:-1] = True
    return np.where(inner, out, mirrored)


def _check_level(gmin: float, gmax: float, threshold: float, close: bool) -> None:
    if gmax <= threshold:
        raise ValueError(f"empty mesh: the density never exceeds the threshold {threshold:g} (max {gmax:.3g}); "
                         "the object is empty at this threshold, try a lower one")
    if gmin >= threshold and not close:
        raise ValueError(f"full mesh: the density is above the threshold {threshold:g} everywhere in the box "
                         f"(min {gmin:.3g}); try a higher threshold")


def marching_cubes(grid: np.ndarray, threshold: float, box_min: float, box_max: float, close: bool = False):
    """(vertices ``[V, 3]`` world fp32, faces ``[F, 3]`` int64, outward winding) of the level set.

    ``close=True``: where the object reaches the box, the surface is closed by the box's faces (the
    grid is padded by one outside layer, ``_close_at_box``, and the vertices are clamped back onto
    the box), so the mesh is watertight; a density above the level everywhere meshes the box itself.
    The whole grid is one slab of ``marching_cubes_slabs``."""
    R = grid.shape[0]
    return marching_cubes_slabs(lambda i0, i1: grid[i0:i1], R, threshold, box_min, box_max, max(1, R - 1), close)


def _crop(g: np.ndarray, threshold: float) -> tuple[tuple[slice, ...], bool]:
    """The smallest box of ``g`` holding every cube with corners on both sides of the level (the only
    cubes marching cubes makes faces in), and whether there is one: per axis, a crossing cube starts
    within one point before the first and at the last index where either side has points."""
    above = g > threshold
    box = []
    for d in range(3):
        other = tuple(e for e in range(3) if e != d)
        up = above.any(axis=other)
        dn = ~above.all(axis=other)
        if not (up.any() and dn.any()):
            return (), False
        iu, idn = np.nonzero(up)[0], np.nonzero(dn)[0]
        lo = max(0, max(iu[0], idn[0]) - 1)
        hi = min(g.shape[d], min(iu[-1], idn[-1]) + 2)
        if hi - lo < 2:
            return (), False
        box.append(slice(int(lo), int(hi)))
    return tuple(box), True


_CUBE_CORNERS = [np.array([i, j, k]) for i in (0, 1) for j in (0, 1) for k in (0, 1)]


def _exact_vertices(v: np.ndarray, g: np.ndarray, threshold: float, off: np.ndarray) -> np.ndarray:
    """skimage's vertices ``v`` (float32, in ``g``'s index units) moved by the integer ``off`` and
    recomputed in float64 from ``g``, then rounded once to float32: a vertex then has the same bits
    whatever crop or slab it came from (skimage rounds ``index + t`` in float32 at its own indices), so
    slabbed, cropped and whole-grid meshes are bitwise the same. A vertex on a grid edge (one fractional
    coordinate) is ``edge start + t``, ``t = (level - g0) / (g1 - g0)``; a cube-interior vertex that
    Lewiner's method adds for an ambiguous cube (several fractional coordinates) is skimage's own
    formula, the cube's corners weighted by ``1 / |value - level|`` (within an ulp of skimage's)."""
    base = np.floor(v)
    frac = v != base
    bi = base.astype(np.int64)
    out = (bi + off).astype(np.float64)
    level = np.float64(threshold)
    nfrac = frac.sum(1)
    rows = np.nonzero(nfrac == 1)[0]
    interior = nfrac > 1
    if rows.size:
        axis = frac[rows].argmax(1)
        p0 = bi[rows]
        p1 = p0.copy()
        p1[np.arange(rows.size), axis] += 1
        inside = (p1 < np.array(g.shape)).all(1)
        p1 = np.where(inside[:, None], p1, p0)
        g0 = g[p0[:, 0], p0[:, 1], p0[:, 2]].astype(np.float64)
        g1 = g[p1[:, 0], p1[:, 1], p1[:, 2]].astype(np.float64)
        on_edge = inside & ((g0 > level) != (g1 > level))
        out[rows[on_edge], axis[on_edge]] += (level - g0[on_edge]) / (g1[on_edge] - g0[on_edge])
        interior[rows[~on_edge]] = True         # not on a crossing edge: a cube-interior vertex after all
    cubes = np.nonzero(interior)[0]
    if cubes.size:                                # skimage's centre: corners weighted by 1 / |value - level|
        c = np.minimum(bi[cubes], np.array(g.shape) - 2)
        acc = np.zeros((cubes.size, 3))
        wsum = np.zeros(cubes.size)
        for corner in _CUBE_CORNERS:
            p = c + corner
            d = np.abs(g[p[:, 0], p[:, 1], p[:, 2]] - np.float32(threshold)).astype(np.float64)
            w = 1.0 / np.maximum(d, 1e-300)
            acc += w[:, None] * corner
            wsum += w
        out[cubes] = (c + off) + acc / wsum[:, None]
    return out.astype(np.float32)


def _merge_coincident(v: np.ndarray, f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vertices at the same position merged into the first, and the faces that then repeat a vertex
    dropped: skimage's ``allow_degenerate=False``, decided here on the exact vertices so that every
    slab and crop decides alike (skimage decides on its own float32 rounding). Distinct vertices meet
    only at grid points (a crossing exactly at an edge's end), so only those are compared."""
    at_point = np.nonzero((v == np.floor(v)).all(1))[0]
    if at_point.size > 1:
        _, first, inv = np.unique(v[at_point], axis=0, return_index=True, return_inverse=True)
        target = np.arange(len(v))
        target[at_point] = at_point[first[inv.reshape(-1)]]
        if (target[at_point] != at_point).any():
            keep = target == np.arange(len(v))
            new = np.cumsum(keep) - 1
            v, f = v[keep], new[target][f]
    good = (f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 0] != f[:, 2])
    return v, (f if good.all() else f[good])


def marching_cubes_slabs(rows_fn: Callable[[int, int], np.ndarray], R: int, threshold: float, box_min: float,
                         box_max: float, slab: int, close: bool = False):
    """``marching_cubes`` of an ``[R, R, R]`` grid made ``slab`` rows at a time: ``rows_fn(i0, i1)`` gives
    rows ``i0 <= i < i1`` (``[i1 - i0, R, R]`` float32). Slabs overlap by one row; the vertices on a
    shared row come out of both slabs from the same values, so they are merged by position, and the
    result is the whole grid's mesh bit for bit (vertices and faces in the same order), in memory for
    ``slab + 1`` rows instead of ``R``. Each slab is meshed only over the box of its cubes that cross
    the level (``_crop``; a slab without one is skipped), with vertices recomputed exactly
    (``_exact_vertices``). skimage winds faces with normals toward increasing values; they are flipped
    to point outward (from high density inside to low outside)."""
    from skimage import measure

    if slab < 1:
        raise ValueError(f"mesh slab must be >= 1 rows, got {slab}")
    h = (box_max - box_min) / (R - 1)
    verts, faces = [], []
    n_v = 0
    gmin, gmax = np.inf, -np.inf
    shared: dict = {}                    # (y, z) bytes -> vertex index, on the previous slab's last row
    for i0 in range(0, R - 1, slab):
        i1 = min(i0 + slab, R - 1)       # the slab's last row (the next slab's first)
        g = np.ascontiguousarray(rows_fn(i0, i1 + 1), dtype=np.float32)
        lo, hi = float(g.min()), float(g.max())
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise ValueError("density grid contains NaN/inf; the model produced non-finite densities")
        gmin, gmax = min(gmin, lo), max(gmax, hi)
        first, last = i0 == 0, i1 == R - 1
        off = np.array([i0, 0, 0], np.int64)
        if close:
            g = _close_at_box(g, threshold, first, last)
            off -= np.array([int(first), 1, 1], np.int64)
        box, crosses = _crop(g, threshold)
        if not crosses:
            shared = {}
            continue
        gc = g[box]
        v, f, _, _ = measure.marching_cubes(gc, level=threshold, allow_degenerate=True)
        del _
        v, f = _merge_coincident(_exact_vertices(v, gc, threshold, off + np.array([b.start for b in box], np.int64)), f)
        del g, gc
        index = np.arange(len(v))
        if shared:                        # this slab's first row was the previous slab's last
            on = np.nonzero(v[:, 0] == i0)[0]
            hit = [shared.get(v[j, 1:].tobytes(), -1) for j in on]
            dup = np.array(hit, np.int64) >= 0 if len(on) else np.zeros(0, bool)
            keep = np.ones(len(v), bool)
            keep[on[dup]] = False
            index = np.empty(len(v), np.int64)
            index[keep] = n_v + np.arange(int(keep.sum()))
            index[on[dup]] = np.array(hit, np.int64)[dup]
            v = v[keep]
        else:
            index = index + n_v
        faces.append(index[f])
        verts.append(v)
        n_v += len(v)
        row = np.nonzero(verts[-1][:, 0] == i1)[0]
        shared = {verts[-1][j, 1:].tobytes(): n_v - len(v) + j for j in row}
    _check_level(gmin, gmax, threshold, close)
    if not verts:
        raise ValueError(f"empty mesh: no surface crosses the threshold {threshold:g}")
    v = box_min + np.concatenate(verts) * np.float32(h)
    if close:
        v = np.clip(v, box_min, box_max)
    f = np.concatenate(faces)
    return v.astype(np.float32), np.ascontiguousarray(f[:, ::-1]).astype(np.int64)


def _largest_component(mesh):
    parts = mesh.split(only_watertight=False)
    if len(parts) <= 1:
        return mesh
    return max(parts, key=lambda m: len(m.faces))


def _field_density_fn(field, planes: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """``density(points [N, 3]) -> [N]``: the field's activated density on one triplane ``[1, 3, C, H, W]``."""
    def density(pts: torch.Tensor) -> torch.Tensor:
        # points stay fp32 (bf16 would quantize coordinates to ~1/128 of the box); the op decides
        return field.density(field(planes, pts[None])[..., 0].float())[0]

    return density


def field_density_grid(model, planes: torch.Tensor, resolution: int, threshold: float,
                       coarse_to_fine: bool = False, chunk: int | None = None, progress: bool = False,
                       max_memory=None) -> np.ndarray:
    """The activated density of ``model.field`` on the mesh grid ``[R, R, R]`` of the render box (what
    ``extract_mesh`` meshes): dense, or coarse-to-fine with ``field_density_bounds``; queries chunked
    from the budget ``max_memory`` (``density_grid``)."""
    rc, field = model.cfg.render, model.field
    grid, _ = density_grid(_field_density_fn(field, planes), resolution, rc.box_min, rc.box_max, threshold, planes.device,
                           coarse_to_fine, chunk, progress,
                           bounds_fn=field_density_bounds(field, planes) if coarse_to_fine else None,
                           max_memory=max_memory, point_bytes=field.query_bytes())
    return grid


def field_density_rows(model, planes: torch.Tensor, resolution: int, threshold: float, coarse_to_fine: bool = False,
                       chunk: int | None = None, progress: bool = False,
                       max_memory=None) -> Callable[[int, int], np.ndarray]:
    """``rows(i0, i1) -> [i1 - i0, R, R]`` float32 numpy: rows of ``field_density_grid``'s grid, made on
    demand (the coarse-to-fine cell pass runs once, here), for ``marching_cubes_slabs``. ``chunk``:
    points per field query (default: ``query_chunk`` of the budget ``max_memory``)."""
    rc, field = model.cfg.render, model.field
    R = int(resolution)
    budget = MemoryBudget.resolve(max_memory, planes.device)
    chunk = query_chunk(budget, field.query_bytes()) if chunk is None else int(chunk)
    ax = _grid_axis(R, rc.box_min, rc.box_max, planes.device)
    density = _field_density_fn(field, planes)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(desc="mesh: density grid", unit="pt", unit_scale=True, leave=False)
    if coarse_to_fine and R >= 8 * COARSE_STRIDE:
        above, active = _c2f_cells(field_density_bounds(field, planes), R, ax, rc.box_min, rc.box_max,
                                   float(threshold), budget.count(BOX_BYTES, share=1 - GRID_SHARE, minimum=4096))

        def rows(i0: int, i1: int) -> np.ndarray:
            return _c2f_rows(density, above, active, R, ax, float(threshold), chunk, bar, (i0, i1))[0].cpu().numpy()
    else:
        def rows(i0: int, i1: int) -> np.ndarray:
            out = torch.empty(i1 - i0, R, R, dtype=torch.float32, device=ax.device)
            _query_grid(density, (ax[i0:i1], ax, ax), out, chunk, bar)
            return out.cpu().numpy()
    return rows


def slab_rows(resolution: int, max_memory=None, device="cpu") -> int:
    """Rows per meshing slab: as many as ``GRID_SHARE`` of the budget ``max_memory`` (bytes, a size,
    a ``MemoryBudget`` or None: the device's free memory) holds at ``GRID_POINT_BYTES`` a point, at
    least 4, at most ``SLAB_ROWS_MAX`` and the whole grid (``R - 1``)."""
    R = int(resolution)
    budget = MemoryBudget.resolve(max_memory, device)
    return min(max(1, R - 1), SLAB_ROWS_MAX, budget.count(GRID_POINT_BYTES * R * R, share=GRID_SHARE, minimum=4))


@torch.inference_mode()
def extract_mesh(model, planes: torch.Tensor, resolution: int | None = None, threshold: float | None = None,
                 largest_component: bool = False, coarse_to_fine: bool = COARSE_TO_FINE_DEFAULT,
                 chunk: int | None = None, progress: bool = False, watertight: bool = False, slab: int | None = None,
                 max_memory=None):
    """A ``trimesh.Trimesh`` with per-vertex RGBA colors from one triplane ``[1, 3, C, H, W]``.

    ``watertight=True`` closes the surface with the box's faces where the object reaches the box
    (``marching_cubes(close=True)``): the mesh then has no open boundary (``is_watertight``).

    ``max_memory``: the working memory the grid, its field queries and the vertex colours may hold
    (bytes, ``"4GB"``, a ``MemoryBudget``; None: ``lrm_fast.memory``'s default, a share of what the
    device has free), decided once here: the grid is made and meshed ``slab`` rows at a time (default
    ``slab_rows``; ``marching_cubes_slabs``: the same mesh bit for bit whatever the slab), queried
    ``chunk`` points at a time (default ``query_chunk``). ``threshold="auto"`` needs the whole grid.
    The mesh itself (vertices, faces, colours) is the caller's, outside the budget.

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
    c2f = coarse_to_fine and not auto
    budget = MemoryBudget.resolve(max_memory, planes.device)
    field = model.field
    chunk = query_chunk(budget, field.query_bytes()) if chunk is None else int(chunk)
    if not auto and not watertight and slab is None and _mesh_on_device(planes.device, resolution, budget):
        return _extract_mesh_on_device(model, planes, resolution, threshold, largest_component, c2f, chunk, progress,
                                       budget)
    if not auto:
        slab = slab_rows(resolution, budget) if slab is None else int(slab)
        rows = field_density_rows(model, planes, resolution, threshold, c2f, chunk, progress, budget)
        verts, faces = marching_cubes_slabs(rows, resolution, threshold, rc.box_min, rc.box_max, slab,
                                            close=watertight)
    else:
        grid = field_density_grid(model, planes, resolution, threshold, c2f, chunk, progress, budget)
        # untrained weights: no meaningful level; take the densest quarter of the box
        threshold = float(np.quantile(grid, 0.75))
        verts, faces = marching_cubes(grid, threshold, rc.box_min, rc.box_max, close=watertight)
    mesh = trimesh.Trimesh(verts, faces, process=False)
    if largest_component:
        mesh = _largest_component(mesh)
    v = torch.from_numpy(np.asarray(mesh.vertices, dtype=np.float32)).to(planes.device)
    rgb = torch.cat([field.rgb(field(planes, v[None, s:s + chunk]).float())[0]
                     for s in range(0, v.shape[0], chunk)], 0) if v.shape[0] else v.new_zeros(0, 3)
    colors = (rgb.clamp(0, 1).cpu().numpy() * 255 + 0.5).astype(np.uint8)
    mesh.visual.vertex_colors = np.concatenate([colors, np.full_like(colors[:, :1], 255)], 1)
    return mesh


# bytes per grid point the device path holds at its peak: the float32 grid, the coarse-to-fine point
# masks or the corner signs and cube cases (uint8), their temporaries
_DEVICE_MESH_BYTES_PER_POINT = 12


def _mesh_on_device(device, resolution: int, budget: MemoryBudget) -> bool:
    """Whether ``extract_mesh`` meshes on the planes' device (``_extract_mesh_on_device``): on CUDA when
    the grid fits the memory budget (else the host path, slab by slab); ``LRM_FAST_MESH_DEVICE=1`` /
    ``0`` forces it on / off (CPU tests run it with ``1``)."""
    env = os.environ.get("LRM_FAST_MESH_DEVICE", "").strip()
    if env not in ("", "0", "1"):
        raise ValueError(f"LRM_FAST_MESH_DEVICE must be 0 or 1, got {env!r}")
    if env or torch.device(device).type != "cuda":
        return env == "1"
    return budget.count(_DEVICE_MESH_BYTES_PER_POINT) >= int(resolution) ** 3


def _extract_mesh_on_device(model, planes, resolution, threshold, largest_component, coarse_to_fine, chunk, progress,
                            budget: MemoryBudget):
    """``extract_mesh`` with the grid, marching cubes (``ops.marching_cubes``, the twin of skimage's
    Lorensen) and the vertex colours all on the planes' device: only the finished mesh is copied to the
    host. The same vertices (world, float32) and faces (outward) as the host path's skimage Lorensen;
    the host path's Lewiner differs only in ambiguous cubes. Not for ``watertight`` / ``"auto"``."""
    import trimesh

    from .ops.marching_cubes import marching_cubes as mc

    rc, field = model.cfg.render, model.field
    R = int(resolution)
    grid, _ = _density_grid_tensor(_field_density_fn(field, planes), R, rc.box_min, rc.box_max, threshold,
                                   planes.device, coarse_to_fine, chunk, progress,
                                   field_density_bounds(field, planes) if coarse_to_fine else None, budget,
                                   field.query_bytes())
    gmin, gmax = torch.stack(torch.aminmax(grid)).tolist()              # one sync; NaN propagates
    if not (np.isfinite(gmin) and np.isfinite(gmax)):
        raise ValueError("density grid contains NaN/inf; the model produced non-finite densities")
    _check_level(gmin, gmax, threshold, False)
    v, f = mc(grid, threshold)
    del grid
    if v.shape[0] == 0:
        raise ValueError(f"empty mesh: no surface crosses the threshold {threshold:g}")
    h = float(np.float32((rc.box_max - rc.box_min) / (R - 1)))         # float32 math, as the host path
    v = rc.box_min + v * h
    f = f.flip(1)                                                        # skimage's winding -> outward
    mesh = trimesh.Trimesh(v.cpu().numpy(), f.cpu().numpy(), process=False)
    if largest_component:
        mesh = _largest_component(mesh)
        v = torch.from_numpy(np.asarray(mesh.vertices, dtype=np.float32)).to(planes.device)
    n = budget.chunks(field.query_bytes(), v.shape[0])
    rgb = torch.cat([field.rgb(field(planes, v[None, s:s + n]).float())[0] for s in range(0, v.shape[0], n)], 0)
    colors = (rgb.clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy()
    mesh.visual.vertex_colors = np.concatenate([colors, np.full_like(colors[:, :1], 255)], 1)
    return mesh


def sphere_density(radius: float = 0.5, peak: float = 10.0) -> Callable[[torch.Tensor], torch.Tensor]:
    """A test density: ``peak * (1 - |p| / radius)`` clipped at 0 (level ``t`` -> sphere of radius
    ``radius * (1 - t / peak)``)."""
    def f(p):
        return (peak * (1 - p.norm(dim=-1) / radius)).clamp_min(0)

    def bounds(lo, hi):  # exact: the density falls with |p|; nearest and farthest points of each box
        near = torch.maximum(lo.clamp_min(0), (-hi).clamp_min(0)).norm(dim=-1)
        far = torch.maximum(lo.abs(), hi.abs()).norm(dim=-1)
        return f(far[:, None] * torch.tensor([1.0, 0, 0])), f(near[:, None] * torch.tensor([1.0, 0, 0]))

    f.bounds = bounds
    return f


__all__ = ["extract_mesh", "density_grid", "field_density_grid", "field_density_rows", "field_density_bounds",
           "marching_cubes", "marching_cubes_slabs", "slab_rows", "sphere_density", "COARSE_STRIDE",
           "COARSE_TO_FINE_DEFAULT", "GRID_POINT_BYTES", "query_chunk"]
