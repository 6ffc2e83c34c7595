// Vectorized Philox4x32-10 uniforms: kernels::fill_uniform(rng, first, out, n) writes
// exactly what rng.fill_uniform(first, out, n) writes (core/random.hpp: the same counters,
// key schedule, word layout and uniform mapping), computing 16 Philox blocks (64 values) per
// step in AVX-512 registers: 8 blocks per register, one per 64-bit lane, whose
// _mm512_mul_epu32 gives each round's full 32 x 32 -> 64-bit products. Without AVX-512 (or with
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

// Blocks b .. b + 7 of one Philox4x32-10 stream, one block per 64-bit lane: each word lives
// in the low half of its lane, so _mm512_mul_epu32 gives the whole 64-bit product of a round
// (the high half of a lane is ignored by the multiplies and dropped at the end). Writes the
// 32 uniforms of the 8 blocks (4 words each, in turn) to out.
inline void philox_8x4(__m512i blk, __m512i c2, __m512i c3, const philox_keys& keys, float* out) noexcept {
  const __m512i m0 = _mm512_set1_epi64(0xD2511F53u), m1 = _mm512_set1_epi64(0xCD9E8D57u);
  __m512i c0 = blk, c1 = _mm512_srli_epi64(blk, 32);
  for (int r = 0; r < 10; ++r) {
    const __m512i p0 = _mm512_mul_epu32(c0, m0), p1 = _mm512_mul_epu32(c2, m1);
    c0 = _mm512_ternarylogic_epi32(_mm512_srli_epi64(p1, 32), c1, keys.k0[r], 0x96);  // hi1 ^ c1 ^ k0
    c1 = p1;
    c2 = _mm512_ternarylogic_epi32(_mm512_srli_epi64(p0, 32), c3, keys.k1[r], 0x96);  // hi0 ^ c3 ^ k1
    c3 = p0;
  }
  const __m512i t01 = _mm512_mask_blend_epi32(0xAAAA, c0, _mm512_slli_epi64(c1, 32));  // words 0, 1 of block l
  const __m512i t23 = _mm512_mask_blend_epi32(0xAAAA, c2, _mm512_slli_epi64(c3, 32));  // words 2, 3
  const __m512i u = _mm512_unpacklo_epi64(t01, t23), v = _mm512_unpackhi_epi64(t01, t23);  // blocks 2L, 2L + 1
  const __m512i first = _mm512_permutex2var_epi64(u, _mm512_setr_epi64(0, 1, 8, 9, 2, 3, 10, 11), v);
  const __m512i second = _mm512_permutex2var_epi64(u, _mm512_setr_epi64(4, 5, 12, 13, 6, 7, 14, 15), v);
  _mm512_storeu_si512(out, philox_uniform_bits(first));
  _mm512_storeu_si512(out + 16, philox_uniform_bits(second));
}

// The 64 uniforms of blocks b .. b + 15 (b already below 2^62; block indices wrap at 2^62).
inline void philox_64(const counter_rng& rng, const philox_keys& keys, std::uint64_t b, float* out) noexcept {
  const __m512i mask = _mm512_set1_epi64(static_cast<long long>(~std::uint64_t{0} >> 2));
  const __m512i base = _mm512_set1_epi64(static_cast<long long>(b));
  const __m512i c2 = _mm512_set1_epi32(static_cast<int>(rng.stream_lo()));
  const __m512i c3 = _mm512_set1_epi32(static_cast<int>(rng.stream_hi()));
  philox_8x4(_mm512_and_si512(_mm512_add_epi64(base, _mm512_setr_epi64(0, 1, 2, 3, 4, 5, 6, 7)), mask), c2, c3, keys, out);
  philox_8x4(_mm512_and_si512(_mm512_add_epi64(base, _mm512_setr_epi64(8, 9, 10, 11, 12, 13, 14, 15)), mask), c2, c3, keys,
             out + 32);
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
  if (n >= 64) {
    const detail::philox_keys keys(rng);
    for (; n >= 64; n -= 64, out += 64, first += 64) {
      detail::philox_64(rng, keys, b, out);
      b = (b + 16) & block_mask;
    }
  }
#endif
  rng.fill_uniform(first, out, n);
}

}  // namespace alloy::kernels

ALLOY_INTRINSIC_WARNINGS_ON
