// Fused compositing straight from raw field samples (the renderer's fast path), torch-free.
//
// Input per ray: S sorted sample depths t_k and the field's raw outputs raw_k = (density logit,
// 3 rgb logits). Per sample, as lrm_fast/ops/per_sample.py (the Python owner of this math, which
// the renderer and the twin call): outside the box [bmin, bmax]^3 (point o + t_k d) the raw
// density is MASKED_RAW_DENSITY = -1e4 and the color 0; inside, color = sigmoid(raw) * 1.002 - 0.001.
// Intervals, as per_sample.intervals (OpenLRM MipRayMarcher2 when midpoint): interval k in [0, S-2] has
// delta = t_{k+1} - t_k and
//   midpoint: rgb = (rgb_k + rgb_{k+1}) / 2, sigma = act((sr_k + sr_{k+1}) / 2 + bias), depth = mid
//   else:     rgb = rgb_k,                   sigma = act(sr_k + bias),                depth = t_k
// with act = softplus (threshold 20, as torch) or exp(min(x, 15)). Then composite.h's per-ray
// compositing runs on these intervals without ever storing them; the backward routes each
// interval's cotangents to its one or two samples (v_raw, [S, 4]).
#pragma once

#include "composite.h"

namespace lrm_fast {

template <typename T>
struct SampleIntervals {
  const T* raw;   // [S, 4]
  const T* t;     // [S]
  const T* o;     // [3]
  const T* d;     // [3]
  T bmin, bmax, bias;
  int act;        // 0 softplus, 1 exp
  bool midpoint;
  T* v_raw;       // [S, 4] (backward only; zeroed by the caller)

  LRM_HD bool inbox(int k) const {
    bool in = true;
    for (int a = 0; a < 3; ++a) {
      const T p = mul_add_rn(t[k], d[a], o[a]);
      in = in && p >= bmin && p <= bmax;
    }
    return in;
  }
  LRM_HD static T sigmoid(T x) { return T(1) / (T(1) + lrm_exp(-x)); }
  // Two-slot cache of gated samples: a forward walk asks for k, k+1, then k+1, k+2; a reverse
  // walk for k+1, k, then k, k-1. Either way each sample is gated and activated once.
  mutable int ck[2] = {-1, -1};
  mutable T csr[2];
  mutable T crgb[2][3];

  LRM_HD void sample(int k, T* sr, T* rgb) const {
    const int s = k & 1;
    if (ck[s] != k) {
      ck[s] = k;
      if (inbox(k)) {
        csr[s] = raw[4 * k];
        for (int c = 0; c < 3; ++c) crgb[s][c] = sigmoid(raw[4 * k + 1 + c]) * T(1.002) - T(0.001);
      } else {
        csr[s] = T(-1e4);
        crgb[s][0] = crgb[s][1] = crgb[s][2] = T(0);
      }
    }
    *sr = csr[s];
    for (int c = 0; c < 3; ++c) rgb[c] = crgb[s][c];
  }
  LRM_HD T activate(T x) const {
    if (act == 0) return x > T(20) ? x : lrm_log1p(lrm_exp(x));
    return lrm_exp(x < T(15) ? x : T(15));
  }
  LRM_HD T activate_grad(T x) const {
    if (act == 0) return x > T(20) ? T(1) : sigmoid(x);
    return x <= T(15) ? lrm_exp(x) : T(0);
  }
  LRM_HD T pre(int k) const {  // the activation's input of interval k
    T a, b, rgb[3];
    sample(k, &a, rgb);
    if (!midpoint) return a + bias;
    sample(k + 1, &b, rgb);
    return T(0.5) * (a + b) + bias;
  }
  // interval k: rgb[3], sigma, delta, depth
  LRM_HD void get(int k, T* rgb, T* sigma, T* delta, T* depth) const {
    T a, b, c0[3], c1[3];
    sample(k, &a, c0);
    *delta = t[k + 1] - t[k];
    if (midpoint) {
      sample(k + 1, &b, c1);
      for (int c = 0; c < 3; ++c) rgb[c] = T(0.5) * (c0[c] + c1[c]);
      *sigma = activate(T(0.5) * (a + b) + bias);
      *depth = T(0.5) * (t[k] + t[k + 1]);
    } else {
      for (int c = 0; c < 3; ++c) rgb[c] = c0[c];
      *sigma = activate(a + bias);
      *depth = t[k];
    }
  }
  // cotangents of interval k -> accumulated (pre-gating, pre-sigmoid) into v_raw of its samples
  LRM_HD void grad(int k, const T* v_rgb, T v_sigma) {
    const T v_x = v_sigma * activate_grad(pre(k));
    if (midpoint) {
      for (int j = k; j <= k + 1; ++j) {
        v_raw[4 * j] += T(0.5) * v_x;
        for (int c = 0; c < 3; ++c) v_raw[4 * j + 1 + c] += T(0.5) * v_rgb[c];
      }
    } else {
      v_raw[4 * k] += v_x;
      for (int c = 0; c < 3; ++c) v_raw[4 * k + 1 + c] += v_rgb[c];
    }
  }
  // after all grad() calls: through the gate and the widened sigmoid
  LRM_HD void finish(int S) {
    for (int k = 0; k < S; ++k) {
      if (!inbox(k)) {
        for (int c = 0; c < 4; ++c) v_raw[4 * k + c] = T(0);
        continue;
      }
      for (int c = 0; c < 3; ++c) {
        const T s = sigmoid(raw[4 * k + 1 + c]);
        v_raw[4 * k + 1 + c] *= T(1.002) * s * (T(1) - s);
      }
    }
  }
};

// forward over the S-1 intervals of S samples; returns intervals used
template <typename T>
LRM_HD int composite_samples_forward_ray(const SampleIntervals<T>& iv, int S, const T* bg, T thresh, T* color,
                                         T* depth, T* opacity, T* t_final) {
  const int n = S > 0 ? S - 1 : 0;
  const T stop = lrm_max(thresh, T(COMPOSITE_T_FLOOR));
  T trans = T(1), acc[3] = {T(0), T(0), T(0)}, accd = T(0), acco = T(0);
  int k = 0;
  while (k < n) {
    T rgb[3], sigma, delta, t;
    iv.get(k, rgb, &sigma, &delta, &t);
    const T alpha = T(1) - lrm_exp(-sigma * delta);
    const T w = alpha * trans;
    for (int c = 0; c < 3; ++c) acc[c] += w * rgb[c];
    accd += w * t;
    acco += w;
    trans *= T(1) - alpha + T(COMPOSITE_T_EPS);
    ++k;
    if (trans < stop) break;
  }
  for (int c = 0; c < 3; ++c) color[c] = acc[c] + (T(1) - acco) * bg[c];
  if (acco > T(0)) {
    *depth = accd / acco;
  } else if (n > 0) {
    T rgb[3], sigma, delta, t;
    iv.get(n - 1, rgb, &sigma, &delta, &t);
    *depth = t;
  } else {
    *depth = T(0);
  }
  *opacity = acco;
  *t_final = trans;
  return k;
}

template <typename T>
LRM_HD void composite_samples_weights_ray(const SampleIntervals<T>& iv, int S, T* w) {
  T trans = T(1);
  for (int k = 0; k + 1 < S; ++k) {
    T rgb[3], sigma, delta, t;
    iv.get(k, rgb, &sigma, &delta, &t);
    const T alpha = T(1) - lrm_exp(-sigma * delta);
    w[k] = alpha * trans;
    trans *= T(1) - alpha + T(COMPOSITE_T_EPS);
  }
}

// reverse walk (as composite_backward_ray); iv.v_raw must be zeroed; writes v_bg[3]
template <typename T>
LRM_HD void composite_samples_backward_ray(SampleIntervals<T>& iv, int S, const T* bg, int n_used, T opacity,
                                           T depth, T t_final, const T* v_color, T v_depth, T v_opacity, T* v_bg) {
  const T vd = opacity > T(0) ? v_depth / opacity : T(0);
  T trans = t_final, A = T(0);
  for (int k = n_used - 1; k >= 0; --k) {
    T rgb[3], sigma, delta, t;
    iv.get(k, rgb, &sigma, &delta, &t);
    const T e = lrm_exp(-sigma * delta);
    const T alpha = T(1) - e;
    const T keep = T(1) - alpha + T(COMPOSITE_T_EPS);
    trans /= keep;
    const T w = alpha * trans;
    const T g = v_color[0] * (rgb[0] - bg[0]) + v_color[1] * (rgb[1] - bg[1]) + v_color[2] * (rgb[2] - bg[2]) +
                v_opacity + vd * (t - depth);
    const T v_alpha = trans * (g - A);
    A = g * alpha + keep * A;
    const T v_rgb[3] = {w * v_color[0], w * v_color[1], w * v_color[2]};
    iv.grad(k, v_rgb, v_alpha * delta * e);
  }
  iv.finish(S);
  for (int c = 0; c < 3; ++c) v_bg[c] = (T(1) - opacity) * v_color[c];
}

// The rays of one composite_samples call, in either layout: dense (off == nullptr: ray i owns
// samples i * S .. i * S + S - 1 of t [R, S] and raw [R, S, 4]) or packed (occupancy_ops.h: ray i
// owns samples off[i] .. off[i + 1] - 1 of t [N] and raw [N, 4]). The dense and the packed ops,
// on CPU and CUDA, walk the same per-ray steps through it.
template <typename T>
struct SampleRays {
  const T *raw, *t, *o, *d;
  const int64_t* off;  // nullptr: dense
  int64_t S;           // dense: samples per ray; packed: the largest count (sizes CPU scratch)
  T bmin, bmax, bias;
  int act;             // 0 softplus, 1 exp
  bool midpoint;

  LRM_HD int64_t start(int64_t i) const { return off ? off[i] : i * S; }
  LRM_HD int count(int64_t i) const { return int(off ? off[i + 1] - off[i] : S); }
  // ray i's interval weights: dense w [R, S - 1]; packed w [N] (the ray's last sample gets 0)
  LRM_HD int64_t weights_start(int64_t i) const { return off ? off[i] : i * (S > 0 ? S - 1 : 0); }
  LRM_HD SampleIntervals<T> iv(int64_t i, T* v_raw = nullptr) const {
    const int64_t s = start(i);
    return SampleIntervals<T>{raw + 4 * s, t + s, o + 3 * i, d + 3 * i, bmin, bmax, bias, act, midpoint,
                              v_raw ? v_raw + 4 * s : nullptr};
  }

  LRM_HD int forward(int64_t i, const T* bg, T thresh, T* color, T* depth, T* opacity, T* t_final) const {
    return composite_samples_forward_ray<T>(iv(i), count(i), bg + 3 * i, thresh, color + 3 * i, depth + i,
                                            opacity + i, t_final + i);
  }
  LRM_HD void weights(int64_t i, T* w) const {
    const int n = count(i);
    T* wi = w + weights_start(i);
    if (off && n > 0) wi[n - 1] = T(0);
    composite_samples_weights_ray<T>(iv(i), n, wi);
  }
  // v_raw: the whole [R, S, 4] / [N, 4] cotangent, zeroed by the caller
  LRM_HD void backward(int64_t i, const T* bg, const int* n_used, const T* opacity, const T* depth, const T* t_final,
                       const T* v_color, const T* v_depth, const T* v_opacity, T* v_raw, T* v_bg) const {
    auto ivi = iv(i, v_raw);
    composite_samples_backward_ray<T>(ivi, count(i), bg + 3 * i, n_used[i], opacity[i], depth[i], t_final[i],
                                      v_color + 3 * i, v_depth[i], v_opacity[i], v_bg + 3 * i);
  }
};

}  // namespace lrm_fast
