// Packed (ragged) sample layout for empty-space skipping, shared by the CPU and CUDA entries.
//
// Rays carry different numbers of samples, stored back to back (nerfacc's packed layout, as CSR
// offsets): ray i owns samples offsets[i] .. offsets[i + 1] - 1 of t [N] and raw [N, 4], sorted by
// depth within the ray. offsets [R + 1] int64, offsets[0] = 0, non-decreasing, offsets[R] = N
// (nerfacc's packed_info [R, 2] is (offsets[:-1], diff(offsets))). Per ray the kernels run the
// very same per-ray functions as the dense composite_samples op (composite_samples.h, and on CPU
// float32 composite_vec_cpu.h), with that ray's pointer and sample count.
#pragma once


#include "checks.h"
#include "composite_ops.h"

namespace lrm_fast {

// raw [N, 4], t [N], offsets [R + 1] int64, origins/dirs [R, 3], background [R, 3] (optional)
inline void check_packed_samples(const char* op, const at::Tensor& raw, const at::Tensor& t,
                                 const at::Tensor& offsets, const at::Tensor& o, const at::Tensor& d,
                                 const at::Tensor* bg) {
  check_float(op, "t", t, t);
  TORCH_CHECK(t.dim() == 1, "lrm_fast.", op, ": t must be [N] (packed samples), got ", t.sizes());
  check_float(op, "raw", raw, t);
  check_shape(op, "raw", raw, {t.size(0), 4});
  TORCH_CHECK(offsets.scalar_type() == at::kLong, "lrm_fast.", op, ": offsets must be int64, got ",
              offsets.scalar_type());
  TORCH_CHECK(offsets.device() == t.device(), "lrm_fast.", op, ": offsets is on ", offsets.device(),
              " but t is on ", t.device());
  TORCH_CHECK(offsets.dim() == 1 && offsets.size(0) >= 1, "lrm_fast.", op, ": offsets must be [R + 1], got ",
              offsets.sizes());
  const int64_t R = offsets.size(0) - 1;
  check_float(op, "origins", o, t);
  check_float(op, "dirs", d, t);
  check_shape(op, "origins", o, {R, 3});
  check_shape(op, "dirs", d, {R, 3});
  if (bg) {
    check_float(op, "background", *bg, t);
    check_shape(op, "background", *bg, {R, 3});
  }
}

// the host-side half of the offsets check (CPU only: on CUDA it would cost a sync per call)
inline void check_offsets_host(const char* op, const int64_t* off, int64_t R, int64_t N) {
  TORCH_CHECK(off[0] == 0 && off[R] == N, "lrm_fast.", op, ": offsets must start at 0 and end at N = ", N,
              ", got ", off[0], " .. ", off[R]);
  for (int64_t i = 0; i < R; ++i)
    TORCH_CHECK(off[i + 1] >= off[i], "lrm_fast.", op, ": offsets must be non-decreasing (ray ", i, ": ",
                off[i], " > ", off[i + 1], ")");
}

}  // namespace lrm_fast

namespace lrm_fast {

// ---- the helpers of the per-op checks below ----

// origins/dirs [R, 3], t [R, S] (float)
inline void check_occupancy_rays(const char* op, const at::Tensor& o, const at::Tensor& d, const at::Tensor& t) {
  check_float(op, "t", t, t);
  TORCH_CHECK(t.dim() == 2, "lrm_fast.", op, ": t must be [R, S], got ", t.sizes());
  check_float(op, "origins", o, t);
  check_float(op, "dirs", d, t);
  check_shape(op, "origins", o, {t.size(0), 3});
  check_shape(op, "dirs", d, {t.size(0), 3});
}

// grid [B, G, G, G] bool with R = B * rays_per_item
inline void check_grid(const char* op, const at::Tensor& grid, const at::Tensor& t, int64_t rays_per_item) {
  TORCH_CHECK(grid.scalar_type() == at::kBool && grid.dim() == 4 && grid.size(1) == grid.size(2) &&
                  grid.size(2) == grid.size(3) && grid.size(1) >= 1,
              "lrm_fast.", op, ": grid must be a bool [B, G, G, G], got ", grid.scalar_type(), " ", grid.sizes());
  TORCH_CHECK(grid.device() == t.device(), "lrm_fast.", op, ": grid is on ", grid.device(), " but t is on ", t.device());
  TORCH_CHECK(rays_per_item >= 1 && grid.size(0) * rays_per_item == t.size(0), "lrm_fast.", op, ": ", t.size(0),
              " rays are not ", grid.size(0), " items x rays_per_item ", rays_per_item);
}

inline void check_flags(const char* op, const char* name, const at::Tensor& f, const at::Tensor& t) {
  TORCH_CHECK(f.scalar_type() == at::kBool && f.sizes() == t.sizes() && f.device() == t.device(), "lrm_fast.", op,
              ": ", name, " must be bool ", t.sizes(), " on ", t.device(), ", got ", f.scalar_type(), " ", f.sizes());
}

inline void check_offsets(const char* op, const at::Tensor& off, int64_t R, const at::Tensor& t) {
  TORCH_CHECK(off.scalar_type() == at::kLong && off.dim() == 1 && off.size(0) == R + 1 && off.device() == t.device(),
              "lrm_fast.", op, ": offsets must be int64 [", R + 1, "] on ", t.device(), ", got ", off.scalar_type(),
              " ", off.sizes());
}

// ---- one check per op: the CPU and CUDA entries call the same function ----

// composite_samples_packed_bwd: the forward's inputs plus the cotangents and n_used [R] int32
inline void check_packed_samples_bwd(const at::Tensor& v_color, const at::Tensor& v_depth,
                                     const at::Tensor& v_opacity, const at::Tensor& raw, const at::Tensor& t,
                                     const at::Tensor& offsets, const at::Tensor& o, const at::Tensor& d,
                                     const at::Tensor& bg, const at::Tensor& n_used) {
  const char* op = "composite_samples_packed_bwd";
  check_packed_samples(op, raw, t, offsets, o, d, &bg);
  check_composite_grads(op, v_color, &v_depth, &v_opacity, n_used, t, offsets.size(0) - 1);
}

// occupancy_mark: origins/dirs [R, 3], t [R, S], grid [B, G, G, G]
inline void check_occupancy_mark(const at::Tensor& o, const at::Tensor& d, const at::Tensor& t, const at::Tensor& grid,
                                 int64_t rays_per_item) {
  check_occupancy_rays("occupancy_mark", o, d, t);
  check_grid("occupancy_mark", grid, t, rays_per_item);
}

// occupancy_pack: origins/dirs [R, 3], t [R, S], keep [R, S] bool, offsets [R + 1]
inline void check_occupancy_pack(const at::Tensor& o, const at::Tensor& d, const at::Tensor& t, const at::Tensor& keep,
                                 const at::Tensor& off) {
  check_occupancy_rays("occupancy_pack", o, d, t);
  check_flags("occupancy_pack", "keep", keep, t);
  check_offsets("occupancy_pack", off, t.size(0), t);
}

// the packed total N = offsets[R] of a pack or gather output: the caller's n when it gives one (n >= 0),
// else read from the offsets. On CUDA that read is a host sync per call, so a caller that has N
// already (render/skipping.py reads every size of a pass in one copy) passes it, unchecked there; on
// the CPU the read is free and a given n must equal it.
inline int64_t packed_total(const char* op, const char* name, const at::Tensor& off, int64_t n) {
  if (n >= 0 && off.is_cuda()) return n;
  const int64_t have = off[off.size(0) - 1].item<int64_t>();
  TORCH_CHECK(n < 0 || n == have, "lrm_fast.", op, ": ", name, " must be ", have, " (the offsets' last entry), got ",
              n);
  return have;
}

// occupancy_unpack: values [N], keep [R, S] bool, offsets [R + 1] (N = offsets[R]: the CPU entry
// checks that on the host; on CUDA it would cost a sync)
inline void check_occupancy_unpack(const at::Tensor& v, const at::Tensor& keep, const at::Tensor& off) {
  const char* op = "occupancy_unpack";
  check_float(op, "values", v, v);
  TORCH_CHECK(keep.scalar_type() == at::kBool && keep.dim() == 2, "lrm_fast.", op, ": keep must be bool [R, S]");
  check_offsets(op, off, keep.size(0), v);
  TORCH_CHECK(v.dim() == 1, "lrm_fast.", op, ": values must be [N], got ", v.sizes());
}

// occupancy_merge: origins/dirs [R, 3], t_c/occ_c/keep_c [R, A], offsets_c [R + 1], t_f [R, B], grid
inline void check_occupancy_merge(const at::Tensor& o, const at::Tensor& d, const at::Tensor& tc, const at::Tensor& occ,
                                  const at::Tensor& keepc, const at::Tensor& offc, const at::Tensor& tf,
                                  const at::Tensor& grid, int64_t rays_per_item) {
  const char* op = "occupancy_merge";
  check_occupancy_rays(op, o, d, tc);
  check_float(op, "t_f", tf, tc);
  TORCH_CHECK(tf.dim() == 2 && tf.size(0) == tc.size(0), "lrm_fast.", op, ": t_f must be [R, B], got ", tf.sizes());
  check_flags(op, "occ_c", occ, tc);
  check_flags(op, "keep_c", keepc, tc);
  check_offsets(op, offc, tc.size(0), tc);
  check_grid(op, grid, tc, rays_per_item);
}

// occupancy_gather: origins/dirs [R, 3], t/keep/src [R, S], offsets/offsets_new [R + 1], raw_c [Nc, 4]
inline void check_occupancy_gather(const at::Tensor& o, const at::Tensor& d, const at::Tensor& t,
                                   const at::Tensor& keep, const at::Tensor& src, const at::Tensor& off,
                                   const at::Tensor& offn, const at::Tensor& rawc) {
  const char* op = "occupancy_gather";
  check_occupancy_rays(op, o, d, t);
  check_flags(op, "keep", keep, t);
  TORCH_CHECK(src.scalar_type() == at::kLong && src.sizes() == t.sizes(), "lrm_fast.", op, ": src must be int64 ",
              t.sizes());
  check_offsets(op, off, t.size(0), t);
  check_offsets(op, offn, t.size(0), t);
  check_float(op, "raw_c", rawc, t);
  TORCH_CHECK(rawc.dim() == 2 && rawc.size(1) == 4, "lrm_fast.", op, ": raw_c must be [Nc, 4], got ", rawc.sizes());
}

// ---- the entries of the packed compositing ops (schemas in ext.cpp), one template for both
// devices (occupancy_cpu.cpp registers <OnCpu>, occupancy_cuda.cu <OnCuda>): the checks, then the
// dense op's bodies (composite_ops.h) on the packed rays

// the offsets, contiguous; checked on the host where that is free (CPU; on CUDA callers build them
// with a cumulative sum of non-negative counts, lrm_fast/ops/occupancy.py)
template <typename Dev>
at::Tensor packed_offsets(const char* op, const at::Tensor& off, const at::Tensor& t) {
  auto offc = off.contiguous();
  if constexpr (Dev::kHost) check_offsets_host(op, offc.data_ptr<int64_t>(), offc.size(0) - 1, t.size(0));
  return offc;
}

template <typename Dev>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> composite_samples_packed_fwd_entry(
    const at::Tensor& raw, const at::Tensor& t, const at::Tensor& off, const at::Tensor& o, const at::Tensor& d,
    const at::Tensor& bg, double bmin, double bmax, double bias, int64_t act, bool midpoint, double thresh) {
  const char* op = "composite_samples_packed_fwd";
  check_packed_samples(op, raw, t, off, o, d, &bg);
  const auto offc = packed_offsets<Dev>(op, off, t);
  return composite_samples_fwd_rays(Dev{}, raw, t, &offc, o, d, bg, {bmin, bmax, bias, act, midpoint}, thresh);
}

template <typename Dev>
std::tuple<at::Tensor, at::Tensor> composite_samples_packed_bwd_entry(
    const at::Tensor& v_color, const at::Tensor& v_depth, const at::Tensor& v_opacity, const at::Tensor& raw,
    const at::Tensor& t, const at::Tensor& off, const at::Tensor& o, const at::Tensor& d, const at::Tensor& bg,
    double bmin, double bmax, double bias, int64_t act, bool midpoint, const at::Tensor& depth,
    const at::Tensor& opacity, const at::Tensor& t_final, const at::Tensor& n_used) {
  check_packed_samples_bwd(v_color, v_depth, v_opacity, raw, t, off, o, d, bg, n_used);
  const auto offc = packed_offsets<Dev>("composite_samples_packed_bwd", off, t);
  return composite_samples_bwd_rays(Dev{}, v_color, v_depth, v_opacity, raw, t, &offc, o, d, bg,
                                    {bmin, bmax, bias, act, midpoint}, depth, opacity, t_final, n_used);
}

// w[off_i + k] = weight of interval k of ray i (k < S_i - 1); the ray's last sample gets 0
template <typename Dev>
at::Tensor composite_samples_packed_weights_entry(const at::Tensor& raw, const at::Tensor& t, const at::Tensor& off,
                                                  const at::Tensor& o, const at::Tensor& d, double bmin, double bmax,
                                                  double bias, int64_t act, bool midpoint) {
  const char* op = "composite_samples_packed_weights";
  check_packed_samples(op, raw, t, off, o, d, nullptr);
  const auto offc = packed_offsets<Dev>(op, off, t);
  auto w = at::empty({t.size(0)}, t.options());
  composite_samples_weights_rays(Dev{}, raw, t, &offc, o, d, {bmin, bmax, bias, act, midpoint}, w);
  return w;
}

// what each device registers for the packed compositing ops (occupancy_cpu.cpp, occupancy_cuda.cu)
template <typename Dev>
void register_packed_composite(torch::Library& m) {
  m.impl("composite_samples_packed_fwd", &composite_samples_packed_fwd_entry<Dev>);
  m.impl("composite_samples_packed_bwd", &composite_samples_packed_bwd_entry<Dev>);
  m.impl("composite_samples_packed_weights", &composite_samples_packed_weights_entry<Dev>);
}

}  // namespace lrm_fast
