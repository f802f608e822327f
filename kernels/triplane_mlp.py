"""Fused triplane sampling + NeRF MLP in Triton: forward and backward kernels.

The spec is ``_triplane_mlp_ref`` in ``lrm_fast/ops/triplane_mlp.py``; this file computes the same
function without materializing any ``[n_points, C]`` tensor in global memory.

One program owns ``BLOCK_N`` points of one batch element (grid ``(cdiv(N, BLOCK_N), B)``):

* **sampling**: for each plane, the 4 bilinear corners are gathered straight from a channels-last
  copy of the planes ``[B, 3, H, W, C]`` (one contiguous row of ``C`` per texel, so a corner is
  one vector load). Semantics = ``F.grid_sample(align_corners=False, padding_mode="zeros")``:
  ``ix = ((u + 1) * W - 1) / 2``, corners outside ``[0, W) x [0, H)`` read as zero.
  Plane 0 at (x, y), plane 1 at (x, z), plane 2 at (z, y) (u indexes W, v indexes H).
* **aggregation**: concat is folded into layer 0 (``[f0, f1, f2] @ W0^T = sum_p f_p @ W0_p^T``,
  with ``W0_p`` the p-th column block), sum/mean add the three samples before one ``tl.dot``.
* **MLP**: every layer is a ``tl.dot`` on a ``[BLOCK_N, width]`` register tile, fp32 accumulation.
  Operands are cast to the compute dtype (the planes' dtype: fp32, fp16 or bf16), as the
  reference runs its ``F.linear`` layers in the planes' dtype. Widths are zero-padded to powers of
  two >= 16 by the wrapper (``tl.dot`` needs every dim >= 16); zero weight rows/columns make the
  padding exact.
* **output**: only the raw MLP output ``[B, N, out]`` (channel 0 = raw density, 1:4 = rgb logits,
  no activation: the field applies softplus/sigmoid itself, cheap elementwise work).

Backward (one program per block of points, same grid) recomputes instead of storing:

* the samples and layer-0 pre-activation ``z0`` are recomputed from the planes;
* going back through layer ``j`` needs that layer's input, recomputed from ``z0`` through layers
  ``1..j-1`` (O(L^2) small dots, L = 4 in every preset: cheaper than storing L x [N, 64]);
* weight/bias gradients of the block are added with one tile-wide ``tl.atomic_add`` per tensor
  into a partial buffer slot ``program % NUM_PARTIALS`` (fp32); the wrapper sums the slots. Slots
  spread the atomic contention (lightplane / the layer-norm tutorial's partial-buffer reduction);
* plane gradients are scattered with fp32 atomics into a channels-last fp32 buffer;
* points get no gradient (the renderer's sample positions do not need one): the op refuses the
  Triton path when ``points.requires_grad`` and ``auto`` falls back to the reference.

Import this module lazily (``lrm_fast.kernels.triplane_mlp``): importing triton costs seconds, and
on a machine without a GPU it only works with ``TRITON_INTERPRET=1`` set before the import.
"""
from __future__ import annotations

import triton
import triton.language as tl

# activation codes (constexpr)
ACT_RELU, ACT_SILU, ACT_SOFTPLUS = 0, 1, 2
ACT_CODES = {"relu": ACT_RELU, "silu": ACT_SILU, "softplus": ACT_SOFTPLUS}
# aggregation codes (constexpr)
AGG_CONCAT, AGG_SUM, AGG_MEAN = 0, 1, 2
AGG_CODES = {"concat": AGG_CONCAT, "sum": AGG_SUM, "mean": AGG_MEAN}


@triton.jit
def _act(z, ACT: tl.constexpr):
    if ACT == 0:
        r = tl.maximum(z, 0.0)
    elif ACT == 1:
        r = z * tl.sigmoid(z)
    else:
        # torch softplus (beta=1, threshold=20): x above the threshold passes through unchanged
        r = tl.where(z > 20.0, z, tl.log(1.0 + tl.exp(tl.minimum(z, 20.0))))
    return r


@triton.jit
def _act_grad(z, ACT: tl.constexpr):
    """d act / d z at the pre-activation z (fp32)."""
    if ACT == 0:
        r = (z > 0.0).to(tl.float32)
    elif ACT == 1:
        s = tl.sigmoid(z)
        r = s * (1.0 + z * (1.0 - s))
    else:
        r = tl.where(z > 20.0, 1.0, tl.sigmoid(z))
    return r


@triton.jit
def _dot(a, b, PREC: tl.constexpr):
    """[M, K] @ [K, N] with both operands in b's dtype (the compute dtype), fp32 accumulation."""
    return tl.dot(a.to(b.dtype), b, input_precision=PREC, out_dtype=tl.float32)


@triton.jit
def _corners(u, v, H, W):
    """grid_sample(align_corners=False) corner indices and weights of coordinates u (W axis), v (H)."""
    ix = ((u + 1.0) * W - 1.0) * 0.5
    iy = ((v + 1.0) * H - 1.0) * 0.5
    # Far-away points: clamp before the int cast (no overflow); every corner stays outside.
    ix = tl.minimum(tl.maximum(ix, -2.0), W + 1.0)
    iy = tl.minimum(tl.maximum(iy, -2.0), H + 1.0)
    x0f = tl.floor(ix)
    y0f = tl.floor(iy)
    # weights written as PyTorch's kernel does: nw = (ix_se - ix) * (iy_se - iy), ...
    wx1 = ix - x0f
    wy1 = iy - y0f
    wx0 = (x0f + 1.0) - ix
    wy0 = (y0f + 1.0) - iy
    x0 = x0f.to(tl.int32)
    y0 = y0f.to(tl.int32)
    return x0, y0, wx0, wx1, wy0, wy1


@triton.jit
def _plane_uv(px, py, pz, p):
    """(u, v) of plane p (a runtime index): plane 0 (x, y), plane 1 (x, z), plane 2 (z, y)."""
    u = tl.where(p == 2, pz, px)
    v = tl.where(p == 1, pz, py)
    return u, v


# The 4 corners (and in the callers the 3 planes) are runtime loops, not unrolled code: unrolled,
# the compiler hoists all 12 gathers with their [BLOCK_N, CP] 64-bit pointer tiles and spills
# (ptxas reports, sm_90); a loop keeps one corner's tiles live at a time.
@triton.jit
def _sample_plane(plane, u, v, mask_n, H, W, C, offs_c, BLOCK_N: tl.constexpr, CP: tl.constexpr):
    """Bilinear features [BLOCK_N, CP] (fp32) of one channels-last plane [H, W, C] at (u, v)."""
    x0, y0, wx0, wx1, wy0, wy1 = _corners(u, v, H, W)
    mc = offs_c[None, :] < C
    f = tl.zeros((BLOCK_N, CP), dtype=tl.float32)
    for k in range(4):
        dx = k % 2
        dy = k // 2
        x = x0 + dx
        y = y0 + dy
        w = tl.where(dx == 1, wx1, wx0) * tl.where(dy == 1, wy1, wy0)
        m = mask_n & (x >= 0) & (x < W) & (y >= 0) & (y < H)
        f += tl.load(plane + ((y * W + x) * C)[:, None] + offs_c[None, :], mask=m[:, None] & mc,
                     other=0.0).to(tl.float32) * w[:, None]
    return f


@triton.jit
def _scatter_plane(v_plane, u, v, mask_n, H, W, C, offs_c, g):
    """Adjoint of _sample_plane: v_plane[corner, c] += weight * g[n, c] (fp32 atomics)."""
    x0, y0, wx0, wx1, wy0, wy1 = _corners(u, v, H, W)
    mc = offs_c[None, :] < C
    for k in range(4):
        dx = k % 2
        dy = k // 2
        x = x0 + dx
        y = y0 + dy
        w = tl.where(dx == 1, wx1, wx0) * tl.where(dy == 1, wy1, wy0)
        m = mask_n & (x >= 0) & (x < W) & (y >= 0) & (y < H)
        tl.atomic_add(v_plane + ((y * W + x) * C)[:, None] + offs_c[None, :], g * w[:, None],
                      mask=m[:, None] & mc, sem="relaxed")


@triton.jit
def _load_points(points, b, N, offs_n, mask_n):
    base = points + b.to(tl.int64) * N * 3
    px = tl.load(base + offs_n * 3 + 0, mask=mask_n, other=0.0).to(tl.float32)
    py = tl.load(base + offs_n * 3 + 1, mask=mask_n, other=0.0).to(tl.float32)
    pz = tl.load(base + offs_n * 3 + 2, mask=mask_n, other=0.0).to(tl.float32)
    return px, py, pz


@triton.jit
def _layer0(planes_b, px, py, pz, mask_n, w0, b0, H, W, C, offs_c, offs_h,
            AGG: tl.constexpr, BLOCK_N: tl.constexpr, CP: tl.constexpr, HP: tl.constexpr,
            PREC: tl.constexpr):
    """Pre-activation of layer 0, z0 [BLOCK_N, HP] (fp32). w0: [3 or 1, CP, HP] (in x out)."""
    hwc = H * W * C
    w_tile = offs_c[:, None] * HP + offs_h[None, :]
    if AGG == 0:
        z = tl.zeros((BLOCK_N, HP), dtype=tl.float32)
        for p in range(3):
            u, v = _plane_uv(px, py, pz, p)
            f = _sample_plane(planes_b + p * hwc, u, v, mask_n, H, W, C, offs_c, BLOCK_N, CP)
            z += _dot(f, tl.load(w0 + p * CP * HP + w_tile), PREC)
    else:
        f = _sum_planes(planes_b, px, py, pz, mask_n, H, W, C, offs_c, AGG, BLOCK_N, CP)
        z = _dot(f, tl.load(w0 + w_tile), PREC)
    return z + tl.load(b0 + offs_h)[None, :]


@triton.jit
def _sum_planes(planes_b, px, py, pz, mask_n, H, W, C, offs_c,
                AGG: tl.constexpr, BLOCK_N: tl.constexpr, CP: tl.constexpr):
    """Aggregated features for sum (AGG 1) / mean (AGG 2): [BLOCK_N, CP] fp32."""
    hwc = H * W * C
    f = tl.zeros((BLOCK_N, CP), dtype=tl.float32)
    for p in range(3):
        u, v = _plane_uv(px, py, pz, p)
        f += _sample_plane(planes_b + p * hwc, u, v, mask_n, H, W, C, offs_c, BLOCK_N, CP)
    if AGG == 2:
        f = f / 3.0
    return f


@triton.jit
def _mid_layer(h, wm, bm, i, offs_h, HP: tl.constexpr, PREC: tl.constexpr):
    """Pre-activation of hidden layer i (1-based in the MLP, 0-based in wm): [BLOCK_N, HP]."""
    w = tl.load(wm + i * HP * HP + offs_h[:, None] * HP + offs_h[None, :])
    return _dot(h, w, PREC) + tl.load(bm + i * HP + offs_h)[None, :]


# Sizes that vary call to call are not specialized (Triton would otherwise compile a new kernel
# for every N == 1 / N % 16 == 0 / plane-size combination); C stays specialized (alignment of the
# channel loads).
_DYNAMIC = ["N", "H", "W", "OUT"]


@triton.jit(do_not_specialize=_DYNAMIC)
def triplane_mlp_fwd_kernel(
        planes, points, w0, b0, wm, bm, wl, bl, out,
        N, H, W, C, OUT,
        AGG: tl.constexpr, ACT: tl.constexpr, NUM_MID: tl.constexpr,
        BLOCK_N: tl.constexpr, CP: tl.constexpr, HP: tl.constexpr, OP: tl.constexpr,
        PREC: tl.constexpr):
    """planes [B, 3, H, W, C] (channels-last), points [B, N, 3] -> out [B, N, OUT] (raw)."""
    pid = tl.program_id(0)
    b = tl.program_id(1)
    offs_n = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_n = offs_n < N
    offs_c = tl.arange(0, CP)
    offs_h = tl.arange(0, HP)
    offs_o = tl.arange(0, OP)
    px, py, pz = _load_points(points, b, N, offs_n, mask_n)
    planes_b = planes + b.to(tl.int64) * 3 * H * W * C

    h = _act(_layer0(planes_b, px, py, pz, mask_n, w0, b0, H, W, C, offs_c, offs_h,
                     AGG, BLOCK_N, CP, HP, PREC), ACT)
    for i in range(NUM_MID):
        h = _act(_mid_layer(h, wm, bm, i, offs_h, HP, PREC), ACT)
    o = _dot(h, tl.load(wl + offs_h[:, None] * OP + offs_o[None, :]), PREC)
    o += tl.load(bl + offs_o)[None, :]

    out_b = out + b.to(tl.int64) * N * OUT
    tl.store(out_b + offs_n[:, None] * OUT + offs_o[None, :], o.to(out.dtype.element_ty),
             mask=mask_n[:, None] & (offs_o[None, :] < OUT))


@triton.jit(do_not_specialize=_DYNAMIC + ["NUM_PARTIALS"])
def triplane_mlp_bwd_kernel(
        planes, points, w0, b0, wm, bm, wl, bl, v_out,
        v_planes, v_w0, v_b0, v_wm, v_bm, v_wl, v_bl,
        N, H, W, C, OUT, NUM_PARTIALS,
        AGG: tl.constexpr, ACT: tl.constexpr, NUM_MID: tl.constexpr,
        BLOCK_N: tl.constexpr, CP: tl.constexpr, HP: tl.constexpr, OP: tl.constexpr,
        PREC: tl.constexpr):
    """Cotangent v_out [B, N, OUT] -> v_planes [B, 3, H, W, C] (fp32, channels-last, atomics) and
    weight/bias cotangents into partial buffers v_w0 [P, 3|1, CP, HP], v_b0 [P, HP],
    v_wm [P, NUM_MID, HP, HP], v_bm [P, NUM_MID, HP], v_wl [P, HP, OP], v_bl [P, OP] (fp32)."""
    pid = tl.program_id(0)
    b = tl.program_id(1)
    offs_n = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_n = offs_n < N
    offs_c = tl.arange(0, CP)
    offs_h = tl.arange(0, HP)
    offs_o = tl.arange(0, OP)
    px, py, pz = _load_points(points, b, N, offs_n, mask_n)
    planes_b = planes + b.to(tl.int64) * 3 * H * W * C
    slot = ((b * tl.num_programs(0) + pid) % NUM_PARTIALS).to(tl.int64)
    cdt = w0.dtype.element_ty  # compute dtype of every tl.dot operand
    wt_hh = offs_h[:, None] * HP + offs_h[None, :]

    # forward recompute up to the last layer's input
    z0 = _layer0(planes_b, px, py, pz, mask_n, w0, b0, H, W, C, offs_c, offs_h, AGG, BLOCK_N, CP, HP,
                 PREC)
    h = _act(z0, ACT)
    for i in range(NUM_MID):
        h = _act(_mid_layer(h, wm, bm, i, offs_h, HP, PREC), ACT)

    # last layer: rows past N load a zero cotangent, so they add nothing anywhere below
    v_o = tl.load(v_out + b.to(tl.int64) * N * OUT + offs_n[:, None] * OUT + offs_o[None, :],
                  mask=mask_n[:, None] & (offs_o[None, :] < OUT), other=0.0).to(tl.float32)
    wl_t = tl.load(wl + offs_h[:, None] * OP + offs_o[None, :])            # [HP, OP]
    tl.atomic_add(v_wl + slot * HP * OP + offs_h[:, None] * OP + offs_o[None, :],
                  _dot(tl.trans(h), v_o.to(cdt), PREC), sem="relaxed")
    tl.atomic_add(v_bl + slot * OP + offs_o, tl.sum(v_o, axis=0), sem="relaxed")
    v_h = _dot(v_o, tl.trans(wl_t), PREC)                                  # [BLOCK_N, HP]

    # hidden layers, last to first; each one's input recomputed from z0
    for jj in range(NUM_MID):
        j = NUM_MID - 1 - jj
        a = _act(z0, ACT)
        for i in range(j):
            a = _act(_mid_layer(a, wm, bm, i, offs_h, HP, PREC), ACT)
        zj = _mid_layer(a, wm, bm, j, offs_h, HP, PREC)
        v_z = v_h * _act_grad(zj, ACT)
        tl.atomic_add(v_wm + (slot * NUM_MID + j) * HP * HP + wt_hh, _dot(tl.trans(a), v_z.to(cdt), PREC),
                      sem="relaxed")
        tl.atomic_add(v_bm + (slot * NUM_MID + j) * HP + offs_h, tl.sum(v_z, axis=0), sem="relaxed")
        v_h = _dot(v_z, tl.trans(tl.load(wm + j * HP * HP + wt_hh)), PREC)

    # layer 0 and the planes
    v_z0 = v_h * _act_grad(z0, ACT)
    tl.atomic_add(v_b0 + slot * HP + offs_h, tl.sum(v_z0, axis=0), sem="relaxed")
    hwc = H * W * C
    v_planes_b = v_planes + b.to(tl.int64) * 3 * H * W * C
    w_tile = offs_c[:, None] * HP + offs_h[None, :]
    if AGG == 0:
        v_w0_s = v_w0 + slot * 3 * CP * HP
        for p in range(3):
            u, v = _plane_uv(px, py, pz, p)
            f = _sample_plane(planes_b + p * hwc, u, v, mask_n, H, W, C, offs_c, BLOCK_N, CP)
            tl.atomic_add(v_w0_s + p * CP * HP + w_tile, _dot(tl.trans(f), v_z0.to(cdt), PREC),
                          sem="relaxed")
            g = _dot(v_z0, tl.trans(tl.load(w0 + p * CP * HP + w_tile)), PREC)
            _scatter_plane(v_planes_b + p * hwc, u, v, mask_n, H, W, C, offs_c, g)
    else:
        v_w0_s = v_w0 + slot * CP * HP
        f = _sum_planes(planes_b, px, py, pz, mask_n, H, W, C, offs_c, AGG, BLOCK_N, CP)
        tl.atomic_add(v_w0_s + w_tile, _dot(tl.trans(f), v_z0.to(cdt), PREC), sem="relaxed")
        g = _dot(v_z0, tl.trans(tl.load(w0 + w_tile)), PREC)
        if AGG == 2:
            g = g / 3.0
        for p in range(3):
            u, v = _plane_uv(px, py, pz, p)
            _scatter_plane(v_planes_b + p * hwc, u, v, mask_n, H, W, C, offs_c, g)
