// CUDA kernels of the empty-space skipping steps (occupancy.h; one thread per ray) and the entries
// of the packed compositing ops (layout in occupancy_ops.h), whose bodies are the dense
// composite_samples op's (composite_cuda.cu: composite_samples.h on each ray's slice). The offsets
// are not validated on the device (that would cost a host sync per call): callers build them with
// a cumulative sum of non-negative counts (lrm_fast/ops/occupancy.py).
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "occupancy.h"
#include "occupancy_ops.h"

namespace lrm_fast {

namespace {

constexpr int kThreads = 128;
inline unsigned blocks_for(int64_t n) { return unsigned((n + kThreads - 1) / kThreads); }

template <typename T>
__global__ void mark_kernel(const T* o, const T* d, const T* t, int64_t R, int S, const bool* grid, int G,
                            int64_t rays_per_item, T bmin, T bmax, T scale, bool* occ, bool* keep, int64_t* counts) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= R) return;
  counts[i] = occupancy_mark_ray<T>(o + 3 * i, d + 3 * i, t + i * S, S, grid + (i / rays_per_item) * G * G * G, G,
                                    bmin, bmax, scale, occ + i * S, keep + i * S);
}

template <typename T>
__global__ void pack_kernel(const T* o, const T* d, const T* t, const bool* keep, const int64_t* off, int64_t R, int S,
                            T* t_p, T* pts) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= R) return;
  pack_ray<T>(o + 3 * i, d + 3 * i, t + i * S, keep + i * S, S, t_p + off[i], pts + 3 * off[i]);
}

template <typename T>
__global__ void unpack_kernel(const T* v, const bool* keep, const int64_t* off, int64_t R, int S, T* out) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= R) return;
  unpack_ray<T>(v + off[i], keep + i * S, S, out + i * S);
}

template <typename T>
__global__ void merge_kernel(const T* o, const T* d, const T* tc, const bool* occ, const bool* keepc,
                             const int64_t* offc, const T* tf, int64_t R, int A, int B, const bool* grid, int G,
                             int64_t rays_per_item, T bmin, T bmax, T scale, T* t, bool* keep, int64_t* src,
                             int64_t* counts, int64_t* need) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= R) return;
  occupancy_merge_ray<T>(o + 3 * i, d + 3 * i, tc + i * A, occ + i * A, keepc + i * A, A, offc[i], tf + i * B, B,
                         grid + (i / rays_per_item) * G * G * G, G, bmin, bmax, scale, t + i * (A + B),
                         keep + i * (A + B), src + i * (A + B), counts + i, need + i);
}

template <typename T>
__global__ void gather_kernel(const T* o, const T* d, const T* t, const bool* keep, const int64_t* src,
                              const int64_t* off, const int64_t* offn, const T* rawc, int64_t R, int S, T* t_p,
                              T* raw_p, T* pts, int64_t* pos) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= R) return;
  gather_merged_ray<T>(o + 3 * i, d + 3 * i, t + i * S, keep + i * S, src + i * S, S, rawc, off[i], t_p + off[i],
                       raw_p + 4 * off[i], offn[i], pts + 3 * offn[i], pos + offn[i]);
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> occupancy_mark_cuda(const at::Tensor& o_in, const at::Tensor& d_in,
                                                                   const at::Tensor& t_in, const at::Tensor& grid_in,
                                                                   int64_t rays_per_item, double bmin, double bmax) {
  check_occupancy_mark(o_in, d_in, t_in, grid_in, rays_per_item);
  const c10::cuda::CUDAGuard guard(t_in.device());
  const auto o = o_in.contiguous(), d = d_in.contiguous(), t = t_in.contiguous(), grid = grid_in.contiguous();
  const int64_t R = t.size(0), S = t.size(1), G = grid.size(1);
  auto occ = at::empty({R, S}, t.options().dtype(at::kBool)), keep = at::empty({R, S}, t.options().dtype(at::kBool));
  auto counts = at::empty({R}, t.options().dtype(at::kLong));
  if (R == 0) return {occ, keep, counts};
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(t.scalar_type(), "occupancy_mark_cuda", [&] {
    mark_kernel<scalar_t><<<blocks_for(R), kThreads, 0, stream>>>(
        o.data_ptr<scalar_t>(), d.data_ptr<scalar_t>(), t.data_ptr<scalar_t>(), R, int(S), grid.data_ptr<bool>(),
        int(G), rays_per_item, scalar_t(bmin), scalar_t(bmax), scalar_t(double(G) / (bmax - bmin)),
        occ.data_ptr<bool>(), keep.data_ptr<bool>(), counts.data_ptr<int64_t>());
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {occ, keep, counts};
}

std::tuple<at::Tensor, at::Tensor> occupancy_pack_cuda(const at::Tensor& o_in, const at::Tensor& d_in,
                                                       const at::Tensor& t_in, const at::Tensor& keep_in,
                                                       const at::Tensor& off_in, int64_t n) {
  check_occupancy_pack(o_in, d_in, t_in, keep_in, off_in);
  const c10::cuda::CUDAGuard guard(t_in.device());
  const auto o = o_in.contiguous(), d = d_in.contiguous(), t = t_in.contiguous(), keep = keep_in.contiguous();
  const auto off = off_in.contiguous();
  const int64_t R = t.size(0), S = t.size(1);
  const int64_t N = packed_total("occupancy_pack", "n", off, n);  // not given: a host sync
  auto t_p = at::empty({N}, t.options()), pts = at::empty({N, 3}, t.options());
  if (R == 0 || N == 0) return {t_p, pts};
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(t.scalar_type(), "occupancy_pack_cuda", [&] {
    pack_kernel<scalar_t><<<blocks_for(R), kThreads, 0, stream>>>(
        o.data_ptr<scalar_t>(), d.data_ptr<scalar_t>(), t.data_ptr<scalar_t>(), keep.data_ptr<bool>(),
        off.data_ptr<int64_t>(), R, int(S), t_p.data_ptr<scalar_t>(), pts.data_ptr<scalar_t>());
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {t_p, pts};
}

at::Tensor occupancy_unpack_cuda(const at::Tensor& v_in, const at::Tensor& keep_in, const at::Tensor& off_in) {
  check_occupancy_unpack(v_in, keep_in, off_in);
  const c10::cuda::CUDAGuard guard(v_in.device());
  const auto v = v_in.contiguous(), keep = keep_in.contiguous(), off = off_in.contiguous();
  const int64_t R = keep.size(0), S = keep.size(1);
  auto out = at::empty({R, S}, v.options());
  if (R == 0 || S == 0) return out;
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(v.scalar_type(), "occupancy_unpack_cuda", [&] {
    unpack_kernel<scalar_t><<<blocks_for(R), kThreads, 0, stream>>>(
        v.data_ptr<scalar_t>(), keep.data_ptr<bool>(), off.data_ptr<int64_t>(), R, int(S), out.data_ptr<scalar_t>());
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> occupancy_merge_cuda(
    const at::Tensor& o_in, const at::Tensor& d_in, const at::Tensor& tc_in, const at::Tensor& occ_in,
    const at::Tensor& keepc_in, const at::Tensor& offc_in, const at::Tensor& tf_in, const at::Tensor& grid_in,
    int64_t rays_per_item, double bmin, double bmax) {
  check_occupancy_merge(o_in, d_in, tc_in, occ_in, keepc_in, offc_in, tf_in, grid_in, rays_per_item);
  const c10::cuda::CUDAGuard guard(tc_in.device());
  const auto o = o_in.contiguous(), d = d_in.contiguous(), tc = tc_in.contiguous(), occ = occ_in.contiguous();
  const auto keepc = keepc_in.contiguous(), offc = offc_in.contiguous(), tf = tf_in.contiguous();
  const auto grid = grid_in.contiguous();
  const int64_t R = tc.size(0), A = tc.size(1), B = tf.size(1), G = grid.size(1);
  auto t = at::empty({R, A + B}, tc.options()), keep = at::empty({R, A + B}, tc.options().dtype(at::kBool));
  auto src = at::empty({R, A + B}, tc.options().dtype(at::kLong));
  auto counts = at::empty({R}, tc.options().dtype(at::kLong)), need = at::empty({R}, tc.options().dtype(at::kLong));
  if (R == 0) return {t, keep, src, counts, need};
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(tc.scalar_type(), "occupancy_merge_cuda", [&] {
    merge_kernel<scalar_t><<<blocks_for(R), kThreads, 0, stream>>>(
        o.data_ptr<scalar_t>(), d.data_ptr<scalar_t>(), tc.data_ptr<scalar_t>(), occ.data_ptr<bool>(),
        keepc.data_ptr<bool>(), offc.data_ptr<int64_t>(), tf.data_ptr<scalar_t>(), R, int(A), int(B),
        grid.data_ptr<bool>(), int(G), rays_per_item, scalar_t(bmin), scalar_t(bmax),
        scalar_t(double(G) / (bmax - bmin)), t.data_ptr<scalar_t>(), keep.data_ptr<bool>(), src.data_ptr<int64_t>(),
        counts.data_ptr<int64_t>(), need.data_ptr<int64_t>());
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {t, keep, src, counts, need};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> occupancy_gather_cuda(
    const at::Tensor& o_in, const at::Tensor& d_in, const at::Tensor& t_in, const at::Tensor& keep_in,
    const at::Tensor& src_in, const at::Tensor& off_in, const at::Tensor& offn_in, const at::Tensor& rawc_in,
    int64_t n, int64_t n_need) {
  check_occupancy_gather(o_in, d_in, t_in, keep_in, src_in, off_in, offn_in, rawc_in);
  const c10::cuda::CUDAGuard guard(t_in.device());
  const auto o = o_in.contiguous(), d = d_in.contiguous(), t = t_in.contiguous(), keep = keep_in.contiguous();
  const auto src = src_in.contiguous(), off = off_in.contiguous(), offn = offn_in.contiguous();
  const auto rawc = rawc_in.contiguous();
  const int64_t R = t.size(0), S = t.size(1);
  // the output sizes (each one not given: a host sync)
  const int64_t N = packed_total("occupancy_gather", "n", off, n);
  const int64_t Nn = packed_total("occupancy_gather", "n_need", offn, n_need);
  auto t_p = at::empty({N}, t.options()), raw_p = at::empty({N, 4}, t.options());
  auto pts = at::empty({Nn, 3}, t.options()), pos = at::empty({Nn}, t.options().dtype(at::kLong));
  if (R == 0 || N == 0) return {t_p, raw_p, pts, pos};
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(t.scalar_type(), "occupancy_gather_cuda", [&] {
    gather_kernel<scalar_t><<<blocks_for(R), kThreads, 0, stream>>>(
        o.data_ptr<scalar_t>(), d.data_ptr<scalar_t>(), t.data_ptr<scalar_t>(), keep.data_ptr<bool>(),
        src.data_ptr<int64_t>(), off.data_ptr<int64_t>(), offn.data_ptr<int64_t>(), rawc.data_ptr<scalar_t>(), R,
        int(S), t_p.data_ptr<scalar_t>(), raw_p.data_ptr<scalar_t>(), pts.data_ptr<scalar_t>(),
        pos.data_ptr<int64_t>());
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {t_p, raw_p, pts, pos};
}

TORCH_LIBRARY_IMPL(lrm_fast, CUDA, m) {
  m.impl("occupancy_mark", &occupancy_mark_cuda);
  m.impl("occupancy_pack", &occupancy_pack_cuda);
  m.impl("occupancy_unpack", &occupancy_unpack_cuda);
  m.impl("occupancy_merge", &occupancy_merge_cuda);
  m.impl("occupancy_gather", &occupancy_gather_cuda);
  register_packed_composite<OnCuda>(m);
}

}  // namespace lrm_fast
