// kernels/simd.hpp load_widen / store_narrow: the streaming driver's in-register 16-bit
// conversions, against the scalar conversions of core/bf16.hpp and core/fp16.hpp, bit for
// bit (NaN payloads and signed zeros included), through ordinary and non-temporal stores.
// Included by test_simd_convert.cpp (SIMD) and test_simd_convert_scalar.cpp
// (ALLOY_FORCE_SCALAR).
#pragma once

#include <alloy/kernels/simd.hpp>

#include <catch2/catch.hpp>

#include <bit>
#include <cstdint>
#include <cstring>
#include <vector>

namespace simd_convert_cases {

using namespace alloy;
namespace kernels = alloy::kernels;
constexpr std::size_t W = kernels::width<float>;

// Narrows every float of `bits` (padded to a multiple of W) in registers and compares.
template <class H, bool nt>
void check_narrow(const std::vector<std::uint32_t>& bits) {
  const std::size_t n = (bits.size() + W - 1) / W * W;
  std::vector<float> in(n, 0.f);
  for (std::size_t i = 0; i < bits.size(); ++i) in[i] = std::bit_cast<float>(bits[i]);
  struct alignas(64) block { H h[W]; };  // non-temporal stores need a batch-aligned target
  std::vector<block> out(n / W);
  for (std::size_t i = 0; i < n; i += W) kernels::store_narrow<nt>(out[i / W].h, kernels::load(in.data() + i));
  kernels::store_fence();
  for (std::size_t i = 0; i < bits.size(); ++i) {
    const std::uint16_t expect = std::is_same_v<H, bf16> ? float_to_bf16(in[i]) : float_to_fp16(in[i]);
    INFO("float bits 0x" << std::hex << bits[i]);
    REQUIRE(out[i / W].h[i % W].bits == expect);
  }
}

// Every float whose bits near the rounding position (bit 16 for bf16, bit 13 for fp16's
// normal range) are a tie, just below or just above it, or odd/even, for every exponent and
// sign: the round-to-nearest-even, overflow, subnormal, Inf and NaN cases all appear.
std::vector<std::uint32_t> rounding_patterns(unsigned shift) {
  std::vector<std::uint32_t> v;
  const std::uint32_t half = 1u << (shift - 1), low_mask = (1u << shift) - 1;
  const std::uint32_t lows[] = {0, 1, half - 1, half, half + 1, low_mask, half >> 1};
  for (std::uint32_t hi = 0; hi < (1u << (32 - shift)); hi += shift == 16 ? 1 : 7)
    for (std::uint32_t lo : lows) v.push_back((hi << shift) | (lo & low_mask));
  return v;
}

TEST_CASE("simd convert: bf16 widening is exact for all 65536 patterns", "[kernels][simd]") {
  std::vector<bf16> h(65536);
  for (std::size_t i = 0; i < h.size(); ++i) h[i].bits = static_cast<std::uint16_t>(i);
  std::vector<float> out(65536);
  for (std::size_t i = 0; i < h.size(); i += W) kernels::store(out.data() + i, kernels::load_widen(h.data() + i));
  for (std::size_t i = 0; i < h.size(); ++i) {
    INFO("bf16 bits 0x" << std::hex << i);
    REQUIRE(std::bit_cast<std::uint32_t>(out[i]) == std::bit_cast<std::uint32_t>(bf16_to_float(h[i].bits)));
  }
}

TEST_CASE("simd convert: fp16 widening is exact for all 65536 patterns (signalling NaNs kept)", "[kernels][simd]") {
  std::vector<fp16> h(65536);
  for (std::size_t i = 0; i < h.size(); ++i) h[i].bits = static_cast<std::uint16_t>(i);
  std::vector<float> out(65536);
  for (std::size_t i = 0; i < h.size(); i += W) kernels::store(out.data() + i, kernels::load_widen(h.data() + i));
  for (std::size_t i = 0; i < h.size(); ++i) {
    INFO("fp16 bits 0x" << std::hex << i);
    REQUIRE(std::bit_cast<std::uint32_t>(out[i]) == std::bit_cast<std::uint32_t>(fp16_to_float(h[i].bits)));
  }
}

TEST_CASE("simd convert: bf16 narrowing rounds as float_to_bf16", "[kernels][simd]") {
  const std::vector<std::uint32_t> named = {
      0x3f808000u,  // 1 + 2^-8: tie, rounds to even (down)
      0x3f818000u,  // tie, rounds to even (up)
      0x3f808001u,  // just above the tie
      0x7f7fffffu,  // FLT_MAX rounds to Inf
      0x7f800000u, 0xff800000u,  // +-Inf
      0x7f800001u,  // signalling NaN with its payload in the low half: quiet NaN, not Inf
      0xffc00000u, 0x7fffffffu,  // NaNs
      0x00000001u, 0x807fffffu, 0x00008000u, 0x00018000u,  // subnormals and their ties
      0x00000000u, 0x80000000u};
  check_narrow<bf16, false>(named);
  const auto all = rounding_patterns(16);
  check_narrow<bf16, false>(all);
  check_narrow<bf16, true>(all);
}

TEST_CASE("simd convert: fp16 narrowing rounds as float_to_fp16", "[kernels][simd]") {
  const std::vector<std::uint32_t> named = {
      0x3f801000u,  // 1 + 2^-11: tie, to even (down)
      0x3f803000u,  // tie, to even (up)
      0x477fefffu, 0x477ff000u,  // just below / at the overflow threshold 65520
      0x33000000u, 0x33000001u, 0x33800000u,  // 2^-25 (tie to 0), just above, 2^-24
      0x387fe000u, 0x387ff000u,  // largest fp16 subnormal region, rounding up to the smallest normal
      0x7f800001u, 0xffc00001u, 0x7f802000u,  // NaNs: quieted, top payload kept
      0x7f800000u, 0xff800000u, 0x00000001u, 0x80000000u};
  check_narrow<fp16, false>(named);
  const auto all = rounding_patterns(13);
  check_narrow<fp16, false>(all);
  check_narrow<fp16, true>(all);
}

}  // namespace simd_convert_cases
