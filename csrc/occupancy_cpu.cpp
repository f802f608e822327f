// CPU kernels of the empty-space skipping steps (occupancy.h; threads over rays) and the entries
// of the packed compositing ops (layout in occupancy_ops.h), whose bodies are the dense
// composite_samples op's (composite_cpu.cpp: the same per-ray code on each ray's slice; float32
// vectorized, float64 and LRM_FAST_COMPOSITE_SCALAR=1 the scalar LRM_HD code the CUDA kernels
// run). A ray with fewer than 2 samples has no interval: background, depth 0, opacity 0.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "occupancy.h"
#include "occupancy_ops.h"

namespace lrm_fast {

namespace {
constexpr int64_t kGrain = 64;
}  // namespace
std::tuple<at::Tensor, at::Tensor, at::Tensor> occupancy_mark_cpu(const at::Tensor& o_in, const at::Tensor& d_in,
                                                                  const at::Tensor& t_in, const at::Tensor& grid_in,
                                                                  int64_t rays_per_item, double bmin, double bmax) {
  check_occupancy_mark(o_in, d_in, t_in, grid_in, rays_per_item);
  const auto o = o_in.contiguous(), d = d_in.contiguous(), t = t_in.contiguous(), grid = grid_in.contiguous();
  const int64_t R = t.size(0), S = t.size(1), G = grid.size(1);
  auto occ = at::empty({R, S}, t.options().dtype(at::kBool)), keep = at::empty({R, S}, t.options().dtype(at::kBool));
  auto counts = at::empty({R}, t.options().dtype(at::kLong));
  AT_DISPATCH_FLOATING_TYPES(t.scalar_type(), "occupancy_mark_cpu", [&] {
    const scalar_t *op_ = o.data_ptr<scalar_t>(), *dp = d.data_ptr<scalar_t>(), *tp = t.data_ptr<scalar_t>();
    const bool* gp = grid.data_ptr<bool>();
    bool *oc = occ.data_ptr<bool>(), *kp = keep.data_ptr<bool>();
    int64_t* cp = counts.data_ptr<int64_t>();
    const scalar_t scale = scalar_t(double(G) / (bmax - bmin));
    at::parallel_for(0, R, kGrain, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i)
        cp[i] = occupancy_mark_ray<scalar_t>(op_ + 3 * i, dp + 3 * i, tp + i * S, int(S),
                                             gp + (i / rays_per_item) * G * G * G, int(G), scalar_t(bmin),
                                             scalar_t(bmax), scale, oc + i * S, kp + i * S);
    });
  });
  return {occ, keep, counts};
}

std::tuple<at::Tensor, at::Tensor> occupancy_pack_cpu(const at::Tensor& o_in, const at::Tensor& d_in,
                                                      const at::Tensor& t_in, const at::Tensor& keep_in,
                                                      const at::Tensor& off_in, int64_t n) {
  check_occupancy_pack(o_in, d_in, t_in, keep_in, off_in);
  const auto o = o_in.contiguous(), d = d_in.contiguous(), t = t_in.contiguous(), keep = keep_in.contiguous();
  const auto off = off_in.contiguous();
  const int64_t R = t.size(0), S = t.size(1);
  const int64_t* offp = off.data_ptr<int64_t>();
  const int64_t N = packed_total("occupancy_pack", "n", off, n);
  auto t_p = at::empty({N}, t.options()), pts = at::empty({N, 3}, t.options());
  AT_DISPATCH_FLOATING_TYPES(t.scalar_type(), "occupancy_pack_cpu", [&] {
    const scalar_t *op_ = o.data_ptr<scalar_t>(), *dp = d.data_ptr<scalar_t>(), *tp = t.data_ptr<scalar_t>();
    const bool* kp = keep.data_ptr<bool>();
    scalar_t *tpp = t_p.data_ptr<scalar_t>(), *pp = pts.data_ptr<scalar_t>();
    at::parallel_for(0, R, kGrain, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i)
        pack_ray<scalar_t>(op_ + 3 * i, dp + 3 * i, tp + i * S, kp + i * S, int(S), tpp + offp[i], pp + 3 * offp[i]);
    });
  });
  return {t_p, pts};
}

at::Tensor occupancy_unpack_cpu(const at::Tensor& v_in, const at::Tensor& keep_in, const at::Tensor& off_in) {
  check_occupancy_unpack(v_in, keep_in, off_in);
  const auto v = v_in.contiguous(), keep = keep_in.contiguous(), off = off_in.contiguous();
  const int64_t R = keep.size(0), S = keep.size(1);
  const int64_t* offp = off.data_ptr<int64_t>();
  TORCH_CHECK(v.size(0) == offp[R], "lrm_fast.occupancy_unpack: values must be [N] with N = ", offp[R], ", got ",
              v.sizes());
  auto out = at::empty({R, S}, v.options());
  AT_DISPATCH_FLOATING_TYPES(v.scalar_type(), "occupancy_unpack_cpu", [&] {
    const scalar_t* vp = v.data_ptr<scalar_t>();
    const bool* kp = keep.data_ptr<bool>();
    scalar_t* outp = out.data_ptr<scalar_t>();
    at::parallel_for(0, R, kGrain, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) unpack_ray<scalar_t>(vp + offp[i], kp + i * S, int(S), outp + i * S);
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> occupancy_merge_cpu(
    const at::Tensor& o_in, const at::Tensor& d_in, const at::Tensor& tc_in, const at::Tensor& occ_in,
    const at::Tensor& keepc_in, const at::Tensor& offc_in, const at::Tensor& tf_in, const at::Tensor& grid_in,
    int64_t rays_per_item, double bmin, double bmax) {
  check_occupancy_merge(o_in, d_in, tc_in, occ_in, keepc_in, offc_in, tf_in, grid_in, rays_per_item);
  const auto o = o_in.contiguous(), d = d_in.contiguous(), tc = tc_in.contiguous(), occ = occ_in.contiguous();
  const auto keepc = keepc_in.contiguous(), offc = offc_in.contiguous(), tf = tf_in.contiguous();
  const auto grid = grid_in.contiguous();
  const int64_t R = tc.size(0), A = tc.size(1), B = tf.size(1), G = grid.size(1);
  auto t = at::empty({R, A + B}, tc.options()), keep = at::empty({R, A + B}, tc.options().dtype(at::kBool));
  auto src = at::empty({R, A + B}, tc.options().dtype(at::kLong));
  auto counts = at::empty({R}, tc.options().dtype(at::kLong)), need = at::empty({R}, tc.options().dtype(at::kLong));
  AT_DISPATCH_FLOATING_TYPES(tc.scalar_type(), "occupancy_merge_cpu", [&] {
    const scalar_t *op_ = o.data_ptr<scalar_t>(), *dp = d.data_ptr<scalar_t>();
    const scalar_t *tcp = tc.data_ptr<scalar_t>(), *tfp = tf.data_ptr<scalar_t>();
    const bool *occp = occ.data_ptr<bool>(), *kcp = keepc.data_ptr<bool>(), *gp = grid.data_ptr<bool>();
    const int64_t* ocp = offc.data_ptr<int64_t>();
    scalar_t* tp = t.data_ptr<scalar_t>();
    bool* kp = keep.data_ptr<bool>();
    int64_t *sp = src.data_ptr<int64_t>(), *cp = counts.data_ptr<int64_t>(), *np = need.data_ptr<int64_t>();
    const scalar_t scale = scalar_t(double(G) / (bmax - bmin));
    at::parallel_for(0, R, kGrain, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i)
        occupancy_merge_ray<scalar_t>(op_ + 3 * i, dp + 3 * i, tcp + i * A, occp + i * A, kcp + i * A, int(A), ocp[i],
                                      tfp + i * B, int(B), gp + (i / rays_per_item) * G * G * G, int(G),
                                      scalar_t(bmin), scalar_t(bmax), scale, tp + i * (A + B), kp + i * (A + B),
                                      sp + i * (A + B), cp + i, np + i);
    });
  });
  return {t, keep, src, counts, need};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> occupancy_gather_cpu(
    const at::Tensor& o_in, const at::Tensor& d_in, const at::Tensor& t_in, const at::Tensor& keep_in,
    const at::Tensor& src_in, const at::Tensor& off_in, const at::Tensor& offn_in, const at::Tensor& rawc_in,
    int64_t n, int64_t n_need) {
  check_occupancy_gather(o_in, d_in, t_in, keep_in, src_in, off_in, offn_in, rawc_in);
  const auto o = o_in.contiguous(), d = d_in.contiguous(), t = t_in.contiguous(), keep = keep_in.contiguous();
  const auto src = src_in.contiguous(), off = off_in.contiguous(), offn = offn_in.contiguous();
  const auto rawc = rawc_in.contiguous();
  const int64_t R = t.size(0), S = t.size(1);
  const int64_t *offp = off.data_ptr<int64_t>(), *offnp = offn.data_ptr<int64_t>();
  const int64_t N = packed_total("occupancy_gather", "n", off, n);
  const int64_t Nn = packed_total("occupancy_gather", "n_need", offn, n_need);
  auto t_p = at::empty({N}, t.options()), raw_p = at::empty({N, 4}, t.options());
  auto pts = at::empty({Nn, 3}, t.options()), pos = at::empty({Nn}, t.options().dtype(at::kLong));
  AT_DISPATCH_FLOATING_TYPES(t.scalar_type(), "occupancy_gather_cpu", [&] {
    const scalar_t *op_ = o.data_ptr<scalar_t>(), *dp = d.data_ptr<scalar_t>(), *tp = t.data_ptr<scalar_t>();
    const scalar_t* rcp = rawc.data_ptr<scalar_t>();
    const bool* kp = keep.data_ptr<bool>();
    const int64_t* sp = src.data_ptr<int64_t>();
    scalar_t *tpp = t_p.data_ptr<scalar_t>(), *rpp = raw_p.data_ptr<scalar_t>(), *pp = pts.data_ptr<scalar_t>();
    int64_t* posp = pos.data_ptr<int64_t>();
    at::parallel_for(0, R, kGrain, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i)
        gather_merged_ray<scalar_t>(op_ + 3 * i, dp + 3 * i, tp + i * S, kp + i * S, sp + i * S, int(S), rcp, offp[i],
                                    tpp + offp[i], rpp + 4 * offp[i], offnp[i], pp + 3 * offnp[i], posp + offnp[i]);
    });
  });
  return {t_p, raw_p, pts, pos};
}

TORCH_LIBRARY_IMPL(lrm_fast, CPU, m) {
  m.impl("occupancy_mark", &occupancy_mark_cpu);
  m.impl("occupancy_pack", &occupancy_pack_cpu);
  m.impl("occupancy_unpack", &occupancy_unpack_cpu);
  m.impl("occupancy_merge", &occupancy_merge_cpu);
  m.impl("occupancy_gather", &occupancy_gather_cpu);
  register_packed_composite<OnCpu>(m);
}

}  // namespace lrm_fast
