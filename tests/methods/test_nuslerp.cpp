#include <alloy/methods/nuslerp.hpp>

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

// mergekit's nuslerp() on one pair of vectors, in double.
std::vector<double> nuslerp_ref(double t, const std::vector<double>& v0, const std::vector<double>& v1) {
  const double n0 = std::max(alloy_test::l2_norm(v0), 1e-7), n1 = std::max(alloy_test::l2_norm(v1), 1e-7);
  const double c = std::clamp(alloy_test::dot(v0, v1) / (n0 * n1), -1.0, 1.0);
  const double th = std::acos(c);
  double a = 1 - t, b = t;
  if (std::sin(th) >= 1e-6) {
    a = std::sin((1 - t) * th) / std::sin(th);
    b = std::sin(t * th) / std::sin(th);
  }
  std::vector<double> r(v0.size());
  for (std::size_t i = 0; i < r.size(); ++i) r[i] = a * v0[i] + b * v1[i];
  return r;
}

// The reference over a [rows, cols] matrix: per row (row_wise false) or per column.
std::vector<double> nuslerp_matrix_ref(double t, const std::vector<double>& x0, const std::vector<double>& x1,
                                       std::size_t rows, std::size_t cols, bool row_wise) {
  std::vector<double> out(x0.size());
  const std::size_t vectors = row_wise ? cols : rows, len = row_wise ? rows : cols;
  for (std::size_t v = 0; v < vectors; ++v) {
    std::vector<double> a(len), b(len);
    auto at = [&](std::size_t e) { return row_wise ? e * cols + v : v * cols + e; };
    for (std::size_t e = 0; e < len; ++e) a[e] = x0[at(e)], b[e] = x1[at(e)];
    const auto r = nuslerp_ref(t, a, b);
    for (std::size_t e = 0; e < len; ++e) out[at(e)] = r[e];
  }
  return out;
}
}  // namespace

TEMPLATE_LIST_TEST_CASE("nuslerp: worked examples on every storage type", "[methods][nuslerp]", alloy_test::storage_types) {
  const dtype dt = alloy_test::dtype_v<TestType>;
  const auto tol = alloy_test::tolerance_for(dt, 2);
  auto out = alloy_test::zeros<TestType>(4);
  // No base: v0 = (3, 0, 0, 0), v1 = (0, 4, 0, 0), weights (2, 1): t = 1 / 3. Orthogonal, so
  // theta = pi/2: a = sin(pi/3) = sqrt(3)/2, b = sin(pi/6) = 1/2; out = (3 sqrt(3)/2, 2, 0, 0).
  auto v0 = alloy_test::make_tensor<TestType>({3, 0, 0, 0}), v1 = alloy_test::make_tensor<TestType>({0, 4, 0, 0});
  nuslerp({v0.get(), v1.get()}, {2, 1}, out.get());
  CHECK(alloy_test::mismatch(values(out), alloy_test::round_to(dt, {1.5 * std::sqrt(3.0), 2, 0, 0}), tol) == "");
  // With a base (1, 1, 0, 0): models (2, 1, 0, 0) and (1, 2, 0, 0) have task vectors e0, e1;
  // weights (1, 1): t = 1/2, r = (e0 + e1) / sqrt 2; out = (1 + sqrt(1/2), 1 + sqrt(1/2), 0, 0).
  auto base = alloy_test::make_tensor<TestType>({1, 1, 0, 0});
  auto a = alloy_test::make_tensor<TestType>({2, 1, 0, 0}), b = alloy_test::make_tensor<TestType>({1, 2, 0, 0});
  nuslerp(base.get(), {a.get(), b.get()}, {1, 1}, out.get());
  const double h = 1 + std::sqrt(0.5);
  CHECK(alloy_test::mismatch(values(out), alloy_test::round_to(dt, {h, h, 0, 0}), tol) == "");
  // Colinear task vectors (tau1 = 2 tau0 = 2 e0): the linear path; weights (3, 1): t = 1/4,
  // r = 0.75 e0 + 0.25 * 2 e0 = 1.25 e0: out = (2.25, 1, 0, 0), exact.
  auto c = alloy_test::make_tensor<TestType>({3, 1, 0, 0});
  nuslerp(base.get(), {a.get(), c.get()}, {3, 1}, out.get());
  CHECK(values(out) == std::vector<double>{2.25, 1, 0, 0});
}

TEMPLATE_LIST_TEST_CASE("nuslerp: rows and columns of a 2 x 2 matrix", "[methods][nuslerp]", scalars) {
  const dtype dt = dtype_of<TestType>;
  const auto tol = alloy_test::tolerance_for(dt, 4);
  // x0 = [[1, 0], [2, 0]], x1 = [[0, 1], [4, 0]], weights (1, 1): t = 1/2.
  const auto x0 = from<TestType>({1, 0, 2, 0}), x1 = from<TestType>({0, 1, 4, 0});
  std::vector<TestType> out(4);
  // Rows (the last dim): (1, 0) vs (0, 1) are orthogonal: (sqrt(1/2), sqrt(1/2)); (2, 0) vs
  // (4, 0) are parallel: (3, 0).
  nuslerp({x0, x1}, {1, 1}, out, {.flatten = false, .shape = {2, 2}});
  const double h = std::sqrt(0.5);
  CHECK(alloy_test::mismatch(values(out), alloy_test::round_to(dt, {h, h, 3, 0}), tol) == "");
  // Columns (row_wise, dim 0): column 1 is (0, 0) vs (1, 0): a zero vector, cos = 0, so
  // a = b = sin(pi/4) = sqrt(1/2): (sqrt(1/2), 0). Column 0 is (1, 2) vs (0, 4):
  // cos = 8 / (sqrt 5 * 4) = 2/sqrt 5, and at t = 1/2 a = b = sin(theta/2) / sin(theta) =
  // 1 / (2 cos(theta/2)) = 1 / (2 sqrt((1 + 2/sqrt 5) / 2)) = 0.51374..; the column is
  // a (1, 2) + a (0, 4) = (a, 6a) = (0.51374.., 3.08246..).
  nuslerp({x0, x1}, {1, 1}, out, {.flatten = false, .row_wise = true, .shape = {2, 2}});
  const double ac = 1 / (2 * std::sqrt((1 + 2 / std::sqrt(5.0)) / 2));
  CHECK(alloy_test::mismatch(values(out), alloy_test::round_to(dt, {ac, h, 6 * ac, 0}), tol) == "");
  // Flattened (the default): one vector of 4; cos = 8 / (sqrt 5 * sqrt 17).
  nuslerp({x0, x1}, {1, 1}, out, {.shape = {2, 2}});
  CHECK(alloy_test::mismatch(values(out), alloy_test::round_to(dt, nuslerp_ref(0.5, {1, 0, 2, 0}, {0, 1, 4, 0})), tol) ==
        "");
}

TEST_CASE("nuslerp: the base's shape gives the rows (xtensor)", "[methods][nuslerp]") {
  xt::xtensor<float, 2> base = xt::zeros<float>({2, 2});
  xt::xtensor<float, 2> x0 = {{1, 0}, {2, 0}}, x1 = {{0, 1}, {4, 0}}, out = xt::zeros<float>({2, 2});
  nuslerp(base, {tensor_view(x0), tensor_view(x1)}, {1, 1}, out, {.flatten = false});
  CHECK(out(1, 0) == 3.f);  // the parallel row
  CHECK(out(1, 1) == 0.f);
}

TEST_CASE("nuslerp: degenerate task vectors", "[methods][nuslerp]") {
  std::vector<float> base{1, 1}, out(2);
  // Antiparallel (tau0 = (1, 0), tau1 = (-2, 0)): linear, t = 1/2: base + 0.5 tau0 + 0.5 tau1
  // = base + (-0.5, 0) = (0.5, 1).
  std::vector<float> a{2, 1}, b{-1, 1};
  nuslerp(base, {a, b}, {1, 1}, out);
  CHECK(out == std::vector<float>{0.5f, 1});
  // Both task vectors zero: cos = 0, the sine path, r = 0: the base.
  nuslerp(base, {base, base}, {1, 1}, out);
  CHECK(out == base);
  // Weights summing to 0: t = 1/2 (mergekit's guard), not a division by zero.
  // tau0 = (1, 0), tau2 = (0, 2): orthogonal, a = b = sin(pi/4), out = base + s (1, 0) + s (0, 2).
  std::vector<float> c{1, 3};
  nuslerp(base, {a, c}, {1, -1}, out);
  const float s = static_cast<float>(std::sqrt(0.5));
  CHECK(out[0] == 1 + s);
  CHECK(std::abs(out[1] - (1 + 2 * s)) < 1e-6f);
}

TEMPLATE_LIST_TEST_CASE("nuslerp: agrees with the reference on long rows and on columns", "[methods][nuslerp]", scalars) {
  const dtype dt = dtype_of<TestType>;
  const alloy_test::tolerance tol{8 * alloy_test::unit_roundoff(dt), 1e-6};
  // Rows of 300000 (longer than parallel_chunk: summed in pieces).
  {
    const std::size_t rows = 2, cols = 300000;
    const auto a = alloy_test::round_to(dt, alloy_test::random_values(rows * cols, 1));
    const auto b = alloy_test::round_to(dt, alloy_test::random_values(rows * cols, 2));
    std::vector<TestType> out(rows * cols);
    nuslerp({from<TestType>(a), from<TestType>(b)}, {1, 2}, out, {.flatten = false, .shape = {rows, cols}});
    CHECK(alloy_test::mismatch(values(out), alloy_test::round_to(dt, nuslerp_matrix_ref(2.0 / 3, a, b, rows, cols, false)),
                               tol) == "");
  }
  // Columns of a [3000, 300] matrix (two blocks of columns), and short rows.
  {
    const std::size_t rows = 3000, cols = 300;
    const auto a = alloy_test::round_to(dt, alloy_test::random_values(rows * cols, 3));
    const auto b = alloy_test::round_to(dt, alloy_test::random_values(rows * cols, 4));
    std::vector<TestType> out(rows * cols);
    for (bool row_wise : {true, false}) {
      nuslerp({from<TestType>(a), from<TestType>(b)}, {1, 3}, out,
              {.flatten = false, .row_wise = row_wise, .shape = {rows, cols}});
      INFO("row_wise = " << row_wise);
      CHECK(alloy_test::mismatch(values(out), alloy_test::round_to(dt, nuslerp_matrix_ref(0.75, a, b, rows, cols, row_wise)),
                                 tol) == "");
    }
  }
}

TEST_CASE("nuslerp: identical bits for 1 and 3 threads", "[methods][nuslerp]") {
  {
    const std::size_t n = 2 * parallel_chunk + 123;
    const auto base = from<bf16>(alloy_test::random_values(n, 1)), a = from<bf16>(alloy_test::random_values(n, 2)),
               b = from<bf16>(alloy_test::random_values(n, 3));
    std::vector<bf16> one(n), three(n);
    nuslerp(base, {a, b}, {1, 2}, one, {.exec = {1}});
    nuslerp(base, {a, b}, {1, 2}, three, {.exec = {3}});
    CHECK(std::memcmp(one.data(), three.data(), n * sizeof(bf16)) == 0);
  }
  const std::size_t rows = 1031, cols = 509;  // 524779 > 2 * parallel_chunk elements
  const auto a = from<float>(alloy_test::random_values(rows * cols, 4)), b = from<float>(alloy_test::random_values(rows * cols, 5));
  for (bool row_wise : {false, true}) {
    std::vector<float> one(rows * cols), three(rows * cols);
    const nuslerp_options o1{.flatten = false, .row_wise = row_wise, .shape = {rows, cols}, .exec = {1}};
    nuslerp_options o3 = o1;
    o3.exec = {3};
    nuslerp({a, b}, {1, 1}, one, o1);
    nuslerp({a, b}, {1, 1}, three, o3);
    CHECK(std::memcmp(one.data(), three.data(), one.size() * sizeof(float)) == 0);
  }
}

TEST_CASE("nuslerp on whole models, with and without a base", "[methods][nuslerp]") {
  tensor_set base, a, b;
  base.add("w", std::vector<float>{0, 0, 0, 0}, {2, 2});
  a.add("w", std::vector<bf16>{bf16(1.f), bf16(0.f), bf16(2.f), bf16(0.f)}, {2, 2});
  b.add("w", std::vector<float>{0, 1, 4, 0}, {2, 2});
  // Rows, as in the 2 x 2 example: (sqrt(1/2), sqrt(1/2), 3, 0); the base's dtype (F32).
  const tensor_set m = nuslerp(base, {a, b}, {1, 1}, {.flatten = false});
  CHECK(m.at("w").type() == dtype::f32);
  CHECK(m.at("w").values<float>()[2] == 3.f);
  CHECK(m.at("w").values<float>()[0] == static_cast<float>(std::sqrt(0.5)));
  // Without a base: the first model's dtype (BF16).
  const tensor_set n = nuslerp({a, b}, {1, 1}, {.flatten = false});
  CHECK(n.at("w").type() == dtype::bf16);
  CHECK(static_cast<float>(n.at("w").values<bf16>()[2]) == 3.f);
}

// ---- bad input: one test per case -------------------------------------------------------

TEST_CASE("nuslerp: three models", "[methods][nuslerp][errors]") {
  std::vector<float> a{1}, out(1);
  REQUIRE_THROWS_WITH(nuslerp({a, a, a}, {1, 1, 1}, out), Catch::Contains("at most 2 models per merge, got 3"));
}

TEST_CASE("nuslerp: one model", "[methods][nuslerp][errors]") {
  std::vector<float> a{1}, out(1);
  REQUIRE_THROWS_MATCHES(nuslerp({a}, {1}, out), error,
                         Catch::Predicate<error>([](const error& e) { return has_code(e, errc::empty_input); }));
}

TEST_CASE("nuslerp: weight count mismatch", "[methods][nuslerp][errors]") {
  std::vector<float> a{1}, b{2}, out(1);
  REQUIRE_THROWS_WITH(nuslerp({a, b}, {1}, out), Catch::Contains("1 weights for 2 models"));
}

TEST_CASE("nuslerp: non-finite weight", "[methods][nuslerp][errors]") {
  std::vector<float> a{1}, b{2}, out(1);
  REQUIRE_THROWS_MATCHES(nuslerp({a, b}, {1, std::numeric_limits<double>::infinity()}, out), error,
                         Catch::Predicate<error>([](const error& e) { return has_code(e, errc::non_finite); }));
}

TEST_CASE("nuslerp: a shape option that does not hold the tensor", "[methods][nuslerp][errors]") {
  std::vector<float> a{1, 2, 3}, b{2, 1, 0}, out(3);
  REQUIRE_THROWS_WITH(nuslerp({a, b}, {1, 1}, out, {.flatten = false, .shape = {2, 2}}),
                      Catch::Contains("the shape option [2, 2] holds 4 elements, the tensors have 3"));
}

TEST_CASE("nuslerp: Inf in a model", "[methods][nuslerp][errors]") {
  std::vector<float> base{0, 0}, a{1, 0}, b{std::numeric_limits<float>::infinity(), 1}, out(2);
  REQUIRE_THROWS_WITH(nuslerp(base, {a, b}, {1, 1}, out), Catch::Contains("model 1's task vector (model minus base) has NaN or Inf"));
}

TEST_CASE("nuslerp: base size mismatch", "[methods][nuslerp][errors]") {
  std::vector<float> base{0}, a{1, 0}, b{0, 1}, out(2);
  REQUIRE_THROWS_WITH(nuslerp(base, {a, b}, {1, 1}, out), Catch::Contains("model 0 has 2 elements, the base model has 1"));
}

TEST_CASE("nuslerp on models: a tensor the base lacks", "[methods][nuslerp][errors]") {
  tensor_set base, a, b;
  base.add("v", std::vector<float>{0}, {1});
  a.add("w", std::vector<float>{1}, {1});
  b.add("w", std::vector<float>{1}, {1});
  REQUIRE_THROWS_MATCHES(nuslerp(base, {a, b}, {1, 1}), error,
                         Catch::Predicate<error>([](const error& e) { return has_code(e, errc::missing_tensor); }));
}
