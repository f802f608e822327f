"""Fused compositing straight from raw field samples, in Triton: forward, weights and backward.

The spec is ``_composite_samples_ref`` (and ``_composite_samples_weights_ref``) in
``lrm_fast/ops/composite.py``; the C++/CUDA kernels (``csrc/composite_samples.h``) compute the same
function with one thread per ray walking its samples, so neighbouring threads read addresses
``16 * S`` bytes apart. This file lays the work out for bandwidth instead:

* **tiles**: one program owns ``BLOCK_R`` rays and loads their samples as one ``[BLOCK_R, SP]``
  tile (``SP`` = S rounded up to a power of two, masked). A ray's samples are contiguous (raw
  ``[R, S, 4]``, t ``[R, S]``), so consecutive lanes read consecutive memory, and each sample's 4
  raw channels are one 16-byte vector load (loaded as ``[BLOCK_R, SP, 4]``, split in registers).
* **shifts by loads, not by registers**: interval ``k`` needs samples ``k`` and ``k + 1``, and the
  scans below need the neighbouring intervals; a register tile cannot be shifted, so the tile is
  loaded again at offsets ``-1, +1, +2`` (cache hits: DRAM traffic stays one read of the inputs).
* **transmittance** ``T_k = prod_{j<k} (1 - alpha_j + 1e-10)`` is one ``tl.cumprod`` over the tile
  of the *previous* interval's factor (exact exclusive product, no division). The stop rule (the
  op's ``early_stop``, floored at ``T_FLOOR`` as the C++ kernels do) is an integer ``tl.cumsum`` of
  "T fell below"; integer reverse cumsums shift those flags exactly to the neighbour intervals.
* **outputs** rgb, depth, opacity are row reductions written once per ray (or the interval weights
  ``[R, S-1]`` for importance sampling: ``WEIGHTS``).

Backward (one program per ``BLOCK_R`` rays) recomputes the forward from the inputs (nothing per
sample is saved: the op saves what the C++ op saves, minus its walk state) and applies the closed
form of ``csrc/composite_samples.h``'s reverse walk: with ``g_k = v_color . (c_k - bg) + v_opacity
+ v_depth (t_k - depth) / opacity``, ``v_alpha_k = T_k (g_k - A_k)`` where ``A_k = sum_{m>k} g_m
alpha_m prod_{k<j<m} keep_j``. ``A`` obeys ``A_{k-1} = g_k alpha_k + keep_k A_k``: a composition
of affine maps, computed by one reverse ``tl.associative_scan`` (stable: the same products and
sums as the walk, no subtraction of a prefix from a total). Each sample then gathers the
cotangents of the (one or two) intervals it belongs to, through the in-box gate and the widened
sigmoid, and is written once: ``v_raw [R, S, 4]``, no atomics.

Constants (the gate's sentinel, the rgb pad, the exp clamp, the softplus threshold, the density
codes) come from the caller (``field/activations.py`` is their one home); this module sits below it.

Import lazily (``lrm_fast.kernels.composite``): importing triton costs seconds, and on a machine
without a GPU it only works with ``TRITON_INTERPRET=1`` set before the import.
"""
from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _log1p(y):
    """log(1 + y) accurate for tiny y (no libdevice in the interpreter): the classic u = 1 + y trick."""
    u = 1.0 + y
    return tl.where(u == 1.0, y, tl.log(u) * (y / tl.where(u == 1.0, 1.0, u - 1.0)))


@triton.jit
def _activate(x, ACT: tl.constexpr, SP_THRESH: tl.constexpr, EXP_CLAMP: tl.constexpr):
    if ACT == 0:  # softplus (torch: threshold 20)
        r = tl.where(x > SP_THRESH, x, _log1p(tl.exp(tl.minimum(x, SP_THRESH))))
    else:  # exp clamped
        r = tl.exp(tl.minimum(x, EXP_CLAMP))
    return r


@triton.jit
def _activate_grad(x, ACT: tl.constexpr, SP_THRESH: tl.constexpr, EXP_CLAMP: tl.constexpr):
    if ACT == 0:
        r = tl.where(x > SP_THRESH, 1.0, tl.sigmoid(x))
    else:
        r = tl.where(x <= EXP_CLAMP, tl.exp(tl.minimum(x, EXP_CLAMP)), 0.0)
    return r


@triton.jit
def _samples(raw_ptr, t_ptr, ox, oy, oz, dx, dy, dz, rows, s, R, S, bmin, bmax,
             MASKED: tl.constexpr, PAD: tl.constexpr, BLOCK_R: tl.constexpr, SP: tl.constexpr):
    """Samples ``s`` ([1, SP], may be out of [0, S)) of rays ``rows`` ([BLOCK_R, 1]): gated raw
    density, gated widened-sigmoid rgb, the plain sigmoids (for the backward), depth, in-box flag."""
    m = (rows < R) & (s >= 0) & (s < S)
    base = rows * S + s
    tt = tl.load(t_ptr + base, mask=m, other=0.0)
    q = tl.arange(0, 4)
    x = tl.load(raw_ptr + base[:, :, None] * 4 + q[None, None, :], mask=m[:, :, None], other=0.0)
    a, b = tl.split(tl.reshape(x, (BLOCK_R, SP, 2, 2)))  # channels (0, 2) and (1, 3)
    c0, c2 = tl.split(a)
    c1, c3 = tl.split(b)
    # the point o + t d rounded as two torch ops (the launch turns FMA contraction off): the gate
    # must see the bits the field query saw
    px = ox + tt * dx
    py = oy + tt * dy
    pz = oz + tt * dz
    inside = m & (px >= bmin) & (px <= bmax) & (py >= bmin) & (py <= bmax) & (pz >= bmin) & (pz <= bmax)
    s1 = tl.sigmoid(c1)
    s2 = tl.sigmoid(c2)
    s3 = tl.sigmoid(c3)
    zero = tl.zeros_like(tt)
    sr = tl.where(inside, c0, MASKED + zero)
    r = tl.where(inside, s1 * (1.0 + 2.0 * PAD) - PAD, zero)
    g = tl.where(inside, s2 * (1.0 + 2.0 * PAD) - PAD, zero)
    bl = tl.where(inside, s3 * (1.0 + 2.0 * PAD) - PAD, zero)
    return sr, r, g, bl, s1, s2, s3, tt, inside


@triton.jit
def _interval(srA, rA, gA, bA, tA, srB, rB, gB, bB, tB, valid, bias,
              ACT: tl.constexpr, MIDPOINT: tl.constexpr, SP_THRESH: tl.constexpr, EXP_CLAMP: tl.constexpr):
    """Interval between samples A and B (``per_sample.intervals``) and its compositing factors;
    an invalid interval gets alpha 0 and keep 1 (the identity of every product and sum)."""
    delta = tl.where(valid, tB - tA, 0.0)  # (padding samples read t = 0: keep exp() finite)
    if MIDPOINT:
        pre = 0.5 * (srA + srB) + bias
        r = 0.5 * (rA + rB)
        g = 0.5 * (gA + gB)
        b = 0.5 * (bA + bB)
        dep = 0.5 * (tA + tB)
    else:
        pre = srA + bias
        r = rA
        g = gA
        b = bA
        dep = tA
    sigma = _activate(pre, ACT, SP_THRESH, EXP_CLAMP)
    e = tl.exp(-sigma * delta)
    alpha = 1.0 - e
    keep = 1.0 - alpha + 1e-10
    alpha = tl.where(valid, alpha, 0.0)
    keep = tl.where(valid, keep, 1.0)
    return r, g, b, dep, pre, delta, e, alpha, keep


@triton.jit
def _params(params_ptr):
    """box min, box max, density bias, stop threshold: read from a tensor of the inputs' dtype (a
    scalar argument would be float32, and a float64 run must gate with float64 box faces)."""
    return tl.load(params_ptr), tl.load(params_ptr + 1), tl.load(params_ptr + 2), tl.load(params_ptr + 3)


@triton.jit
def _load3(ptr, rows, rmask):
    """The 3 components of each row's vector (a ray's origin, direction, background, colour
    cotangent) of a ``[R, 3]`` tensor, each ``[BLOCK_R, 1]``; 0 for rows past ``R``."""
    return (tl.load(ptr + rows * 3, mask=rmask, other=0.0), tl.load(ptr + rows * 3 + 1, mask=rmask, other=0.0),
            tl.load(ptr + rows * 3 + 2, mask=rmask, other=0.0))


@triton.jit
def _affine(m_in, c_in, m_out, c_out):
    """Composition of x -> m x + c maps for the reverse scan: (outer o inner). In a reverse scan the
    first operand is the accumulated later (inner) part, the second the earlier (outer) element."""
    return m_in * m_out, m_out * c_in + c_out


@triton.jit
def composite_samples_fwd_kernel(raw_ptr, t_ptr, o_ptr, d_ptr, bg_ptr, color_ptr, depth_ptr, opacity_ptr, w_ptr,
                                 params_ptr, R, S,
                                 ACT: tl.constexpr, MIDPOINT: tl.constexpr, WEIGHTS: tl.constexpr,
                                 MASKED: tl.constexpr, PAD: tl.constexpr, SP_THRESH: tl.constexpr,
                                 EXP_CLAMP: tl.constexpr, BLOCK_R: tl.constexpr, SP: tl.constexpr):
    pid = tl.program_id(0)
    bmin, bmax, bias, stop = _params(params_ptr)
    rows = (pid * BLOCK_R + tl.arange(0, BLOCK_R))[:, None].to(tl.int64)
    s = tl.arange(0, SP)[None, :]
    rmask = rows < R
    ox, oy, oz = _load3(o_ptr, rows, rmask)
    dx, dy, dz = _load3(d_ptr, rows, rmask)
    n = S - 1
    srm, rm, gm, bm, _, _, _, tm, _ = _samples(raw_ptr, t_ptr, ox, oy, oz, dx, dy, dz, rows, s - 1, R, S,
                                               bmin, bmax, MASKED, PAD, BLOCK_R, SP)
    sr0, r0, g0, b0, _, _, _, t0, _ = _samples(raw_ptr, t_ptr, ox, oy, oz, dx, dy, dz, rows, s, R, S,
                                               bmin, bmax, MASKED, PAD, BLOCK_R, SP)
    sr1, r1, g1, b1, _, _, _, t1, _ = _samples(raw_ptr, t_ptr, ox, oy, oz, dx, dy, dz, rows, s + 1, R, S,
                                               bmin, bmax, MASKED, PAD, BLOCK_R, SP)
    valid0 = rmask & (s < n)
    validm = rmask & (s >= 1) & (s - 1 < n)
    _, _, _, _, _, _, _, _, keepm = _interval(srm, rm, gm, bm, tm, sr0, r0, g0, b0, t0, validm, bias,
                                              ACT, MIDPOINT, SP_THRESH, EXP_CLAMP)
    cr, cg, cb, dep, _, _, _, alpha, _ = _interval(sr0, r0, g0, b0, t0, sr1, r1, g1, b1, t1, valid0, bias,
                                                   ACT, MIDPOINT, SP_THRESH, EXP_CLAMP)
    trans = tl.cumprod(keepm, axis=1)  # T_s = prod_{j<s} keep_j
    first = tl.min(tl.where((s >= 1) & (trans < stop), s, SP), axis=1)[:, None]  # the first T_s below stop
    used = valid0 & (s < first)
    w = tl.where(used, alpha * trans, 0.0)
    if WEIGHTS:
        tl.store(w_ptr + rows * n + s, w, mask=valid0)
    else:
        op = tl.sum(w, axis=1)
        last = tl.sum(tl.where(valid0 & (s == n - 1), dep, 0.0), axis=1)
        num = tl.sum(w * dep, axis=1)
        depth = tl.where(op > 0, num / tl.where(op > 0, op, 1.0), last)
        r1d = pid * BLOCK_R + tl.arange(0, BLOCK_R)
        m1d = r1d < R
        for c in tl.static_range(3):
            if c == 0:
                acc = tl.sum(w * cr, axis=1)
            elif c == 1:
                acc = tl.sum(w * cg, axis=1)
            else:
                acc = tl.sum(w * cb, axis=1)
            bgc = tl.load(bg_ptr + r1d * 3 + c, mask=m1d, other=0.0)
            tl.store(color_ptr + r1d * 3 + c, acc + (1.0 - op) * bgc, mask=m1d)
        tl.store(depth_ptr + r1d, depth, mask=m1d)
        tl.store(opacity_ptr + r1d, op, mask=m1d)


@triton.jit
def composite_samples_bwd_kernel(raw_ptr, t_ptr, o_ptr, d_ptr, bg_ptr, depth_ptr, opacity_ptr,
                                 v_color_ptr, v_depth_ptr, v_opacity_ptr, v_raw_ptr,
                                 params_ptr, R, S,
                                 ACT: tl.constexpr, MIDPOINT: tl.constexpr,
                                 MASKED: tl.constexpr, PAD: tl.constexpr, SP_THRESH: tl.constexpr,
                                 EXP_CLAMP: tl.constexpr, BLOCK_R: tl.constexpr, SP: tl.constexpr):
    pid = tl.program_id(0)
    bmin, bmax, bias, stop = _params(params_ptr)
    rows = (pid * BLOCK_R + tl.arange(0, BLOCK_R))[:, None].to(tl.int64)
    s = tl.arange(0, SP)[None, :]
    rmask = rows < R
    ox, oy, oz = _load3(o_ptr, rows, rmask)
    dx, dy, dz = _load3(d_ptr, rows, rmask)
    # per-ray forward outputs and cotangents, [BLOCK_R, 1]
    bgr, bgg, bgb = _load3(bg_ptr, rows, rmask)
    vcr, vcg, vcb = _load3(v_color_ptr, rows, rmask)
    depth = tl.load(depth_ptr + rows, mask=rmask, other=0.0)
    op = tl.load(opacity_ptr + rows, mask=rmask, other=0.0)
    v_depth = tl.load(v_depth_ptr + rows, mask=rmask, other=0.0)
    v_op = tl.load(v_opacity_ptr + rows, mask=rmask, other=0.0)
    vd = tl.where(op > 0, v_depth / tl.where(op > 0, op, 1.0), 0.0)
    n = S - 1
    srm, rm, gm, bm, _, _, _, tm, _ = _samples(raw_ptr, t_ptr, ox, oy, oz, dx, dy, dz, rows, s - 1, R, S,
                                               bmin, bmax, MASKED, PAD, BLOCK_R, SP)
    sr0, r0, g0, b0, s1, s2, s3, t0, in0 = _samples(raw_ptr, t_ptr, ox, oy, oz, dx, dy, dz, rows, s, R, S,
                                                    bmin, bmax, MASKED, PAD, BLOCK_R, SP)
    sr1, r1, g1, b1, _, _, _, t1, _ = _samples(raw_ptr, t_ptr, ox, oy, oz, dx, dy, dz, rows, s + 1, R, S,
                                               bmin, bmax, MASKED, PAD, BLOCK_R, SP)
    sr2, r2, g2, b2, _, _, _, t2, _ = _samples(raw_ptr, t_ptr, ox, oy, oz, dx, dy, dz, rows, s + 2, R, S,
                                               bmin, bmax, MASKED, PAD, BLOCK_R, SP)
    validm = rmask & (s >= 1) & (s - 1 < n)
    valid0 = rmask & (s < n)
    validp = rmask & (s + 1 < n)
    # intervals s - 1 (m), s (0), s + 1 (p)
    crm, cgm, cbm, depm, prem, deltam, em, alpham, keepm = _interval(
        srm, rm, gm, bm, tm, sr0, r0, g0, b0, t0, validm, bias, ACT, MIDPOINT, SP_THRESH, EXP_CLAMP)
    cr0, cg0, cb0, dep0, pre0, delta0, e0, alpha0, keep0 = _interval(
        sr0, r0, g0, b0, t0, sr1, r1, g1, b1, t1, valid0, bias, ACT, MIDPOINT, SP_THRESH, EXP_CLAMP)
    crp, cgp, cbp, depp, _, _, _, alphap, keepp = _interval(
        sr1, r1, g1, b1, t1, sr2, r2, g2, b2, t2, validp, bias, ACT, MIDPOINT, SP_THRESH, EXP_CLAMP)
    # the forward's transmittance and stop index (exact for the neighbour intervals too)
    trans = tl.cumprod(keepm, axis=1)
    first = tl.min(tl.where((s >= 1) & (trans < stop), s, SP), axis=1)[:, None]
    used0 = valid0 & (s < first)
    usedm = validm & (s - 1 < first)
    usedp = validp & (s + 1 < first)
    trans_m = tl.where(validm, trans / keepm, 0.0)  # T_{s-1}: a quotient of products, relative-exact
    g0v = vcr * (cr0 - bgr) + vcg * (cg0 - bgg) + vcb * (cb0 - bgb) + v_op + vd * (dep0 - depth)
    gmv = vcr * (crm - bgr) + vcg * (cgm - bgg) + vcb * (cbm - bgb) + v_op + vd * (depm - depth)
    gpv = vcr * (crp - bgr) + vcg * (cgp - bgg) + vcb * (cbp - bgb) + v_op + vd * (depp - depth)
    # A_s = sum_{m>s} g_m alpha_m prod_{s<j<m} keep_j: reverse scan of interval s+1's map at position s
    _, A0 = tl.associative_scan((tl.where(usedp, keepp, 1.0), tl.where(usedp, gpv * alphap, 0.0)), 1, _affine,
                                reverse=True)
    Am = tl.where(used0, g0v * alpha0, 0.0) + keep0 * A0  # A_{s-1} = g_s alpha_s + keep_s A_s
    v_alpha0 = tl.where(used0, trans * (g0v - A0), 0.0)
    v_alpham = tl.where(usedm, trans_m * (gmv - Am), 0.0)
    v_x0 = v_alpha0 * delta0 * e0 * _activate_grad(pre0, ACT, SP_THRESH, EXP_CLAMP)
    v_xm = v_alpham * deltam * em * _activate_grad(prem, ACT, SP_THRESH, EXP_CLAMP)
    w0 = tl.where(used0, alpha0 * trans, 0.0)
    wm = tl.where(usedm, alpham * trans_m, 0.0)
    if MIDPOINT:
        v_sr = 0.5 * (v_x0 + v_xm)
        wc = 0.5 * (w0 + wm)
    else:
        v_sr = v_x0
        wc = w0
    # (the pad stays a constexpr expression: bound to a local it would become a float32 scalar)
    zero = tl.zeros_like(v_sr)
    v0 = tl.where(in0, v_sr, zero)
    v1 = tl.where(in0, wc * vcr * (1.0 + 2.0 * PAD) * s1 * (1.0 - s1), zero)
    v2 = tl.where(in0, wc * vcg * (1.0 + 2.0 * PAD) * s2 * (1.0 - s2), zero)
    v3 = tl.where(in0, wc * vcb * (1.0 + 2.0 * PAD) * s3 * (1.0 - s3), zero)
    out = tl.reshape(tl.join(tl.join(v0, v2), tl.join(v1, v3)), (BLOCK_R, SP, 4))
    m = rmask & (s < S)
    q = tl.arange(0, 4)
    tl.store(v_raw_ptr + (rows * S + s)[:, :, None] * 4 + q[None, None, :], out, mask=m[:, :, None])
