// CPU kernels of the packed compositing ops (empty-space skipping; layout in occupancy_ops.h):
// threads over rays; per ray the same code as the dense composite_samples op on that ray's
// slice: float32 runs the vectorized per-ray functions of composite_vec_cpu.h (per ISA, picked by
// cpu_isa.h as composite_cpu.cpp does), float64 and LRM_FAST_COMPOSITE_SCALAR=1 the scalar LRM_HD
// functions of composite_samples.h that the CUDA kernels run. A ray with fewer than 2 samples has
// no interval: background, depth 0, opacity 0.
//
// no-trapping-math: see composite_cpu.cpp (the included vector code needs it to vectorize).
#pragma GCC optimize("no-trapping-math")

#include <algorithm>
#include <cstdlib>
#include <string>
#include <vector>

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include "composite_samples.h"
#include "composite_vec_cpu.h"
#include "cpu_isa.h"
#include "occupancy.h"
#include "occupancy_ops.h"

namespace lrm_fast {

namespace {
constexpr int64_t kGrain = 64;

bool use_vector(at::ScalarType dtype) { return cpu_isa::composite_vector(dtype == at::kFloat); }

using Isa = int;  // cpu_isa.h: the extension's one picker (detected once; LRM_FAST_CPU_ISA caps it)
Isa isa() { return cpu_isa::current(); }

struct PackedArgs {
  const float *raw, *t, *o, *d, *bg;
  const int64_t* off;
  float bmin, bmax, bias, thresh;
  int act;
  bool mid;
  SampleIntervals<float> iv(int64_t i) const {
    return SampleIntervals<float>{raw + 4 * off[i], t + off[i], o + 3 * i, d + 3 * i, bmin, bmax, bias, act, mid,
                                  nullptr};
  }
  int count(int64_t i) const { return int(off[i + 1] - off[i]); }
};

// one instantiation per (activation, midpoint), as composite_vec_cpu_impl.h
#define LRM_PACKED_ACT_MID(act, mid, CALL) \
  do {                                     \
    if ((act) == 0 && (mid)) {             \
      CALL(0, true);                       \
    } else if ((act) == 0) {               \
      CALL(0, false);                      \
    } else if (mid) {                      \
      CALL(1, true);                       \
    } else {                               \
      CALL(1, false);                      \
    }                                      \
  } while (0)

// The per-ISA range functions: NS is the namespace of composite_vec_cpu.h compiled for that ISA.
#define LRM_PACKED_RANGES(NS)                                                                                       \
  void fwd_range_##NS(const PackedArgs& a, int64_t b, int64_t e, vecdata::SampleScratch& sc, float* color,          \
                      float* depth, float* opacity, float* t_final, int* n_used) {                                  \
    for (int64_t i = b; i < e; ++i) {                                                                               \
      const auto iv = a.iv(i);                                                                                      \
      const int S = a.count(i);                                                                                     \
      LRM_PACKED_ACT_MID(a.act, a.mid, LRM_FWD_CALL);                                                               \
    }                                                                                                               \
  }                                                                                                                 \
  void weights_range_##NS(const PackedArgs& a, int64_t b, int64_t e, vecdata::SampleScratch& sc, float* w) {        \
    for (int64_t i = b; i < e; ++i) {                                                                               \
      const auto iv = a.iv(i);                                                                                      \
      const int S = a.count(i);                                                                                     \
      if (S > 0) w[a.off[i] + S - 1] = 0.0f;                                                                        \
      LRM_PACKED_ACT_MID(a.act, a.mid, LRM_W_CALL);                                                                 \
    }                                                                                                               \
  }                                                                                                                 \
  void bwd_range_##NS(const PackedArgs& a, int64_t b, int64_t e, vecdata::SampleScratch& sc, const float* vc,       \
                      const float* vd, const float* vo, const float* dep, const float* opa, const int* nu,          \
                      float* v_raw, float* v_bg) {                                                                  \
    for (int64_t i = b; i < e; ++i) {                                                                               \
      const auto iv = a.iv(i);                                                                                      \
      const int S = a.count(i);                                                                                     \
      LRM_PACKED_ACT_MID(a.act, a.mid, LRM_BWD_CALL);                                                               \
    }                                                                                                               \
  }

#define LRM_FWD_CALL(A, M)                                                                                \
  n_used[i] = NSX::samples_forward_ray_impl<A, M>(iv, S, a.bg + 3 * i, a.thresh, sc, color + 3 * i, depth + i, \
                                                  opacity + i, t_final + i)
#define LRM_W_CALL(A, M) NSX::samples_weights_ray_impl<A, M>(iv, S, sc, w + a.off[i])
#define LRM_BWD_CALL(A, M)                                                                                      \
  NSX::samples_backward_ray_impl<A, M>(iv, S, a.bg + 3 * i, nu[i], opa[i], dep[i], vc + 3 * i, vd[i], vo[i], sc, \
                                       v_raw + 4 * a.off[i], v_bg + 3 * i)

#define NSX vec
LRM_PACKED_RANGES(vec)
#undef NSX
#if defined(LRM_VEC_X86)
// compiled for the same targets as the namespaces they call (composite_vec_cpu.h): the per-ray
// functions are always_inline and must inline into code of their own ISA
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define NSX vec_avx2
LRM_PACKED_RANGES(vec_avx2)
#undef NSX
#pragma GCC pop_options
#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")
#define NSX vec_avx512
LRM_PACKED_RANGES(vec_avx512)
#undef NSX
#pragma GCC pop_options
#endif

#if defined(LRM_VEC_X86)
#define LRM_PACKED_ISA_CALL(which, NAME, ...)                         \
  do {                                                                \
    switch (which) {                                                  \
      case cpu_isa::kAvx512: NAME##_vec_avx512(__VA_ARGS__); break;       \
      case cpu_isa::kAvx2: NAME##_vec_avx2(__VA_ARGS__); break;           \
      default: NAME##_vec(__VA_ARGS__);                               \
    }                                                                 \
  } while (0)
#else
#define LRM_PACKED_ISA_CALL(which, NAME, ...) \
  do {                                        \
    (void)(which);                            \
    NAME##_vec(__VA_ARGS__);                  \
  } while (0)
#endif

// the largest sample count of one ray (sizes the per-thread scratch of the vector code)
int64_t max_count(const int64_t* off, int64_t R) {
  int64_t m = 0;
  for (int64_t i = 0; i < R; ++i) m = std::max(m, off[i + 1] - off[i]);
  return m;
}

template <typename T>
SampleIntervals<T> make_iv(const T* raw, const T* t, const T* o, const T* d, const int64_t* off, int64_t i,
                           double bmin, double bmax, double bias, int64_t act, bool midpoint, T* v_raw) {
  return SampleIntervals<T>{raw + 4 * off[i], t + off[i], o + 3 * i, d + 3 * i, T(bmin), T(bmax), T(bias), int(act),
                            midpoint, v_raw ? v_raw + 4 * off[i] : nullptr};
}

PackedArgs packed_args(const at::Tensor& raw, const at::Tensor& t, const at::Tensor& off, const at::Tensor& o,
                       const at::Tensor& d, const at::Tensor* bg, double bmin, double bmax, double bias,
                       int64_t act, bool midpoint, double thresh) {
  return PackedArgs{raw.data_ptr<float>(), t.data_ptr<float>(), o.data_ptr<float>(), d.data_ptr<float>(),
                    bg ? bg->data_ptr<float>() : nullptr, off.data_ptr<int64_t>(), float(bmin), float(bmax),
                    float(bias), float(thresh), int(act), midpoint};
}
}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> composite_samples_packed_fwd_cpu(
    const at::Tensor& raw_in, const at::Tensor& t_in, const at::Tensor& off_in, const at::Tensor& o_in,
    const at::Tensor& d_in, const at::Tensor& bg_in, double bmin, double bmax, double bias, int64_t act,
    bool midpoint, double thresh) {
  const char* op = "composite_samples_packed_fwd";
  check_packed_samples(op, raw_in, t_in, off_in, o_in, d_in, &bg_in);
  const auto raw = raw_in.contiguous(), t = t_in.contiguous(), off = off_in.contiguous();
  const auto o = o_in.contiguous(), d = d_in.contiguous(), bg = bg_in.contiguous();
  const int64_t R = off.size(0) - 1;
  const int64_t* offp = off.data_ptr<int64_t>();
  check_offsets_host(op, offp, R, t.size(0));
  auto color = at::empty({R, 3}, t.options());
  auto depth = at::empty({R}, t.options()), opacity = at::empty({R}, t.options());
  auto t_final = at::empty({R}, t.options());
  auto n_used = at::empty({R}, t.options().dtype(at::kInt));
  if (const Isa which = isa(); use_vector(t.scalar_type())) {
    const auto a = packed_args(raw, t, off, o, d, &bg, bmin, bmax, bias, act, midpoint, thresh);
    const int64_t smax = max_count(offp, R);
    float *oc = color.data_ptr<float>(), *od = depth.data_ptr<float>(), *oo = opacity.data_ptr<float>();
    float* ot = t_final.data_ptr<float>();
    int* on = n_used.data_ptr<int>();
    at::parallel_for(0, R, kGrain, [&](int64_t b, int64_t e) {
      std::vector<float> scratch(vecdata::samples_scratch_floats(smax));
      vecdata::SampleScratch sc(scratch.data(), smax);
      LRM_PACKED_ISA_CALL(which, fwd_range, a, b, e, sc, oc, od, oo, ot, on);
    });
    return {color, depth, opacity, t_final, n_used};
  }
  AT_DISPATCH_FLOATING_TYPES(t.scalar_type(), "composite_samples_packed_fwd_cpu", [&] {
    const scalar_t *rp = raw.data_ptr<scalar_t>(), *tp = t.data_ptr<scalar_t>();
    const scalar_t *op_ = o.data_ptr<scalar_t>(), *dp = d.data_ptr<scalar_t>(), *bp = bg.data_ptr<scalar_t>();
    scalar_t *oc = color.data_ptr<scalar_t>(), *od = depth.data_ptr<scalar_t>();
    scalar_t *oo = opacity.data_ptr<scalar_t>(), *ot = t_final.data_ptr<scalar_t>();
    int* on = n_used.data_ptr<int>();
    at::parallel_for(0, R, kGrain, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        const auto iv = make_iv<scalar_t>(rp, tp, op_, dp, offp, i, bmin, bmax, bias, act, midpoint, nullptr);
        on[i] = composite_samples_forward_ray<scalar_t>(iv, int(offp[i + 1] - offp[i]), bp + 3 * i,
                                                        scalar_t(thresh), oc + 3 * i, od + i, oo + i, ot + i);
      }
    });
  });
  return {color, depth, opacity, t_final, n_used};
}

std::tuple<at::Tensor, at::Tensor> composite_samples_packed_bwd_cpu(
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
  const auto raw = raw_in.contiguous(), t = t_in.contiguous(), off = off_in.contiguous();
  const auto o = o_in.contiguous(), d = d_in.contiguous(), bg = bg_in.contiguous();
  const auto v_color = v_color_in.contiguous(), v_depth = v_depth_in.to(t.scalar_type()).contiguous();
  const auto v_opacity = v_opacity_in.to(t.scalar_type()).contiguous();
  const auto depth = depth_in.contiguous(), opacity = opacity_in.contiguous(), t_final = t_final_in.contiguous();
  const auto n_used = n_used_in.contiguous();
  const int64_t* offp = off.data_ptr<int64_t>();
  check_offsets_host(op, offp, R, N);
  auto v_bg = at::empty({R, 3}, t.options());
  if (const Isa which = isa(); use_vector(t.scalar_type())) {
    auto v_raw = at::empty({N, 4}, t.options());  // every ray's slice is written whole
    const auto a = packed_args(raw, t, off, o, d, &bg, bmin, bmax, bias, act, midpoint, 0.0);
    const int64_t smax = max_count(offp, R);
    const float *vc = v_color.data_ptr<float>(), *vd = v_depth.data_ptr<float>(), *vo = v_opacity.data_ptr<float>();
    const float *dep = depth.data_ptr<float>(), *opa = opacity.data_ptr<float>();
    const int* nu = n_used.data_ptr<int>();
    float *g_raw = v_raw.data_ptr<float>(), *g_bg = v_bg.data_ptr<float>();
    at::parallel_for(0, R, kGrain, [&](int64_t b, int64_t e) {
      std::vector<float> scratch(vecdata::samples_scratch_floats(smax));
      vecdata::SampleScratch sc(scratch.data(), smax);
      LRM_PACKED_ISA_CALL(which, bwd_range, a, b, e, sc, vc, vd, vo, dep, opa, nu, g_raw, g_bg);
    });
    return {v_raw, v_bg};
  }
  auto v_raw = at::zeros({N, 4}, t.options());  // the scalar walk accumulates into it
  AT_DISPATCH_FLOATING_TYPES(t.scalar_type(), "composite_samples_packed_bwd_cpu", [&] {
    const scalar_t *rp = raw.data_ptr<scalar_t>(), *tp = t.data_ptr<scalar_t>();
    const scalar_t *op_ = o.data_ptr<scalar_t>(), *dp = d.data_ptr<scalar_t>(), *bp = bg.data_ptr<scalar_t>();
    const scalar_t *vc = v_color.data_ptr<scalar_t>(), *vd = v_depth.data_ptr<scalar_t>();
    const scalar_t *vo = v_opacity.data_ptr<scalar_t>(), *dep = depth.data_ptr<scalar_t>();
    const scalar_t *opa = opacity.data_ptr<scalar_t>(), *tf = t_final.data_ptr<scalar_t>();
    const int* nu = n_used.data_ptr<int>();
    scalar_t *g_raw = v_raw.data_ptr<scalar_t>(), *g_bg = v_bg.data_ptr<scalar_t>();
    at::parallel_for(0, R, kGrain, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        auto iv = make_iv<scalar_t>(rp, tp, op_, dp, offp, i, bmin, bmax, bias, act, midpoint, g_raw);
        composite_samples_backward_ray<scalar_t>(iv, int(offp[i + 1] - offp[i]), bp + 3 * i, nu[i], opa[i], dep[i],
                                                 tf[i], vc + 3 * i, vd[i], vo[i], g_bg + 3 * i);
      }
    });
  });
  return {v_raw, v_bg};
}

at::Tensor composite_samples_packed_weights_cpu(const at::Tensor& raw_in, const at::Tensor& t_in,
                                                const at::Tensor& off_in, const at::Tensor& o_in,
                                                const at::Tensor& d_in, double bmin, double bmax, double bias,
                                                int64_t act, bool midpoint) {
  const char* op = "composite_samples_packed_weights";
  check_packed_samples(op, raw_in, t_in, off_in, o_in, d_in, nullptr);
  const auto raw = raw_in.contiguous(), t = t_in.contiguous(), off = off_in.contiguous();
  const auto o = o_in.contiguous(), d = d_in.contiguous();
  const int64_t R = off.size(0) - 1, N = t.size(0);
  const int64_t* offp = off.data_ptr<int64_t>();
  check_offsets_host(op, offp, R, N);
  // w[off_i + k] = weight of interval k of ray i (k < S_i - 1); the ray's last sample gets 0
  auto w = at::empty({N}, t.options());
  if (const Isa which = isa(); use_vector(t.scalar_type())) {
    const auto a = packed_args(raw, t, off, o, d, nullptr, bmin, bmax, bias, act, midpoint, 0.0);
    const int64_t smax = max_count(offp, R);
    float* wp = w.data_ptr<float>();
    at::parallel_for(0, R, kGrain, [&](int64_t b, int64_t e) {
      std::vector<float> scratch(vecdata::samples_scratch_floats(smax));
      vecdata::SampleScratch sc(scratch.data(), smax);
      LRM_PACKED_ISA_CALL(which, weights_range, a, b, e, sc, wp);
    });
    return w;
  }
  AT_DISPATCH_FLOATING_TYPES(t.scalar_type(), "composite_samples_packed_weights_cpu", [&] {
    const scalar_t *rp = raw.data_ptr<scalar_t>(), *tp = t.data_ptr<scalar_t>();
    const scalar_t *op_ = o.data_ptr<scalar_t>(), *dp = d.data_ptr<scalar_t>();
    scalar_t* wp = w.data_ptr<scalar_t>();
    at::parallel_for(0, R, kGrain, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        const int S = int(offp[i + 1] - offp[i]);
        if (S > 0) wp[offp[i] + S - 1] = scalar_t(0);
        const auto iv = make_iv<scalar_t>(rp, tp, op_, dp, offp, i, bmin, bmax, bias, act, midpoint, nullptr);
        composite_samples_weights_ray<scalar_t>(iv, S, wp + offp[i]);
      }
    });
  });
  return w;
}


// ---------------------------------------------------------------------------------------------
// the per-ray skipping steps (occupancy.h), threads over rays

std::tuple<at::Tensor, at::Tensor, at::Tensor> occupancy_mark_cpu(const at::Tensor& o_in, const at::Tensor& d_in,
                                                                  const at::Tensor& t_in, const at::Tensor& grid_in,
                                                                  int64_t rays_per_item, double bmin, double bmax) {
  const char* op = "occupancy_mark";
  check_occupancy_rays(op, o_in, d_in, t_in);
  check_grid(op, grid_in, t_in, rays_per_item);
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
                                                      const at::Tensor& off_in) {
  const char* op = "occupancy_pack";
  check_occupancy_rays(op, o_in, d_in, t_in);
  check_flags(op, "keep", keep_in, t_in);
  check_offsets(op, off_in, t_in.size(0), t_in);
  const auto o = o_in.contiguous(), d = d_in.contiguous(), t = t_in.contiguous(), keep = keep_in.contiguous();
  const auto off = off_in.contiguous();
  const int64_t R = t.size(0), S = t.size(1);
  const int64_t* offp = off.data_ptr<int64_t>();
  const int64_t N = offp[R];
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
  const char* op = "occupancy_unpack";
  check_float(op, "values", v_in, v_in);
  TORCH_CHECK(keep_in.scalar_type() == at::kBool && keep_in.dim() == 2, "lrm_fast.", op, ": keep must be bool [R, S]");
  check_offsets(op, off_in, keep_in.size(0), v_in);
  const auto v = v_in.contiguous(), keep = keep_in.contiguous(), off = off_in.contiguous();
  const int64_t R = keep.size(0), S = keep.size(1);
  const int64_t* offp = off.data_ptr<int64_t>();
  TORCH_CHECK(v.dim() == 1 && v.size(0) == offp[R], "lrm_fast.", op, ": values must be [N] with N = ", offp[R],
              ", got ", v.sizes());
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
  const char* op = "occupancy_merge";
  check_occupancy_rays(op, o_in, d_in, tc_in);
  check_float(op, "t_f", tf_in, tc_in);
  TORCH_CHECK(tf_in.dim() == 2 && tf_in.size(0) == tc_in.size(0), "lrm_fast.", op, ": t_f must be [R, B], got ",
              tf_in.sizes());
  check_flags(op, "occ_c", occ_in, tc_in);
  check_flags(op, "keep_c", keepc_in, tc_in);
  check_offsets(op, offc_in, tc_in.size(0), tc_in);
  check_grid(op, grid_in, tc_in, rays_per_item);
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
  const auto o = o_in.contiguous(), d = d_in.contiguous(), t = t_in.contiguous(), keep = keep_in.contiguous();
  const auto src = src_in.contiguous(), off = off_in.contiguous(), offn = offn_in.contiguous();
  const auto rawc = rawc_in.contiguous();
  const int64_t R = t.size(0), S = t.size(1);
  const int64_t *offp = off.data_ptr<int64_t>(), *offnp = offn.data_ptr<int64_t>();
  const int64_t N = offp[R], Nn = offnp[R];
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
  m.impl("composite_samples_packed_fwd", &composite_samples_packed_fwd_cpu);
  m.impl("composite_samples_packed_bwd", &composite_samples_packed_bwd_cpu);
  m.impl("composite_samples_packed_weights", &composite_samples_packed_weights_cpu);
}

}  // namespace lrm_fast
