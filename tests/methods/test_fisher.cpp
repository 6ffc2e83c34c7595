#include <alloy/methods/fisher.hpp>
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
std::vector<T> vec(std::initializer_list<double> v) {
  std::vector<T> out;
  for (double x : v) out.push_back(static_cast<T>(static_cast<float>(x)));
  return out;
}
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
std::vector<T> random_vector(std::size_t n, unsigned seed, float lo = -1.f, float hi = 1.f) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<T> v(n);
  for (auto& x : v) x = static_cast<T>(dist(gen));
  return v;
}
using scalars = std::tuple<float, double, bf16, fp16>;
auto code_is(errc c) {
  return Catch::Predicate<error>([c](const error& e) { return e.code() == c; }, "error code");
}

// The reference in double: c normalised to sum 1, F' per the options, num / den or the
// c-weighted average where den == 0.
std::vector<double> reference(const std::vector<std::vector<double>>& th, const std::vector<std::vector<double>>& f,
                              std::vector<double> c, const fisher_options& o) {
  const std::size_t n = th.size();
  if (c.empty()) c.assign(n, 1.0);
  if (o.normalize)
    for (std::size_t i = 0; i < n; ++i) {
      const double norm = alloy_test::l2_norm(f[i]);
      c[i] /= o.epsilon_mode == fisher_epsilon::add ? norm + o.epsilon : norm;
    }
  double total = 0;
  for (double v : c) total += v;
  for (double& v : c) v /= total;
  std::vector<double> out(th[0].size());
  for (std::size_t j = 0; j < out.size(); ++j) {
    double num = 0, den = 0, avg = 0;
    for (std::size_t i = 0; i < n; ++i) {
      double fi = f[i][j];
      if (!o.epsilon_target_only || i == 0)
        fi = o.epsilon_mode == fisher_epsilon::add ? fi + o.epsilon : std::max(fi, o.epsilon);
      num += c[i] * fi * th[i][j];
      den += c[i] * fi;
      avg += c[i] * th[i][j];
    }
    out[j] = den > 0 ? num / den : avg;
  }
  return out;
}
}  // namespace

TEMPLATE_LIST_TEST_CASE("fisher_merge: worked example on every storage type", "[methods][fisher]",
                        alloy_test::storage_types) {
  // theta_0 = {1, 2, 3, 4}, theta_1 = {3, 6, -1, 8}; F_0 = {1, 0, 3, 0}, F_1 = {1, 2, 1, 0};
  // equal coefficients (c = 1/2 each) and epsilon 0, so every value is exact:
  //   element 0: F equal             -> (1*1 + 1*3) / 2          = 2
  //   element 1: only model 1 informs -> (2*6) / 2                = 6
  //   element 2: F = 3 vs 1           -> (3*3 + 1*(-1)) / (3 + 1) = 2
  //   element 3: no Fisher at all     -> den = 0: the average (4 + 8) / 2 = 6
  auto t0 = alloy_test::make_tensor<TestType>({1, 2, 3, 4}), t1 = alloy_test::make_tensor<TestType>({3, 6, -1, 8});
  auto f0 = alloy_test::make_tensor<TestType>({1, 0, 3, 0}), f1 = alloy_test::make_tensor<TestType>({1, 2, 1, 0});
  auto out = alloy_test::zeros<TestType>(4);
  fisher_merge({t0.get(), t1.get()}, {f0.get(), f1.get()}, out.get(), {.epsilon = 0});
  CHECK(values(out) == std::vector<double>{2, 6, 2, 6});
  // Coefficients {3, 1} (c = {3/4, 1/4}):
  //   element 0: (3/4*1 + 1/4*3) / (3/4 + 1/4)     = 1.5
  //   element 1: (1/4*2*6) / (1/4*2)                = 6
  //   element 2: (3/4*3*3 + 1/4*1*(-1)) / (9/4 + 1/4) = (27/4 - 1/4) / (10/4) = 2.6 (rounded)
  //   element 3: 3/4*4 + 1/4*8                      = 5
  fisher_merge({t0.get(), t1.get()}, {f0.get(), f1.get()}, out.get(), {.coefficients = {3, 1}, .epsilon = 0});
  const auto v = values(out);
  CHECK(v[0] == 1.5);
  CHECK(v[1] == 6);
  CHECK(v[2] == Approx(2.6).epsilon(alloy_test::unit_roundoff(alloy_test::dtype_v<TestType>) * 4));
  CHECK(v[3] == 5);
}

TEMPLATE_LIST_TEST_CASE("fisher_merge: every output type from every input type", "[methods][fisher]", scalars) {
  // Models and Fishers stored as TestType, the output as each storage type: {2, 6, 2, 6} as above.
  const auto t0 = vec<TestType>({1, 2, 3, 4}), t1 = vec<TestType>({3, 6, -1, 8});
  const auto f0 = vec<TestType>({1, 0, 3, 0});
  const auto f1 = vec<float>({1, 2, 1, 0});  // mixed Fisher dtypes
  std::vector<float> of(4);
  std::vector<double> od(4);
  std::vector<bf16> ob(4);
  std::vector<fp16> oh(4);
  const fisher_options o{.epsilon = 0};
  fisher_merge({tensor_view(t0), tensor_view(t1)}, {tensor_view(f0), tensor_view(f1)}, of, o);
  fisher_merge({tensor_view(t0), tensor_view(t1)}, {tensor_view(f0), tensor_view(f1)}, od, o);
  fisher_merge({tensor_view(t0), tensor_view(t1)}, {tensor_view(f0), tensor_view(f1)}, ob, o);
  fisher_merge({tensor_view(t0), tensor_view(t1)}, {tensor_view(f0), tensor_view(f1)}, oh, o);
  const std::vector<double> want{2, 6, 2, 6};
  CHECK(dbl(of) == want);
  CHECK(dbl(od) == want);
  CHECK(dbl(ob) == want);
  CHECK(dbl(oh) == want);
}

TEMPLATE_LIST_TEST_CASE("fisher_merge: equal Fisher gives the (weighted) average", "[methods][fisher]", scalars) {
  // F_i = F for every i: sum_i c_i F' theta_i / sum_i c_i F' = sum_i c_i theta_i, up to the
  // rounding of c_i F' (a few units of roundoff of the compute type, then the output rounding).
  const std::size_t n = 1031;
  const auto a = random_vector<TestType>(n, 1), b = random_vector<TestType>(n, 2), c = random_vector<TestType>(n, 3);
  const auto f = random_vector<TestType>(n, 4, 0.f, 2.f);
  std::vector<TestType> out(n), avg(n);
  fisher_merge({tensor_view(a), tensor_view(b), tensor_view(c)}, {tensor_view(f), tensor_view(f), tensor_view(f)}, out);
  uniform_soup({a, b, c}, avg);
  const auto tol = alloy_test::tolerance_for(alloy::dtype_of<TestType>, 2);
  const double compute_u = std::is_same_v<TestType, double> ? 0x1p-53 : 0x1p-24;
  CHECK(alloy_test::mismatch(dbl(out), dbl(avg), {tol.abs + 16 * compute_u, tol.rel + 16 * compute_u}) == "");
  // Weighted: coefficients {1, 2, 1} give (a + 2b + c) / 4.
  fisher_merge({tensor_view(a), tensor_view(b), tensor_view(c)}, {tensor_view(f), tensor_view(f), tensor_view(f)}, out,
               {.coefficients = {1, 2, 1}});
  weighted_average({a, b, c}, {1, 2, 1}, avg);
  CHECK(alloy_test::mismatch(dbl(out), dbl(avg), {tol.abs + 16 * compute_u, tol.rel + 16 * compute_u}) == "");
}

TEST_CASE("fisher_merge: all-zero Fisher gives the average, never NaN", "[methods][fisher]") {
  // theta_0 = {1, -2}, theta_1 = {3, 6}; F = 0 everywhere.
  const std::vector<float> a{1, -2}, b{3, 6}, z{0, 0};
  std::vector<float> out(2);
  // Default (add, eps = 1e-6): F' = eps for both, so (eps/2 * 1 + eps/2 * 3) / eps = 2 and
  // (eps/2 * -2 + eps/2 * 6) / eps = 2, up to float rounding.
  fisher_merge({a, b}, {z, z}, out);
  CHECK(out[0] == Approx(2).epsilon(1e-6));
  CHECK(out[1] == Approx(2).epsilon(1e-6));
  // eps = 0: the denominator is 0 and the result is the coefficient-weighted average exactly.
  fisher_merge({a, b}, {z, z}, out, {.epsilon = 0});
  CHECK(out == std::vector<float>{2, 2});
  fisher_merge({a, b}, {z, z}, out, {.coefficients = {1, 3}, .epsilon = 0});
  CHECK(out == std::vector<float>{2.5f, 4});  // 1/4 a + 3/4 b
  // Floor mode on every model: F' = eps for both, again the average.
  fisher_merge({a, b}, {z, z}, out, {.epsilon_mode = fisher_epsilon::floor});
  CHECK(out[0] == Approx(2).epsilon(1e-6));
  // The authors' favor_target_model: only model 0 is floored, so where no model has Fisher
  // the target wins: (c0 eps * theta_0) / (c0 eps) = theta_0 (exact here: powers of two).
  fisher_merge({a, b}, {z, z}, out, {.epsilon_mode = fisher_epsilon::floor, .epsilon_target_only = true});
  CHECK(out == a);
  // ... unless the target's coefficient is 0: then den = 0 and the weighted average (theta_1).
  fisher_merge({a, b}, {z, z}, out,
               {.coefficients = {0, 1}, .epsilon_mode = fisher_epsilon::floor, .epsilon_target_only = true});
  CHECK(out == b);
}

TEST_CASE("fisher_merge: the authors' preset (floor, favour the target, normalize)", "[methods][fisher]") {
  // theta_0 = {1, 2}, theta_1 = {3, 5}; F_0 = {4, 0} (norm 4), F_1 = {3, 0} (norm 3).
  // normalize: c = {1/4, 1/3} -> {3/7, 4/7}.
  //   element 0: c_0 F_0 = 12/7 = c_1 F_1: the plain average (1 + 3) / 2 = 2 (up to rounding)
  //   element 1: F'_0 = max(0, 1e-6), F'_1 = 0: theta_0 = 2 (the target)
  const std::vector<float> a{1, 2}, b{3, 5}, fa{4, 0}, fb{3, 0};
  std::vector<float> out(2);
  fisher_merge({a, b}, {fa, fb}, out, fisher_options::preset(preset::paper));
  CHECK(out[0] == Approx(2).epsilon(4e-7));
  CHECK(out[1] == 2);
  // FusionBench ({.normalize = true}): c = {1/(4+eps), 1/(3+eps)} ~ {3/7, 4/7}; element 1:
  // F' = eps for both, so the weighted average 3/7 * 2 + 4/7 * 5 = 26/7.
  fisher_merge({a, b}, {fa, fb}, out, {.normalize = true});
  CHECK(out[0] == Approx(2).epsilon(1e-6));
  CHECK(out[1] == Approx(26.0 / 7).epsilon(1e-6));
  // Without normalize (the default): element 0 = (4*1 + 3*3) / 7 = 13/7; element 1 = 3.5.
  fisher_merge({a, b}, {fa, fb}, out);
  CHECK(out[0] == Approx(13.0 / 7).epsilon(1e-6));
  CHECK(out[1] == Approx(3.5).epsilon(1e-6));
}

TEST_CASE("fisher_merge: agrees with a double-precision reference", "[methods][fisher]") {
  const std::size_t n = 4099;
  std::vector<std::vector<double>> th, f;
  std::vector<std::vector<float>> thf, ff;
  for (unsigned i = 0; i < 3; ++i) {
    thf.push_back(random_vector<float>(n, 10 + i));
    ff.push_back(random_vector<float>(n, 20 + i, 0.f, 1.f));
    for (std::size_t j = 0; j < n; j += 7) ff.back()[j] = 0;  // some zeros
    th.push_back(dbl(thf.back()));
    f.push_back(dbl(ff.back()));
  }
  std::vector<fisher_options> cases(4);
  cases[1].normalize = true;
  cases[2] = fisher_options::preset(preset::paper);
  cases[3].epsilon_mode = fisher_epsilon::floor;
  cases[3].coefficients = {0.2, 0.5, 0.3};
  for (const auto& o : cases) {
    std::vector<float> out(n);
    fisher_merge(thf, ff, out, o);
    const auto want = reference(th, f, o.coefficients, o);
    CHECK(alloy_test::mismatch(dbl(out), want, {1e-6, 1e-5}) == "");
  }
  // double inputs compute in double: agreement to double rounding.
  std::vector<std::vector<double>> thd = th, fd = f;
  std::vector<double> out(n);
  fisher_merge(thd, fd, out, cases[1]);
  CHECK(alloy_test::mismatch(out, reference(th, f, {}, cases[1]), {1e-14, 1e-12}) == "");
}

TEST_CASE("fisher_merge: identical bits for any thread count", "[methods][fisher]") {
  const std::size_t n = 2 * parallel_chunk + 4097;
  const auto a = random_vector<bf16>(n, 1), b = random_vector<bf16>(n, 2);
  const auto fa = random_vector<float>(n, 3, 0.f, 1.f);
  const auto fb = random_vector<bf16>(n, 4, 0.f, 1.f);
  std::vector<bf16> one(n), two(n);
  fisher_merge({tensor_view(a), tensor_view(b)}, {tensor_view(fa), tensor_view(fb)}, one, {.normalize = true, .exec = {1}});
  fisher_merge({tensor_view(a), tensor_view(b)}, {tensor_view(fa), tensor_view(fb)}, two, {.normalize = true, .exec = {2}});
  CHECK(std::memcmp(one.data(), two.data(), n * sizeof(bf16)) == 0);
}

TEST_CASE("fisher_merge: in place on model 0, zero-length tensors", "[methods][fisher]") {
  std::vector<float> a{1, 2}, b{3, 6}, f{1, 1};
  fisher_merge({a, b}, {f, f}, a, {.epsilon = 0});
  CHECK(a == std::vector<float>{2, 4});
  std::vector<float> e, out;
  fisher_merge({e, e}, {e, e}, out);
  CHECK(out.empty());
}

TEST_CASE("fisher_merge on whole models", "[methods][fisher]") {
  // Two tensors; the Fisher sets list them in another order (matched by name).
  tensor_set m0, m1, f0, f1;
  m0.add("w", std::vector<bf16>{bf16(1.f), bf16(2.f), bf16(3.f), bf16(4.f)}, {2, 2});
  m0.add("b", std::vector<float>{10}, {1});
  m1.add("w", std::vector<float>{3, 6, -1, 8}, {2, 2});
  m1.add("b", std::vector<float>{20}, {1});
  f0.add("b", std::vector<float>{3}, {1});
  f0.add("w", std::vector<float>{1, 0, 3, 0}, {2, 2});
  f1.add("b", std::vector<double>{1}, {1});
  f1.add("w", std::vector<fp16>{fp16(1.f), fp16(2.f), fp16(1.f), fp16(0.f)}, {2, 2});
  // w: {2, 6, 2, 6} as in the worked example; b: (3*10 + 1*20) / 4 = 12.5.
  const tensor_set merged = fisher_merge({m0, m1}, {f0, f1}, {.epsilon = 0});
  REQUIRE(merged.size() == 2);
  CHECK(merged.begin()->name() == "w");  // model 0's order
  CHECK(merged.at("w").type() == dtype::bf16);
  CHECK(merged.at("w").shape() == std::vector<std::size_t>{2, 2});
  CHECK(values(merged.at("w").values<bf16>()) == std::vector<double>{2, 6, 2, 6});
  CHECK(merged.at("b").values<float>()[0] == 12.5f);
  // normalize over the whole model: ||F_0|| = sqrt(9 + 1 + 9) = sqrt(19), ||F_1|| = sqrt(1 + 1 + 4 + 1) = sqrt(7).
  const tensor_set norm = fisher_merge({m0, m1}, {f0, f1}, {.epsilon = 0, .normalize = true, .out_dtype = dtype::f64});
  const double c0 = 1 / std::sqrt(19.0), c1 = 1 / std::sqrt(7.0);
  CHECK(norm.at("b").values<double>()[0] == Approx((c0 * 3 * 10 + c1 * 1 * 20) / (c0 * 3 + c1 * 1)).epsilon(1e-6));
  // Model sets given as std::map ranges of named tensors work too.
  std::map<std::string, std::vector<float>> a{{"x", {1, 2}}}, b{{"x", {3, 6}}}, fa{{"x", {1, 1}}};
  const std::vector<std::map<std::string, std::vector<float>>> ms{a, b}, fs{fa, fa};
  const tensor_set r = fisher_merge(ms, fs, {.epsilon = 0});
  CHECK(values(r.at("x").values<float>()) == std::vector<double>{2, 4});
}

// ---- fisher_accumulator ---------------------------------------------------------------

TEMPLATE_LIST_TEST_CASE("fisher_accumulator: the mean of squared gradients, any storage type", "[methods][fisher]",
                        alloy_test::storage_types) {
  // g_1 = {1, -2, 0}, g_2 = {3, 0, 0.5}: squares sum to {10, 4, 0.25}; mean over 2 examples
  // = {5, 2, 0.125} (exact in every type).
  auto g1 = alloy_test::make_tensor<TestType>({1, -2, 0}), g2 = alloy_test::make_tensor<TestType>({3, 0, 0.5});
  fisher_accumulator<> acc(3);
  acc.add(g1.get());
  acc.add(g2.get());
  CHECK(acc.count() == 2);
  CHECK(acc.mean() == std::vector<float>{5, 2, 0.125f});
  auto out = alloy_test::zeros<TestType>(3);
  acc.mean(out.get());
  CHECK(values(out) == std::vector<double>{5, 2, 0.125});
  // The same two examples as one back-to-back batch, accumulated in double.
  auto batch = alloy_test::make_tensor<TestType>({1, -2, 0, 3, 0, 0.5});
  fisher_accumulator<double> accd(3);
  accd.add_batch(batch.get(), 2);
  CHECK(accd.count() == 2);
  CHECK(accd.mean() == std::vector<double>{5, 2, 0.125});
  CHECK(std::vector<double>(accd.sum().begin(), accd.sum().end()) == std::vector<double>{10, 4, 0.25});
  accd.reset();
  CHECK(accd.count() == 0);
  CHECK(accd.sum()[0] == 0);
}

TEST_CASE("fisher_accumulator: feeds fisher_merge; identical bits for any thread count", "[methods][fisher]") {
  const std::size_t n = parallel_chunk + 1001;
  fisher_accumulator<float> one(n, {1}), two(n, {2});
  for (unsigned k = 0; k < 5; ++k) {
    const auto g = random_vector<bf16>(n, 100 + k);
    one.add(g);
    two.add(g);
  }
  const auto m1 = one.mean(), m2 = two.mean();
  CHECK(std::memcmp(m1.data(), m2.data(), n * sizeof(float)) == 0);
  const auto a = random_vector<float>(n, 7), b = random_vector<float>(n, 8);
  std::vector<float> out(n);
  fisher_merge({a, b}, {m1, m2}, out);  // equal Fisher: the average, up to rounding
  CHECK(out[5] == Approx((a[5] + b[5]) / 2).margin(1e-6));
}

TEST_CASE("fisher_accumulator: mean before any gradient", "[methods][fisher][errors]") {
  fisher_accumulator<> acc(2);
  REQUIRE_THROWS_MATCHES(acc.mean(), error, code_is(errc::empty_input));
}

TEST_CASE("fisher_accumulator: gradient of the wrong size", "[methods][fisher][errors]") {
  fisher_accumulator<> acc(2);
  REQUIRE_THROWS_WITH(acc.add(std::vector<float>{1, 2, 3}), Catch::Contains("3 gradient elements for 1 examples of 2"));
  REQUIRE_THROWS_MATCHES(acc.add_batch(std::vector<float>{1, 2, 3}, 2), error, code_is(errc::size_mismatch));
  CHECK(acc.count() == 0);
}

TEST_CASE("fisher_accumulator: a non-floating gradient", "[methods][fisher][errors]") {
  fisher_accumulator<> acc(2);
  const int g[2] = {1, 2};
  REQUIRE_THROWS_MATCHES(acc.add(tensor_view(g, 2, dtype::i32)), error, code_is(errc::dtype_mismatch));
}

TEST_CASE("fisher_accumulator: a NaN gradient makes mean() throw", "[methods][fisher][errors]") {
  fisher_accumulator<> acc(3);
  acc.add(std::vector<float>{1, std::numeric_limits<float>::quiet_NaN(), 0});
  REQUIRE_THROWS_WITH(acc.mean(), Catch::Contains("element 1 is nan"));
}

TEST_CASE("fisher_accumulator: mean into an output of the wrong size", "[methods][fisher][errors]") {
  fisher_accumulator<> acc(2);
  acc.add(std::vector<float>{1, 2});
  std::vector<float> out(3);
  REQUIRE_THROWS_MATCHES(acc.mean(out), error, code_is(errc::size_mismatch));
}

// ---- bad input: one test per case -------------------------------------------------------

TEST_CASE("fisher_merge: no models", "[methods][fisher][errors]") {
  std::vector<std::vector<float>> none;
  std::vector<float> out;
  REQUIRE_THROWS_MATCHES(fisher_merge(none, none, out), error, code_is(errc::empty_input));
}

TEST_CASE("fisher_merge: more models than one pass can stream", "[methods][fisher][errors]") {
  std::vector<std::vector<float>> many(128, std::vector<float>{1});
  std::vector<float> out(1);
  REQUIRE_THROWS_WITH(fisher_merge(many, many, out), Catch::Contains("at most 127 models"));
}

TEST_CASE("fisher_merge: Fisher count mismatch", "[methods][fisher][errors]") {
  std::vector<float> a{1}, b{2}, f{1}, out(1);
  REQUIRE_THROWS_WITH(fisher_merge({a, b}, {f}, out), Catch::Contains("1 Fisher diagonal for 2 models"));
}

TEST_CASE("fisher_merge: coefficient count mismatch", "[methods][fisher][errors]") {
  std::vector<float> a{1}, f{1}, out(1);
  REQUIRE_THROWS_WITH(fisher_merge({a}, {f}, out, {.coefficients = {1, 2}}), Catch::Contains("2 coefficients for 1 models"));
}

TEST_CASE("fisher_merge: negative coefficient", "[methods][fisher][errors]") {
  std::vector<float> a{1}, b{2}, f{1}, out(1);
  REQUIRE_THROWS_WITH(fisher_merge({a, b}, {f, f}, out, {.coefficients = {1, -0.5}}),
                      Catch::Contains("coefficient of model 1 is -0.5"));
}

TEST_CASE("fisher_merge: every coefficient zero", "[methods][fisher][errors]") {
  std::vector<float> a{1}, b{2}, f{1}, out(1);
  REQUIRE_THROWS_WITH(fisher_merge({a, b}, {f, f}, out, {.coefficients = {0, 0}}), Catch::Contains("every coefficient is 0"));
}

TEST_CASE("fisher_merge: non-finite coefficient", "[methods][fisher][errors]") {
  std::vector<float> a{1}, f{1}, out(1);
  REQUIRE_THROWS_MATCHES(fisher_merge({a}, {f}, out, {.coefficients = {std::numeric_limits<double>::quiet_NaN()}}), error,
                         code_is(errc::non_finite));
}

TEST_CASE("fisher_merge: negative epsilon", "[methods][fisher][errors]") {
  std::vector<float> a{1}, f{1}, out(1);
  REQUIRE_THROWS_WITH(fisher_merge({a}, {f}, out, {.epsilon = -1e-6}), Catch::Contains("epsilon is -9.99"));
}

TEST_CASE("fisher_merge: infinite epsilon", "[methods][fisher][errors]") {
  std::vector<float> a{1}, f{1}, out(1);
  REQUIRE_THROWS_MATCHES(fisher_merge({a}, {f}, out, {.epsilon = std::numeric_limits<double>::infinity()}), error,
                         code_is(errc::non_finite));
}

TEST_CASE("fisher_merge: a negative Fisher value", "[methods][fisher][errors]") {
  std::vector<float> a{1, 1, 1}, f{1, 1, 1}, g{0, 2, -0.5}, out(3, 7.f);
  REQUIRE_THROWS_WITH(fisher_merge({a, a}, {f, g}, out),
                      Catch::Contains("the Fisher of model 1 is -0.5 at element 2") && Catch::Contains(">= 0"));
  CHECK(out == std::vector<float>(3, 7.f));  // nothing written
}

TEST_CASE("fisher_merge: a NaN Fisher value", "[methods][fisher][errors]") {
  std::vector<float> a{1, 1}, f{std::numeric_limits<float>::quiet_NaN(), 1}, out(2);
  REQUIRE_THROWS_MATCHES(fisher_merge({a}, {f}, out), error, code_is(errc::non_finite));
}

TEST_CASE("fisher_merge: an infinite Fisher value in a whole model", "[methods][fisher][errors]") {
  tensor_set m, f;
  m.add("w", std::vector<float>{1, 2}, {2});
  f.add("w", std::vector<float>{1, std::numeric_limits<float>::infinity()}, {2});
  REQUIRE_THROWS_WITH(fisher_merge({m}, {f}), Catch::Contains("is inf at element 1 (tensor 'w')"));
}

TEST_CASE("fisher_merge: normalize by a zero norm in floor mode", "[methods][fisher][errors]") {
  std::vector<float> a{1}, b{2}, f{1}, z{0}, out(1);
  REQUIRE_THROWS_WITH(fisher_merge({a, b}, {f, z}, out, fisher_options::preset(preset::paper)),
                      Catch::Contains("the Fisher of model 1 is 0 everywhere"));
}

TEST_CASE("fisher_merge: Fisher size mismatch", "[methods][fisher][errors]") {
  std::vector<float> a{1, 2}, f{1}, out(2);
  REQUIRE_THROWS_WITH(fisher_merge({a}, {f}, out), Catch::Contains("the Fisher of model 0 has 1 elements, model 0 has 2"));
}

TEST_CASE("fisher_merge: output overlapping a Fisher", "[methods][fisher][errors]") {
  std::vector<float> a{1, 1, 1}, buf{1, 2, 3, 4};
  const std::span<const float> f(buf.data() + 1, 3);
  const std::span<float> out(buf.data(), 3);
  REQUIRE_THROWS_WITH(fisher_merge({tensor_view(a)}, {tensor_view(f)}, out), Catch::Contains("overlaps the Fisher of model 0"));
}

TEST_CASE("fisher_merge: preset mergekit does not exist", "[methods][fisher][errors]") {
  REQUIRE_THROWS_WITH(fisher_options::preset(preset::mergekit), Catch::Contains("mergekit has no Fisher merging"));
}

TEST_CASE("fisher_merge on models: a tensor without a Fisher", "[methods][fisher][errors]") {
  tensor_set m, f;
  m.add("w", std::vector<float>{1}, {1});
  m.add("b", std::vector<float>{1}, {1});
  f.add("w", std::vector<float>{1}, {1});
  REQUIRE_THROWS_MATCHES(fisher_merge({m}, {f}), error, code_is(errc::missing_tensor));
}

TEST_CASE("fisher_merge on models: a Fisher of another shape", "[methods][fisher][errors]") {
  tensor_set m, f;
  m.add("w", std::vector<float>{1, 2}, {2});
  f.add("w", std::vector<float>{1, 2}, {1, 2});
  REQUIRE_THROWS_WITH(fisher_merge({m}, {f}), Catch::Contains("shape [1, 2] in the Fisher of model 0 but [2] in model 0"));
}

TEST_CASE("fisher_merge on models: a non-floating output dtype", "[methods][fisher][errors]") {
  tensor_set m, f;
  m.add("w", std::vector<float>{1}, {1});
  f.add("w", std::vector<float>{1}, {1});
  REQUIRE_THROWS_MATCHES(fisher_merge({m}, {f}, {.out_dtype = dtype::i8}), error, code_is(errc::dtype_mismatch));
}
