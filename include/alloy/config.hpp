// Compile-time configuration.
//
// ALLOY_FORCE_SCALAR: define (to 1) before including any alloy header to build every kernel
// with its scalar path instead of xsimd batches. Tests compare the two; results are
// identical element by element (kernels use no fused multiply-add and process the same
// elements in the scalar tail whatever the chunking).
#pragma once

#include <cstddef>

#ifndef ALLOY_FORCE_SCALAR
#define ALLOY_FORCE_SCALAR 0
#endif

// For the few small helpers of the kernels' inner loops (batch loads, packs, functor
// bodies) that must inline even at -O2/-O1, where GCC's inliner may leave a call per batch.
#if defined(__GNUC__) || defined(__clang__)
#define ALLOY_ALWAYS_INLINE inline __attribute__((always_inline))
#elif defined(_MSC_VER)
#define ALLOY_ALWAYS_INLINE __forceinline
#else
#define ALLOY_ALWAYS_INLINE inline
#endif

// Around kernel code that inlines AVX-512 intrinsics: GCC 12 reports the intrinsics' own
// internal undefined values (__Y) as "(may be) used uninitialized" once they are inlined (a
// false positive, GCC PR 105593). The pair pushes and pops the diagnostic state.
#if defined(__GNUC__) && !defined(__clang__)
#define ALLOY_INTRINSIC_WARNINGS_OFF                                                         \
  _Pragma("GCC diagnostic push") _Pragma("GCC diagnostic ignored \"-Wmaybe-uninitialized\"") \
      _Pragma("GCC diagnostic ignored \"-Wuninitialized\"")
#define ALLOY_INTRINSIC_WARNINGS_ON _Pragma("GCC diagnostic pop")
#else
#define ALLOY_INTRINSIC_WARNINGS_OFF
#define ALLOY_INTRINSIC_WARNINGS_ON
#endif

namespace alloy {
// Elements per work item when a tensor is split across threads. A multiple of every SIMD
// width, so chunk boundaries never move an element between the SIMD body and the scalar tail.
inline constexpr std::size_t parallel_chunk = std::size_t{1} << 18;
}
