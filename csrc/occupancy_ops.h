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

// origins/dirs [R, 3], t [R, S] (float), grid [B, G, G, G] bool with R = B * rays_per_item
inline void check_occupancy_rays(const char* op, const at::Tensor& o, const at::Tensor& d, const at::Tensor& t) {
  check_float(op, "t", t, t);
  TORCH_CHECK(t.dim() == 2, "lrm_fast.", op, ": t must be [R, S], got ", t.sizes());
  check_float(op, "origins", o, t);
  check_float(op, "dirs", d, t);
  check_shape(op, "origins", o, {t.size(0), 3});
  check_shape(op, "dirs", d, {t.size(0), 3});
}

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

}  // namespace lrm_fast
