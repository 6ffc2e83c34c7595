// alloy/core/fp16.hpp: IEEE binary16 storage type and its conversions.
//
// fp16 is a storage format only: values are widened to float on load and rounded back
// (to nearest, ties to even, subnormals included) on store; alloy never does arithmetic
// in 16 bits, so the type has no arithmetic operators. The float conversions are
// branchless so that a plain loop over arrays auto-vectorizes: they sit on the hot path
// of memory-bound merges.
#pragma once

#include <bit>
#include <cstdint>

#include "alloy/core/bf16.hpp"  // detail::bit_select, detail::round_to_odd_float

namespace alloy {

// fp16 bits -> float. Exact for every pattern; NaN payloads are kept.
constexpr float fp16_to_float(std::uint16_t h) noexcept {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  const std::uint32_t em = h & 0x7fffu;  // exponent and mantissa fields
  // Normal: move into place and rebias the exponent from 15 to 127 (+112).
  const std::uint32_t normal = (em << 13) + 0x38000000u;
  // Inf/NaN: exponent field all ones, mantissa (payload) moved into place.
  const std::uint32_t inf_nan = (em << 13) | 0x7f800000u;
  // Subnormal (and zero): m * 2^-24. Both steps are exact, so this is independent of the
  // rounding mode and of flush-to-zero (the results are normal floats), and unlike a
  // count-leading-zeros normalisation it vectorizes on plain SSE2.
  const std::uint32_t subnormal =
      std::bit_cast<std::uint32_t>(static_cast<float>(static_cast<std::int32_t>(em)) * 0x1p-24f);
  std::uint32_t r = detail::bit_select(em < 0x0400u, subnormal, normal);
  r = detail::bit_select(em >= 0x7c00u, inf_nan, r);
  return std::bit_cast<float>(sign | r);
}

// float -> fp16 bits, round to nearest, ties to even, in the subnormal range too.
// |x| >= 65520 (the midpoint between 65504 and 2^16) rounds to Inf, Inf stays Inf, and NaN
// stays NaN: the sign and the top 10 payload bits are kept and the quiet bit is set.
constexpr std::uint16_t float_to_fp16(float f) noexcept {
  const std::uint32_t u = std::bit_cast<std::uint32_t>(f);
  const std::uint32_t sign = (u >> 16) & 0x8000u;
  const std::uint32_t a = u & 0x7fffffffu;
  // Normal result (|x| >= 2^-14): rebias the exponent by -112 and round the 13 dropped bits
  // to nearest even; a carry out of the mantissa correctly bumps the exponent.
  const std::uint32_t normal = (a - 0x38000000u + 0x0fffu + ((a >> 13) & 1u)) >> 13;
  // Subnormal result (|x| < 2^-14): the ulp of 0.5f is 2^-24, fp16's subnormal step, so
  // |x| + 0.5f rounds |x| to nearest even at exactly the right bit and the low bits of the
  // sum are the fp16 encoding (0x400 when it rounds up to the smallest normal, which is
  // right). One float add stands in for a per-element variable shift, which SSE2 lacks.
  // It relies on the default rounding mode, as all of alloy does.
  const std::uint32_t subnormal =
      std::bit_cast<std::uint32_t>(std::bit_cast<float>(a) + 0.5f) - 0x3f000000u;
  const std::uint32_t quiet_nan = 0x7e00u | ((a >> 13) & 0x03ffu);
  std::uint32_t r = detail::bit_select(a >= 0x38800000u, normal, subnormal);
  r = detail::bit_select(a >= 0x477ff000u, 0x7c00u, r);
  r = detail::bit_select(a > 0x7f800000u, quiet_nan, r);
  return static_cast<std::uint16_t>(sign | r);
}

// double -> fp16 bits, correctly rounded (nearest, ties to even) in one step: no double
// rounding through float. Same Inf/NaN rules as float_to_fp16.
constexpr std::uint16_t double_to_fp16(double d) noexcept {
  return float_to_fp16(detail::round_to_odd_float(d));
}

// IEEE 754 binary16 (1 sign, 5 exponent, 10 mantissa bits; largest finite 65504).
// Storage only; widen with the implicit conversion to float, compute, convert back.
// == compares bit patterns (so +0 != -0, and a NaN equals itself); compare as float when
// numeric equality is wanted.
struct fp16 {
  std::uint16_t bits = 0;

  constexpr fp16() noexcept = default;
  explicit constexpr fp16(float f) noexcept : bits(float_to_fp16(f)) {}
  explicit constexpr fp16(double d) noexcept : bits(double_to_fp16(d)) {}

  static constexpr fp16 from_bits(std::uint16_t b) noexcept {
    fp16 r;
    r.bits = b;
    return r;
  }

  // Implicit: widening is exact, and it is how every computation starts.
  constexpr operator float() const noexcept { return fp16_to_float(bits); }

  friend constexpr bool operator==(fp16, fp16) noexcept = default;
};

static_assert(sizeof(fp16) == 2 && alignof(fp16) == alignof(std::uint16_t));

}  // namespace alloy
