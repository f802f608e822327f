// Empty-space skipping, per ray, torch-free (LRM_HD: the CPU and CUDA kernels run these).
//
// Occupancy of a sample: its point p = o + t d (rounded as ray_points / the renderer's gate, no
// FMA) is occupied when it is inside the box [bmin, bmax]^3 (the gate's own comparison) and its
// cell of the item's G^3 grid is marked; cell index floor((p - bmin) * (G / (bmax - bmin))),
// clamped to [0, G - 1] (the upper face belongs to the last cell). A sample is kept when it or a
// neighbour along the ray is occupied (a midpoint interval needs both of its samples).
// lrm_fast/ops/occupancy.py holds the twins and render/skipping.py the algorithm.
#pragma once

#include <cstdint>

#include "common.h"

namespace lrm_fast {

template <typename T>
LRM_HD bool sample_occupied(const T* o, const T* d, T t, const bool* grid, int G, T bmin, T bmax, T scale) {
  int idx[3];
  for (int a = 0; a < 3; ++a) {
    const T p = mul_add_rn(t, d[a], o[a]);
    if (!(p >= bmin && p <= bmax)) return false;
    T f = (p - bmin) * scale;
    f = f < T(0) ? T(0) : f;
    int i = int(f);  // f >= 0: truncation is floor
    idx[a] = i > G - 1 ? G - 1 : i;
  }
  return grid[(int64_t(idx[0]) * G + idx[1]) * G + idx[2]];
}

// keep[k] = occ[k-1] | occ[k] | occ[k+1], in place over flags that hold occ on entry; returns the count
LRM_HD int64_t keep_neighbours(bool* flags, int S) {
  bool prev = false;
  int64_t n = 0;
  for (int k = 0; k < S; ++k) {
    const bool cur = flags[k];
    const bool next = k + 1 < S ? flags[k + 1] : false;
    flags[k] = prev || cur || next;
    n += flags[k];
    prev = cur;
  }
  return n;
}

// coarse pass: occ[S] and keep[S] of one ray's samples t[S]; returns the kept count
template <typename T>
LRM_HD int64_t occupancy_mark_ray(const T* o, const T* d, const T* t, int S, const bool* grid, int G, T bmin, T bmax,
                                  T scale, bool* occ, bool* keep) {
  for (int k = 0; k < S; ++k) keep[k] = occ[k] = sample_occupied<T>(o, d, t[k], grid, G, bmin, bmax, scale);
  return keep_neighbours(keep, S);
}

// kept samples of one ray, in order: t_p[n], points[n, 3]
template <typename T>
LRM_HD void pack_ray(const T* o, const T* d, const T* t, const bool* keep, int S, T* t_p, T* pts) {
  int n = 0;
  for (int k = 0; k < S; ++k) {
    if (!keep[k]) continue;
    t_p[n] = t[k];
    for (int a = 0; a < 3; ++a) pts[3 * n + a] = mul_add_rn(t[k], d[a], o[a]);
    ++n;
  }
}

// packed values of one ray back onto its S samples (0 where not kept)
template <typename T>
LRM_HD void unpack_ray(const T* vals, const bool* keep, int S, T* out) {
  int n = 0;
  for (int k = 0; k < S; ++k) out[k] = keep[k] ? vals[n++] : T(0);
}

// The merged pass of one ray: coarse tc[A] (occ_c, keep_c from the coarse pass; off_c the ray's
// first packed coarse sample) and importance tf[B] merged as merge_samples does (stable: coarse
// first on equal depths) into t[A + B]; keep[A + B] from the merged occupancy; src[m] = the packed
// coarse index holding sample m's raw outputs, -1 for a kept sample the field must still evaluate,
// -2 for a dropped one. Returns (kept, to evaluate) through *n_keep, *n_need.
template <typename T>
LRM_HD void occupancy_merge_ray(const T* o, const T* d, const T* tc, const bool* occ_c, const bool* keep_c, int A,
                                int64_t off_c, const T* tf, int B, const bool* grid, int G, T bmin, T bmax, T scale,
                                T* t, bool* keep, int64_t* src, int64_t* n_keep, int64_t* n_need) {
  int i = 0, j = 0;
  int64_t rank = off_c;
  for (int m = 0; m < A + B; ++m) {
    const bool take_a = j >= B || (i < A && !(tf[j] < tc[i]));
    if (take_a) {
      t[m] = tc[i];
      keep[m] = occ_c[i];
      src[m] = keep_c[i] ? rank++ : -1;
      ++i;
    } else {
      t[m] = tf[j];
      keep[m] = sample_occupied<T>(o, d, tf[j], grid, G, bmin, bmax, scale);
      src[m] = -1;
      ++j;
    }
  }
  *n_keep = keep_neighbours(keep, A + B);
  int64_t need = 0;
  for (int m = 0; m < A + B; ++m) {
    if (!keep[m]) src[m] = -2;
    else need += src[m] < 0;
  }
  *n_need = need;
}

// The packed samples of one merged ray: t_p[n], raw_p[n, 4] (copied from the coarse pass where
// src >= 0), and for the others the points to evaluate and their packed positions.
template <typename T>
LRM_HD void gather_merged_ray(const T* o, const T* d, const T* t, const bool* keep, const int64_t* src, int S,
                              const T* raw_c, int64_t off, T* t_p, T* raw_p, int64_t off_need, T* pts_need,
                              int64_t* pos_need) {
  int64_t n = 0, q = 0;
  for (int m = 0; m < S; ++m) {
    if (!keep[m]) continue;
    t_p[n] = t[m];
    if (src[m] >= 0) {
      for (int c = 0; c < 4; ++c) raw_p[4 * n + c] = raw_c[4 * src[m] + c];
    } else {
      for (int c = 0; c < 4; ++c) raw_p[4 * n + c] = T(0);
      for (int a = 0; a < 3; ++a) pts_need[3 * q + a] = mul_add_rn(t[m], d[a], o[a]);
      pos_need[q] = off + n;
      ++q;
    }
    ++n;
  }
  (void)off_need;
}

}  // namespace lrm_fast
