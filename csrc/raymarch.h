// Rays and samples, per ray, torch-free (see lrm_fast/ops/raymarch.py for the conventions).
//
// A camera is c2w (row-major 4x4, OpenGL: looks along -z, +y up) plus normalized intrinsics
// fx, fy, cx, cy. A pixel (row i, col j) of an H x W image becomes the OpenCV direction
// ((x - cx) / fx, (y - cy) / fy, 1) with x = (j + .5) / W, y = (i + .5) / H, i.e. the OpenGL
// direction (dx, -dy, -1), rotated to world and normalized. Rays are clipped to the box with the
// slab test; a ray that misses gets near = far = 0 and is flagged, never NaN. Samples are
// stratified depths in [near, far] and inverse-CDF (importance) draws from coarse weights, both
// exactly as the pure-torch twins compute them.
#pragma once

#include "common.h"

namespace lrm_fast {

// origin/direction of one pixel ray. c2w: 16 values row-major; K: fx, fy, cx, cy.
template <typename T>
LRM_HD void pixel_ray(const T* c2w, const T* K, int height, int width, T row, T col, T* o, T* d) {
  const T x = (col + T(0.5)) / T(width);
  const T y = (row + T(0.5)) / T(height);
  const T dc0 = (x - K[2]) / K[0];
  const T dc1 = -(y - K[3]) / K[1];
  const T dc2 = T(-1);
  T n2 = T(0);
  for (int r = 0; r < 3; ++r) {
    d[r] = c2w[4 * r + 0] * dc0 + c2w[4 * r + 1] * dc1 + c2w[4 * r + 2] * dc2;
    n2 += d[r] * d[r];
  }
  // F.normalize: divide by max(norm, 1e-12)
  const T inv = T(1) / lrm_max(lrm_sqrt(n2), T(1e-12));
  for (int r = 0; r < 3; ++r) {
    d[r] *= inv;
    o[r] = c2w[4 * r + 3];
  }
}

// Slab test against [bmin, bmax]^3. Returns hit; near >= 0 (a camera inside starts at 0).
template <typename T>
LRM_HD bool ray_box_hit(const T* o, const T* d, T bmin, T bmax, T* near_out, T* far_out) {
  T near = T(-1e30), far = T(1e30);
  for (int a = 0; a < 3; ++a) {
    // the twin replaces an exactly-zero direction by 1e-12 (no inf * 0 = NaN)
    const T inv = T(1) / (d[a] == T(0) ? T(1e-12) : d[a]);
    const T t0 = (bmin - o[a]) * inv, t1 = (bmax - o[a]) * inv;
    near = lrm_max(near, lrm_min(t0, t1));
    far = lrm_min(far, lrm_max(t0, t1));
  }
  near = lrm_max(near, T(0));
  const bool hit = far > near;
  *near_out = hit ? near : T(0);
  *far_out = hit ? far : T(0);
  return hit;
}

// torch.linspace(0, 1, n)[k], computed the way torch does (symmetric from both ends).
template <typename T>
LRM_HD T linspace01(int k, int n) {
  if (n <= 1) return T(0);
  const T step = T(1) / T(n - 1);
  return k < n / 2 ? T(k) * step : T(1) - T(n - 1 - k) * step;
}

// n stratified depths of one ray; u (nullable) holds n uniform jitters in [0, 1).
template <typename T>
LRM_HD void stratified_ray(T near, T far, int n, const T* u, T* out) {
  const T span = far - near;
  const T delta = span / T(n > 1 ? n - 1 : 1);
  for (int k = 0; k < n; ++k) {
    // rounded as the twin's separate torch ops (no FMA), so samples at near/far land bit-exactly
    T t = mul_add_rn(linspace01<T>(k, n), span, near);
    if (u) t = mul_add_rn(u[k], delta, t);
    out[k] = t;
  }
}

// Importance resampling of one ray (OpenLRM sample_importance):
//   depths [S] (sorted), weights [S-1] (coarse interval weights), n draws -> out [n].
// weights -> max-pool(2, pad 1) -> avg-pool(2) -> + 0.01 -> trim [1:-1] (K = S-3 values), drawn
// against the first S-2 interval midpoints (bins) with inverse CDF (NeRF sample_pdf, eps 1e-5).
// The CDF is float (as the twin, which builds it from float weights); u (nullable) = n uniform
// levels, else linspace(0, 1, n). cdf: caller scratch of S-2 floats.
template <typename T>
LRM_HD void importance_ray(const T* depths, const float* weights, int S, int n, const float* u,
                           float* cdf, T* out) {
  const int L = S - 1;       // coarse intervals
  const int K = S - 3;       // pdf bins after the trim
  const float eps = 1e-5f;
  // smoothed weight of interval i (0 <= i < L): mean of max(w[i-1], w[i]) and max(w[i], w[i+1])
  // with out-of-range neighbours ignored (max-pool padding is -inf).
  float total = 0.f;
  cdf[0] = 0.f;
  for (int b = 0; b < K; ++b) {
    const int i = b + 1;
    const float m0 = lrm_max(weights[i - 1], weights[i]);
    const float m1 = i + 1 < L ? lrm_max(weights[i], weights[i + 1]) : weights[i];
    const float w = 0.5f * (m0 + m1) + 0.01f + eps;
    total += w;
    cdf[b + 1] = w;  // the weight for now; the cdf after the loop
  }
  // the twin normalizes the pdf first and then takes its cumsum
  float run = 0.f;
  for (int b = 0; b < K; ++b) {
    run += cdf[b + 1] / total;
    cdf[b + 1] = run;
  }
  for (int k = 0; k < n; ++k) {
    const float uk = u ? u[k] : linspace01<float>(k, n);
    // searchsorted(right=True): first index with cdf[idx] > uk (K + 1 if none)
    int lo = 0, hi = K + 1;
    while (lo < hi) {
      const int mid = (lo + hi) >> 1;
      if (cdf[mid] <= uk) lo = mid + 1; else hi = mid;
    }
    const int below = lrm_max(lo - 1, 0);
    const int above = lrm_min(lo, K);
    const float c0 = cdf[below], c1 = cdf[above];
    // bins are interval midpoints: 0.5 * (depths[b] + depths[b + 1])
    const T b0 = T(0.5) * (depths[below] + depths[below + 1]);
    const T b1 = T(0.5) * (depths[above] + depths[above + 1]);
    float denom = c1 - c0;
    if (denom < eps) denom = 1.f;
    out[k] = b0 + T((uk - c0) / denom) * (b1 - b0);
  }
}

// Merge two sorted sample sets of one ray (coarse + fine) into one sorted set, carrying K values
// per sample (the field's raw outputs): ta [A], va [A, K], tb [B], vb [B, K] -> t [A + B], v [A + B, K].
// Stable: on equal depths the sample of `a` comes first (torch.sort(cat([a, b]), stable=True)).
// src (nullable) receives, per merged sample, its index into a (>= 0) or -1 - (index into b).
// KK: K known at compile time (0 = runtime K), so the renderer's K = 4 copies unroll.
template <typename T, int KK = 0>
LRM_HD void merge_ray(const T* ta, const T* va, int A, const T* tb, const T* vb, int B, int K_rt, T* t, T* v) {
  const int K = KK > 0 ? KK : K_rt;
  int i = 0, j = 0;
  for (int m = 0; m < A + B; ++m) {
    const bool take_a = j >= B || (i < A && !(tb[j] < ta[i]));
    const T* src = take_a ? va + i * K : vb + j * K;
    t[m] = take_a ? ta[i] : tb[j];
    for (int c = 0; c < K; ++c) v[m * K + c] = src[c];
    if (take_a) ++i; else ++j;
  }
}

// The backward of merge_ray's values: v_v [A + B, K] -> v_va [A, K], v_vb [B, K] (the same walk).
template <typename T, int KK = 0>
LRM_HD void merge_ray_backward(const T* ta, int A, const T* tb, int B, int K_rt, const T* v_v, T* v_va, T* v_vb) {
  const int K = KK > 0 ? KK : K_rt;
  int i = 0, j = 0;
  for (int m = 0; m < A + B; ++m) {
    const bool take_a = j >= B || (i < A && !(tb[j] < ta[i]));
    T* dst = take_a ? v_va + i * K : v_vb + j * K;
    for (int c = 0; c < K; ++c) dst[c] = v_v[m * K + c];
    if (take_a) ++i; else ++j;
  }
}

// Points along one ray: p[k] = o + t[k] * d, rounded as the twin's two torch ops (no FMA), so the
// in-box gate that recomputes them downstream agrees bit for bit.
template <typename T>
LRM_HD void ray_points_ray(const T* o, const T* d, const T* t, int S, T* p) {
  for (int k = 0; k < S; ++k)
    for (int a = 0; a < 3; ++a) p[3 * k + a] = mul_add_rn(t[k], d[a], o[a]);
}

}  // namespace lrm_fast
