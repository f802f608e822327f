// CUDA kernels for alpha compositing: one thread per ray running composite.h (the same per-ray
// forward and reverse-walk backward as the CPU kernel). Saved state per ray: t_final, n_used.
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "composite.h"
#include "composite_ops.h"
#include "composite_samples.h"

namespace lrm_fast {

namespace {

constexpr int kThreads = 128;
inline unsigned blocks_for(int64_t n) { return unsigned((n + kThreads - 1) / kThreads); }

template <typename T>
__global__ void composite_fwd_kernel(const T* rgb, const T* sigma, const T* deltas, const T* depths, const T* bg,
                                     int64_t R, int S, T thresh, T* color, T* depth, T* opacity, T* t_final,
                                     int* n_used) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= R) return;
  const int64_t s = i * S;
  n_used[i] = composite_forward_ray<T>(rgb + 3 * s, sigma + s, deltas + s, depths + s, bg + 3 * i, S, thresh,
                                       color + 3 * i, depth + i, opacity + i, t_final + i);
}

template <typename T>
__global__ void composite_bwd_kernel(const T* v_color, const T* v_depth, const T* v_opacity, const T* rgb,
                                     const T* sigma, const T* deltas, const T* depths, const T* bg, const T* depth,
                                     const T* opacity, const T* t_final, const int* n_used, int64_t R, int S,
                                     T* v_rgb, T* v_sigma, T* v_bg) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= R) return;
  const int64_t s = i * S;
  composite_backward_ray<T>(rgb + 3 * s, sigma + s, deltas + s, depths + s, bg + 3 * i, S, n_used[i], opacity[i],
                            depth[i], t_final[i], v_color + 3 * i, v_depth[i], v_opacity[i], v_rgb + 3 * s,
                            v_sigma + s, v_bg + 3 * i);
}

template <typename T>
__global__ void composite_weights_kernel(const T* sigma, const T* deltas, int64_t R, int S, T* w) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= R) return;
  composite_weights_ray<T>(sigma + i * S, deltas + i * S, S, w + i * S);
}

struct SampleParams {
  double bmin, bmax, bias;
  int act;
  bool midpoint;
};

template <typename T>
__device__ SampleIntervals<T> make_iv(const T* raw, const T* t, const T* o, const T* d, int64_t i, int S,
                                      const SampleParams& p, T* v_raw) {
  return SampleIntervals<T>{raw + i * S * 4, t + int64_t(i) * S, o + 3 * i, d + 3 * i, T(p.bmin), T(p.bmax),
                            T(p.bias), p.act, p.midpoint, v_raw ? v_raw + i * S * 4 : nullptr};
}

template <typename T>
__global__ void composite_samples_fwd_kernel(const T* raw, const T* t, const T* o, const T* d, const T* bg,
                                             int64_t R, int S, SampleParams p, T thresh, T* color, T* depth,
                                             T* opacity, T* t_final, int* n_used) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= R) return;
  const auto iv = make_iv<T>(raw, t, o, d, i, S, p, nullptr);
  n_used[i] = composite_samples_forward_ray<T>(iv, S, bg + 3 * i, thresh, color + 3 * i, depth + i, opacity + i,
                                               t_final + i);
}

template <typename T>
__global__ void composite_samples_bwd_kernel(const T* v_color, const T* v_depth, const T* v_opacity, const T* raw,
                                             const T* t, const T* o, const T* d, const T* bg, const T* depth,
                                             const T* opacity, const T* t_final, const int* n_used, int64_t R,
                                             int S, SampleParams p, T* v_raw, T* v_bg) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= R) return;
  auto iv = make_iv<T>(raw, t, o, d, i, S, p, v_raw);
  composite_samples_backward_ray<T>(iv, S, bg + 3 * i, n_used[i], opacity[i], depth[i], t_final[i],
                                    v_color + 3 * i, v_depth[i], v_opacity[i], v_bg + 3 * i);
}

template <typename T>
__global__ void composite_samples_weights_kernel(const T* raw, const T* t, const T* o, const T* d, int64_t R, int S,
                                                 SampleParams p, T* w) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= R) return;
  const auto iv = make_iv<T>(raw, t, o, d, i, S, p, nullptr);
  composite_samples_weights_ray<T>(iv, S, w + i * (S > 0 ? S - 1 : 0));
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> composite_samples_fwd_cuda(
    const at::Tensor& raw_in, const at::Tensor& t_in, const at::Tensor& o_in, const at::Tensor& d_in,
    const at::Tensor& bg_in, double bmin, double bmax, double bias, int64_t act, bool midpoint, double thresh) {
  check_composite_samples("composite_samples_fwd", raw_in, t_in, o_in, d_in, &bg_in);
  const c10::cuda::CUDAGuard guard(t_in.device());
  const auto raw = raw_in.contiguous(), t = t_in.contiguous(), o = o_in.contiguous(), d = d_in.contiguous();
  const auto bg = bg_in.contiguous();
  const int64_t R = t.size(0), S = t.size(1);
  auto color = at::empty({R, 3}, t.options());
  auto depth = at::empty({R}, t.options()), opacity = at::empty({R}, t.options());
  auto t_final = at::empty({R}, t.options());
  auto n_used = at::empty({R}, t.options().dtype(at::kInt));
  if (R == 0) return {color, depth, opacity, t_final, n_used};
  const SampleParams p{bmin, bmax, bias, int(act), midpoint};
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(t.scalar_type(), "composite_samples_fwd_cuda", [&] {
    composite_samples_fwd_kernel<scalar_t><<<blocks_for(R), kThreads, 0, stream>>>(
        raw.data_ptr<scalar_t>(), t.data_ptr<scalar_t>(), o.data_ptr<scalar_t>(), d.data_ptr<scalar_t>(),
        bg.data_ptr<scalar_t>(), R, int(S), p, scalar_t(thresh), color.data_ptr<scalar_t>(),
        depth.data_ptr<scalar_t>(), opacity.data_ptr<scalar_t>(), t_final.data_ptr<scalar_t>(),
        n_used.data_ptr<int>());
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {color, depth, opacity, t_final, n_used};
}

std::tuple<at::Tensor, at::Tensor> composite_samples_bwd_cuda(
    const at::Tensor& v_color_in, const at::Tensor& v_depth_in, const at::Tensor& v_opacity_in,
    const at::Tensor& raw_in, const at::Tensor& t_in, const at::Tensor& o_in, const at::Tensor& d_in,
    const at::Tensor& bg_in, double bmin, double bmax, double bias, int64_t act, bool midpoint,
    const at::Tensor& depth_in, const at::Tensor& opacity_in, const at::Tensor& t_final_in,
    const at::Tensor& n_used_in) {
  check_composite_samples("composite_samples_bwd", raw_in, t_in, o_in, d_in, &bg_in);
  const int64_t R = t_in.size(0), S = t_in.size(1);
  check_composite_grads("composite_samples_bwd", v_color_in, &v_depth_in, &v_opacity_in, n_used_in, t_in, R);
  const c10::cuda::CUDAGuard guard(t_in.device());
  const auto raw = raw_in.contiguous(), t = t_in.contiguous(), o = o_in.contiguous(), d = d_in.contiguous();
  const auto bg = bg_in.contiguous(), v_color = v_color_in.contiguous(), v_depth = v_depth_in.contiguous();
  const auto v_opacity = v_opacity_in.contiguous(), depth = depth_in.contiguous();
  const auto opacity = opacity_in.contiguous(), t_final = t_final_in.contiguous(), n_used = n_used_in.contiguous();
  auto v_raw = at::zeros({R, S, 4}, t.options());
  auto v_bg = at::empty({R, 3}, t.options());
  if (R == 0) return {v_raw, v_bg};
  const SampleParams p{bmin, bmax, bias, int(act), midpoint};
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(t.scalar_type(), "composite_samples_bwd_cuda", [&] {
    composite_samples_bwd_kernel<scalar_t><<<blocks_for(R), kThreads, 0, stream>>>(
        v_color.data_ptr<scalar_t>(), v_depth.data_ptr<scalar_t>(), v_opacity.data_ptr<scalar_t>(),
        raw.data_ptr<scalar_t>(), t.data_ptr<scalar_t>(), o.data_ptr<scalar_t>(), d.data_ptr<scalar_t>(),
        bg.data_ptr<scalar_t>(), depth.data_ptr<scalar_t>(), opacity.data_ptr<scalar_t>(),
        t_final.data_ptr<scalar_t>(), n_used.data_ptr<int>(), R, int(S), p, v_raw.data_ptr<scalar_t>(),
        v_bg.data_ptr<scalar_t>());
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {v_raw, v_bg};
}

at::Tensor composite_samples_weights_cuda(const at::Tensor& raw_in, const at::Tensor& t_in, const at::Tensor& o_in,
                                          const at::Tensor& d_in, double bmin, double bmax, double bias, int64_t act,
                                          bool midpoint) {
  check_composite_samples("composite_samples_weights", raw_in, t_in, o_in, d_in, nullptr);
  const c10::cuda::CUDAGuard guard(t_in.device());
  const auto raw = raw_in.contiguous(), t = t_in.contiguous(), o = o_in.contiguous(), d = d_in.contiguous();
  const int64_t R = t.size(0), S = t.size(1);
  auto w = at::empty({R, S > 0 ? S - 1 : 0}, t.options());
  if (R == 0 || S < 2) return w;
  const SampleParams p{bmin, bmax, bias, int(act), midpoint};
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(t.scalar_type(), "composite_samples_weights_cuda", [&] {
    composite_samples_weights_kernel<scalar_t><<<blocks_for(R), kThreads, 0, stream>>>(
        raw.data_ptr<scalar_t>(), t.data_ptr<scalar_t>(), o.data_ptr<scalar_t>(), d.data_ptr<scalar_t>(), R, int(S),
        p, w.data_ptr<scalar_t>());
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return w;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> composite_fwd_cuda(
    const at::Tensor& rgb_in, const at::Tensor& sigma_in, const at::Tensor& deltas_in,
    const at::Tensor& depths_in, const at::Tensor& bg_in, double thresh) {
  check_composite("composite_fwd", rgb_in, sigma_in, deltas_in, depths_in, bg_in);
  const c10::cuda::CUDAGuard guard(sigma_in.device());
  const auto rgb = rgb_in.contiguous(), sigma = sigma_in.contiguous(), deltas = deltas_in.contiguous();
  const auto depths = depths_in.contiguous(), bg = bg_in.contiguous();
  const int64_t R = sigma.size(0), S = sigma.size(1);
  auto color = at::empty({R, 3}, sigma.options());
  auto depth = at::empty({R}, sigma.options()), opacity = at::empty({R}, sigma.options());
  auto t_final = at::empty({R}, sigma.options());
  auto n_used = at::empty({R}, sigma.options().dtype(at::kInt));
  if (R == 0) return {color, depth, opacity, t_final, n_used};
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(sigma.scalar_type(), "composite_fwd_cuda", [&] {
    composite_fwd_kernel<scalar_t><<<blocks_for(R), kThreads, 0, stream>>>(
        rgb.data_ptr<scalar_t>(), sigma.data_ptr<scalar_t>(), deltas.data_ptr<scalar_t>(),
        depths.data_ptr<scalar_t>(), bg.data_ptr<scalar_t>(), R, int(S), scalar_t(thresh),
        color.data_ptr<scalar_t>(), depth.data_ptr<scalar_t>(), opacity.data_ptr<scalar_t>(),
        t_final.data_ptr<scalar_t>(), n_used.data_ptr<int>());
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {color, depth, opacity, t_final, n_used};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> composite_bwd_cuda(
    const at::Tensor& v_color_in, const at::Tensor& v_depth_in, const at::Tensor& v_opacity_in,
    const at::Tensor& rgb_in, const at::Tensor& sigma_in, const at::Tensor& deltas_in,
    const at::Tensor& depths_in, const at::Tensor& bg_in, const at::Tensor& depth_in,
    const at::Tensor& opacity_in, const at::Tensor& t_final_in, const at::Tensor& n_used_in) {
  check_composite("composite_bwd", rgb_in, sigma_in, deltas_in, depths_in, bg_in);
  const int64_t R = sigma_in.size(0), S = sigma_in.size(1);
  check_composite_grads("composite_bwd", v_color_in, &v_depth_in, &v_opacity_in, n_used_in, sigma_in, R);
  const c10::cuda::CUDAGuard guard(sigma_in.device());
  const auto rgb = rgb_in.contiguous(), sigma = sigma_in.contiguous(), deltas = deltas_in.contiguous();
  const auto depths = depths_in.contiguous(), bg = bg_in.contiguous();
  const auto v_color = v_color_in.contiguous(), v_depth = v_depth_in.contiguous();
  const auto v_opacity = v_opacity_in.contiguous(), depth = depth_in.contiguous();
  const auto opacity = opacity_in.contiguous(), t_final = t_final_in.contiguous();
  const auto n_used = n_used_in.contiguous();
  auto v_rgb = at::empty({R, S, 3}, sigma.options());
  auto v_sigma = at::empty({R, S}, sigma.options());
  auto v_bg = at::empty({R, 3}, sigma.options());
  if (R == 0) return {v_rgb, v_sigma, v_bg};
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(sigma.scalar_type(), "composite_bwd_cuda", [&] {
    composite_bwd_kernel<scalar_t><<<blocks_for(R), kThreads, 0, stream>>>(
        v_color.data_ptr<scalar_t>(), v_depth.data_ptr<scalar_t>(), v_opacity.data_ptr<scalar_t>(),
        rgb.data_ptr<scalar_t>(), sigma.data_ptr<scalar_t>(), deltas.data_ptr<scalar_t>(),
        depths.data_ptr<scalar_t>(), bg.data_ptr<scalar_t>(), depth.data_ptr<scalar_t>(),
        opacity.data_ptr<scalar_t>(), t_final.data_ptr<scalar_t>(), n_used.data_ptr<int>(), R, int(S),
        v_rgb.data_ptr<scalar_t>(), v_sigma.data_ptr<scalar_t>(), v_bg.data_ptr<scalar_t>());
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {v_rgb, v_sigma, v_bg};
}

at::Tensor composite_weights_cuda(const at::Tensor& sigma_in, const at::Tensor& deltas_in) {
  check_composite_weights(sigma_in, deltas_in);
  const c10::cuda::CUDAGuard guard(sigma_in.device());
  const auto sigma = sigma_in.contiguous(), deltas = deltas_in.contiguous();
  const int64_t R = sigma.size(0), S = sigma.size(1);
  auto w = at::empty({R, S}, sigma.options());
  if (R == 0) return w;
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(sigma.scalar_type(), "composite_weights_cuda", [&] {
    composite_weights_kernel<scalar_t><<<blocks_for(R), kThreads, 0, stream>>>(
        sigma.data_ptr<scalar_t>(), deltas.data_ptr<scalar_t>(), R, int(S), w.data_ptr<scalar_t>());
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return w;
}

TORCH_LIBRARY_IMPL(lrm_fast, CUDA, m) {
  m.impl("composite_fwd", &composite_fwd_cuda);
  m.impl("composite_bwd", &composite_bwd_cuda);
  m.impl("composite_weights", &composite_weights_cuda);
  m.impl("composite_samples_fwd", &composite_samples_fwd_cuda);
  m.impl("composite_samples_bwd", &composite_samples_bwd_cuda);
  m.impl("composite_samples_weights", &composite_samples_weights_cuda);
}

}  // namespace lrm_fast
