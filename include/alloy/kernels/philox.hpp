// Vectorized Philox4x32-10 uniforms: kernels::fill_uniform(rng, first, out, n) writes
// exactly what rng.fill_uniform(first, out, n) writes (core/random.hpp: the same counters,
// key schedule, word layout and uniform mapping), computing 32 Philox blocks (128 values) per
// step in AVX-512 registers, then 8 blocks (32 values) per step for the rest: 8 blocks per
// register, one per 64-bit lane, whose _mm512_mul_epu32 gives each round's full
// 32 x 32 -> 64-bit products. Without AVX-512 (or with
// ALLOY_FORCE_SCALAR) it is the scalar generator. No allocation, no throw.
#pragma once

#include <alloy/config.hpp>
#include <alloy/core/random.hpp>

#include <cstddef>
#include <cstdint>

#if !ALLOY_FORCE_SCALAR && defined(__AVX512F__)
#include <immintrin.h>
#define ALLOY_PHILOX_AVX512 1
#else
#define ALLOY_PHILOX_AVX512 0
#endif

ALLOY_INTRINSIC_WARNINGS_OFF  // GCC PR 105593 (config.hpp)

namespace alloy::kernels {

#if ALLOY_PHILOX_AVX512
namespace detail {

inline __m512i philox_uniform_bits(__m512i x) noexcept {  // float(x >> 8) * 2^-24, as bits
  return _mm512_castps_si512(_mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_srli_epi32(x, 8)), _mm512_set1_ps(0x1p-24f)));
}

// The round keys of a Philox4x32-10 key: rk[r] = key + r * Weyl, broadcast.
struct philox_keys {
  __m512i k0[10], k1[10];
  explicit philox_keys(const counter_rng& rng) noexcept {
    const auto key = rng.key();
    std::uint32_t a = key[0], b = key[1];
    for (int r = 0; r < 10; ++r) {
      if (r != 0) {
        a += 0x9E3779B9u;
        b += 0xBB67AE85u;
      }
      k0[r] = _mm512_set1_epi32(static_cast<int>(a));
      k1[r] = _mm512_set1_epi32(static_cast<int>(b));
    }
  }
};

// C groups of 8 consecutive blocks of one Philox4x32-10 stream, one block per 64-bit lane,
// blk[j] holding group j's block indices. Each word lives in the low half of its lane, so
// _mm512_mul_epu32 gives the whole 64-bit product of a round; the high half of a lane is
// ignored by the multiplies and dropped at the end. A product's high word is moved down by
// a dword shuffle rather than a shift: the multiplies and 512-bit shifts share one port.
// The C groups' rounds interleave, hiding each round's multiply latency (C = 4 ran at
// 0.39 ns per value, one group at a time 0.52 ns: docs/performance.md). Writes the 32 * C
// uniforms of the groups (4 words per block, in turn) to out.
template <int C>
inline void philox_groups(const __m512i* blk, __m512i stream_lo, __m512i stream_hi, const philox_keys& keys,
                          float* out) noexcept {
  const __m512i m0 = _mm512_set1_epi64(0xD2511F53u), m1 = _mm512_set1_epi64(0xCD9E8D57u);
  __m512i c0[C], c1[C], c2[C], c3[C];
  for (int j = 0; j < C; ++j) {
    c0[j] = blk[j];
    c1[j] = _mm512_srli_epi64(blk[j], 32);
    c2[j] = stream_lo;
    c3[j] = stream_hi;
  }
  for (int r = 0; r < 10; ++r)
    for (int j = 0; j < C; ++j) {
      const __m512i p0 = _mm512_mul_epu32(c0[j], m0), p1 = _mm512_mul_epu32(c2[j], m1);
      c0[j] = _mm512_ternarylogic_epi32(_mm512_shuffle_epi32(p1, _MM_PERM_CDAB), c1[j], keys.k0[r], 0x96);  // hi1^c1^k0
      c1[j] = p1;
      c2[j] = _mm512_ternarylogic_epi32(_mm512_shuffle_epi32(p0, _MM_PERM_CDAB), c3[j], keys.k1[r], 0x96);  // hi0^c3^k1
      c3[j] = p0;
    }
  for (int j = 0; j < C; ++j) {
    const __m512i t01 = _mm512_mask_blend_epi32(0xAAAA, c0[j], _mm512_slli_epi64(c1[j], 32));  // words 0, 1 of block l
    const __m512i t23 = _mm512_mask_blend_epi32(0xAAAA, c2[j], _mm512_slli_epi64(c3[j], 32));  // words 2, 3
    const __m512i u = _mm512_unpacklo_epi64(t01, t23), v = _mm512_unpackhi_epi64(t01, t23);  // blocks 2L, 2L + 1
    const __m512i first = _mm512_permutex2var_epi64(u, _mm512_setr_epi64(0, 1, 8, 9, 2, 3, 10, 11), v);
    const __m512i second = _mm512_permutex2var_epi64(u, _mm512_setr_epi64(4, 5, 12, 13, 6, 7, 14, 15), v);
    _mm512_storeu_si512(out + 32 * j, philox_uniform_bits(first));
    _mm512_storeu_si512(out + 32 * j + 16, philox_uniform_bits(second));
  }
}

// The 32 * C uniforms of blocks b .. b + 8 * C - 1 (b already below 2^62; block indices
// wrap at 2^62).
template <int C>
inline void philox_run(const counter_rng& rng, const philox_keys& keys, std::uint64_t b, float* out) noexcept {
  const __m512i mask = _mm512_set1_epi64(static_cast<long long>(~std::uint64_t{0} >> 2));
  const __m512i lanes =
      _mm512_add_epi64(_mm512_set1_epi64(static_cast<long long>(b)), _mm512_setr_epi64(0, 1, 2, 3, 4, 5, 6, 7));
  __m512i blk[C];
  for (int j = 0; j < C; ++j) blk[j] = _mm512_and_si512(_mm512_add_epi64(lanes, _mm512_set1_epi64(8 * j)), mask);
  philox_groups<C>(blk, _mm512_set1_epi32(static_cast<int>(rng.stream_lo())),
                   _mm512_set1_epi32(static_cast<int>(rng.stream_hi())), keys, out);
}

}  // namespace detail
#endif

// out[i] = rng.uniform(first + i) for i < n: rng.fill_uniform's values, bit for bit.
inline void fill_uniform(const counter_rng& rng, std::uint64_t first, float* out, std::size_t n) noexcept {
#if ALLOY_PHILOX_AVX512
  constexpr std::uint64_t block_mask = ~std::uint64_t{0} >> 2;
  if (const std::size_t head = static_cast<std::size_t>((4 - (first & 3u)) & 3u); head != 0) {
    const std::size_t h = head < n ? head : n;
    rng.fill_uniform(first, out, h);
    first += h;
    out += h;
    n -= h;
  }
  std::uint64_t b = (first >> 2) & block_mask;
  if (n >= 32) {
    const detail::philox_keys keys(rng);
    for (; n >= 128; n -= 128, out += 128, first += 128) {
      detail::philox_run<4>(rng, keys, b, out);
      b = (b + 32) & block_mask;
    }
    for (; n >= 32; n -= 32, out += 32, first += 32) {
      detail::philox_run<1>(rng, keys, b, out);
      b = (b + 8) & block_mask;
    }
  }
#endif
  rng.fill_uniform(first, out, n);
}

}  // namespace alloy::kernels

ALLOY_INTRINSIC_WARNINGS_ON
