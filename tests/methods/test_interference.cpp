#include <alloy/methods/interference.hpp>
#include <alloy/methods/magnitude_prune.hpp>

#include "support/storage_types.hpp"

#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <random>

using namespace alloy;

TEMPLATE_LIST_TEST_CASE("interference: worked example on every storage type", "[methods][interference]",
                        alloy_test::storage_types) {
  using namespace alloy_test;
  // base b = [0.5, -1, 2, 0, 1, 0.25, 3, -2]; task vectors
  //   tau_0 = [ 3, -1, 2,  0, -4, 0.5, 0,  1]   sum |.| = 11.5, nonzero 6
  //   tau_1 = [-2,  1, 2, -1,  4, 0,   0, -3]   sum |.| = 13,   nonzero 6
  // Opposite signs at 0, 1, 4 and 7: 4 conflicts.
  // density 0.5 for model 0: k = 4 of |tau_0| = [3, 1, 2, 0, 4, 0.5, 0, 1]: 4, 3, 2 and one
  //   of the tied 1s, the lower index (1): trimmed [3, -1, 2, 0, -4, 0, 0, 0]
  // density 0.25 for model 1: k = 2 of [2, 1, 2, 1, 4, 0, 0, 3]: 4 and 3:
  //   trimmed [0, 0, 0, 0, 4, 0, 0, -3]
  // After trimming only index 4 has opposite signs: 1 conflict.
  // Every value is exact in bf16 and fp16, so every storage type gives these numbers.
  const std::vector<double> b{0.5, -1, 2, 0, 1, 0.25, 3, -2};
  const std::vector<double> t0{3, -1, 2, 0, -4, 0.5, 0, 1}, t1{-2, 1, 2, -1, 4, 0, 0, -3};
  std::vector<double> x0(8), x1(8);
  for (std::size_t j = 0; j < 8; ++j) {
    x0[j] = b[j] + t0[j];
    x1[j] = b[j] + t1[j];
  }
  const auto base = make_tensor<TestType>(b), m0 = make_tensor<TestType>(x0), m1 = make_tensor<TestType>(x1);
  const interference r = task_vector_interference(base.get(), {m0.get(), m1.get()}, {0.5, 0.25});
  CHECK(r.elements == 8);
  CHECK(r.abs_sum == std::vector<double>{11.5, 13});
  CHECK(r.nonzero == std::vector<std::size_t>{6, 6});
  CHECK(r.conflicts_before == 4);
  CHECK(r.conflicts_after == 1);

  // Density 1 trims nothing; a density keeping no entry (floor(0.1 * 8) = 0) keeps nothing.
  const interference all = task_vector_interference(base.get(), {m0.get(), m1.get()}, {1.0, 1.0});
  CHECK(all.conflicts_after == 4);
  const interference none = task_vector_interference(base.get(), {m0.get(), m1.get()}, {1.0, 0.1});
  CHECK(none.conflicts_before == 4);
  CHECK(none.conflicts_after == 0);
}

TEST_CASE("interference: large bf16 tensors equal a direct count, for any thread count", "[methods][interference]") {
  // 3 * 2^20 + 123 entries: several work items and a partial last tile. The models' bf16
  // values repeat, so the top-k cut falls inside a large group of ties, kept by lower index
  // across tiles and items. The trimmed signs are checked against magnitude_prune's output
  // (the same trim), the counts and sums against a direct loop.
  const std::size_t n = (std::size_t{3} << 20) + 123;
  std::mt19937 rng(5);
  std::uniform_int_distribution<int> step(-40, 40);
  std::vector<bf16> base(n), m0(n), m1(n);
  for (std::size_t j = 0; j < n; ++j) {
    base[j] = bf16(0.25f * static_cast<float>(step(rng) % 4));
    m0[j] = bf16(static_cast<float>(base[j]) + 0.125f * static_cast<float>(step(rng) / 8));
    m1[j] = bf16(static_cast<float>(base[j]) + 0.125f * static_cast<float>(step(rng) / 10));
  }
  const std::vector<double> densities{0.3, 0.45};

  std::vector<double> abs_sum(2, 0.0);
  std::vector<std::size_t> nonzero(2, 0);
  std::size_t before = 0, after = 0;
  std::vector<float> trimmed0(n), trimmed1(n);
  magnitude_prune_options mp;
  mp.output = merge_output::delta;
  mp.density = densities[0];
  magnitude_prune(base, {m0}, {1.0}, trimmed0, mp);
  mp.density = densities[1];
  magnitude_prune(base, {m1}, {1.0}, trimmed1, mp);
  for (std::size_t j = 0; j < n; ++j) {
    const float a = static_cast<float>(m0[j]) - static_cast<float>(base[j]);
    const float c = static_cast<float>(m1[j]) - static_cast<float>(base[j]);
    abs_sum[0] += std::fabs(a);
    abs_sum[1] += std::fabs(c);
    nonzero[0] += a != 0;
    nonzero[1] += c != 0;
    before += (a > 0 && c < 0) || (a < 0 && c > 0);
    after += (trimmed0[j] > 0 && trimmed1[j] < 0) || (trimmed0[j] < 0 && trimmed1[j] > 0);
  }
  const interference r1 = task_vector_interference(base, {m0, m1}, {0.3, 0.45}, {.threads = 1});
  const interference r2 = task_vector_interference(base, {m0, m1}, {0.3, 0.45}, {.threads = 2});
  CHECK(r1.elements == n);
  CHECK(r1.nonzero == nonzero);
  CHECK(r1.conflicts_before == before);
  CHECK(r1.conflicts_after == after);
  CHECK(after < before);
  for (std::size_t i = 0; i < 2; ++i) CHECK(r1.abs_sum[i] == Approx(abs_sum[i]).epsilon(1e-12));
  // Identical bits for 1 and 2 threads.
  CHECK(std::memcmp(r1.abs_sum.data(), r2.abs_sum.data(), 2 * sizeof(double)) == 0);
  CHECK(r1.nonzero == r2.nonzero);
  CHECK(r1.conflicts_before == r2.conflicts_before);
  CHECK(r1.conflicts_after == r2.conflicts_after);
}

TEST_CASE("interference: bad input names the value", "[methods][interference]") {
  const std::vector<float> base(4, 0.f), a{1, 2, 3, 4}, shorter{1, 2, 3};
  CHECK_THROWS_WITH(task_vector_interference(base, {a}, {0.5, 0.5}),
                    Catch::Contains("2 densities for 1 models"));
  CHECK_THROWS_WITH(task_vector_interference(base, {a}, {0.0}), Catch::Contains("density of model 0"));
  CHECK_THROWS_WITH(task_vector_interference(base, {a}, {1.5}), Catch::Contains("density of model 0"));
  CHECK_THROWS_WITH(task_vector_interference(base, {a, shorter}, {0.5, 0.5}),
                    Catch::Contains("model 1 has 3 elements"));
  CHECK_THROWS_AS(task_vector_interference(base, std::span<const tensor_view>{}, std::span<const double>{}), error);
}
