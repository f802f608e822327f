"""Proven bounds of a triplane field's density over boxes (``field_density_bounds``), which meshing
(``mesh.py``: coarse-to-fine density grids) and the occupancy grid (``occupancy.py``:
``build_occupancy(bounds=...)``'s proven pre-pass) share.

Each first-layer unit of the field MLP is linear in the bilinearly sampled features, so its range over
a box is the range of the projected planes at the footprint's breakpoints; interval arithmetic through
the other layers (or, ``crown=True`` with ReLU, a linear bound propagated back: ``_crown_upper``); a
rounding margin for the fp32 kernel and the float32 interval arithmetic. Details in
``field_density_bounds``' docstring.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..ops.triplane_mlp import PLANE_AXES
from .activations import HIDDEN


def _interval_act(lo: torch.Tensor, hi: torch.Tensor, act: str):
    """The image ``(lo, hi)`` of the box ``[lo, hi]`` under the hidden activation ``act``
    (``field/activations.py``'s interval rule)."""
    rule = HIDDEN[act].interval if act in HIDDEN else None
    if rule is None:
        raise ValueError(f"no interval rule for activation {act!r}")
    return rule(lo, hi)


def _crown_upper(w_out: torch.Tensor, b_out: torch.Tensor, lin, pre, wins, b0) -> torch.Tensor:
    """Upper bounds ``[M, J]`` of ``relu(z_K) @ w_out.T + b_out`` (``w_out [J, H]``) for a ReLU MLP
    whose pre-activations ``z_1 .. z_K`` lie in the boxes ``pre`` (``z_1`` = ``b0`` + a sum over planes
    of texel projections, ``wins``): each ReLU is relaxed linearly (exact where its box has one sign,
    else the chord above and 0 or the identity below), the bound is substituted back layer by layer
    (CROWN) and maximised over the box's texels."""
    M = pre[0][0].shape[0]
    lam = w_out.expand(M, *w_out.shape)                               # [M, J, H]
    const = b_out.expand(M, -1).clone()
    for k in range(len(pre) - 1, -1, -1):
        l, u = pre[k][0][:, None], pre[k][1][:, None]
        unstable = (l < 0) & (u > 0)
        pos = (l >= 0).to(l.dtype)
        chord = torch.where(unstable, u / (u - l).clamp_min(1e-300), pos)
        lower = torch.where(unstable, (u > -l).to(l.dtype), pos)
        const = const + (lam.clamp_min(0) * torch.where(unstable, -chord * l, torch.zeros_like(l))).sum(-1)
        g = lam * torch.where(lam >= 0, chord, lower)                 # coefficient of z_k
        if k == 0:
            if b0 is not None:
                const = const + g @ b0
            for win, iv in wins:          # max over the box's breakpoints (win: per footprint, iv: which)
                const = const + torch.einsum("mth,mjh->mjt", win[iv], g).amax(-1)
            return const
        w, bias = lin[k]
        if bias is not None:
            const = const + g @ bias
        lam = g @ w
    return const


def _unique_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.unique(x, dim=0, return_inverse=True)`` for a 2-D float tensor, through 1-D uniques
    (per column ranks, then one int64 key per row): ``unique(dim=0)`` compares rows one by one."""
    ranks, sizes = [], []
    for c in x.unbind(1):
        u, r = torch.unique(c, return_inverse=True)
        ranks.append(r)
        sizes.append(u.shape[0])
    inv = torch.zeros(x.shape[0], dtype=torch.int64)
    for r, n in zip(ranks, sizes):          # re-ranked after each column: keys stay below rows * n
        _, inv = torch.unique(inv * n + r, return_inverse=True)
    first = torch.empty(int(inv.max()) + 1 if inv.numel() else 0, dtype=torch.int64)
    first.scatter_(0, inv, torch.arange(x.shape[0]))       # any row of each class: they are equal
    return x[first], inv


def field_density_bounds(field, planes: torch.Tensor, crown: bool = False, raw: bool = False):
    """``bounds(lo [M, 3], hi [M, 3]) -> (dmin [M], dmax [M])``: a conservative bound of a triplane
    field's activated density over each world box (for ``density_grid(coarse_to_fine=True)``).

    The first layer is linear in the features, and bilinear sampling (``grid_sample``,
    ``align_corners=False``, zero padding) is a convex combination of the texels around a point; so
    each first-layer unit's pre-activation, a sum over the 3 planes of ``W0_p . feature_p``, lies over
    a box between the sums of the min and max of the projected texels ``W0_p . texel`` (zero padding
    included) that the box's footprint on each plane touches. The remaining layers take interval
    arithmetic in float64 (``W x``: centre ``W c + b``, radius ``|W| r``; monotone activations map ends
    to ends; SiLU's minimum is handled), then the monotone density activation. The raw interval is
    widened by a rounding margin ``8 eps(dtype) * fan_in * layers * magnitude`` (the field is
    evaluated in the planes' dtype, not exactly; magnitude: the field's largest possible ``|W| |x|``),
    twice that for the float32 interval arithmetic. ``raw=True``: bounds of the raw density output
    (before ``density_bias`` and the activation), for ``field.occupancy.build_occupancy(bounds=...)``."""
    if planes.dim() != 5 or planes.shape[0] != 1 or planes.shape[1] != 3:
        raise ValueError(f"field_density_bounds takes one triplane [1, 3, C, H, W], got {tuple(planes.shape)}")
    cfg = field.cfg
    P = planes[0].detach().to("cpu", torch.float64)
    _, C, H, W = P.shape
    lin = [(m.weight.detach().to("cpu", torch.float64),
            None if m.bias is None else m.bias.detach().to("cpu", torch.float64)) for m in field.linears]
    w0, b0 = lin[0]
    hid = w0.shape[0]
    # projected planes Q_p = W0_p . texel: [3, H+2, W+2, hidden], zero border = the zero padding
    if cfg.aggregate == "concat":
        w0p = [w0[:, p * C:(p + 1) * C] for p in range(3)]
    else:
        w0p = [w0 / 3 if cfg.aggregate == "mean" else w0] * 3
    Q = torch.stack([F.pad(torch.einsum("oc,chw->hwo", w0p[p], P[p]), (0, 0, 1, 1, 1, 1)) for p in range(3)])
    # global magnitude of every layer's terms, for the rounding margin
    mag = sum(w0p[p].abs() @ P[p].abs().amax((1, 2)) for p in range(3)) + (0 if b0 is None else b0.abs())
    for w, bias in lin[1:]:
        act_mag = mag if cfg.activation != "softplus" else mag + np.log(2)
        mag = w.abs() @ act_mag + (0 if bias is None else bias.abs())
    fan = max(w.shape[1] for w, _ in lin)
    # the field runs in the planes' dtype and the interval arithmetic below in float32 (``crown``:
    # float64): each rounds like the field at most, so twice the field's margin covers both
    eps = max(torch.finfo(planes.dtype).eps, torch.finfo(torch.float32).eps)
    margin = 2 * 8 * eps * fan * len(lin) * (float(mag[0]) + 1)
    scale = float(cfg.coord_scale)
    wt = torch.float64 if crown else torch.float32          # the dtype of the interval propagation
    lin_t = [(w.to(wt), None if b is None else b.to(wt), w.abs().T.to(wt).contiguous(), w.T.to(wt).contiguous())
             for w, b in lin]

    def breakpoints(c0, c1, size):
        """Pixel coordinates (align_corners=False) where the bilinear interpolant over [c0, c1] can have
        its extremes: both ends and the texel centres between them (padded by repeating the end)."""
        p0, p1 = ((c0 + 1) * size - 1) / 2, ((c1 + 1) * size - 1) / 2
        k0 = torch.floor(p0) + 1
        n = int((torch.floor(p1) - k0).max().clamp_min(-1)) + 1
        inner = k0[:, None] + torch.arange(n, dtype=torch.float64)
        return torch.cat([p0[:, None], torch.minimum(inner, p1[:, None]), p1[:, None]], 1)   # [M, n + 2]

    def sample_q(p, pu, pv):
        """Projected plane ``p`` at pixel coordinates ``pu [M, A], pv [M, B]`` -> ``[M, A * B, hidden]``
        (bilinear, zero outside: the padded border)."""
        Hp, Wp = Q.shape[1], Q.shape[2]
        fu, fv = torch.floor(pu), torch.floor(pv)
        au, av = pu - fu, pv - fv
        iu0 = (fu + 1).clamp(0, Wp - 1).long()
        iu1 = (fu + 2).clamp(0, Wp - 1).long()
        iv0 = (fv + 1).clamp(0, Hp - 1).long()
        iv1 = (fv + 2).clamp(0, Hp - 1).long()
        q = Q[p]
        M, A, B = pu.shape[0], pu.shape[1], pv.shape[1]

        def g(iv, iu):
            return q[iv[:, None, :], iu[:, :, None]]                        # [M, A, B, hidden]

        wu, wv = au[:, :, None, None], av[:, None, :, None]
        out = (g(iv0, iu0) * (1 - wu) * (1 - wv) + g(iv0, iu1) * wu * (1 - wv)
               + g(iv1, iu0) * (1 - wu) * wv + g(iv1, iu1) * wu * wv)
        return out.reshape(M, A * B, -1)

    def bounds(lo: torch.Tensor, hi: torch.Tensor, level: float | None = None, chunk: int = 8192):
        """Density bounds over the boxes; with ``level``, the costlier linear bound (CROWN) is only
        computed for boxes whose interval bound contains ``level`` (the others are decided already)."""
        dev = lo.device
        lo = lo.detach().to("cpu", torch.float64) * scale
        hi = hi.detach().to("cpu", torch.float64) * scale
        pad = 1e-6 * (1 + torch.maximum(lo.abs(), hi.abs()))       # the fp32 points may round outward
        lo, hi = torch.minimum(lo, hi) - pad, torch.maximum(lo, hi) + pad
        # per plane, the projected plane at each distinct footprint's breakpoints (cells of a grid share
        # footprints: at most (cells per axis)^2 of them per plane)
        tables = []
        for p, (a, b) in enumerate(PLANE_AXES):
            keys, inv = _unique_rows(torch.stack([lo[:, a], hi[:, a], lo[:, b], hi[:, b]], 1))
            # breakpoints of all footprints at once: one width for every chunk (chunks of fine cells
            # may straddle fewer texel centres than others; per-chunk widths did not concatenate)
            bu, bv = breakpoints(keys[:, 0], keys[:, 1], W), breakpoints(keys[:, 2], keys[:, 3], H)
            win = torch.cat([sample_q(p, u, v) for u, v in zip(bu.split(4096), bv.split(4096))])
            tables.append((win, win.amin(1).to(wt), win.amax(1).to(wt), inv.reshape(-1)))
        rl, rh = [], []
        for s in range(0, lo.shape[0], chunk):
            iv = [t[3][s:s + chunk] for t in tables]
            n = iv[0].shape[0]
            xl = torch.zeros(n, hid, dtype=wt) if b0 is None else lin_t[0][1].expand(n, hid).clone()
            xh = xl.clone()
            for (win, mn, mx, _), i in zip(tables, iv):
                xl += mn[i]
                xh += mx[i]
            pre = [(xl, xh)]
            for w, bias, wabs_t, w_t in lin_t[1:]:          # interval arithmetic through the other layers
                al, ah = _interval_act(xl, xh, cfg.activation)
                c = torch.addmm(bias, (al + ah) * 0.5, w_t) if bias is not None else ((al + ah) * 0.5) @ w_t
                r = ((ah - al) * 0.5) @ wabs_t
                xl, xh = c - r, c + r
                pre.append((xl, xh))
            lo_raw, hi_raw = xl[:, 0].double(), xh[:, 0].double()
            if crown and cfg.activation == "relu":   # linear bound propagation back to the breakpoints
                todo = torch.ones_like(lo_raw, dtype=torch.bool)
                if level is not None:
                    dl, dh = field.density((lo_raw - margin).float()), field.density((hi_raw + margin).float())
                    todo = (dl <= level) & (dh >= level) | dl.isnan() | dh.isnan()
                j = todo.nonzero()[:, 0]
                if j.numel():
                    sub = [(pl[j], ph[j]) for pl, ph in pre[:-1]]
                    wins = [(t[0], i[j]) for t, i in zip(tables, iv)]
                    w, bias = lin[-1]
                    bb = torch.zeros(1, dtype=torch.float64) if bias is None else bias[:1]
                    up = _crown_upper(w[:1], bb, lin, sub, wins, b0)[:, 0]
                    dn = -_crown_upper(-w[:1], -bb, lin, sub, wins, b0)[:, 0]
                    hi_raw[j] = torch.minimum(hi_raw[j], up)
                    lo_raw[j] = torch.maximum(lo_raw[j], dn)
            rl.append(lo_raw)
            rh.append(hi_raw)
        rl, rh = (torch.cat(rl) - margin).float(), (torch.cat(rh) + margin).float()
        if raw:     # the MLP's density output itself, before density_bias and the activation
            return rl.to(dev), rh.to(dev)
        return field.density(rl).to(dev), field.density(rh).to(dev)

    return bounds
