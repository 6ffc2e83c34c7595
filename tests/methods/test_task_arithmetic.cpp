#include <alloy/methods/task_arithmetic.hpp>

#include "support/storage_types.hpp"

#include <catch2/catch.hpp>

#include <cstring>
#include <limits>
#include <random>

using namespace alloy;
using alloy_test::values;

namespace {
using scalars = std::tuple<float, double, bf16, fp16>;
template <class T>
std::vector<double> dbl(const std::vector<T>& v) {
  std::vector<double> out;
  for (const T& x : v) out.push_back(static_cast<double>(static_cast<float>(x)));
  return out;
}
template <class T>
std::vector<T> random_vector(std::size_t n, unsigned seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.f, 1.f);
  std::vector<T> v(n);
  for (auto& x : v) x = static_cast<T>(dist(gen));
  return v;
}
bool has_code(const error& e, errc c) { return e.code() == c; }
}  // namespace

TEMPLATE_LIST_TEST_CASE("task_arithmetic: worked example on every storage type", "[methods][task_arithmetic]",
                        alloy_test::storage_types) {
  // base = {1, 2, 3, 4}; model 0 = {2, 2, 5, 4}, model 1 = {1, 0, 3, 8}
  // task vectors: tau0 = {1, 0, 2, 0}, tau1 = {0, -2, 0, 4}
  auto base = alloy_test::make_tensor<TestType>({1, 2, 3, 4});
  auto m0 = alloy_test::make_tensor<TestType>({2, 2, 5, 4}), m1 = alloy_test::make_tensor<TestType>({1, 0, 3, 8});
  auto out = alloy_test::zeros<TestType>(4);
  // w = {1, 0.5}: sum = {1, -1, 2, 2}; base + sum = {2, 1, 5, 6}
  task_arithmetic(base.get(), {m0.get(), m1.get()}, {1, 0.5}, out.get());
  CHECK(values(out) == std::vector<double>{2, 1, 5, 6});
  // lambda 0.5: base + {0.5, -0.5, 1, 1} = {1.5, 1.5, 4, 5}
  task_arithmetic(base.get(), {m0.get(), m1.get()}, {1, 0.5}, out.get(), {.lambda = 0.5});
  CHECK(values(out) == std::vector<double>{1.5, 1.5, 4, 5});
  // w = {1, 1} normalized: sum {1, -2, 2, 4} / 2 = {0.5, -1, 1, 2}; base + = {1.5, 1, 4, 6}
  task_arithmetic(base.get(), {m0.get(), m1.get()}, {1, 1}, out.get(), {.normalize = true});
  CHECK(values(out) == std::vector<double>{1.5, 1, 4, 6});
  // delta only (peft): the merged task vector {1, -1, 2, 2}
  task_arithmetic(base.get(), {m0.get(), m1.get()}, {1, 0.5}, out.get(), {.output = merge_output::delta});
  CHECK(values(out) == std::vector<double>{1, -1, 2, 2});
}

TEMPLATE_LIST_TEST_CASE("task_arithmetic: lambda 0 is the base", "[methods][task_arithmetic]", scalars) {
  const auto base = random_vector<TestType>(1003, 1), m = random_vector<TestType>(1003, 2);
  std::vector<TestType> out(base.size());
  task_arithmetic(base, {m}, {0.7}, out, {.lambda = 0.0});
  CHECK(dbl(out) == dbl(base));
}

TEMPLATE_LIST_TEST_CASE("task_arithmetic: one model with weight 1 is that model", "[methods][task_arithmetic]",
                        scalars) {
  // b + (x - b) is exact when the inputs are 16-bit (float has room) or when x and b are
  // within a factor of 2 of each other (Sterbenz); the values below are of that kind.
  std::vector<TestType> base, m;
  for (int i = 0; i < 513; ++i) {
    base.push_back(static_cast<TestType>(static_cast<float>(1 + i % 7) * 0.25f));
    m.push_back(static_cast<TestType>(static_cast<float>(1 + i % 5) * 0.375f));
  }
  std::vector<TestType> out(base.size());
  task_arithmetic(base, {m}, {1.0}, out);
  CHECK(dbl(out) == dbl(m));
}

TEST_CASE("task_arithmetic: negative weight negates a task (forgetting)", "[methods][task_arithmetic]") {
  // base {1, 2}, model {2, 4}: tau = {1, 2}; weight -1: base - tau = {0, 0}
  std::vector<float> base{1, 2}, m{2, 4}, out(2);
  task_arithmetic(base, {m}, {-1.0}, out);
  CHECK(out == std::vector<float>{0, 0});
}

TEST_CASE("task_arithmetic: normalize with weights summing to zero divides by 1", "[methods][task_arithmetic]") {
  // mergekit treats |sum w| < 1e-8 as 1. base {0}, models {2}, {1}, w {1, -1}: 2 - 1 = 1.
  std::vector<float> base{0}, a{2}, b{1}, out(1);
  task_arithmetic(base, {a, b}, {1, -1}, out, {.normalize = true});
  CHECK(out[0] == 1.f);
}

TEST_CASE("task_arithmetic rounds like mergekit's float32 task_arithmetic", "[methods][task_arithmetic]") {
  // mergekit: mixed = sum_i (x_i - b) * w_i (from i = 0), mixed /= sum w (normalize),
  // mixed *= lambda, out = b + mixed; all float32.
  const std::size_t n = 4099;
  const auto b = random_vector<float>(n, 10), x0 = random_vector<float>(n, 11), x1 = random_vector<float>(n, 12),
             x2 = random_vector<float>(n, 13);
  std::vector<float> out(n);
  task_arithmetic(b, {x0, x1, x2}, {0.3, 0.6, 0.9}, out, {.lambda = 0.7, .normalize = true});
  const float w0 = 0.3f, w1 = 0.6f, w2 = 0.9f, d = (w0 + w1) + w2, lambda = 0.7f;
  for (std::size_t i = 0; i < n; ++i) {
    float mixed = ((x0[i] - b[i]) * w0 + (x1[i] - b[i]) * w1) + (x2[i] - b[i]) * w2;
    mixed = mixed / d;
    mixed = mixed * lambda;
    REQUIRE(out[i] == b[i] + mixed);
  }
}

TEST_CASE("task_arithmetic: identical bits for any thread count", "[methods][task_arithmetic]") {
  const std::size_t n = 2 * parallel_chunk + 4097;
  const auto b = random_vector<bf16>(n, 1), x = random_vector<bf16>(n, 2), y = random_vector<bf16>(n, 3);
  std::vector<bf16> one(n), two(n);
  task_arithmetic(b, {x, y}, {0.5, 0.5}, one, {.exec = {1}});
  task_arithmetic(b, {x, y}, {0.5, 0.5}, two, {.exec = {2}});
  CHECK(std::memcmp(one.data(), two.data(), n * sizeof(bf16)) == 0);
}

TEST_CASE("task_arithmetic in place on the base", "[methods][task_arithmetic]") {
  std::vector<float> base{1, 2}, m{2, 4};
  task_arithmetic(base, {m}, {0.5}, base);
  CHECK(base == std::vector<float>{1.5, 3});
}

TEST_CASE("task_arithmetic on whole models", "[methods][task_arithmetic]") {
  tensor_set base, a, b;
  base.add("w", std::vector<bf16>{bf16(1.f), bf16(2.f)}, {2});
  a.add("w", std::vector<float>{3, 2}, {2});
  b.add("w", std::vector<fp16>{fp16(1.f), fp16(6.f)}, {2});
  // tau_a = {2, 0}, tau_b = {0, 4}; w {1, 1}: base + {2, 4} = {3, 6}, stored as the base's bf16
  const tensor_set merged = task_arithmetic(base, {a, b}, {1, 1});
  CHECK(merged.at("w").type() == dtype::bf16);
  CHECK(static_cast<float>(merged.at("w").values<bf16>()[0]) == 3.f);
  CHECK(static_cast<float>(merged.at("w").values<bf16>()[1]) == 6.f);
  const tensor_set f32 = task_arithmetic(base, {a, b}, {1, 1}, {.out_dtype = dtype::f32});
  CHECK(f32.at("w").values<float>()[1] == 6.f);
}

// ---- bad input: one test per case -------------------------------------------------------

TEST_CASE("task_arithmetic: no models", "[methods][task_arithmetic][errors]") {
  std::vector<float> base{1}, out(1);
  std::vector<std::vector<float>> none;
  REQUIRE_THROWS_MATCHES(task_arithmetic(base, none, {}, out), error,
                         Catch::Predicate<error>([](const error& e) { return has_code(e, errc::empty_input); }));
}

TEST_CASE("task_arithmetic: weight count mismatch", "[methods][task_arithmetic][errors]") {
  std::vector<float> base{1}, m{2}, out(1);
  REQUIRE_THROWS_WITH(task_arithmetic(base, {m}, {1, 2}, out), Catch::Contains("2 weights for 1 models"));
}

TEST_CASE("task_arithmetic: non-finite lambda", "[methods][task_arithmetic][errors]") {
  std::vector<float> base{1}, m{2}, out(1);
  REQUIRE_THROWS_WITH(task_arithmetic(base, {m}, {1}, out, {.lambda = std::numeric_limits<double>::infinity()}),
                      Catch::Contains("lambda is inf"));
}

TEST_CASE("task_arithmetic: non-finite weight", "[methods][task_arithmetic][errors]") {
  std::vector<float> base{1}, m{2}, out(1);
  REQUIRE_THROWS_WITH(task_arithmetic(base, {m}, {-std::numeric_limits<double>::infinity()}, out),
                      Catch::Contains("weight of model 0 is -inf"));
}

TEST_CASE("task_arithmetic: base size mismatch", "[methods][task_arithmetic][errors]") {
  std::vector<float> base{1, 2}, m{2}, out(2);
  REQUIRE_THROWS_WITH(task_arithmetic(base, {m}, {1}, out),
                      Catch::Contains("model 0 has 1 elements, the base model has 2"));
}

TEST_CASE("task_arithmetic: output overlapping a model", "[methods][task_arithmetic][errors]") {
  std::vector<float> base{1, 1, 1}, buf{1, 2, 3, 4};
  const std::span<const float> m(buf.data() + 1, 3);
  const std::span<float> out(buf.data(), 3);
  REQUIRE_THROWS_WITH(task_arithmetic(base, {tensor_view(m)}, {1}, out), Catch::Contains("overlaps model 0"));
}

TEST_CASE("task_arithmetic on models: a tensor missing in the base", "[methods][task_arithmetic][errors]") {
  tensor_set base, a;
  base.add("w", std::vector<float>{1}, {1});
  a.add("v", std::vector<float>{1}, {1});
  REQUIRE_THROWS_WITH(task_arithmetic(base, {a}, {1}), Catch::Contains("model 0 has no tensor 'w'"));
}

TEST_CASE("task_arithmetic on models: a non-floating output dtype", "[methods][task_arithmetic][errors]") {
  tensor_set base, a;
  base.add("w", std::vector<float>{1}, {1});
  a.add("w", std::vector<float>{1}, {1});
  REQUIRE_THROWS_MATCHES(task_arithmetic(base, {a}, {1}, {.out_dtype = dtype::i8}), error,
                         Catch::Predicate<error>([](const error& e) { return has_code(e, errc::dtype_mismatch); }));
}
