// band_filter: one streaming look at a tile of values for the sampled top-k: counts the
// entries whose magnitude key (kernels/radix_select.hpp: the float bit pattern with the sign
// cleared) lies above `high`, and reports the position of every entry whose key lies in
// [low, high] to a callback. SIMD over the keys; the callback runs only for the (rare)
// batches holding a band entry. No allocation, no throw.
//
// band_scan (the form the sampled top-k uses): the same look, with the magnitudes computed
// in registers from the inputs (tau = x - b for f32 or bf16 pairs, exactly as the merge
// computes it: the bf16 widening is exact, the difference one float subtraction) or read
// from a float tile; the band entries are written, in increasing position, as keys and
// positions to caller arrays (AVX-512: a compress of the set lanes, no per-lane loop), and
// entries whose key is one of a few "heavy" keys (massive tie groups, e.g. bf16 data) are
// only counted per key, not written.
#pragma once

#include <alloy/kernels/radix_select.hpp>
#include <alloy/kernels/simd.hpp>

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>

#if !ALLOY_FORCE_SCALAR && defined(__AVX512F__)
#include <immintrin.h>
#define ALLOY_BAND_AVX512 1
#else
#define ALLOY_BAND_AVX512 0
#endif

ALLOY_INTRINSIC_WARNINGS_OFF  // GCC PR 105593 (config.hpp)

namespace alloy::kernels {

// Returns the number of entries with key > high; calls on_band(j, key) for every j < n with
// low <= key <= high, in increasing j. Requires low <= high <= 0x7fffffff.
template <class OnBand>
std::size_t band_filter(const float* v, std::size_t n, std::uint32_t low, std::uint32_t high, OnBand&& on_band) {
  std::size_t above = 0, j = 0;
#if !ALLOY_FORCE_SCALAR
  using ib = xsimd::batch<std::int32_t>;
  using fb = xsimd::batch<float>;
  static_assert(ib::size == fb::size);
  constexpr std::size_t W = fb::size;
  const ib mask(0x7fffffff), lo(static_cast<std::int32_t>(low)), hi(static_cast<std::int32_t>(high)), one(1), zero(0);
  ib count(0);
  std::size_t since_flush = 0;
  for (; j + W <= n; j += W) {
    const ib key = xsimd::bitwise_cast<ib>(fb::load_unaligned(v + j)) & mask;
    count = count + xsimd::select(key > hi, one, zero);
    const auto band = (key >= lo) & (key <= hi);
    if (xsimd::any(band)) {
      alignas(64) std::int32_t k[W];
      key.store_aligned(k);
      for (std::size_t l = 0; l < W; ++l)
        if (k[l] >= static_cast<std::int32_t>(low) && k[l] <= static_cast<std::int32_t>(high))
          on_band(j + l, static_cast<std::uint32_t>(k[l]));
    }
    if (++since_flush == (std::size_t{1} << 26)) {  // keep hadd of the 32-bit lanes from overflowing
      above += static_cast<std::size_t>(xsimd::hadd(count));
      count = zero;
      since_flush = 0;
    }
  }
  above += static_cast<std::size_t>(xsimd::hadd(count));
#endif
  for (; j < n; ++j) {
    const std::uint32_t key = magnitude_key(v[j]);
    above += key > high;
    if (key >= low && key <= high) on_band(j, key);
  }
  return above;
}

// ---------------------------------------------------------------------------------------
// band_scan

inline constexpr std::size_t band_max_heavy = 8;
// How far ahead band_scan_many prefetches each input (measured: 1-4 KiB all gain 15-35%).
inline constexpr std::size_t band_prefetch_bytes = 2048;
// Room band_scan may write past the entries it reports (a whole SIMD batch).
inline constexpr std::size_t band_slack = 16;
// At most this many models per band_scan_many call.
inline constexpr std::size_t band_max_models = 16;

// The AVX-512 scans find an entry's heavy key by 4 of its bits, [heavy_shift, heavy_shift + 4):
// set_heavy keeps only keys distinct there.
struct band_query {
  std::uint32_t low = 0, high = 0x7fffffffu;  // the band [low, high], low <= high <= 0x7fffffff
  std::uint32_t heavy[band_max_heavy] = {};   // keys in the band counted, not written (set_heavy)
  std::size_t n_heavy = 0;
  unsigned heavy_shift = 0;

  // Heavy keys from `wanted` (most wanted first): the shift that admits the most of them,
  // then the most wanted; a key is admitted, in order, while its 4 bits are free and fewer
  // than band_max_heavy are in. A key dropped here is collected like any other band key: the
  // scan's result is the same, only slower. Returns the number admitted.
  std::size_t set_heavy(std::span<const std::uint32_t> wanted) noexcept {
    std::size_t best_count = 0;
    unsigned best_mask = 0, best_shift = 0;  // mask: bit (31 - p) for the admitted p-th wanted key
    for (unsigned s = 0; s <= 27; ++s) {
      unsigned used = 0, mask = 0;
      std::size_t count = 0;
      for (std::size_t p = 0; p < wanted.size() && p < 32 && count < band_max_heavy; ++p) {
        const unsigned bit = 1u << ((wanted[p] >> s) & 15u);
        if (used & bit) continue;
        used |= bit;
        mask |= 1u << (31 - p);
        ++count;
      }
      if (count > best_count || (count == best_count && mask > best_mask)) {
        best_count = count;
        best_mask = mask;
        best_shift = s;
      }
    }
    n_heavy = 0;
    heavy_shift = best_shift;
    for (std::size_t p = 0; p < wanted.size() && p < 32; ++p)
      if (best_mask & (1u << (31 - p))) heavy[n_heavy++] = wanted[p];
    return n_heavy;
  }
};

// Accumulated over the tiles of a range by band_scan.
struct band_tally {
  std::size_t above = 0;                         // entries with key > high
  std::size_t heavy_count[band_max_heavy] = {};  // entries with key == heavy[h]
};

namespace detail {

inline std::uint32_t bf16_bits_to_float_bits(std::uint16_t h) noexcept { return std::uint32_t{h} << 16; }

// The scalar step: one entry of key k at position `pos`.
inline std::size_t band_one(std::uint32_t k, std::uint32_t pos, const band_query& q, band_tally& t,
                            std::uint32_t* keys, std::uint32_t* positions, std::size_t w) noexcept {
  t.above += k > q.high;
  if (k >= q.low && k <= q.high) {
    for (std::size_t h = 0; h < q.n_heavy; ++h)
      if (k == q.heavy[h]) {
        ++t.heavy_count[h];
        return w;
      }
    keys[w] = k;
    positions[w] = pos;
    ++w;
  }
  return w;
}

#if ALLOY_BAND_AVX512
// Counts the entries of a query's heavy keys 16 at a time: bits [heavy_shift, +4) of a key
// pick one of 16 table slots (one permute), a hit when the slot holds that key, and each
// heavy key has a 4-bit counter in every 32-bit lane (a second permute gives the increment),
// widened to 8-bit counters every 15 batches (by the caller: one count for all models) and
// summed every 17 widenings. Five vector instructions a batch for any number of heavy keys,
// where a compare, a popcount and an add per key took about forty for eight (the sampled
// top-k of bf16 task vectors uses 1-8): ties method alone on the 0.57B benchmark set
// (make_llama_checkpoint --method-time) 0.96-1.03 -> 0.85-0.91 s.
struct heavy_counter {
  __m512i table, increment, by, nibbles, bytes_even, bytes_odd;
  unsigned widenings = 0;
  std::size_t counts[band_max_heavy] = {};

  heavy_counter() = default;
  explicit heavy_counter(const band_query& q) noexcept {
    alignas(64) std::uint32_t t[16], inc[16];
    for (std::size_t s = 0; s < 16; ++s) {
      t[s] = 0xffffffffu;  // no key (<= 0x7fffffff) equals it
      inc[s] = 0;
    }
    for (std::size_t h = 0; h < q.n_heavy; ++h) {
      const std::size_t s = (q.heavy[h] >> q.heavy_shift) & 15u;
      t[s] = q.heavy[h];
      inc[s] = 1u << (4 * h);
    }
    table = _mm512_load_si512(t);
    increment = _mm512_load_si512(inc);
    by = _mm512_set1_epi32(static_cast<int>(q.heavy_shift));
    nibbles = bytes_even = bytes_odd = _mm512_setzero_si512();
  }
  // The band lanes of k holding a heavy key, counted. At most 15 calls between widen().
  ALLOY_ALWAYS_INLINE __mmask16 hits(__m512i k, __mmask16 band) noexcept {
    const __m512i slot = _mm512_srlv_epi32(k, by);  // the permutes read its low 4 bits
    const __mmask16 hit = _mm512_mask_cmpeq_epi32_mask(band, _mm512_permutexvar_epi32(slot, table), k);
    nibbles = _mm512_mask_add_epi32(nibbles, hit, nibbles, _mm512_permutexvar_epi32(slot, increment));
    return hit;
  }
  void widen() noexcept {
    const __m512i low4 = _mm512_set1_epi32(0x0f0f0f0f);
    bytes_even = _mm512_add_epi32(bytes_even, _mm512_and_si512(nibbles, low4));  // keys 0, 2, 4, 6
    bytes_odd = _mm512_add_epi32(bytes_odd, _mm512_and_si512(_mm512_srli_epi32(nibbles, 4), low4));
    nibbles = _mm512_setzero_si512();
    if (++widenings == 17) sum_bytes();
  }
  void sum_bytes() noexcept {
    const __m512i byte = _mm512_set1_epi32(0xff);
    for (unsigned b = 0; b < 4; ++b) {
      const __m512i by_b = _mm512_set1_epi32(static_cast<int>(8 * b));
      counts[2 * b] += static_cast<std::size_t>(_mm512_reduce_add_epi32(_mm512_and_si512(_mm512_srlv_epi32(bytes_even, by_b), byte)));
      counts[2 * b + 1] += static_cast<std::size_t>(_mm512_reduce_add_epi32(_mm512_and_si512(_mm512_srlv_epi32(bytes_odd, by_b), byte)));
    }
    bytes_even = bytes_odd = _mm512_setzero_si512();
    widenings = 0;
  }
  // Adds the counts so far to t and starts again.
  void finish(std::size_t n_heavy, band_tally& t) noexcept {
    widen();
    sum_bytes();
    for (std::size_t h = 0; h < n_heavy; ++h) {
      t.heavy_count[h] += counts[h];
      counts[h] = 0;
    }
  }
};

// The body over whole batches of 16: key(j) gives the 16 keys at j. Returns entries written.
template <class Key>
inline std::size_t band_body_avx512(std::size_t n, std::uint32_t first_pos, const band_query& q, band_tally& t,
                                    std::uint32_t* keys, std::uint32_t* positions, std::size_t& j, const Key& key) noexcept {
  const __m512i lo = _mm512_set1_epi32(static_cast<int>(q.low)), hi = _mm512_set1_epi32(static_cast<int>(q.high));
  heavy_counter heavy(q);
  const bool any_heavy = q.n_heavy != 0;
  const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  std::size_t w = 0, above = 0;
  for (unsigned since_widen = 0; j + 16 <= n; j += 16) {
    if (since_widen == 15) {
      heavy.widen();
      since_widen = 0;
    }
    ++since_widen;
    const __m512i k = key(j);
    above += static_cast<std::size_t>(std::popcount(static_cast<unsigned>(_mm512_cmpgt_epi32_mask(k, hi))));
    __mmask16 band = _mm512_mask_cmple_epi32_mask(_mm512_cmpge_epi32_mask(k, lo), k, hi);
    // The heavy keys counted without a test of `band` first, as in band_scan_many below.
    if (any_heavy) band = static_cast<__mmask16>(band & ~heavy.hits(k, band));
    if (band == 0) continue;
    const __m512i pos = _mm512_add_epi32(iota, _mm512_set1_epi32(static_cast<int>(first_pos + j)));
    _mm512_storeu_si512(keys + w, _mm512_maskz_compress_epi32(band, k));
    _mm512_storeu_si512(positions + w, _mm512_maskz_compress_epi32(band, pos));
    w += static_cast<std::size_t>(std::popcount(static_cast<unsigned>(band)));
  }
  t.above += above;
  if (any_heavy) heavy.finish(q.n_heavy, t);
  return w;
}
#endif

}  // namespace detail

// The band look over n magnitudes, each given as a float value (its sign ignored):
//   v                      band_scan(v, nullptr, n, ...)       keys of v[j]
//   x, b (f32)             band_scan(x, b, n, ...)             keys of x[j] - b[j]
//   x, b (bf16 bits)       band_scan_bf16(x, b, n, ...)        keys of float(x[j]) - float(b[j])
// Adds to t the entries above the band and the heavy-key counts; writes each other band
// entry's key and position (first_pos + j) to keys[w], positions[w] in increasing j and
// returns w. keys and positions need room for the entries written plus band_slack (at most
// n + band_slack in all).
inline std::size_t band_scan(const float* x, const float* b, std::size_t n, std::uint32_t first_pos, const band_query& q,
                             band_tally& t, std::uint32_t* keys, std::uint32_t* positions) noexcept {
  std::size_t j = 0, w = 0;
#if ALLOY_BAND_AVX512
  const __m512i sign = _mm512_set1_epi32(0x7fffffff);
  if (b == nullptr)
    w = detail::band_body_avx512(n, first_pos, q, t, keys, positions, j, [&](std::size_t i) {
      return _mm512_and_si512(_mm512_loadu_si512(x + i), sign);
    });
  else
    w = detail::band_body_avx512(n, first_pos, q, t, keys, positions, j, [&](std::size_t i) {
      return _mm512_and_si512(_mm512_castps_si512(_mm512_sub_ps(_mm512_loadu_ps(x + i), _mm512_loadu_ps(b + i))), sign);
    });
#endif
  for (; j < n; ++j) {
    const float v = b == nullptr ? x[j] : x[j] - b[j];
    w = detail::band_one(magnitude_key(v), first_pos + static_cast<std::uint32_t>(j), q, t, keys, positions, w);
  }
  return w;
}

inline std::size_t band_scan_bf16(const std::uint16_t* x, const std::uint16_t* b, std::size_t n, std::uint32_t first_pos,
                                  const band_query& q, band_tally& t, std::uint32_t* keys, std::uint32_t* positions) noexcept {
  std::size_t j = 0, w = 0;
#if ALLOY_BAND_AVX512
  const __m512i sign = _mm512_set1_epi32(0x7fffffff);
  w = detail::band_body_avx512(n, first_pos, q, t, keys, positions, j, [&](std::size_t i) {
    const __m512 xf = _mm512_castsi512_ps(
        _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + i))), 16));
    const __m512 bf = _mm512_castsi512_ps(
        _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + i))), 16));
    return _mm512_and_si512(_mm512_castps_si512(_mm512_sub_ps(xf, bf)), sign);
  });
#endif
  for (; j < n; ++j) {
    const float v = std::bit_cast<float>(detail::bf16_bits_to_float_bits(x[j])) -
                    std::bit_cast<float>(detail::bf16_bits_to_float_bits(b[j]));
    w = detail::band_one(magnitude_key(v), first_pos + static_cast<std::uint32_t>(j), q, t, keys, positions, w);
  }
  return w;
}

// The band look for several models sharing one base, in one sweep: per batch the base is
// loaded once and every model's tau computed from it, so all the inputs stream together
// (the hardware prefetchers see every stream at once). x[i] is model i's data at the tile
// start, stored like the base (f32, or bf16 bits when bf16); model i's results go to
// targets[i] exactly as band_scan / band_scan_bf16 would write them (written: entries so far,
// advanced). m <= band_max_models.
struct band_target {
  const band_query* q;
  band_tally* t;
  std::uint32_t* keys;       // room for written + n + band_slack entries
  std::uint32_t* positions;
  std::size_t written;
};

namespace detail {
// band_scan_many for N models (N != 0, known at compile time: the lanes stay in registers and
// the loops over models unroll) or m (N == 0), stored as bf16 or f32.
template <std::size_t N, bool bf16>
void band_scan_many_n(const void* const* x, std::size_t m, const void* b, std::size_t n, std::uint32_t first_pos,
                      band_target* targets) noexcept {
  std::size_t j = 0;
  if constexpr (N != 0) m = N;
#if ALLOY_BAND_AVX512
  const __m512i sign = _mm512_set1_epi32(0x7fffffff);
  const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  auto load = [](const void* p, std::size_t i) {
    if constexpr (bf16)
      return _mm512_castsi512_ps(_mm512_slli_epi32(
          _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const std::uint16_t*>(p) + i))),
          16));
    return _mm512_loadu_ps(static_cast<const float*>(p) + i);
  };
  // Each model's query and counts in locals: the compress stores below may alias anything
  // reached through a pointer, so state read through `targets` would be reloaded and its
  // counts read-modify-written in memory on every batch.
  struct lane {
    __m512i low, high;
    detail::heavy_counter heavy;
    bool any_heavy;
    std::size_t above, written;
    std::uint32_t *keys, *positions;
  };
  lane lanes[N != 0 ? N : band_max_models];
#pragma GCC unroll 4
  for (std::size_t i = 0; i < m; ++i) {
    const band_query& q = *targets[i].q;
    lane& l = lanes[i];
    l.low = _mm512_set1_epi32(static_cast<int>(q.low));
    l.high = _mm512_set1_epi32(static_cast<int>(q.high));
    l.heavy = detail::heavy_counter(q);
    l.any_heavy = q.n_heavy != 0;
    l.above = 0;
    l.written = targets[i].written;
    l.keys = targets[i].keys;
    l.positions = targets[i].positions;
  }
  // Software prefetch band_prefetch_bytes ahead in every stream, a line per 64 bytes: the
  // streams cross a 4 KiB page every 1-2 Ki elements, where the hardware prefetchers stop.
  const std::size_t esize = bf16 ? 2 : 4;
  for (unsigned since_widen = 0; j + 16 <= n; j += 16) {
    if (since_widen == 15) {
#pragma GCC unroll 4
      for (std::size_t i = 0; i < m; ++i) lanes[i].heavy.widen();
      since_widen = 0;
    }
    ++since_widen;
    if ((j * esize) % 64 == 0) {
      const std::size_t ahead = j * esize + band_prefetch_bytes;
      _mm_prefetch(static_cast<const char*>(b) + ahead, _MM_HINT_T0);
#pragma GCC unroll 4
      for (std::size_t i = 0; i < m; ++i) _mm_prefetch(static_cast<const char*>(x[i]) + ahead, _MM_HINT_T0);
    }
    const __m512 bv = load(b, j);
#pragma GCC unroll 4
    for (std::size_t i = 0; i < m; ++i) {
      lane& l = lanes[i];
      const __m512i k = _mm512_and_si512(_mm512_castps_si512(_mm512_sub_ps(load(x[i], j), bv)), sign);
      l.above += static_cast<std::size_t>(std::popcount(static_cast<unsigned>(_mm512_cmpgt_epi32_mask(k, l.high))));
      __mmask16 band = _mm512_mask_cmple_epi32_mask(_mm512_cmpge_epi32_mask(k, l.low), k, l.high);
      // The heavy keys counted with no test of `band` before: on bf16 task vectors most
      // batches hold an entry of a heavy key (the cut's own key often holds 2-3 % of the
      // entries), so that branch went either way at random. The compress is skipped when
      // only heavy keys were in the band, the usual case there. Measured with
      // make_llama_checkpoint --method-time ties on the 0.57B benchmark set: 1.25-1.28 s with
      // the test before, 1.03-1.13 s so.
      if (l.any_heavy) band = static_cast<__mmask16>(band & ~l.heavy.hits(k, band));
      if (band == 0) continue;
      const __m512i pos = _mm512_add_epi32(iota, _mm512_set1_epi32(static_cast<int>(first_pos + j)));
      _mm512_storeu_si512(l.keys + l.written, _mm512_maskz_compress_epi32(band, k));
      _mm512_storeu_si512(l.positions + l.written, _mm512_maskz_compress_epi32(band, pos));
      l.written += static_cast<std::size_t>(std::popcount(static_cast<unsigned>(band)));
    }
  }
  for (std::size_t i = 0; i < m; ++i) {
    band_target& o = targets[i];
    o.t->above += lanes[i].above;
    if (lanes[i].any_heavy) lanes[i].heavy.finish(o.q->n_heavy, *o.t);
    o.written = lanes[i].written;
  }
#endif
  if (j == n) return;
  for (std::size_t i = 0; i < m; ++i) {
    band_target& o = targets[i];
    if (bf16)
      o.written += band_scan_bf16(static_cast<const std::uint16_t*>(x[i]) + j, static_cast<const std::uint16_t*>(b) + j,
                                  n - j, first_pos + static_cast<std::uint32_t>(j), *o.q, *o.t, o.keys + o.written,
                                  o.positions + o.written);
    else
      o.written += band_scan(static_cast<const float*>(x[i]) + j, static_cast<const float*>(b) + j, n - j,
                             first_pos + static_cast<std::uint32_t>(j), *o.q, *o.t, o.keys + o.written,
                             o.positions + o.written);
  }
}
}  // namespace detail

// The row count and the storage as template arguments for up to 4 models (ties method alone
// on the 0.57B benchmark set: see docs/performance.md).
inline void band_scan_many(const void* const* x, std::size_t m, const void* b, bool bf16, std::size_t n,
                           std::uint32_t first_pos, band_target* targets) noexcept {
#if ALLOY_BAND_AVX512
  with_small_count(m, [&](auto rows) {
    constexpr std::size_t N = decltype(rows)::value;
    if (bf16)
      detail::band_scan_many_n<N, true>(x, m, b, n, first_pos, targets);
    else
      detail::band_scan_many_n<N, false>(x, m, b, n, first_pos, targets);
  });
#else  // only the per-model scalar loop: a model count known at compile time buys nothing
  if (bf16)
    detail::band_scan_many_n<0, true>(x, m, b, n, first_pos, targets);
  else
    detail::band_scan_many_n<0, false>(x, m, b, n, first_pos, targets);
#endif
}

}  // namespace alloy::kernels

ALLOY_INTRINSIC_WARNINGS_ON
