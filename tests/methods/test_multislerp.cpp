#include <alloy/methods/multislerp.hpp>

#include "support/storage_types.hpp"

#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <limits>

using namespace alloy;
using alloy_test::values;

namespace {
using scalars = std::tuple<float, double, bf16, fp16>;
bool has_code(const error& e, errc c) { return e.code() == c; }

template <class T>
std::vector<T> from(const std::vector<double>& v) {
  std::vector<T> out;
  for (double x : v) out.push_back(alloy_test::to_storage<T>(x));
  return out;
}

// mergekit's multislerp, step by step in double, tangent space included.
std::vector<double> multislerp_ref(const std::vector<std::vector<double>>& xs, std::vector<double> w,
                                   const std::vector<double>* base = nullptr, double eps = 1e-8) {
  const std::size_t n = xs.size(), len = xs[0].size();
  std::vector<std::vector<double>> v = xs;
  if (base)
    for (auto& x : v)
      for (std::size_t e = 0; e < len; ++e) x[e] -= (*base)[e];
  double ws = 0;
  for (double x : w) ws += x;
  for (double& x : w) x /= ws;
  std::vector<double> norms(n), mean(len, 0.0);
  std::vector<std::vector<double>> u(n, std::vector<double>(len));
  for (std::size_t i = 0; i < n; ++i) {
    norms[i] = alloy_test::l2_norm(v[i]);
    for (std::size_t e = 0; e < len; ++e) u[i][e] = v[i][e] / (norms[i] + eps), mean[e] += w[i] * u[i][e];
  }
  const double mn = alloy_test::l2_norm(mean);
  for (double& x : mean) x /= mn;
  std::vector<double> tangent(len, 0.0);
  for (std::size_t i = 0; i < n; ++i) {
    const double d = alloy_test::dot(u[i], mean);
    for (std::size_t e = 0; e < len; ++e) tangent[e] += w[i] * (u[i][e] - d * mean[e]);
  }
  const double tn = alloy_test::l2_norm(tangent) + eps;
  double avg = 0;
  for (std::size_t i = 0; i < n; ++i) avg += norms[i] * w[i];
  std::vector<double> r(len);
  for (std::size_t e = 0; e < len; ++e)
    r[e] = (mean[e] * std::cos(tn) + tangent[e] * (std::sin(tn) / tn)) * avg + (base ? (*base)[e] : 0.0);
  return r;
}
}  // namespace

TEMPLATE_LIST_TEST_CASE("multislerp: worked examples on every storage type", "[methods][multislerp]",
                        alloy_test::storage_types) {
  const dtype dt = alloy_test::dtype_v<TestType>;
  const auto tol = alloy_test::tolerance_for(dt, 2);
  auto out = alloy_test::zeros<TestType>(4);
  // Two orthogonal unit vectors, equal weights: m = (e0 + e1) / 2 (the eps in n_i + eps
  // cancels when the norms are equal), mhat = (e0 + e1) / sqrt 2, mean norm 1: the normalised
  // sum (sqrt(1/2), sqrt(1/2), 0, 0), as SLERP's midpoint.
  auto e0 = alloy_test::make_tensor<TestType>({1, 0, 0, 0}), e1 = alloy_test::make_tensor<TestType>({0, 1, 0, 0});
  multislerp({e0.get(), e1.get()}, {1, 1}, out.get());
  const double h = std::sqrt(0.5);
  CHECK(alloy_test::mismatch(values(out), alloy_test::round_to(dt, {h, h, 0, 0}), tol) == "");
  // Three models (2 e0, 2 e1, 4 e2), weights (1, 1, 2) -> (1/4, 1/4, 1/2): m = (1/4, 1/4, 1/2)
  // up to eps, |m| = sqrt(3/8); mean norm = 2/4 + 2/4 + 4/2 = 3; out = 3 m / |m| =
  // (sqrt 1.5, sqrt 1.5, sqrt 6, 0) = (1.2247.., 1.2247.., 2.4495.., 0). (The weighted
  // average would be (0.5, 0.5, 2, 0).)
  auto a = alloy_test::make_tensor<TestType>({2, 0, 0, 0}), b = alloy_test::make_tensor<TestType>({0, 2, 0, 0}),
       c = alloy_test::make_tensor<TestType>({0, 0, 4, 0});
  // (Unequal norms: eps shifts the result by ~eps / n_i = 5e-9 relative, visible in double.)
  multislerp({a.get(), b.get(), c.get()}, {1, 1, 2}, out.get());
  CHECK(alloy_test::mismatch(values(out), alloy_test::round_to(dt, {std::sqrt(1.5), std::sqrt(1.5), std::sqrt(6.0), 0}),
                             {tol.rel + 1e-8, 0}) == "");
  // With a base (1, 1, 1, 1): the same task vectors e0, e1 give base + (sqrt(1/2), sqrt(1/2), 0, 0).
  auto base = alloy_test::make_tensor<TestType>({1, 1, 1, 1});
  auto f0 = alloy_test::make_tensor<TestType>({2, 1, 1, 1}), f1 = alloy_test::make_tensor<TestType>({1, 2, 1, 1});
  multislerp(base.get(), {f0.get(), f1.get()}, {1, 1}, out.get());
  CHECK(alloy_test::mismatch(values(out), alloy_test::round_to(dt, {1 + h, 1 + h, 1, 1}), tol) == "");
}

TEST_CASE("multislerp: unequal norms at 60 degrees", "[methods][multislerp]") {
  // x0 = (1, 0), x1 = (1, sqrt 3) (norm 2), equal weights: units (1, 0) and (1/2, sqrt(3)/2),
  // m = (3/4, sqrt(3)/4), |m| = sqrt(3)/2, mhat = (sqrt(3)/2, 1/2); mean norm 3/2:
  // out = (3 sqrt(3)/4, 3/4) = (1.299.., 0.75). (SLERP at t = 1/2 gives (1.1547.., 1): it
  // interpolates the raw tensors; multislerp rescales the mean direction to the mean norm.)
  std::vector<double> x0{1, 0}, x1{1, std::sqrt(3.0)}, out(2);
  multislerp({x0, x1}, {1, 1}, out);
  CHECK(alloy_test::mismatch(out, {0.75 * std::sqrt(3.0), 0.75}, {1e-8, 0}) == "");  // eps: ~1e-8 relative
  CHECK(alloy_test::mismatch(out, multislerp_ref({x0, x1}, {1, 1}), {1e-14, 0}) == "");
}

TEST_CASE("multislerp: normalize_weights off scales by the weights' sum", "[methods][multislerp]") {
  // weights (2, 2) on e0, e1 as given: m = 2 (e0 + e1), mean norm 4: out = 4 (e0 + e1) / sqrt 2.
  std::vector<float> e0{1, 0}, e1{0, 1}, out(2);
  multislerp({e0, e1}, {2, 2}, out, {.normalize_weights = false});
  CHECK(std::abs(out[0] - 2 * std::sqrt(2.f)) < 1e-6f);
  CHECK(std::abs(out[1] - 2 * std::sqrt(2.f)) < 1e-6f);
}

TEST_CASE("multislerp: degenerate inputs", "[methods][multislerp]") {
  std::vector<float> out(2);
  // A zero vector among others: its unit vector is 0, its norm 0 counts in the mean norm.
  // x0 = 0, x1 = (3, 4), equal weights: mhat = (0.6, 0.8), mean norm 2.5: out = (1.5, 2).
  std::vector<float> zero{0, 0}, x1{3, 4};
  multislerp({zero, x1}, {1, 1}, out);
  CHECK(out == std::vector<float>{1.5f, 2.f});
  // Two antipodal vectors, equal weights: m = 0, mergekit's two-model fallback, the linear
  // combination 0.5 x0 + 0.5 x1 = 0.
  std::vector<float> a{1, 2}, na{-1, -2};
  multislerp({a, na}, {1, 1}, out);
  CHECK(out == std::vector<float>{0, 0});
  // Three task vectors all zero (a frozen tensor): the base, where mergekit raises.
  std::vector<float> base{1, -2};
  multislerp(base, {base, base, base}, {1, 2, 3}, out);
  CHECK(out == base);
  // One model: that model, exactly (the base is ignored, as in mergekit).
  std::vector<float> odd{0.1f, 0.3f};
  multislerp(base, {odd}, {5}, out);
  CHECK(out == odd);
  multislerp({odd}, {5}, out);
  CHECK(out == odd);
}

TEMPLATE_LIST_TEST_CASE("multislerp: agrees with mergekit's steps (tangent space included)", "[methods][multislerp]",
                        scalars) {
  const dtype dt = dtype_of<TestType>;
  // (Not n = 1: on the 0-sphere {-1, 1} these weights can cancel exactly.)
  for (std::size_t n : {2u, 5u, 513u, 4099u}) {
    std::vector<std::vector<double>> xs;
    for (unsigned i = 0; i < 4; ++i) xs.push_back(alloy_test::round_to(dt, alloy_test::random_values(n, 10 * n + i)));
    const auto base = alloy_test::round_to(dt, alloy_test::random_values(n, 7, -0.5, 0.5));
    const std::vector<double> w{0.4, 0.1, 0.3, 0.2};
    std::vector<TestType> out(n);
    std::vector<std::vector<TestType>> ms;
    for (const auto& x : xs) ms.push_back(from<TestType>(x));
    multislerp(ms, w, out);
    INFO("n = " << n);
    CHECK(alloy_test::mismatch(values(out), alloy_test::round_to(dt, multislerp_ref(xs, w)),
                               {8 * alloy_test::unit_roundoff(dt), 1e-6}) == "");
    multislerp(from<TestType>(base), ms, w, out);
    CHECK(alloy_test::mismatch(values(out), alloy_test::round_to(dt, multislerp_ref(xs, w, &base)),
                               {8 * alloy_test::unit_roundoff(dt), 1e-6}) == "");
  }
}

TEST_CASE("multislerp: identical bits for 1 and 3 threads", "[methods][multislerp]") {
  const std::size_t n = 2 * parallel_chunk + 123;
  const auto base = from<bf16>(alloy_test::random_values(n, 1));
  std::vector<std::vector<bf16>> ms;
  for (unsigned i = 0; i < 3; ++i) ms.push_back(from<bf16>(alloy_test::random_values(n, 2 + i)));
  std::vector<bf16> one(n), three(n);
  multislerp(base, ms, {1, 2, 3}, one, {.exec = {1}});
  multislerp(base, ms, {1, 2, 3}, three, {.exec = {3}});
  CHECK(std::memcmp(one.data(), three.data(), n * sizeof(bf16)) == 0);
}

TEST_CASE("multislerp on whole models", "[methods][multislerp]") {
  tensor_set base, a, b;
  base.add("w", std::vector<bf16>{bf16(1.f), bf16(1.f)}, {2});
  a.add("w", std::vector<float>{2, 1}, {2});
  b.add("w", std::vector<float>{1, 2}, {2});
  const tensor_set m = multislerp(base, {a, b}, {1, 1}, {.out_dtype = dtype::f32});
  const float h = 1 + static_cast<float>(std::sqrt(0.5));
  CHECK(m.at("w").values<float>()[0] == h);
  const tensor_set n = multislerp({a, b}, {1, 1});  // no base: (2, 1) and (1, 2) at 36.87 degrees
  CHECK(n.at("w").type() == dtype::f32);
  // Equal norms sqrt 5: the normalised sum (3, 3) / |(3, 3)| * sqrt 5 = sqrt(5/2) (1, 1).
  CHECK(std::abs(n.at("w").values<float>()[1] - static_cast<float>(std::sqrt(2.5))) < 1e-6f);
}

// ---- bad input: one test per case -------------------------------------------------------

TEST_CASE("multislerp: no models", "[methods][multislerp][errors]") {
  std::vector<std::vector<float>> none;
  std::vector<float> out;
  REQUIRE_THROWS_MATCHES(multislerp(none, {}, out), error,
                         Catch::Predicate<error>([](const error& e) { return has_code(e, errc::empty_input); }));
}

TEST_CASE("multislerp: weight count mismatch", "[methods][multislerp][errors]") {
  std::vector<float> a{1}, b{2}, out(1);
  REQUIRE_THROWS_WITH(multislerp({a, b}, {1, 2, 3}, out), Catch::Contains("3 weights for 2 models"));
}

TEST_CASE("multislerp: non-finite weight", "[methods][multislerp][errors]") {
  std::vector<float> a{1}, b{2}, out(1);
  REQUIRE_THROWS_WITH(multislerp({a, b}, {1, std::numeric_limits<double>::quiet_NaN()}, out),
                      Catch::Contains("weight of model 1 is nan"));
}

TEST_CASE("multislerp: weights summing to zero", "[methods][multislerp][errors]") {
  std::vector<float> a{1}, b{2}, out(1);
  REQUIRE_THROWS_WITH(multislerp({a, b}, {1, -1}, out), Catch::Contains("cannot be normalized"));
}

TEST_CASE("multislerp: epsilon not positive", "[methods][multislerp][errors]") {
  std::vector<float> a{1}, b{2}, out(1);
  REQUIRE_THROWS_MATCHES(multislerp({a, b}, {1, 1}, out, {.epsilon = 0}), error,
                         Catch::Predicate<error>([](const error& e) { return has_code(e, errc::invalid_argument); }));
}

TEST_CASE("multislerp: three vectors whose weighted units cancel", "[methods][multislerp][errors]") {
  // a, -a and b with weights (1, 1, 0): m = 0 with three models (mergekit's ValueError).
  std::vector<float> a{1, 0}, na{-1, 0}, b{0, 1}, out(2);
  REQUIRE_THROWS_MATCHES(multislerp({a, na, b}, {1, 1, 0}, out), error, Catch::Predicate<error>([](const error& e) {
                           return has_code(e, errc::invalid_argument) &&
                                  std::string(e.what()).find("weighted mean of the normalised vectors is zero") !=
                                      std::string::npos;
                         }));
}

TEST_CASE("multislerp: NaN in a model", "[methods][multislerp][errors]") {
  std::vector<float> a{1, 0}, b{std::numeric_limits<float>::quiet_NaN(), 1}, out(2);
  REQUIRE_THROWS_WITH(multislerp({a, b}, {1, 1}, out), Catch::Contains("model 1 has NaN or Inf"));
}

TEST_CASE("multislerp: sizes differ", "[methods][multislerp][errors]") {
  std::vector<float> a{1, 0}, b{1}, out(2);
  REQUIRE_THROWS_MATCHES(multislerp({a, b}, {1, 1}, out), error,
                         Catch::Predicate<error>([](const error& e) { return has_code(e, errc::size_mismatch); }));
}

TEST_CASE("multislerp on models: cancellation names the tensor", "[methods][multislerp][errors]") {
  tensor_set a, na, b;
  a.add("layer.w", std::vector<float>{1, 0}, {2});
  na.add("layer.w", std::vector<float>{-1, 0}, {2});
  b.add("layer.w", std::vector<float>{0, 1}, {2});
  REQUIRE_THROWS_WITH(multislerp({a, na, b}, {1, 1, 0}), Catch::Contains("(tensor 'layer.w')"));
}
