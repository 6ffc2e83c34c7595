#include <alloy/methods/magnitude_prune.hpp>

#include "support/storage_types.hpp"

#include <catch2/catch.hpp>

#include <cstring>
#include <random>

using namespace alloy;
using alloy_test::values;

TEMPLATE_LIST_TEST_CASE("magnitude_prune: worked example on every storage type", "[methods][magnitude_prune]",
                        alloy_test::storage_types) {
  using namespace alloy_test;
  // base = 1; tau_A = [4, -1, 2, 0, -3], tau_B = [-2, 3, -1, 1, 1]; density 0.4: k = 2
  //   t_A = [4, 0, 0, 0, -3], t_B = [-2, 3, 0, 0, 0]
  // weights {1, 0.5}: t_A + 0.5 t_B = [3, 1.5, 0, 0, -3]; plus the base: [4, 2.5, 1, 1, -2]
  auto base = make_tensor<TestType>({1, 1, 1, 1, 1});
  auto a = make_tensor<TestType>({5, 0, 3, 1, -2}), b = make_tensor<TestType>({-1, 4, 0, 2, 2});
  auto out = zeros<TestType>(5);
  magnitude_prune(base.get(), {a.get(), b.get()}, {1, 0.5}, out.get(), {.density = 0.4});
  CHECK(values(out) == std::vector<double>{4, 2.5, 1, 1, -2});
  // normalize: / 1.5 -> [2, 1, 0, 0, -2] + 1
  magnitude_prune(base.get(), {a.get(), b.get()}, {1, 0.5}, out.get(), {.density = 0.4, .normalize = true});
  CHECK(values(out) == std::vector<double>{3, 2, 1, 1, -1});
  // per-model densities {1, 0.2}: A untrimmed, B keeps k = 1 (3 at i1):
  // [4, -1, 2, 0, -3] + 0.5 [0, 3, 0, 0, 0] = [4, 0.5, 2, 0, -3]; peft returns that delta
  auto o = magnitude_prune_options::preset(preset::peft);
  o.densities = {1, 0.2};
  magnitude_prune(base.get(), {a.get(), b.get()}, {1, 0.5}, out.get(), o);
  CHECK(values(out) == std::vector<double>{4, 0.5, 2, 0, -3});
}

TEST_CASE("magnitude_prune: L1 rescale restores the task vector's L1 norm", "[methods][magnitude_prune]") {
  // tau = [4, -1, 2, 0, -3] (L1 10), top-2 [4, 0, 0, 0, -3] (L1 7): scaled by 10/7.
  std::vector<double> base(5, 0.0), a{4, -1, 2, 0, -3}, out(5);
  magnitude_prune(base, {a}, {1}, out, {.density = 0.4, .rescale = rescale_norm::l1});
  CHECK(out[0] == Approx(4 * 10.0 / 7));
  CHECK(out[4] == Approx(-3 * 10.0 / 7));
  CHECK(out[1] == 0);
  // L2: sqrt(30) / 5; L-inf: 4 / 4 = 1
  magnitude_prune(base, {a}, {1}, out, {.density = 0.4, .rescale = rescale_norm::l2});
  CHECK(out[0] == Approx(4 * std::sqrt(30.0) / 5));
  magnitude_prune(base, {a}, {1}, out, {.density = 0.4, .rescale = rescale_norm::linf});
  CHECK(out[0] == 4);
}

TEST_CASE("magnitude_prune: rescale is skipped when a norm is below 1e-7", "[methods][magnitude_prune]") {
  std::vector<double> base(4, 0.0), a{1e-9, 0, 0, 0}, out(4);
  magnitude_prune(base, {a}, {1}, out, {.density = 0.5, .rescale = rescale_norm::l1});
  CHECK(out[0] == 1e-9);
}

TEST_CASE("magnitude_prune: density 1 is task arithmetic", "[methods][magnitude_prune]") {
  std::mt19937 gen(9);
  std::normal_distribution<float> dist;
  std::vector<float> base(3001), a(3001), b(3001), x(3001), y(3001);
  for (std::size_t i = 0; i < base.size(); ++i) {
    base[i] = dist(gen);
    a[i] = dist(gen);
    b[i] = dist(gen);
  }
  magnitude_prune(base, {a, b}, {0.3, 0.9}, x, {.lambda = 0.5});
  task_arithmetic(base, {a, b}, {0.3, 0.9}, y, {.lambda = 0.5});
  CHECK(x == y);
}

TEST_CASE("magnitude_prune: identical bits for any thread count", "[methods][magnitude_prune]") {
  const std::size_t n = parallel_chunk + 4099;
  std::mt19937 gen(2);
  std::normal_distribution<float> dist;
  std::vector<fp16> base(n), a(n);
  for (std::size_t i = 0; i < n; ++i) {
    base[i] = fp16(dist(gen));
    a[i] = fp16(dist(gen));
  }
  std::vector<fp16> one(n), two(n);
  magnitude_prune(base, {a}, {1}, one, {.density = 0.3, .rescale = rescale_norm::l1, .exec = {1}});
  magnitude_prune(base, {a}, {1}, two, {.density = 0.3, .rescale = rescale_norm::l1, .exec = {2}});
  CHECK(std::memcmp(one.data(), two.data(), n * sizeof(fp16)) == 0);
}

TEST_CASE("magnitude_prune: bad density", "[methods][magnitude_prune][errors]") {
  std::vector<float> base{0}, a{1}, out(1);
  REQUIRE_THROWS_WITH(magnitude_prune(base, {a}, {1}, out, {.density = 2}), Catch::Contains("outside (0, 1]"));
}

TEST_CASE("magnitude_prune: a density that keeps nothing (mergekit)", "[methods][magnitude_prune][errors]") {
  std::vector<float> base{0, 0}, a{1, 1}, out(2);
  REQUIRE_THROWS_WITH(magnitude_prune(base, {a}, {1}, out, {.density = 0.4}), Catch::Contains("keeps no entry"));
}
