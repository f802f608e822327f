// The one CPU instruction-set picker of the extension's CPU kernels (compositing:
// composite_cpu.cpp; the fused field: triplane_mlp_cpu.cpp).
//
// The extension is compiled without -march, with AVX-512 / AVX2 / plain x86-64 builds of its hot
// loops side by side; each call runs the build cpu_isa::current() names:
//   * detected once (first use, at load): AVX-512 needs F, VL, BW, DQ and FMA; AVX2 needs AVX2 and
//     FMA; otherwise (or off x86-64) plain;
//   * LRM_FAST_CPU_ISA=avx2|plain (read once, at the same time) caps it: a process can run a
//     narrower build than its CPU has, never a wider one;
//   * the op lrm_fast::cpu_isa(cap) (cpu_isa.cpp) reports the build in use and can lower or restore
//     the cap in-process, so the tests run every build in one process and `lrm-fast info` prints it.
// (The elementwise relu loops of the field use GCC target_clones: the loader picks those, and
// every clone gives the same bits.)
#pragma once

#include <atomic>
#include <cstdlib>
#include <cstring>

namespace lrm_fast {
namespace cpu_isa {

enum Isa : int { kPlain = 0, kAvx2 = 1, kAvx512 = 2 };

inline const char* name(int isa) { return isa >= kAvx512 ? "avx512" : isa == kAvx2 ? "avx2" : "plain"; }

// -1 for an unknown name
inline int parse(const char* s) {
  if (!s) return -1;
  if (std::strcmp(s, "plain") == 0) return kPlain;
  if (std::strcmp(s, "avx2") == 0) return kAvx2;
  if (std::strcmp(s, "avx512") == 0 || std::strcmp(s, "native") == 0) return kAvx512;
  return -1;
}

// What this CPU runs, decided once per process.
inline int detected() {
  static const int isa = [] {
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    const bool fma = __builtin_cpu_supports("fma");
    if (fma && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq"))
      return int(kAvx512);
    if (fma && __builtin_cpu_supports("avx2")) return int(kAvx2);
#endif
    return int(kPlain);
  }();
  return isa;
}

// The cap: LRM_FAST_CPU_ISA at load, then whatever lrm_fast::cpu_isa(cap) set.
inline std::atomic<int>& cap() {
  static std::atomic<int> c{[] {
    const int env = parse(std::getenv("LRM_FAST_CPU_ISA"));
    return env < 0 ? int(kAvx512) : env;
  }()};
  return c;
}

// The build every kernel call runs (one relaxed atomic load).
inline int current() {
  const int c = cap().load(std::memory_order_relaxed);
  const int d = detected();
  return c < d ? c : d;
}

// Whether a compositing call (dense composite_cpu.cpp, packed occupancy_cpu.cpp) of this dtype runs
// the vectorized per-ray code of composite_vec_cpu.h: float32, unless LRM_FAST_COMPOSITE_SCALAR=1
// (read per call: the tests switch it in-process) asks for the scalar code the CUDA kernels run.
inline bool composite_vector(bool is_float32) {
  if (!is_float32) return false;
  const char* s = std::getenv("LRM_FAST_COMPOSITE_SCALAR");
  return !(s && s[0] == '1');
}

}  // namespace cpu_isa
}  // namespace lrm_fast
