// Torch-free per-point math of the fused CPU triplane field (csrc/triplane_mlp_cpu.cpp):
// bilinear taps exactly as F.grid_sample(mode="bilinear", padding_mode="zeros",
// align_corners=False), the plane axes of lrm_fast/ops/triplane_mlp.py, and the MLP's
// activations as torch defines them. Kept free of ATen so a plain C++ test can include it.
#pragma once

#include <cmath>
#include <cstdint>

namespace lrm_fast {
namespace field {

enum Aggregate : int { kConcat = 0, kSum = 1, kMean = 2 };
enum Activation : int { kRelu = 0, kSilu = 1, kSoftplus = 2 };

// (u, v) coordinate indices of plane p: plane 0 (x, y), plane 1 (x, z), plane 2 (z, y).
constexpr int kPlaneU[3] = {0, 0, 2};
constexpr int kPlaneV[3] = {1, 2, 1};

// One bilinear tap set: 4 corner offsets into a channels-last plane [H, W, C] (in units of
// C-vectors; -1 = outside, contributes zero) and their weights, in grid_sample's order
// (nw, ne, sw, se).
struct Taps {
  int64_t idx[4];
  float w[4];
};

// u indexes W, v indexes H. Unnormalize with align_corners=False: ((u + 1) * W - 1) / 2, the
// same expression (and rounding) as ATen's grid_sampler_compute_source_index.
__attribute__((always_inline)) inline Taps bilinear_taps(float u, float v, int64_t H, int64_t W) {
  Taps t;
  const float ix = ((u + 1.f) * float(W) - 1.f) / 2.f;
  const float iy = ((v + 1.f) * float(H) - 1.f) / 2.f;
  // non-finite or far outside: every corner is outside (also keeps floor() -> int64 defined)
  if (!(ix > -2.f && ix < float(W) + 1.f && iy > -2.f && iy < float(H) + 1.f)) {
    for (int k = 0; k < 4; ++k) { t.idx[k] = -1; t.w[k] = 0.f; }
    return t;
  }
  const float fx0 = std::floor(ix), fy0 = std::floor(iy);
  const int64_t x0 = int64_t(fx0), y0 = int64_t(fy0), x1 = x0 + 1, y1 = y0 + 1;
  const float fx1 = fx0 + 1.f, fy1 = fy0 + 1.f;
  t.w[0] = (fx1 - ix) * (fy1 - iy);  // nw
  t.w[1] = (ix - fx0) * (fy1 - iy);  // ne
  t.w[2] = (fx1 - ix) * (iy - fy0);  // sw
  t.w[3] = (ix - fx0) * (iy - fy0);  // se
  const int64_t xs[4] = {x0, x1, x0, x1}, ys[4] = {y0, y0, y1, y1};
  for (int k = 0; k < 4; ++k) {
    const bool in = xs[k] >= 0 && xs[k] < W && ys[k] >= 0 && ys[k] < H;
    t.idx[k] = in ? ys[k] * W + xs[k] : -1;
    if (!in) t.w[k] = 0.f;
  }
  return t;
}

// out[c] = sum over in-range corners of w_k * plane[idx_k, c], accumulated in grid_sample's
// corner order. plane: channels-last [H, W, C]. CC > 0: C known at compile time (the common
// widths), so the C-loop is fully unrolled into vector code; CC == 0: runtime C.
template <int CC>
__attribute__((always_inline)) inline void gather(const float* __restrict__ plane, const Taps& t, int64_t C_rt,
                                                  float* __restrict__ out, const float* __restrict__ zeros) {
  const int64_t C = CC > 0 ? CC : C_rt;
  // an outside corner reads a row of zeros with weight 0: adds exactly +0, like grid_sample's
  // skipped corner, and keeps the loop branch-free (one vector pass per corner)
  const float* s0 = t.idx[0] < 0 ? zeros : plane + t.idx[0] * C;
  const float* s1 = t.idx[1] < 0 ? zeros : plane + t.idx[1] * C;
  const float* s2 = t.idx[2] < 0 ? zeros : plane + t.idx[2] * C;
  const float* s3 = t.idx[3] < 0 ? zeros : plane + t.idx[3] * C;
  const float w0 = t.w[0], w1 = t.w[1], w2 = t.w[2], w3 = t.w[3];
  for (int64_t c = 0; c < C; ++c) out[c] = ((s0[c] * w0 + s1[c] * w1) + s2[c] * w2) + s3[c] * w3;
}

inline void gather(const float* plane, const Taps& t, int64_t C, float* out, const float* zeros) {
  gather<0>(plane, t, C, out, zeros);
}

// out[c] += w_k * g[c] into each in-range corner of the tap set, in grid_sample's corner order
// (its backward adds the same products into the input gradient). plane_grad: channels-last
// [H, W, C]. Outside corners are skipped (they are zero padding, not stored).
template <int CC>
__attribute__((always_inline)) inline void scatter(float* __restrict__ plane_grad, const Taps& t, int64_t C_rt,
                                                   const float* __restrict__ g) {
  const int64_t C = CC > 0 ? CC : C_rt;
  for (int k = 0; k < 4; ++k) {
    if (t.idx[k] < 0) continue;
    float* __restrict__ d = plane_grad + t.idx[k] * C;
    const float w = t.w[k];
    for (int64_t c = 0; c < C; ++c) d[c] += w * g[c];
  }
}

inline float activate(float x, int act) {
  switch (act) {
    case kRelu: return x > 0.f ? x : 0.f;
    case kSilu: return x / (1.f + std::exp(-x));
    default:    return x > 20.f ? x : std::log1p(std::exp(x));  // F.softplus(beta=1, threshold=20)
  }
}

// d act(z) / dz times the incoming gradient g, with the formulas of torch's CPU backward
// kernels (threshold_backward, silu_backward, softplus_backward with beta 1, threshold 20).
inline float activate_grad(float g, float z, int act) {
  switch (act) {
    case kRelu: return z > 0.f ? g : 0.f;
    case kSilu: {
      const float s = 1.f / (1.f + std::exp(-z));
      return g * s * (1.f + z * (1.f - s));
    }
    default: {
      if (z > 20.f) return g;
      const float e = std::exp(z);
      return g * e / (e + 1.f);
    }
  }
}

}  // namespace field
}  // namespace lrm_fast
