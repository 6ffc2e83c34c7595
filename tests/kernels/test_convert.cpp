// Tests for alloy/kernels/convert.hpp: every (source, destination) pair of storage scalars,
// sizes around the block and vector widths, misaligned starts, against the scalar
// conversions element by element (bitwise, so NaN and signed zeros count).
#include <catch2/catch.hpp>

#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <tuple>
#include <type_traits>
#include <vector>

#include "alloy/core/bf16.hpp"
#include "alloy/core/fp16.hpp"
#include "alloy/kernels/convert.hpp"

namespace {

using alloy::bf16;
using alloy::fp16;

template <class S, class D>
struct conv {
  using src = S;
  using dst = D;
};

using all_pairs = std::tuple<  //
    conv<float, float>, conv<float, double>, conv<float, bf16>, conv<float, fp16>,
    conv<double, float>, conv<double, double>, conv<double, bf16>, conv<double, fp16>,
    conv<bf16, float>, conv<bf16, double>, conv<bf16, bf16>, conv<bf16, fp16>,
    conv<fp16, float>, conv<fp16, double>, conv<fp16, bf16>, conv<fp16, fp16>>;

// The scalar reference: a copy for equal types (bit for bit, signalling NaNs included),
// else the types' own conversions, widening 16-bit sources through float.
template <class S, class D>
D scalar_convert(S x) {
  if constexpr (std::is_same_v<S, D>) {
    return x;
  } else if constexpr (std::is_same_v<S, bf16> || std::is_same_v<S, fp16>) {
    return static_cast<D>(static_cast<float>(x));
  } else {
    return static_cast<D>(x);
  }
}

template <class T>
auto bits_of(T x) {
  if constexpr (sizeof(T) == 2) return std::bit_cast<std::uint16_t>(x);
  else if constexpr (sizeof(T) == 4) return std::bit_cast<std::uint32_t>(x);
  else return std::bit_cast<std::uint64_t>(x);
}

// Inputs that exercise every path: all exponents, subnormals, Inf, NaN, and values at and
// next to 16-bit rounding midpoints (for doubles, the double-rounding traps).
template <class S>
std::vector<S> make_input(std::size_t n, std::mt19937_64& rng) {
  std::vector<S> v(n);
  for (auto& x : v) {
    const auto r = rng();
    if constexpr (std::is_same_v<S, bf16> || std::is_same_v<S, fp16>) {
      x = S::from_bits(static_cast<std::uint16_t>(r));
    } else if constexpr (std::is_same_v<S, float>) {
      switch (r % 4) {
        case 0: x = std::bit_cast<float>(static_cast<std::uint32_t>(r >> 32)); break;  // anything
        case 1: {  // fp16 range, subnormals included
          const auto e = static_cast<std::uint32_t>(100 + (r >> 40) % 45);
          x = std::bit_cast<float>(static_cast<std::uint32_t>(((r >> 63) << 31) | (e << 23) |
                                                             ((r >> 8) & 0x7fffffu)));
          break;
        }
        case 2: {  // a 16-bit midpoint, exactly or one ulp off
          const float mid = 0.5f * (static_cast<float>(fp16::from_bits(static_cast<std::uint16_t>((r >> 16) & 0x7bfe))) +
                                    static_cast<float>(fp16::from_bits(static_cast<std::uint16_t>(((r >> 16) & 0x7bfe) + 1))));
          const int k = static_cast<int>((r >> 40) % 3);
          x = k == 0 ? mid : std::nextafter(mid, k == 1 ? 0.0f : INFINITY);
          break;
        }
        default: {
          constexpr std::array<float, 6> special = {0.0f, -0.0f, INFINITY, -INFINITY, NAN, 65520.0f};
          x = special[(r >> 8) % special.size()];
        }
      }
    } else {  // double
      switch (r % 4) {
        case 0: x = std::bit_cast<double>(r); break;  // anything
        case 1: x = std::ldexp(static_cast<double>(r >> 11) * 0x1p-53, static_cast<int>((r >> 3) % 180) - 150); break;
        case 2: {  // one double ulp off a bf16 or fp16 midpoint: rounds to the midpoint in float
          const auto p = static_cast<std::uint16_t>((r >> 16) & 0x7b7e);
          const double lo = (r >> 62) & 1 ? static_cast<float>(bf16::from_bits(p)) : static_cast<float>(fp16::from_bits(p));
          const double hi = (r >> 62) & 1 ? static_cast<float>(bf16::from_bits(static_cast<std::uint16_t>(p + 1)))
                                          : static_cast<float>(fp16::from_bits(static_cast<std::uint16_t>(p + 1)));
          x = std::nextafter((lo + hi) / 2, (r >> 61) & 1 ? 0.0 : HUGE_VAL);
          break;
        }
        default: {
          constexpr std::array<double, 7> special = {0.0, -0.0, HUGE_VAL, -HUGE_VAL, NAN, 1e300, -1e-300};
          x = special[(r >> 8) % special.size()];
        }
      }
    }
  }
  return v;
}

}  // namespace

TEMPLATE_LIST_TEST_CASE("convert_n matches the scalar conversions", "[kernels][convert]", all_pairs) {
  using S = typename TestType::src;
  using D = typename TestType::dst;
  std::mt19937_64 rng(42);
  constexpr std::size_t guard = 3;
  const D canary = scalar_convert<float, D>(-12345.0f);

  for (const std::size_t n : {0u, 1u, 7u, 8u, 9u, 33u, 1000u, 4099u}) {
    for (const std::size_t in_off : {0u, 1u}) {
      for (const std::size_t out_off : {0u, 1u}) {
        CAPTURE(n, in_off, out_off);
        const std::vector<S> in = make_input<S>(n + in_off, rng);
        std::vector<D> out(out_off + n + guard, canary);
        alloy::kernels::convert_n(in.data() + in_off, out.data() + out_off, n);

        std::size_t bad = 0;
        for (std::size_t i = 0; i < n; ++i) {
          const D want = scalar_convert<S, D>(in[in_off + i]);
          bad += bits_of(out[out_off + i]) == bits_of(want) ? 0u : 1u;
        }
        CHECK(bad == 0);
        // Nothing written outside [out_off, out_off + n).
        std::size_t touched = 0;
        for (std::size_t i = 0; i < out_off; ++i) touched += bits_of(out[i]) == bits_of(canary) ? 0u : 1u;
        for (std::size_t i = out_off + n; i < out.size(); ++i) touched += bits_of(out[i]) == bits_of(canary) ? 0u : 1u;
        CHECK(touched == 0);
      }
    }
  }
}

TEMPLATE_LIST_TEST_CASE("convert_n edge cases", "[kernels][convert]", all_pairs) {
  using S = typename TestType::src;
  using D = typename TestType::dst;
  // n == 0 accepts null pointers.
  alloy::kernels::convert_n<S, D>(nullptr, nullptr, 0);
  STATIC_REQUIRE(noexcept(alloy::kernels::convert_n<S, D>(nullptr, nullptr, 0)));
  if constexpr (std::is_same_v<S, D>) {
    // In place is allowed (and a no-op) when the types agree.
    std::mt19937_64 rng(7);
    std::vector<S> v = make_input<S>(100, rng);
    const std::vector<S> copy = v;
    alloy::kernels::convert_n(v.data(), v.data(), v.size());
    CHECK(std::memcmp(v.data(), copy.data(), v.size() * sizeof(S)) == 0);
  }
}

TEST_CASE("convert_n rounds double -> 16 bits once, not through float", "[kernels][convert]") {
  // 1 + 2^-11 (+ a far bit) is just above the fp16 midpoint between 1 and 1 + 2^-10; through
  // float it would become the midpoint and tie to 1.
  const std::vector<double> in(100, 1.0 + 0x1p-11 + 0x1p-40);
  std::vector<fp16> h(in.size());
  std::vector<bf16> b(in.size());
  alloy::kernels::convert_n(in.data(), h.data(), in.size());
  const std::vector<double> in_b(100, 1.0 + 0x1p-8 + 0x1p-40);
  alloy::kernels::convert_n(in_b.data(), b.data(), in_b.size());
  for (std::size_t i = 0; i < in.size(); ++i) {
    CHECK(h[i].bits == 0x3c01);
    CHECK(b[i].bits == 0x3f81);
  }
}
