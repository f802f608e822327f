// ctest of the torch-free per-ray math (csrc/*.h): closed forms and a finite-difference check of
// the compositing backward, in plain C++ (no torch, no Python).
#include <cmath>
#include <cstdio>
#include <vector>

#include "../composite.h"
#include "../raymarch.h"
#if defined(__x86_64__) || defined(__i386__)
#include "../composite_vec_cpu.h"
#define LRM_TEST_VEC 1
#endif

using namespace lrm_fast;

static int failures = 0;
#define EXPECT_NEAR(a, b, tol)                                                              \
  do {                                                                                      \
    const double _a = (a), _b = (b);                                                        \
    if (!(std::fabs(_a - _b) <= (tol))) {                                                   \
      std::printf("%s:%d: %s = %.10g, expected %.10g\n", __FILE__, __LINE__, #a, _a, _b);   \
      ++failures;                                                                           \
    }                                                                                       \
  } while (0)

static void test_ray_box() {
  const double o[3] = {0, 0, 5}, d[3] = {0, 0, -1};
  double n, f;
  EXPECT_NEAR(ray_box_hit(o, d, -1.0, 1.0, &n, &f), 1, 0);
  EXPECT_NEAR(n, 4, 1e-12);
  EXPECT_NEAR(f, 6, 1e-12);
  const double o2[3] = {5, 0, 5};
  EXPECT_NEAR(ray_box_hit(o2, d, -1.0, 1.0, &n, &f), 0, 0);
  EXPECT_NEAR(n, 0, 0);
  EXPECT_NEAR(f, 0, 0);
}

static void test_pixel_ray_center() {
  const double c2w[16] = {1, 0, 0, 0.5, 0, 1, 0, 0, 0, 0, 1, 2, 0, 0, 0, 1};
  const double K[4] = {0.75, 0.75, 0.5, 0.5};
  double o[3], d[3];
  pixel_ray(c2w, K, 1, 1, 0.0, 0.0, o, d);  // the center pixel looks along -z
  EXPECT_NEAR(d[2], -1, 1e-12);
  EXPECT_NEAR(o[0], 0.5, 0);
  EXPECT_NEAR(o[2], 2, 0);
}

static void test_composite_constant_density() {
  // constant sigma over length L: opacity = 1 - exp(-sigma L) (up to the 1e-10 epsilon)
  const int S = 50;
  std::vector<double> rgb(3 * S, 0.5), sigma(S, 0.7), deltas(S, 2.0 / S), depths(S);
  for (int k = 0; k < S; ++k) depths[k] = (k + 0.5) * 2.0 / S;
  const double bg[3] = {1, 1, 1};
  double color[3], depth, opacity, tf;
  const int n = composite_forward_ray(rgb.data(), sigma.data(), deltas.data(), depths.data(), bg, S, 0.0,
                                      color, &depth, &opacity, &tf);
  EXPECT_NEAR(n, S, 0);
  EXPECT_NEAR(opacity, 1 - std::exp(-1.4), 1e-8);
  EXPECT_NEAR(color[0], 0.5 * opacity + (1 - opacity), 1e-12);
  EXPECT_NEAR(tf, 1 - opacity, 1e-8);
}

static double loss(const std::vector<double>& rgb, const std::vector<double>& sigma, const std::vector<double>& deltas,
                   const std::vector<double>& depths, const double* bg, int S) {
  double color[3], depth, opacity, tf;
  composite_forward_ray(rgb.data(), sigma.data(), deltas.data(), depths.data(), bg, S, 0.0, color, &depth, &opacity,
                        &tf);
  return 0.3 * color[0] - 0.7 * color[1] + 1.1 * color[2] + 0.2 * depth + 0.5 * opacity;
}

static void test_composite_backward_matches_finite_differences() {
  const int S = 7;
  std::vector<double> rgb(3 * S), sigma(S), deltas(S), depths(S);
  for (int k = 0; k < S; ++k) {
    sigma[k] = 0.3 + 1.7 * ((k * 37) % 11) / 11.0;
    deltas[k] = 0.1 + 0.05 * (k % 3);
    depths[k] = 1 + 0.2 * k;
    for (int c = 0; c < 3; ++c) rgb[3 * k + c] = ((k * 7 + c * 3) % 10) / 10.0;
  }
  sigma[3] = 40.0;  // nearly opaque: alpha ~ 1
  const double bg[3] = {0.2, 0.4, 0.9};
  double color[3], depth, opacity, tf;
  const int n = composite_forward_ray(rgb.data(), sigma.data(), deltas.data(), depths.data(), bg, S, 0.0, color,
                                      &depth, &opacity, &tf);
  const double v_color[3] = {0.3, -0.7, 1.1};
  std::vector<double> v_rgb(3 * S), v_sigma(S);
  double v_bg[3];
  composite_backward_ray(rgb.data(), sigma.data(), deltas.data(), depths.data(), bg, S, n, opacity, depth, tf, v_color,
                         0.2, 0.5, v_rgb.data(), v_sigma.data(), v_bg);
  const double h = 1e-6;
  for (int k = 0; k < S; ++k) {
    auto sp = sigma, sm = sigma;
    sp[k] += h;
    sm[k] -= h;
    EXPECT_NEAR(v_sigma[k], (loss(rgb, sp, deltas, depths, bg, S) - loss(rgb, sm, deltas, depths, bg, S)) / (2 * h),
                1e-6);
    auto rp = rgb, rm = rgb;
    rp[3 * k + 1] += h;
    rm[3 * k + 1] -= h;
    EXPECT_NEAR(v_rgb[3 * k + 1], (loss(rp, sigma, deltas, depths, bg, S) - loss(rm, sigma, deltas, depths, bg, S)) / (2 * h),
                1e-6);
  }
  EXPECT_NEAR(v_bg[2], 1.1 * (1 - opacity), 1e-12);
}

static void test_importance_uniform() {
  // zero coarse weights -> uniform pdf over the bins: det draws land evenly between the midpoints
  const int S = 6;
  double depths[S] = {0, 1, 2, 3, 4, 5};
  float weights[S - 1] = {0, 0, 0, 0, 0};
  float cdf[S - 2];
  double out[5];
  importance_ray(depths, weights, S, 5, nullptr, cdf, out);
  EXPECT_NEAR(out[0], 0.5, 1e-5);   // first bin edge: midpoint of depths 0, 1
  EXPECT_NEAR(out[4], 3.5, 1e-5);   // last used midpoint (S-2 bins)
  EXPECT_NEAR(out[2], 2.0, 1e-5);
}

#ifdef LRM_TEST_VEC
// The branch-free float32 exp / log1p / softplus / sigmoid of composite_vec_cpu.h (plain x86-64
// build: vec namespace) against libm in double, densely over the ranges the kernels use.
static double ulp_err(float got, double want) {
  if (want == 0.0) return got == 0.0f ? 0.0 : 1e30;
  const float wf = float(want);
  const double ulp = std::fabs(double(std::nextafter(wf, 2.0f * wf)) - double(wf));
  return std::fabs(double(got) - want) / (ulp > 0 ? ulp : 1e-45);
}

static void test_vec_math_accuracy() {
  double max_exp = 0, max_l1p = 0, max_sp = 0, max_sig = 0;
  for (int i = 0; i <= 2000000; ++i) {
    const float x = -87.0f + (88.5f + 87.0f) * float(i) / 2000000.0f;  // exp's normal range
    max_exp = std::fmax(max_exp, ulp_err(lrm_fast::vec::exp(x), std::exp(double(x))));
    const float u = float(i) / 2000000.0f;  // log1p on [0, 1]
    max_l1p = std::fmax(max_l1p, ulp_err(lrm_fast::vec::log1p01(u), std::log1p(double(u))));
    const float s = -30.0f + 60.0f * float(i) / 2000000.0f;  // softplus / sigmoid
    const double sp = s > 20.0f ? double(s) : std::log1p(std::exp(double(s)));
    max_sp = std::fmax(max_sp, ulp_err(lrm_fast::vec::softplus(s), sp));
    max_sig = std::fmax(max_sig, ulp_err(lrm_fast::vec::sigmoid(s), 1.0 / (1.0 + std::exp(-double(s)))));
  }
  std::printf("vec math max error (ulp): exp %.2f log1p %.2f softplus %.2f sigmoid %.2f\n", max_exp, max_l1p,
              max_sp, max_sig);
  EXPECT_NEAR(max_exp < 3.0, 1, 0);
  EXPECT_NEAR(max_l1p < 3.0, 1, 0);
  EXPECT_NEAR(max_sp < 4.0, 1, 0);
  EXPECT_NEAR(max_sig < 4.0, 1, 0);
  // overflow / underflow / special inputs
  EXPECT_NEAR(std::isinf(lrm_fast::vec::exp(89.0f)) ? 1 : 0, 1, 0);
  EXPECT_NEAR(std::isinf(lrm_fast::vec::exp(1e4f)) ? 1 : 0, 1, 0);
  EXPECT_NEAR(lrm_fast::vec::exp(-88.0f), 0, 0);  // flushed below 1.6e-38 (expf: subnormal)
  EXPECT_NEAR(lrm_fast::vec::exp(-1e4f), 0, 0);
  EXPECT_NEAR(lrm_fast::vec::exp(0.0f), 1, 0);
  EXPECT_NEAR(std::isnan(lrm_fast::vec::exp(NAN)) ? 1 : 0, 1, 0);
  EXPECT_NEAR(lrm_fast::vec::softplus(-1e4f), 0, 0);  // a gated sample's density
  EXPECT_NEAR(lrm_fast::vec::softplus(25.0f), 25.0, 0);  // threshold 20, as torch
  EXPECT_NEAR(lrm_fast::vec::sigmoid(-1e4f), 0, 0);
  EXPECT_NEAR(lrm_fast::vec::sigmoid(1e4f), 1, 0);
  EXPECT_NEAR(lrm_fast::vec::log1p01(1e-30f), 1e-30, 1e-37);
}
#endif

int main() {
  test_ray_box();
  test_pixel_ray_center();
  test_composite_constant_density();
  test_composite_backward_matches_finite_differences();
  test_importance_uniform();
#ifdef LRM_TEST_VEC
  test_vec_math_accuracy();
#endif
  if (failures) std::printf("%d failure(s)\n", failures);
  else std::printf("all math tests passed\n");
  return failures ? 1 : 0;
}
