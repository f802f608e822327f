// CUDA kernels of the packed compositing ops (empty-space skipping; layout in occupancy_ops.h):
// one thread per ray running composite_samples.h on that ray's slice of the packed samples (the
// same per-ray functions as the dense composite_samples op and as the CPU float64 path). The
// offsets are not validated on the device (that would cost a host sync per call): callers build
// them with a cumulative sum of non-negative counts (lrm_fast/ops/occupancy.py).
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "composite_samples.h"
#include "occupancy_ops.h"

namespace lrm_fast {

namespace {

constexpr int kThreads = 128;
inline unsigned blocks_for(int64_t n) { return unsigned((n + kThreads - 1) / kThreads); }

struct PackedParams {
  double bmin, bmax, bias;
  int act;
  bool midpoint;
};

template <typename T>
__device__ SampleIntervals<T> make_packed_iv(const T* raw, const T* t, const T* o, const T* d, const int64_t* off,
                                             int64_t i, const PackedParams& p, T* v_raw) {
  return SampleIntervals<T>{raw + 4 * off[i], t + off[i], o + 3 * i, d + 3 * i, T(p.bmin), T(p.bmax), T(p.bias),
                            p.act, p.midpoint, v_raw ? v_raw + 4 * off[i] : nullptr};
}

template <typename T>
__global__ void packed_fwd_kernel(const T* raw, const T* t, const int64_t* off, const T* o, const T* d, const T* bg,
                                  int64_t R, PackedParams p, T thresh, T* color, T* depth, T* opacity, T* t_final,
                                  int* n_used) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= R) return;
  const auto iv = make_packed_iv<T>(raw, t, o, d, off, i, p, nullptr);
  n_used[i] = composite_samples_forward_ray<T>(iv, int(off[i + 1] - off[i]), bg + 3 * i, thresh, color + 3 * i,
                                               depth + i, opacity + i, t_final + i);
}

template <typename T>
__global__ void packed_bwd_kernel(const T* v_color, const T* v_depth, const T* v_opacity, const T* raw, const T* t,
                                  const int64_t* off, const T* o, const T* d, const T* bg, const T* depth,
                                  const T* opacity, const T* t_final, const int* n_used, int64_t R, PackedParams p,
                                  T* v_raw, T* v_bg) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= R) return;
  auto iv = make_packed_iv<T>(raw, t, o, d, off, i, p, v_raw);
  composite_samples_backward_ray<T>(iv, int(off[i + 1] - off[i]), bg + 3 * i, n_used[i], opacity[i], depth[i],
                                    t_final[i], v_color + 3 * i, v_depth[i], v_opacity[i], v_bg + 3 * i);
}

template <typename T>
__global__ void packed_weights_kernel(const T* raw, const T* t, const int64_t* off, const T* o, const T* d,
                                      int64_t R, PackedParams p, T* w) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= R) return;
  const int S = int(off[i + 1] - off[i]);
  if (S > 0) w[off[i] + S - 1] = T(0);
  const auto iv = make_packed_iv<T>(raw, t, o, d, off, i, p, nullptr);
  composite_samples_weights_ray<T>(iv, S, w + off[i]);
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> composite_samples_packed_fwd_cuda(
    const at::Tensor& raw_in, const at::Tensor& t_in, const at::Tensor& off_in, const at::Tensor& o_in,
    const at::Tensor& d_in, const at::Tensor& bg_in, double bmin, double bmax, double bias, int64_t act,
    bool midpoint, double thresh) {
  check_packed_samples("composite_samples_packed_fwd", raw_in, t_in, off_in, o_in, d_in, &bg_in);
  const c10::cuda::CUDAGuard guard(t_in.device());
  const auto raw = raw_in.contiguous(), t = t_in.contiguous(), off = off_in.contiguous();
  const auto o = o_in.contiguous(), d = d_in.contiguous(), bg = bg_in.contiguous();
  const int64_t R = off.size(0) - 1;
  auto color = at::empty({R, 3}, t.options());
  auto depth = at::empty({R}, t.options()), opacity = at::empty({R}, t.options());
  auto t_final = at::empty({R}, t.options());
  auto n_used = at::empty({R}, t.options().dtype(at::kInt));
  if (R == 0) return {color, depth, opacity, t_final, n_used};
  const PackedParams p{bmin, bmax, bias, int(act), midpoint};
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(t.scalar_type(), "composite_samples_packed_fwd_cuda", [&] {
    packed_fwd_kernel<scalar_t><<<blocks_for(R), kThreads, 0, stream>>>(
        raw.data_ptr<scalar_t>(), t.data_ptr<scalar_t>(), off.data_ptr<int64_t>(), o.data_ptr<scalar_t>(),
        d.data_ptr<scalar_t>(), bg.data_ptr<scalar_t>(), R, p, scalar_t(thresh), color.data_ptr<scalar_t>(),
        depth.data_ptr<scalar_t>(), opacity.data_ptr<scalar_t>(), t_final.data_ptr<scalar_t>(),
        n_used.data_ptr<int>());
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {color, depth, opacity, t_final, n_used};
}

std::tuple<at::Tensor, at::Tensor> composite_samples_packed_bwd_cuda(
    const at::Tensor& v_color_in, const at::Tensor& v_depth_in, const at::Tensor& v_opacity_in,
    const at::Tensor& raw_in, const at::Tensor& t_in, const at::Tensor& off_in, const at::Tensor& o_in,
    const at::Tensor& d_in, const at::Tensor& bg_in, double bmin, double bmax, double bias, int64_t act,
    bool midpoint, const at::Tensor& depth_in, const at::Tensor& opacity_in, const at::Tensor& t_final_in,
    const at::Tensor& n_used_in) {
  const char* op = "composite_samples_packed_bwd";
  check_packed_samples(op, raw_in, t_in, off_in, o_in, d_in, &bg_in);
  const int64_t R = off_in.size(0) - 1, N = t_in.size(0);
  check_float(op, "v_color", v_color_in, t_in);
  check_shape(op, "v_color", v_color_in, {R, 3});
  check_shape(op, "v_depth", v_depth_in, {R});
  check_shape(op, "v_opacity", v_opacity_in, {R});
  check_shape(op, "n_used", n_used_in, {R});
  TORCH_CHECK(n_used_in.scalar_type() == at::kInt, "lrm_fast.", op, ": n_used must be int32");
  const c10::cuda::CUDAGuard guard(t_in.device());
  const auto raw = raw_in.contiguous(), t = t_in.contiguous(), off = off_in.contiguous();
  const auto o = o_in.contiguous(), d = d_in.contiguous(), bg = bg_in.contiguous();
  const auto v_color = v_color_in.contiguous(), v_depth = v_depth_in.to(t.scalar_type()).contiguous();
  const auto v_opacity = v_opacity_in.to(t.scalar_type()).contiguous();
  const auto depth = depth_in.contiguous(), opacity = opacity_in.contiguous(), t_final = t_final_in.contiguous();
  const auto n_used = n_used_in.contiguous();
  auto v_raw = at::zeros({N, 4}, t.options());
  auto v_bg = at::empty({R, 3}, t.options());
  if (R == 0) return {v_raw, v_bg};
  const PackedParams p{bmin, bmax, bias, int(act), midpoint};
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(t.scalar_type(), "composite_samples_packed_bwd_cuda", [&] {
    packed_bwd_kernel<scalar_t><<<blocks_for(R), kThreads, 0, stream>>>(
        v_color.data_ptr<scalar_t>(), v_depth.data_ptr<scalar_t>(), v_opacity.data_ptr<scalar_t>(),
        raw.data_ptr<scalar_t>(), t.data_ptr<scalar_t>(), off.data_ptr<int64_t>(), o.data_ptr<scalar_t>(),
        d.data_ptr<scalar_t>(), bg.data_ptr<scalar_t>(), depth.data_ptr<scalar_t>(), opacity.data_ptr<scalar_t>(),
        t_final.data_ptr<scalar_t>(), n_used.data_ptr<int>(), R, p, v_raw.data_ptr<scalar_t>(),
        v_bg.data_ptr<scalar_t>());
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {v_raw, v_bg};
}

at::Tensor composite_samples_packed_weights_cuda(const at::Tensor& raw_in, const at::Tensor& t_in,
                                                 const at::Tensor& off_in, const at::Tensor& o_in,
                                                 const at::Tensor& d_in, double bmin, double bmax, double bias,
                                                 int64_t act, bool midpoint) {
  check_packed_samples("composite_samples_packed_weights", raw_in, t_in, off_in, o_in, d_in, nullptr);
  const c10::cuda::CUDAGuard guard(t_in.device());
  const auto raw = raw_in.contiguous(), t = t_in.contiguous(), off = off_in.contiguous();
  const auto o = o_in.contiguous(), d = d_in.contiguous();
  const int64_t R = off.size(0) - 1;
  auto w = at::empty({t.size(0)}, t.options());
  if (R == 0 || t.size(0) == 0) return w;
  const PackedParams p{bmin, bmax, bias, int(act), midpoint};
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(t.scalar_type(), "composite_samples_packed_weights_cuda", [&] {
    packed_weights_kernel<scalar_t><<<blocks_for(R), kThreads, 0, stream>>>(
        raw.data_ptr<scalar_t>(), t.data_ptr<scalar_t>(), off.data_ptr<int64_t>(), o.data_ptr<scalar_t>(),
        d.data_ptr<scalar_t>(), R, p, w.data_ptr<scalar_t>());
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return w;
}

TORCH_LIBRARY_IMPL(lrm_fast, CUDA, m) {
  m.impl("composite_samples_packed_fwd", &composite_samples_packed_fwd_cuda);
  m.impl("composite_samples_packed_bwd", &composite_samples_packed_bwd_cuda);
  m.impl("composite_samples_packed_weights", &composite_samples_packed_weights_cuda);
}

}  // namespace lrm_fast
