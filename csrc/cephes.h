// The Cephes single-precision exp and log constants, written once for every C++ user: the
// vectorizable lane exp/log1p of the compositing kernels (composite_vec_cpu_impl.h) and the
// AVX2 exp of the fused CPU field's SiLU (triplane_mlp_cpu.cpp, exp_avx2).
//
// exp(x) = 2^n exp(r): n = round(x / ln2), r = x - n ln2 with ln2 split in two (kLn2Hi has few
// bits, so n * kLn2Hi is exact), exp(r) = 1 + r + r^2 P(r) on |r| <= ln2 / 2 with the degree-5
// polynomial kExpP (Cephes expf). log(1 + f) = f - f^2 / 2 + f^3 Q(f) with the degree-8
// polynomial kLogQ (Cephes logf), and the same split ln2.
//
// The two exps round n and apply 2^n each in their own way (the lane version flushes results
// below 1.6e-38 to 0 and scales by two factors; the AVX2 one saturates at +-88.38 and scales once):
// each kernel's bits are held by its own tests, so only the constants are shared.
#pragma once

namespace lrm_fast {
namespace cephes {

constexpr float kLog2e = 1.44269504088896341f;  // 1 / ln 2
constexpr float kLn2Hi = 0.693359375f;          // ln 2 = kLn2Hi - kLn2Lo
constexpr float kLn2Lo = 2.12194440e-4f;
// exp(r) = 1 + r + r^2 (((((P0 r + P1) r + P2) r + P3) r + P4) r + P5)
constexpr float kExpP0 = 1.9875691500e-4f;
constexpr float kExpP1 = 1.3981999507e-3f;
constexpr float kExpP2 = 8.3334519073e-3f;
constexpr float kExpP3 = 4.1665795894e-2f;
constexpr float kExpP4 = 1.6666665459e-1f;
constexpr float kExpP5 = 5.0000001201e-1f;
// log(1 + f) = f - f^2 / 2 + f^3 (((((((Q0 f + Q1) f + Q2) f + Q3) f + Q4) f + Q5) f + Q6) f + Q7) f + Q8)
constexpr float kLogQ0 = 7.0376836292e-2f;
constexpr float kLogQ1 = -1.1514610310e-1f;
constexpr float kLogQ2 = 1.1676998740e-1f;
constexpr float kLogQ3 = -1.2420140846e-1f;
constexpr float kLogQ4 = 1.4249322787e-1f;
constexpr float kLogQ5 = -1.6668057665e-1f;
constexpr float kLogQ6 = 2.0000714765e-1f;
constexpr float kLogQ7 = -2.4999993993e-1f;
constexpr float kLogQ8 = 3.3333331174e-1f;

}  // namespace cephes
}  // namespace lrm_fast
