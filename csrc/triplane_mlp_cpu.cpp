// Fused CPU triplane field: bilinear sampling of the 3 planes + aggregation + the NeRF MLP, one
// block of points at a time, so no [B, 3, C, N] feature tensor or per-layer [N, hidden]
// activations are ever materialized (the reference's grid_sample + copies + relu + addmm).
// Threads over blocks of points (at::parallel_for); each block's features and hidden
// activations live in a small thread-local buffer that stays in L1/L2.
// Backward (triplane_mlp_bwd): the same block forward is recomputed (nothing O(N * hidden) is
// saved between the passes), then back-propagated through the MLP and the bilinear taps; see
// triplane_mlp_bwd_cpu for the race-free accumulation scheme.
#include <ATen/Parallel.h>
#include <immintrin.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <tuple>
#include <vector>

#include "cephes.h"
#include "checks.h"
#include "cpu_isa.h"
#include "triplane_mlp.h"

namespace lrm_fast {

namespace {

constexpr int64_t kBlock = 64;  // points per block: 64 x 3C floats of features fit in L1/L2

// Activations are stored feature-major within a block: x[k * kBlock + p] is feature k of point p,
// so every loop below runs over the kBlock points of a block (contiguous, a compile-time trip
// count) and vectorizes whatever the layer widths are (the tiny preset's are 16 and 4, too
// narrow to vectorize over outputs). Tail blocks compute on zero-feature lanes and never store them.
// y[o, :] = b[o] + sum_k W[o, k] x[k, :], W [out, in] row-major (nn.Linear's layout).
// Two builds of the layer chosen at run time, since the extension is compiled without -march: an
// AVX2 register-tiled one with fused multiply-adds (like MKL's sgemm in the reference) and the
// hidden activation fused into its store, and a plain SSE2 loop. The extension's -ffp-contract=off
// is for the ray/box math; here an FMA only changes the rounding of a dot product, within the
// tests' tolerance of the reference's matmul.
__attribute__((target_clones("avx512f", "avx2", "default")))
void relu_block(const float* z, float* y, int64_t n) {  // y may alias z (the forward's in-place use)
  for (int64_t i = 0; i < n; ++i) y[i] = z[i] > 0.f ? z[i] : 0.f;
}

// y = act(z) elementwise; y == z allowed (the portable build's activation pass)
void activate_block(const float* z, float* y, int64_t n, int act) {
  if (act == field::kRelu) {
    relu_block(z, y, n);
  } else {
    for (int64_t i = 0; i < n; ++i) y[i] = field::activate(z[i], act);
  }
}

// exp(x) on 8 lanes: Cephes' expf (constants: cephes.h; range reduction by ln 2 in two parts),
// within 2 ulp of the exact value like torch's vectorized exp (Sleef, 1 ulp). Beyond +-88.38 it
// saturates to inf / 0 as exp does; NaN lanes stay NaN through the callers' arithmetic.
__attribute__((target("avx2,fma"), always_inline)) inline __m256 exp_avx2(__m256 x) {
  x = _mm256_min_ps(_mm256_set1_ps(88.3762626647949f), x);   // (hi, x): a NaN x passes through
  x = _mm256_max_ps(_mm256_set1_ps(-88.3762626647949f), x);
  __m256 fx = _mm256_floor_ps(_mm256_fmadd_ps(x, _mm256_set1_ps(cephes::kLog2e), _mm256_set1_ps(0.5f)));
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(cephes::kLn2Hi), x);
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-cephes::kLn2Lo), x);
  __m256 y = _mm256_set1_ps(cephes::kExpP0);
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(cephes::kExpP1));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(cephes::kExpP2));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(cephes::kExpP3));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(cephes::kExpP4));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(cephes::kExpP5));
  y = _mm256_fmadd_ps(y, _mm256_mul_ps(x, x), _mm256_add_ps(x, _mm256_set1_ps(1.f)));
  const __m256i n = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvttps_epi32(fx), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(y, _mm256_castsi256_ps(n));
}

// act(z) on 8 lanes for the activations the fused dense kernel applies (relu, silu): the formulas
// of relu_block (a NaN becomes 0, like the portable build) and of torch's silu, z / (1 + exp(-z)).
template <int ACT>
__attribute__((target("avx2,fma"), always_inline)) inline __m256 act_avx2(__m256 z) {
  if (ACT == field::kRelu) return _mm256_max_ps(z, _mm256_setzero_ps());
  if (ACT == field::kSilu) {
    const __m256 e = exp_avx2(_mm256_sub_ps(_mm256_setzero_ps(), z));
    return _mm256_div_ps(z, _mm256_add_ps(_mm256_set1_ps(1.f), e));
  }
  return z;  // kNone: the output layer / the backward's W^T g
}
constexpr int kNone = -1;

// One register tile of the dense layer: pre = W x + b for outputs o0 .. o0 + R - 1 and points
// p0 .. p0 + 15 (two 8-wide vectors), 2R accumulators held in registers over the whole k loop
// (BLIS' 6 x 16 Haswell shape at R = 6: 12 accumulators, 2 point loads and 6 weight broadcasts per
// k). Each accumulator is the same fused multiply-add chain over k = 0 .. in - 1 from 0 as the
// portable loop's, with the bias added last: the bits do not depend on the tile shape. Not
// inlined: its 15 live registers are then all the function has (inlined next to the activation,
// GCC spilled an accumulator to the stack inside the k loop, which made silu layers 2x slower).
template <int R>
__attribute__((target("avx2,fma"), noinline)) void dense_tile_avx2(const float* __restrict__ x, int64_t in,
                                                                  const float* __restrict__ w,
                                                                  const float* __restrict__ b, float* __restrict__ pre) {
  static_assert(R >= 1 && R <= 6, "tile rows");
  // named accumulators, not arrays: GCC kept __m256 arrays in registers but also stored them to the
  // stack at every k in the extension's build
  const __m256 z = _mm256_setzero_ps();
  __m256 l0 = z, h0 = z, l1 = z, h1 = z, l2 = z, h2 = z, l3 = z, h3 = z, l4 = z, h4 = z, l5 = z, h5 = z;
#define LRM_TILE_ROW(r)                                              \
  if constexpr (R > r) {                                             \
    const __m256 wr = _mm256_broadcast_ss(w + r * in + k);           \
    l##r = _mm256_fmadd_ps(xl, wr, l##r);                            \
    h##r = _mm256_fmadd_ps(xh, wr, h##r);                            \
  }
  for (int64_t k = 0; k < in; ++k) {
    const __m256 xl = _mm256_loadu_ps(x + k * kBlock), xh = _mm256_loadu_ps(x + k * kBlock + 8);
    LRM_TILE_ROW(0) LRM_TILE_ROW(1) LRM_TILE_ROW(2) LRM_TILE_ROW(3) LRM_TILE_ROW(4) LRM_TILE_ROW(5)
  }
#undef LRM_TILE_ROW
  const __m256 lo[6] = {l0, l1, l2, l3, l4, l5}, hi[6] = {h0, h1, h2, h3, h4, h5};
  for (int r = 0; r < R; ++r) {
    const __m256 br = _mm256_broadcast_ss(b + r);
    _mm256_storeu_ps(pre + r * kBlock, _mm256_add_ps(lo[r], br));
    _mm256_storeu_ps(pre + r * kBlock + 8, _mm256_add_ps(hi[r], br));
  }
}

// Rows o0 .. o0 + R - 1 of a layer, all kBlock points: the tiles, then y = act(pre) on those
// rows (re-read from L1; pre and y may be one buffer).
template <int R, int ACT>
__attribute__((target("avx2,fma"), always_inline)) inline void dense_rows_avx2(
    const float* __restrict__ x, int64_t in, const float* __restrict__ w, const float* __restrict__ b, int64_t o0,
    float* pre, float* y) {
  for (int64_t p0 = 0; p0 < kBlock; p0 += 16) dense_tile_avx2<R>(x + p0, in, w + o0 * in, b + o0, pre + o0 * kBlock + p0);
  if (ACT == kNone && pre == y) return;
  for (int64_t i = o0 * kBlock; i < (o0 + R) * kBlock; i += 8)
    _mm256_storeu_ps(y + i, act_avx2<ACT>(_mm256_loadu_ps(pre + i)));
}

template <int ACT>
__attribute__((target("avx2,fma"))) void dense_act_avx2(const float* __restrict__ x, int64_t in,
                                                        const float* __restrict__ w, const float* __restrict__ b,
                                                        int64_t out, float* pre, float* y) {
  int64_t o = 0;
  for (; o + 6 <= out; o += 6) dense_rows_avx2<6, ACT>(x, in, w, b, o, pre, y);
  for (; o + 4 <= out; o += 4) dense_rows_avx2<4, ACT>(x, in, w, b, o, pre, y);
  for (; o + 2 <= out; o += 2) dense_rows_avx2<2, ACT>(x, in, w, b, o, pre, y);
  for (; o < out; ++o) dense_rows_avx2<1, ACT>(x, in, w, b, o, pre, y);
}

// The layer kernels: pre[o, :] = b[o] + sum_k W[o, k] x[k, :] and, with act >= 0, y = act(pre)
// (y may be pre: the forward activates in place; with act < 0, y is pre and nothing else is
// written). x, pre and y are [features, kBlock] blocks; W [out, in] row-major (nn.Linear's).
using DenseFn = void (*)(const float*, int64_t, const float*, const float*, int64_t, float*, float*, int);

// AVX2 (also what an AVX-512 CPU runs: this shape is bound by the FMA ports, not the vector width,
// and it is the build the project's CI machines execute): relu and silu fused into the tile's
// store; softplus (not vectorized) is a separate scalar pass.
__attribute__((target("avx2,fma")))
void dense_block_avx2(const float* x, int64_t in, const float* w, const float* b, int64_t out, float* pre, float* y,
                      int act) {
  switch (act) {
    case field::kRelu: return dense_act_avx2<field::kRelu>(x, in, w, b, out, pre, y);
    case field::kSilu: return dense_act_avx2<field::kSilu>(x, in, w, b, out, pre, y);
    default:
      dense_act_avx2<kNone>(x, in, w, b, out, pre, pre);
      if (act >= 0) activate_block(pre, y, out * kBlock, act);
  }
}

// the portable build: one output row at a time, the kBlock points in a plain array (SSE2 by the
// compiler), multiply then add (no FMA), bias last as addmm adds it
void dense_block_plain(const float* __restrict__ x, int64_t in, const float* __restrict__ w,
                       const float* __restrict__ b, int64_t out, float* pre, float* y, int act) {
  for (int64_t o = 0; o < out; ++o) {
    float acc[kBlock];
    for (int64_t p = 0; p < kBlock; ++p) acc[p] = 0.f;
    const float* __restrict__ wr = w + o * in;
    for (int64_t k = 0; k < in; ++k) {
      const float wk = wr[k];
      const float* __restrict__ xk = x + k * kBlock;
      for (int64_t p = 0; p < kBlock; ++p) acc[p] = acc[p] + xk[p] * wk;
    }
    const float bo = b[o];
    float* __restrict__ po = pre + o * kBlock;
    for (int64_t p = 0; p < kBlock; ++p) po[p] = acc[p] + bo;
  }
  if (act >= 0) activate_block(pre, y, out * kBlock, act);
}

// the build each call runs: cpu_isa.h, the extension's one picker (read per call, so
// lrm_fast::cpu_isa(cap) switches builds in-process)
DenseFn dense_fn() {
  return cpu_isa::current() >= cpu_isa::kAvx2 ? &dense_block_avx2 : &dense_block_plain;
}

__attribute__((target_clones("avx512f", "avx2", "default")))
void relu_grad_block(const float* __restrict__ g, const float* __restrict__ z, float* __restrict__ v, int64_t n) {
  for (int64_t i = 0; i < n; ++i) v[i] = z[i] > 0.f ? g[i] : 0.f;
}

// v = g * act'(z) elementwise (z: the pre-activation)
void activate_grad_block(const float* g, const float* z, float* v, int64_t n, int act) {
  if (act == field::kRelu) {
    relu_grad_block(g, z, v, n);
  } else {
    for (int64_t i = 0; i < n; ++i) v[i] = field::activate_grad(g[i], z[i], act);
  }
}

// Weight/bias gradients of one layer for one block, accumulated into a partial sum:
// dW[o, k] += sum_p g[o, p] x[k, p], db[o] += sum_p g[o, p]. g: the layer's output gradient
// [out, kBlock] (feature-major); xt: its input transposed to point-major [kBlock, in_p] (in_p = in
// rounded up to kLanes, zero-padded); dw: [out, in_p] with the same padding. The sum over points
// is a chain of broadcast-FMAs into a tile of dW held in registers: R rows x 16 columns, so R
// independent chains share each load of xt (one chain alone would wait on the FMA latency at
// every point). Written with intrinsics: from plain loops GCC spills one accumulator of the tile
// to the stack (a store/load on the critical path of every point).
constexpr int64_t kLanes = 16;
static_assert(kBlock % kLanes == 0, "block must be a multiple of the lane count");

inline int64_t pad_lanes(int64_t n) { return (n + kLanes - 1) / kLanes * kLanes; }

// db[o] += sum_p g[o, p], in kLanes partial sums folded pairwise
inline void bias_grad(const float* __restrict__ g, int64_t out, float* __restrict__ db) {
  for (int64_t o = 0; o < out; ++o) {
    const float* __restrict__ go = g + o * kBlock;
    float s[kLanes];
    for (int64_t j = 0; j < kLanes; ++j) s[j] = 0.f;
    for (int64_t p = 0; p < kBlock; p += kLanes)
      for (int64_t j = 0; j < kLanes; ++j) s[j] += go[p + j];
    for (int64_t h = kLanes / 2; h > 0; h /= 2)
      for (int64_t j = 0; j < h; ++j) s[j] += s[j + h];
    db[o] += s[0];
  }
}

template <int R>
__attribute__((target("avx512f,avx2,fma"), always_inline)) inline void wgrad_tile_avx512(
    const float* __restrict__ g, const float* __restrict__ xt, int64_t in_p, float* __restrict__ dw) {
  for (int64_t k0 = 0; k0 < in_p; k0 += kLanes) {
    __m512 acc[R];
    for (int r = 0; r < R; ++r) acc[r] = _mm512_loadu_ps(dw + r * in_p + k0);
    for (int64_t p = 0; p < kBlock; ++p) {
      const __m512 x = _mm512_loadu_ps(xt + p * in_p + k0);
      for (int r = 0; r < R; ++r) acc[r] = _mm512_fmadd_ps(x, _mm512_set1_ps(g[r * kBlock + p]), acc[r]);
    }
    for (int r = 0; r < R; ++r) _mm512_storeu_ps(dw + r * in_p + k0, acc[r]);
  }
}

template <int R>
__attribute__((target("avx2,fma"), always_inline)) inline void wgrad_tile_avx2(
    const float* __restrict__ g, const float* __restrict__ xt, int64_t in_p, float* __restrict__ dw) {
  for (int64_t k0 = 0; k0 < in_p; k0 += kLanes) {  // 16 columns = two 8-wide halves per row
    __m256 lo[R], hi[R];
    for (int r = 0; r < R; ++r) {
      lo[r] = _mm256_loadu_ps(dw + r * in_p + k0);
      hi[r] = _mm256_loadu_ps(dw + r * in_p + k0 + 8);
    }
    for (int64_t p = 0; p < kBlock; ++p) {
      const __m256 xl = _mm256_loadu_ps(xt + p * in_p + k0), xh = _mm256_loadu_ps(xt + p * in_p + k0 + 8);
      for (int r = 0; r < R; ++r) {
        const __m256 gr = _mm256_set1_ps(g[r * kBlock + p]);
        lo[r] = _mm256_fmadd_ps(xl, gr, lo[r]);
        hi[r] = _mm256_fmadd_ps(xh, gr, hi[r]);
      }
    }
    for (int r = 0; r < R; ++r) {
      _mm256_storeu_ps(dw + r * in_p + k0, lo[r]);
      _mm256_storeu_ps(dw + r * in_p + k0 + 8, hi[r]);
    }
  }
}

__attribute__((target("avx512f,avx2,fma")))
void wgrad_block_avx512(const float* __restrict__ g, int64_t out, const float* __restrict__ xt, int64_t in_p,
                        float* __restrict__ dw, float* __restrict__ db) {
  bias_grad(g, out, db);
  int64_t o = 0;
  for (; o + 8 <= out; o += 8) wgrad_tile_avx512<8>(g + o * kBlock, xt, in_p, dw + o * in_p);
  for (; o + 4 <= out; o += 4) wgrad_tile_avx512<4>(g + o * kBlock, xt, in_p, dw + o * in_p);
  for (; o < out; ++o) wgrad_tile_avx512<1>(g + o * kBlock, xt, in_p, dw + o * in_p);
}

__attribute__((target("avx2,fma")))
void wgrad_block_avx2(const float* __restrict__ g, int64_t out, const float* __restrict__ xt, int64_t in_p,
                      float* __restrict__ dw, float* __restrict__ db) {
  bias_grad(g, out, db);
  int64_t o = 0;
  for (; o + 4 <= out; o += 4) wgrad_tile_avx2<4>(g + o * kBlock, xt, in_p, dw + o * in_p);
  for (; o < out; ++o) wgrad_tile_avx2<1>(g + o * kBlock, xt, in_p, dw + o * in_p);
}

// portable build: one row at a time, the 16 columns in a plain array (SSE2 by the compiler)
void wgrad_block_plain(const float* __restrict__ g, int64_t out, const float* __restrict__ xt, int64_t in_p,
                       float* __restrict__ dw, float* __restrict__ db) {
  bias_grad(g, out, db);
  for (int64_t o = 0; o < out; ++o) {
    const float* __restrict__ go = g + o * kBlock;
    float* __restrict__ dwo = dw + o * in_p;
    for (int64_t k0 = 0; k0 < in_p; k0 += kLanes) {
      float acc[kLanes];
      for (int64_t j = 0; j < kLanes; ++j) acc[j] = dwo[k0 + j];
      for (int64_t p = 0; p < kBlock; ++p)
        for (int64_t j = 0; j < kLanes; ++j) acc[j] += go[p] * xt[p * in_p + k0 + j];
      for (int64_t j = 0; j < kLanes; ++j) dwo[k0 + j] = acc[j];
    }
  }
}

using WgradFn = void (*)(const float*, int64_t, const float*, int64_t, float*, float*);

WgradFn wgrad_fn() {
  const int isa = cpu_isa::current();
  return isa == cpu_isa::kAvx512 ? &wgrad_block_avx512 : isa == cpu_isa::kAvx2 ? &wgrad_block_avx2 : &wgrad_block_plain;
}

// x [in, kBlock] (feature-major) -> xt [kBlock, in_p] (point-major; columns in..in_p stay zero)
void transpose_block(const float* __restrict__ x, int64_t in, int64_t in_p, float* __restrict__ xt) {
  for (int64_t p = 0; p < kBlock; ++p)  // contiguous stores, strided loads (cheaper than the reverse)
    for (int64_t k = 0; k < in; ++k) xt[p * in_p + k] = x[k * kBlock + p];
}

// Features of the nb points of a block -> x [in0, kBlock] (feature-major). CC: the channel count
// when known at compile time (0 = runtime C). feat: a [kBlock, 3C] scratch buffer: each point's
// features are gathered there point-major (contiguous writes), then the block is transposed into x
// row by row (contiguous stores; the strided loads keep re-reading the same kBlock cache lines).
// Writing each point's features straight into x was 3C strided stores per point, over a block
// larger than L1. Tail lanes (p >= nb) of x get zeros.
// taps: where to keep each point's 3 tap sets for the backward's scatter ([kBlock, 3]), or null.
template <int CC>
__attribute__((always_inline)) inline void features_impl(const float* __restrict__ planes_b, int64_t plane_stride, const float* __restrict__ pts,
                          int64_t nb, int64_t C_rt, int64_t H, int64_t W, int aggregate, float* __restrict__ feat,
                          float* __restrict__ x, const float* __restrict__ zeros, field::Taps* __restrict__ taps) {
  const int64_t C = CC > 0 ? CC : C_rt;
  const int64_t in0 = aggregate == field::kConcat ? 3 * C : C;
  for (int64_t p = 0; p < nb; ++p) {
    const float* q = pts + p * 3;
    float* fp = feat + p * 3 * C;
    for (int pi = 0; pi < 3; ++pi) {
      const field::Taps t = field::bilinear_taps(q[field::kPlaneU[pi]], q[field::kPlaneV[pi]], H, W);
      if (taps) taps[p * 3 + pi] = t;
      field::gather<CC>(planes_b + pi * plane_stride, t, C, fp + pi * C, zeros);
    }
    if (aggregate != field::kConcat) {  // in place: row p's first C values
      for (int64_t c = 0; c < C; ++c) {
        const float s = fp[c] + fp[C + c] + fp[2 * C + c];  // feats.sum(1): f0 + f1 + f2
        fp[c] = aggregate == field::kMean ? s / 3.f : s;
      }
    }
  }
  for (int64_t k = 0; k < in0; ++k) {
    float* __restrict__ xk = x + k * kBlock;
    for (int64_t p = 0; p < nb; ++p) xk[p] = feat[p * 3 * C + k];
    for (int64_t p = nb; p < kBlock; ++p) xk[p] = 0.f;
  }
}

// Own target clones so floor() and the C-vector loops get AVX2/AVX-512 code too.
__attribute__((target_clones("avx512f", "avx2", "default")))
void features_block(const float* planes_b, int64_t plane_stride, const float* pts, int64_t nb, int64_t C,
                    int64_t H, int64_t W, int aggregate, float* feat, float* x, const float* zeros, field::Taps* taps) {
  switch (C) {
    case 8: return features_impl<8>(planes_b, plane_stride, pts, nb, C, H, W, aggregate, feat, x, zeros, taps);
    case 16: return features_impl<16>(planes_b, plane_stride, pts, nb, C, H, W, aggregate, feat, x, zeros, taps);
    case 32: return features_impl<32>(planes_b, plane_stride, pts, nb, C, H, W, aggregate, feat, x, zeros, taps);
    case 40: return features_impl<40>(planes_b, plane_stride, pts, nb, C, H, W, aggregate, feat, x, zeros, taps);
    case 48: return features_impl<48>(planes_b, plane_stride, pts, nb, C, H, W, aggregate, feat, x, zeros, taps);
    case 80: return features_impl<80>(planes_b, plane_stride, pts, nb, C, H, W, aggregate, feat, x, zeros, taps);
    default: return features_impl<0>(planes_b, plane_stride, pts, nb, C, H, W, aggregate, feat, x, zeros, taps);
  }
}

// Backward of features_block: the feature gradients vx [in0, kBlock] (feature-major) of the nb
// points of a block, through the aggregation and each plane's bilinear taps (as features_block
// recorded them), added into grad_b (channels-last [3, H, W, C], this thread's own buffer: no races).
template <int CC>
__attribute__((always_inline)) inline void scatter_impl(float* __restrict__ grad_b, int64_t plane_stride,
                         const field::Taps* __restrict__ taps, int64_t nb, int64_t C_rt, int aggregate,
                         const float* __restrict__ vx, float* __restrict__ vfeat) {
  const int64_t C = CC > 0 ? CC : C_rt;
  for (int64_t p = 0; p < nb; ++p) {
    const float* xp = vx + p;
    if (aggregate == field::kConcat) {
      for (int64_t k = 0; k < 3 * C; ++k) vfeat[k] = xp[k * kBlock];
    } else {  // every plane gets the same gradient: v_x (sum) or v_x / 3 (mean)
      for (int64_t c = 0; c < C; ++c) vfeat[c] = aggregate == field::kMean ? xp[c * kBlock] / 3.f : xp[c * kBlock];
    }
    for (int pi = 0; pi < 3; ++pi)
      field::scatter<CC>(grad_b + pi * plane_stride, taps[p * 3 + pi], C,
                         aggregate == field::kConcat ? vfeat + pi * C : vfeat);
  }
}

__attribute__((target_clones("avx512f", "avx2", "default")))
void scatter_block(float* grad_b, int64_t plane_stride, const field::Taps* taps, int64_t nb, int64_t C,
                   int aggregate, const float* vx, float* vfeat) {
  switch (C) {
    case 8: return scatter_impl<8>(grad_b, plane_stride, taps, nb, C, aggregate, vx, vfeat);
    case 16: return scatter_impl<16>(grad_b, plane_stride, taps, nb, C, aggregate, vx, vfeat);
    case 32: return scatter_impl<32>(grad_b, plane_stride, taps, nb, C, aggregate, vx, vfeat);
    case 40: return scatter_impl<40>(grad_b, plane_stride, taps, nb, C, aggregate, vx, vfeat);
    case 48: return scatter_impl<48>(grad_b, plane_stride, taps, nb, C, aggregate, vx, vfeat);
    case 80: return scatter_impl<80>(grad_b, plane_stride, taps, nb, C, aggregate, vx, vfeat);
    default: return scatter_impl<0>(grad_b, plane_stride, taps, nb, C, aggregate, vx, vfeat);
  }
}

void check_field_inputs(const char* op, const at::Tensor& planes, const at::Tensor& points, at::TensorList weights,
                        at::TensorList biases, int64_t aggregate, int64_t activation) {
  TORCH_CHECK(planes.scalar_type() == at::kFloat, "lrm_fast.", op, ": planes must be float32, got ",
              planes.scalar_type());
  TORCH_CHECK(planes.device().is_cpu(), "lrm_fast.", op, ": planes must be on the CPU, got ", planes.device());
  TORCH_CHECK(planes.dim() == 5 && planes.size(1) == 3, "lrm_fast.", op, ": planes must be [B, 3, C, H, W], got ",
              planes.sizes());
  const int64_t B = planes.size(0), C = planes.size(2);
  check_float(op, "points", points, planes);
  TORCH_CHECK(points.dim() == 3 && points.size(0) == B && points.size(2) == 3, "lrm_fast.", op,
              ": points must be [B, N, 3] with B = ", B, ", got ", points.sizes());
  TORCH_CHECK(aggregate >= 0 && aggregate <= 2, "lrm_fast.", op, ": aggregate code must be 0..2, got ", aggregate);
  TORCH_CHECK(activation >= 0 && activation <= 2, "lrm_fast.", op, ": activation code must be 0..2, got ",
              activation);
  TORCH_CHECK(!weights.empty() && weights.size() == biases.size(), "lrm_fast.", op,
              ": weights and biases must be non-empty lists of the same length, got ", weights.size(), " and ",
              biases.size());
  int64_t in = aggregate == field::kConcat ? 3 * C : C;
  for (size_t i = 0; i < weights.size(); ++i) {
    check_float(op, "weights[i]", weights[i], planes);
    check_float(op, "biases[i]", biases[i], planes);
    TORCH_CHECK(weights[i].dim() == 2 && weights[i].size(1) == in, "lrm_fast.", op, ": weights[", i,
                "] must be [out, ", in, "], got ", weights[i].sizes());
    TORCH_CHECK(biases[i].dim() == 1 && biases[i].size(0) == weights[i].size(0), "lrm_fast.", op, ": biases[", i,
                "] must be [", weights[i].size(0), "], got ", biases[i].sizes());
    in = weights[i].size(0);
  }
}

// One call's validated inputs in the kernels' layouts, and the block geometry. Blocks are
// numbered over (batch item, 64-point block of that item).
struct Field {
  at::Tensor planes_cl, points;         // [B, 3, H, W, C] (one bilinear corner = one C-vector), [B, N, 3]
  std::vector<at::Tensor> w, b;         // contiguous [out, in], [out]
  std::vector<const float*> wp, bp;
  std::vector<int64_t> ins, outs;
  int64_t B, C, H, W, N, L, in0, widest, plane_stride, blocks_per_batch, n_blocks;
  int aggregate, activation;

  Field(const char* op, const at::Tensor& planes, const at::Tensor& points_in, at::TensorList weights,
        at::TensorList biases, int64_t agg, int64_t act) {
    check_field_inputs(op, planes, points_in, weights, biases, agg, act);
    B = planes.size(0), C = planes.size(2), H = planes.size(3), W = planes.size(4);
    N = points_in.size(1);
    L = int64_t(weights.size());
    aggregate = int(agg), activation = int(act);
    planes_cl = planes.permute({0, 1, 3, 4, 2}).contiguous();
    points = points_in.contiguous();
    in0 = widest = aggregate == field::kConcat ? 3 * C : C;
    for (int64_t i = 0; i < L; ++i) {
      w.push_back(weights[i].contiguous());
      b.push_back(biases[i].contiguous());
      wp.push_back(w[i].data_ptr<float>());
      bp.push_back(b[i].data_ptr<float>());
      ins.push_back(w[i].size(1));
      outs.push_back(w[i].size(0));
      widest = std::max(widest, outs[i]);
    }
    plane_stride = H * W * C;
    blocks_per_batch = (N + kBlock - 1) / kBlock;
    n_blocks = B * blocks_per_batch;
  }
  int64_t out_dim() const { return outs[L - 1]; }
  int64_t batch_of(int64_t blk) const { return blk / blocks_per_batch; }
  int64_t first_point(int64_t blk) const { return (blk % blocks_per_batch) * kBlock; }
  int64_t points_in(int64_t blk) const { return std::min(kBlock, N - first_point(blk)); }
  const float* points_of(int64_t blk) const {
    return points.data_ptr<float>() + (batch_of(blk) * N + first_point(blk)) * 3;
  }
};

// The block forward both passes share: features of block blk -> acts[0] [in0, kBlock], then for
// each layer pre[l] = W_l acts[l] + b_l and, for hidden layers, acts[l + 1] = act(pre[l])
// (acts[l + 1] may be pre[l]: in place). pre[L - 1] is the raw output. taps (or null): the
// points' bilinear tap sets, kept for the backward's scatter. Lanes past the block's points get
// zero features (features_block): never stored by the forward; in the backward, whose gradient
// sums run over all lanes, they stay finite and their output gradient is zero, so they add exactly 0.
void block_forward(const Field& f, int64_t blk, float* feat, const float* zeros, float* const* acts,
                   float* const* pre, field::Taps* taps) {
  const int64_t nb = f.points_in(blk);
  const float* planes_b = f.planes_cl.data_ptr<float>() + f.batch_of(blk) * 3 * f.plane_stride;
  features_block(planes_b, f.plane_stride, f.points_of(blk), nb, f.C, f.H, f.W, f.aggregate, feat, acts[0], zeros,
                 taps);
  for (int64_t l = 0; l < f.L; ++l) {
    const bool hidden = l < f.L - 1;
    dense_fn()(acts[l], f.ins[l], f.wp[l], f.bp[l], f.outs[l], pre[l], hidden ? acts[l + 1] : pre[l],
               hidden ? f.activation : kNone);
  }
}

}  // namespace

at::Tensor triplane_mlp_fwd_cpu(const at::Tensor& planes_in, const at::Tensor& points_in,
                                  at::TensorList weights, at::TensorList biases, int64_t aggregate,
                                  int64_t activation) {
  const Field f("triplane_mlp_fwd", planes_in, points_in, weights, biases, aggregate, activation);
  const int64_t out_dim = f.out_dim();
  auto out = at::empty({f.B, f.N, out_dim}, planes_in.options());
  if (f.n_blocks == 0) return out;
  float* op = out.data_ptr<float>();
  at::parallel_for(0, f.n_blocks, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> xa(kBlock * f.widest, 0.f), xb(kBlock * f.widest, 0.f), feat(kBlock * 3 * f.C),
        zeros(f.C, 0.f);
    // two ping-pong buffers: layer l reads one and writes the other, activating in place
    std::vector<float*> acts(f.L), pre(f.L);
    for (int64_t l = 0; l < f.L; ++l) {
      acts[l] = l % 2 == 0 ? xa.data() : xb.data();
      pre[l] = l % 2 == 0 ? xb.data() : xa.data();
    }
    for (int64_t blk = begin; blk < end; ++blk) {
      block_forward(f, blk, feat.data(), zeros.data(), acts.data(), pre.data(), nullptr);
      // transpose the last layer [out_dim, kBlock] of the block's valid points out
      const float* y = pre[f.L - 1];
      const int64_t nb = f.points_in(blk);
      float* dst = op + (f.batch_of(blk) * f.N + f.first_point(blk)) * out_dim;
      for (int64_t p = 0; p < nb; ++p)
        for (int64_t o = 0; o < out_dim; ++o) dst[p * out_dim + o] = y[o * kBlock + p];
    }
  });
  return out;
}

// Gradients of triplane_mlp_fwd: v_out [B, N, out] -> (v_planes [B, 3, C, H, W], v_weights,
// v_biases). No gradient to the points (like the Triton path). Race-free accumulation: the blocks
// are split into S contiguous ranges (S = threads, at most the block count), one per slot. A slot
// owns a weight/bias partial sum and a channels-last plane-gradient buffer for just the batch
// items its range touches (so all slots together hold about B + S plane copies, not S * B); the
// slots are summed at the end in a fixed order. Scatter-adding into private buffers needs no
// atomics and, for a given thread count, gives the same result on every run.
std::tuple<at::Tensor, std::vector<at::Tensor>, std::vector<at::Tensor>> triplane_mlp_bwd_cpu(
    const at::Tensor& v_out_in, const at::Tensor& planes_in, const at::Tensor& points_in, at::TensorList weights,
    at::TensorList biases, int64_t aggregate, int64_t activation) {
  const char* op = "triplane_mlp_bwd";
  const Field f(op, planes_in, points_in, weights, biases, aggregate, activation);
  check_float(op, "v_out", v_out_in, planes_in);
  check_shape(op, "v_out", v_out_in, {f.B, f.N, f.out_dim()});
  const at::Tensor v_out = v_out_in.contiguous();
  const float* vo = v_out.data_ptr<float>();
  const int64_t L = f.L, out_dim = f.out_dim(), bstride = 3 * f.plane_stride;

  // W^T [in, out] per layer: the input gradient W^T g is then the forward's dense kernel
  std::vector<at::Tensor> wt(L);
  std::vector<const float*> wtp(L);
  for (int64_t l = 0; l < L; ++l) {
    wt[l] = f.w[l].t().contiguous();
    wtp[l] = wt[l].data_ptr<float>();
  }
  // all weights ([out, in_p], padded as wgrad_block wants) then all biases in one partial sum
  int64_t wsize = 0;
  std::vector<int64_t> woff(L), boff(L), ins_p(L);
  for (int64_t l = 0; l < L; ++l) ins_p[l] = pad_lanes(f.ins[l]), woff[l] = wsize, wsize += f.outs[l] * ins_p[l];
  for (int64_t l = 0; l < L; ++l) boff[l] = wsize, wsize += f.outs[l];

  const int64_t S = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), f.n_blocks));
  std::vector<std::vector<float>> wpart(S), gpart(S);
  std::vector<int64_t> b_lo(S, 0), b_hi(S, -1);  // batch items [b_lo, b_hi] a slot's buffer covers
  if (f.n_blocks > 0) {
    at::parallel_for(0, S, 1, [&](int64_t s_begin, int64_t s_end) {
      // per-thread block buffers: every layer's input and pre-activation, and two gradient rows
      std::vector<std::vector<float>> act_buf(L), pre_buf(L);
      std::vector<float*> acts(L), pre(L);
      for (int64_t l = 0; l < L; ++l) {
        act_buf[l].assign(f.ins[l] * kBlock, 0.f);
        pre_buf[l].assign(f.outs[l] * kBlock, 0.f);
        acts[l] = act_buf[l].data();
        pre[l] = pre_buf[l].data();
      }
      std::vector<float> g(f.widest * kBlock), vx(f.widest * kBlock), feat(kBlock * 3 * f.C), vfeat(3 * f.C);
      std::vector<float> zeros(f.widest, 0.f), xt(kBlock * pad_lanes(f.widest), 0.f);
      std::vector<field::Taps> taps(kBlock * 3);
      for (int64_t s = s_begin; s < s_end; ++s) {
        const int64_t blk0 = s * f.n_blocks / S, blk1 = (s + 1) * f.n_blocks / S;
        b_lo[s] = f.batch_of(blk0);
        b_hi[s] = f.batch_of(blk1 - 1);
        wpart[s].assign(wsize, 0.f);
        gpart[s].assign((b_hi[s] - b_lo[s] + 1) * bstride, 0.f);
        float* wp = wpart[s].data();
        for (int64_t blk = blk0; blk < blk1; ++blk) {
          block_forward(f, blk, feat.data(), zeros.data(), acts.data(), pre.data(), taps.data());
          // g = v_out of the block, feature-major; zero on the tail lanes
          const int64_t nb = f.points_in(blk);
          const float* src = vo + (f.batch_of(blk) * f.N + f.first_point(blk)) * out_dim;
          for (int64_t o = 0; o < out_dim; ++o) {
            for (int64_t p = 0; p < nb; ++p) g[o * kBlock + p] = src[p * out_dim + o];
            std::fill(g.data() + o * kBlock + nb, g.data() + (o + 1) * kBlock, 0.f);
          }
          for (int64_t l = L - 1; l >= 0; --l) {
            // g: gradient of pre[l] [outs[l], kBlock]
            transpose_block(acts[l], f.ins[l], ins_p[l], xt.data());
            wgrad_fn()(g.data(), f.outs[l], xt.data(), ins_p[l], wp + woff[l], wp + boff[l]);
            dense_fn()(g.data(), f.outs[l], wtp[l], zeros.data(), f.ins[l], vx.data(), vx.data(), kNone);  // v_acts[l] = W^T g
            if (l > 0) activate_grad_block(vx.data(), pre[l - 1], g.data(), f.ins[l] * kBlock, f.activation);
          }
          float* grad_b = gpart[s].data() + (f.batch_of(blk) - b_lo[s]) * bstride;
          scatter_block(grad_b, f.plane_stride, taps.data(), nb, f.C, f.aggregate, vx.data(), vfeat.data());
        }
      }
    });
  }

  // reduce the slots: planes in parallel over elements (slot order fixed), parameters serially
  auto v_planes_cl = at::zeros({f.B, 3, f.H, f.W, f.C}, planes_in.options());
  float* vp = v_planes_cl.data_ptr<float>();
  at::parallel_for(0, f.B * bstride, 1 << 14, [&](int64_t begin, int64_t end) {
    for (int64_t s = 0; s < S; ++s) {
      if (b_hi[s] < b_lo[s]) continue;
      const int64_t lo = std::max(begin, b_lo[s] * bstride), hi = std::min(end, (b_hi[s] + 1) * bstride);
      const float* src = gpart[s].data() - b_lo[s] * bstride;
      for (int64_t i = lo; i < hi; ++i) vp[i] += src[i];
    }
  });
  std::vector<float> wsum(wsize, 0.f);
  for (int64_t s = 0; s < S; ++s)
    for (int64_t i = 0; i < int64_t(wpart[s].size()); ++i) wsum[i] += wpart[s][i];
  std::vector<at::Tensor> v_w(L), v_b(L);
  for (int64_t l = 0; l < L; ++l) {
    v_w[l] = at::empty({f.outs[l], f.ins[l]}, planes_in.options());
    v_b[l] = at::empty({f.outs[l]}, planes_in.options());
    float* dst = v_w[l].data_ptr<float>();
    for (int64_t o = 0; o < f.outs[l]; ++o)  // drop the padding columns
      std::copy_n(wsum.data() + woff[l] + o * ins_p[l], f.ins[l], dst + o * f.ins[l]);
    std::copy(wsum.begin() + boff[l], wsum.begin() + boff[l] + f.outs[l], v_b[l].data_ptr<float>());
  }
  auto v_planes = v_planes_cl.permute({0, 1, 4, 2, 3}).contiguous();  // [B, 3, C, H, W]
  return {v_planes, v_w, v_b};
}

TORCH_LIBRARY_IMPL(lrm_fast, CPU, m) {
  m.impl("triplane_mlp_fwd", &triplane_mlp_fwd_cpu);
  m.impl("triplane_mlp_bwd", &triplane_mlp_bwd_cpu);
}

}  // namespace lrm_fast
