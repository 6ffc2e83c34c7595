// kernels::fill_uniform (kernels/philox.hpp: 32, then 8, Philox4x32-10 blocks per AVX-512 step)
// must write exactly counter_rng::fill_uniform's values: the draws of DARE and DELLA are
// keyed by (seed, tensor name, model, element index) and never change. Built without
// AVX-512 this checks the scalar fallback; an AVX-512 build (-march=native) checks the
// vector path, including counters that carry into the high word and wrap at 2^64.
#include <alloy/kernels/philox.hpp>

#include <catch2/catch.hpp>

#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

TEST_CASE("vectorized Philox uniforms equal the scalar generator", "[kernels][random]") {
  const std::uint64_t top = std::numeric_limits<std::uint64_t>::max();
  std::size_t compared = 0;
  for (const std::uint64_t seed : {std::uint64_t{0}, std::uint64_t{42}, std::uint64_t{0xdeadbeefcafef00du}})
    for (const std::uint64_t stream : {std::uint64_t{0}, alloy::stream_id("layers.0.w", 2), top}) {
      const alloy::counter_rng rng(seed, stream);
      for (const std::uint64_t first :
           {std::uint64_t{0}, std::uint64_t{1}, std::uint64_t{3}, std::uint64_t{4}, std::uint64_t{63}, std::uint64_t{4097},
            (std::uint64_t{1} << 34) - 37,  // block index carries into the high counter word
            (top >> 2) * 4 - 10,            // block index wraps at 2^62
            top - 200, top - 63, top}) {
        for (const std::size_t n : {0u, 1u, 3u, 31u, 32u, 33u, 63u, 64u, 65u, 127u, 128u, 161u, 200u, 255u, 2048u, 4999u}) {
          CAPTURE(seed, stream, first, n);
          std::vector<float> want(n + 1, -1.0f), got(n + 1, -1.0f);
          rng.fill_uniform(first, want.data(), n);
          alloy::kernels::fill_uniform(rng, first, got.data(), n);
          CHECK(std::memcmp(want.data(), got.data(), (n + 1) * sizeof(float)) == 0);  // nothing past n either
          compared += n;
        }
      }
    }
  CHECK(compared > 500000);
}

TEST_CASE("vectorized Philox over many counters", "[kernels][random]") {
  const alloy::counter_rng rng(7, alloy::stream_id("model.embed", 0));
  constexpr std::size_t n = std::size_t{1} << 20;
  std::vector<float> want(n), got(n);
  rng.fill_uniform(12345, want.data(), n);
  alloy::kernels::fill_uniform(rng, 12345, got.data(), n);
  CHECK(std::memcmp(want.data(), got.data(), n * sizeof(float)) == 0);
}
