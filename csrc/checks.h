// Input checks shared by the torch-facing translation units (CPU and CUDA). Errors name the
// op, the argument and what was wrong, so a bad call fails with a readable message.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

namespace lrm_fast {

inline void check_float(const char* op, const char* name, const at::Tensor& t, const at::Tensor& like) {
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble, "lrm_fast.", op, ": ",
              name, " must be float32 or float64, got ", t.scalar_type());
  TORCH_CHECK(t.scalar_type() == like.scalar_type(), "lrm_fast.", op, ": ", name, " has dtype ",
              t.scalar_type(), " but the other inputs are ", like.scalar_type());
  TORCH_CHECK(t.device() == like.device(), "lrm_fast.", op, ": ", name, " is on ", t.device(),
              " but the other inputs are on ", like.device());
}

inline void check_shape(const char* op, const char* name, const at::Tensor& t, at::IntArrayRef want) {
  TORCH_CHECK(t.sizes() == want, "lrm_fast.", op, ": ", name, " must have shape ", want, ", got ",
              t.sizes());
}

}  // namespace lrm_fast
