#include <alloy/methods/model_stock.hpp>

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

// Model Stock in double over rows of `cols` (cols = n: the whole tensor), mergekit's rules.
std::vector<double> stock_ref(const std::vector<double>& base, const std::vector<std::vector<double>>& ms, std::size_t cols,
                              bool angles = false) {
  const std::size_t n = ms.size(), len = base.size();
  std::vector<double> out(len);
  for (std::size_t r = 0; r * cols < len; ++r) {
    std::vector<std::vector<double>> tau(n, std::vector<double>(cols));
    for (std::size_t i = 0; i < n; ++i)
      for (std::size_t c = 0; c < cols; ++c) tau[i][c] = ms[i][r * cols + c] - base[r * cols + c];
    double sum = 0, pairs = 0;
    for (std::size_t i = 0; i < n; ++i)
      for (std::size_t j = i + 1; j < n; ++j, ++pairs) {
        const double cs = std::clamp(
            alloy_test::dot(tau[i], tau[j]) / std::max(alloy_test::l2_norm(tau[i]) * alloy_test::l2_norm(tau[j]), 1e-6),
            -1.0, 1.0);
        sum += angles ? std::acos(cs) : cs;
      }
    const double cs = angles ? std::cos(sum / pairs) : sum / pairs;
    const double t = static_cast<double>(n) * cs / (1 + static_cast<double>(n - 1) * cs);
    for (std::size_t c = 0; c < cols; ++c) {
      double avg = 0;
      for (std::size_t i = 0; i < n; ++i) avg += ms[i][r * cols + c];
      out[r * cols + c] = t * (avg / static_cast<double>(n)) + (1 - t) * base[r * cols + c];
    }
  }
  return out;
}
}  // namespace

TEMPLATE_LIST_TEST_CASE("model_stock: worked examples on every storage type", "[methods][model_stock]",
                        alloy_test::storage_types) {
  const dtype dt = alloy_test::dtype_v<TestType>;
  auto out = alloy_test::zeros<TestType>(4);
  auto base = alloy_test::make_tensor<TestType>({1, 1, 1, 1});
  {
    // Orthogonal task vectors (1, 0, 0, 0) and (0, 2, 0, 0): cos = 0, t = 0: the base, exactly.
    auto a = alloy_test::make_tensor<TestType>({2, 1, 1, 1}), b = alloy_test::make_tensor<TestType>({1, 3, 1, 1});
    model_stock(base.get(), {a.get(), b.get()}, out.get());
    CHECK(values(out) == std::vector<double>{1, 1, 1, 1});
  }
  {
    // Identical models, task vector (3, 4, 0, 0): cos = 25 / (5 * 5) = 1, t = 2 / 2 = 1: the model.
    auto a = alloy_test::make_tensor<TestType>({4, 5, 1, 1});
    model_stock(base.get(), {a.get(), a.get()}, out.get());
    CHECK(values(out) == std::vector<double>{4, 5, 1, 1});
  }
  {
    // Task vectors (3, 4, 0, 0) and (5, 0, 0, 0): cos = 15 / 25 = 0.6, t = 2 (0.6) / 1.6 = 0.75.
    // Models (4, 5, 1, 1) and (6, 1, 1, 1), average (5, 3, 1, 1);
    // out = 0.75 (5, 3, 1, 1) + 0.25 (1, 1, 1, 1) = (4, 2.5, 1, 1).
    auto a = alloy_test::make_tensor<TestType>({4, 5, 1, 1}), b = alloy_test::make_tensor<TestType>({6, 1, 1, 1});
    model_stock(base.get(), {a.get(), b.get()}, out.get());
    CHECK(alloy_test::mismatch(values(out), {4, 2.5, 1, 1}, alloy_test::tolerance_for(dt, 2)) == "");
  }
}

TEST_CASE("model_stock: three models, mean of cosines (mergekit) and of angles (paper)", "[methods][model_stock]") {
  // base 0; task vectors e0, e1, (e0 + e1): pairwise cosines 0, sqrt(1/2), sqrt(1/2).
  std::vector<double> base{0, 0}, a{1, 0}, b{0, 1}, c{1, 1}, out(2);
  // mergekit: cos = sqrt(2) / 3, t = 3 cos / (1 + 2 cos) = 3 sqrt 2 / (3 + 2 sqrt 2) = 9 sqrt 2 - 12
  // = 0.72792..; the average is (2/3, 2/3).
  model_stock(base, {a, b, c}, out);
  const double t = 9 * std::sqrt(2.0) - 12;
  CHECK(alloy_test::mismatch(out, {t * 2 / 3, t * 2 / 3}, {1e-14, 0}) == "");
  // paper: the mean angle (pi/2 + pi/4 + pi/4) / 3 = pi/3, cos = 1/2, t = 1.5 / (2 + 1e-8) ~ 0.75:
  // (1/2, 1/2) (to 1e-8).
  model_stock(base, {a, b, c}, out, model_stock_options::preset(preset::paper));
  CHECK(alloy_test::mismatch(out, {0.5, 0.5}, {1e-8, 0}) == "");
}

TEST_CASE("model_stock: filter_wise gives each row its own t", "[methods][model_stock]") {
  // base 0 as [2, 2]; models [[1, 0], [3, 4]] and [[0, 1], [5, 0]].
  std::vector<float> base{0, 0, 0, 0}, a{1, 0, 3, 4}, b{0, 1, 5, 0}, out(4);
  // Rows: row 0 orthogonal, t = 0: (0, 0); row 1 cos = 15 / 25 = 0.6, t = 0.75, average (4, 2): (3, 1.5).
  model_stock(base, {a, b}, out, {.filter_wise = true, .shape = {2, 2}});
  CHECK(out == std::vector<float>{0, 0, 3, 1.5});
  // Flattened: cos = 15 / (sqrt 26 sqrt 26) = 15/26, t = (30/26) / (41/26) = 30/41;
  // out = 30/41 * (0.5, 0.5, 4, 2) = (15, 15, 120, 60) / 41.
  model_stock(base, {a, b}, out);
  CHECK(alloy_test::mismatch(values(out), {15.0 / 41, 15.0 / 41, 120.0 / 41, 60.0 / 41}, {2e-7, 0}) == "");
  // The base's shape gives the rows when it has one.
  xt::xtensor<float, 2> xb = xt::zeros<float>({2, 2});
  model_stock(xb, {a, b}, out, {.filter_wise = true});
  CHECK(out == std::vector<float>{0, 0, 3, 1.5});
}

TEST_CASE("model_stock: degenerate geometry is never NaN", "[methods][model_stock]") {
  std::vector<float> base{1, 2}, out(2);
  // Antiparallel task vectors (1, 0) and (-2, 0): cos = -1, the pole of t (1 + cos = 0): the base.
  std::vector<float> a{2, 2}, b{-1, 2};
  model_stock(base, {a, b}, out);
  CHECK(out == base);
  model_stock(base, {a, b}, out, model_stock_options::preset(preset::paper));
  CHECK(out == base);
  // Three task vectors at 120 degrees (they sum to 0): mean cos = -1/2 = -1/(N - 1): the pole.
  std::vector<float> c{1 - 0.5f, 2 + std::sqrt(3.f) / 2}, d{1 - 0.5f, 2 - std::sqrt(3.f) / 2}, e{2, 2};
  model_stock(base, {e, c, d}, out);
  CHECK(out == base);
  // A model equal to the base (zero task vector): cos = 0 against it, t = 0: the base.
  model_stock(base, {base, a}, out);
  CHECK(out == base);
  // Every task vector zero: the base.
  model_stock(base, {base, base, base}, out);
  CHECK(out == base);
  // Mean of angles below the pole: a, -a, b, -b give angles pi, pi and four of pi/2, mean
  // 2 pi / 3, cos = -1/2, t = 4 (-1/2) / (1 - 3/2 + 1e-8) = 4 (to 1e-7): 4 avg - 3 base, with
  // avg = base here: the base again (finite, the formula's value).
  std::vector<float> na{0, 2}, f{1, 3}, nf{1, 1};
  model_stock(base, {a, na, f, nf}, out, model_stock_options::preset(preset::paper));
  CHECK(alloy_test::mismatch(values(out), {1, 2}, {1e-6, 0}) == "");
}

TEMPLATE_LIST_TEST_CASE("model_stock: agrees with a double reference (flat and filter_wise)", "[methods][model_stock]",
                        scalars) {
  const dtype dt = dtype_of<TestType>;
  const std::size_t rows = 300, cols = 1001;  // odd rows: SIMD batches straddle rows
  const auto base = alloy_test::round_to(dt, alloy_test::random_values(rows * cols, 1));
  std::vector<std::vector<double>> ms;
  std::vector<std::vector<TestType>> stored;
  for (unsigned i = 0; i < 3; ++i) {
    // Fine-tuned models: the base plus a shared and a private part, so cos is around 1/2.
    const auto shared = alloy_test::random_values(rows * cols, 50, -0.1, 0.1);
    const auto own = alloy_test::random_values(rows * cols, 60 + i, -0.1, 0.1);
    std::vector<double> m(rows * cols);
    for (std::size_t k = 0; k < m.size(); ++k) m[k] = base[k] + shared[k] + own[k];
    ms.push_back(alloy_test::round_to(dt, m));
    stored.push_back(from<TestType>(ms.back()));
  }
  const auto b = from<TestType>(base);
  std::vector<TestType> out(rows * cols);
  const alloy_test::tolerance tol{8 * alloy_test::unit_roundoff(dt), 1e-6};
  model_stock(b, stored, out);
  CHECK(alloy_test::mismatch(values(out), alloy_test::round_to(dt, stock_ref(base, ms, rows * cols)), tol) == "");
  model_stock(b, stored, out, {.filter_wise = true, .shape = {rows, cols}});
  CHECK(alloy_test::mismatch(values(out), alloy_test::round_to(dt, stock_ref(base, ms, cols)), tol) == "");
  // Rows of 91, shorter than a reduction tile (several rows per tile).
  model_stock(b, stored, out, {.filter_wise = true, .shape = {rows * cols / 91, 91}});
  CHECK(alloy_test::mismatch(values(out), alloy_test::round_to(dt, stock_ref(base, ms, 91)), tol) == "");
  model_stock(b, stored, out, {.average = stock_average::angles});
  CHECK(alloy_test::mismatch(values(out), alloy_test::round_to(dt, stock_ref(base, ms, rows * cols, true)), tol) == "");
}

TEST_CASE("model_stock: identical bits for 1 and 3 threads", "[methods][model_stock]") {
  const std::size_t n = 2 * parallel_chunk + 123;
  const auto base = from<bf16>(alloy_test::random_values(n, 1));
  std::vector<std::vector<bf16>> ms;
  for (unsigned i = 0; i < 3; ++i) ms.push_back(from<bf16>(alloy_test::random_values(n, 2 + i)));
  std::vector<bf16> one(n), three(n);
  model_stock(base, ms, one, {.exec = {1}});
  model_stock(base, ms, three, {.exec = {3}});
  CHECK(std::memcmp(one.data(), three.data(), n * sizeof(bf16)) == 0);
  // filter_wise, rows of 1031 (not a multiple of any SIMD width): 509 rows.
  const std::size_t rows = 509, cols = 1031;
  const auto fb = from<float>(alloy_test::random_values(rows * cols, 5));
  std::vector<std::vector<float>> fm;
  for (unsigned i = 0; i < 2; ++i) fm.push_back(from<float>(alloy_test::random_values(rows * cols, 6 + i)));
  std::vector<float> f1(rows * cols), f3(rows * cols);
  model_stock(fb, fm, f1, {.filter_wise = true, .shape = {rows, cols}, .exec = {1}});
  model_stock(fb, fm, f3, {.filter_wise = true, .shape = {rows, cols}, .exec = {3}});
  CHECK(std::memcmp(f1.data(), f3.data(), f1.size() * sizeof(float)) == 0);
}

TEST_CASE("model_stock on whole models", "[methods][model_stock]") {
  tensor_set base, a, b;
  base.add("w", std::vector<bf16>(4, bf16(0.f)), {2, 2});
  base.add("bias", std::vector<bf16>{bf16(1.f), bf16(1.f)}, {2});
  a.add("w", std::vector<float>{1, 0, 3, 4}, {2, 2});
  a.add("bias", std::vector<float>{2, 1}, {2});
  b.add("bias", std::vector<float>{1, 3}, {2});
  b.add("w", std::vector<float>{0, 1, 5, 0}, {2, 2});
  const tensor_set m = model_stock(base, {a, b}, {.filter_wise = true});
  CHECK(m.at("w").type() == dtype::bf16);  // the base's dtype
  std::vector<float> w;
  for (bf16 x : m.at("w").values<bf16>()) w.push_back(static_cast<float>(x));
  CHECK(w == std::vector<float>{0, 0, 3, 1.5});
  // The 1-D bias is one row: task vectors (1, 0), (0, 2) are orthogonal: the base.
  CHECK(static_cast<float>(m.at("bias").values<bf16>()[1]) == 1.f);
}

TEST_CASE("model_stock: preset(peft) throws, since peft has no Model Stock", "[methods][model_stock][errors]") {
  REQUIRE_THROWS_MATCHES(model_stock_options::preset(preset::peft), error,
                         Catch::Predicate<error>([](const error& e) { return has_code(e, errc::invalid_argument); }));
}

// ---- bad input: one test per case -------------------------------------------------------

TEST_CASE("model_stock: one model", "[methods][model_stock][errors]") {
  std::vector<float> base{0}, a{1}, out(1);
  REQUIRE_THROWS_MATCHES(model_stock(base, {a}, out), error, Catch::Predicate<error>([](const error& e) {
                           return has_code(e, errc::empty_input) &&
                                  std::string(e.what()).find("needs at least 2 models, got 1") != std::string::npos;
                         }));
}

TEST_CASE("model_stock: a negative epsilon", "[methods][model_stock][errors]") {
  std::vector<float> base{0}, a{1}, b{2}, out(1);
  REQUIRE_THROWS_WITH(model_stock(base, {a, b}, out, {.epsilon = -1}), Catch::Contains("epsilon = -1 is negative"));
}

TEST_CASE("model_stock: guard clamp with epsilon 0", "[methods][model_stock][errors]") {
  std::vector<float> base{0}, a{1}, b{2}, out(1);
  REQUIRE_THROWS_MATCHES(model_stock(base, {a, b}, out, {.epsilon = 0}), error,
                         Catch::Predicate<error>([](const error& e) { return has_code(e, errc::invalid_argument); }));
}

TEST_CASE("model_stock: a non-finite ratio_epsilon", "[methods][model_stock][errors]") {
  std::vector<float> base{0}, a{1}, b{2}, out(1);
  REQUIRE_THROWS_MATCHES(model_stock(base, {a, b}, out, {.ratio_epsilon = std::numeric_limits<double>::quiet_NaN()}),
                         error, Catch::Predicate<error>([](const error& e) { return has_code(e, errc::non_finite); }));
}

TEST_CASE("model_stock: NaN in the base", "[methods][model_stock][errors]") {
  std::vector<float> base{0, std::numeric_limits<float>::quiet_NaN()}, a{1, 0}, b{2, 0}, out(2);
  REQUIRE_THROWS_WITH(model_stock(base, {a, b}, out), Catch::Contains("model 0's task vector (model minus base) has NaN or Inf"));
}

TEST_CASE("model_stock: a shape option that does not hold the tensor", "[methods][model_stock][errors]") {
  std::vector<float> base{0, 0, 0}, a{1, 0, 0}, b{0, 1, 0}, out(3);
  REQUIRE_THROWS_MATCHES(model_stock(base, {a, b}, out, {.filter_wise = true, .shape = {2, 2}}), error,
                         Catch::Predicate<error>([](const error& e) { return has_code(e, errc::shape_mismatch); }));
}

TEST_CASE("model_stock: a model of another size", "[methods][model_stock][errors]") {
  std::vector<float> base{0, 0}, a{1, 0}, b{0, 1, 0}, out(2);
  REQUIRE_THROWS_WITH(model_stock(base, {a, b}, out), Catch::Contains("model 1 has 3 elements, the base model has 2"));
}

TEST_CASE("model_stock on models: shapes differ", "[methods][model_stock][errors]") {
  tensor_set base, a, b;
  base.add("w", std::vector<float>{0, 0}, {2});
  a.add("w", std::vector<float>{1, 0}, {2});
  b.add("w", std::vector<float>{0, 1}, {1, 2});
  REQUIRE_THROWS_MATCHES(model_stock(base, {a, b}), error,
                         Catch::Predicate<error>([](const error& e) { return has_code(e, errc::shape_mismatch); }));
}
