// ctest of the torch-free per-ray math (csrc/*.h): closed forms and a finite-difference check of
// the compositing backward, in plain C++ (no torch, no Python).
#include <cmath>
#include <cstdio>
#include <vector>

#include "../composite.h"
#include "../raymarch.h"

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

int main() {
  test_ray_box();
  test_pixel_ray_center();
  test_composite_constant_density();
  test_composite_backward_matches_finite_differences();
  test_importance_uniform();
  if (failures) std::printf("%d failure(s)\n", failures);
  else std::printf("all math tests passed\n");
  return failures ? 1 : 0;
}
