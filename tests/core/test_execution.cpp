#include <alloy/core/execution.hpp>

#include <catch2/catch.hpp>

#include <atomic>
#include <stdexcept>
#include <vector>

TEST_CASE("parallel_for visits every item exactly once", "[core][execution]") {
  for (unsigned threads : {1u, 2u, 3u, 8u}) {
    for (std::size_t n : {std::size_t{0}, std::size_t{1}, std::size_t{2}, std::size_t{100}}) {
      std::vector<std::atomic<int>> hits(n);
      alloy::parallel_for(n, alloy::execution{threads}, [&](std::size_t i) { hits[i].fetch_add(1); });
      for (std::size_t i = 0; i < n; ++i) REQUIRE(hits[i].load() == 1);
    }
  }
}

TEST_CASE("parallel_for rethrows the first exception after joining", "[core][execution]") {
  for (unsigned threads : {1u, 2u, 4u}) {
    std::atomic<int> done{0};
    auto f = [&](std::size_t i) {
      if (i == 3) throw std::runtime_error("item 3 failed");
      done.fetch_add(1);
    };
    REQUIRE_THROWS_WITH(alloy::parallel_for(1000, alloy::execution{threads}, f), "item 3 failed");
    if (threads == 1) REQUIRE(done.load() == 3);  // claims stop once an item has failed
  }
}

TEST_CASE("resolve_threads: 0 means the hardware concurrency", "[core][execution]") {
  REQUIRE(alloy::resolve_threads(alloy::execution{}) >= 1);
  REQUIRE(alloy::resolve_threads(alloy::execution{3}) == 3);
}
