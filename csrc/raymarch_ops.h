// Host entry points of the ray/sample ops (CPU and CUDA), with their shapes, and the input
// checks both share. Schemas are in ext.cpp.
#pragma once

#include <optional>
#include <tuple>

#include "checks.h"

namespace lrm_fast {

// c2w [N, 4, 4], K [N, 4] (fx, fy, cx, cy normalized), pixels [N, R, 2] int (row, col) or none
//   -> origins, dirs [N, R, 3] (R = H * W row-major when pixels is none)
inline void check_generate_rays(const at::Tensor& c2w, const at::Tensor& K, int64_t height, int64_t width,
                                const std::optional<at::Tensor>& pixels) {
  const char* op = "generate_rays";
  check_float(op, "c2w", c2w, c2w);
  check_float(op, "intrinsics", K, c2w);
  TORCH_CHECK(c2w.dim() == 3 && c2w.size(1) == 4 && c2w.size(2) == 4,
              "lrm_fast.generate_rays: c2w must be [N, 4, 4], got ", c2w.sizes());
  check_shape(op, "intrinsics", K, {c2w.size(0), 4});
  TORCH_CHECK(height > 0 && width > 0, "lrm_fast.generate_rays: height and width must be positive, got ",
              height, "x", width);
  if (pixels.has_value()) {
    const auto& p = *pixels;
    TORCH_CHECK(!at::isFloatingType(p.scalar_type()) && p.scalar_type() != at::kBool,
                "lrm_fast.generate_rays: pixels must be an integer tensor, got ", p.scalar_type());
    TORCH_CHECK(p.dim() == 3 && p.size(0) == c2w.size(0) && p.size(2) == 2,
                "lrm_fast.generate_rays: pixels must be [N, R, 2] with N = ", c2w.size(0), ", got ", p.sizes());
    TORCH_CHECK(p.device() == c2w.device(), "lrm_fast.generate_rays: pixels is on ", p.device(),
                " but c2w is on ", c2w.device());
  }
}

// origins, dirs [R, 3] -> near, far [R], hit [R] bool (misses: near = far = 0)
inline void check_ray_box(const at::Tensor& o, const at::Tensor& d) {
  check_float("ray_box", "origins", o, o);
  check_float("ray_box", "dirs", d, o);
  TORCH_CHECK(o.dim() == 2 && o.size(1) == 3, "lrm_fast.ray_box: origins must be [R, 3], got ", o.sizes());
  check_shape("ray_box", "dirs", d, o.sizes());
}

// near, far [R], u [R, n] jitter in [0, 1) or none -> depths [R, n]
inline void check_stratified(const at::Tensor& near, const at::Tensor& far, int64_t n,
                             const std::optional<at::Tensor>& u) {
  check_float("stratified", "near", near, near);
  check_float("stratified", "far", far, near);
  TORCH_CHECK(near.dim() == 1, "lrm_fast.stratified: near must be [R], got ", near.sizes());
  check_shape("stratified", "far", far, near.sizes());
  TORCH_CHECK(n >= 1, "lrm_fast.stratified: need at least one sample per ray, got n=", n);
  if (u.has_value()) {
    check_float("stratified", "u", *u, near);
    check_shape("stratified", "u", *u, {near.size(0), n});
  }
}

// depths [R, S] (S >= 4), weights [R, S-1] float32, u [R, n] float32 or none -> depths [R, n]
inline void check_importance(const at::Tensor& depths, const at::Tensor& weights, int64_t n,
                             const std::optional<at::Tensor>& u) {
  check_float("importance", "depths", depths, depths);
  TORCH_CHECK(depths.dim() == 2 && depths.size(1) >= 4,
              "lrm_fast.importance: depths must be [R, S] with S >= 4, got ", depths.sizes());
  TORCH_CHECK(weights.scalar_type() == at::kFloat, "lrm_fast.importance: weights must be float32, got ",
              weights.scalar_type());
  TORCH_CHECK(weights.device() == depths.device(), "lrm_fast.importance: weights is on ", weights.device(),
              " but depths is on ", depths.device());
  check_shape("importance", "weights", weights, {depths.size(0), depths.size(1) - 1});
  TORCH_CHECK(n >= 0, "lrm_fast.importance: n must be >= 0, got ", n);
  if (u.has_value()) {
    TORCH_CHECK(u->scalar_type() == at::kFloat && u->device() == depths.device(),
                "lrm_fast.importance: u must be float32 on ", depths.device(), ", got ", u->scalar_type(),
                " on ", u->device());
    check_shape("importance", "u", *u, {depths.size(0), n});
  }
}

// t_a [R, A], v_a [R, A, K], t_b [R, B], v_b [R, B, K] (each t sorted along dim 1) -> merged
inline void check_merge_samples(const at::Tensor& ta, const at::Tensor& va, const at::Tensor& tb,
                                const at::Tensor& vb) {
  const char* op = "merge_samples";
  check_float(op, "t_a", ta, ta);
  check_float(op, "v_a", va, ta);
  check_float(op, "t_b", tb, ta);
  check_float(op, "v_b", vb, ta);
  TORCH_CHECK(ta.dim() == 2 && tb.dim() == 2 && tb.size(0) == ta.size(0),
              "lrm_fast.merge_samples: t_a and t_b must be [R, A] and [R, B], got ", ta.sizes(), " and ", tb.sizes());
  TORCH_CHECK(va.dim() == 3 && va.size(0) == ta.size(0) && va.size(1) == ta.size(1),
              "lrm_fast.merge_samples: v_a must be [R, A, K] = [", ta.size(0), ", ", ta.size(1), ", K], got ",
              va.sizes());
  check_shape(op, "v_b", vb, {tb.size(0), tb.size(1), va.size(2)});
}

// v_v [R, A + B, K] (cotangent of the merged values), t_a [R, A], t_b [R, B]
inline void check_merge_samples_bwd(const at::Tensor& vv, const at::Tensor& ta, const at::Tensor& tb) {
  check_float("merge_samples_bwd", "v_v", vv, ta);
  check_float("merge_samples_bwd", "t_b", tb, ta);
  TORCH_CHECK(ta.dim() == 2 && tb.dim() == 2 && vv.dim() == 3 && tb.size(0) == ta.size(0) &&
                  vv.size(0) == ta.size(0) && vv.size(1) == ta.size(1) + tb.size(1),
              "lrm_fast.merge_samples_bwd: v_v must be [R, A + B, K] for t_a ", ta.sizes(), " and t_b ", tb.sizes(),
              ", got ", vv.sizes());
}

// origins, dirs [R, 3], depths [R, S] -> points [R, S, 3]
inline void check_ray_points(const at::Tensor& o, const at::Tensor& d, const at::Tensor& t) {
  check_float("ray_points", "depths", t, t);
  check_float("ray_points", "origins", o, t);
  check_float("ray_points", "dirs", d, t);
  TORCH_CHECK(t.dim() == 2, "lrm_fast.ray_points: depths must be [R, S], got ", t.sizes());
  check_shape("ray_points", "origins", o, {t.size(0), 3});
  check_shape("ray_points", "dirs", d, {t.size(0), 3});
}

}  // namespace lrm_fast
