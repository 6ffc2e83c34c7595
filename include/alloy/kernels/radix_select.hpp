// alloy/kernels/radix_select.hpp: the building blocks of exact top-k magnitude selection
// (methods/detail/topk.hpp drives them): magnitude keys, radix histograms over 16-bit
// (histogram_high, histogram_low[_collect]) and 8-bit (histogram_byte) digits of the keys,
// and counting/locating the entries of one magnitude (count_equal, find_nth_equal).
//
// Magnitude key: the IEEE-754 bit pattern of a float with the sign bit cleared,
//   magnitude_key(x) = bits(x) & 0x7fffffff.
// Non-negative floats order like their bit patterns, so keys order magnitudes: +0 and -0
// both give key 0 (the same magnitude), +Inf and -Inf give 0x7f800000, and every NaN gives
// a key above Inf (NaNs order among themselves by payload). Keys are at most 0x7fffffff, so
// they also compare correctly as signed 32-bit integers (what SIMD compares offer).
//
// The histograms split a key into its high 16 bits (the bin, < 0x8000 since the sign is
// clear) and its low 16 bits. Each kernel adds to counts the caller owns and zeroed: the
// caller keeps every count below 2^32 (topk.hpp flushes to 64-bit totals well before).
//
// Scalar loops on purpose (no xsimd): a histogram update is a scatter, which SIMD does not
// speed up; count_equal and histogram_low's per-block pre-count are plain reductions the
// compiler vectorizes. No allocation, no throw; n == 0 allows null pointers.
// Measured (one core, AVX-512 machine, 16 KiB tiles in L1): histogram_high ~0.25-0.5 ns per
// element, histogram_low ~0.2 ns when few entries match (1.2 ns for the plain branchy loop),
// count_equal ~0.13 ns.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>

namespace alloy::kernels {

// Bins of each radix histogram (one per value of 16 key bits).
inline constexpr std::size_t radix_bins = std::size_t{1} << 16;

// The magnitude key of x (see above): its bit pattern with the sign cleared.
constexpr std::uint32_t magnitude_key(float x) noexcept { return std::bit_cast<std::uint32_t>(x) & 0x7fffffffu; }

// The non-negative float (or NaN) whose key is `key` (key <= 0x7fffffff).
constexpr float key_magnitude(std::uint32_t key) noexcept { return std::bit_cast<float>(key & 0x7fffffffu); }

// hist[magnitude_key(v[i]) >> 16] += 1 for i < n. hist has radix_bins entries (only the
// first 0x8000 can be touched).
inline void histogram_high(const float* v, std::size_t n, std::uint32_t* hist) noexcept {
  // Four keys computed before their four updates: the loads and shifts overlap, and the
  // increments of repeated bins still chain through memory in order.
  const std::size_t body = n / 4 * 4;
  std::size_t i = 0;
  for (; i < body; i += 4) {
    const std::uint32_t a = magnitude_key(v[i]) >> 16, b = magnitude_key(v[i + 1]) >> 16;
    const std::uint32_t c = magnitude_key(v[i + 2]) >> 16, d = magnitude_key(v[i + 3]) >> 16;
    ++hist[a];
    ++hist[b];
    ++hist[c];
    ++hist[d];
  }
  for (; i < n; ++i) ++hist[magnitude_key(v[i]) >> 16];
}

namespace detail {
template <bool Collect>
inline std::size_t histogram_low_impl(const float* v, std::size_t n, std::uint32_t high, std::uint32_t* hist,
                                      std::uint16_t* lows) noexcept {
  // Usually few entries fall in the bin: a vectorizable count per block of 32 skips the
  // blocks without any (a predictable branch), and only the others update the bins.
  constexpr std::size_t block = 32;
  const std::size_t body = n / block * block;
  std::size_t matched = 0;
  auto one = [&](std::uint32_t key) {
    if ((key >> 16) == high) {
      ++hist[key & 0xffffu];
      if constexpr (Collect) lows[matched] = static_cast<std::uint16_t>(key);
      ++matched;
    }
  };
  std::size_t i = 0;
  for (; i < body; i += block) {
    std::uint32_t hits = 0;
    for (std::size_t j = 0; j < block; ++j) hits += (magnitude_key(v[i + j]) >> 16) == high ? 1u : 0u;
    if (hits == 0) continue;
    for (std::size_t j = 0; j < block; ++j) one(magnitude_key(v[i + j]));
  }
  for (; i < n; ++i) one(magnitude_key(v[i]));
  return matched;
}
}  // namespace detail

// For i < n with magnitude_key(v[i]) >> 16 == high: hist[magnitude_key(v[i]) & 0xffff] += 1.
// Returns how many entries matched (the sum of the increments). hist has radix_bins entries.
inline std::size_t histogram_low(const float* v, std::size_t n, std::uint32_t high, std::uint32_t* hist) noexcept {
  return detail::histogram_low_impl<false>(v, n, high, hist, nullptr);
}

// histogram_low that also writes the low 16 key bits of the matching entries, in order, to
// lows[0, matched) (room for n entries), so that a caller can count any one key among them
// later without reading v again.
inline std::size_t histogram_low_collect(const float* v, std::size_t n, std::uint32_t high, std::uint32_t* hist,
                                         std::uint16_t* lows) noexcept {
  return detail::histogram_low_impl<true>(v, n, high, hist, lows);
}

// For i < n with (magnitude_key(v[i]) & mask) == prefix: hist[(magnitude_key(v[i]) >> shift)
// & 0xff] += 1. hist has 256 entries. The byte-digit radix step for data already in cache
// (the small-input path of topk.hpp), where 256-bin histograms beat two 65536-bin ones.
inline void histogram_byte(const float* v, std::size_t n, std::uint32_t mask, std::uint32_t prefix, unsigned shift,
                           std::uint32_t* hist) noexcept {
  for (std::size_t i = 0; i < n; ++i) {
    const std::uint32_t key = magnitude_key(v[i]);
    if ((key & mask) == prefix) ++hist[(key >> shift) & 0xffu];
  }
}

// The number of i < n with magnitude_key(v[i]) == key.
inline std::size_t count_equal(const float* v, std::size_t n, std::uint32_t key) noexcept {
  // 32-bit lane counters in blocks (the vectorizer keeps them in one register), summed
  // into a size_t per block so that no count overflows.
  constexpr std::size_t block = 1024;
  const std::size_t body = n / block * block;
  std::size_t total = 0;
  std::size_t i = 0;
  for (; i < body; i += block) {
    std::uint32_t c = 0;
    for (std::size_t j = 0; j < block; ++j) c += magnitude_key(v[i + j]) == key ? 1u : 0u;
    total += c;
  }
  std::uint32_t c = 0;
  for (; i < n; ++i) c += magnitude_key(v[i]) == key ? 1u : 0u;
  return total + c;
}

// The position of the nth (0-based) entry with magnitude_key(v[i]) == key, or n when fewer
// than nth + 1 entries have that key.
inline std::size_t find_nth_equal(const float* v, std::size_t n, std::uint32_t key, std::size_t nth) noexcept {
  for (std::size_t i = 0; i < n; ++i) {
    if (magnitude_key(v[i]) == key) {
      if (nth == 0) return i;
      --nth;
    }
  }
  return n;
}

}  // namespace alloy::kernels
