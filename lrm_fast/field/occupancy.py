"""Occupancy grid of a reconstruction: a conservative per-cell bound of the field's raw density.

**The grid** (``build_occupancy``, once per triplane): the box ``[box_min, box_max]^3`` in ``G^3``
cells (``G = 64`` default, 128 an option). The field's raw density (density logit, before
``density_bias`` and the activation) is evaluated on the lattice of spacing ``h / subdiv``
(``h`` the cell size; default ``subdiv = 2``: corners, edge and face midpoints and center of every
cell, ``(2G + 1)^3`` points, batched passes of the fused field; ``subdiv = 1``, the corners only,
missed a thin peak of the fitted base field, whose plane texel is one cell at G = 64: one pixel
off by 0.039); a cell keeps the **max over the lattice points of the closed cell**, then the
grid is **dilated by** ``dilate`` **cells** (default 1: max over the 3^3 neighbourhood). The grid
stores that dilated max raw density per cell (``OccupancyGrid.max_raw [B, G, G, G]``), so one grid
serves any render settings.

**The rule** (``OccupancyGrid.mask``): a cell is empty when its dilated max density is at most
``sigma_skip = tau / L`` with ``tau`` (``RenderConfig.occupancy_tau``) the optical depth a ray may
lose and ``L`` the most a ray's sample deltas add up to (``path``): the box diagonal for OpenLRM's
sampler, whose deltas are world lengths (a ray crosses at most ``L`` of empty space); 1 for TripoSR's
(``RenderConfig.ray_path``: S deltas of ``1 / S`` on every ray). So the density that
skipping drops from any ray adds up to less than ``tau`` (in raw units: ``act^-1(sigma_skip) - bias``;
midpoint averaging of two empty samples stays below it, since the activations are monotone).
Color, opacity and depth of a pixel then move by at most about ``tau`` (colors in [0, 1]) plus the
tiny shift of the importance samples that those weights cause. This holds where the grid's max
is a true bound of the field within the cell; the lattice max + dilation is the conservative
estimate of that (the field is bilinear in the plane features within a texel and smooth across),
and the measured PSNR against the exact render is in ``docs/readme/bench.md``.

The renderer's empty-space skipping that reads the grid is ``render/skipping.py``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..memory import MemoryBudget
from .activations import DENSITY
from .bounds import field_density_bounds


DEFAULT_RESOLUTION = 64


@dataclass
class OccupancyGrid:
    """``max_raw [B, G, G, G]``: per cell the dilated max raw density (see the module docstring),
    axes (x, y, z) of the box ``[box_min, box_max]^3``."""

    max_raw: torch.Tensor
    box_min: float = -1.0
    box_max: float = 1.0
    subdiv: int = 2
    dilate: int = 1

    @property
    def resolution(self) -> int:
        return self.max_raw.shape[-1]

    def sigma_skip(self, tau: float, path: float | None = None) -> float:
        """The density at or below which a cell counts as empty: ``tau`` over ``path``, the most a ray's
        deltas add up to (default: the box diagonal, for samplers with world-length deltas)."""
        return sigma_skip(tau, self.box_min, self.box_max, path)

    def mask(self, tau: float, density_bias: float = -1.0, density_activation: str = "softplus",
             path: float | None = None) -> torch.Tensor:
        """``[B, G, G, G]`` bool: the cells whose density can matter (``> sigma_skip(tau, path)``)."""
        s = self.sigma_skip(tau, path)
        if s <= 0:
            return torch.ones_like(self.max_raw, dtype=torch.bool)
        return self.max_raw > raw_cut(s, density_bias, density_activation)

    def occupied_fraction(self, tau: float, density_bias: float = -1.0, density_activation: str = "softplus",
                          path: float | None = None) -> float:
        return float(self.mask(tau, density_bias, density_activation, path).float().mean())


def sigma_skip(tau: float, box_min: float, box_max: float, path: float | None = None) -> float:
    """``tau / path`` (``path`` default: the diagonal of the box ``[box_min, box_max]^3``): the module
    docstring's rule."""
    return float(tau) / (float(path) if path is not None else (box_max - box_min) * math.sqrt(3.0))


def raw_cut(sigma: float, density_bias: float = -1.0, density_activation: str = "softplus") -> float:
    """The raw density (before ``density_bias`` and the activation) whose density is ``sigma`` > 0."""
    if density_activation not in DENSITY:
        raise ValueError(f"unknown density activation {density_activation!r}")
    return DENSITY[density_activation].inverse(sigma) - density_bias


BOUND_BLOCK = 2   # cells per block side for the proven pre-pass of build_occupancy(bounds=...)
COARSE_MARGIN = 10.0   # proven_occupancy's coarse pass skips a block below the rule's density / this


@torch.no_grad()
def build_occupancy(field, planes: torch.Tensor, resolution: int = DEFAULT_RESOLUTION, box_min: float = -1.0,
                    box_max: float = 1.0, subdiv: int = 2, dilate: int = 1, chunk: int | None = None,
                    bounds=None, cut: float | None = None, max_memory=None,
                    coarse_cut: float | None = None) -> OccupancyGrid:
    """The occupancy grid of triplanes ``planes [B, 3, C, H, W]`` with ``field`` (a ``TriplaneField``):
    see the module docstring. Cost: ``(subdiv * G + 1)^3`` field queries per item, ``chunk`` points a
    pass (default: as many as the budget ``max_memory`` holds at ``field.query_bytes()`` a point, see
    ``lrm_fast.memory``; the lattice's points and raw values, 16 bytes a point, are the grid's own).

    ``bounds`` (one triplane only; e.g. ``lrm_fast.field.bounds.field_density_bounds(field, planes, raw=True)``):
    a proven bound ``bounds(lo [M, 3], hi [M, 3]) -> (raw_min, raw_max)`` of the raw density over boxes.
    Blocks of ``BOUND_BLOCK^3`` cells whose proven max is at most ``cut`` (a raw density, e.g.
    ``raw_cut(grid.sigma_skip(tau), ...)``) store that max for their cells and their lattice points are
    not queried; the stored value bounds the field there, so the grid stays conservative for every tau.

    ``coarse_cut`` (a raw density; one triplane, no ``bounds``; for fields no bound decides, TripoSR's):
    the same lattice estimate, taken coarse first. The lattice points of even index (spacing ``2h / subdiv``,
    an eighth of them) are queried; a block of ``BOUND_BLOCK^3`` cells whose max over them, dilated by
    one block (two cells), is at most ``coarse_cut`` stores that max and skips its other points. This is
    an estimate, not a proof, like the lattice itself; ``proven_occupancy`` sets ``coarse_cut`` a decade of
    density below the rule's cut (``COARSE_MARGIN``), where the fitted TripoSR field's grid marks the same
    cells as the full lattice (``tests/test_occupancy.py``)."""
    G, subdiv, dilate = int(resolution), int(subdiv), int(dilate)
    if G < 1 or subdiv < 1 or dilate < 0:
        raise ValueError(f"occupancy grid needs resolution >= 1, subdiv >= 1, dilate >= 0; got {G}, {subdiv}, {dilate}")
    if planes.dim() != 5 or planes.shape[1] != 3:
        raise ValueError(f"occupancy grid needs triplanes [B, 3, C, H, W], got {tuple(planes.shape)}")
    B = planes.shape[0]
    n = G * subdiv + 1
    if chunk is None:
        chunk = MemoryBudget.resolve(max_memory, planes.device).count(field.query_bytes() * B, minimum=256)
    dt = planes.dtype if planes.dtype in (torch.float32, torch.float64) else torch.float32
    x = torch.linspace(box_min, box_max, n, device=planes.device, dtype=dt)
    blk = BOUND_BLOCK
    if bounds is not None and cut is not None and B == 1 and G % blk == 0:
        return _build_bounded(field, planes, G, box_min, box_max, subdiv, dilate, chunk, bounds, float(cut), x)
    if coarse_cut is not None and B == 1 and G % blk == 0:
        return _build_coarse_first(field, planes, box_min, box_max, subdiv, dilate, chunk, float(coarse_cut), x)
    pts = torch.stack(torch.meshgrid(x, x, x, indexing="ij"), -1).reshape(1, -1, 3).expand(B, -1, 3)
    raw = torch.cat([field(planes, pts[:, s:s + chunk].contiguous())[..., 0].float()
                     for s in range(0, pts.shape[1], chunk)], 1).reshape(B, 1, n, n, n)
    cell = F.max_pool3d(raw, kernel_size=subdiv + 1, stride=subdiv)          # [B, 1, G, G, G]
    if dilate:
        cell = F.max_pool3d(cell, kernel_size=2 * dilate + 1, stride=1, padding=dilate)
    return OccupancyGrid(cell[:, 0].contiguous(), float(box_min), float(box_max), subdiv, dilate)


def proven_occupancy(field, planes: torch.Tensor, resolution: int, box_min: float, box_max: float,
                     tau: float, max_memory=None, path: float | None = None) -> OccupancyGrid:
    """The occupancy grid of ``planes`` as reconstructions build it: one triplane of a ReLU field
    (OpenLRM's) gets the proven pre-pass (``field_density_bounds(raw=True)``: blocks proven empty at
    ``tau`` over ``path`` skip their lattice queries); others (through TripoSR's ten SiLU layers the
    bound decides no block of this size and would cost seconds: ``field/bounds.py``) the lattice taken
    coarse first (``build_occupancy(coarse_cut=...)``, a decade below the rule's density)."""
    fc, bounds = field.cfg, None
    sigma = sigma_skip(tau, box_min, box_max, path)
    if sigma <= 0:
        return build_occupancy(field, planes, resolution, box_min, box_max, max_memory=max_memory)
    if planes.shape[0] == 1 and fc.activation == "relu":
        bounds = field_density_bounds(field, planes, raw=True)
        return build_occupancy(field, planes, resolution, box_min, box_max, bounds=bounds,
                               cut=raw_cut(sigma, fc.density_bias, fc.density_activation), max_memory=max_memory)
    coarse_cut = raw_cut(sigma / COARSE_MARGIN, fc.density_bias, fc.density_activation)
    return build_occupancy(field, planes, resolution, box_min, box_max, max_memory=max_memory, coarse_cut=coarse_cut)


def _query_lattice(field, planes, x, raw, need, chunk):
    """``raw[i, j, k] = field(x[i], x[j], x[k])`` raw density at the lattice points where ``need``."""
    idx = need.nonzero()
    for s in range(0, idx.shape[0], chunk):
        ijk = idx[s:s + chunk]
        pts = torch.stack([x[ijk[:, 0]], x[ijk[:, 1]], x[ijk[:, 2]]], -1)
        raw[ijk[:, 0], ijk[:, 1], ijk[:, 2]] = field(planes, pts[None])[0, :, 0].float()


def _build_coarse_first(field, planes, box_min, box_max, subdiv, dilate, chunk, cut, x) -> OccupancyGrid:
    """``build_occupancy(coarse_cut=...)`` (one triplane): see its docstring."""
    n, dev = x.shape[0], planes.device
    raw = torch.full((n, n, n), float("-inf"), device=dev)
    known = torch.zeros(n, n, n, dtype=torch.bool, device=dev)
    known[::2, ::2, ::2] = True
    _query_lattice(field, planes, x, raw, known, chunk)
    coarse = raw[::2, ::2, ::2][None, None]                                 # spacing 2h / subdiv
    est = F.max_pool3d(coarse, kernel_size=subdiv + 1, stride=subdiv)        # a block's closed coarse lattice
    est = F.max_pool3d(est, kernel_size=3, stride=1, padding=1)              # + one block around it
    return _build_blocks(field, planes, box_min, box_max, subdiv, dilate, chunk, est, cut, x, raw, known)


def _build_bounded(field, planes, G, box_min, box_max, subdiv, dilate, chunk, bounds, cut, x) -> OccupancyGrid:
    """``build_occupancy`` with the proven pre-pass (one triplane): see its docstring."""
    blk, dev = BOUND_BLOCK, planes.device
    nb = G // blk
    edges = torch.linspace(box_min, box_max, nb + 1, dtype=torch.float64)
    i = torch.arange(nb)
    ii, jj, kk = torch.meshgrid(i, i, i, indexing="ij")
    lo = torch.stack([edges[ii], edges[jj], edges[kk]], -1).reshape(-1, 3)
    hi = torch.stack([edges[ii + 1], edges[jj + 1], edges[kk + 1]], -1).reshape(-1, 3)
    _, ub = bounds(lo.float(), hi.float())
    ub = ub.to(dev, torch.float32).reshape(1, 1, nb, nb, nb)
    return _build_blocks(field, planes, box_min, box_max, subdiv, dilate, chunk, ub, cut, x)


def _build_blocks(field, planes, box_min, box_max, subdiv, dilate, chunk, ub, cut, x, raw=None,
                  known=None) -> OccupancyGrid:
    """The grid from a per-block max ``ub [1, 1, nb, nb, nb]`` (blocks of ``BOUND_BLOCK^3`` cells): blocks
    at most ``cut`` store it for their cells, the others' lattice points are queried (those not
    ``known`` already, with their values in ``raw``)."""
    blk, dev = BOUND_BLOCK, planes.device
    n, k = x.shape[0], BOUND_BLOCK * subdiv
    empty = ub <= cut                                                         # NaN bound: not empty
    # lattice points of a closed non-empty block: M over lattice intervals, a point takes its two neighbours'
    full = (~empty).float()
    for d in (2, 3, 4):
        full = full.repeat_interleave(k, dim=d)                               # [1, 1, n - 1, n - 1, n - 1]
    need = F.max_pool3d(F.pad(full, (1, 1, 1, 1, 1, 1)), kernel_size=2, stride=1)[0, 0] > 0   # [n, n, n]
    if raw is None:
        raw = torch.full((n, n, n), float("-inf"), device=dev)
    else:
        need &= ~known
    _query_lattice(field, planes, x, raw, need, chunk)
    cell = F.max_pool3d(raw[None, None], kernel_size=subdiv + 1, stride=subdiv)   # [1, 1, G, G, G]
    up = lambda t: t.repeat_interleave(blk, 2).repeat_interleave(blk, 3).repeat_interleave(blk, 4)  # noqa: E731
    cell = torch.where(up(empty), torch.maximum(cell, up(ub)), cell)
    if dilate:
        cell = F.max_pool3d(cell, kernel_size=2 * dilate + 1, stride=1, padding=dilate)
    return OccupancyGrid(cell[:, 0].contiguous(), float(box_min), float(box_max), subdiv, dilate)
