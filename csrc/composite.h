// Alpha compositing of one ray, forward and analytic backward, torch-free.
//
// For intervals k = 0..S-1 with density sigma_k, length delta_k, color c_k, depth t_k:
//   alpha_k = 1 - exp(-sigma_k delta_k),  T_0 = 1,  T_{k+1} = T_k (1 - alpha_k + 1e-10)
//   w_k = alpha_k T_k,  O = sum w_k,  C = sum w_k c_k + (1 - O) bg,  D = sum w_k t_k / O
// (D = t_{S-1} where O == 0). The forward stops after the first interval whose T_{k+1} drops
// below max(thresh, T_FLOOR); everything after it would add less than T_{k+1} per channel.
// T_FLOOR keeps T_final a normal float, so the backward can walk in reverse and recover
// T_k = T_{k+1} / (1 - alpha_k + 1e-10) from the stored T_final: no [S] buffer, O(rays) memory.
//
// Backward, with g_k = dL/dw_k = v_C . (c_k - bg) + v_O + v_D (t_k - D) / O and the suffix
// A_k = (sum_{m>=k} g_m w_m) / T_k, which obeys A_k = g_k alpha_k + (1 - alpha_k + eps) A_{k+1}:
//   dL/dalpha_k = T_k (g_k - A_{k+1}),   dL/dsigma_k = dL/dalpha_k delta_k (1 - alpha_k)
//   dL/dc_k = w_k v_C,                   dL/dbg = (1 - O) v_C
// (no cumprod, no division by 1 - alpha, no cancellation).
#pragma once

#include "common.h"

namespace lrm_fast {

constexpr double COMPOSITE_T_EPS = 1e-10;  // OpenLRM/EG3D's epsilon inside the cumprod
constexpr double COMPOSITE_T_FLOOR = 1e-20;

// rgb [S*3], sigma/deltas/depths [S], bg [3]; writes color[3], *depth, *opacity, *t_final
// (T after the last used interval) and returns how many intervals were used.
template <typename T>
LRM_HD int composite_forward_ray(const T* rgb, const T* sigma, const T* deltas, const T* depths,
                                 const T* bg, int S, T thresh, T* color, T* depth, T* opacity,
                                 T* t_final) {
  const T stop = lrm_max(thresh, T(COMPOSITE_T_FLOOR));
  T trans = T(1), acc0 = T(0), acc1 = T(0), acc2 = T(0), accd = T(0), acco = T(0);
  int k = 0;
  while (k < S) {
    const T alpha = T(1) - lrm_exp(-sigma[k] * deltas[k]);
    const T w = alpha * trans;
    acc0 += w * rgb[3 * k + 0];
    acc1 += w * rgb[3 * k + 1];
    acc2 += w * rgb[3 * k + 2];
    accd += w * depths[k];
    acco += w;
    trans *= T(1) - alpha + T(COMPOSITE_T_EPS);
    ++k;
    if (trans < stop) break;
  }
  color[0] = acc0 + (T(1) - acco) * bg[0];
  color[1] = acc1 + (T(1) - acco) * bg[1];
  color[2] = acc2 + (T(1) - acco) * bg[2];
  *depth = acco > T(0) ? accd / acco : (S > 0 ? depths[S - 1] : T(0));
  *opacity = acco;
  *t_final = trans;
  return k;
}

// Per-interval weights only (they drive importance sampling); w [S], zero after termination.
template <typename T>
LRM_HD void composite_weights_ray(const T* sigma, const T* deltas, int S, T* w) {
  T trans = T(1);
  for (int k = 0; k < S; ++k) {
    const T alpha = T(1) - lrm_exp(-sigma[k] * deltas[k]);
    w[k] = alpha * trans;
    trans *= T(1) - alpha + T(COMPOSITE_T_EPS);
  }
}

// Reverse walk over the n_used intervals the forward used. Writes v_rgb [S*3], v_sigma [S]
// (zeros after n_used) and v_bg [3].
template <typename T>
LRM_HD void composite_backward_ray(const T* rgb, const T* sigma, const T* deltas, const T* depths,
                                   const T* bg, int S, int n_used, T opacity, T depth, T t_final,
                                   const T* v_color, T v_depth, T v_opacity, T* v_rgb, T* v_sigma,
                                   T* v_bg) {
  for (int k = n_used; k < S; ++k) {
    v_sigma[k] = T(0);
    v_rgb[3 * k + 0] = v_rgb[3 * k + 1] = v_rgb[3 * k + 2] = T(0);
  }
  const T vd = opacity > T(0) ? v_depth / opacity : T(0);
  T trans = t_final, A = T(0);
  for (int k = n_used - 1; k >= 0; --k) {
    const T e = lrm_exp(-sigma[k] * deltas[k]);
    const T alpha = T(1) - e;
    const T keep = T(1) - alpha + T(COMPOSITE_T_EPS);
    trans /= keep;  // now T_k
    const T w = alpha * trans;
    const T g = v_color[0] * (rgb[3 * k + 0] - bg[0]) + v_color[1] * (rgb[3 * k + 1] - bg[1]) +
                v_color[2] * (rgb[3 * k + 2] - bg[2]) + v_opacity + vd * (depths[k] - depth);
    const T v_alpha = trans * (g - A);
    A = g * alpha + keep * A;
    v_sigma[k] = v_alpha * deltas[k] * e;
    v_rgb[3 * k + 0] = w * v_color[0];
    v_rgb[3 * k + 1] = w * v_color[1];
    v_rgb[3 * k + 2] = w * v_color[2];
  }
  v_bg[0] = (T(1) - opacity) * v_color[0];
  v_bg[1] = (T(1) - opacity) * v_color[1];
  v_bg[2] = (T(1) - opacity) * v_color[2];
}

}  // namespace lrm_fast
