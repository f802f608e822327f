// CPU-only, float32: vectorizable versions of the per-ray compositing in composite.h and
// composite_samples.h. Torch-free (the ctest includes it); never included by CUDA code, which
// keeps the scalar LRM_HD functions.
//
// Why: the scalar per-ray walk spends its time in libm expf/log1pf, called one sample at a time
// (3 sigmoids per sample + softplus + exp per interval). Here each ray is first copied into a
// padded buffer (so every vector loop covers whole vectors, with no scalar remainder), then
// processed in chunks of kChunk intervals:
//   1. data-parallel passes compute, for all intervals of the chunk, everything that does not
//      depend on the transmittance (gate, widened sigmoid, activation, e = exp(-sigma delta),
//      alpha, keep) into small SoA buffers, with branch-free exp/log1p written as plain
//      arithmetic + bit casts so that GCC vectorizes the loops (compiled per ISA, see below);
//   2. a scalar scan multiplies out the transmittance T_{k+1} = T_k keep_k, stopping at the
//      early-stop threshold (later chunks are then never computed);
//   3. a vector pass adds the weighted colors/depths/weights of the used intervals into 16
//      lane-wise partial sums.
// The backward computes the per-interval quantities of the used intervals in one vector pass,
// the prefix transmittances T_k and the suffix A_k in two scalar scans, and routes the
// cotangents through the activations into the outputs in a last vector pass.
//
// Numerics vs the scalar float path: exp/log1p are within ~1 ulp (the ctest measures them); the
// backward takes T_k from the forward's own prefix products (the scalar path divides T_final by
// each keep factor in reverse: the same quantity, the prefix is the more accurate); the forward
// sums in lane order; exp flushes results below 1.6e-38 to 0 (expf gives subnormals there).
//
// Vectorization needs -fno-trapping-math in the including translation unit (composite_cpu.cpp
// sets it with a pragma): with GCC's default a select with an FP arm is not if-converted.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "cephes.h"
#include "composite.h"
#include "composite_samples.h"

#if defined(__CUDACC__)
#error "composite_vec_cpu.h is CPU-only; CUDA code uses composite.h / composite_samples.h"
#endif

#define LRM_VEC inline __attribute__((always_inline))
// The data-parallel passes are real functions: GCC vectorizes them reliably only where their
// __restrict__ pointer parameters survive, i.e. not after inlining into the per-ray code.
#define LRM_VEC_PASS inline __attribute__((noinline))

namespace lrm_fast {
namespace vecdata {

// intervals per chunk of the forward (the early stop skips whole chunks)
constexpr int kChunk = 32;
constexpr int kLanes = 16;  // partial sums of the forward (kChunk is a multiple)
static_assert(kChunk % kLanes == 0, "kChunk must be a multiple of kLanes");

LRM_VEC float bits_to_float(int32_t i) {
  float f;
  std::memcpy(&f, &i, sizeof f);
  return f;
}
// Scratch for one ray of composite_samples, in floats: 19 arrays of scratch_stride(S) entries
// (samples, intervals, the backward's two zero sentinels), the padded copy of t and of raw (4x).
// Arrays are a whole number of 16-float vectors apart plus spare vectors: GCC versions some loops
// with a runtime overlap check whose segments extend past n, and arrays packed closer made that
// check fail, silently running the scalar fallback.
constexpr int kSampleArrays = 5;     // g, sr, s0, s1, s2
constexpr int kIntervalArrays = 14;  // r0 r1 r2 x e delta depth alpha keep gsum T va vx w
// samples of the padded copy: the forward gates blocks of kChunk up to one block past the last
// interval, and the vector passes read one past their (16-rounded) end
inline int padded_samples(int64_t S) { return int((S + 2 * kChunk + 15) / 16 * 16); }
inline int64_t scratch_stride(int64_t S) { return padded_samples(S) + 32; }
inline int64_t samples_scratch_floats(int64_t S) {
  return (kSampleArrays + kIntervalArrays + 1 + 4) * scratch_stride(S);
}

struct SampleScratch {
  float *g, *sr, *s0, *s1, *s2, *r0, *r1, *r2, *x, *e, *delta, *depth, *alpha, *keep, *gs, *T, *va, *vx, *w;
  float *tp, *rawp;
  SampleScratch(float* buf, int64_t S) {
    float** arrs[] = {&g,     &sr,   &s0, &s1, &s2, &r0, &r1, &r2, &x,  &e,
                      &delta, &depth, &alpha, &keep, &gs, &T,  &va,  &vx, &w, &tp};
    const int64_t st = scratch_stride(S);
    for (int i = 0; i < kSampleArrays + kIntervalArrays + 1; ++i) *arrs[i] = buf + i * st;
    rawp = buf + (kSampleArrays + kIntervalArrays + 1) * st;
  }
};

constexpr int kPlainArrays = 8;  // e alpha keep gs T va (+2 spare)
inline int64_t plain_scratch_floats(int64_t S) { return kPlainArrays * scratch_stride(S); }

// arguments of composite_samples over a range of rays (float32, contiguous): the rays in either
// layout (composite_samples.h's SampleRays: the dense and the packed ops run the same range
// functions), the background and the early-stop threshold
struct SamplesArgs : SampleRays<float> {
  const float* bg;
  float thresh;
};

// one instantiation per (activation, midpoint), so the inner loops have no per-element branch
#define LRM_ACT_MID(act, mid, CALL) \
  do {                              \
    if ((act) == 0 && (mid)) {      \
      CALL(0, true);                \
    } else if ((act) == 0) {        \
      CALL(0, false);               \
    } else if (mid) {               \
      CALL(1, true);                \
    } else {                        \
      CALL(1, false);               \
    }                               \
  } while (0)

}  // namespace vecdata
}  // namespace lrm_fast

// The math three times, one namespace per ISA, each compiled for its target with a pragma:
//   vec         plain x86-64 (SSE2), plain multiply-adds
//   vec_avx2    AVX2 + FMA
//   vec_avx512  AVX-512 (F/VL/BW/DQ) + FMA
// FMA goes into the polynomials and scans (fewer instructions, and it rounds once, so no less
// accurate); the in-box gate never uses it: it must round like the renderer's torch expression.
// The CPU kernels pick the namespace at load time (composite_cpu.cpp).
#define LRM_VEC_NS vec
#define LRM_MADD(a, b, c) ((a) * (b) + (c))
#include "composite_vec_cpu_impl.h"
#undef LRM_MADD
#undef LRM_VEC_NS

#if defined(__x86_64__) && defined(__GNUC__)
#define LRM_VEC_X86 1  // the AVX2 / AVX-512 compilations exist (elsewhere only the plain one)
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define LRM_VEC_NS vec_avx2
#define LRM_MADD(a, b, c) __builtin_fmaf((a), (b), (c))
#include "composite_vec_cpu_impl.h"
#undef LRM_MADD
#undef LRM_VEC_NS
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")
#define LRM_VEC_NS vec_avx512
#define LRM_MADD(a, b, c) __builtin_fmaf((a), (b), (c))
#include "composite_vec_cpu_impl.h"
#undef LRM_MADD
#undef LRM_VEC_NS
#pragma GCC pop_options
#endif  // x86-64

// NAME(args...) -> the namespace above for ISA `which` (cpu_isa.h's picker; the caller reads it
// once per call, before at::parallel_for, so every thread of a call runs the same build)
#if defined(LRM_VEC_X86)
#define LRM_ISA_CALL(which, NAME, ...)                            \
  do {                                                            \
    switch (which) {                                              \
      case cpu_isa::kAvx512: vec_avx512::NAME(__VA_ARGS__); break;    \
      case cpu_isa::kAvx2: vec_avx2::NAME(__VA_ARGS__); break;        \
      default: vec::NAME(__VA_ARGS__);                            \
    }                                                             \
  } while (0)
#else
#define LRM_ISA_CALL(which, NAME, ...) \
  do {                                 \
    (void)(which);                     \
    vec::NAME(__VA_ARGS__);            \
  } while (0)
#endif
