// CUDA kernels for rays and samples: one thread per ray, the per-ray math from raymarch.h (the
// same functions the CPU kernels run). Input checks are shared with the CPU path.
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "raymarch.h"
#include "raymarch_ops.h"

namespace lrm_fast {

namespace {

constexpr int kThreads = 256;
inline unsigned blocks_for(int64_t n) { return unsigned((n + kThreads - 1) / kThreads); }

template <typename T>
__global__ void generate_rays_kernel(const T* c2w, const T* K, const int64_t* pixels, int64_t N, int64_t R,
                                     int height, int width, T* o, T* d) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= N * R) return;
  const int64_t cam = i / R, r = i % R;
  const T row = pixels ? T(pixels[2 * i]) : T(r / width);
  const T col = pixels ? T(pixels[2 * i + 1]) : T(r % width);
  pixel_ray<T>(c2w + 16 * cam, K + 4 * cam, height, width, row, col, o + 3 * i, d + 3 * i);
}

template <typename T>
__global__ void ray_box_kernel(const T* o, const T* d, int64_t R, T bmin, T bmax, T* near, T* far, bool* hit) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= R) return;
  hit[i] = ray_box_hit<T>(o + 3 * i, d + 3 * i, bmin, bmax, near + i, far + i);
}

template <typename T>
__global__ void stratified_kernel(const T* near, const T* far, const T* u, int64_t R, int n, T* out) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= R) return;
  stratified_ray<T>(near[i], far[i], n, u ? u + i * n : nullptr, out + i * n);
}

template <typename T>
__global__ void importance_kernel(const T* depths, const float* weights, const float* u, int64_t R, int S,
                                  int n, float* cdf_scratch, T* out) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= R) return;
  importance_ray<T>(depths + i * S, weights + i * (S - 1), S, n, u ? u + i * n : nullptr,
                    cdf_scratch + i * (S - 2), out + i * n);
}

template <typename T>
__global__ void merge_kernel(const T* ta, const T* va, int A, const T* tb, const T* vb, int B, int K, int64_t R,
                             T* t, T* v) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= R) return;
  merge_ray<T, 0>(ta + i * A, va + i * A * K, A, tb + i * B, vb + i * B * K, B, K, t + i * (A + B), v + i * (A + B) * K);
}

template <typename T>
__global__ void merge_bwd_kernel(const T* ta, int A, const T* tb, int B, int K, int64_t R, const T* vv, T* va,
                                 T* vb) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= R) return;
  merge_ray_backward<T, 0>(ta + i * A, A, tb + i * B, B, K, vv + i * (A + B) * K, va + i * A * K, vb + i * B * K);
}

template <typename T>
__global__ void ray_points_kernel(const T* o, const T* d, const T* t, int64_t R, int S, T* p) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;  // one thread per sample
  if (i >= R * S) return;
  const int64_t r = i / S;
  for (int a = 0; a < 3; ++a) p[3 * i + a] = mul_add_rn(t[i], d[3 * r + a], o[3 * r + a]);
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> generate_rays_cuda(const at::Tensor& c2w_in, const at::Tensor& K_in,
                                                      int64_t height, int64_t width,
                                                      const std::optional<at::Tensor>& pixels_in) {
  check_generate_rays(c2w_in, K_in, height, width, pixels_in);
  const c10::cuda::CUDAGuard guard(c2w_in.device());
  const auto c2w = c2w_in.contiguous(), K = K_in.contiguous();
  const int64_t N = c2w.size(0);
  at::Tensor pixels;
  if (pixels_in.has_value()) pixels = pixels_in->to(at::kLong).contiguous();
  const int64_t R = pixels.defined() ? pixels.size(1) : height * width;
  auto origins = at::empty({N, R, 3}, c2w.options()), dirs = at::empty({N, R, 3}, c2w.options());
  if (N * R == 0) return {origins, dirs};
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(c2w.scalar_type(), "generate_rays_cuda", [&] {
    generate_rays_kernel<scalar_t><<<blocks_for(N * R), kThreads, 0, stream>>>(
        c2w.data_ptr<scalar_t>(), K.data_ptr<scalar_t>(), pixels.defined() ? pixels.data_ptr<int64_t>() : nullptr,
        N, R, int(height), int(width), origins.data_ptr<scalar_t>(), dirs.data_ptr<scalar_t>());
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {origins, dirs};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> ray_box_cuda(const at::Tensor& o_in, const at::Tensor& d_in,
                                                            double bmin, double bmax) {
  check_ray_box(o_in, d_in);
  const c10::cuda::CUDAGuard guard(o_in.device());
  const auto o = o_in.contiguous(), d = d_in.contiguous();
  const int64_t R = o.size(0);
  auto near = at::empty({R}, o.options()), far = at::empty({R}, o.options());
  auto hit = at::empty({R}, o.options().dtype(at::kBool));
  if (R == 0) return {near, far, hit};
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(o.scalar_type(), "ray_box_cuda", [&] {
    ray_box_kernel<scalar_t><<<blocks_for(R), kThreads, 0, stream>>>(
        o.data_ptr<scalar_t>(), d.data_ptr<scalar_t>(), R, scalar_t(bmin), scalar_t(bmax),
        near.data_ptr<scalar_t>(), far.data_ptr<scalar_t>(), hit.data_ptr<bool>());
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {near, far, hit};
}

at::Tensor stratified_cuda(const at::Tensor& near_in, const at::Tensor& far_in, int64_t n,
                           const std::optional<at::Tensor>& u_in) {
  check_stratified(near_in, far_in, n, u_in);
  const c10::cuda::CUDAGuard guard(near_in.device());
  const auto near = near_in.contiguous(), far = far_in.contiguous();
  at::Tensor u;
  if (u_in.has_value()) u = u_in->contiguous();
  const int64_t R = near.size(0);
  auto out = at::empty({R, n}, near.options());
  if (R == 0) return out;
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(near.scalar_type(), "stratified_cuda", [&] {
    stratified_kernel<scalar_t><<<blocks_for(R), kThreads, 0, stream>>>(
        near.data_ptr<scalar_t>(), far.data_ptr<scalar_t>(), u.defined() ? u.data_ptr<scalar_t>() : nullptr, R,
        int(n), out.data_ptr<scalar_t>());
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

at::Tensor importance_cuda(const at::Tensor& depths_in, const at::Tensor& weights_in, int64_t n,
                           const std::optional<at::Tensor>& u_in) {
  check_importance(depths_in, weights_in, n, u_in);
  const c10::cuda::CUDAGuard guard(depths_in.device());
  const auto depths = depths_in.contiguous(), weights = weights_in.contiguous();
  at::Tensor u;
  if (u_in.has_value()) u = u_in->contiguous();
  const int64_t R = depths.size(0), S = depths.size(1);
  auto out = at::empty({R, n}, depths.options());
  if (R == 0 || n == 0) return out;
  // per-ray CDF scratch in global memory (S-2 floats a ray): S is not a compile-time constant
  auto cdf = at::empty({R, S - 2}, weights.options());
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(depths.scalar_type(), "importance_cuda", [&] {
    importance_kernel<scalar_t><<<blocks_for(R), kThreads, 0, stream>>>(
        depths.data_ptr<scalar_t>(), weights.data_ptr<float>(), u.defined() ? u.data_ptr<float>() : nullptr, R,
        int(S), int(n), cdf.data_ptr<float>(), out.data_ptr<scalar_t>());
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

std::tuple<at::Tensor, at::Tensor> merge_samples_cuda(const at::Tensor& ta_in, const at::Tensor& va_in,
                                                      const at::Tensor& tb_in, const at::Tensor& vb_in) {
  check_merge_samples(ta_in, va_in, tb_in, vb_in);
  const c10::cuda::CUDAGuard guard(ta_in.device());
  const auto ta = ta_in.contiguous(), va = va_in.contiguous(), tb = tb_in.contiguous(), vb = vb_in.contiguous();
  const int64_t R = ta.size(0), A = ta.size(1), B = tb.size(1), K = va.size(2);
  auto t = at::empty({R, A + B}, ta.options());
  auto v = at::empty({R, A + B, K}, ta.options());
  if (R == 0) return {t, v};
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(ta.scalar_type(), "merge_samples_cuda", [&] {
    merge_kernel<scalar_t><<<blocks_for(R), kThreads, 0, stream>>>(
        ta.data_ptr<scalar_t>(), va.data_ptr<scalar_t>(), int(A), tb.data_ptr<scalar_t>(), vb.data_ptr<scalar_t>(),
        int(B), int(K), R, t.data_ptr<scalar_t>(), v.data_ptr<scalar_t>());
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {t, v};
}

std::tuple<at::Tensor, at::Tensor> merge_samples_bwd_cuda(const at::Tensor& vv_in, const at::Tensor& ta_in,
                                                          const at::Tensor& tb_in) {
  check_merge_samples_bwd(vv_in, ta_in, tb_in);
  const c10::cuda::CUDAGuard guard(ta_in.device());
  const auto vv = vv_in.contiguous(), ta = ta_in.contiguous(), tb = tb_in.contiguous();
  const int64_t R = ta.size(0), A = ta.size(1), B = tb.size(1);
  const int64_t K = vv.size(2);
  auto va = at::empty({R, A, K}, vv.options()), vb = at::empty({R, B, K}, vv.options());
  if (R == 0) return {va, vb};
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(ta.scalar_type(), "merge_samples_bwd_cuda", [&] {
    merge_bwd_kernel<scalar_t><<<blocks_for(R), kThreads, 0, stream>>>(
        ta.data_ptr<scalar_t>(), int(A), tb.data_ptr<scalar_t>(), int(B), int(K), R, vv.data_ptr<scalar_t>(),
        va.data_ptr<scalar_t>(), vb.data_ptr<scalar_t>());
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {va, vb};
}

at::Tensor ray_points_cuda(const at::Tensor& o_in, const at::Tensor& d_in, const at::Tensor& t_in) {
  check_ray_points(o_in, d_in, t_in);
  const c10::cuda::CUDAGuard guard(t_in.device());
  const auto o = o_in.contiguous(), d = d_in.contiguous(), t = t_in.contiguous();
  const int64_t R = t.size(0), S = t.size(1);
  auto p = at::empty({R, S, 3}, t.options());
  if (R * S == 0) return p;
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(t.scalar_type(), "ray_points_cuda", [&] {
    ray_points_kernel<scalar_t><<<blocks_for(R * S), kThreads, 0, stream>>>(
        o.data_ptr<scalar_t>(), d.data_ptr<scalar_t>(), t.data_ptr<scalar_t>(), R, int(S), p.data_ptr<scalar_t>());
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return p;
}

TORCH_LIBRARY_IMPL(lrm_fast, CUDA, m) {
  m.impl("ray_points", &ray_points_cuda);
  m.impl("generate_rays", &generate_rays_cuda);
  m.impl("ray_box", &ray_box_cuda);
  m.impl("stratified", &stratified_cuda);
  m.impl("importance", &importance_cuda);
  m.impl("merge_samples", &merge_samples_cuda);
  m.impl("merge_samples_bwd", &merge_samples_bwd_cuda);
}

}  // namespace lrm_fast
