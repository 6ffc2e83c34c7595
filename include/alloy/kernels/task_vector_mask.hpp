// Task-vector tile kernels for the sparse merge engine: the difference tau = x - b, and the
// keep rules of the exact top-k (magnitude key > key, or == key at a position below a tie
// limit), of a band between two such rules, of a random keep and of recorded keep bits, each
// zeroing the dropped entries and scaling the kept ones in place. SIMD for float (the keys
// are compared as int32 lanes); a scalar loop for double, whose keys are those of the value
// rounded to float.
// No allocation, no throw. Dropped entries become +0; kept NaNs stay NaN.
#pragma once

#include <alloy/kernels/radix_select.hpp>
#include <alloy/kernels/simd.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#if !ALLOY_FORCE_SCALAR && defined(__AVX512F__)
#include <immintrin.h>
#endif

ALLOY_INTRINSIC_WARNINGS_OFF  // GCC PR 105593 (config.hpp)

namespace alloy::kernels {

template <class C>
void difference(const C* x, const C* b, C* t, std::size_t n) noexcept {
  constexpr std::size_t W = width<C>;
  const std::size_t body = n / W * W;  // not j + W <= n: g++ 12 then warns of an overflow
  std::size_t j = 0;
  for (; j < body; j += W) store(t + j, load(x + j) - load(b + j));
  for (; j < n; ++j) t[j] = x[j] - b[j];
}

namespace detail {

// keep(j) for one rule, scalar: the reference the SIMD path must match.
inline bool rule_keeps(std::uint32_t k, std::uint32_t key, std::size_t j, std::size_t ties) noexcept {
  return (k > key) | ((k == key) & (j < ties));
}

template <class C>
std::uint32_t key_of(C v) noexcept {
  return magnitude_key(static_cast<float>(v));
}

#if !ALLOY_FORCE_SCALAR
// The int32 batch whose lane l holds f(l): lane indices, lane bits.
template <class F>
xsimd::batch<std::int32_t> lane_batch(F f) noexcept {
  using ib = xsimd::batch<std::int32_t>;
  alignas(64) std::int32_t data[ib::size];
  for (std::size_t l = 0; l < ib::size; ++l) data[l] = f(l);
  return ib::load_aligned(data);
}
#endif

}  // namespace detail

// t[j] = keep ? t[j] * scale : 0, with keep = in the `keep` rule and, when has_drop, not in
// the `drop` rule (Breadcrumbs' band). A rule keeps keys above its key, and keys equal to it
// at tile positions j < its ties.
template <class C>
void keep_band(C* t, std::size_t n, std::uint32_t keep_key, std::size_t keep_ties, std::uint32_t drop_key,
               std::size_t drop_ties, C scale, bool has_drop) noexcept {
  keep_ties = std::min(keep_ties, n);
  drop_ties = std::min(drop_ties, n);
  std::size_t j = 0;
#if !ALLOY_FORCE_SCALAR
  if constexpr (std::is_same_v<C, float>) {
    using ib = xsimd::batch<std::int32_t>;
    using fb = xsimd::batch<float>;
    constexpr std::size_t W = fb::size;
    const ib iota = detail::lane_batch([](std::size_t l) { return static_cast<std::int32_t>(l); });
    const ib mask(0x7fffffff), zero(0), ones(-1);
    const ib kk(static_cast<std::int32_t>(keep_key)), kt(static_cast<std::int32_t>(keep_ties));
    const ib dk(static_cast<std::int32_t>(drop_key)), dt(static_cast<std::int32_t>(drop_ties));
    const fb s(scale);
    for (; j + W <= n; j += W) {
      const fb v = fb::load_unaligned(t + j);
      const ib k = xsimd::bitwise_cast<ib>(v) & mask;
      const ib pos = iota + ib(static_cast<std::int32_t>(j));
      auto keep = (k > kk) | ((k == kk) & (pos < kt));
      if (has_drop) keep = keep & !((k > dk) | ((k == dk) & (pos < dt)));
      const fb bits = xsimd::bitwise_cast<fb>(xsimd::select(keep, ones, zero));
      ((v * s) & bits).store_unaligned(t + j);
    }
  }
#endif
  for (; j < n; ++j) {
    const std::uint32_t k = detail::key_of(t[j]);
    bool keep = detail::rule_keeps(k, keep_key, j, keep_ties);
    if (has_drop) keep = keep & !detail::rule_keeps(k, drop_key, j, drop_ties);
    t[j] = keep ? t[j] * scale : C(0);
  }
}

// Bits g .. g + count - 1 (count <= 32) of a bit array (bit g is bit g % 64 of word g / 64)
// as the low bits of the result; reads only the words holding them.
inline std::uint32_t bits_at(const std::uint64_t* bits, std::size_t g, unsigned count) noexcept {
  const std::size_t w = g >> 6;
  const unsigned s = static_cast<unsigned>(g & 63);
  std::uint64_t v = bits[w] >> s;
  if (s + count > 64) v |= bits[w + 1] << (64 - s);
  return static_cast<std::uint32_t>(v & ((std::uint64_t{1} << count) - 1));
}

// t[j] = bit (at + j) of bits set ? t[j] * scale : 0
template <class C>
void keep_bits(C* t, const std::uint64_t* bits, std::size_t at, std::size_t n, C scale) noexcept {
  std::size_t j = 0;
#if !ALLOY_FORCE_SCALAR
  if constexpr (std::is_same_v<C, float>) {
    using ib = xsimd::batch<std::int32_t>;
    using fb = xsimd::batch<float>;
    constexpr std::size_t W = fb::size;
    const ib lanes = detail::lane_batch([](std::size_t l) { return std::int32_t{1} << l; });
    const ib zero(0), ones(-1);
    const fb s(scale);
    for (; j + W <= n; j += W) {
      const ib m(static_cast<std::int32_t>(bits_at(bits, at + j, W)));
      const fb keep = xsimd::bitwise_cast<fb>(xsimd::select((m & lanes) != zero, ones, zero));
      ((fb::load_unaligned(t + j) * s) & keep).store_unaligned(t + j);
    }
  }
#endif
  for (; j < n; ++j) t[j] = bits_at(bits, at + j, 1) != 0 ? t[j] * scale : C(0);
}

// t[j] = u[j] < p ? t[j] * scale : 0
template <class C>
void keep_random(C* t, const float* u, std::size_t n, float p, C scale) noexcept {
  std::size_t j = 0;
#if !ALLOY_FORCE_SCALAR
  if constexpr (std::is_same_v<C, float>) {
    using fb = xsimd::batch<float>;
    constexpr std::size_t W = fb::size;
    const fb s(scale), pb(p), zero(0.f);
    for (; j + W <= n; j += W) {
      const fb v = fb::load_unaligned(t + j);
      xsimd::select(fb::load_unaligned(u + j) < pb, v * s, zero).store_unaligned(t + j);
    }
  }
#endif
  for (; j < n; ++j) t[j] = u[j] < p ? t[j] * scale : C(0);
}

// Packs the entries of v[0, n) other than +-0 (NaN included) to out[0, w), in order, and
// returns w. out may be v (in place); it needs n entries (the AVX-512 body stores whole
// batches, never past out + n).
template <class C>
std::size_t compress_nonzero(const C* v, std::size_t n, C* out) noexcept {
  std::size_t j = 0, w = 0;
#if !ALLOY_FORCE_SCALAR && defined(__AVX512F__)
  if constexpr (std::is_same_v<C, float>) {
    const __m512 zero = _mm512_setzero_ps();
    for (; j + 16 <= n; j += 16) {
      const __m512 x = _mm512_loadu_ps(v + j);
      const __mmask16 keep = _mm512_cmp_ps_mask(x, zero, _CMP_NEQ_UQ);
      _mm512_storeu_ps(out + w, _mm512_maskz_compress_ps(keep, x));
      w += static_cast<std::size_t>(__builtin_popcount(keep));
    }
  } else if constexpr (std::is_same_v<C, double>) {
    const __m512d zero = _mm512_setzero_pd();
    for (; j + 8 <= n; j += 8) {
      const __m512d x = _mm512_loadu_pd(v + j);
      const __mmask8 keep = _mm512_cmp_pd_mask(x, zero, _CMP_NEQ_UQ);
      _mm512_storeu_pd(out + w, _mm512_maskz_compress_pd(keep, x));
      w += static_cast<std::size_t>(__builtin_popcount(keep));
    }
  }
#endif
  for (; j < n; ++j) {
    const C x = v[j];
    out[w] = x;
    w += !(x == C(0));
  }
  return w;
}

}  // namespace alloy::kernels

ALLOY_INTRINSIC_WARNINGS_ON
