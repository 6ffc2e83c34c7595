// Tests for alloy/core/random.hpp: Philox known answers, the counter layout, chunking
// independence, the uniform mapping and the pinned stream ids (the reproducibility
// contract: if a pinned value here changes, every random merge changes with it).
#include <catch2/catch.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "alloy/core/random.hpp"

namespace {

using u32x4 = std::array<std::uint32_t, 4>;
using u32x2 = std::array<std::uint32_t, 2>;

struct kat {
  u32x4 ctr;
  u32x2 key;
  u32x4 expected;
};

// Random123 tests/kat_vectors, the "philox4x32 10" lines: counter, key, expected output.
constexpr std::array<kat, 3> philox10_kat = {{
    {{0x00000000, 0x00000000, 0x00000000, 0x00000000}, {0x00000000, 0x00000000},
     {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}},
    {{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}, {0xffffffff, 0xffffffff},
     {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}},
    {{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}, {0xa4093822, 0x299f31d0},
     {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}},
}};

// The "philox4x32 7" lines: the same schedule with fewer rounds, which pins the round
// structure more tightly than the 10-round answers alone.
constexpr std::array<kat, 3> philox7_kat = {{
    {{0x00000000, 0x00000000, 0x00000000, 0x00000000}, {0x00000000, 0x00000000},
     {0x5f6fb709, 0x0d893f64, 0x4f121f81, 0x4f730a48}},
    {{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}, {0xffffffff, 0xffffffff},
     {0x5207ddc2, 0x45165e59, 0x4d8ee751, 0x8c52f662}},
    {{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}, {0xa4093822, 0x299f31d0},
     {0x4dfccaba, 0x190a87f0, 0xc47362ba, 0xb6b5242a}},
}};

static_assert(alloy::philox4x32_10(philox10_kat[0].ctr, philox10_kat[0].key) == philox10_kat[0].expected);
static_assert(alloy::philox4x32_10(philox10_kat[2].ctr, philox10_kat[2].key) == philox10_kat[2].expected);
static_assert(alloy::counter_rng(0, 0).bits(1) == 0xe169c58d);
static_assert(alloy::stream_id("w", 0) != alloy::stream_id("w", 1));

constexpr std::string_view tensor = "model.layers.0.self_attn.q_proj.weight";

}  // namespace

TEST_CASE("philox4x32_10 reproduces the Random123 known answers", "[random]") {
  for (const auto& k : philox10_kat) CHECK(alloy::philox4x32_10(k.ctr, k.key) == k.expected);
  for (const auto& k : philox7_kat) CHECK(alloy::detail::philox4x32<7>(k.ctr, k.key) == k.expected);
}

TEST_CASE("counter_rng word layout: key = seed, counter = {block, stream}", "[random]") {
  // seed 0, stream 0, indices 0..3 are the all-zero known answer.
  const alloy::counter_rng zero(0, 0);
  for (std::uint32_t i = 0; i < 4; ++i) CHECK(zero.bits(i) == philox10_kat[0].expected[i]);

  std::mt19937_64 gen(1);
  for (int trial = 0; trial < 1000; ++trial) {
    const std::uint64_t seed = gen(), stream = gen();
    const std::uint64_t index = gen() >> (trial % 64);  // small and huge indices
    const alloy::counter_rng rng(seed, stream);
    const std::uint64_t block = index / 4;
    const u32x4 ctr = {static_cast<std::uint32_t>(block), static_cast<std::uint32_t>(block >> 32),
                       static_cast<std::uint32_t>(stream), static_cast<std::uint32_t>(stream >> 32)};
    const u32x2 key = {static_cast<std::uint32_t>(seed), static_cast<std::uint32_t>(seed >> 32)};
    CAPTURE(seed, stream, index);
    REQUIRE(rng.bits(index) == alloy::philox4x32_10(ctr, key)[index % 4]);
    REQUIRE(rng.block(block) == alloy::philox4x32_10(ctr, key));
  }
}

TEST_CASE("counter_rng is deterministic and keyed by seed and stream", "[random]") {
  const alloy::counter_rng a(42, 7), b(42, 7), other_seed(43, 7), other_stream(42, 8);
  int same_seed_diff = 0, same_stream_diff = 0;
  for (std::uint64_t i = 0; i < 1000; ++i) {
    REQUIRE(a.bits(i) == b.bits(i));
    REQUIRE(a.uniform(i) == b.uniform(i));
    same_stream_diff += a.bits(i) != other_seed.bits(i);
    same_seed_diff += a.bits(i) != other_stream.bits(i);
  }
  CHECK(same_stream_diff > 990);
  CHECK(same_seed_diff > 990);
}

TEST_CASE("counter_rng values are pinned (reproducibility contract)", "[random]") {
  const std::uint64_t stream = alloy::stream_id(tensor, 2);
  REQUIRE(stream == 0xdb4951814b6641b2u);
  const alloy::counter_rng rng(42, stream);
  // Computed once, cross-checked with an independent Python Philox.
  const std::array<std::uint32_t, 6> bits = {0x4cbf2c1e, 0x5a052163, 0x0ed44728,
                                             0x0b98fd6f, 0xb4c45974, 0x7880f273};
  for (std::uint64_t i = 0; i < bits.size(); ++i) {
    CHECK(rng.bits(i) == bits[i]);
    CHECK(rng.uniform(i) == static_cast<float>(bits[i] >> 8) * 0x1p-24f);
  }
  CHECK(rng.uniform(0) == 0x4cbf2cp-24f);
}

TEST_CASE("fill_uniform equals uniform(index) however the range is chunked", "[random]") {
  const alloy::counter_rng rng(0x0123456789abcdefu, alloy::stream_id(tensor, 0));
  const std::uint64_t top = std::numeric_limits<std::uint64_t>::max();
  for (const std::uint64_t first : {std::uint64_t{0}, std::uint64_t{1}, std::uint64_t{2}, std::uint64_t{3},
                                    std::uint64_t{4}, std::uint64_t{5}, std::uint64_t{4097},
                                    (std::uint64_t{1} << 32) - 3, (std::uint64_t{1} << 40) + 3,
                                    top - 6, top - 1}) {
    for (const std::size_t n : {0u, 1u, 2u, 3u, 4u, 5u, 6u, 7u, 8u, 9u, 13u, 100u, 1001u}) {
      CAPTURE(first, n);
      std::vector<float> out(n + 1, -1.0f);
      rng.fill_uniform(first, out.data(), n);
      std::size_t bad = 0;
      for (std::size_t i = 0; i < n; ++i) bad += out[i] == rng.uniform(first + i) ? 0u : 1u;  // index wraps mod 2^64
      CHECK(bad == 0);
      CHECK(out[n] == -1.0f);  // nothing written past the end
    }
  }
  // Chunks of odd sizes reassemble the single fill.
  std::vector<float> whole(1000), pieces(1000);
  rng.fill_uniform(17, whole.data(), whole.size());
  for (std::size_t pos = 0, step = 1; pos < pieces.size(); pos += step, step = step * 2 + 1) {
    const std::size_t len = std::min(step, pieces.size() - pos);
    rng.fill_uniform(17 + pos, pieces.data() + pos, len);
  }
  CHECK(whole == pieces);
}

TEST_CASE("uniform is in [0, 1) with the right mean and variance", "[random]") {
  CHECK(alloy::counter_rng::to_uniform(0) == 0.0f);
  CHECK(alloy::counter_rng::to_uniform(0xffffffffu) == 1.0f - 0x1p-24f);
  CHECK(alloy::counter_rng::to_uniform(0xffffffffu) < 1.0f);

  const alloy::counter_rng rng(2024, alloy::stream_id("stats", 0));
  constexpr std::size_t n = 1000000;
  std::vector<float> u(n);
  rng.fill_uniform(0, u.data(), n);
  double sum = 0, sum_sq = 0;
  float lo = 1, hi = 0;
  for (const float x : u) {
    sum += x;
    sum_sq += static_cast<double>(x) * x;
    lo = std::min(lo, x);
    hi = std::max(hi, x);
  }
  CHECK(lo >= 0.0f);
  CHECK(hi < 1.0f);
  const double mean = sum / n;
  const double var = sum_sq / n - mean * mean;
  // U(0,1): mean 1/2, sd of the sample mean sqrt(1/12/n); variance 1/12, sd of the sample
  // variance sqrt((mu4 - sigma^4)/n) = sqrt((1/80 - 1/144)/n) = sqrt(1/180/n).
  const double mean_tol = 5 * std::sqrt(1.0 / 12 / n);
  const double var_tol = 5 * std::sqrt(1.0 / 180 / n);
  CHECK(std::abs(mean - 0.5) < mean_tol);
  CHECK(std::abs(var - 1.0 / 12) < var_tol);
}

TEST_CASE("stream_id is stable and separates names and models", "[random]") {
  // FNV-1a 64 published test vectors.
  STATIC_REQUIRE(alloy::detail::fnv1a_64("") == 0xcbf29ce484222325u);
  STATIC_REQUIRE(alloy::detail::fnv1a_64("a") == 0xaf63dc4c8601ec8cu);
  STATIC_REQUIRE(alloy::detail::fnv1a_64("foobar") == 0x85944171f73967e8u);
  // Pinned: changing stream_id changes every random merge.
  STATIC_REQUIRE(alloy::stream_id("model.layers.0.mlp.down_proj.weight", 0) == 0x6f2480ec10a87d78u);
  STATIC_REQUIRE(alloy::stream_id("model.layers.0.mlp.down_proj.weight", 1) == 0xf3c157b33936f6ccu);
  STATIC_REQUIRE(alloy::stream_id("", 0) == 0xc3817c016ba4ff30u);

  std::set<std::uint64_t> seen;
  std::size_t count = 0;
  for (int layer = 0; layer < 40; ++layer) {
    for (const char* part : {"q_proj", "k_proj", "v_proj", "o_proj", "mlp.up_proj"}) {
      const std::string name = "model.layers." + std::to_string(layer) + "." + part + ".weight";
      for (std::uint64_t model = 0; model < 8; ++model) {
        seen.insert(alloy::stream_id(name, model));
        ++count;
      }
    }
  }
  CHECK(seen.size() == count);
  CHECK(alloy::stream_id("ab", 0) != alloy::stream_id("ba", 0));
  CHECK(alloy::stream_id("w", 0) != alloy::stream_id(std::string_view("w\0", 2), 0));
}
