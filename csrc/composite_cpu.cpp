// CPU kernels for alpha compositing: one pass per ray (composite.h), threads over rays. No
// [R, S] intermediate is materialized; the backward reads the inputs again and walks each ray
// in reverse from its stored final transmittance.
//
// float32 runs the vectorized per-ray code of composite_vec_cpu.h (chunked SIMD passes + scalar
// scans), compiled per ISA (AVX-512, AVX2, plain x86-64; picked by cpu_isa.h); float64
// (gradcheck) runs the scalar LRM_HD code that the CUDA kernels share.
// LRM_FAST_COMPOSITE_SCALAR=1 (read at each call) forces the scalar path for float32 too: the
// tests and the benchmark compare the two in one process.
//
// no-trapping-math for this translation unit: with GCC's default -ftrapping-math, a select whose
// arm is an FP operation (x > 20 ? x : softplus(x)) is not if-converted, so the loops of
// composite_vec_cpu.h would not vectorize. It changes no value (only whether FP exception flags
// may be raised speculatively); -ffp-contract=off still holds.
#pragma GCC optimize("no-trapping-math")

#include <cstdlib>
#include <string>
#include <vector>

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include "composite.h"
#include "composite_ops.h"
#include "composite_samples.h"
#include "composite_vec_cpu.h"
#include "cpu_isa.h"

namespace lrm_fast {

namespace {
constexpr int64_t kGrain = 64;

bool use_vector(at::ScalarType dtype) { return cpu_isa::composite_vector(dtype == at::kFloat); }

using vecdata::SamplesArgs;

// the build of composite_vec_cpu.h each call runs: cpu_isa.h, the extension's one picker (detected
// once; LRM_FAST_CPU_ISA or lrm_fast::cpu_isa(cap) select a narrower one)
int isa() { return cpu_isa::current(); }

// NAME(args...) -> the namespace of composite_vec_cpu.h for ISA `which` (read once per call by the
// caller, before at::parallel_for, so every thread of a call runs the same build)
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

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> composite_fwd_cpu(
    const at::Tensor& rgb_in, const at::Tensor& sigma_in, const at::Tensor& deltas_in,
    const at::Tensor& depths_in, const at::Tensor& bg_in, double thresh) {
  check_composite("composite_fwd", rgb_in, sigma_in, deltas_in, depths_in, bg_in);
  const auto rgb = rgb_in.contiguous(), sigma = sigma_in.contiguous(), deltas = deltas_in.contiguous();
  const auto depths = depths_in.contiguous(), bg = bg_in.contiguous();
  const int64_t R = sigma.size(0), S = sigma.size(1);
  auto color = at::empty({R, 3}, sigma.options());
  auto depth = at::empty({R}, sigma.options()), opacity = at::empty({R}, sigma.options());
  auto t_final = at::empty({R}, sigma.options());
  auto n_used = at::empty({R}, sigma.options().dtype(at::kInt));
  if (const int which = isa(); use_vector(sigma.scalar_type())) {
    const float *cp = rgb.data_ptr<float>(), *sp = sigma.data_ptr<float>(), *dp = deltas.data_ptr<float>();
    const float *tp = depths.data_ptr<float>(), *bp = bg.data_ptr<float>();
    float *oc = color.data_ptr<float>(), *od = depth.data_ptr<float>(), *oo = opacity.data_ptr<float>();
    float* ot = t_final.data_ptr<float>();
    int* on = n_used.data_ptr<int>();
    at::parallel_for(0, R, kGrain, [&](int64_t b, int64_t e) {
      std::vector<float> scratch(vecdata::kChunk + 16);
      LRM_ISA_CALL(which, plain_fwd_range, cp, sp, dp, tp, bp, S, float(thresh), b, e, scratch.data(), oc, od, oo,
                   ot, on);
    });
    return {color, depth, opacity, t_final, n_used};
  }
  AT_DISPATCH_FLOATING_TYPES(sigma.scalar_type(), "composite_fwd_cpu", [&] {
    const scalar_t *cp = rgb.data_ptr<scalar_t>(), *sp = sigma.data_ptr<scalar_t>();
    const scalar_t *dp = deltas.data_ptr<scalar_t>(), *tp = depths.data_ptr<scalar_t>();
    const scalar_t* bp = bg.data_ptr<scalar_t>();
    scalar_t *oc = color.data_ptr<scalar_t>(), *od = depth.data_ptr<scalar_t>();
    scalar_t *oo = opacity.data_ptr<scalar_t>(), *ot = t_final.data_ptr<scalar_t>();
    int* on = n_used.data_ptr<int>();
    at::parallel_for(0, R, kGrain, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i)
        on[i] = composite_forward_ray<scalar_t>(cp + i * S * 3, sp + i * S, dp + i * S, tp + i * S, bp + 3 * i,
                                                int(S), scalar_t(thresh), oc + 3 * i, od + i, oo + i, ot + i);
    });
  });
  return {color, depth, opacity, t_final, n_used};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> composite_bwd_cpu(
    const at::Tensor& v_color_in, const at::Tensor& v_depth_in, const at::Tensor& v_opacity_in,
    const at::Tensor& rgb_in, const at::Tensor& sigma_in, const at::Tensor& deltas_in,
    const at::Tensor& depths_in, const at::Tensor& bg_in, const at::Tensor& depth_in,
    const at::Tensor& opacity_in, const at::Tensor& t_final_in, const at::Tensor& n_used_in) {
  check_composite("composite_bwd", rgb_in, sigma_in, deltas_in, depths_in, bg_in);
  const int64_t R = sigma_in.size(0), S = sigma_in.size(1);
  check_composite_grads("composite_bwd", v_color_in, &v_depth_in, &v_opacity_in, n_used_in, sigma_in, R);
  const auto rgb = rgb_in.contiguous(), sigma = sigma_in.contiguous(), deltas = deltas_in.contiguous();
  const auto depths = depths_in.contiguous(), bg = bg_in.contiguous();
  const auto v_color = v_color_in.contiguous(), v_depth = v_depth_in.contiguous();
  const auto v_opacity = v_opacity_in.contiguous(), depth = depth_in.contiguous();
  const auto opacity = opacity_in.contiguous(), t_final = t_final_in.contiguous();
  const auto n_used = n_used_in.contiguous();
  auto v_rgb = at::empty({R, S, 3}, sigma.options());
  auto v_sigma = at::empty({R, S}, sigma.options());
  auto v_bg = at::empty({R, 3}, sigma.options());
  if (const int which = isa(); use_vector(sigma.scalar_type())) {
    const float *cp = rgb.data_ptr<float>(), *sp = sigma.data_ptr<float>(), *dp = deltas.data_ptr<float>();
    const float *tp = depths.data_ptr<float>(), *bp = bg.data_ptr<float>();
    const float *vc = v_color.data_ptr<float>(), *vd = v_depth.data_ptr<float>(), *vo = v_opacity.data_ptr<float>();
    const float *dep = depth.data_ptr<float>(), *op = opacity.data_ptr<float>();
    const int* nu = n_used.data_ptr<int>();
    float *g_rgb = v_rgb.data_ptr<float>(), *g_sig = v_sigma.data_ptr<float>(), *g_bg = v_bg.data_ptr<float>();
    at::parallel_for(0, R, kGrain, [&](int64_t b, int64_t e) {
      std::vector<float> scratch(vecdata::plain_scratch_floats(S));
      LRM_ISA_CALL(which, plain_bwd_range, cp, sp, dp, tp, bp, S, b, e, scratch.data(), nu, op, dep, vc, vd, vo,
                   g_rgb, g_sig, g_bg);
    });
    return {v_rgb, v_sigma, v_bg};
  }
  AT_DISPATCH_FLOATING_TYPES(sigma.scalar_type(), "composite_bwd_cpu", [&] {
    const scalar_t *cp = rgb.data_ptr<scalar_t>(), *sp = sigma.data_ptr<scalar_t>();
    const scalar_t *dp = deltas.data_ptr<scalar_t>(), *tp = depths.data_ptr<scalar_t>();
    const scalar_t* bp = bg.data_ptr<scalar_t>();
    const scalar_t *vc = v_color.data_ptr<scalar_t>(), *vd = v_depth.data_ptr<scalar_t>();
    const scalar_t *vo = v_opacity.data_ptr<scalar_t>(), *dep = depth.data_ptr<scalar_t>();
    const scalar_t *op = opacity.data_ptr<scalar_t>(), *tf = t_final.data_ptr<scalar_t>();
    const int* nu = n_used.data_ptr<int>();
    scalar_t *g_rgb = v_rgb.data_ptr<scalar_t>(), *g_sig = v_sigma.data_ptr<scalar_t>();
    scalar_t* g_bg = v_bg.data_ptr<scalar_t>();
    at::parallel_for(0, R, kGrain, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i)
        composite_backward_ray<scalar_t>(cp + i * S * 3, sp + i * S, dp + i * S, tp + i * S, bp + 3 * i, int(S),
                                         nu[i], op[i], dep[i], tf[i], vc + 3 * i, vd[i], vo[i], g_rgb + i * S * 3,
                                         g_sig + i * S, g_bg + 3 * i);
    });
  });
  return {v_rgb, v_sigma, v_bg};
}

at::Tensor composite_weights_cpu(const at::Tensor& sigma_in, const at::Tensor& deltas_in) {
  check_composite_weights(sigma_in, deltas_in);
  const auto sigma = sigma_in.contiguous(), deltas = deltas_in.contiguous();
  const int64_t R = sigma.size(0), S = sigma.size(1);
  auto w = at::empty({R, S}, sigma.options());
  if (const int which = isa(); use_vector(sigma.scalar_type())) {
    const float *sp = sigma.data_ptr<float>(), *dp = deltas.data_ptr<float>();
    float* wp = w.data_ptr<float>();
    at::parallel_for(0, R, kGrain,
                     [&](int64_t b, int64_t e) { LRM_ISA_CALL(which, plain_weights_range, sp, dp, S, b, e, wp); });
    return w;
  }
  AT_DISPATCH_FLOATING_TYPES(sigma.scalar_type(), "composite_weights_cpu", [&] {
    const scalar_t *sp = sigma.data_ptr<scalar_t>(), *dp = deltas.data_ptr<scalar_t>();
    scalar_t* wp = w.data_ptr<scalar_t>();
    at::parallel_for(0, R, kGrain, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) composite_weights_ray<scalar_t>(sp + i * S, dp + i * S, int(S), wp + i * S);
    });
  });
  return w;
}

namespace {
template <typename T>
SampleIntervals<T> make_iv(const T* raw, const T* t, const T* o, const T* d, int64_t i, int64_t S, double bmin,
                           double bmax, double bias, int64_t act, bool midpoint, T* v_raw) {
  return SampleIntervals<T>{raw + i * S * 4, t + i * S, o + 3 * i, d + 3 * i, T(bmin), T(bmax), T(bias),
                            int(act), midpoint, v_raw ? v_raw + i * S * 4 : nullptr};
}
}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> composite_samples_fwd_cpu(
    const at::Tensor& raw_in, const at::Tensor& t_in, const at::Tensor& o_in, const at::Tensor& d_in,
    const at::Tensor& bg_in, double bmin, double bmax, double bias, int64_t act, bool midpoint, double thresh) {
  check_composite_samples("composite_samples_fwd", raw_in, t_in, o_in, d_in, &bg_in);
  const auto raw = raw_in.contiguous(), t = t_in.contiguous(), o = o_in.contiguous(), d = d_in.contiguous();
  const auto bg = bg_in.contiguous();
  const int64_t R = t.size(0), S = t.size(1);
  auto color = at::empty({R, 3}, t.options());
  auto depth = at::empty({R}, t.options()), opacity = at::empty({R}, t.options());
  auto t_final = at::empty({R}, t.options());
  auto n_used = at::empty({R}, t.options().dtype(at::kInt));
  if (const int which = isa(); use_vector(t.scalar_type())) {
    const SamplesArgs a{raw.data_ptr<float>(), t.data_ptr<float>(), o.data_ptr<float>(), d.data_ptr<float>(),
                        bg.data_ptr<float>(), float(bmin), float(bmax), float(bias), float(thresh), int(act),
                        midpoint, S};
    float *oc = color.data_ptr<float>(), *od = depth.data_ptr<float>(), *oo = opacity.data_ptr<float>();
    float* ot = t_final.data_ptr<float>();
    int* on = n_used.data_ptr<int>();
    at::parallel_for(0, R, kGrain, [&](int64_t b, int64_t e) {
      std::vector<float> scratch(vecdata::samples_scratch_floats(S));
      LRM_ISA_CALL(which, samples_fwd_range, a, b, e, scratch.data(), oc, od, oo, ot, on);
    });
    return {color, depth, opacity, t_final, n_used};
  }
  AT_DISPATCH_FLOATING_TYPES(t.scalar_type(), "composite_samples_fwd_cpu", [&] {
    const scalar_t *rp = raw.data_ptr<scalar_t>(), *tp = t.data_ptr<scalar_t>();
    const scalar_t *op = o.data_ptr<scalar_t>(), *dp = d.data_ptr<scalar_t>(), *bp = bg.data_ptr<scalar_t>();
    scalar_t *oc = color.data_ptr<scalar_t>(), *od = depth.data_ptr<scalar_t>();
    scalar_t *oo = opacity.data_ptr<scalar_t>(), *ot = t_final.data_ptr<scalar_t>();
    int* on = n_used.data_ptr<int>();
    at::parallel_for(0, R, kGrain, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        const auto iv = make_iv<scalar_t>(rp, tp, op, dp, i, S, bmin, bmax, bias, act, midpoint, nullptr);
        on[i] = composite_samples_forward_ray<scalar_t>(iv, int(S), bp + 3 * i, scalar_t(thresh), oc + 3 * i,
                                                        od + i, oo + i, ot + i);
      }
    });
  });
  return {color, depth, opacity, t_final, n_used};
}

std::tuple<at::Tensor, at::Tensor> composite_samples_bwd_cpu(
    const at::Tensor& v_color_in, const at::Tensor& v_depth_in, const at::Tensor& v_opacity_in,
    const at::Tensor& raw_in, const at::Tensor& t_in, const at::Tensor& o_in, const at::Tensor& d_in,
    const at::Tensor& bg_in, double bmin, double bmax, double bias, int64_t act, bool midpoint,
    const at::Tensor& depth_in, const at::Tensor& opacity_in, const at::Tensor& t_final_in,
    const at::Tensor& n_used_in) {
  check_composite_samples("composite_samples_bwd", raw_in, t_in, o_in, d_in, &bg_in);
  const int64_t R = t_in.size(0), S = t_in.size(1);
  check_composite_grads("composite_samples_bwd", v_color_in, &v_depth_in, &v_opacity_in, n_used_in, t_in, R);
  const auto raw = raw_in.contiguous(), t = t_in.contiguous(), o = o_in.contiguous(), d = d_in.contiguous();
  const auto bg = bg_in.contiguous(), v_color = v_color_in.contiguous(), v_depth = v_depth_in.contiguous();
  const auto v_opacity = v_opacity_in.contiguous(), depth = depth_in.contiguous();
  const auto opacity = opacity_in.contiguous(), t_final = t_final_in.contiguous(), n_used = n_used_in.contiguous();
  auto v_bg = at::empty({R, 3}, t.options());
  if (const int which = isa(); use_vector(t.scalar_type())) {
    auto v_raw = at::empty({R, S, 4}, t.options());  // the vector path writes every entry
    const SamplesArgs a{raw.data_ptr<float>(), t.data_ptr<float>(), o.data_ptr<float>(), d.data_ptr<float>(),
                        bg.data_ptr<float>(), float(bmin), float(bmax), float(bias), 0.0f, int(act), midpoint, S};
    const float *vc = v_color.data_ptr<float>(), *vd = v_depth.data_ptr<float>(), *vo = v_opacity.data_ptr<float>();
    const float *dep = depth.data_ptr<float>(), *opa = opacity.data_ptr<float>();
    const int* nu = n_used.data_ptr<int>();
    float *g_raw = v_raw.data_ptr<float>(), *g_bg = v_bg.data_ptr<float>();
    at::parallel_for(0, R, kGrain, [&](int64_t b, int64_t e) {
      std::vector<float> scratch(vecdata::samples_scratch_floats(S));
      LRM_ISA_CALL(which, samples_bwd_range, a, b, e, scratch.data(), vc, vd, vo, dep, opa, nu, g_raw, g_bg);
    });
    return {v_raw, v_bg};
  }
  auto v_raw = at::zeros({R, S, 4}, t.options());  // the scalar walk accumulates into it
  AT_DISPATCH_FLOATING_TYPES(t.scalar_type(), "composite_samples_bwd_cpu", [&] {
    const scalar_t *rp = raw.data_ptr<scalar_t>(), *tp = t.data_ptr<scalar_t>();
    const scalar_t *op = o.data_ptr<scalar_t>(), *dp = d.data_ptr<scalar_t>(), *bp = bg.data_ptr<scalar_t>();
    const scalar_t *vc = v_color.data_ptr<scalar_t>(), *vd = v_depth.data_ptr<scalar_t>();
    const scalar_t *vo = v_opacity.data_ptr<scalar_t>(), *dep = depth.data_ptr<scalar_t>();
    const scalar_t *opa = opacity.data_ptr<scalar_t>(), *tf = t_final.data_ptr<scalar_t>();
    const int* nu = n_used.data_ptr<int>();
    scalar_t *g_raw = v_raw.data_ptr<scalar_t>(), *g_bg = v_bg.data_ptr<scalar_t>();
    at::parallel_for(0, R, kGrain, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        auto iv = make_iv<scalar_t>(rp, tp, op, dp, i, S, bmin, bmax, bias, act, midpoint, g_raw);
        composite_samples_backward_ray<scalar_t>(iv, int(S), bp + 3 * i, nu[i], opa[i], dep[i], tf[i], vc + 3 * i,
                                                 vd[i], vo[i], g_bg + 3 * i);
      }
    });
  });
  return {v_raw, v_bg};
}

at::Tensor composite_samples_weights_cpu(const at::Tensor& raw_in, const at::Tensor& t_in, const at::Tensor& o_in,
                                         const at::Tensor& d_in, double bmin, double bmax, double bias, int64_t act,
                                         bool midpoint) {
  check_composite_samples("composite_samples_weights", raw_in, t_in, o_in, d_in, nullptr);
  const auto raw = raw_in.contiguous(), t = t_in.contiguous(), o = o_in.contiguous(), d = d_in.contiguous();
  const int64_t R = t.size(0), S = t.size(1);
  auto w = at::empty({R, S > 0 ? S - 1 : 0}, t.options());
  if (const int which = isa(); use_vector(t.scalar_type())) {
    const SamplesArgs a{raw.data_ptr<float>(), t.data_ptr<float>(), o.data_ptr<float>(), d.data_ptr<float>(),
                        nullptr, float(bmin), float(bmax), float(bias), 0.0f, int(act), midpoint, S};
    float* wp = w.data_ptr<float>();
    at::parallel_for(0, R, kGrain, [&](int64_t b, int64_t e) {
      std::vector<float> scratch(vecdata::samples_scratch_floats(S));
      LRM_ISA_CALL(which, samples_weights_range, a, b, e, scratch.data(), wp);
    });
    return w;
  }
  AT_DISPATCH_FLOATING_TYPES(t.scalar_type(), "composite_samples_weights_cpu", [&] {
    const scalar_t *rp = raw.data_ptr<scalar_t>(), *tp = t.data_ptr<scalar_t>();
    const scalar_t *op = o.data_ptr<scalar_t>(), *dp = d.data_ptr<scalar_t>();
    scalar_t* wp = w.data_ptr<scalar_t>();
    at::parallel_for(0, R, kGrain, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        const auto iv = make_iv<scalar_t>(rp, tp, op, dp, i, S, bmin, bmax, bias, act, midpoint, nullptr);
        composite_samples_weights_ray<scalar_t>(iv, int(S), wp + i * (S > 0 ? S - 1 : 0));
      }
    });
  });
  return w;
}

TORCH_LIBRARY_IMPL(lrm_fast, CPU, m) {
  m.impl("composite_samples_fwd", &composite_samples_fwd_cpu);
  m.impl("composite_samples_bwd", &composite_samples_bwd_cpu);
  m.impl("composite_samples_weights", &composite_samples_weights_cpu);
  m.impl("composite_fwd", &composite_fwd_cpu);
  m.impl("composite_bwd", &composite_bwd_cpu);
  m.impl("composite_weights", &composite_weights_cpu);
}

}  // namespace lrm_fast
