// alloy/core/random.hpp: counter-based random numbers for the random merge methods
// (DARE, DELLA, ...).
//
// Philox4x32-10 (Salmon, Moraes, Dror, Shaw, "Parallel random numbers: as easy as 1, 2, 3",
// SC'11) maps (counter, key) to 128 random bits with no state, so the value drawn for an
// element is a pure function of (seed, stream, element index): any thread count, SIMD
// width or chunking of a tensor gives the same bits. That is alloy's reproducibility
// contract for random merges, and everything in this file is part of it: changing the
// Philox word layout, the uniform mapping or stream_id changes every random merge.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace alloy {

namespace detail {

// Philox4x32 with a given number of rounds (10 is the standard, tested variant; other
// counts exist for the Random123 known-answer tests).
template <int Rounds>
constexpr std::array<std::uint32_t, 4> philox4x32(std::array<std::uint32_t, 4> ctr,
                                                  std::array<std::uint32_t, 2> key) noexcept {
  constexpr std::uint64_t m0 = 0xD2511F53u;
  constexpr std::uint64_t m1 = 0xCD9E8D57u;
  constexpr std::uint32_t w0 = 0x9E3779B9u;  // Weyl key increments
  constexpr std::uint32_t w1 = 0xBB67AE85u;
  for (int r = 0; r < Rounds; ++r) {
    if (r != 0) {  // the key is bumped between rounds, not before the first
      key[0] += w0;
      key[1] += w1;
    }
    const std::uint64_t p0 = m0 * ctr[0];
    const std::uint64_t p1 = m1 * ctr[2];
    ctr = {static_cast<std::uint32_t>(p1 >> 32) ^ ctr[1] ^ key[0], static_cast<std::uint32_t>(p1),
           static_cast<std::uint32_t>(p0 >> 32) ^ ctr[3] ^ key[1], static_cast<std::uint32_t>(p0)};
  }
  return ctr;
}

constexpr std::uint32_t lo32(std::uint64_t x) noexcept { return static_cast<std::uint32_t>(x); }
constexpr std::uint32_t hi32(std::uint64_t x) noexcept {
  return static_cast<std::uint32_t>(x >> 32);
}

// 64-bit FNV-1a over the bytes of s (offset basis 0xcbf29ce484222325, prime 0x100000001b3).
constexpr std::uint64_t fnv1a_64(std::string_view s) noexcept {
  std::uint64_t h = 0xcbf29ce484222325u;
  for (const char c : s) {
    h ^= static_cast<unsigned char>(c);
    h *= 0x100000001b3u;
  }
  return h;
}

// splitmix64's output finaliser: a bijection on 64-bit words with good avalanche.
constexpr std::uint64_t mix64(std::uint64_t x) noexcept {
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9u;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebu;
  return x ^ (x >> 31);
}

}  // namespace detail

// Philox4x32-10: 128 random bits from a 128-bit counter and a 64-bit key. Matches the
// Random123 reference (its kat_vectors known answers are in tests/core/test_random.cpp).
constexpr std::array<std::uint32_t, 4> philox4x32_10(std::array<std::uint32_t, 4> counter,
                                                     std::array<std::uint32_t, 2> key) noexcept {
  return detail::philox4x32<10>(counter, key);
}

// Random values addressed by index. Key = seed (low word, high word); counter =
// {block lo, block hi, stream lo, stream hi} with block = index / 4, and the value for
// `index` is word index % 4 of that block. Distinct (stream, index) pairs under one seed
// therefore never share a Philox input. Index arithmetic is modulo 2^64.
class counter_rng {
 public:
  constexpr counter_rng(std::uint64_t seed, std::uint64_t stream) noexcept
      : key_{detail::lo32(seed), detail::hi32(seed)},
        stream_lo_(detail::lo32(stream)),
        stream_hi_(detail::hi32(stream)) {}

  // The 4 values for indices 4*block_index .. 4*block_index + 3 (one Philox call).
  constexpr std::array<std::uint32_t, 4> block(std::uint64_t block_index) const noexcept {
    return philox4x32_10(
        {detail::lo32(block_index), detail::hi32(block_index), stream_lo_, stream_hi_}, key_);
  }

  constexpr std::uint32_t bits(std::uint64_t index) const noexcept {
    return block(index >> 2)[index & 3u];
  }

  // [0, 1): the top 24 bits times 2^-24, so every value is exact in float and 1 is never
  // returned (keep = uniform < p then has probability exactly p on the 2^-24 grid).
  constexpr float uniform(std::uint64_t index) const noexcept { return to_uniform(bits(index)); }

  // out[i] = uniform(first + i) for i < n, for any first (aligned to 4 or not): the values
  // never depend on how a caller splits a range. One Philox call per 4 outputs.
  constexpr void fill_uniform(std::uint64_t first, float* out, std::size_t n) const noexcept {
    if (n == 0) return;
    // Block indices wrap at 2^62, as index / 4 does when the index wraps at 2^64.
    constexpr std::uint64_t block_mask = ~std::uint64_t{0} >> 2;
    std::uint64_t b = first >> 2;
    std::size_t w = static_cast<std::size_t>(first & 3u);
    if (w != 0) {  // head: finish the partly used first block
      const auto r = block(b);
      b = (b + 1) & block_mask;
      for (; w < 4 && n != 0; ++w, --n) *out++ = to_uniform(r[w]);
    }
    for (; n >= 4; n -= 4, out += 4) {
      const auto r = block(b);
      b = (b + 1) & block_mask;
      for (std::size_t k = 0; k < 4; ++k) out[k] = to_uniform(r[k]);
    }
    if (n != 0) {  // tail
      const auto r = block(b);
      for (std::size_t k = 0; k < n; ++k) out[k] = to_uniform(r[k]);
    }
  }

  // The Philox key and the stream words of the counter (for vectorized generators that
  // must draw the same bits: kernels/philox.hpp).
  constexpr std::array<std::uint32_t, 2> key() const noexcept { return key_; }
  constexpr std::uint32_t stream_lo() const noexcept { return stream_lo_; }
  constexpr std::uint32_t stream_hi() const noexcept { return stream_hi_; }

  static constexpr float to_uniform(std::uint32_t bits) noexcept {
    return static_cast<float>(bits >> 8) * 0x1p-24f;
  }

 private:
  std::array<std::uint32_t, 2> key_;
  std::uint32_t stream_lo_;
  std::uint32_t stream_hi_;
};

// Stream for one tensor of one model: FNV-1a 64 over the name's bytes, plus the model
// index times an odd constant, through splitmix64's finaliser. Platform independent (bytes,
// not chars or std::hash). For one name, distinct model indices always give distinct
// streams (both steps are bijections in the model index).
//
// Part of the reproducibility contract: changing this function changes every random merge
// ever made with alloy, so tests/core/test_random.cpp pins some of its values.
constexpr std::uint64_t stream_id(std::string_view tensor_name, std::uint64_t model_index) noexcept {
  return detail::mix64(detail::fnv1a_64(tensor_name) + 0x9e3779b97f4a7c15u * (model_index + 1));
}

}  // namespace alloy
