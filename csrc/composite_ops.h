// Host entry points of the compositing ops (CPU and CUDA) and their shared input checks.
// Schemas are in ext.cpp.
#pragma once

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

}  // namespace lrm_fast
