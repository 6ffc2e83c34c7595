// alloy/core/bf16.hpp: bfloat16 storage type and its conversions.
//
// bf16 is a storage format only: values are widened to float on load and rounded back
// (to nearest, ties to even) on store; alloy never does arithmetic in 16 bits, so the type
// has no arithmetic operators. The float conversions are branchless integer bit arithmetic
// so that a plain loop over arrays auto-vectorizes: they sit on the hot path of
// memory-bound merges.
#pragma once

#include <bit>
#include <cstdint>

namespace alloy {

namespace detail {

// All-ones if c, else zero. Selects are written as masks rather than ?: so that GCC
// if-converts the conversion loops (it keeps a branch around a ?: arm that contains a
// floating-point operation, which then blocks vectorization).
constexpr std::uint32_t mask_if(bool c) noexcept { return 0u - static_cast<std::uint32_t>(c); }

constexpr std::uint32_t bit_select(bool c, std::uint32_t a, std::uint32_t b) noexcept {
  const std::uint32_t m = mask_if(c);
  return (a & m) | (b & ~m);
}

// double -> float rounded to odd: truncate toward zero, then set the last bit if anything
// was lost. Rounding that result to nearest even at <= 22 bits gives the correctly rounded
// value of the double (float keeps >= 2 extra bits over bf16 and fp16 at every exponent
// either can represent), so narrowing a double through it avoids double rounding. A double
// beyond the float range becomes +-FLT_MAX (odd), which still rounds to Inf in both 16-bit
// formats; Inf and NaN pass through.
//
// The rounding error d - f is exact (Sterbenz), and only its sign and whether it is zero
// matter. Carrying those in a float scaled by 2^100 keeps every mask 32 bits wide, which
// lets GCC vectorize double -> 16-bit loops on plain SSE2 (64-bit double compares mixed
// with 32-bit lanes do not). The scaled error stays nonzero for |d| >= 2^-140; below that
// the sticky bit may be lost, which is harmless because both 16-bit formats round such
// values to zero anyway. So the result is a true round-to-odd wherever it matters.
//
// Correct under any rounding mode: only the direction the hardware rounded is used. Under
// flush-to-zero (-ffast-math), float subnormal results flush, which affects only
// double -> bf16 for |d| < 2^-126.
constexpr float round_to_odd_float(double d) noexcept {
  const float f = static_cast<float>(d);
  const double err = d - static_cast<double>(f);  // exact; -+Inf on overflow, NaN for Inf/NaN
  const std::uint32_t e = std::bit_cast<std::uint32_t>(static_cast<float>(err * 0x1p100));
  std::uint32_t bits = std::bit_cast<std::uint32_t>(f);
  const bool inexact = (e & 0x7fffffffu) - 1u < 0x7f800000u;     // 0 < |e| <= Inf
  const bool away = inexact & (((e ^ bits) >> 31) != 0u);         // error opposes the value
  bits -= static_cast<std::uint32_t>(away);     // magnitude one step toward zero: truncation
  bits |= static_cast<std::uint32_t>(inexact);  // sticky bit
  return std::bit_cast<float>(bits);
}

}  // namespace detail

// bf16 bits -> float. Exact: bf16 is the top half of a float (NaN payloads included).
constexpr float bf16_to_float(std::uint16_t b) noexcept {
  return std::bit_cast<float>(static_cast<std::uint32_t>(b) << 16);
}

// float -> bf16 bits, round to nearest, ties to even. Overflow rounds to Inf as IEEE RNE
// does (|x| >= 0x1.ffp127 becomes Inf), Inf stays Inf, and NaN stays NaN: the sign and the
// top 7 payload bits are kept and the quiet bit is set (a payload living only in the low
// 16 bits would otherwise truncate to Inf).
constexpr std::uint16_t float_to_bf16(float f) noexcept {
  const std::uint32_t u = std::bit_cast<std::uint32_t>(f);
  // Adding 0x7fff plus the lsb of the kept half rounds to nearest even; the carry runs into
  // the exponent, which also makes the largest finite values round up to Inf. Never wraps:
  // the largest non-NaN pattern is 0xff800000.
  const std::uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  const std::uint32_t quiet_nan = (u >> 16) | 0x0040u;
  const bool is_nan = (u & 0x7fffffffu) > 0x7f800000u;
  return static_cast<std::uint16_t>(detail::bit_select(is_nan, quiet_nan, rounded));
}

// double -> bf16 bits, correctly rounded (nearest, ties to even) in one step: no double
// rounding through float. Same Inf/NaN rules as float_to_bf16.
constexpr std::uint16_t double_to_bf16(double d) noexcept {
  return float_to_bf16(detail::round_to_odd_float(d));
}

// bfloat16 (1 sign, 8 exponent, 7 mantissa bits): the upper half of an IEEE float.
// Storage only; widen with the implicit conversion to float, compute, convert back.
// == compares bit patterns (so +0 != -0, and a NaN equals itself); compare as float when
// numeric equality is wanted.
struct bf16 {
  std::uint16_t bits = 0;

  constexpr bf16() noexcept = default;
  explicit constexpr bf16(float f) noexcept : bits(float_to_bf16(f)) {}
  explicit constexpr bf16(double d) noexcept : bits(double_to_bf16(d)) {}

  static constexpr bf16 from_bits(std::uint16_t b) noexcept {
    bf16 r;
    r.bits = b;
    return r;
  }

  // Implicit: widening is exact, and it is how every computation starts.
  constexpr operator float() const noexcept { return bf16_to_float(bits); }

  friend constexpr bool operator==(bf16, bf16) noexcept = default;
};

static_assert(sizeof(bf16) == 2 && alignof(bf16) == alignof(std::uint16_t));

}  // namespace alloy
