// Fused CPU triplane field: bilinear sampling of the 3 planes + aggregation + the NeRF MLP, one
// block of points at a time, so no [B, 3, C, N] feature tensor or per-layer [N, hidden]
// activations are ever materialized (the reference's grid_sample + copies + relu + addmm).
// Threads over blocks of points (at::parallel_for); each block's features and hidden
// activations live in a small thread-local buffer that stays in L1/L2. Forward only: the
// Python side (lrm_fast/ops/triplane_mlp.py) refuses calls that need gradients.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "checks.h"
#include "triplane_field.h"

namespace lrm_fast {

namespace {

constexpr int64_t kBlock = 64;  // points per block: 64 x 3C floats of features fit in L1/L2

// Activations are stored feature-major within a block: x[k * kBlock + p] is feature k of point p,
// so every loop below runs over the kBlock points of a block (contiguous, a compile-time trip
// count) and vectorizes whatever the layer widths are (the tiny preset's are 16 and 4, too
// narrow to vectorize over outputs). Tail blocks compute on stale lanes and never store them.
// y[o, :] = b[o] + sum_k W[o, k] x[k, :], W [out, in] row-major (nn.Linear's layout).
// Three builds chosen at run time, since the extension is compiled without -march: AVX-512 and
// AVX2 with fused multiply-adds (like MKL's sgemm in the reference), and a plain SSE2 one. The
// extension's -ffp-contract=off is for the ray/box math; here an FMA only changes the rounding
// of a dot product, within the tests' tolerance of the reference's matmul.
#define LRM_DENSE_BODY(MADD)                                                               \
  for (int64_t o = 0; o < out; ++o) {                                                      \
    float acc[kBlock];                                                                     \
    for (int64_t p = 0; p < kBlock; ++p) acc[p] = 0.f;                                     \
    const float* __restrict__ wr = w + o * in;                                             \
    for (int64_t k = 0; k < in; ++k) {                                                     \
      const float wk = wr[k];                                                              \
      const float* __restrict__ xk = x + k * kBlock;                                       \
      for (int64_t p = 0; p < kBlock; ++p) acc[p] = MADD(xk[p], wk, acc[p]);               \
    }                                                                                      \
    const float bo = b[o];                                                                 \
    float* __restrict__ yo = y + o * kBlock;                                               \
    for (int64_t p = 0; p < kBlock; ++p) yo[p] = acc[p] + bo; /* addmm adds bias last */   \
  }

#define LRM_MADD_PLAIN(a, b, c) ((c) + (a) * (b))
#define LRM_MADD_FMA(a, b, c) __builtin_fmaf((a), (b), (c))

__attribute__((target("avx512f,avx2,fma")))
void dense_block_avx512(const float* __restrict__ x, int64_t in, const float* __restrict__ w,
                        const float* __restrict__ b, int64_t out, float* __restrict__ y) {
  LRM_DENSE_BODY(LRM_MADD_FMA)
}

__attribute__((target("avx2,fma")))
void dense_block_avx2(const float* __restrict__ x, int64_t in, const float* __restrict__ w,
                      const float* __restrict__ b, int64_t out, float* __restrict__ y) {
  LRM_DENSE_BODY(LRM_MADD_FMA)
}

void dense_block_plain(const float* __restrict__ x, int64_t in, const float* __restrict__ w,
                       const float* __restrict__ b, int64_t out, float* __restrict__ y) {
  LRM_DENSE_BODY(LRM_MADD_PLAIN)
}

using DenseFn = void (*)(const float*, int64_t, const float*, const float*, int64_t, float*);

DenseFn pick_dense() {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma")) return &dense_block_avx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return &dense_block_avx2;
  return &dense_block_plain;
}

const DenseFn dense_block = pick_dense();

__attribute__((target_clones("avx512f", "avx2", "default")))
void relu_block(float* __restrict__ y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = y[i] > 0.f ? y[i] : 0.f;
}

void activate_block(float* y, int64_t n, int act) {
  if (act == field::kRelu) {
    relu_block(y, n);
  } else {
    for (int64_t i = 0; i < n; ++i) y[i] = field::activate(y[i], act);
  }
}

// Features of the nb points of a block -> x [in0, kBlock] (feature-major). CC: the channel count
// when known at compile time (0 = runtime C).
template <int CC>
__attribute__((always_inline)) inline void features_impl(const float* __restrict__ planes_b, int64_t plane_stride, const float* __restrict__ pts,
                          int64_t nb, int64_t C_rt, int64_t H, int64_t W, int aggregate, float* __restrict__ feat,
                          float* __restrict__ x, const float* __restrict__ zeros) {
  const int64_t C = CC > 0 ? CC : C_rt;
  for (int64_t p = 0; p < nb; ++p) {
    const float* q = pts + p * 3;
    for (int pi = 0; pi < 3; ++pi) {
      const field::Taps t = field::bilinear_taps(q[field::kPlaneU[pi]], q[field::kPlaneV[pi]], H, W);
      field::gather<CC>(planes_b + pi * plane_stride, t, C, feat + pi * C, zeros);
    }
    float* xp = x + p;
    if (aggregate == field::kConcat) {
      for (int64_t k = 0; k < 3 * C; ++k) xp[k * kBlock] = feat[k];
    } else {
      for (int64_t c = 0; c < C; ++c) {
        const float s = feat[c] + feat[C + c] + feat[2 * C + c];  // feats.sum(1): f0 + f1 + f2
        xp[c * kBlock] = aggregate == field::kMean ? s / 3.f : s;
      }
    }
  }
}

// Own target clones so floor() and the C-vector loops get AVX2/AVX-512 code too.
__attribute__((target_clones("avx512f", "avx2", "default")))
void features_block(const float* planes_b, int64_t plane_stride, const float* pts, int64_t nb, int64_t C,
                    int64_t H, int64_t W, int aggregate, float* feat, float* x, const float* zeros) {
  switch (C) {
    case 8: return features_impl<8>(planes_b, plane_stride, pts, nb, C, H, W, aggregate, feat, x, zeros);
    case 16: return features_impl<16>(planes_b, plane_stride, pts, nb, C, H, W, aggregate, feat, x, zeros);
    case 32: return features_impl<32>(planes_b, plane_stride, pts, nb, C, H, W, aggregate, feat, x, zeros);
    case 40: return features_impl<40>(planes_b, plane_stride, pts, nb, C, H, W, aggregate, feat, x, zeros);
    case 48: return features_impl<48>(planes_b, plane_stride, pts, nb, C, H, W, aggregate, feat, x, zeros);
    case 80: return features_impl<80>(planes_b, plane_stride, pts, nb, C, H, W, aggregate, feat, x, zeros);
    default: return features_impl<0>(planes_b, plane_stride, pts, nb, C, H, W, aggregate, feat, x, zeros);
  }
}

void check_field_inputs(const at::Tensor& planes, const at::Tensor& points, at::TensorList weights,
                        at::TensorList biases, int64_t aggregate, int64_t activation) {
  const char* op = "triplane_field_fwd";
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

}  // namespace

at::Tensor triplane_field_fwd_cpu(const at::Tensor& planes_in, const at::Tensor& points_in,
                                  at::TensorList weights, at::TensorList biases, int64_t aggregate,
                                  int64_t activation) {
  check_field_inputs(planes_in, points_in, weights, biases, aggregate, activation);
  const int64_t B = planes_in.size(0), C = planes_in.size(2), H = planes_in.size(3), W = planes_in.size(4);
  const int64_t N = points_in.size(1);
  const int64_t L = int64_t(weights.size());
  // channels-last once per call: one bilinear corner = one contiguous C-vector
  const at::Tensor planes = planes_in.permute({0, 1, 3, 4, 2}).contiguous();  // [B, 3, H, W, C]
  const at::Tensor points = points_in.contiguous();
  std::vector<at::Tensor> wts, bs;
  int64_t widest = aggregate == field::kConcat ? 3 * C : C;
  for (int64_t i = 0; i < L; ++i) {
    wts.push_back(weights[i].contiguous());  // [out, in]
    bs.push_back(biases[i].contiguous());
    widest = std::max(widest, weights[i].size(0));
  }
  const int64_t out_dim = weights[L - 1].size(0);
  auto out = at::empty({B, N, out_dim}, planes_in.options());
  if (B * N == 0) return out;
  const float* pl = planes.data_ptr<float>();
  const float* pts = points.data_ptr<float>();
  float* op = out.data_ptr<float>();
  std::vector<const float*> wp(L), bp(L);
  std::vector<int64_t> ins(L), outs(L);
  for (int64_t i = 0; i < L; ++i) {
    wp[i] = wts[i].data_ptr<float>();
    bp[i] = bs[i].data_ptr<float>();
    ins[i] = wts[i].size(1);
    outs[i] = wts[i].size(0);
  }
  const int64_t plane_stride = H * W * C;
  const int64_t blocks_per_batch = (N + kBlock - 1) / kBlock;
  const int64_t n_blocks = B * blocks_per_batch;
  at::parallel_for(0, n_blocks, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> xa(kBlock * widest, 0.f), xb(kBlock * widest, 0.f), feat(3 * C), zeros(C, 0.f);
    for (int64_t blk = begin; blk < end; ++blk) {
      const int64_t bi = blk / blocks_per_batch;
      const int64_t n0 = (blk % blocks_per_batch) * kBlock;
      const int64_t nb = std::min(kBlock, N - n0);
      const float* planes_b = pl + bi * 3 * plane_stride;
      features_block(planes_b, plane_stride, pts + (bi * N + n0) * 3, nb, C, H, W, int(aggregate), feat.data(),
                     xa.data(), zeros.data());
      float* x = xa.data();
      float* y = xb.data();
      for (int64_t l = 0; l < L; ++l) {
        dense_block(x, ins[l], wp[l], bp[l], outs[l], y);
        if (l < L - 1) activate_block(y, outs[l] * kBlock, int(activation));
        std::swap(x, y);
      }
      // x now holds the last layer [out_dim, kBlock]: transpose the block's valid points out
      float* dst = op + (bi * N + n0) * out_dim;
      for (int64_t p = 0; p < nb; ++p)
        for (int64_t o = 0; o < out_dim; ++o) dst[p * out_dim + o] = x[o * kBlock + p];
    }
  });
  return out;
}

TORCH_LIBRARY_IMPL(lrm_fast, CPU, m) {
  m.impl("triplane_field_fwd", &triplane_field_fwd_cpu);
}

}  // namespace lrm_fast
