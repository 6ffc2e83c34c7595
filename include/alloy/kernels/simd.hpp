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
#include <alloy/core/bf16.hpp>
#include <alloy/core/fp16.hpp>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#if !ALLOY_FORCE_SCALAR
#include <xsimd/xsimd.hpp>
#if defined(__SSE2__) || defined(_M_X64)
#include <immintrin.h>
#endif
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

// f(std::integral_constant<std::size_t, N>{}) with N = rows for 1 <= rows <= 4, else N = 0:
// a kernel looping over its models (the fused sparse merge, the band scan) takes the count
// as a template argument where it is small, so its per-model state stays in registers and
// its loops unroll; N == 0 means "use the runtime count".
template <class F>
ALLOY_ALWAYS_INLINE decltype(auto) with_small_count(std::size_t rows, const F& f) {
  switch (rows) {
    case 1: return f(std::integral_constant<std::size_t, 1>{});
    case 2: return f(std::integral_constant<std::size_t, 2>{});
    case 3: return f(std::integral_constant<std::size_t, 3>{});
    case 4: return f(std::integral_constant<std::size_t, 4>{});
    default: return f(std::integral_constant<std::size_t, 0>{});
  }
}

// ---------------------------------------------------------------------------------------
// 16-bit storage in registers: load_widen(p) reads W bf16/fp16 values as one vec<float>,
// store_narrow<nt>(p, v) rounds and writes them. Bit for bit the scalar conversions of
// core/bf16.hpp and core/fp16.hpp (the same integer arithmetic on 32-bit lanes: round to
// nearest even, Inf kept, NaN quieted with its sign and top payload bits; fp16 subnormals
// exact), so the streaming driver can convert in registers instead of through a scratch
// buffer without changing any result. The hardware conversions are not used: AVX512_BF16
// flushes subnormals, and VCVTPH2PS quiets signalling NaNs on widening.
//
// stream_store(p, v): a non-temporal store of a vec<C> (aligned to its size), for outputs far
// larger than the caches: it skips the read-for-ownership of every output line. Weakly
// ordered: the writer must call store_fence() before its results are published.

#if ALLOY_FORCE_SCALAR
ALLOY_ALWAYS_INLINE float load_widen(const bf16* p) noexcept { return bf16_to_float(p->bits); }
ALLOY_ALWAYS_INLINE float load_widen(const fp16* p) noexcept { return fp16_to_float(p->bits); }
template <bool nt = false>
ALLOY_ALWAYS_INLINE void store_narrow(bf16* p, float v) noexcept { p->bits = float_to_bf16(v); }
template <bool nt = false>
ALLOY_ALWAYS_INLINE void store_narrow(fp16* p, float v) noexcept { p->bits = float_to_fp16(v); }
template <class C>
ALLOY_ALWAYS_INLINE void stream_store(C* p, C v) noexcept { *p = v; }
inline constexpr bool has_stream_stores = false;
inline void store_fence() noexcept {}
#else
ALLOY_INTRINSIC_WARNINGS_OFF  // GCC PR 105593 (config.hpp)
namespace simd_detail {

using u32 = xsimd::batch<std::uint32_t>;
using i32 = xsimd::batch<std::int32_t>;
using arch = typename vec<float>::arch_type;
static_assert(u32::size == vec<float>::size);

// All ones in the lanes where a > k, else zero; a and k below 2^31 (the difference then
// carries the answer in its sign bit). Masks as integers, as in core/bf16.hpp's bit_select:
// xsimd 8.1 has no batch_bool conversion between lane types.
ALLOY_ALWAYS_INLINE u32 greater_mask(const u32& a, std::uint32_t k) noexcept {
  return xsimd::bitwise_cast<u32>(xsimd::bitwise_cast<i32>(u32(k) - a) >> 31);
}
ALLOY_ALWAYS_INLINE u32 bit_select(const u32& m, const u32& a, const u32& b) noexcept {
  return (a & m) | (b & ~m);  // not bitwise_andnot: its operand order differs between archs and xsimd versions
}

// W 16-bit values, zero-extended into 32-bit lanes, and back (values < 2^16). Templates on
// the arch so that only the branch of the build's arch is instantiated.
template <class A = arch>
ALLOY_ALWAYS_INLINE xsimd::batch<std::uint32_t, A> load_u16(const std::uint16_t* p) noexcept {
  using lanes = xsimd::batch<std::uint32_t, A>;
#if defined(__AVX512F__)
  if constexpr (std::is_base_of_v<xsimd::avx512f, A>)
    return _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
#endif
#if defined(__AVX2__)
  if constexpr (std::is_base_of_v<xsimd::avx2, A>)
    return _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
#endif
#if defined(__SSE2__)
  if constexpr (std::is_base_of_v<xsimd::sse2, A> && lanes::size == 4)
    return _mm_unpacklo_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)), _mm_setzero_si128());
#endif
  alignas(64) std::uint32_t t[lanes::size];
  for (std::size_t i = 0; i < lanes::size; ++i) t[i] = p[i];
  return lanes::load_aligned(t);
}

template <bool nt, class A>
ALLOY_ALWAYS_INLINE void store_u16(std::uint16_t* p, const xsimd::batch<std::uint32_t, A>& v) noexcept {
  using lanes = xsimd::batch<std::uint32_t, A>;
#if defined(__AVX512F__)
  if constexpr (std::is_base_of_v<xsimd::avx512f, A>) {
    const __m256i h = _mm512_cvtepi32_epi16(v);
    if constexpr (nt) _mm256_stream_si256(reinterpret_cast<__m256i*>(p), h);
    else _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), h);
    return;
  }
#endif
#if defined(__AVX2__)
  if constexpr (std::is_base_of_v<xsimd::avx2, A>) {
    // packus saturates signed 32-bit lanes to 16 bits: exact for values < 2^16.
    const __m128i h = _mm256_castsi256_si128(_mm256_permute4x64_epi64(_mm256_packus_epi32(v, v), 0xd8));
    if constexpr (nt) _mm_stream_si128(reinterpret_cast<__m128i*>(p), h);
    else _mm_storeu_si128(reinterpret_cast<__m128i*>(p), h);
    return;
  }
#endif
#if defined(__SSE2__)
  if constexpr (std::is_base_of_v<xsimd::sse2, A> && lanes::size == 4) {
    // Sign-extend the low halves so that the signed saturation of packs keeps them.
    const __m128i s = _mm_srai_epi32(_mm_slli_epi32(v, 16), 16);
    _mm_storel_epi64(reinterpret_cast<__m128i*>(p), _mm_packs_epi32(s, s));
    return;
  }
#endif
  alignas(64) std::uint32_t t[lanes::size];
  v.store_aligned(t);
  for (std::size_t i = 0; i < lanes::size; ++i) p[i] = static_cast<std::uint16_t>(t[i]);
}

// core/bf16.hpp float_to_bf16, lane by lane.
ALLOY_ALWAYS_INLINE u32 float_to_bf16(const vec<float>& f) noexcept {
  const u32 u = xsimd::bitwise_cast<u32>(f);
  const u32 rounded = (u + u32(0x7fffu) + ((u >> 16) & u32(1u))) >> 16;
  const u32 quiet_nan = (u >> 16) | u32(0x0040u);
  return bit_select(greater_mask(u & u32(0x7fffffffu), 0x7f800000u), quiet_nan, rounded);
}

// core/fp16.hpp fp16_to_float and float_to_fp16, lane by lane.
ALLOY_ALWAYS_INLINE vec<float> fp16_to_float(const u32& h) noexcept {
  const u32 sign = (h & u32(0x8000u)) << 16;
  const u32 em = h & u32(0x7fffu);
  const u32 normal = (em << 13) + u32(0x38000000u);
  const u32 inf_nan = (em << 13) | u32(0x7f800000u);
  const u32 subnormal =
      xsimd::bitwise_cast<u32>(xsimd::batch_cast<float>(xsimd::bitwise_cast<i32>(em)) * vec<float>(0x1p-24f));
  u32 r = bit_select(greater_mask(em, 0x03ffu), normal, subnormal);  // em >= 0x400
  r = bit_select(greater_mask(em, 0x7bffu), inf_nan, r);              // em >= 0x7c00
  return xsimd::bitwise_cast<vec<float>>(sign | r);
}
ALLOY_ALWAYS_INLINE u32 float_to_fp16(const vec<float>& f) noexcept {
  const u32 u = xsimd::bitwise_cast<u32>(f);
  const u32 sign = (u >> 16) & u32(0x8000u);
  const u32 a = u & u32(0x7fffffffu);
  const u32 normal = (a - u32(0x38000000u) + u32(0x0fffu) + ((a >> 13) & u32(1u))) >> 13;
  const u32 subnormal =
      xsimd::bitwise_cast<u32>(xsimd::bitwise_cast<vec<float>>(a) + vec<float>(0.5f)) - u32(0x3f000000u);
  const u32 quiet_nan = u32(0x7e00u) | ((a >> 13) & u32(0x03ffu));
  u32 r = bit_select(greater_mask(a, 0x387fffffu), normal, subnormal);  // a >= 0x38800000
  r = bit_select(greater_mask(a, 0x477fefffu), u32(0x7c00u), r);        // a >= 0x477ff000
  r = bit_select(greater_mask(a, 0x7f800000u), quiet_nan, r);
  return sign | r;
}

}  // namespace simd_detail

ALLOY_ALWAYS_INLINE vec<float> load_widen(const bf16* p) noexcept {
  return xsimd::bitwise_cast<vec<float>>(simd_detail::load_u16(&p->bits) << 16);
}
ALLOY_ALWAYS_INLINE vec<float> load_widen(const fp16* p) noexcept {
  return simd_detail::fp16_to_float(simd_detail::load_u16(&p->bits));
}
template <bool nt = false>
ALLOY_ALWAYS_INLINE void store_narrow(bf16* p, const vec<float>& v) noexcept {
  simd_detail::store_u16<nt>(&p->bits, simd_detail::float_to_bf16(v));
}
template <bool nt = false>
ALLOY_ALWAYS_INLINE void store_narrow(fp16* p, const vec<float>& v) noexcept {
  simd_detail::store_u16<nt>(&p->bits, simd_detail::float_to_fp16(v));
}

// True when stream_store and store_narrow<true> really bypass the caches (x86); elsewhere
// they are ordinary stores.
#if defined(__SSE2__)
inline constexpr bool has_stream_stores = std::is_base_of_v<xsimd::sse2, simd_detail::arch>;
#else
inline constexpr bool has_stream_stores = false;
#endif

template <class C, class A>
ALLOY_ALWAYS_INLINE void stream_store(C* p, const xsimd::batch<C, A>& v) noexcept {
  constexpr bool is_f = std::is_same_v<C, float>;
#if defined(__AVX512F__)
  if constexpr (std::is_base_of_v<xsimd::avx512f, A>) {
    if constexpr (is_f) _mm512_stream_ps(p, v);
    else _mm512_stream_pd(p, v);
    return;
  }
#endif
#if defined(__AVX__)
  if constexpr (std::is_base_of_v<xsimd::avx, A>) {
    if constexpr (is_f) _mm256_stream_ps(p, v);
    else _mm256_stream_pd(p, v);
    return;
  }
#endif
#if defined(__SSE2__)
  if constexpr (std::is_base_of_v<xsimd::sse2, A>) {
    if constexpr (is_f) _mm_stream_ps(p, v);
    else _mm_stream_pd(p, v);
    return;
  }
#endif
  v.store_unaligned(p);
}

// Orders this thread's earlier non-temporal stores before its later stores (as a release
// needs): call it once after a run of stream_store / store_narrow<true>.
inline void store_fence() noexcept {
#if defined(__SSE2__)
  _mm_sfence();
#endif
}
ALLOY_INTRINSIC_WARNINGS_ON
#endif

// The widest batch of any compute type, for sizing scratch buffers and chunks.
inline constexpr std::size_t max_width = width<float> > width<double> ? width<float> : width<double>;
static_assert(parallel_chunk % max_width == 0);

}  // namespace alloy::kernels
