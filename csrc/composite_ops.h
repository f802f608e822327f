// Host entry points of the compositing ops (CPU and CUDA) and their shared input checks.
// Schemas are in ext.cpp.
#pragma once

#include <tuple>

#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "checks.h"

namespace lrm_fast {

// rgb [R, S, 3], sigma/deltas/depths [R, S], background [R, 3]
inline void check_composite(const char* op, const at::Tensor& rgb, const at::Tensor& sigma,
                            const at::Tensor& deltas, const at::Tensor& depths, const at::Tensor& bg) {
  check_float(op, "sigma", sigma, sigma);
  TORCH_CHECK(sigma.dim() == 2, "lrm_fast.", op, ": sigma must be [R, S], got ", sigma.sizes());
  const int64_t R = sigma.size(0), S = sigma.size(1);
  check_float(op, "rgb", rgb, sigma);
  check_float(op, "deltas", deltas, sigma);
  check_float(op, "depths", depths, sigma);
  check_float(op, "background", bg, sigma);
  check_shape(op, "rgb", rgb, {R, S, 3});
  check_shape(op, "deltas", deltas, {R, S});
  check_shape(op, "depths", depths, {R, S});
  check_shape(op, "background", bg, {R, 3});
}

// raw [R, S, 4], t [R, S], origins/dirs [R, 3], background [R, 3] (optional check)
inline void check_composite_samples(const char* op, const at::Tensor& raw, const at::Tensor& t,
                                    const at::Tensor& o, const at::Tensor& d, const at::Tensor* bg) {
  check_float(op, "t", t, t);
  TORCH_CHECK(t.dim() == 2, "lrm_fast.", op, ": t must be [R, S], got ", t.sizes());
  const int64_t R = t.size(0), S = t.size(1);
  check_float(op, "raw", raw, t);
  check_float(op, "origins", o, t);
  check_float(op, "dirs", d, t);
  check_shape(op, "raw", raw, {R, S, 4});
  check_shape(op, "origins", o, {R, 3});
  check_shape(op, "dirs", d, {R, 3});
  if (bg) {
    check_float(op, "background", *bg, t);
    check_shape(op, "background", *bg, {R, 3});
  }
}

// backward inputs: cotangents v_color [R, 3] (+ v_depth, v_opacity [R] where the op has them) and
// the forward's n_used [R] int32; one place so the CPU and CUDA entries check the same things
inline void check_composite_grads(const char* op, const at::Tensor& v_color, const at::Tensor* v_depth,
                                  const at::Tensor* v_opacity, const at::Tensor& n_used,
                                  const at::Tensor& like, int64_t R) {
  check_float(op, "v_color", v_color, like);
  check_shape(op, "v_color", v_color, {R, 3});
  if (v_depth) check_shape(op, "v_depth", *v_depth, {R});
  if (v_opacity) check_shape(op, "v_opacity", *v_opacity, {R});
  check_shape(op, "n_used", n_used, {R});
  TORCH_CHECK(n_used.scalar_type() == at::kInt, "lrm_fast.", op, ": n_used must be int32");
}

// composite_samples_bwd: the forward's inputs plus the cotangents and n_used [R] int32
inline void check_composite_samples_bwd(const at::Tensor& v_color, const at::Tensor& v_depth,
                                        const at::Tensor& v_opacity, const at::Tensor& raw, const at::Tensor& t,
                                        const at::Tensor& o, const at::Tensor& d, const at::Tensor& bg,
                                        const at::Tensor& n_used) {
  check_composite_samples("composite_samples_bwd", raw, t, o, d, &bg);
  check_composite_grads("composite_samples_bwd", v_color, &v_depth, &v_opacity, n_used, t, t.size(0));
}

// sigma/deltas [R, S]
inline void check_composite_weights(const at::Tensor& sigma, const at::Tensor& deltas) {
  check_float("composite_weights", "sigma", sigma, sigma);
  check_float("composite_weights", "deltas", deltas, sigma);
  TORCH_CHECK(sigma.dim() == 2, "lrm_fast.composite_weights: sigma must be [R, S], got ", sigma.sizes());
  check_shape("composite_weights", "deltas", deltas, sigma.sizes());
}

// The bodies of composite_samples (dense: off == nullptr, samples [R, S]) and of
// composite_samples_packed (off: the contiguous offsets [R + 1] of samples [N]; occupancy_ops.h), one per
// device, picked by a tag (OnCpu: composite_cpu.cpp, OnCuda: composite_cuda.cu); the entries below
// check the inputs first. Weights go into w: dense [R, S - 1], packed [N].
struct SampleParams {
  double bmin, bmax, bias;
  int64_t act;  // 0 softplus, 1 exp
  bool midpoint;
};
struct OnCpu {
  static constexpr bool kHost = true;  // offsets can be checked on the host for free
};
struct OnCuda {
  static constexpr bool kHost = false;  // ... not without a sync per call
};

#define LRM_SAMPLES_BODIES(DEV)                                                                                 \
  std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> composite_samples_fwd_rays(            \
      DEV, const at::Tensor& raw, const at::Tensor& t, const at::Tensor* off, const at::Tensor& o,              \
      const at::Tensor& d, const at::Tensor& bg, const SampleParams& p, double thresh);                         \
  std::tuple<at::Tensor, at::Tensor> composite_samples_bwd_rays(                                                \
      DEV, const at::Tensor& v_color, const at::Tensor& v_depth, const at::Tensor& v_opacity,                   \
      const at::Tensor& raw, const at::Tensor& t, const at::Tensor* off, const at::Tensor& o,                   \
      const at::Tensor& d, const at::Tensor& bg, const SampleParams& p, const at::Tensor& depth,                \
      const at::Tensor& opacity, const at::Tensor& t_final, const at::Tensor& n_used);                          \
  void composite_samples_weights_rays(DEV, const at::Tensor& raw, const at::Tensor& t, const at::Tensor* off,    \
                                      const at::Tensor& o, const at::Tensor& d, const SampleParams& p,          \
                                      at::Tensor& w);
LRM_SAMPLES_BODIES(OnCpu)
LRM_SAMPLES_BODIES(OnCuda)
#undef LRM_SAMPLES_BODIES

// The entries of composite_samples_{fwd,bwd,weights} (schemas in ext.cpp), one template for both
// devices: composite_cpu.cpp registers <OnCpu>, composite_cuda.cu <OnCuda>.
template <typename Dev>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> composite_samples_fwd_entry(
    const at::Tensor& raw, const at::Tensor& t, const at::Tensor& o, const at::Tensor& d, const at::Tensor& bg,
    double bmin, double bmax, double bias, int64_t act, bool midpoint, double thresh) {
  check_composite_samples("composite_samples_fwd", raw, t, o, d, &bg);
  return composite_samples_fwd_rays(Dev{}, raw, t, nullptr, o, d, bg, {bmin, bmax, bias, act, midpoint}, thresh);
}

template <typename Dev>
std::tuple<at::Tensor, at::Tensor> composite_samples_bwd_entry(
    const at::Tensor& v_color, const at::Tensor& v_depth, const at::Tensor& v_opacity, const at::Tensor& raw,
    const at::Tensor& t, const at::Tensor& o, const at::Tensor& d, const at::Tensor& bg, double bmin, double bmax,
    double bias, int64_t act, bool midpoint, const at::Tensor& depth, const at::Tensor& opacity,
    const at::Tensor& t_final, const at::Tensor& n_used) {
  check_composite_samples_bwd(v_color, v_depth, v_opacity, raw, t, o, d, bg, n_used);
  return composite_samples_bwd_rays(Dev{}, v_color, v_depth, v_opacity, raw, t, nullptr, o, d, bg,
                                    {bmin, bmax, bias, act, midpoint}, depth, opacity, t_final, n_used);
}

template <typename Dev>
at::Tensor composite_samples_weights_entry(const at::Tensor& raw, const at::Tensor& t, const at::Tensor& o,
                                           const at::Tensor& d, double bmin, double bmax, double bias, int64_t act,
                                           bool midpoint) {
  check_composite_samples("composite_samples_weights", raw, t, o, d, nullptr);
  const int64_t S = t.size(1);
  auto w = at::empty({t.size(0), S > 0 ? S - 1 : 0}, t.options());
  composite_samples_weights_rays(Dev{}, raw, t, nullptr, o, d, {bmin, bmax, bias, act, midpoint}, w);
  return w;
}

// The plain composite op's bodies, one per device (composite_cpu.cpp, composite_cuda.cu): inputs
// checked and contiguous, outputs allocated by the entries below, R >= 1.
#define LRM_COMPOSITE_BODIES(DEV)                                                                               \
  void composite_fwd_body(DEV, const at::Tensor& rgb, const at::Tensor& sigma, const at::Tensor& deltas,         \
                          const at::Tensor& depths, const at::Tensor& bg, double thresh, at::Tensor& color,      \
                          at::Tensor& depth, at::Tensor& opacity, at::Tensor& t_final, at::Tensor& n_used);      \
  void composite_bwd_body(DEV, const at::Tensor& v_color, const at::Tensor& v_depth, const at::Tensor& v_opacity, \
                          const at::Tensor& rgb, const at::Tensor& sigma, const at::Tensor& deltas,              \
                          const at::Tensor& depths, const at::Tensor& bg, const at::Tensor& depth,               \
                          const at::Tensor& opacity, const at::Tensor& t_final, const at::Tensor& n_used,        \
                          at::Tensor& v_rgb, at::Tensor& v_sigma, at::Tensor& v_bg);                             \
  void composite_weights_body(DEV, const at::Tensor& sigma, const at::Tensor& deltas, at::Tensor& w);
LRM_COMPOSITE_BODIES(OnCpu)
LRM_COMPOSITE_BODIES(OnCuda)
#undef LRM_COMPOSITE_BODIES

// The entries of composite_{fwd,bwd,weights} (schemas in ext.cpp) for both devices.
template <typename Dev>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> composite_fwd_entry(
    const at::Tensor& rgb, const at::Tensor& sigma_in, const at::Tensor& deltas, const at::Tensor& depths,
    const at::Tensor& bg, double thresh) {
  check_composite("composite_fwd", rgb, sigma_in, deltas, depths, bg);
  const auto sigma = sigma_in.contiguous();
  const int64_t R = sigma.size(0);
  auto color = at::empty({R, 3}, sigma.options());
  auto depth = at::empty({R}, sigma.options()), opacity = at::empty({R}, sigma.options());
  auto t_final = at::empty({R}, sigma.options());
  auto n_used = at::empty({R}, sigma.options().dtype(at::kInt));
  if (R > 0)
    composite_fwd_body(Dev{}, rgb.contiguous(), sigma, deltas.contiguous(), depths.contiguous(), bg.contiguous(),
                       thresh, color, depth, opacity, t_final, n_used);
  return {color, depth, opacity, t_final, n_used};
}

template <typename Dev>
std::tuple<at::Tensor, at::Tensor, at::Tensor> composite_bwd_entry(
    const at::Tensor& v_color, const at::Tensor& v_depth, const at::Tensor& v_opacity, const at::Tensor& rgb,
    const at::Tensor& sigma_in, const at::Tensor& deltas, const at::Tensor& depths, const at::Tensor& bg,
    const at::Tensor& depth, const at::Tensor& opacity, const at::Tensor& t_final, const at::Tensor& n_used) {
  check_composite("composite_bwd", rgb, sigma_in, deltas, depths, bg);
  const int64_t R = sigma_in.size(0), S = sigma_in.size(1);
  check_composite_grads("composite_bwd", v_color, &v_depth, &v_opacity, n_used, sigma_in, R);
  const auto sigma = sigma_in.contiguous();
  auto v_rgb = at::empty({R, S, 3}, sigma.options());
  auto v_sigma = at::empty({R, S}, sigma.options());
  auto v_bg = at::empty({R, 3}, sigma.options());
  if (R > 0)
    composite_bwd_body(Dev{}, v_color.contiguous(), v_depth.contiguous(), v_opacity.contiguous(), rgb.contiguous(),
                       sigma, deltas.contiguous(), depths.contiguous(), bg.contiguous(), depth.contiguous(),
                       opacity.contiguous(), t_final.contiguous(), n_used.contiguous(), v_rgb, v_sigma, v_bg);
  return {v_rgb, v_sigma, v_bg};
}

template <typename Dev>
at::Tensor composite_weights_entry(const at::Tensor& sigma_in, const at::Tensor& deltas) {
  check_composite_weights(sigma_in, deltas);
  const auto sigma = sigma_in.contiguous();
  auto w = at::empty(sigma.sizes(), sigma.options());
  if (sigma.size(0) > 0) composite_weights_body(Dev{}, sigma, deltas.contiguous(), w);
  return w;
}

// what each device registers for the compositing ops (composite_cpu.cpp: <OnCpu>, composite_cuda.cu: <OnCuda>)
template <typename Dev>
void register_composite(torch::Library& m) {
  m.impl("composite_fwd", &composite_fwd_entry<Dev>);
  m.impl("composite_bwd", &composite_bwd_entry<Dev>);
  m.impl("composite_weights", &composite_weights_entry<Dev>);
  m.impl("composite_samples_fwd", &composite_samples_fwd_entry<Dev>);
  m.impl("composite_samples_bwd", &composite_samples_bwd_entry<Dev>);
  m.impl("composite_samples_weights", &composite_samples_weights_entry<Dev>);
}

}  // namespace lrm_fast
