"""Proven bounds of a triplane field's density over boxes (``field_density_bounds``), which meshing
(``mesh.py``: coarse-to-fine density grids) and the occupancy grid (``occupancy.py``:
``build_occupancy(bounds=...)``'s proven pre-pass) share.

Each first-layer unit of the field MLP is linear in the bilinearly sampled features, so its range over
a box is the range of the projected planes at the footprint's breakpoints; interval arithmetic through
the other layers (or, ``crown=True``, linear bounds propagated back, CROWN: ``_crown_bounds``, for
ReLU, SiLU and softplus MLPs); a rounding margin for the fp32 kernel and the interval arithmetic.
Details in ``field_density_bounds``' docstring.

How tight, measured: OpenLRM's 4-layer ReLU MLP (the fitted base field) takes interval arithmetic well
(``docs/readme/bench.md``). TripoSR's 10-layer SiLU MLP does not: on the fitted TripoSR field
(``bench/lib/fitted_field.py``) the interval bound of the raw density over a box of one texel
(0.027 world units) is ~1e5 wide; CROWN brings it to ~10 at a quarter texel and under 1 at 1/16
texel, but not below ~1e8 at one texel (each layer's relaxation gap grows with the square of its
input width). A bound costs about as much as a few hundred field queries (CROWN) and must decide a
box holding more than that to pay, so on TripoSR's field neither bound speeds meshing or the
occupancy grid; they stay sound (``tests/test_density_bounds.py``).
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


RELAX_SAMPLES = 9      # points per unit at which a smooth activation's linear relaxation is fitted
ROUNDING = 8.0         # the rounding margin's factor: ROUNDING * eps * fan_in * magnitude per layer


def _relax(act: str, l: torch.Tensor, u: torch.Tensor):
    """Lines ``aL z + bL <= act(z) <= aU z + bU`` for every ``z`` in ``[l, u]`` (per unit): ReLU's
    triangle (exact where the box has one sign, else the chord above and 0 or the identity below); a
    smooth activation (SiLU, softplus) gets the chord's slope ``a`` for both, with the offsets
    ``act(z) - a z`` at ``RELAX_SAMPLES`` even points widened by ``curvature * step^2 / 8``, the most a
    function with ``|act''| <= curvature`` rises above (or falls below) its samples between two of
    them: sound for any slope, tight for narrow boxes."""
    if act == "relu":
        unstable = (l < 0) & (u > 0)
        pos = (l >= 0).to(l.dtype)
        a_up = torch.where(unstable, u / (u - l).clamp_min(1e-300), pos)
        b_up = torch.where(unstable, -a_up * l, torch.zeros_like(l))
        return torch.where(unstable, (u > -l).to(l.dtype), pos), torch.zeros_like(l), a_up, b_up
    spec = HIDDEN[act]
    if spec.curvature is None:
        raise ValueError(f"no linear relaxation for activation {act!r}")
    w = u - l
    a = torch.where(w > 0, (spec.fn(u) - spec.fn(l)) / w.clamp_min(1e-300), torch.zeros_like(w))
    x = l[..., None] + w[..., None] * torch.linspace(0, 1, RELAX_SAMPLES, dtype=l.dtype)
    h = spec.fn(x) - a[..., None] * x
    slack = spec.curvature * (w / (RELAX_SAMPLES - 1)) ** 2 / 8
    return a, h.amin(-1) - slack, a, h.amax(-1) + slack


def _crown_upper(w_out: torch.Tensor, b_out: torch.Tensor, lin, pre, wins, b0, act: str, rho) -> torch.Tensor:
    """Upper bounds ``[M, J]`` of ``act(z_K) @ w_out.T + b_out`` (``w_out [J, H]``) over an MLP whose
    pre-activations ``z_1 .. z_K``, as computed, lie in the boxes ``pre`` and within ``rho`` (``[M, H]``
    each) of their formula (rounding; ``z_1`` = ``b0`` + a sum over planes of texel projections,
    ``wins``): each activation is relaxed linearly (``_relax``), the bound is substituted back layer by
    layer (CROWN), each layer's rounding adds ``|coefficient| * rho``, and the bound is maximised over
    the box's texels."""
    M = pre[0][0].shape[0]
    lam = w_out.expand(M, *w_out.shape)                               # [M, J, H]
    const = b_out.expand(M, -1).clone()
    for k in range(len(pre) - 1, -1, -1):
        a_lo, b_lo, a_up, b_up = _relax(act, pre[k][0][:, None], pre[k][1][:, None])
        pos = lam >= 0
        const = const + torch.where(pos, lam * b_up, lam * b_lo).sum(-1)
        g = torch.where(pos, lam * a_up, lam * a_lo)                  # coefficient of z_k
        const = const + (g.abs() * rho[k][:, None]).sum(-1)
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


def _crown_bounds(lin, z1, rho1, wins, b0, act: str, eps: float):
    """(lo [M], hi [M]) of the raw density output as the field computes it, by CROWN: ``z1`` the first
    layer's exact per-unit ranges over the boxes, ``rho1 [H]`` its rounding; every later layer's
    pre-activation range is itself a CROWN bound (interval arithmetic through ten SiLU layers is
    vacuous: widths ~1e5 on the fitted TripoSR field), widened by its rounding ``ROUNDING * eps *
    (fan_in + 2) * (|W| max|act| + |b|)`` (the box's own magnitudes)."""
    pre = [(z1[0] - rho1, z1[1] + rho1)]
    rho = [rho1.expand_as(z1[0])]
    for k in range(1, len(lin)):
        w, bias = lin[k]
        al, ah = _interval_act(pre[-1][0], pre[-1][1], act)
        mag = torch.maximum(al.abs(), ah.abs()) @ w.abs().T + (0 if bias is None else bias.abs())
        r = ROUNDING * eps * (w.shape[1] + 2) * mag
        bb = torch.zeros(w.shape[0], dtype=w.dtype) if bias is None else bias
        if k == len(lin) - 1:
            w, bb, r = w[:1], bb[:1], r[:, :1]
        up = _crown_upper(w, bb, lin, pre, wins, b0, act, rho) + r
        dn = -_crown_upper(-w, -bb, lin, pre, wins, b0, act, rho) - r
        if k == len(lin) - 1:
            return dn[:, 0], up[:, 0]
        pre.append((dn, up))
        rho.append(r)
    raise ValueError("field MLP needs >= 2 layers")


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


CROWN_CHUNK = 512      # boxes per CROWN pass (its coefficients are [boxes, hidden, hidden] per layer)


def field_density_bounds(field, planes: torch.Tensor, crown: bool = False, raw: bool = False):
    """``bounds(lo [M, 3], hi [M, 3]) -> (dmin [M], dmax [M])``: a conservative bound of a triplane
    field's activated density over each world box (for ``density_grid(coarse_to_fine=True)``).

    The first layer is linear in the features, and bilinear sampling (``grid_sample``,
    ``align_corners=False``, zero padding) is a convex combination of the texels around a point; so
    each first-layer unit's pre-activation, a sum over the 3 planes of ``W0_p . feature_p``, lies over
    a box between the sums of the min and max of the projected texels ``W0_p . texel`` (zero padding
    included) that the box's footprint on each plane touches. The remaining layers take interval
    arithmetic in float32 (``W x``: centre ``W c + b``, radius ``|W| r``; monotone activations map ends
    to ends; SiLU's minimum is handled), then the monotone density activation. The raw interval is
    widened by a rounding margin ``8 eps(dtype) * fan_in * layers * magnitude`` (the field is
    evaluated in the planes' dtype, not exactly; magnitude: the field's largest possible ``|W| |x|``),
    twice that for the float32 interval arithmetic. ``crown=True`` (float64): each box the interval
    bound leaves undecided also gets CROWN's bound (``_crown_bounds``: every layer's range by linear
    bounds substituted back to the breakpoints, each layer's rounding from the box's own magnitudes),
    and keeps the tighter of the two. ``raw=True``: bounds of the raw density output (before
    ``density_bias`` and the activation), for ``field.occupancy.build_occupancy(bounds=...)``."""
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
    mag1 = mag            # the first layer's: its rounding in the CROWN pass
    for w, bias in lin[1:]:
        act_mag = mag if cfg.activation != "softplus" else mag + np.log(2)
        mag = w.abs() @ act_mag + (0 if bias is None else bias.abs())
    fan = max(w.shape[1] for w, _ in lin)
    # the field runs in the planes' dtype and the interval arithmetic below in float32 (``crown``:
    # float64): each rounds like the field at most, so twice the field's margin covers both
    eps = max(torch.finfo(planes.dtype).eps, torch.finfo(torch.float32).eps)
    margin = 2 * ROUNDING * eps * fan * len(lin) * (float(mag[0]) + 1)
    rho1 = ROUNDING * eps * (w0.shape[1] + 2) * mag1
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
            lo_raw, hi_raw = xl[:, 0].double() - margin, xh[:, 0].double() + margin
            if crown:   # linear bound propagation back to the breakpoints, for the boxes not decided yet
                todo = torch.ones_like(lo_raw, dtype=torch.bool)
                if level is not None:
                    dl, dh = field.density(lo_raw.float()), field.density(hi_raw.float())
                    todo = (dl <= level) & (dh >= level) | dl.isnan() | dh.isnan()
                for j in todo.nonzero()[:, 0].split(CROWN_CHUNK):
                    z1 = (pre[0][0][j], pre[0][1][j])
                    wins = [(t[0], i[j]) for t, i in zip(tables, iv)]
                    dn, up = _crown_bounds(lin, z1, rho1, wins, b0, cfg.activation, eps)
                    hi_raw[j] = torch.minimum(hi_raw[j], up)
                    lo_raw[j] = torch.maximum(lo_raw[j], dn)
            rl.append(lo_raw)
            rh.append(hi_raw)
        rl, rh = torch.cat(rl).float(), torch.cat(rh).float()
        if raw:     # the MLP's density output itself, before density_bias and the activation
            return rl.to(dev), rh.to(dev)
        return field.density(rl).to(dev), field.density(rh).to(dev)

    return bounds
