#include <alloy/methods/karcher.hpp>

#include "support/storage_types.hpp"

#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <limits>

using namespace alloy;
using alloy_test::values;

namespace {
using scalars = std::tuple<float, double, bf16, fp16>;
const double pi = std::acos(-1.0);
bool has_code(const error& e, errc c) { return e.code() == c; }

template <class T>
std::vector<T> from(const std::vector<double>& v) {
  std::vector<T> out;
  for (double x : v) out.push_back(alloy_test::to_storage<T>(x));
  return out;
}

// mergekit's karcher_merge_tensors, on full vectors, in double.
std::vector<double> karcher_ref(const std::vector<std::vector<double>>& xs, const std::vector<double>& alphas,
                                std::size_t max_iter = 10, double tol = 1e-5) {
  const std::size_t n = xs.size(), len = xs[0].size();
  std::vector<double> norms(n);
  std::vector<std::size_t> valid;
  for (std::size_t i = 0; i < n; ++i) {
    norms[i] = alloy_test::l2_norm(xs[i]);
    if (norms[i] > tol) valid.push_back(i);
  }
  if (valid.empty()) return std::vector<double>(len, 0.0);
  double asum = 0;
  for (std::size_t i : valid) asum += alphas[i];
  auto unit = [&](std::size_t i) {
    std::vector<double> u(xs[i]);
    for (double& x : u) x /= norms[i];
    return u;
  };
  std::vector<double> u(len, 0.0);
  for (std::size_t i : valid) {
    const auto e = unit(i);
    for (std::size_t k = 0; k < len; ++k) u[k] += alphas[i] / asum * e[k];
  }
  double un = alloy_test::l2_norm(u);
  if (un < tol)
    u = unit(valid[0]);
  else
    for (double& x : u) x /= un;
  for (std::size_t it = 0; it < max_iter; ++it) {
    std::vector<double> t(len, 0.0);
    for (std::size_t i : valid) {
      const auto e = unit(i);
      const double d = std::clamp(alloy_test::dot(u, e), -1.0, 1.0);
      const double th = std::acos(d);
      if (th < tol) continue;
      for (std::size_t k = 0; k < len; ++k) t[k] += alphas[i] / asum * (th / std::sin(th)) * (e[k] - d * u[k]);
    }
    const double tn = alloy_test::l2_norm(t);
    if (tn < tol) break;
    for (std::size_t k = 0; k < len; ++k) u[k] = std::cos(tn) * u[k] + std::sin(tn) * t[k] / tn;
    un = alloy_test::l2_norm(u);
    if (un > tol)
      for (double& x : u) x /= un;
  }
  double s = 0;
  for (std::size_t i = 0; i < n; ++i) s += alphas[i] * norms[i];
  for (double& x : u) x *= s;
  return u;
}
}  // namespace

TEMPLATE_LIST_TEST_CASE("karcher: worked examples on every storage type", "[methods][karcher]", alloy_test::storage_types) {
  const dtype dt = alloy_test::dtype_v<TestType>;
  const auto tol = alloy_test::tolerance_for(dt, 2);
  auto out = alloy_test::zeros<TestType>(4);
  // e0, e1: the first guess (e0 + e1) / |e0 + e1| is already the mean (both log maps,
  // (pi/4) / sin(pi/4) (e_i - u / sqrt 2), cancel); mean norm 1: (sqrt(1/2), sqrt(1/2), 0, 0).
  auto e0 = alloy_test::make_tensor<TestType>({1, 0, 0, 0}), e1 = alloy_test::make_tensor<TestType>({0, 1, 0, 0}),
       e2 = alloy_test::make_tensor<TestType>({0, 0, 1, 0});
  karcher({e0.get(), e1.get()}, out.get());
  const double h = std::sqrt(0.5);
  CHECK(alloy_test::mismatch(values(out), alloy_test::round_to(dt, {h, h, 0, 0}), tol) == "");
  // Three orthogonal unit vectors: by symmetry (1, 1, 1, 0) / sqrt 3.
  karcher({e0.get(), e1.get(), e2.get()}, out.get());
  const double r = 1 / std::sqrt(3.0);
  CHECK(alloy_test::mismatch(values(out), alloy_test::round_to(dt, {r, r, r, 0}), tol) == "");
  // Norms 2 and 4 at 90 degrees: the same direction, scaled by the mean norm 3:
  // (3 sqrt(1/2), 3 sqrt(1/2), 0, 0) = (2.1213.., 2.1213.., 0, 0).
  auto a = alloy_test::make_tensor<TestType>({2, 0, 0, 0}), b = alloy_test::make_tensor<TestType>({0, 4, 0, 0});
  karcher({a.get(), b.get()}, out.get());
  CHECK(alloy_test::mismatch(values(out), alloy_test::round_to(dt, {3 * h, 3 * h, 0, 0}), tol) == "");
}

TEST_CASE("karcher: weights (3, 1) on a quarter circle give the weighted mean angle", "[methods][karcher]") {
  // On a circle the Karcher mean of points within a half circle is the weighted mean of their
  // angles: (3 * 0 + 1 * 90) / 4 = 22.5 degrees. The first guess (3/4, 1/4) normalised is at
  // atan(1/3) = 18.43 degrees; one step adds 3/4 (0 - 18.43) + 1/4 (90 - 18.43) = 4.07
  // degrees, landing on 22.5; the next step's |T| is below tol.
  std::vector<double> e0{1, 0}, e1{0, 1}, out(2);
  karcher({e0, e1}, out, {.weights = {3, 1}});
  CHECK(std::abs(out[0] - std::cos(pi / 8)) < 1e-12);
  CHECK(std::abs(out[1] - std::sin(pi / 8)) < 1e-12);
  // No iteration: the first guess, at 18.43 degrees.
  karcher({e0, e1}, out, {.weights = {3, 1}, .max_iter = 0});
  CHECK(std::abs(std::atan2(out[1], out[0]) - std::atan(1.0 / 3)) < 1e-12);
  // Equal weights (the default, mergekit's 1/N): 45 degrees.
  karcher({e0, e1}, out);
  CHECK(std::abs(std::atan2(out[1], out[0]) - pi / 4) < 1e-12);
}

TEMPLATE_LIST_TEST_CASE("karcher: identical models return that model", "[methods][karcher]", scalars) {
  const auto x = from<TestType>(alloy_test::random_values(1001, 3));
  std::vector<TestType> out(x.size());
  karcher({x, x}, out);
  // theta = 0 < tol: no step; scale = |x|, c = |x| * (1/2) / |x| per copy, up to rounding of
  // the double coefficients (exact in float and 16-bit outputs).
  CHECK(alloy_test::mismatch(values(out), values(x), alloy_test::tolerance_for(dtype_of<TestType>, 1)) == "");
}

TEST_CASE("karcher: degenerate inputs", "[methods][karcher]") {
  std::vector<float> out(2);
  // Antipodal, equal weights: the first guess is 0, so u = e0; model 1 is antipodal to it
  // (log map undefined) and skipped: the result is e0 times the mean norm 1.
  std::vector<float> a{1, 0}, na{-1, 0};
  karcher({a, na}, out);
  CHECK(out == std::vector<float>{1, 0});
  // A zero model: not valid (norm <= tol), so it does not steer; its norm 0 still counts:
  // x0 = 0, x1 = (3, 4): u = (0.6, 0.8), scale (0 + 5) / 2: (1.5, 2).
  std::vector<float> zero{0, 0}, x1{3, 4};
  karcher({zero, x1}, out);
  CHECK(out == std::vector<float>{1.5f, 2});
  // Every model zero: zeros (mergekit's zeros_like).
  karcher({zero, zero, zero}, out);
  CHECK(out == std::vector<float>{0, 0});
  // One model: that model.
  std::vector<float> odd{0.1f, -0.3f};
  karcher({odd}, out);
  CHECK(out == odd);
}

TEMPLATE_LIST_TEST_CASE("karcher: agrees with mergekit's iteration on random tensors", "[methods][karcher]", scalars) {
  const dtype dt = dtype_of<TestType>;
  for (std::size_t n : {2u, 7u, 513u, 4099u}) {
    std::vector<std::vector<double>> xs;
    std::vector<std::vector<TestType>> ms;
    for (unsigned i = 0; i < 4; ++i) {
      // Models near a common point (as fine-tuned models are): 1 + small perturbations.
      auto v = alloy_test::random_values(n, 100 * n + i, -0.3, 0.3);
      for (double& x : v) x += 1;
      xs.push_back(alloy_test::round_to(dt, v));
      ms.push_back(from<TestType>(xs.back()));
    }
    std::vector<TestType> out(n);
    karcher(ms, out);
    INFO("n = " << n);
    CHECK(alloy_test::mismatch(values(out), alloy_test::round_to(dt, karcher_ref(xs, {0.25, 0.25, 0.25, 0.25})),
                               {8 * alloy_test::unit_roundoff(dt), 1e-6}) == "");
    karcher(ms, out, {.weights = {1, 2, 3, 4}, .max_iter = 50, .tol = 1e-9});
    CHECK(alloy_test::mismatch(values(out), alloy_test::round_to(dt, karcher_ref(xs, {0.1, 0.2, 0.3, 0.4}, 50, 1e-9)),
                               {8 * alloy_test::unit_roundoff(dt), 1e-6}) == "");
  }
}

TEST_CASE("karcher: identical bits for 1 and 3 threads", "[methods][karcher]") {
  const std::size_t n = 2 * parallel_chunk + 123;
  std::vector<std::vector<bf16>> ms;
  for (unsigned i = 0; i < 3; ++i) ms.push_back(from<bf16>(alloy_test::random_values(n, 2 + i)));
  std::vector<bf16> one(n), three(n);
  karcher(ms, one, {.exec = {1}});
  karcher(ms, three, {.exec = {3}});
  CHECK(std::memcmp(one.data(), three.data(), n * sizeof(bf16)) == 0);
}

TEST_CASE("karcher on whole models", "[methods][karcher]") {
  tensor_set a, b;
  a.add("w", std::vector<fp16>{fp16(2.f), fp16(0.f)}, {2});
  a.add("b", std::vector<fp16>{fp16(0.f)}, {1});
  b.add("b", std::vector<float>{0}, {1});
  b.add("w", std::vector<float>{0, 4}, {2});
  const tensor_set m = karcher({a, b});
  CHECK(m.at("w").type() == dtype::f16);  // the first model's dtype
  // 3 sqrt(1/2) = 2.1213.. rounds to 2.121094 in fp16.
  CHECK(static_cast<float>(m.at("w").values<fp16>()[0]) == static_cast<float>(fp16(3 * std::sqrt(0.5f))));
  CHECK(static_cast<float>(m.at("b").values<fp16>()[0]) == 0.f);  // all-zero tensor: zeros
}

// ---- bad input: one test per case -------------------------------------------------------

TEST_CASE("karcher: no models", "[methods][karcher][errors]") {
  std::vector<std::vector<float>> none;
  std::vector<float> out;
  REQUIRE_THROWS_MATCHES(karcher(none, out), error,
                         Catch::Predicate<error>([](const error& e) { return has_code(e, errc::empty_input); }));
}

TEST_CASE("karcher: weight count mismatch", "[methods][karcher][errors]") {
  std::vector<float> a{1}, b{2}, out(1);
  REQUIRE_THROWS_WITH(karcher({a, b}, out, {.weights = {1}}), Catch::Contains("1 weights for 2 models"));
}

TEST_CASE("karcher: a negative weight", "[methods][karcher][errors]") {
  std::vector<float> a{1}, b{2}, out(1);
  REQUIRE_THROWS_WITH(karcher({a, b}, out, {.weights = {1, -1}}), Catch::Contains("weight of model 1 is -1"));
}

TEST_CASE("karcher: weights summing to zero", "[methods][karcher][errors]") {
  std::vector<float> a{1}, b{2}, out(1);
  REQUIRE_THROWS_WITH(karcher({a, b}, out, {.weights = {0, 0}}), Catch::Contains("the weights sum to 0"));
}

TEST_CASE("karcher: a negative tol", "[methods][karcher][errors]") {
  std::vector<float> a{1}, b{2}, out(1);
  REQUIRE_THROWS_MATCHES(karcher({a, b}, out, {.tol = -1}), error,
                         Catch::Predicate<error>([](const error& e) { return has_code(e, errc::invalid_argument); }));
}

TEST_CASE("karcher: a non-finite tol", "[methods][karcher][errors]") {
  std::vector<float> a{1}, b{2}, out(1);
  REQUIRE_THROWS_MATCHES(karcher({a, b}, out, {.tol = std::numeric_limits<double>::infinity()}), error,
                         Catch::Predicate<error>([](const error& e) { return has_code(e, errc::non_finite); }));
}

TEST_CASE("karcher: Inf in a model", "[methods][karcher][errors]") {
  std::vector<float> a{1, 0}, b{0, -std::numeric_limits<float>::infinity()}, out(2);
  REQUIRE_THROWS_WITH(karcher({a, b}, out), Catch::Contains("model 1 has NaN or Inf"));
}

TEST_CASE("karcher: the output has the wrong size", "[methods][karcher][errors]") {
  std::vector<float> a{1, 0}, b{0, 1}, out(1);
  REQUIRE_THROWS_MATCHES(karcher({a, b}, out), error,
                         Catch::Predicate<error>([](const error& e) { return has_code(e, errc::size_mismatch); }));
}

TEST_CASE("karcher on models: a tensor missing in one model", "[methods][karcher][errors]") {
  tensor_set a, b;
  a.add("step", std::vector<float>{1}, {1});
  b.add("w", std::vector<float>{1}, {1});
  REQUIRE_THROWS_MATCHES(karcher({a, b}), error,
                         Catch::Predicate<error>([](const error& e) { return has_code(e, errc::missing_tensor); }));
}
