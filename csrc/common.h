// Shared by the CPU (.cpp) and CUDA (.cu) translation units and by the torch-free ctest.
// LRM_HD marks the per-ray math as callable from host and device code, so the CPU kernel and
// the CUDA kernel run literally the same functions and CI (CPU only) tests the GPU's math.
#pragma once

#if defined(__CUDACC__)
#define LRM_HD __host__ __device__ __forceinline__
#else
#define LRM_HD inline
#endif

#include <cmath>

namespace lrm_fast {

template <typename T> LRM_HD T lrm_min(T a, T b) { return a < b ? a : b; }
template <typename T> LRM_HD T lrm_max(T a, T b) { return a > b ? a : b; }
// float overloads on host and device (plain ::exp(float) would round-trip through double on host)
LRM_HD float lrm_exp(float x) { return ::expf(x); }
LRM_HD double lrm_exp(double x) { return ::exp(x); }
LRM_HD float lrm_log1p(float x) { return ::log1pf(x); }
LRM_HD double lrm_log1p(double x) { return ::log1p(x); }
LRM_HD float lrm_sqrt(float x) { return ::sqrtf(x); }
LRM_HD double lrm_sqrt(double x) { return ::sqrt(x); }

}  // namespace lrm_fast
