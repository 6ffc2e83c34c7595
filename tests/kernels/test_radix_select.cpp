// Tests for alloy/kernels/radix_select.hpp: magnitude keys (order, signed zeros, Inf, NaN),
// the high/low radix histograms, count_equal and find_nth_equal, against plain loops over
// the keys, for sizes around the unroll and block lengths and misaligned starts.
#include <alloy/kernels/radix_select.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <random>
#include <tuple>
#include <vector>

namespace {

using alloy::kernels::count_equal;
using alloy::kernels::find_nth_equal;
using alloy::kernels::histogram_high;
using alloy::kernels::histogram_byte;
using alloy::kernels::histogram_low;
using alloy::kernels::histogram_low_collect;
using alloy::kernels::key_magnitude;
using alloy::kernels::magnitude_key;
using alloy::kernels::radix_bins;

constexpr float inf = std::numeric_limits<float>::infinity();

// Values with many repeats (drawn from a small pool) and special values, so every kernel
// sees equal keys, shared high bins, both zeros, Inf and NaN.
std::vector<float> mixed_values(std::size_t n, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const float pool[] = {0.0f, -0.0f, 1.0f, -1.0f, 1.0000001f, 0.75f, inf, -inf,
                        std::bit_cast<float>(0x7fc00000u), std::bit_cast<float>(0xffc00001u), 1e-40f, -1e-40f};
  std::vector<float> v(n);
  for (auto& x : v) {
    const auto r = rng() % 4;
    x = r == 0 ? pool[rng() % std::size(pool)] : r == 1 ? std::bit_cast<float>(std::bit_cast<std::uint32_t>(normal(rng)) & 0xffff0000u) : normal(rng);
  }
  return v;
}

}  // namespace

TEST_CASE("magnitude_key orders magnitudes; -0 == +0; NaN above Inf", "[kernels][radix_select]") {
  CHECK(magnitude_key(0.0f) == 0u);
  CHECK(magnitude_key(-0.0f) == 0u);
  CHECK(magnitude_key(1.0f) == 0x3f800000u);
  CHECK(magnitude_key(-1.0f) == 0x3f800000u);
  CHECK(magnitude_key(inf) == 0x7f800000u);
  CHECK(magnitude_key(-inf) == 0x7f800000u);
  CHECK(magnitude_key(std::numeric_limits<float>::quiet_NaN()) > magnitude_key(inf));
  CHECK(magnitude_key(-std::numeric_limits<float>::quiet_NaN()) > magnitude_key(inf));
  CHECK(magnitude_key(std::numeric_limits<float>::denorm_min()) == 1u);
  CHECK(magnitude_key(std::numeric_limits<float>::max()) == 0x7f7fffffu);
  // Every key fits a signed int32 lane.
  CHECK(magnitude_key(std::bit_cast<float>(0xffffffffu)) == 0x7fffffffu);
  CHECK(key_magnitude(0x3f800000u) == 1.0f);
  CHECK(std::signbit(key_magnitude(magnitude_key(-2.5f))) == false);

  // Agrees with |a| < |b| on random finite values (and their negations).
  std::mt19937 rng(1);
  std::uniform_int_distribution<std::uint32_t> bits(0, 0xffffffffu);
  for (int t = 0; t < 20000; ++t) {
    const float a = std::bit_cast<float>(bits(rng)), b = std::bit_cast<float>(bits(rng));
    if (std::isnan(a) || std::isnan(b)) {
      CHECK(magnitude_key(std::isnan(a) ? a : b) > magnitude_key(inf));
      continue;
    }
    CHECK((magnitude_key(a) < magnitude_key(b)) == (std::fabs(a) < std::fabs(b)));
    CHECK((magnitude_key(a) == magnitude_key(b)) == (std::fabs(a) == std::fabs(b)));
  }
}

TEST_CASE("histograms, count_equal and find_nth_equal match plain loops", "[kernels][radix_select]") {
  const auto data = mixed_values(5000, 7);
  std::vector<std::uint32_t> hist(radix_bins), want(radix_bins);
  for (std::size_t n : {0, 1, 3, 4, 5, 7, 8, 9, 31, 1000, 1023, 1024, 1025, 2049, 4099}) {
    for (std::size_t offset : {0, 1, 3}) {
      const float* v = data.data() + offset;
      CAPTURE(n, offset);

      std::fill(hist.begin(), hist.end(), 7u);  // kernels add to what is there
      std::fill(want.begin(), want.end(), 7u);
      histogram_high(v, n, hist.data());
      for (std::size_t i = 0; i < n; ++i) ++want[magnitude_key(v[i]) >> 16];
      CHECK(hist == want);

      // The low histogram of the two most common high bins (and of an empty one).
      for (std::uint32_t high : {magnitude_key(1.0f) >> 16, 0u, 0x7fc0u, 0x1234u}) {
        std::fill(hist.begin(), hist.end(), 0u);
        std::fill(want.begin(), want.end(), 0u);
        const std::size_t matched = histogram_low(v, n, high, hist.data());
        std::size_t want_matched = 0;
        for (std::size_t i = 0; i < n; ++i) {
          const std::uint32_t key = magnitude_key(v[i]);
          if ((key >> 16) == high) {
            ++want[key & 0xffffu];
            ++want_matched;
          }
        }
        CHECK(hist == want);
        CHECK(matched == want_matched);

        // The collecting form: the same counts, plus the low bits of the matches in order.
        std::vector<std::uint16_t> lows(n + 1, 0xabcd), want_lows;
        std::fill(hist.begin(), hist.end(), 0u);
        CHECK(histogram_low_collect(v, n, high, hist.data(), lows.data()) == want_matched);
        CHECK(hist == want);
        for (std::size_t i = 0; i < n; ++i)
          if (magnitude_key(v[i]) >> 16 == high) want_lows.push_back(static_cast<std::uint16_t>(magnitude_key(v[i])));
        CHECK(std::equal(want_lows.begin(), want_lows.end(), lows.begin()));
        CHECK(lows[want_lows.size()] == 0xabcd);  // nothing written past the matches
      }

      // Byte digits: the top byte of every key, then the next byte under a prefix.
      std::uint32_t bytes[256], want_bytes[256];
      for (auto [mask, prefix, shift] : {std::tuple{0u, 0u, 24u}, std::tuple{0xff000000u, 0x3f000000u, 16u},
                                         std::tuple{0xffff0000u, 0x3f800000u, 8u}, std::tuple{0xffffff00u, 0u, 0u}}) {
        std::fill(std::begin(bytes), std::end(bytes), 1u);
        std::fill(std::begin(want_bytes), std::end(want_bytes), 1u);
        histogram_byte(v, n, mask, prefix, shift, bytes);
        for (std::size_t i = 0; i < n; ++i) {
          const std::uint32_t key = magnitude_key(v[i]);
          if ((key & mask) == prefix) ++want_bytes[(key >> shift) & 0xffu];
        }
        CHECK(std::equal(std::begin(bytes), std::end(bytes), std::begin(want_bytes)));
      }

      for (float x : {0.0f, 1.0f, -1.0000001f, inf, std::bit_cast<float>(0x7fc00000u), 1e-40f, 3.0f}) {
        const std::uint32_t key = magnitude_key(x);
        std::vector<std::size_t> at;
        for (std::size_t i = 0; i < n; ++i)
          if (magnitude_key(v[i]) == key) at.push_back(i);
        CHECK(count_equal(v, n, key) == at.size());
        for (std::size_t nth = 0; nth <= at.size(); ++nth)
          CHECK(find_nth_equal(v, n, key, nth) == (nth < at.size() ? at[nth] : n));
      }
    }
  }
}

TEST_CASE("radix kernels on a worked example", "[kernels][radix_select]") {
  // v = {2, -0, 0.5, -2, NaN, 0, 2.0000002}
  // keys: 2 -> 0x40000000, -0 and 0 -> 0, 0.5 -> 0x3f000000, NaN -> 0x7fc00000,
  //       2.0000002 -> 0x40000001 (high bin 0x4000 like 2, low bits 1).
  const float v[] = {2.0f, -0.0f, 0.5f, -2.0f, std::bit_cast<float>(0x7fc00000u), 0.0f, 2.0000002f};
  std::vector<std::uint32_t> hist(radix_bins);
  histogram_high(v, 7, hist.data());
  CHECK(hist[0x4000] == 3);  // 2, -2, 2.0000002
  CHECK(hist[0x0000] == 2);  // -0, 0
  CHECK(hist[0x3f00] == 1);  // 0.5
  CHECK(hist[0x7fc0] == 1);  // NaN
  std::fill(hist.begin(), hist.end(), 0u);
  CHECK(histogram_low(v, 7, 0x4000, hist.data()) == 3);
  CHECK(hist[0] == 2);  // 2, -2
  CHECK(hist[1] == 1);  // 2.0000002
  CHECK(count_equal(v, 7, magnitude_key(2.0f)) == 2);
  CHECK(count_equal(v, 7, 0) == 2);
  CHECK(find_nth_equal(v, 7, magnitude_key(2.0f), 0) == 0);
  CHECK(find_nth_equal(v, 7, magnitude_key(2.0f), 1) == 3);
  CHECK(find_nth_equal(v, 7, magnitude_key(2.0f), 2) == 7);  // only two
  CHECK(find_nth_equal(v, 7, 0, 1) == 5);
  CHECK(find_nth_equal(nullptr, 0, 0, 0) == 0);
  CHECK(count_equal(nullptr, 0, 0) == 0);
}
