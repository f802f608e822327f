// CPU kernels for rays and samples: one loop over rays, split across threads with
// at::parallel_for; the per-ray math is raymarch.h (the same functions the CUDA kernels call).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <tuple>
#include <vector>

#include "checks.h"
#include "raymarch.h"
#include "raymarch_ops.h"

namespace lrm_fast {

namespace {
constexpr int64_t kGrain = 256;  // rays per task: enough work to amortize the scheduling
}

std::tuple<at::Tensor, at::Tensor> generate_rays_cpu(const at::Tensor& c2w_in, const at::Tensor& K_in,
                                                     int64_t height, int64_t width,
                                                     const std::optional<at::Tensor>& pixels_in) {
  check_generate_rays(c2w_in, K_in, height, width, pixels_in);
  const auto c2w = c2w_in.contiguous(), K = K_in.contiguous();
  const int64_t N = c2w.size(0);
  const bool subset = pixels_in.has_value();
  at::Tensor pixels;
  if (subset) pixels = pixels_in->to(at::kLong).contiguous();
  const int64_t R = subset ? pixels.size(1) : height * width;
  auto origins = at::empty({N, R, 3}, c2w.options());
  auto dirs = at::empty({N, R, 3}, c2w.options());
  AT_DISPATCH_FLOATING_TYPES(c2w.scalar_type(), "generate_rays_cpu", [&] {
    const scalar_t* cp = c2w.data_ptr<scalar_t>();
    const scalar_t* kp = K.data_ptr<scalar_t>();
    const int64_t* pp = subset ? pixels.data_ptr<int64_t>() : nullptr;
    scalar_t* op = origins.data_ptr<scalar_t>();
    scalar_t* dp = dirs.data_ptr<scalar_t>();
    at::parallel_for(0, N * R, kGrain, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        const int64_t cam = i / R, r = i % R;
        scalar_t row, col;
        if (pp) {
          row = scalar_t(pp[2 * i]);
          col = scalar_t(pp[2 * i + 1]);
        } else {
          row = scalar_t(r / width);
          col = scalar_t(r % width);
        }
        pixel_ray<scalar_t>(cp + 16 * cam, kp + 4 * cam, int(height), int(width), row, col, op + 3 * i,
                            dp + 3 * i);
      }
    });
  });
  return {origins, dirs};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> ray_box_cpu(const at::Tensor& o_in, const at::Tensor& d_in,
                                                           double bmin, double bmax) {
  check_ray_box(o_in, d_in);
  const auto o = o_in.contiguous(), d = d_in.contiguous();
  const int64_t R = o.size(0);
  auto near = at::empty({R}, o.options()), far = at::empty({R}, o.options());
  auto hit = at::empty({R}, o.options().dtype(at::kBool));
  AT_DISPATCH_FLOATING_TYPES(o.scalar_type(), "ray_box_cpu", [&] {
    const scalar_t* op = o.data_ptr<scalar_t>();
    const scalar_t* dp = d.data_ptr<scalar_t>();
    scalar_t* np = near.data_ptr<scalar_t>();
    scalar_t* fp = far.data_ptr<scalar_t>();
    bool* hp = hit.data_ptr<bool>();
    at::parallel_for(0, R, kGrain, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i)
        hp[i] = ray_box_hit<scalar_t>(op + 3 * i, dp + 3 * i, scalar_t(bmin), scalar_t(bmax), np + i, fp + i);
    });
  });
  return {near, far, hit};
}

at::Tensor stratified_cpu(const at::Tensor& near_in, const at::Tensor& far_in, int64_t n,
                          const std::optional<at::Tensor>& u_in) {
  check_stratified(near_in, far_in, n, u_in);
  const auto near = near_in.contiguous(), far = far_in.contiguous();
  const int64_t R = near.size(0);
  at::Tensor u;
  if (u_in.has_value()) u = u_in->contiguous();
  auto out = at::empty({R, n}, near.options());
  AT_DISPATCH_FLOATING_TYPES(near.scalar_type(), "stratified_cpu", [&] {
    const scalar_t* np = near.data_ptr<scalar_t>();
    const scalar_t* fp = far.data_ptr<scalar_t>();
    const scalar_t* up = u.defined() ? u.data_ptr<scalar_t>() : nullptr;
    scalar_t* out_p = out.data_ptr<scalar_t>();
    at::parallel_for(0, R, kGrain, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i)
        stratified_ray<scalar_t>(np[i], fp[i], int(n), up ? up + i * n : nullptr, out_p + i * n);
    });
  });
  return out;
}

at::Tensor importance_cpu(const at::Tensor& depths_in, const at::Tensor& weights_in, int64_t n,
                          const std::optional<at::Tensor>& u_in) {
  check_importance(depths_in, weights_in, n, u_in);
  const auto depths = depths_in.contiguous();
  const auto weights = weights_in.contiguous();
  at::Tensor u;
  if (u_in.has_value()) u = u_in->contiguous();
  const int64_t R = depths.size(0), S = depths.size(1);
  auto out = at::empty({R, n}, depths.options());
  AT_DISPATCH_FLOATING_TYPES(depths.scalar_type(), "importance_cpu", [&] {
    const scalar_t* dp = depths.data_ptr<scalar_t>();
    const float* wp = weights.data_ptr<float>();
    const float* up = u.defined() ? u.data_ptr<float>() : nullptr;
    scalar_t* out_p = out.data_ptr<scalar_t>();
    at::parallel_for(0, R, kGrain, [&](int64_t b, int64_t e) {
      std::vector<float> cdf(S);  // one scratch per task, reused for every ray in it
      for (int64_t i = b; i < e; ++i)
        importance_ray<scalar_t>(dp + i * S, wp + i * (S - 1), int(S), int(n), up ? up + i * n : nullptr,
                                 cdf.data(), out_p + i * n);
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> merge_samples_cpu(const at::Tensor& ta_in, const at::Tensor& va_in,
                                                     const at::Tensor& tb_in, const at::Tensor& vb_in) {
  check_merge_samples(ta_in, va_in, tb_in, vb_in);
  const auto ta = ta_in.contiguous(), va = va_in.contiguous(), tb = tb_in.contiguous(), vb = vb_in.contiguous();
  const int64_t R = ta.size(0), A = ta.size(1), B = tb.size(1), K = va.size(2);
  auto t = at::empty({R, A + B}, ta.options());
  auto v = at::empty({R, A + B, K}, ta.options());
  AT_DISPATCH_FLOATING_TYPES(ta.scalar_type(), "merge_samples_cpu", [&] {
    const scalar_t *tap = ta.data_ptr<scalar_t>(), *vap = va.data_ptr<scalar_t>();
    const scalar_t *tbp = tb.data_ptr<scalar_t>(), *vbp = vb.data_ptr<scalar_t>();
    scalar_t *tp = t.data_ptr<scalar_t>(), *vp = v.data_ptr<scalar_t>();
    at::parallel_for(0, R, kGrain, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        const auto args = std::make_tuple(tap + i * A, vap + i * A * K, int(A), tbp + i * B, vbp + i * B * K,
                                          int(B), int(K), tp + i * (A + B), vp + i * (A + B) * K);
        if (K == 4) std::apply(merge_ray<scalar_t, 4>, args); else std::apply(merge_ray<scalar_t, 0>, args);
      }
    });
  });
  return {t, v};
}

std::tuple<at::Tensor, at::Tensor> merge_samples_bwd_cpu(const at::Tensor& vv_in, const at::Tensor& ta_in,
                                                         const at::Tensor& tb_in) {
  check_merge_samples_bwd(vv_in, ta_in, tb_in);
  const auto vv = vv_in.contiguous(), ta = ta_in.contiguous(), tb = tb_in.contiguous();
  const int64_t R = ta.size(0), A = ta.size(1), B = tb.size(1);
  const int64_t K = vv.size(2);
  auto va = at::empty({R, A, K}, vv.options()), vb = at::empty({R, B, K}, vv.options());
  AT_DISPATCH_FLOATING_TYPES(ta.scalar_type(), "merge_samples_bwd_cpu", [&] {
    const scalar_t *tap = ta.data_ptr<scalar_t>(), *tbp = tb.data_ptr<scalar_t>(), *vvp = vv.data_ptr<scalar_t>();
    scalar_t *vap = va.data_ptr<scalar_t>(), *vbp = vb.data_ptr<scalar_t>();
    at::parallel_for(0, R, kGrain, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        const auto args = std::make_tuple(tap + i * A, int(A), tbp + i * B, int(B), int(K), vvp + i * (A + B) * K,
                                          vap + i * A * K, vbp + i * B * K);
        if (K == 4) std::apply(merge_ray_backward<scalar_t, 4>, args);
        else std::apply(merge_ray_backward<scalar_t, 0>, args);
      }
    });
  });
  return {va, vb};
}

at::Tensor ray_points_cpu(const at::Tensor& o_in, const at::Tensor& d_in, const at::Tensor& t_in) {
  check_ray_points(o_in, d_in, t_in);
  const auto o = o_in.contiguous(), d = d_in.contiguous(), t = t_in.contiguous();
  const int64_t R = t.size(0), S = t.size(1);
  auto p = at::empty({R, S, 3}, t.options());
  AT_DISPATCH_FLOATING_TYPES(t.scalar_type(), "ray_points_cpu", [&] {
    const scalar_t *op = o.data_ptr<scalar_t>(), *dp = d.data_ptr<scalar_t>(), *tp = t.data_ptr<scalar_t>();
    scalar_t* pp = p.data_ptr<scalar_t>();
    at::parallel_for(0, R, kGrain, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) ray_points_ray<scalar_t>(op + 3 * i, dp + 3 * i, tp + i * S, int(S), pp + i * S * 3);
    });
  });
  return p;
}

TORCH_LIBRARY_IMPL(lrm_fast, CPU, m) {
  m.impl("ray_points", &ray_points_cpu);
  m.impl("generate_rays", &generate_rays_cpu);
  m.impl("ray_box", &ray_box_cpu);
  m.impl("stratified", &stratified_cpu);
  m.impl("importance", &importance_cpu);
  m.impl("merge_samples", &merge_samples_cpu);
  m.impl("merge_samples_bwd", &merge_samples_bwd_cpu);
}

}  // namespace lrm_fast
