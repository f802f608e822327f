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

// composite_samples, dense and packed: one thread per ray of a SampleRays (composite_samples.h)
template <typename T>
__global__ void composite_samples_fwd_kernel(SampleRays<T> rays, const T* bg, int64_t R, T thresh, T* color,
                                             T* depth, T* opacity, T* t_final, int* n_used) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= R) return;
  n_used[i] = rays.forward(i, bg, thresh, color, depth, opacity, t_final);
}

template <typename T>
__global__ void composite_samples_bwd_kernel(SampleRays<T> rays, const T* v_color, const T* v_depth,
                                             const T* v_opacity, const T* bg, const T* depth, const T* opacity,
                                             const T* t_final, const int* n_used, int64_t R, T* v_raw, T* v_bg) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= R) return;
  rays.backward(i, bg, n_used, opacity, depth, t_final, v_color, v_depth, v_opacity, v_raw, v_bg);
}

template <typename T>
__global__ void composite_samples_weights_kernel(SampleRays<T> rays, int64_t R, T* w) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= R) return;
  rays.weights(i, w);
}

// (S only sizes CPU scratch: unused here, 0 for packed rays)
template <typename T>
SampleRays<T> sample_rays(const at::Tensor& raw, const at::Tensor& t, const at::Tensor* off, const at::Tensor& o,
                          const at::Tensor& d, const SampleParams& p) {
  return SampleRays<T>{raw.data_ptr<T>(), t.data_ptr<T>(), o.data_ptr<T>(), d.data_ptr<T>(),
                       off ? off->data_ptr<int64_t>() : nullptr, off ? 0 : t.size(1), T(p.bmin), T(p.bmax),
                       T(p.bias), int(p.act), p.midpoint};
}

}  // namespace

// the bodies of the dense and the packed composite_samples ops (their entries: composite_ops.h,
// occupancy_ops.h); offsets are not validated on the device (that would cost a host sync per call)
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> composite_samples_fwd_rays(
    OnCuda, const at::Tensor& raw_in, const at::Tensor& t_in, const at::Tensor* off_in, const at::Tensor& o_in,
    const at::Tensor& d_in, const at::Tensor& bg_in, const SampleParams& p, double thresh) {
  const c10::cuda::CUDAGuard guard(t_in.device());
  const auto raw = raw_in.contiguous(), t = t_in.contiguous(), o = o_in.contiguous(), d = d_in.contiguous();
  const auto bg = bg_in.contiguous();
  const int64_t R = o.size(0);
  auto color = at::empty({R, 3}, t.options());
  auto depth = at::empty({R}, t.options()), opacity = at::empty({R}, t.options());
  auto t_final = at::empty({R}, t.options());
  auto n_used = at::empty({R}, t.options().dtype(at::kInt));
  if (R == 0) return {color, depth, opacity, t_final, n_used};
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(t.scalar_type(), "composite_samples_fwd_cuda", [&] {
    composite_samples_fwd_kernel<scalar_t><<<blocks_for(R), kThreads, 0, stream>>>(
        sample_rays<scalar_t>(raw, t, off_in, o, d, p), bg.data_ptr<scalar_t>(), R,
        scalar_t(thresh), color.data_ptr<scalar_t>(), depth.data_ptr<scalar_t>(), opacity.data_ptr<scalar_t>(),
        t_final.data_ptr<scalar_t>(), n_used.data_ptr<int>());
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {color, depth, opacity, t_final, n_used};
}

std::tuple<at::Tensor, at::Tensor> composite_samples_bwd_rays(
    OnCuda, const at::Tensor& v_color_in, const at::Tensor& v_depth_in, const at::Tensor& v_opacity_in,
    const at::Tensor& raw_in, const at::Tensor& t_in, const at::Tensor* off_in, const at::Tensor& o_in,
    const at::Tensor& d_in, const at::Tensor& bg_in, const SampleParams& p, const at::Tensor& depth_in,
    const at::Tensor& opacity_in, const at::Tensor& t_final_in, const at::Tensor& n_used_in) {
  const c10::cuda::CUDAGuard guard(t_in.device());
  const auto raw = raw_in.contiguous(), t = t_in.contiguous(), o = o_in.contiguous(), d = d_in.contiguous();
  const auto bg = bg_in.contiguous(), v_color = v_color_in.contiguous();
  const auto v_depth = v_depth_in.to(t.scalar_type()).contiguous();
  const auto v_opacity = v_opacity_in.to(t.scalar_type()).contiguous(), depth = depth_in.contiguous();
  const auto opacity = opacity_in.contiguous(), t_final = t_final_in.contiguous(), n_used = n_used_in.contiguous();
  const int64_t R = o.size(0);
  auto v_raw = at::zeros(raw.sizes(), t.options());
  auto v_bg = at::empty({R, 3}, t.options());
  if (R == 0) return {v_raw, v_bg};
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(t.scalar_type(), "composite_samples_bwd_cuda", [&] {
    composite_samples_bwd_kernel<scalar_t><<<blocks_for(R), kThreads, 0, stream>>>(
        sample_rays<scalar_t>(raw, t, off_in, o, d, p), v_color.data_ptr<scalar_t>(),
        v_depth.data_ptr<scalar_t>(), v_opacity.data_ptr<scalar_t>(), bg.data_ptr<scalar_t>(),
        depth.data_ptr<scalar_t>(), opacity.data_ptr<scalar_t>(), t_final.data_ptr<scalar_t>(),
        n_used.data_ptr<int>(), R, v_raw.data_ptr<scalar_t>(), v_bg.data_ptr<scalar_t>());
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {v_raw, v_bg};
}

void composite_samples_weights_rays(OnCuda, const at::Tensor& raw_in, const at::Tensor& t_in,
                                    const at::Tensor* off_in, const at::Tensor& o_in, const at::Tensor& d_in,
                                    const SampleParams& p, at::Tensor& w) {
  const int64_t R = o_in.size(0);
  if (R == 0 || w.numel() == 0) return;
  const c10::cuda::CUDAGuard guard(t_in.device());
  const auto raw = raw_in.contiguous(), t = t_in.contiguous(), o = o_in.contiguous(), d = d_in.contiguous();
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(t.scalar_type(), "composite_samples_weights_cuda", [&] {
    composite_samples_weights_kernel<scalar_t><<<blocks_for(R), kThreads, 0, stream>>>(
        sample_rays<scalar_t>(raw, t, off_in, o, d, p), R, w.data_ptr<scalar_t>());
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// the plain op's bodies (entries: composite_ops.h)
void composite_fwd_body(OnCuda, const at::Tensor& rgb, const at::Tensor& sigma, const at::Tensor& deltas,
                        const at::Tensor& depths, const at::Tensor& bg, double thresh, at::Tensor& color,
                        at::Tensor& depth, at::Tensor& opacity, at::Tensor& t_final, at::Tensor& n_used) {
  const c10::cuda::CUDAGuard guard(sigma.device());
  const int64_t R = sigma.size(0), S = sigma.size(1);
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(sigma.scalar_type(), "composite_fwd_cuda", [&] {
    composite_fwd_kernel<scalar_t><<<blocks_for(R), kThreads, 0, stream>>>(
        rgb.data_ptr<scalar_t>(), sigma.data_ptr<scalar_t>(), deltas.data_ptr<scalar_t>(),
        depths.data_ptr<scalar_t>(), bg.data_ptr<scalar_t>(), R, int(S), scalar_t(thresh),
        color.data_ptr<scalar_t>(), depth.data_ptr<scalar_t>(), opacity.data_ptr<scalar_t>(),
        t_final.data_ptr<scalar_t>(), n_used.data_ptr<int>());
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void composite_bwd_body(OnCuda, const at::Tensor& v_color, const at::Tensor& v_depth, const at::Tensor& v_opacity,
                        const at::Tensor& rgb, const at::Tensor& sigma, const at::Tensor& deltas,
                        const at::Tensor& depths, const at::Tensor& bg, const at::Tensor& depth,
                        const at::Tensor& opacity, const at::Tensor& t_final, const at::Tensor& n_used,
                        at::Tensor& v_rgb, at::Tensor& v_sigma, at::Tensor& v_bg) {
  const c10::cuda::CUDAGuard guard(sigma.device());
  const int64_t R = sigma.size(0), S = sigma.size(1);
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
}

void composite_weights_body(OnCuda, const at::Tensor& sigma, const at::Tensor& deltas, at::Tensor& w) {
  const c10::cuda::CUDAGuard guard(sigma.device());
  const int64_t R = sigma.size(0), S = sigma.size(1);
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(sigma.scalar_type(), "composite_weights_cuda", [&] {
    composite_weights_kernel<scalar_t><<<blocks_for(R), kThreads, 0, stream>>>(
        sigma.data_ptr<scalar_t>(), deltas.data_ptr<scalar_t>(), R, int(S), w.data_ptr<scalar_t>());
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

TORCH_LIBRARY_IMPL(lrm_fast, CUDA, m) { register_composite<OnCuda>(m); }

}  // namespace lrm_fast
