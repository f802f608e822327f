// Body of composite_vec_cpu.h, included three times (namespaces vec, vec_avx2, vec_avx512;
// LRM_MADD plain or fused); no include guard on purpose. Only composite_vec_cpu.h includes this file.
namespace lrm_fast {
namespace LRM_VEC_NS {

using namespace vecdata;


// exp(x) for float32: Cephes expf (constants: cephes.h; range reduction by n = round(x / ln2), ln2 split in two so
// n * C1 is exact, degree-5 polynomial on |r| <= ln2/2), scaled by 2^n as two factors 2^(n/2)
// so that x > 88.72 overflows to inf like expf without a branch. Results below 1.6e-38
// (x < -87) are flushed to 0 instead of going subnormal: an underflowing multiply takes a
// microcode assist on x86 that costs ~100 cycles per vector, and gated samples (raw density
// -1e4) would hit it on every call. NaN propagates.
LRM_VEC float exp(float x) {
  const bool tiny = x < -87.0f;
  x = x < -87.0f ? -87.0f : x;
  x = x > 89.0f ? 89.0f : x;
  // round to nearest integer: 1.5 * 2^23 pushes the fraction bits out (|x / ln2| < 2^22)
  const float n = (x * cephes::kLog2e + 12582912.0f) - 12582912.0f;
  float r = LRM_MADD(n, -cephes::kLn2Hi, x);  // exact: n * kLn2Hi has few bits
  r = LRM_MADD(n, cephes::kLn2Lo, r);
  float p = cephes::kExpP0;
  p = LRM_MADD(p, r, cephes::kExpP1);
  p = LRM_MADD(p, r, cephes::kExpP2);
  p = LRM_MADD(p, r, cephes::kExpP3);
  p = LRM_MADD(p, r, cephes::kExpP4);
  p = LRM_MADD(p, r, cephes::kExpP5);
  p = LRM_MADD(p, r * r, r) + 1.0f;
  const int32_t ni = int32_t(n);  // in [-126, 129]
  const int32_t n1 = ni >> 1, n2 = ni - n1;
  const float y = p * bits_to_float((n1 + 127) << 23) * bits_to_float((n2 + 127) << 23);
  return tiny ? 0.0f : y;
}

// log1p(u) for u in [0, 1] (what softplus needs: u = exp(-|x|)). w = 1 + u is rounded; the
// classic correction (u - (w - 1)) / w restores the lost low bits, so tiny u give u exactly.
// log(w), w in [1, 2]: halve above sqrt(2), then the Cephes logf polynomial on m - 1.
LRM_VEC float log1p01(float u) {
  const float w = 1.0f + u;
  const float corr = (u - (w - 1.0f)) / w;
  const bool big = w > 1.41421356237f;
  const float m = big ? 0.5f * w : w;
  const float e = big ? 1.0f : 0.0f;
  const float f = m - 1.0f;  // exact (Sterbenz)
  const float z = f * f;
  float y = cephes::kLogQ0;
  y = LRM_MADD(y, f, cephes::kLogQ1);
  y = LRM_MADD(y, f, cephes::kLogQ2);
  y = LRM_MADD(y, f, cephes::kLogQ3);
  y = LRM_MADD(y, f, cephes::kLogQ4);
  y = LRM_MADD(y, f, cephes::kLogQ5);
  y = LRM_MADD(y, f, cephes::kLogQ6);
  y = LRM_MADD(y, f, cephes::kLogQ7);
  y = LRM_MADD(y, f, cephes::kLogQ8);
  y = y * f * z;
  y = LRM_MADD(e, -cephes::kLn2Lo, y);
  y = LRM_MADD(-0.5f, z, y);
  float r = f + y;
  r = LRM_MADD(e, cephes::kLn2Hi, r);
  return r + corr;
}

// torch's softplus (beta 1, threshold 20): x > 20 ? x : log1p(exp(x)), written as
// max(x, 0) + log1p(exp(-|x|)) so the exp never overflows and tiny results stay accurate.
LRM_VEC float softplus(float x) {
  const float ax = x < 0.0f ? -x : x;
  const float sp = (x > 0.0f ? x : 0.0f) + log1p01(LRM_VEC_NS::exp(-ax));
  return x > 20.0f ? x : sp;
}

LRM_VEC float sigmoid(float x) { return 1.0f / (1.0f + LRM_VEC_NS::exp(-x)); }

// the density activation (composite_samples.h's activate): 0 softplus, 1 exp(min(x, 15))
LRM_VEC float activate(float x, int act) {
  if (act == 0) return softplus(x);
  return LRM_VEC_NS::exp(x < 15.0f ? x : 15.0f);
}

// -------------------------------------------------------------------------------------------
// composite_samples: per-sample gate + widened sigmoid, per-interval quantities

// in_val where lo <= p_a <= hi on all three axes, else out_val (out_val for NaN too, like the
// comparisons). A chain of selects rather than a && b && ... ? :, since GCC vectorizes this form
// and not the boolean one.
LRM_VEC float select_inbox(float p0, float p1, float p2, float lo, float hi, float in_val, float out_val) {
  float a = p0 >= lo ? in_val : out_val;
  a = p0 <= hi ? a : out_val;
  a = p1 >= lo ? a : out_val;
  a = p1 <= hi ? a : out_val;
  a = p2 >= lo ? a : out_val;
  return p2 <= hi ? a : out_val;
}

// Samples 0..m-1 at depths t with raw outputs raw [m, 4] -> gate mask g (1 in the box, 0 outside),
// gated raw density sr and the three sigmoids s (ungated; the rgb of a gated sample is 0). The
// gate is the same expression as SampleIntervals::inbox (mul_add_rn, no contraction: it must
// agree bit for bit with the renderer's torch expression).
LRM_VEC_PASS void gate_samples(const SampleIntervals<float>& iv, const float* __restrict__ t,
                               const float* __restrict__ raw, int m, float* __restrict__ g, float* __restrict__ sr,
                               float* __restrict__ s0, float* __restrict__ s1, float* __restrict__ s2) {
  const float o0 = iv.o[0], o1 = iv.o[1], o2 = iv.o[2], d0 = iv.d[0], d1 = iv.d[1], d2 = iv.d[2];
  const float lo = iv.bmin, hi = iv.bmax;
  for (int j = 0; j < m; ++j) {
    const float tj = t[j];
    const float p0 = mul_add_rn(tj, d0, o0), p1 = mul_add_rn(tj, d1, o1), p2 = mul_add_rn(tj, d2, o2);
    const float rj = raw[4 * j];
    g[j] = select_inbox(p0, p1, p2, lo, hi, 1.0f, 0.0f);
    sr[j] = select_inbox(p0, p1, p2, lo, hi, rj, -1e4f);
    s0[j] = sigmoid(raw[4 * j + 1]);
    s1[j] = sigmoid(raw[4 * j + 2]);
    s2[j] = sigmoid(raw[4 * j + 3]);
  }
}

// The ray's t [S] and raw [S, 4] copied into tp / rawp and padded to `len` samples (t repeats
// its last value, so padded intervals have delta 0; raw 0). Every vector pass then runs over a
// multiple of 16 entries: a scalar remainder loop of the inlined exp costs as much as the
// vectorized rest of a 128-sample ray.
LRM_VEC_PASS void copy_ray(const SampleIntervals<float>& iv, int S, int len, float* __restrict__ tp,
                           float* __restrict__ rawp) {
  std::memcpy(tp, iv.t, sizeof(float) * S);
  std::memcpy(rawp, iv.raw, sizeof(float) * 4 * S);
  const float last = iv.t[S - 1];
  for (int j = S; j < len; ++j) tp[j] = last;
  for (int j = 4 * S; j < 4 * len; ++j) rawp[j] = 0.0f;
}

LRM_VEC int round16(int n) { return (n + 15) / 16 * 16; }

// the rgb of a sample from its gate and sigmoid: sigmoid * 1.002 - 0.001, or 0 outside the box
LRM_VEC float widen(float g, float s) {
  const float c = s * 1.002f - 0.001f;
  return g > 0.5f ? c : 0.0f;
}

// Intervals k0 .. k0+n-1 from the sample buffers (index 0 = sample k0): rgb, pre-activation x,
// e = exp(-sigma delta), delta, depth.
template <int ACT, bool MID>
LRM_VEC_PASS void sample_intervals(const float* __restrict__ t, int n, float bias, const float* __restrict__ g,
                                   const float* __restrict__ sr, const float* __restrict__ s0,
                                   const float* __restrict__ s1, const float* __restrict__ s2,
                                   float* __restrict__ r0, float* __restrict__ r1, float* __restrict__ r2,
                                   float* __restrict__ x, float* __restrict__ e, float* __restrict__ delta,
                                   float* __restrict__ depth) {
  for (int i = 0; i < n; ++i) {
    const float dl = t[i + 1] - t[i];
    float xi, c0, c1, c2, di;
    if (MID) {
      xi = 0.5f * (sr[i] + sr[i + 1]) + bias;
      c0 = 0.5f * (widen(g[i], s0[i]) + widen(g[i + 1], s0[i + 1]));
      c1 = 0.5f * (widen(g[i], s1[i]) + widen(g[i + 1], s1[i + 1]));
      c2 = 0.5f * (widen(g[i], s2[i]) + widen(g[i + 1], s2[i + 1]));
      di = 0.5f * (t[i] + t[i + 1]);
    } else {
      xi = sr[i] + bias;
      c0 = widen(g[i], s0[i]);
      c1 = widen(g[i], s1[i]);
      c2 = widen(g[i], s2[i]);
      di = t[i];
    }
    const float sigma = activate(xi, ACT);
    r0[i] = c0;
    r1[i] = c1;
    r2[i] = c2;
    x[i] = xi;
    e[i] = LRM_VEC_NS::exp(-sigma * dl);
    delta[i] = dl;
    depth[i] = di;
  }
}


// alpha = 1 - e and keep = 1 - alpha + eps of a chunk (vector)
LRM_VEC_PASS void alpha_keep(int n, const float* __restrict__ e, float* __restrict__ alpha, float* __restrict__ keep) {
  const float eps = float(COMPOSITE_T_EPS);
  for (int i = 0; i < n; ++i) {
    const float a = 1.0f - e[i];
    alpha[i] = a;
    keep[i] = 1.0f - a + eps;
  }
}

// Weighted sums of the first `used` of kChunk intervals into 16 lane-wise partial sums per
// quantity (acc [5][16]: r0, r1, r2, depth, weight), so the loop vectorizes without reassociating
// a scalar reduction. Entries past `used` hold stale values: their products are selected away
// (a stale NaN cannot leak into the sums).
LRM_VEC_PASS void accumulate_chunk(int used, const float* __restrict__ alpha, const float* __restrict__ T,
                                   const float* __restrict__ r0, const float* __restrict__ r1,
                                   const float* __restrict__ r2, const float* __restrict__ dp,
                                   float* __restrict__ acc) {
  for (int h = 0; h < kChunk; h += kLanes) {
    for (int l = 0; l < kLanes; ++l) {
      const int i = h + l;
      const bool in = i < used;
      const float w = alpha[i] * T[i];
      const float c0 = w * r0[i], c1 = w * r1[i], c2 = w * r2[i], cd = w * dp[i];
      acc[l] += in ? c0 : 0.0f;
      acc[kLanes + l] += in ? c1 : 0.0f;
      acc[2 * kLanes + l] += in ? c2 : 0.0f;
      acc[3 * kLanes + l] += in ? cd : 0.0f;
      acc[4 * kLanes + l] += in ? w : 0.0f;
    }
  }
}

// Forward: per chunk, the vector passes, then a scalar scan of only the transmittance recurrence
// T_{k+1} = T_k keep_k (one multiply per interval, stopping at the threshold), then the weighted
// sums in vector lanes. (Sums in lane order, not interval order: float32 rounding differs from
// the scalar path's sequential sums at the 1e-7 level.)
template <int ACT, bool MID>
LRM_VEC int samples_forward_ray_impl(const SampleIntervals<float>& iv, int S, const float* bg, float thresh,
                                     SampleScratch& b, float* color, float* depth, float* opacity, float* t_final) {
  const int n = S > 0 ? S - 1 : 0;
  const float stop = lrm_max(thresh, float(COMPOSITE_T_FLOOR));
  float acc[5 * kLanes];
  for (int l = 0; l < 5 * kLanes; ++l) acc[l] = 0.0f;
  float trans = 1.0f;
  int k = 0;
  bool stopped = false;
  if (n > 0) copy_ray(iv, S, padded_samples(S), b.tp, b.rawp);
  int done = 0;  // samples gated so far, in blocks of kChunk (computed one block ahead at most)
  while (k < n && !stopped) {
    while (done < k + kChunk + 1) {
      gate_samples(iv, b.tp + done, b.rawp + 4 * done, kChunk, b.g + done, b.sr + done, b.s0 + done, b.s1 + done,
                   b.s2 + done);
      done += kChunk;
    }
    sample_intervals<ACT, MID>(b.tp + k, kChunk, iv.bias, b.g + k, b.sr + k, b.s0 + k, b.s1 + k, b.s2 + k, b.r0,
                               b.r1, b.r2, b.x, b.e, b.delta, b.depth);
    alpha_keep(kChunk, b.e, b.alpha, b.keep);
    const int c = n - k < kChunk ? n - k : kChunk;
    int used = c;
    for (int i = 0; i < c; ++i) {
      b.T[i] = trans;
      trans *= b.keep[i];
      if (trans < stop) {
        used = i + 1;
        stopped = true;
        break;
      }
    }
    accumulate_chunk(used, b.alpha, b.T, b.r0, b.r1, b.r2, b.depth, acc);
    k += used;
  }
  float acc0 = 0.0f, acc1 = 0.0f, acc2 = 0.0f, accd = 0.0f, acco = 0.0f;
  for (int l = 0; l < kLanes; ++l) {
    acc0 += acc[l];
    acc1 += acc[kLanes + l];
    acc2 += acc[2 * kLanes + l];
    accd += acc[3 * kLanes + l];
    acco += acc[4 * kLanes + l];
  }
  color[0] = acc0 + (1.0f - acco) * bg[0];
  color[1] = acc1 + (1.0f - acco) * bg[1];
  color[2] = acc2 + (1.0f - acco) * bg[2];
  if (acco > 0.0f) {
    *depth = accd / acco;
  } else if (n > 0) {  // no weight anywhere: the depth of the last interval
    *depth = MID ? 0.5f * (iv.t[n - 1] + iv.t[n]) : iv.t[n - 1];
  } else {
    *depth = 0.0f;
  }
  *opacity = acco;
  *t_final = trans;
  return k;
}

// gated raw density of samples 0..m-1 (gate_samples without the colors)
LRM_VEC_PASS void gate_density(const SampleIntervals<float>& iv, const float* __restrict__ t,
                               const float* __restrict__ raw, int m, float* __restrict__ sr) {
  const float o0 = iv.o[0], o1 = iv.o[1], o2 = iv.o[2], d0 = iv.d[0], d1 = iv.d[1], d2 = iv.d[2];
  const float lo = iv.bmin, hi = iv.bmax;
  for (int j = 0; j < m; ++j) {
    const float tj = t[j];
    const float p0 = mul_add_rn(tj, d0, o0), p1 = mul_add_rn(tj, d1, o1), p2 = mul_add_rn(tj, d2, o2);
    const float rj = raw[4 * j];
    sr[j] = select_inbox(p0, p1, p2, lo, hi, rj, -1e4f);
  }
}

// e = exp(-act(x) delta) of intervals 0..n-1 from the gated densities
template <int ACT, bool MID>
LRM_VEC_PASS void density_e(int n, const float* __restrict__ t, const float* __restrict__ sr, float bias,
                            float* __restrict__ e) {
  for (int i = 0; i < n; ++i) {
    const float xi = MID ? 0.5f * (sr[i] + sr[i + 1]) + bias : sr[i] + bias;
    e[i] = LRM_VEC_NS::exp(-activate(xi, ACT) * (t[i + 1] - t[i]));
  }
}

// The weights only need the density: no sigmoid, no color.
template <int ACT, bool MID>
LRM_VEC void samples_weights_ray_impl(const SampleIntervals<float>& iv, int S, SampleScratch& b, float* w) {
  const int n = S > 0 ? S - 1 : 0;
  if (n == 0) return;
  const float eps = float(COMPOSITE_T_EPS);
  copy_ray(iv, S, padded_samples(S), b.tp, b.rawp);
  gate_density(iv, b.tp, b.rawp, round16(MID ? n + 1 : n), b.sr);
  density_e<ACT, MID>(round16(n), b.tp, b.sr, iv.bias, b.e);
  float trans = 1.0f;
  for (int i = 0; i < n; ++i) {
    const float alpha = 1.0f - b.e[i];
    w[i] = alpha * trans;
    trans *= 1.0f - alpha + eps;
  }
}

// Backward passes. Each vector pass is its own function with __restrict__ parameters: GCC
// (12) does not vectorize the same loops written over restrict locals loaded from a struct.

// alpha, keep = 1 - alpha + eps and g_k = dL/dw_k = v_C . (c_k - bg) + v_O + vd (t_k - D)
LRM_VEC_PASS void bwd_prep(int n, const float* __restrict__ e, const float* __restrict__ r0,
                           const float* __restrict__ r1, const float* __restrict__ r2,
                           const float* __restrict__ dp, const float* vc, const float* bg, float v_opacity, float vd,
                           float depth, float* __restrict__ alpha, float* __restrict__ keep,
                           float* __restrict__ gs) {
  const float eps = float(COMPOSITE_T_EPS);
  const float vc0 = vc[0], vc1 = vc[1], vc2 = vc[2], bg0 = bg[0], bg1 = bg[1], bg2 = bg[2];
  for (int i = 0; i < n; ++i) {
    const float a = 1.0f - e[i];
    alpha[i] = a;
    keep[i] = 1.0f - a + eps;
    gs[i] = vc0 * (r0[i] - bg0) + vc1 * (r1[i] - bg1) + vc2 * (r2[i] - bg2) + v_opacity + vd * (dp[i] - depth);
  }
}

// scalar: prefix transmittances T_k (the forward's own products), then the suffix
// A_k = g_k alpha_k + keep_k A_{k+1} and v_alpha_k = T_k (g_k - A_{k+1})
LRM_VEC void bwd_scans(int n, const float* __restrict__ alpha, const float* __restrict__ keep,
                       const float* __restrict__ gs, float* __restrict__ T, float* __restrict__ va) {
  float trans = 1.0f;
  for (int i = 0; i < n; ++i) {
    T[i] = trans;
    trans *= keep[i];
  }
  float A = 0.0f;
  for (int i = n - 1; i >= 0; --i) {
    va[i] = T[i] * (gs[i] - A);
    A = LRM_MADD(keep[i], A, gs[i] * alpha[i]);
  }
}

// v_x = v_alpha delta e act'(x) (dL/d of the activation's input) and the weights w = alpha T
template <int ACT>
LRM_VEC_PASS void bwd_vx(int n, const float* __restrict__ x, const float* __restrict__ va, const float* __restrict__ dl,
                         const float* __restrict__ e, const float* __restrict__ alpha, const float* __restrict__ T,
                         float* __restrict__ vx, float* __restrict__ w) {
  for (int i = 0; i < n; ++i) {
    const float xi = x[i];
    float ag;
    if (ACT == 0) {
      const float sg = sigmoid(xi);
      ag = xi > 20.0f ? 1.0f : sg;
    } else {
      const float ex = LRM_VEC_NS::exp(xi);
      ag = xi <= 15.0f ? ex : 0.0f;
    }
    vx[i] = va[i] * dl[i] * e[i] * ag;
    w[i] = alpha[i] * T[i];
  }
}

// route interval cotangents to samples 0..m-1, through the gate and the widened sigmoid. vx and
// w are read at j and j - 1 and must hold zeros at -1 and n.
template <bool MID>
LRM_VEC_PASS void bwd_route(int m, const float* __restrict__ vx, const float* __restrict__ w,
                            const float* __restrict__ g, const float* __restrict__ s0, const float* __restrict__ s1,
                            const float* __restrict__ s2, const float* vc, float* __restrict__ v_raw) {
  const float vc0 = vc[0], vc1 = vc[1], vc2 = vc[2];
  for (int j = 0; j < m; ++j) {
    float vs, u0, u1, u2;
    if (MID) {
      // sample j is in intervals j and j - 1; the scalar walk (in reverse) adds interval j's
      // half first
      const float wa = w[j], wb = w[j - 1];
      vs = 0.5f * vx[j] + 0.5f * vx[j - 1];
      u0 = 0.5f * (wa * vc0) + 0.5f * (wb * vc0);
      u1 = 0.5f * (wa * vc1) + 0.5f * (wb * vc1);
      u2 = 0.5f * (wa * vc2) + 0.5f * (wb * vc2);
    } else {
      vs = vx[j];
      u0 = w[j] * vc0;
      u1 = w[j] * vc1;
      u2 = w[j] * vc2;
    }
    const float d0 = u0 * (1.002f * s0[j] * (1.0f - s0[j]));
    const float d1 = u1 * (1.002f * s1[j] * (1.0f - s1[j]));
    const float d2 = u2 * (1.002f * s2[j] * (1.0f - s2[j]));
    const bool in = g[j] > 0.5f;
    v_raw[4 * j] = in ? vs : 0.0f;
    v_raw[4 * j + 1] = in ? d0 : 0.0f;
    v_raw[4 * j + 2] = in ? d1 : 0.0f;
    v_raw[4 * j + 3] = in ? d2 : 0.0f;
  }
}

// Backward over the n_used intervals; writes all of v_raw [S, 4] (zeros for the samples no used
// interval reaches: the caller need not zero it) and v_bg[3].
template <int ACT, bool MID>
LRM_VEC void samples_backward_ray_impl(const SampleIntervals<float>& iv, int S, const float* bg, int n_used,
                                       float opacity, float depth, const float* v_color, float v_depth,
                                       float v_opacity, SampleScratch& b, float* __restrict__ v_raw, float* v_bg) {
  for (int c = 0; c < 3; ++c) v_bg[c] = (1.0f - opacity) * v_color[c];
  const int n = n_used < S - 1 ? n_used : S - 1;  // (a bad n_used must not overrun the scratch)
  const int m = n <= 0 ? 0 : MID ? n + 1 : n;    // samples that reach a used interval
  std::memset(v_raw + 4 * m, 0, sizeof(float) * 4 * (S - m));
  if (n <= 0) return;
  const int m16 = round16(m), n16 = round16(n);  // vector passes over whole vectors (padded copy)
  copy_ray(iv, S, padded_samples(S), b.tp, b.rawp);
  gate_samples(iv, b.tp, b.rawp, m16, b.g, b.sr, b.s0, b.s1, b.s2);
  sample_intervals<ACT, MID>(b.tp, n16, iv.bias, b.g, b.sr, b.s0, b.s1, b.s2, b.r0, b.r1, b.r2, b.x, b.e, b.delta,
                             b.depth);
  const float vd = opacity > 0.0f ? v_depth / opacity : 0.0f;
  bwd_prep(n16, b.e, b.r0, b.r1, b.r2, b.depth, v_color, bg, v_opacity, vd, depth, b.alpha, b.keep, b.gs);
  bwd_scans(n, b.alpha, b.keep, b.gs, b.T, b.va);
  bwd_vx<ACT>(n16, b.x, b.va, b.delta, b.e, b.alpha, b.T, b.vx + 1, b.w + 1);
  // v_x and w carry a zero before index 0 and after n - 1 (over the padded values), so the
  // routing pass needs no branch
  b.vx[0] = b.w[0] = b.vx[n + 1] = b.w[n + 1] = 0.0f;
  bwd_route<MID>(m, b.vx + 1, b.w + 1, b.g, b.s0, b.s1, b.s2, v_color, v_raw);
}

// -------------------------------------------------------------------------------------------
// plain compositing of given rgb/sigma/deltas (composite.h)


LRM_VEC_PASS void exp_neg_product(const float* __restrict__ sigma, const float* __restrict__ deltas, int n,
                                  float* __restrict__ e) {
  for (int i = 0; i < n; ++i) e[i] = LRM_VEC_NS::exp(-sigma[i] * deltas[i]);
}

LRM_VEC int composite_forward_ray_vec(const float* rgb, const float* sigma, const float* deltas,
                                      const float* depths, const float* bg, int S, float thresh, float* scratch,
                                      float* color, float* depth, float* opacity, float* t_final) {
  const float stop = lrm_max(thresh, float(COMPOSITE_T_FLOOR));
  const float eps = float(COMPOSITE_T_EPS);
  float trans = 1.0f, acc0 = 0.0f, acc1 = 0.0f, acc2 = 0.0f, accd = 0.0f, acco = 0.0f;
  int k = 0;
  bool stopped = false;
  while (k < S && !stopped) {
    const int c = S - k < kChunk ? S - k : kChunk;
    exp_neg_product(sigma + k, deltas + k, c, scratch);
    for (int i = 0; i < c; ++i) {
      const float alpha = 1.0f - scratch[i];
      const float w = alpha * trans;
      acc0 += w * rgb[3 * k + 0];
      acc1 += w * rgb[3 * k + 1];
      acc2 += w * rgb[3 * k + 2];
      accd += w * depths[k];
      acco += w;
      trans *= 1.0f - alpha + eps;
      ++k;
      if (trans < stop) {
        stopped = true;
        break;
      }
    }
  }
  color[0] = acc0 + (1.0f - acco) * bg[0];
  color[1] = acc1 + (1.0f - acco) * bg[1];
  color[2] = acc2 + (1.0f - acco) * bg[2];
  *depth = acco > 0.0f ? accd / acco : (S > 0 ? depths[S - 1] : 0.0f);
  *opacity = acco;
  *t_final = trans;
  return k;
}

LRM_VEC void composite_weights_ray_vec(const float* sigma, const float* deltas, int S, float* w) {
  exp_neg_product(sigma, deltas, S, w);  // w holds e until the scan overwrites it
  const float eps = float(COMPOSITE_T_EPS);
  float trans = 1.0f;
  for (int k = 0; k < S; ++k) {
    const float alpha = 1.0f - w[k];
    w[k] = alpha * trans;
    trans *= 1.0f - alpha + eps;
  }
}

LRM_VEC void composite_backward_ray_vec(const float* __restrict__ rgb, const float* __restrict__ sigma,
                                        const float* __restrict__ deltas, const float* __restrict__ depths,
                                        const float* bg, int S, int n_used, float opacity, float depth,
                                        const float* v_color, float v_depth, float v_opacity, float* scratch,
                                        float* __restrict__ v_rgb, float* __restrict__ v_sigma, float* v_bg) {
  for (int k = n_used; k < S; ++k) {
    v_sigma[k] = 0.0f;
    v_rgb[3 * k + 0] = v_rgb[3 * k + 1] = v_rgb[3 * k + 2] = 0.0f;
  }
  for (int c = 0; c < 3; ++c) v_bg[c] = (1.0f - opacity) * v_color[c];
  const int n = n_used < S ? n_used : S;
  if (n <= 0) return;
  float* __restrict__ e = scratch;
  float* __restrict__ alpha = scratch + 1 * scratch_stride(S);
  float* __restrict__ keep = scratch + 2 * scratch_stride(S);
  float* __restrict__ gs = scratch + 3 * scratch_stride(S);
  float* __restrict__ T = scratch + 4 * scratch_stride(S);
  float* __restrict__ va = scratch + 5 * scratch_stride(S);
  const float eps = float(COMPOSITE_T_EPS);
  const float vc0 = v_color[0], vc1 = v_color[1], vc2 = v_color[2];
  const float bg0 = bg[0], bg1 = bg[1], bg2 = bg[2];
  const float vd = opacity > 0.0f ? v_depth / opacity : 0.0f;
  exp_neg_product(sigma, deltas, n, e);
  for (int i = 0; i < n; ++i) {
    const float a = 1.0f - e[i];
    alpha[i] = a;
    keep[i] = 1.0f - a + eps;
    gs[i] = vc0 * (rgb[3 * i] - bg0) + vc1 * (rgb[3 * i + 1] - bg1) + vc2 * (rgb[3 * i + 2] - bg2) + v_opacity +
            vd * (depths[i] - depth);
  }
  bwd_scans(n, alpha, keep, gs, T, va);
  for (int i = 0; i < n; ++i) {
    const float w = alpha[i] * T[i];
    v_sigma[i] = va[i] * deltas[i] * e[i];
    v_rgb[3 * i + 0] = w * vc0;
    v_rgb[3 * i + 1] = w * vc1;
    v_rgb[3 * i + 2] = w * vc2;
  }
}


// -------------------------------------------------------------------------------------------
// ranges of rays (what the CPU kernels call per thread), compiled for this namespace's ISA

// scratch: samples_scratch_floats(a.S) floats; dense or packed rays (SamplesArgs)
inline void samples_fwd_range(const SamplesArgs& a, int64_t b, int64_t e, float* scratch, float* color,
                              float* depth, float* opacity, float* t_final, int* n_used) {
  SampleScratch sc(scratch, a.S);
  for (int64_t i = b; i < e; ++i) {
    const auto iv = a.iv(i);
    const int S = a.count(i);
#define LRM_CALL(A, M)                                                                                    \
  n_used[i] = samples_forward_ray_impl<A, M>(iv, S, a.bg + 3 * i, a.thresh, sc, color + 3 * i, depth + i, \
                                             opacity + i, t_final + i)
    LRM_ACT_MID(a.act, a.midpoint, LRM_CALL);
#undef LRM_CALL
  }
}

inline void samples_weights_range(const SamplesArgs& a, int64_t b, int64_t e, float* scratch, float* w) {
  SampleScratch sc(scratch, a.S);
  for (int64_t i = b; i < e; ++i) {
    const auto iv = a.iv(i);
    const int S = a.count(i);
    float* wi = w + a.weights_start(i);
    if (a.off && S > 0) wi[S - 1] = 0.0f;
#define LRM_CALL(A, M) samples_weights_ray_impl<A, M>(iv, S, sc, wi)
    LRM_ACT_MID(a.act, a.midpoint, LRM_CALL);
#undef LRM_CALL
  }
}

// writes all of v_raw [R, S, 4] (packed: [N, 4])
inline void samples_bwd_range(const SamplesArgs& a, int64_t b, int64_t e, float* scratch, const float* v_color,
                              const float* v_depth, const float* v_opacity, const float* depth, const float* opacity,
                              const int* n_used, float* v_raw, float* v_bg) {
  SampleScratch sc(scratch, a.S);
  for (int64_t i = b; i < e; ++i) {
    const auto iv = a.iv(i);
    const int S = a.count(i);
#define LRM_CALL(A, M)                                                                                   \
  samples_backward_ray_impl<A, M>(iv, S, a.bg + 3 * i, n_used[i], opacity[i], depth[i], v_color + 3 * i, \
                                  v_depth[i], v_opacity[i], sc, v_raw + 4 * a.start(i), v_bg + 3 * i)
    LRM_ACT_MID(a.act, a.midpoint, LRM_CALL);
#undef LRM_CALL
  }
}

// scratch: kChunk + 16 floats
inline void plain_fwd_range(const float* rgb, const float* sigma, const float* deltas, const float* depths,
                            const float* bg, int64_t S, float thresh, int64_t b, int64_t e, float* scratch,
                            float* color, float* depth, float* opacity, float* t_final, int* n_used) {
  for (int64_t i = b; i < e; ++i)
    n_used[i] = composite_forward_ray_vec(rgb + i * S * 3, sigma + i * S, deltas + i * S, depths + i * S, bg + 3 * i,
                                          int(S), thresh, scratch, color + 3 * i, depth + i, opacity + i,
                                          t_final + i);
}

inline void plain_weights_range(const float* sigma, const float* deltas, int64_t S, int64_t b, int64_t e, float* w) {
  for (int64_t i = b; i < e; ++i) composite_weights_ray_vec(sigma + i * S, deltas + i * S, int(S), w + i * S);
}

// scratch: plain_scratch_floats(S) floats
inline void plain_bwd_range(const float* rgb, const float* sigma, const float* deltas, const float* depths,
                            const float* bg, int64_t S, int64_t b, int64_t e, float* scratch, const int* n_used,
                            const float* opacity, const float* depth, const float* v_color, const float* v_depth,
                            const float* v_opacity, float* v_rgb, float* v_sigma, float* v_bg) {
  for (int64_t i = b; i < e; ++i)
    composite_backward_ray_vec(rgb + i * S * 3, sigma + i * S, deltas + i * S, depths + i * S, bg + 3 * i, int(S),
                               n_used[i], opacity[i], depth[i], v_color + 3 * i, v_depth[i], v_opacity[i], scratch,
                               v_rgb + i * S * 3, v_sigma + i * S, v_bg + 3 * i);
}

}  // namespace LRM_VEC_NS
}  // namespace lrm_fast
