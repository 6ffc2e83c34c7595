// The one header that includes xsimd. Every SIMD operation alloy uses goes through here,
// because xsimd 8.1 (Debian bookworm) lacks newer names and because ALLOY_FORCE_SCALAR
// swaps the batch type for the plain scalar.
//
// vec<C> is the batch of compute type C (float or double) for the consumer's compile flags
// (xsimd::default_arch), or C itself when ALLOY_FORCE_SCALAR is set. Kernel functors are
// written once, generically over V = vec<C> or V = C, using only the overloads below and
// the arithmetic operators, so the scalar tail computes bit for bit what the SIMD body does.
// No fused multiply-add is written anywhere. A compiler allowed to contract a*b+c (g++ and
// clang do by default once FMA instructions are enabled, e.g. -march=native) may still fuse
// in the body or the tail; results then stay independent of the thread count (every element
// takes the same path whatever the chunking) but may differ in the last bit between builds.
// Add -ffp-contract=off for bit-identical results across builds.
#pragma once

#include <alloy/config.hpp>

#include <cmath>
#include <cstddef>

#if !ALLOY_FORCE_SCALAR
#include <xsimd/xsimd.hpp>
#endif

namespace alloy::kernels {

#if ALLOY_FORCE_SCALAR
template <class C>
using vec = C;
template <class C>
inline constexpr std::size_t width = 1;
template <class C>
inline vec<C> load(const C* p) noexcept { return *p; }
template <class C>
inline void store(C* p, vec<C> v) noexcept { *p = v; }
#else
template <class C>
using vec = xsimd::batch<C>;
template <class C>
inline constexpr std::size_t width = xsimd::batch<C>::size;
template <class C>
inline vec<C> load(const C* p) noexcept { return xsimd::load_unaligned(p); }
template <class C>
inline void store(C* p, const vec<C>& v) noexcept { v.store_unaligned(p); }
#endif

// kernels::select(mask, a, b) (call it qualified: xsimd::select is found by ADL): a where mask, else b; for scalars (mask bool, or the int that bool
// operators give) and for batches (mask from a comparison of batches).
template <class C>
inline C select(bool m, C a, C b) noexcept {
  return m ? a : b;
}
#if !ALLOY_FORCE_SCALAR
template <class C, class A>
inline xsimd::batch<C, A> select(const xsimd::batch_bool<C, A>& m, const xsimd::batch<C, A>& a,
                                 const xsimd::batch<C, A>& b) noexcept {
  return xsimd::select(m, a, b);
}
#endif

// The widest batch of any compute type, for sizing scratch buffers and chunks.
inline constexpr std::size_t max_width = width<float> > width<double> ? width<float> : width<double>;
static_assert(parallel_chunk % max_width == 0);

}  // namespace alloy::kernels
