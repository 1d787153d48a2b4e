// The CPU instruction set the kernels run with, shared by every CPU kernel file (point_kernels.cc,
// batch_norm_kernels.cc): each compiles its loops once per instruction set, in namespaces scalar,
// avx2 and avx512, and picks one when the library loads.
#ifndef JSNET_TF_OPS_CPU_ISA_H_
#define JSNET_TF_OPS_CPU_ISA_H_

#include <cstdlib>
#include <string>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define JSNET_X86_SIMD 1
#include <immintrin.h>
#endif

namespace jsnet_cpu {

enum class Isa { kScalar, kAvx2, kAvx512 };

// The widest instruction set this CPU runs; JSNET_CPU_ISA=scalar|avx2|avx512 narrows it (tests
// and benchmarks use that to exercise every path).
inline Isa DetectIsa() {
  Isa best = Isa::kScalar;
#ifdef JSNET_X86_SIMD
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) best = Isa::kAvx2;  // the avx2 loops use FMA
  if (__builtin_cpu_supports("avx512f")) best = Isa::kAvx512;
#endif
  const char* wanted = std::getenv("JSNET_CPU_ISA");
  if (wanted != nullptr) {
    const std::string name(wanted);
    const Isa asked = name == "scalar" ? Isa::kScalar : name == "avx2" ? Isa::kAvx2 : best;
    if (asked < best) best = asked;
  }
  return best;
}

// DetectIsa's answer, found once per process.
inline Isa CpuIsa() {
  static const Isa isa = DetectIsa();
  return isa;
}

// The variant of a per-ISA loop for this CPU's instruction set.
template <typename Fn>
Fn ForIsa(Fn scalar_fn, Fn avx2_fn, Fn avx512_fn) {
  const Isa isa = CpuIsa();
  return isa == Isa::kAvx512 ? avx512_fn : isa == Isa::kAvx2 ? avx2_fn : scalar_fn;
}

}  // namespace jsnet_cpu

#ifdef JSNET_X86_SIMD
#define JSNET_FOR_ISA(fn) ::jsnet_cpu::ForIsa(&scalar::fn, &avx2::fn, &avx512::fn)
#else
#define JSNET_FOR_ISA(fn) (&scalar::fn)
#endif

#endif  // JSNET_TF_OPS_CPU_ISA_H_
