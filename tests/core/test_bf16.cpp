// Tests for alloy/core/bf16.hpp: exhaustive over the 65,536 bf16 patterns, against a
// reference written independently (std::ldexp of the fields; rounding by searching the two
// neighbours of a value in double arithmetic).
#include <catch2/catch.hpp>

#include <algorithm>
#include <bit>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#include "alloy/core/bf16.hpp"

namespace {

using alloy::bf16;

constexpr int mant_bits = 7;
constexpr int exp_bits = 8;
constexpr int bias = 127;
constexpr std::uint16_t inf_bits = 0x7f80;
constexpr std::uint16_t max_finite = 0x7f7f;

bool is_nan_pattern(std::uint16_t b) { return (b & 0x7fff) > inf_bits; }

// Value of a pattern from its fields (NaN patterns excluded).
double ref_value(std::uint16_t b) {
  const int sign = b >> 15;
  const int e = (b >> mant_bits) & ((1 << exp_bits) - 1);
  const int m = b & ((1 << mant_bits) - 1);
  double v;
  if (e == (1 << exp_bits) - 1) v = std::numeric_limits<double>::infinity();
  else if (e == 0) v = std::ldexp(m, 1 - bias - mant_bits);
  else v = std::ldexp(m + (1 << mant_bits), e - bias - mant_bits);
  return sign ? -v : v;
}

// Non-negative finite values in pattern order, plus 2^128 standing in for Inf: IEEE RNE
// rounds overflow as if the exponent range continued, and that value's pattern (0x7f80) is
// even.
const std::vector<double>& magnitudes() {
  static const std::vector<double> v = [] {
    std::vector<double> r;
    for (unsigned b = 0; b <= max_finite; ++b) r.push_back(ref_value(static_cast<std::uint16_t>(b)));
    r.push_back(std::ldexp(1.0, 128));
    return r;
  }();
  return v;
}

// Reference rounding of a non-NaN double: the nearer of its two neighbours, the even one
// on a tie.
std::uint16_t ref_round(double x) {
  const auto sign = static_cast<std::uint16_t>(std::signbit(x) ? 0x8000 : 0);
  const double ax = std::fabs(x);
  const auto& mag = magnitudes();
  if (ax >= mag.back()) return sign | inf_bits;
  const auto hi = static_cast<std::size_t>(std::upper_bound(mag.begin(), mag.end(), ax) - mag.begin());
  const std::size_t lo = hi - 1;
  const double mid = (mag[lo] + mag[hi]) / 2;  // exact in double
  std::size_t p;
  if (ax == mag[lo]) p = lo;
  else if (ax < mid) p = lo;
  else if (ax > mid) p = hi;
  else p = (lo % 2 == 0) ? lo : hi;
  return static_cast<std::uint16_t>(sign | p);
}

bool same(float a, double b) {
  if (std::isnan(a) || std::isnan(b)) return std::isnan(a) && std::isnan(b);
  return static_cast<double>(a) == b && std::signbit(a) == std::signbit(b);
}

float float_from_bits(std::uint32_t u) { return std::bit_cast<float>(u); }

// Counts mismatches and remembers the first few, so a loop over millions of inputs costs
// one assertion but still reports what failed.
struct mismatches {
  std::size_t count = 0;
  std::ostringstream first;
  template <class In>
  void add(In in, unsigned got, unsigned want) {
    if (count++ < 5) first << std::hexfloat << in << " -> 0x" << std::hex << got << " want 0x" << want << "; ";
  }
};

// Compile-time: the conversions are constexpr.
static_assert(alloy::float_to_bf16(1.0f) == 0x3f80);
static_assert(alloy::float_to_bf16(-2.0f) == 0xc000);
static_assert(alloy::bf16_to_float(0x3f80) == 1.0f);
static_assert(alloy::double_to_bf16(1.0 + 0x1p-8 + 0x1p-40) == 0x3f81);  // trap: not 0x3f80
static_assert(alloy::float_to_bf16(1.0f + 0x1p-8f) == 0x3f80);             // tie to even
static_assert(bf16(3.0f) == bf16::from_bits(0x4040));
static_assert(bf16(0.5) == bf16::from_bits(0x3f00));
static_assert(static_cast<float>(bf16::from_bits(0x4040)) == 3.0f);
static_assert(alloy::float_to_bf16(std::numeric_limits<float>::infinity()) == 0x7f80);

static_assert(sizeof(bf16) == 2);
static_assert(std::is_trivially_copyable_v<bf16> && std::is_standard_layout_v<bf16>);
static_assert(std::is_nothrow_default_constructible_v<bf16>);
static_assert(!std::is_convertible_v<float, bf16>, "narrowing must be explicit");
static_assert(std::is_convertible_v<bf16, float>, "widening is implicit");

}  // namespace

TEST_CASE("bf16 -> float matches the field decomposition for every pattern", "[bf16]") {
  for (unsigned i = 0; i < 65536; ++i) {
    const auto b = static_cast<std::uint16_t>(i);
    const float f = alloy::bf16_to_float(b);
    CAPTURE(i);
    if (is_nan_pattern(b)) {
      CHECK(std::isnan(f));
      CHECK(std::signbit(f) == ((b & 0x8000) != 0));
    } else {
      CHECK(same(f, ref_value(b)));
    }
    CHECK(std::bit_cast<std::uint32_t>(static_cast<float>(bf16::from_bits(b))) ==
          std::bit_cast<std::uint32_t>(f));
  }
}

TEST_CASE("bf16 round trip of every non-NaN pattern is the identity", "[bf16]") {
  for (unsigned i = 0; i < 65536; ++i) {
    const auto b = static_cast<std::uint16_t>(i);
    const float f = alloy::bf16_to_float(b);
    CAPTURE(i);
    if (is_nan_pattern(b)) {
      // NaN comes back quieted, with sign and payload kept (7 payload bits fit).
      CHECK(alloy::float_to_bf16(f) == (b | 0x0040));
      CHECK(alloy::double_to_bf16(static_cast<double>(f)) == (b | 0x0040));
    } else {
      CHECK(alloy::float_to_bf16(f) == b);
      CHECK(alloy::double_to_bf16(static_cast<double>(f)) == b);
      CHECK(bf16(f) == bf16::from_bits(b));
    }
  }
}

TEST_CASE("bf16 midpoints of adjacent values round to even, neighbours to the nearer", "[bf16]") {
  // Every adjacent pair (p, p + 1) of finite patterns of one sign, and the pair
  // (max finite, Inf) whose midpoint is the overflow threshold.
  for (unsigned p = 0; p < inf_bits; ++p) {
    for (const std::uint16_t sign : {std::uint16_t{0}, std::uint16_t{0x8000}}) {
      const auto lo = static_cast<std::uint16_t>(sign | p);
      const auto hi = static_cast<std::uint16_t>(sign | (p + 1));
      const double vlo = std::fabs(ref_value(lo));
      const double vhi = p + 1 == inf_bits ? std::ldexp(1.0, 128) : std::fabs(ref_value(hi));
      const double s = sign ? -1.0 : 1.0;
      const double mid = s * (vlo + vhi) / 2;
      const auto midf = static_cast<float>(mid);
      const auto even = (p % 2 == 0) ? lo : hi;
      CAPTURE(p, sign);
      REQUIRE(static_cast<double>(midf) == mid);  // representable, so the test is exact
      CHECK(alloy::float_to_bf16(midf) == even);
      CHECK(alloy::double_to_bf16(mid) == even);
      // One float ulp either side of the midpoint.
      const float toward_hi = std::nextafter(midf, sign ? -INFINITY : INFINITY);
      const float toward_lo = std::nextafter(midf, 0.0f);
      CHECK(alloy::float_to_bf16(toward_hi) == hi);
      CHECK(alloy::float_to_bf16(toward_lo) == lo);
      // Double-rounding traps: one double ulp off the midpoint rounds to the midpoint in
      // float, where a tie would wrongly go to even.
      const double d_hi = std::nextafter(mid, s * HUGE_VAL);
      const double d_lo = std::nextafter(mid, 0.0);
      REQUIRE(static_cast<float>(d_hi) == midf);
      REQUIRE(static_cast<float>(d_lo) == midf);
      CHECK(alloy::double_to_bf16(d_hi) == hi);
      CHECK(alloy::double_to_bf16(d_lo) == lo);
    }
  }
}

TEST_CASE("bf16 overflow, subnormal and special values", "[bf16]") {
  const float inf = std::numeric_limits<float>::infinity();
  // Overflow: max finite bf16 is 0x1.fep127; the threshold is the midpoint 0x1.ffp127.
  CHECK(alloy::float_to_bf16(0x1.fep127f) == 0x7f7f);
  CHECK(alloy::float_to_bf16(std::nextafter(0x1.ffp127f, 0.0f)) == 0x7f7f);
  CHECK(alloy::float_to_bf16(0x1.ffp127f) == 0x7f80);
  CHECK(alloy::float_to_bf16(FLT_MAX) == 0x7f80);
  CHECK(alloy::float_to_bf16(-FLT_MAX) == 0xff80);
  CHECK(alloy::float_to_bf16(inf) == 0x7f80);
  CHECK(alloy::float_to_bf16(-inf) == 0xff80);
  CHECK(alloy::double_to_bf16(1e300) == 0x7f80);
  CHECK(alloy::double_to_bf16(-1e300) == 0xff80);
  CHECK(alloy::double_to_bf16(0x1.ffp127) == 0x7f80);
  CHECK(alloy::double_to_bf16(std::nextafter(0x1.ffp127, 0.0)) == 0x7f7f);
  CHECK(alloy::double_to_bf16(static_cast<double>(inf)) == 0x7f80);
  CHECK(alloy::double_to_bf16(-static_cast<double>(inf)) == 0xff80);
  // Subnormals: the smallest bf16 subnormal is 2^-133; half of it ties to +0 (even).
  CHECK(alloy::float_to_bf16(0x1p-133f) == 0x0001);
  CHECK(alloy::float_to_bf16(0x1p-134f) == 0x0000);
  CHECK(alloy::float_to_bf16(std::nextafter(0x1p-134f, 1.0f)) == 0x0001);
  CHECK(alloy::float_to_bf16(0x3p-134f) == 0x0002);  // tie between 1 and 2: even
  CHECK(alloy::float_to_bf16(0x1p-149f) == 0x0000);
  CHECK(alloy::float_to_bf16(-0x1p-149f) == 0x8000);
  CHECK(alloy::float_to_bf16(0x1.fcp-127f) == 0x007f);  // largest subnormal
  CHECK(alloy::float_to_bf16(0x1.fep-127f) == 0x0080);  // tie with 2^-126: even
  CHECK(alloy::float_to_bf16(0x1p-126f) == 0x0080);
  CHECK(alloy::double_to_bf16(0x1p-134) == 0x0000);
  CHECK(alloy::double_to_bf16(0x1p-134 * (1.0 + 0x1p-50)) == 0x0001);
  CHECK(alloy::double_to_bf16(1e-300) == 0x0000);
  CHECK(alloy::double_to_bf16(-1e-300) == 0x8000);
  CHECK(alloy::float_to_bf16(0.0f) == 0x0000);
  CHECK(alloy::float_to_bf16(-0.0f) == 0x8000);
  CHECK(alloy::double_to_bf16(-0.0) == 0x8000);
  // == is bitwise.
  CHECK_FALSE(bf16(0.0f) == bf16(-0.0f));
  CHECK(bf16::from_bits(0x7fc1) == bf16::from_bits(0x7fc1));
}

TEST_CASE("bf16 keeps NaN: sign, quiet bit and top payload bits", "[bf16]") {
  // Every float NaN pattern (2^24 - 2 of them).
  std::size_t bad = 0;
  for (std::uint32_t payload = 1; payload < (1u << 23); ++payload) {
    for (const std::uint32_t sign : {0u, 0x80000000u}) {
      const std::uint32_t u = sign | 0x7f800000u | payload;
      const std::uint16_t b = alloy::float_to_bf16(float_from_bits(u));
      const bool ok = is_nan_pattern(b) && (b >> 15) == (u >> 31) && (b & 0x0040) != 0 &&
                      (b & 0x003f) == ((u >> 16) & 0x003f);
      bad += ok ? 0u : 1u;
    }
  }
  CHECK(bad == 0);
  // Through double: NaN and sign survive, quieted.
  for (const std::uint64_t u : {0x7ff8000000000000ull, 0x7ff0000000000001ull, 0x7ff4000000000000ull,
                                0xfff8000000000000ull, 0xfff0000000000001ull, 0x7fffffffffffffffull}) {
    CAPTURE(u);
    const std::uint16_t b = alloy::double_to_bf16(std::bit_cast<double>(u));
    CHECK(is_nan_pattern(b));
    CHECK((b >> 15) == (u >> 63));
    CHECK((b & 0x0040) != 0);
  }
}

TEST_CASE("bf16 from random floats and doubles matches the reference rounding", "[bf16]") {
  std::mt19937_64 rng(20240601);
  SECTION("floats, exponents spread uniformly over the whole range") {
    mismatches bad;
    for (int i = 0; i < 1000000; ++i) {
      const auto r = rng();
      // Random sign and mantissa, exponent uniform in [0, 254]: every binade equally.
      const auto e = static_cast<std::uint32_t>((r >> 32) % 255);
      const auto u = static_cast<std::uint32_t>(((r >> 63) << 31) | (e << 23) | (r & 0x7fffffu));
      const float x = float_from_bits(u);
      const std::uint16_t got = alloy::float_to_bf16(x);
      const std::uint16_t want = ref_round(static_cast<double>(x));
      if (got != want) bad.add(x, got, want);
    }
    INFO(bad.first.str());
    CHECK(bad.count == 0);
  }
  SECTION("doubles around and beyond the bf16 range") {
    mismatches bad;
    for (int i = 0; i < 1000000; ++i) {
      const auto r = rng();
      // Exponent in [-160, 140] (beyond both ends), random 52-bit mantissa and sign.
      const int e = static_cast<int>((r >> 52) % 301) - 160;
      const double m = 1.0 + static_cast<double>(r & ((1ull << 52) - 1)) * 0x1p-52;
      const double x = ((r >> 63) ? -1.0 : 1.0) * std::ldexp(m, e);
      const std::uint16_t got = alloy::double_to_bf16(x);
      const std::uint16_t want = ref_round(x);
      if (got != want) bad.add(x, got, want);
    }
    INFO(bad.first.str());
    CHECK(bad.count == 0);
  }
  SECTION("doubles with few mantissa bits (many ties and near-ties)") {
    mismatches bad;
    for (int i = 0; i < 200000; ++i) {
      const auto r = rng();
      // At most 11 significant bits, sometimes plus a far-away sticky bit: ties and traps.
      const int e = static_cast<int>((r >> 52) % 270) - 140;
      const double m = 1.0 + static_cast<double>((r >> 20) & 0x3ff) * 0x1p-10 +
                       (((r >> 40) & 3) == 0 ? 0x1p-45 * ((r >> 42) & 1 ? 1.0 : -1.0) : 0.0);
      const double x = ((r >> 63) ? -1.0 : 1.0) * std::ldexp(m, e);
      const std::uint16_t got = alloy::double_to_bf16(x);
      const std::uint16_t want = ref_round(x);
      if (got != want) bad.add(x, got, want);
    }
    INFO(bad.first.str());
    CHECK(bad.count == 0);
  }
}
