#include <alloy/methods/regmean.hpp>
#include <alloy/methods/soup.hpp>

#include "support/storage_types.hpp"

#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <random>

using namespace alloy;
using alloy_test::values;

namespace {
template <class T>
std::vector<double> dbl(const std::vector<T>& v) {
  std::vector<double> out;
  for (const T& x : v) out.push_back(static_cast<double>(static_cast<float>(x)));
  return out;
}
template <>
std::vector<double> dbl(const std::vector<double>& v) {
  return v;
}
template <class T>
std::vector<T> cast(const std::vector<double>& v) {
  std::vector<T> out;
  for (double x : v) out.push_back(static_cast<T>(x));
  return out;
}
using scalars = std::tuple<float, double, bf16, fp16>;
auto code_is(errc c) {
  return Catch::Predicate<error>([c](const error& e) { return e.code() == c; }, "error code");
}

// X^T X / rows of a random [rows, n] X (a well-conditioned Gram for rows >> n).
std::vector<double> random_gram(std::size_t rows, std::size_t n, std::uint64_t seed) {
  const auto x = alloy_test::random_values(rows * n, seed);
  std::vector<double> g(n * n, 0.0);
  for (std::size_t r = 0; r < rows; ++r)
    for (std::size_t a = 0; a < n; ++a)
      for (std::size_t b = 0; b < n; ++b) g[a * n + b] += x[r * n + a] * x[r * n + b];
  for (double& v : g) v /= static_cast<double>(rows);
  return g;
}

// RegMean in double by Gaussian elimination: W [m, n] = B S^-1 with S = sum c_i G'_i,
// B = sum c_i W_i G'_i (layout out_in), c normalised.
std::vector<double> reference(const std::vector<std::vector<double>>& w, const std::vector<std::vector<double>>& g,
                              std::size_t n, double alpha, std::vector<double> c = {}) {
  const std::size_t N = w.size(), m = w[0].size() / n;
  if (c.empty()) c.assign(N, 1.0);
  double total = 0;
  for (double v : c) total += v;
  std::vector<double> S(n * n, 0.0), B(m * n, 0.0);
  for (std::size_t i = 0; i < N; ++i) {
    std::vector<double> gp = g[i];
    for (std::size_t a = 0; a < n; ++a)
      for (std::size_t b = 0; b < n; ++b)
        if (a != b) gp[a * n + b] *= alpha;
    for (std::size_t k = 0; k < n * n; ++k) S[k] += c[i] / total * gp[k];
    for (std::size_t o = 0; o < m; ++o)
      for (std::size_t b = 0; b < n; ++b) {
        double acc = 0;
        for (std::size_t a = 0; a < n; ++a) acc += w[i][o * n + a] * gp[a * n + b];
        B[o * n + b] += c[i] / total * acc;
      }
  }
  // Solve S X = B^T (S symmetric): X [n, m]; W = X^T.
  std::vector<double> A = S, X(n * m);
  for (std::size_t o = 0; o < m; ++o)
    for (std::size_t a = 0; a < n; ++a) X[a * m + o] = B[o * n + a];
  for (std::size_t col = 0; col < n; ++col) {
    std::size_t p = col;
    for (std::size_t r = col + 1; r < n; ++r)
      if (std::abs(A[r * n + col]) > std::abs(A[p * n + col])) p = r;
    for (std::size_t k = 0; k < n; ++k) std::swap(A[col * n + k], A[p * n + k]);
    for (std::size_t k = 0; k < m; ++k) std::swap(X[col * m + k], X[p * m + k]);
    for (std::size_t r = col + 1; r < n; ++r) {
      const double f = A[r * n + col] / A[col * n + col];
      for (std::size_t k = col; k < n; ++k) A[r * n + k] -= f * A[col * n + k];
      for (std::size_t k = 0; k < m; ++k) X[r * m + k] -= f * X[col * m + k];
    }
  }
  for (std::size_t col = n; col-- > 0;) {
    for (std::size_t k = 0; k < m; ++k) {
      double v = X[col * m + k];
      for (std::size_t j = col + 1; j < n; ++j) v -= A[col * n + j] * X[j * m + k];
      X[col * m + k] = v / A[col * n + col];
    }
  }
  std::vector<double> W(m * n);
  for (std::size_t o = 0; o < m; ++o)
    for (std::size_t a = 0; a < n; ++a) W[o * n + a] = X[a * m + o];
  return W;
}
}  // namespace

TEMPLATE_LIST_TEST_CASE("regmean: hand-computed 2x2 layer on every storage type", "[methods][regmean]",
                        alloy_test::storage_types) {
  // W_1 = [[1, 0], [2, 2]], W_2 = [[0, 1], [2, 2]] ([out, in] = [2, 2]);
  // G_1 = [[4, 1], [1, 4]], G_2 = [[4, -1], [-1, 4]]; equal coefficients (1/2 each).
  // alpha = 1: S = (G_1 + G_2) / 2 = 4 I (Cholesky factor 2 I: exact), and
  //   row 0: B = ([1, 0] G_1 + [0, 1] G_2) / 2 = ([4, 1] + [-1, 4]) / 2 = [1.5, 2.5] -> W = B / 4 = [0.375, 0.625]
  //   row 1: B = ([2, 2] G_1 + [2, 2] G_2) / 2 = ([10, 10] + [6, 6]) / 2 = [8, 8]    -> W = [2, 2]
  // (the plain average would be [[0.5, 0.5], [2, 2]]: model 1's inputs weigh input 0 and
  // model 2's inputs input 1 differently). Every value is exact in every storage type.
  auto w1 = alloy_test::make_tensor<TestType>({1, 0, 2, 2}), w2 = alloy_test::make_tensor<TestType>({0, 1, 2, 2});
  auto g1 = alloy_test::make_tensor<TestType>({4, 1, 1, 4}), g2 = alloy_test::make_tensor<TestType>({4, -1, -1, 4});
  auto out = alloy_test::zeros<TestType>(4);
  const regmean_report rep = regmean({w1.get(), w2.get()}, {g1.get(), g2.get()}, out.get(), {.alpha = 1});
  CHECK(values(out) == std::vector<double>{0.375, 0.625, 2, 2});
  CHECK(rep.in_features == 2);
  CHECK(rep.out_features == 2);
  CHECK(rep.ridge == 0);
  CHECK(rep.attempts == 1);
  CHECK(rep.rcond == 1);  // S = 4 I
  // alpha = 0.5: G'_1 = [[4, .5], [.5, 4]], G'_2 = [[4, -.5], [-.5, 4]], S = 4 I;
  //   row 0: B = ([4, .5] + [-.5, 4]) / 2 = [1.75, 2.25] -> W = [0.4375, 0.5625]; row 1 stays [2, 2].
  regmean({w1.get(), w2.get()}, {g1.get(), g2.get()}, out.get(), {.alpha = 0.5});
  CHECK(values(out) == std::vector<double>{0.4375, 0.5625, 2, 2});
  // The default alpha = 0.9: row 0: B = ([4, .9] + [-.9, 4]) / 2 = [1.55, 2.45] -> [0.3875, 0.6125].
  regmean({w1.get(), w2.get()}, {g1.get(), g2.get()}, out.get());
  const auto v = values(out);
  const double tol = 4 * alloy_test::unit_roundoff(alloy_test::dtype_v<TestType>);
  CHECK(v[0] == Approx(0.3875).epsilon(tol));
  CHECK(v[1] == Approx(0.6125).epsilon(tol));
  CHECK(v[2] == 2);
  CHECK(v[3] == 2);
  // Conv1D layout ([in, out]): the transposed weights give the transposed result.
  auto t1 = alloy_test::make_tensor<TestType>({1, 2, 0, 2}), t2 = alloy_test::make_tensor<TestType>({0, 2, 1, 2});
  regmean({t1.get(), t2.get()}, {g1.get(), g2.get()}, out.get(), {.alpha = 1, .layout = weight_layout::in_out});
  CHECK(values(out) == std::vector<double>{0.375, 2, 0.625, 2});
  // Coefficients {3, 1} with alpha = 0 (diagonal Grams): S = 4 I; row 0: B = (3 [4, 0] + [0, 4]) / 4
  // = [3, 1] -> [0.75, 0.25]; row 1: (3 [8, 8] + [8, 8]) / 4 = [8, 8] -> [2, 2].
  regmean({w1.get(), w2.get()}, {g1.get(), g2.get()}, out.get(), {.alpha = 0, .coefficients = {3, 1}});
  CHECK(values(out) == std::vector<double>{0.75, 0.25, 2, 2});
}

TEMPLATE_LIST_TEST_CASE("regmean: every output type from every input type", "[methods][regmean]", scalars) {
  const auto w1 = cast<TestType>({1, 0, 2, 2}), w2 = cast<TestType>({0, 1, 2, 2});
  const auto g1 = cast<TestType>({4, 1, 1, 4});
  const auto g2 = cast<float>({4, -1, -1, 4});  // mixed Gram dtypes
  std::vector<float> of(4);
  std::vector<double> od(4);
  std::vector<bf16> ob(4);
  std::vector<fp16> oh(4);
  const regmean_options o{.alpha = 1};
  const std::vector<tensor_view> w{w1, w2}, g{g1, g2};
  regmean(w, g, of, o);
  regmean(w, g, od, o);
  regmean(w, g, ob, o);
  regmean(w, g, oh, o);
  const std::vector<double> want{0.375, 0.625, 2, 2};
  CHECK(dbl(of) == want);
  CHECK(dbl(od) == want);
  CHECK(dbl(ob) == want);
  CHECK(dbl(oh) == want);
}

TEST_CASE("regmean: identical Gram matrices give the (weighted) average", "[methods][regmean]") {
  // W = (sum_i c_i W_i G) (sum_i c_i G)^-1 = sum_i c_i W_i.
  const std::size_t n = 16, m = 8;
  const auto g = cast<float>(random_gram(64, n, 1));
  std::vector<std::vector<float>> w;
  for (unsigned i = 0; i < 3; ++i) w.push_back(cast<float>(alloy_test::random_values(m * n, 10 + i)));
  std::vector<float> out(m * n), avg(m * n);
  const regmean_report rep = regmean(w, std::vector<std::vector<float>>{g, g, g}, out);
  CHECK(rep.ridge == 0);
  uniform_soup(w, avg);
  CHECK(alloy_test::mismatch(dbl(out), dbl(avg), {1e-4, 1e-4}) == "");
  regmean(w, std::vector<std::vector<float>>{g, g, g}, out, {.coefficients = {1, 2, 5}});
  weighted_average(w, {1, 2, 5}, avg);
  CHECK(alloy_test::mismatch(dbl(out), dbl(avg), {1e-4, 1e-4}) == "");
}

TEST_CASE("regmean: one model is that model", "[methods][regmean]") {
  const std::size_t n = 12, m = 5;
  const auto g = random_gram(50, n, 3);
  const auto w = alloy_test::random_values(m * n, 4);
  std::vector<double> out(m * n);
  regmean({tensor_view(w)}, {tensor_view(g)}, out);
  CHECK(alloy_test::mismatch(out, w, {1e-12, 1e-12}) == "");
}

TEST_CASE("regmean: identical models are returned exactly, whatever the Grams", "[methods][regmean]") {
  // The delta form: W = W_0 + D with D S = sum_{i>=1} c_i (W_i - W_0) G'_i = 0.
  const std::size_t n = 10, m = 7;
  const auto w = cast<float>(alloy_test::random_values(m * n, 8));
  const auto g1 = cast<float>(random_gram(30, n, 9)), g2 = cast<float>(random_gram(30, n, 10));
  std::vector<float> out(m * n);
  regmean({w, w}, {g1, g2}, out);
  CHECK(out == w);
}

TEST_CASE("regmean: agrees with a double-precision reference", "[methods][regmean]") {
  const std::size_t n = 24, m = 10;
  std::vector<std::vector<double>> w, g;
  std::vector<std::vector<float>> wf, gf;
  for (unsigned i = 0; i < 3; ++i) {
    g.push_back(alloy_test::round_to(dtype::f32, random_gram(40 + 10 * i, n, 20 + i)));
    w.push_back(alloy_test::round_to(dtype::f32, alloy_test::random_values(m * n, 30 + i)));
    gf.push_back(cast<float>(g.back()));
    wf.push_back(cast<float>(w.back()));
  }
  for (double alpha : {0.0, 0.5, 0.9, 1.0}) {
    const auto want = reference(w, g, n, alpha, {0.2, 0.3, 0.5});
    std::vector<float> out(m * n);
    const auto rep = regmean(wf, gf, out, {.alpha = alpha, .coefficients = {0.2, 0.3, 0.5}});
    CHECK(rep.ridge == 0);
    CHECK(alloy_test::mismatch(dbl(out), want, {1e-4, 1e-3}) == "");
    // compute_dtype f64: the same float inputs solved in double.
    std::vector<float> out64(m * n);
    regmean(wf, gf, out64, {.alpha = alpha, .coefficients = {0.2, 0.3, 0.5}, .compute_dtype = dtype::f64});
    CHECK(alloy_test::mismatch(dbl(out64), want, {1e-6, 1e-6}) == "");
    std::vector<double> outd(m * n);
    regmean(w, g, outd, {.alpha = alpha, .coefficients = {0.2, 0.3, 0.5}});
    CHECK(alloy_test::mismatch(outd, want, {1e-12, 1e-10}) == "");
  }
}

TEMPLATE_LIST_TEST_CASE("regmean: a singular Gram gets a ridge, reported", "[methods][regmean]", scalars) {
  // G_1 = G_2 = [[1, 1], [1, 1]] and alpha = 1: S is singular (Cholesky's second pivot is 0).
  // W_1 = [1, 0], W_2 = [0, 1]: B = [1, 1] = W_avg S, so with the ridge, (S + r I) W^T =
  // B^T + r W_avg^T has the solution W_avg = [0.5, 0.5] for every r > 0.
  const auto w1 = cast<TestType>({1, 0}), w2 = cast<TestType>({0, 1}), g = cast<TestType>({1, 1, 1, 1});
  std::vector<TestType> out(2);
  const regmean_report rep = regmean({tensor_view(w1), tensor_view(w2)}, {tensor_view(g), tensor_view(g)}, out, {.alpha = 1});
  CHECK(rep.attempts >= 2);
  CHECK(rep.ridge > 0);
  CHECK(rep.relative_ridge == Approx(rep.ridge));  // mean(diag S) = 1
  CHECK(rep.rcond >= std::numeric_limits<std::conditional_t<std::is_same_v<TestType, double>, double, float>>::epsilon());
  // float loses digits on the ridged system (cond ~ 2 / r): close to the average, not exact.
  const double tol = std::is_same_v<TestType, double> ? 1e-8 : 0.05;
  CHECK(static_cast<double>(static_cast<float>(out[0])) == Approx(0.5).margin(tol));
  CHECK(static_cast<double>(static_cast<float>(out[1])) == Approx(0.5).margin(tol));
}

TEST_CASE("regmean: all-zero Grams give the average", "[methods][regmean]") {
  // S = 0: mean(diag S) = 0, so the ridge is absolute (1e-6 I) and the solution is W_avg.
  const std::vector<float> w1{1, -2, 3, 4}, w2{3, 6, -1, 0}, z(4, 0.f);
  std::vector<float> out(4);
  const regmean_report rep = regmean({w1, w2}, {z, z}, out);
  CHECK(rep.attempts == 2);
  CHECK(rep.ridge == Approx(1e-6));
  CHECK(rep.relative_ridge == Approx(1e-6));
  const std::vector<double> want{2, 2, 1, 2};
  CHECK(alloy_test::mismatch(dbl(out), want, {1e-6, 1e-6}) == "");
}

TEST_CASE("regmean: an input feature no model's data excites comes out as the average", "[methods][regmean]") {
  // G_1 = [[4, 0], [0, 0]], G_2 = [[1, 0], [0, 0]]: feature 1 is always 0. S = [[2.5, 0], [0, 0]].
  // W_1 = [1, 10], W_2 = [6, 20]: column 0 is RegMean's (4 * 1 + 1 * 6) / 5 = 2 (up to the
  // ridge r ~ 1e-6), column 1 the average (10 + 20) / 2 = 15.
  const std::vector<double> w1{1, 10}, w2{6, 20}, g1{4, 0, 0, 0}, g2{1, 0, 0, 0};
  std::vector<double> out(2);
  const regmean_report rep = regmean({w1, w2}, {g1, g2}, out);
  CHECK(rep.ridge > 0);
  CHECK(out[0] == Approx(2).epsilon(1e-5));
  CHECK(out[1] == Approx(15).epsilon(1e-12));
}

TEST_CASE("regmean: the ridge in the Conv1D layout", "[methods][regmean]") {
  // The example above transposed: W_i is [in, out] = [2, 1]; column 0 of the result is
  // RegMean's 2, column 1 the average 15 (here rows: {2, 15}).
  const std::vector<double> w1{1, 10}, w2{6, 20}, g1{4, 0, 0, 0}, g2{1, 0, 0, 0};
  std::vector<double> out(2);
  const regmean_report rep = regmean({w1, w2}, {g1, g2}, out, {.layout = weight_layout::in_out});
  CHECK(rep.ridge > 0);
  CHECK(rep.out_features == 1);
  CHECK(out[0] == Approx(2).epsilon(1e-5));
  CHECK(out[1] == Approx(15).epsilon(1e-12));
}

TEST_CASE("regmean: an indefinite matrix needs a large ridge, reported", "[methods][regmean]") {
  // [[1, 2], [2, 1]] has eigenvalues 3 and -1: not a Gram matrix. Ridges grow by 10 from
  // 1e-6 until S + r I is positive definite (r > 1): relative_ridge 10 on the 9th attempt.
  const std::vector<double> w1{1, 0}, w2{0, 1}, g{1, 2, 2, 1};
  std::vector<double> out(2);
  const regmean_report rep = regmean({w1, w2}, {g, g}, out, {.alpha = 1});
  CHECK(rep.relative_ridge == Approx(10));
  CHECK(rep.attempts == 9);
}

TEST_CASE("regmean: zero-size layers", "[methods][regmean]") {
  std::vector<float> e, out;
  const regmean_report rep = regmean({e, e}, {e, e}, out);
  CHECK(rep.attempts == 0);
  CHECK(rep.in_features == 0);
  // in = 2, out = 0
  const std::vector<float> g{1, 0, 0, 1};
  CHECK(regmean({e, e}, {g, g}, out).out_features == 0);
}

TEST_CASE("regmean on whole models", "[methods][regmean]") {
  // fc.weight [2, 2] with the worked example's weights and Grams (Grams named by module "fc"),
  // fc.bias and ln.weight without a Gram: averaged.
  tensor_set m1, m2, g1, g2;
  m1.add("fc.weight", std::vector<bf16>{bf16(1.f), bf16(0.f), bf16(2.f), bf16(2.f)}, {2, 2});
  m1.add("fc.bias", std::vector<float>{1, 3}, {2});
  m1.add("ln.weight", std::vector<float>{2, 2}, {2});
  m2.add("ln.weight", std::vector<float>{4, 0}, {2});
  m2.add("fc.bias", std::vector<float>{3, 5}, {2});
  m2.add("fc.weight", std::vector<float>{0, 1, 2, 2}, {2, 2});
  g1.add("fc", std::vector<float>{4, 1, 1, 4}, {2, 2});
  g2.add("fc", std::vector<double>{4, -1, -1, 4}, {2, 2});
  const regmean_result r = regmean({m1, m2}, {g1, g2}, {.alpha = 1});
  REQUIRE(r.merged.size() == 3);
  CHECK(r.merged.begin()->name() == "fc.weight");  // model 0's order
  CHECK(r.merged.at("fc.weight").type() == dtype::bf16);
  CHECK(values(r.merged.at("fc.weight").values<bf16>()) == std::vector<double>{0.375, 0.625, 2, 2});
  CHECK(values(r.merged.at("fc.bias").values<float>()) == std::vector<double>{2, 4});
  CHECK(values(r.merged.at("ln.weight").values<float>()) == std::vector<double>{3, 1});
  REQUIRE(r.layers.size() == 1);
  CHECK(r.layers[0].name == "fc.weight");
  CHECK(r.layers[0].ridge == 0);
  // The Gram may also be named after the weight itself; coefficients weight the averages too.
  tensor_set h1, h2;
  h1.add("fc.weight", std::vector<float>{4, 1, 1, 4}, {2, 2});
  h2.add("fc.weight", std::vector<float>{4, -1, -1, 4}, {2, 2});
  // With coefficients {3, 1} the off-diagonals no longer cancel: S = (3 G_1 + G_2) / 4 =
  // [[4, .5], [.5, 4]], row 0: B = (3 [4, 1] + [-1, 4]) / 4 = [2.75, 1.75],
  // W = B S^-1 = [2.75 * 4 - 1.75 * .5, -2.75 * .5 + 1.75 * 4] / 15.75 = [9/14, 5/14].
  const regmean_result r2 = regmean({m1, m2}, {h1, h2}, {.alpha = 1, .coefficients = {3, 1}, .out_dtype = dtype::f32});
  const auto w = values(r2.merged.at("fc.weight").values<float>());
  CHECK(w[0] == Approx(9.0 / 14).epsilon(1e-6));
  CHECK(w[1] == Approx(5.0 / 14).epsilon(1e-6));
  CHECK(w[2] == Approx(2).epsilon(1e-6));
  CHECK(w[3] == Approx(2).epsilon(1e-6));
  CHECK(values(r2.merged.at("fc.bias").values<float>()) == std::vector<double>{1.5, 3.5});  // (3 b1 + b2) / 4
  // No Grams at all: everything averaged, no layers.
  const tensor_set none;
  const regmean_result r3 = regmean({m1, m2}, {none, none});
  CHECK(r3.layers.empty());
  CHECK(values(r3.merged.at("fc.weight").values<bf16>()) == std::vector<double>{0.5, 0.5, 2, 2});
}

TEST_CASE("regmean on whole models with Conv1D weights", "[methods][regmean]") {
  tensor_set m1, m2, g1, g2;
  m1.add("c_attn.weight", std::vector<float>{1, 2, 0, 2}, {2, 2});  // [in, out]
  m2.add("c_attn.weight", std::vector<float>{0, 2, 1, 2}, {2, 2});
  g1.add("c_attn", std::vector<float>{4, 1, 1, 4}, {2, 2});
  g2.add("c_attn", std::vector<float>{4, -1, -1, 4}, {2, 2});
  const regmean_result r = regmean({m1, m2}, {g1, g2}, {.alpha = 1, .layout = weight_layout::in_out});
  CHECK(values(r.merged.at("c_attn.weight").values<float>()) == std::vector<double>{0.375, 2, 0.625, 2});
}

TEST_CASE("regmean: identical bits for any thread count", "[methods][regmean]") {
  const std::size_t n = 64, m = 48;
  tensor_set a, b, ga, gb;
  a.add("l.weight", cast<bf16>(alloy_test::random_values(m * n, 1)), {m, n});
  b.add("l.weight", cast<bf16>(alloy_test::random_values(m * n, 2)), {m, n});
  a.add("big", cast<float>(alloy_test::random_values(parallel_chunk + 77, 3)), {parallel_chunk + 77});
  b.add("big", cast<float>(alloy_test::random_values(parallel_chunk + 77, 4)), {parallel_chunk + 77});
  ga.add("l", cast<float>(random_gram(100, n, 5)), {n, n});
  gb.add("l", cast<float>(random_gram(100, n, 6)), {n, n});
  const regmean_result one = regmean({a, b}, {ga, gb}, {.exec = {1}});
  const regmean_result two = regmean({a, b}, {ga, gb}, {.exec = {2}});
  for (const auto& e : one.merged)
    CHECK(std::memcmp(e.view().data, two.merged.at(e.name()).view().data, e.bytes()) == 0);
}

// ---- gram_accumulator ----------------------------------------------------------------

TEMPLATE_LIST_TEST_CASE("gram_accumulator: X^T X from batches of any storage type", "[methods][regmean]",
                        alloy_test::storage_types) {
  // X = [[1, 2], [3, 4]]: X^T X = [[1 + 9, 2 + 12], [2 + 12, 4 + 16]] = [[10, 14], [14, 20]];
  // mean over 2 rows = [[5, 7], [7, 10]].
  auto both = alloy_test::make_tensor<TestType>({1, 2, 3, 4});
  auto r1 = alloy_test::make_tensor<TestType>({1, 2}), r2 = alloy_test::make_tensor<TestType>({3, 4});
  gram_accumulator<> acc(2);
  acc.add(both.get());
  CHECK(acc.count() == 2);
  CHECK(acc.sum() == std::vector<float>{10, 14, 14, 20});
  CHECK(acc.mean() == std::vector<float>{5, 7, 7, 10});
  gram_accumulator<double> accd(2);
  accd.add(r1.get());
  accd.add(r2.get());
  CHECK(accd.count() == 2);
  CHECK(accd.mean() == std::vector<double>{5, 7, 7, 10});
  auto out = alloy_test::zeros<TestType>(4);
  accd.mean(out.get());
  CHECK(values(out) == std::vector<double>{5, 7, 7, 10});
  accd.sum(out.get());
  CHECK(values(out) == std::vector<double>{10, 14, 14, 20});
  accd.reset();
  CHECK(accd.count() == 0);
  CHECK(accd.sum() == std::vector<double>(4, 0.0));
}

TEST_CASE("gram_accumulator feeds regmean", "[methods][regmean]") {
  // Model 1 saw inputs along feature 0 only, model 2 along feature 1 only: the merged layer
  // takes column 0 from model 1 and column 1 from model 2 (alpha irrelevant: diagonal Grams).
  gram_accumulator<> a(2), b(2);
  a.add(std::vector<float>{1, 0, 2, 0, -1, 0});  // 3 rows
  b.add(std::vector<bf16>{bf16(0.f), bf16(3.f)});
  const std::vector<float> w1{1, 2, 3, 4}, w2{5, 6, 7, 8};
  std::vector<float> out(4);
  // a.mean() = diag(6 / 3, 0) = diag(2, 0) and b.mean() = diag(0, 9): each alone is singular,
  // S = (diag(2, 0) + diag(0, 9)) / 2 = diag(1, 4.5) is not. B = (W_1 diag(2, 0) + W_2 diag(0, 9)) / 2
  // = [[1, 27], [3, 36]], so W = B S^-1 = [[1, 6], [3, 8]].
  const regmean_report rep = regmean({w1, w2}, {a.mean(), b.mean()}, out);
  CHECK(rep.ridge == 0);
  CHECK(out[0] == Approx(1));
  CHECK(out[1] == Approx(6));
  CHECK(out[2] == Approx(3));
  CHECK(out[3] == Approx(8));
}

TEST_CASE("gram_accumulator: 0 features", "[methods][regmean][errors]") {
  REQUIRE_THROWS_MATCHES(gram_accumulator<>(0), error, code_is(errc::invalid_argument));
}

TEST_CASE("gram_accumulator: activations that are not whole rows", "[methods][regmean][errors]") {
  gram_accumulator<> acc(2);
  REQUIRE_THROWS_WITH(acc.add(std::vector<float>{1, 2, 3}), Catch::Contains("3 activations are not rows of 2 features"));
}

TEST_CASE("gram_accumulator: mean before any row", "[methods][regmean][errors]") {
  gram_accumulator<> acc(2);
  REQUIRE_THROWS_MATCHES(acc.mean(), error, code_is(errc::empty_input));
}

TEST_CASE("gram_accumulator: non-floating activations", "[methods][regmean][errors]") {
  gram_accumulator<> acc(2);
  const int x[2] = {1, 2};
  REQUIRE_THROWS_MATCHES(acc.add(tensor_view(x, 2, dtype::i32)), error, code_is(errc::dtype_mismatch));
}

TEST_CASE("gram_accumulator: output of the wrong size", "[methods][regmean][errors]") {
  gram_accumulator<> acc(2);
  acc.add(std::vector<float>{1, 2});
  std::vector<float> out(3);
  REQUIRE_THROWS_MATCHES(acc.sum(out), error, code_is(errc::size_mismatch));
}

// ---- bad input: one test per case -------------------------------------------------------

namespace {
const std::vector<float> W{1, 0, 2, 2}, G{4, 1, 1, 4};
}

TEST_CASE("regmean: no models", "[methods][regmean][errors]") {
  std::vector<std::vector<float>> none;
  std::vector<float> out;
  REQUIRE_THROWS_MATCHES(regmean(none, none, out), error, code_is(errc::empty_input));
}

TEST_CASE("regmean: Gram count mismatch", "[methods][regmean][errors]") {
  std::vector<float> out(4);
  REQUIRE_THROWS_WITH(regmean({W, W}, {G}, out), Catch::Contains("1 Gram set for 2 models"));
}

TEST_CASE("regmean: coefficient count mismatch", "[methods][regmean][errors]") {
  std::vector<float> out(4);
  REQUIRE_THROWS_WITH(regmean({W}, {G}, out, {.coefficients = {1, 1}}), Catch::Contains("2 coefficients for 1 models"));
}

TEST_CASE("regmean: negative coefficient", "[methods][regmean][errors]") {
  std::vector<float> out(4);
  REQUIRE_THROWS_WITH(regmean({W, W}, {G, G}, out, {.coefficients = {1, -1}}), Catch::Contains("coefficient of model 1 is -1"));
}

TEST_CASE("regmean: every coefficient zero", "[methods][regmean][errors]") {
  std::vector<float> out(4);
  REQUIRE_THROWS_WITH(regmean({W, W}, {G, G}, out, {.coefficients = {0, 0}}), Catch::Contains("every coefficient is 0"));
}

TEST_CASE("regmean: alpha outside [0, 1]", "[methods][regmean][errors]") {
  std::vector<float> out(4);
  REQUIRE_THROWS_WITH(regmean({W}, {G}, out, {.alpha = 1.5}), Catch::Contains("alpha is 1.5; it must be in [0, 1]"));
}

TEST_CASE("regmean: NaN alpha", "[methods][regmean][errors]") {
  std::vector<float> out(4);
  REQUIRE_THROWS_MATCHES(regmean({W}, {G}, out, {.alpha = std::numeric_limits<double>::quiet_NaN()}), error,
                         code_is(errc::non_finite));
}

TEST_CASE("regmean: ridge_initial not positive", "[methods][regmean][errors]") {
  std::vector<float> out(4);
  REQUIRE_THROWS_WITH(regmean({W}, {G}, out, {.ridge_initial = 0}), Catch::Contains("ridge_initial is 0"));
}

TEST_CASE("regmean: ridge_growth not above 1", "[methods][regmean][errors]") {
  std::vector<float> out(4);
  REQUIRE_THROWS_WITH(regmean({W}, {G}, out, {.ridge_growth = 1}), Catch::Contains("ridge_growth is 1"));
}

TEST_CASE("regmean: min_rcond outside [0, 1]", "[methods][regmean][errors]") {
  std::vector<float> out(4);
  REQUIRE_THROWS_WITH(regmean({W}, {G}, out, {.min_rcond = 2.0}), Catch::Contains("min_rcond is 2"));
}

TEST_CASE("regmean: a 16-bit compute dtype", "[methods][regmean][errors]") {
  std::vector<float> out(4);
  REQUIRE_THROWS_MATCHES(regmean({W}, {G}, out, {.compute_dtype = dtype::bf16}), error, code_is(errc::dtype_mismatch));
}

TEST_CASE("regmean: a Gram that is not square", "[methods][regmean][errors]") {
  std::vector<float> g(3, 1.f), out(4);
  REQUIRE_THROWS_WITH(regmean({W}, {g}, out), Catch::Contains("a Gram of 3 elements is not square"));
}

TEST_CASE("regmean: a weight without in_features columns", "[methods][regmean][errors]") {
  std::vector<float> w(3, 1.f), out(3);
  REQUIRE_THROWS_WITH(regmean({w}, {G}, out), Catch::Contains("does not have in_features = 2"));
}

TEST_CASE("regmean: weight size mismatch", "[methods][regmean][errors]") {
  std::vector<float> w(6, 1.f), out(4);
  REQUIRE_THROWS_WITH(regmean({W, w}, {G, G}, out), Catch::Contains("model 1 has 6 elements, model 0 has 4"));
}

TEST_CASE("regmean: Gram size mismatch", "[methods][regmean][errors]") {
  std::vector<float> g(9, 1.f), out(4);
  REQUIRE_THROWS_WITH(regmean({W, W}, {G, g}, out), Catch::Contains("the Gram of model 1 has 9 elements"));
}

TEST_CASE("regmean: a NaN in a Gram", "[methods][regmean][errors]") {
  std::vector<float> g{4, 1, std::numeric_limits<float>::quiet_NaN(), 4}, out(4, 7.f);
  REQUIRE_THROWS_WITH(regmean({W}, {g}, out), Catch::Contains("the Gram of model 0 has nan at (1, 0)"));
  CHECK(out == std::vector<float>(4, 7.f));
}

TEST_CASE("regmean: a negative Gram diagonal", "[methods][regmean][errors]") {
  std::vector<float> g{4, 1, 1, -4}, out(4);
  REQUIRE_THROWS_MATCHES(regmean({W, W}, {G, g}, out), error, code_is(errc::invalid_argument));
}

TEST_CASE("regmean: a system that stays indefinite", "[methods][regmean][errors]") {
  // [[1, 2], [2, 1]] needs a ridge above 1; two ridges (1e-6, 1e-5) are not enough.
  const std::vector<double> w1{1, 0}, g{1, 2, 2, 1};
  std::vector<double> out(2);
  REQUIRE_THROWS_WITH(regmean({w1}, {g}, out, {.alpha = 1, .ridge_attempts = 2}),
                      Catch::Contains("stays singular or indefinite") && Catch::Contains("3 Cholesky attempts"));
}

TEST_CASE("regmean: a NaN in a linear layer's weights", "[methods][regmean][errors]") {
  tensor_set a, b, g;
  a.add("fc.weight", W, {2, 2});
  b.add("fc.weight", std::vector<float>{1, std::numeric_limits<float>::quiet_NaN(), 2, 2}, {2, 2});
  g.add("fc", G, {2, 2});
  REQUIRE_THROWS_WITH(regmean({a, b}, {g, g}), Catch::Contains("the weights of 'fc.weight' hold NaN or Inf"));
}

TEST_CASE("regmean: output overlapping a Gram", "[methods][regmean][errors]") {
  std::vector<float> buf{4, 1, 1, 4, 0};
  const std::span<const float> g(buf.data(), 4);
  const std::span<float> out(buf.data() + 1, 4);
  REQUIRE_THROWS_WITH(regmean({tensor_view(W)}, {tensor_view(g)}, out), Catch::Contains("overlaps the Gram of model 0"));
}

TEST_CASE("regmean on models: a Gram that matches no tensor", "[methods][regmean][errors]") {
  tensor_set m, g;
  m.add("fc.weight", W, {2, 2});
  g.add("proj", G, {2, 2});
  REQUIRE_THROWS_WITH(regmean({m}, {g}), Catch::Contains("the Gram 'proj' matches no tensor"));
}

TEST_CASE("regmean on models: a Gram of the wrong shape", "[methods][regmean][errors]") {
  tensor_set m, g;
  m.add("fc.weight", std::vector<float>(6, 1.f), {3, 2});
  g.add("fc", std::vector<float>(9, 1.f), {3, 3});
  REQUIRE_THROWS_WITH(regmean({m}, {g}), Catch::Contains("has shape [3, 3], but tensor 'fc.weight' of shape [3, 2] needs [2, 2]"));
}

TEST_CASE("regmean on models: a linear weight that is not 2-D", "[methods][regmean][errors]") {
  tensor_set m, g;
  m.add("fc.weight", std::vector<float>(4, 1.f), {4});
  g.add("fc", G, {2, 2});
  REQUIRE_THROWS_MATCHES(regmean({m}, {g}), error, code_is(errc::shape_mismatch));
}

TEST_CASE("regmean on models: two Grams for one tensor", "[methods][regmean][errors]") {
  tensor_set m, g;
  m.add("fc.weight", W, {2, 2});
  g.add("fc", G, {2, 2});
  g.add("fc.weight", G, {2, 2});
  REQUIRE_THROWS_MATCHES(regmean({m}, {g}), error, code_is(errc::duplicate_name));
}

TEST_CASE("regmean on models: a Gram missing in one model", "[methods][regmean][errors]") {
  tensor_set m, g1, g2;
  m.add("fc.weight", W, {2, 2});
  g1.add("fc", G, {2, 2});
  REQUIRE_THROWS_WITH(regmean({m, m}, {g1, g2}), Catch::Contains("the Gram set of model 0 has tensor 'fc' that the Gram set of model 1 lacks"));
  g2.add("other", G, {2, 2});
  REQUIRE_THROWS_MATCHES(regmean({m, m}, {g1, g2}), error, code_is(errc::missing_tensor));
}

TEST_CASE("regmean on models: a non-floating output dtype", "[methods][regmean][errors]") {
  tensor_set m, g;
  m.add("fc.weight", W, {2, 2});
  g.add("fc", G, {2, 2});
  REQUIRE_THROWS_MATCHES(regmean({m}, {g}, {.out_dtype = dtype::i8}), error, code_is(errc::dtype_mismatch));
}
