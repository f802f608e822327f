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
#include "occupancy.h"
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

std::tuple<at::Tensor, at::Tensor, at::Tensor> occupancy_mark_cuda(const at::Tensor& o_in, const at::Tensor& d_in,
                                                                   const at::Tensor& t_in, const at::Tensor& grid_in,
                                                                   int64_t rays_per_item, double bmin, double bmax) {
  const char* op = "occupancy_mark";
  check_occupancy_rays(op, o_in, d_in, t_in);
  check_grid(op, grid_in, t_in, rays_per_item);
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
                                                       const at::Tensor& off_in) {
  const char* op = "occupancy_pack";
  check_occupancy_rays(op, o_in, d_in, t_in);
  check_flags(op, "keep", keep_in, t_in);
  check_offsets(op, off_in, t_in.size(0), t_in);
  const c10::cuda::CUDAGuard guard(t_in.device());
  const auto o = o_in.contiguous(), d = d_in.contiguous(), t = t_in.contiguous(), keep = keep_in.contiguous();
  const auto off = off_in.contiguous();
  const int64_t R = t.size(0), S = t.size(1);
  const int64_t N = off[R].item<int64_t>();  // a host sync: the output size
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
  const char* op = "occupancy_unpack";
  check_float(op, "values", v_in, v_in);
  TORCH_CHECK(keep_in.scalar_type() == at::kBool && keep_in.dim() == 2, "lrm_fast.", op, ": keep must be bool [R, S]");
  check_offsets(op, off_in, keep_in.size(0), v_in);
  TORCH_CHECK(v_in.dim() == 1, "lrm_fast.", op, ": values must be [N], got ", v_in.sizes());
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
  const char* op = "occupancy_merge";
  check_occupancy_rays(op, o_in, d_in, tc_in);
  check_float(op, "t_f", tf_in, tc_in);
  TORCH_CHECK(tf_in.dim() == 2 && tf_in.size(0) == tc_in.size(0), "lrm_fast.", op, ": t_f must be [R, B], got ",
              tf_in.sizes());
  check_flags(op, "occ_c", occ_in, tc_in);
  check_flags(op, "keep_c", keepc_in, tc_in);
  check_offsets(op, offc_in, tc_in.size(0), tc_in);
  check_grid(op, grid_in, tc_in, rays_per_item);
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
    const at::Tensor& src_in, const at::Tensor& off_in, const at::Tensor& offn_in, const at::Tensor& rawc_in) {
  const char* op = "occupancy_gather";
  check_occupancy_rays(op, o_in, d_in, t_in);
  check_flags(op, "keep", keep_in, t_in);
  TORCH_CHECK(src_in.scalar_type() == at::kLong && src_in.sizes() == t_in.sizes(), "lrm_fast.", op,
              ": src must be int64 ", t_in.sizes());
  check_offsets(op, off_in, t_in.size(0), t_in);
  check_offsets(op, offn_in, t_in.size(0), t_in);
  check_float(op, "raw_c", rawc_in, t_in);
  TORCH_CHECK(rawc_in.dim() == 2 && rawc_in.size(1) == 4, "lrm_fast.", op, ": raw_c must be [Nc, 4], got ",
              rawc_in.sizes());
  const c10::cuda::CUDAGuard guard(t_in.device());
  const auto o = o_in.contiguous(), d = d_in.contiguous(), t = t_in.contiguous(), keep = keep_in.contiguous();
  const auto src = src_in.contiguous(), off = off_in.contiguous(), offn = offn_in.contiguous();
  const auto rawc = rawc_in.contiguous();
  const int64_t R = t.size(0), S = t.size(1);
  const int64_t N = off[R].item<int64_t>(), Nn = offn[R].item<int64_t>();  // host syncs: the output sizes
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
  m.impl("composite_samples_packed_fwd", &composite_samples_packed_fwd_cuda);
  m.impl("composite_samples_packed_bwd", &composite_samples_packed_bwd_cuda);
  m.impl("composite_samples_packed_weights", &composite_samples_packed_weights_cuda);
}

}  // namespace lrm_fast
