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

#include <algorithm>
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
}  // namespace

// the plain op's bodies (entries: composite_ops.h)
void composite_fwd_body(OnCpu, const at::Tensor& rgb, const at::Tensor& sigma, const at::Tensor& deltas,
                        const at::Tensor& depths, const at::Tensor& bg, double thresh, at::Tensor& color,
                        at::Tensor& depth, at::Tensor& opacity, at::Tensor& t_final, at::Tensor& n_used) {
  const int64_t R = sigma.size(0), S = sigma.size(1);
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
    return;
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
}

void composite_bwd_body(OnCpu, const at::Tensor& v_color, const at::Tensor& v_depth, const at::Tensor& v_opacity,
                        const at::Tensor& rgb, const at::Tensor& sigma, const at::Tensor& deltas,
                        const at::Tensor& depths, const at::Tensor& bg, const at::Tensor& depth,
                        const at::Tensor& opacity, const at::Tensor& t_final, const at::Tensor& n_used,
                        at::Tensor& v_rgb, at::Tensor& v_sigma, at::Tensor& v_bg) {
  const int64_t R = sigma.size(0), S = sigma.size(1);
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
    return;
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
}

void composite_weights_body(OnCpu, const at::Tensor& sigma, const at::Tensor& deltas, at::Tensor& w) {
  const int64_t R = sigma.size(0), S = sigma.size(1);
  if (const int which = isa(); use_vector(sigma.scalar_type())) {
    const float *sp = sigma.data_ptr<float>(), *dp = deltas.data_ptr<float>();
    float* wp = w.data_ptr<float>();
    at::parallel_for(0, R, kGrain,
                     [&](int64_t b, int64_t e) { LRM_ISA_CALL(which, plain_weights_range, sp, dp, S, b, e, wp); });
    return;
  }
  AT_DISPATCH_FLOATING_TYPES(sigma.scalar_type(), "composite_weights_cpu", [&] {
    const scalar_t *sp = sigma.data_ptr<scalar_t>(), *dp = deltas.data_ptr<scalar_t>();
    scalar_t* wp = w.data_ptr<scalar_t>();
    at::parallel_for(0, R, kGrain, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) composite_weights_ray<scalar_t>(sp + i * S, dp + i * S, int(S), wp + i * S);
    });
  });
}

// ---------------------------------------------------------------------------------------------
// composite_samples, dense and packed (the entries: composite_ops.h)

namespace {
// the largest sample count of one ray (sizes the per-thread scratch of the vector code)
int64_t max_count(const int64_t* off, int64_t R) {
  int64_t m = 0;
  for (int64_t i = 0; i < R; ++i) m = std::max(m, off[i + 1] - off[i]);
  return m;
}

template <typename T>
SampleRays<T> sample_rays(const at::Tensor& raw, const at::Tensor& t, const at::Tensor* off, const at::Tensor& o,
                          const at::Tensor& d, const SampleParams& p) {
  const int64_t* offp = off ? off->data_ptr<int64_t>() : nullptr;
  const int64_t S = off ? max_count(offp, off->size(0) - 1) : t.size(1);
  return SampleRays<T>{raw.data_ptr<T>(), t.data_ptr<T>(), o.data_ptr<T>(), d.data_ptr<T>(), offp, S, T(p.bmin),
                       T(p.bmax), T(p.bias), int(p.act), p.midpoint};
}

SamplesArgs vector_args(const at::Tensor& raw, const at::Tensor& t, const at::Tensor* off, const at::Tensor& o,
                        const at::Tensor& d, const at::Tensor* bg, const SampleParams& p, double thresh) {
  return SamplesArgs{sample_rays<float>(raw, t, off, o, d, p), bg ? bg->data_ptr<float>() : nullptr, float(thresh)};
}
}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> composite_samples_fwd_rays(
    OnCpu, const at::Tensor& raw_in, const at::Tensor& t_in, const at::Tensor* off, const at::Tensor& o_in,
    const at::Tensor& d_in, const at::Tensor& bg_in, const SampleParams& p, double thresh) {
  const auto raw = raw_in.contiguous(), t = t_in.contiguous(), o = o_in.contiguous(), d = d_in.contiguous();
  const auto bg = bg_in.contiguous();
  const int64_t R = o.size(0);
  auto color = at::empty({R, 3}, t.options());
  auto depth = at::empty({R}, t.options()), opacity = at::empty({R}, t.options());
  auto t_final = at::empty({R}, t.options());
  auto n_used = at::empty({R}, t.options().dtype(at::kInt));
  if (const int which = isa(); use_vector(t.scalar_type())) {
    const SamplesArgs a = vector_args(raw, t, off, o, d, &bg, p, thresh);
    float *oc = color.data_ptr<float>(), *od = depth.data_ptr<float>(), *oo = opacity.data_ptr<float>();
    float* ot = t_final.data_ptr<float>();
    int* on = n_used.data_ptr<int>();
    at::parallel_for(0, R, kGrain, [&](int64_t b, int64_t e) {
      std::vector<float> scratch(vecdata::samples_scratch_floats(a.S));
      LRM_ISA_CALL(which, samples_fwd_range, a, b, e, scratch.data(), oc, od, oo, ot, on);
    });
    return {color, depth, opacity, t_final, n_used};
  }
  AT_DISPATCH_FLOATING_TYPES(t.scalar_type(), "composite_samples_fwd_cpu", [&] {
    const auto rays = sample_rays<scalar_t>(raw, t, off, o, d, p);
    const scalar_t* bp = bg.data_ptr<scalar_t>();
    scalar_t *oc = color.data_ptr<scalar_t>(), *od = depth.data_ptr<scalar_t>();
    scalar_t *oo = opacity.data_ptr<scalar_t>(), *ot = t_final.data_ptr<scalar_t>();
    int* on = n_used.data_ptr<int>();
    at::parallel_for(0, R, kGrain, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) on[i] = rays.forward(i, bp, scalar_t(thresh), oc, od, oo, ot);
    });
  });
  return {color, depth, opacity, t_final, n_used};
}

std::tuple<at::Tensor, at::Tensor> composite_samples_bwd_rays(
    OnCpu, const at::Tensor& v_color_in, const at::Tensor& v_depth_in, const at::Tensor& v_opacity_in,
    const at::Tensor& raw_in, const at::Tensor& t_in, const at::Tensor* off, const at::Tensor& o_in,
    const at::Tensor& d_in, const at::Tensor& bg_in, const SampleParams& p, const at::Tensor& depth_in,
    const at::Tensor& opacity_in, const at::Tensor& t_final_in, const at::Tensor& n_used_in) {
  const auto raw = raw_in.contiguous(), t = t_in.contiguous(), o = o_in.contiguous(), d = d_in.contiguous();
  const auto bg = bg_in.contiguous(), v_color = v_color_in.contiguous();
  const auto v_depth = v_depth_in.to(t.scalar_type()).contiguous();
  const auto v_opacity = v_opacity_in.to(t.scalar_type()).contiguous(), depth = depth_in.contiguous();
  const auto opacity = opacity_in.contiguous(), t_final = t_final_in.contiguous(), n_used = n_used_in.contiguous();
  const int64_t R = o.size(0);
  auto v_bg = at::empty({R, 3}, t.options());
  if (const int which = isa(); use_vector(t.scalar_type())) {
    auto v_raw = at::empty(raw.sizes(), t.options());  // the vector path writes every entry
    const SamplesArgs a = vector_args(raw, t, off, o, d, &bg, p, 0.0);
    const float *vc = v_color.data_ptr<float>(), *vd = v_depth.data_ptr<float>(), *vo = v_opacity.data_ptr<float>();
    const float *dep = depth.data_ptr<float>(), *opa = opacity.data_ptr<float>();
    const int* nu = n_used.data_ptr<int>();
    float *g_raw = v_raw.data_ptr<float>(), *g_bg = v_bg.data_ptr<float>();
    at::parallel_for(0, R, kGrain, [&](int64_t b, int64_t e) {
      std::vector<float> scratch(vecdata::samples_scratch_floats(a.S));
      LRM_ISA_CALL(which, samples_bwd_range, a, b, e, scratch.data(), vc, vd, vo, dep, opa, nu, g_raw, g_bg);
    });
    return {v_raw, v_bg};
  }
  auto v_raw = at::zeros(raw.sizes(), t.options());  // the scalar walk accumulates into it
  AT_DISPATCH_FLOATING_TYPES(t.scalar_type(), "composite_samples_bwd_cpu", [&] {
    const auto rays = sample_rays<scalar_t>(raw, t, off, o, d, p);
    const scalar_t *bp = bg.data_ptr<scalar_t>(), *vc = v_color.data_ptr<scalar_t>();
    const scalar_t *vd = v_depth.data_ptr<scalar_t>(), *vo = v_opacity.data_ptr<scalar_t>();
    const scalar_t *dep = depth.data_ptr<scalar_t>(), *opa = opacity.data_ptr<scalar_t>();
    const scalar_t* tf = t_final.data_ptr<scalar_t>();
    const int* nu = n_used.data_ptr<int>();
    scalar_t *g_raw = v_raw.data_ptr<scalar_t>(), *g_bg = v_bg.data_ptr<scalar_t>();
    at::parallel_for(0, R, kGrain, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) rays.backward(i, bp, nu, opa, dep, tf, vc, vd, vo, g_raw, g_bg);
    });
  });
  return {v_raw, v_bg};
}

void composite_samples_weights_rays(OnCpu, const at::Tensor& raw_in, const at::Tensor& t_in,
                                    const at::Tensor* off, const at::Tensor& o_in, const at::Tensor& d_in,
                                    const SampleParams& p, at::Tensor& w) {
  const auto raw = raw_in.contiguous(), t = t_in.contiguous(), o = o_in.contiguous(), d = d_in.contiguous();
  const int64_t R = o.size(0);
  if (const int which = isa(); use_vector(t.scalar_type())) {
    const SamplesArgs a = vector_args(raw, t, off, o, d, nullptr, p, 0.0);
    float* wp = w.data_ptr<float>();
    at::parallel_for(0, R, kGrain, [&](int64_t b, int64_t e) {
      std::vector<float> scratch(vecdata::samples_scratch_floats(a.S));
      LRM_ISA_CALL(which, samples_weights_range, a, b, e, scratch.data(), wp);
    });
    return;
  }
  AT_DISPATCH_FLOATING_TYPES(t.scalar_type(), "composite_samples_weights_cpu", [&] {
    const auto rays = sample_rays<scalar_t>(raw, t, off, o, d, p);
    scalar_t* wp = w.data_ptr<scalar_t>();
    at::parallel_for(0, R, kGrain, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) rays.weights(i, wp);
    });
  });
}

TORCH_LIBRARY_IMPL(lrm_fast, CPU, m) { register_composite<OnCpu>(m); }

}  // namespace lrm_fast
