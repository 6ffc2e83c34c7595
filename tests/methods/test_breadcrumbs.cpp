#include <alloy/methods/breadcrumbs.hpp>

#include "support/storage_types.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>

using namespace alloy;
using alloy_test::values;

namespace {

bool has_code(const error& e, errc c) { return e.code() == c; }

// The worked example. base = 1 everywhere, models = base + tau; density 0.5 and gamma 0.2
// of 10 entries: target = 5, n_top = 2 (drop the 2 largest |tau|, keep the next 5).
//   tau_A = [ 5, -1, 9,  3, -7,   2, 0.5, -4,   6,  8]
//     |.| descending: 9 (i2), 8 (i9) dropped; 7 (i4), 6 (i8), 5 (i0), 4 (i7), 3 (i3) kept
//     t_A = [5, 0, 0, 3, -7, 0, 0, -4, 6, 0]
//   tau_B = [-2,  6, 1, -8,  3, 0.5,   7, -5, 2.5, -1]
//     8 (i3), 7 (i6) dropped; 6 (i1), 5 (i7), 3 (i4), 2.5 (i8), 2 (i0) kept
//     t_B = [-2, 6, 0, 0, 3, 0, 0, -5, 2.5, 0]
const std::vector<double> base10(10, 1.0);
const std::vector<double> a10{6, 0, 10, 4, -6, 3, 1.5, -3, 7, 9}, b10{-1, 7, 2, -7, 4, 1.5, 8, -4, 3.5, 0};

// Sort-based reference, written independently of the library: rank by |tau| descending,
// equal magnitudes by lower index first; keep ranks [n_top, n_top + target).
std::vector<double> reference_band(const std::vector<double>& tau, double density, double gamma) {
  const std::size_t n = tau.size();
  if (density >= 1) return tau;
  const std::size_t target = static_cast<std::size_t>(density * static_cast<double>(n));
  std::size_t top = static_cast<std::size_t>(gamma * static_cast<double>(n));
  if (top + target > n) top = n - target;
  std::vector<std::size_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](std::size_t x, std::size_t y) { return std::abs(tau[x]) > std::abs(tau[y]); });
  std::vector<double> t(n, 0.0);
  for (std::size_t r = top; r < top + target; ++r) t[order[r]] = tau[order[r]];
  return t;
}

// reference_band over rows of `row` elements.
std::vector<double> reference_rows(const std::vector<double>& tau, std::size_t row, double density, double gamma) {
  std::vector<double> t;
  for (std::size_t s = 0; s < tau.size(); s += row) {
    const auto r = reference_band({tau.begin() + s, tau.begin() + s + row}, density, gamma);
    t.insert(t.end(), r.begin(), r.end());
  }
  return t;
}

}  // namespace

TEMPLATE_LIST_TEST_CASE("breadcrumbs (mergekit): worked example on every storage type", "[methods][breadcrumbs]",
                        alloy_test::storage_types) {
  using namespace alloy_test;
  auto base = make_tensor<TestType>(base10), a = make_tensor<TestType>(a10), b = make_tensor<TestType>(b10);
  auto out = zeros<TestType>(10);
  const breadcrumbs_options o{.density = 0.5, .gamma = 0.2};
  // w = {1, 0.5}: t_A + 0.5 t_B = [4, 3, 0, 3, -5.5, 0, 0, -6.5, 7.25, 0]; + base
  breadcrumbs(base.get(), {a.get(), b.get()}, {1, 0.5}, out.get(), o);
  CHECK(values(out) == std::vector<double>{5, 4, 1, 4, -4.5, 1, 1, -5.5, 8.25, 1});
  // normalize, w = {1, 1}: (t_A + t_B) / 2 = [1.5, 3, 0, 1.5, -2, 0, 0, -4.5, 4.25, 0]; + base
  auto normalized = o;
  normalized.normalize = true;
  breadcrumbs(base.get(), {a.get(), b.get()}, {1, 1}, out.get(), normalized);
  CHECK(values(out) == std::vector<double>{2.5, 4, 1, 2.5, -1, 1, 1, -3.5, 5.25, 1});
  // breadcrumbs_ties, w = {1, 1}: votes 3 +, 6 +, 0, 3 +, -4 -, 0, 0, -9 -, 8.5 +, 0;
  // agreeing: i0 A 5, i1 B 6, i3 A 3, i4 A -7, i7 A + B -9, i8 A + B 8.5; no denominator
  breadcrumbs_ties(base.get(), {a.get(), b.get()}, {1, 1}, out.get(), o);
  CHECK(values(out) == std::vector<double>{6, 7, 1, 4, -6, 1, 1, -8, 9.5, 1});
  // with the sum of agreeing weights as denominator (normalize): i7 -9 / 2, i8 8.5 / 2
  auto divided = o;
  divided.denominator = ties_denominator::weight_sum;
  breadcrumbs_ties(base.get(), {a.get(), b.get()}, {1, 1}, out.get(), divided);
  CHECK(values(out) == std::vector<double>{6, 7, 1, 4, -6, 1, 1, -3.5, 5.25, 1});
}

TEST_CASE("breadcrumbs: exact kept sets with ties at the cuts", "[methods][breadcrumbs]") {
  // |tau| = [3, 5, 5, 1, 5, 3, 3, 4]; rank order (magnitude descending, then index):
  //   i1 5, i2 5, i4 5, i7 4, i0 3, i5 3, i6 3, i3 1
  const std::vector<float> base(8, 0.f), tau{3, -5, 5, 1, -5, 3, -3, 4};
  std::vector<float> out(8);
  // density 0.5, gamma 0.25: n_top 2, target 4: ranks 2..5 = i4, i7, i0, i5. The 5s straddle
  // the outlier cut (i1, i2 dropped, i4 kept); the 3s straddle the bottom cut (i6 dropped).
  breadcrumbs(base, {tau}, {1}, out, {.density = 0.5, .gamma = 0.25});
  CHECK(out == std::vector<float>{3, 0, 0, 0, -5, 3, 0, 4});
  // density 0.75, gamma 0.25: n_top 2, target 6: ranks 2..7: every 3 and the 1 are kept
  breadcrumbs(base, {tau}, {1}, out, {.density = 0.75, .gamma = 0.25});
  CHECK(out == std::vector<float>{3, 0, 0, 1, -5, 3, -3, 4});
  // gamma 0.125: n_top 1 (only i1 of the 5s dropped), target 4: i2, i4, i7, i0
  breadcrumbs(base, {tau}, {1}, out, {.density = 0.5, .gamma = 0.125});
  CHECK(out == std::vector<float>{3, 0, 5, 0, -5, 0, 0, 4});
}

TEST_CASE("breadcrumbs: n_top rounding to 0 keeps the target largest (mergekit zeroes the tensor)",
          "[methods][breadcrumbs]") {
  // n = 5, gamma 0.1: n_top = floor(0.5) = 0; density 0.4: target 2: keep 5 (i0) and 4 (i4).
  // mergekit's magnitude_outliers masks indices[n_bot:-n_top] = indices[3:-0] = indices[3:0],
  // an empty slice, and returns an all-zero task vector: its merge would be the base here.
  const std::vector<float> base(5, 1.f), m{6, 0, 4, 3, 5};  // tau = [5, -1, 3, 2, 4]
  std::vector<float> out(5);
  breadcrumbs(base, {m}, {1}, out, {.density = 0.4, .gamma = 0.1});
  CHECK(out == std::vector<float>{6, 1, 1, 1, 5});
  // the default gamma 0.01 on any tensor under 100 entries is this case
  breadcrumbs(base, {m}, {1}, out, {.density = 0.4});
  CHECK(out == std::vector<float>{6, 1, 1, 1, 5});
}

TEST_CASE("breadcrumbs: the overlap rule and the gamma + density = 1 boundary", "[methods][breadcrumbs]") {
  // mergekit: target = floor(density n), n_top = floor(gamma n); n_top + target > n shrinks
  // n_top to n - target. density 0.75, gamma 0.5, n 4: target 3, n_top 2 -> 1: ranks [1, 4).
  CHECK(detail::breadcrumbs_counts(0.75, 0.5, 4).drop == 1);
  CHECK(detail::breadcrumbs_counts(0.75, 0.5, 4).keep == 4);
  // density 0.9, gamma 0.3, n 10: target 9, n_top 3 -> 1
  CHECK(detail::breadcrumbs_counts(0.9, 0.3, 10).drop == 1);
  CHECK(detail::breadcrumbs_counts(0.9, 0.3, 10).keep == 10);
  // no overlap: density 0.5, gamma 0.25, n 8: ranks [2, 6)
  CHECK(detail::breadcrumbs_counts(0.5, 0.25, 8).drop == 2);
  CHECK(detail::breadcrumbs_counts(0.5, 0.25, 8).keep == 6);
  // The public functions reject gamma + density > 1 (see the errors below), where the rule
  // would apply; at gamma + density = 1 the band reaches the smallest entry exactly:
  // tau = [1, -4, 2, 3], gamma 0.25, density 0.75: drop 4 (i1), keep 3, 2, 1.
  const std::vector<float> base(4, 0.f), tau{1, -4, 2, 3};
  std::vector<float> out(4);
  breadcrumbs(base, {tau}, {1}, out, {.density = 0.75, .gamma = 0.25});
  CHECK(out == std::vector<float>{1, 0, 2, 3});
}

TEST_CASE("breadcrumbs: a density keeping no entry keeps nothing (no error)", "[methods][breadcrumbs]") {
  // n = 5, density 0.1: target floor(0.5) = 0: the task vector is 0 (mergekit returns zeros)
  const std::vector<float> base(5, 1.f), m{6, 0, 4, 3, 5};
  std::vector<float> out(5);
  breadcrumbs(base, {m}, {1}, out, {.density = 0.1, .gamma = 0.0});
  CHECK(out == base);
}

TEST_CASE("breadcrumbs: density 1 is no sparsification (gamma unused) and is task arithmetic",
          "[methods][breadcrumbs]") {
  std::mt19937 gen(1);
  std::normal_distribution<float> dist;
  const std::size_t n = 3001;
  std::vector<float> base(n), a(n), b(n), out(n), expect(n);
  for (std::size_t i = 0; i < n; ++i) base[i] = dist(gen), a[i] = dist(gen), b[i] = dist(gen);
  task_arithmetic(base, {a, b}, {0.3, 0.9}, expect, {.lambda = 0.7});
  breadcrumbs(base, {a, b}, {0.3, 0.9}, out, {.density = 1.0, .gamma = 0.5, .lambda = 0.7});
  CHECK(out == expect);
}

TEST_CASE("breadcrumbs: L1 rescale matches the task vector's L1 norm", "[methods][breadcrumbs]") {
  std::mt19937 gen(2);
  std::normal_distribution<float> dist(0.1f, 1.f);
  const std::size_t n = 10007;
  std::vector<float> base(n, 0.f), tau(n), out(n);
  for (auto& x : tau) x = dist(gen);
  breadcrumbs(base, {tau}, {1}, out, {.density = 0.3, .gamma = 0.05, .rescale = rescale_norm::l1});
  double before = 0, after = 0;
  for (std::size_t i = 0; i < n; ++i) before += std::abs(tau[i]), after += std::abs(out[i]);
  CHECK(after == Approx(before).epsilon(1e-6));
  // exactly floor(0.3 n) entries survive
  CHECK(std::count_if(out.begin(), out.end(), [](float v) { return v != 0; }) == 3002);
}

TEST_CASE("breadcrumbs (paper): per row of the last dimension, 0-d tensors kept", "[methods][breadcrumbs]") {
  // w: tau = [[8, 1, -4, 2], [0.5, -3, 1.5, 0.25]], density 0.5, gamma 0.25.
  //   per row (4 entries: target 2, n_top 1): row 0 drops 8, keeps -4, 2; row 1 drops -3,
  //   keeps 1.5, 0.5 -> [0, 0, -4, 2, 0.5, 0, 1.5, 0]   (the paper's remove-then-keep top-k)
  //   per tensor (8 entries: target 4, n_top 2): drops 8, -4; keeps -3, 2, 1.5, 1
  //   -> [0, 1, 0, 2, 0, -3, 1.5, 0]
  // s: a 0-d tensor, tau = 3: the paper's code leaves it unmasked; per tensor (n = 1,
  //   target 0) it is dropped.
  // b: a 1-D tensor, tau = [2, -6, 1, 4]: one row either way: drop -6, keep 4, 2.
  // lambda 0.5 (the paper's scaling coefficient), base 0.
  tensor_set base, m;
  base.add("w", std::vector<float>(8, 0.f), {2, 4});
  base.add("s", dtype::f32, {});  // 0-d (an empty shape in add(name, values, shape) means "default")
  base.add("b", std::vector<float>(4, 0.f), {4});
  m.add("w", std::vector<float>{8, 1, -4, 2, 0.5, -3, 1.5, 0.25}, {2, 4});
  static_cast<float*>(m.add("s", dtype::f32, {}).data)[0] = 3.f;
  m.add("b", std::vector<float>{2, -6, 1, 4}, {4});
  auto o = breadcrumbs_options::preset(preset::paper);
  o.density = 0.5;
  o.gamma = 0.25;
  o.lambda = 0.5;
  const tensor_set paper = breadcrumbs(base, {m}, {1}, o);
  CHECK(std::vector<float>(paper.at("w").values<float>().begin(), paper.at("w").values<float>().end()) ==
        std::vector<float>{0, 0, -2, 1, 0.25, 0, 0.75, 0});
  CHECK(paper.at("s").values<float>()[0] == 1.5f);
  CHECK(std::vector<float>(paper.at("b").values<float>().begin(), paper.at("b").values<float>().end()) ==
        std::vector<float>{1, 0, 0, 2});
  const tensor_set mk = breadcrumbs(base, {m}, {1}, {.density = 0.5, .gamma = 0.25, .lambda = 0.5});
  CHECK(std::vector<float>(mk.at("w").values<float>().begin(), mk.at("w").values<float>().end()) ==
        std::vector<float>{0, 0.5, 0, 1, 0, -1.5, 0.75, 0});
  CHECK(mk.at("s").values<float>()[0] == 0.f);
  // At tensor level, per_row takes the row length from the options.
  std::vector<float> out(8);
  o.row_length = 4;
  breadcrumbs(std::vector<float>(8, 0.f), {std::vector<float>{8, 1, -4, 2, 0.5, -3, 1.5, 0.25}}, {1}, out, o);
  CHECK(out == std::vector<float>{0, 0, -2, 1, 0.25, 0, 0.75, 0});
}

TEST_CASE("breadcrumbs_ties (paper): a zero vote takes the sign of the whole model's majority",
          "[methods][breadcrumbs]") {
  // rows of 2, density 0.5, gamma 0: each row keeps its larger entry.
  //   tau_A = [[-3, 1], [-2, 1]] -> t_A = [-3, 0, -2, 0]
  //   tau_B = [[1, -2], [2, 0.5]] -> t_B = [0, -2, 2, 0]
  // votes (unweighted): -3, -2, 0, 0: the majority sign is -, so i2 elects - and A's -2 is
  // kept (count 1). merged [-3, -2, -2, 0]. A zero vote electing + keeps B's 2 instead.
  const std::vector<float> base(4, 0.f), a{-3, 1, -2, 1}, b{1, -2, 2, 0.5f};
  std::vector<float> out(4);
  auto o = breadcrumbs_options::preset(preset::paper);
  o.density = 0.5;
  o.gamma = 0;
  o.row_length = 2;
  breadcrumbs_ties(base, {a, b}, {1, 1}, out, o);
  CHECK(out == std::vector<float>{-3, -2, -2, 0});
  o.zero = zero_vote::positive;
  breadcrumbs_ties(base, {a, b}, {1, 1}, out, o);
  CHECK(out == std::vector<float>{-3, -2, 2, 0});
}

TEST_CASE("breadcrumbs: agrees with a sort-based reference on random inputs", "[methods][breadcrumbs]") {
  std::mt19937 gen(42);
  std::uniform_int_distribution<int> small(-6, 6);  // many ties and zeros
  for (int round = 0; round < 60; ++round) {
    const std::size_t row = 1 + gen() % 40, n = row * (1 + gen() % 30), m = 1 + gen() % 3;
    std::vector<double> base(n);
    for (auto& v : base) v = small(gen) * 0.5;
    std::vector<std::vector<double>> models(m, std::vector<double>(n));
    for (auto& mm : models)
      for (std::size_t j = 0; j < n; ++j) mm[j] = base[j] + small(gen) * 0.25;
    std::vector<double> w(m);
    for (auto& x : w) x = small(gen) * 0.5;
    const double density = static_cast<double>(1 + gen() % 10) / 10.0,
                 gamma = static_cast<double>(gen() % 10) / 10.0 * (1 - density);
    for (auto scope : {breadcrumbs_scope::per_tensor, breadcrumbs_scope::per_row}) {
      breadcrumbs_options o;
      o.density = density;
      o.gamma = gamma;
      o.scope = scope;
      o.row_length = row;
      o.lambda = 0.5;
      std::vector<double> out(n), expect(n, 0.0);
      breadcrumbs(base, models, w, out, o);
      for (std::size_t i = 0; i < m; ++i) {
        std::vector<double> tau(n);
        for (std::size_t j = 0; j < n; ++j) tau[j] = models[i][j] - base[j];
        const auto t = scope == breadcrumbs_scope::per_row ? reference_rows(tau, row, density, gamma)
                                                           : reference_band(tau, density, gamma);
        for (std::size_t j = 0; j < n; ++j) expect[j] += w[i] * t[j];
      }
      INFO("round " << round << " n " << n << " row " << row << " density " << density << " gamma " << gamma);
      for (std::size_t j = 0; j < n; ++j) REQUIRE(out[j] == Approx(base[j] + 0.5 * expect[j]).margin(1e-12));
    }
  }
}

TEST_CASE("breadcrumbs: large tensors (every model's cuts in one sampled pass) match the reference",
          "[methods][breadcrumbs]") {
  // 3 * 65536 + 7 float entries: large enough for the sampled one-pass selection; two models
  // with different bands, so four cuts come from one pass.
  const std::size_t n = 3 * 65536 + 7;
  std::mt19937 gen(9);
  std::normal_distribution<float> dist;
  std::vector<float> base(n), a(n), b(n), out(n);
  for (std::size_t i = 0; i < n; ++i) base[i] = dist(gen), a[i] = dist(gen), b[i] = dist(gen);
  breadcrumbs(base, {a, b}, {1, 0.5}, out,
              {.densities = {0.3, 0.6}, .gammas = {0.01, 0.2}, .output = merge_output::delta, .exec = {2}});
  std::vector<double> ta(n), tb(n);
  for (std::size_t i = 0; i < n; ++i) ta[i] = a[i] - base[i], tb[i] = b[i] - base[i];
  const auto ka = reference_band(ta, 0.3, 0.01), kb = reference_band(tb, 0.6, 0.2);
  std::size_t mismatches = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const float expect = static_cast<float>(ka[i]) * 1.0f + static_cast<float>(kb[i]) * 0.5f;
    mismatches += out[i] != expect;
  }
  CHECK(mismatches == 0);
}

TEST_CASE("breadcrumbs: identical bits for any thread count, exact kept set on bf16 ties", "[methods][breadcrumbs]") {
  // 2 * parallel_chunk + 123 bf16 entries: massive ties (bf16 differences take few values),
  // a ranking spanning three work items.
  const std::size_t n = 2 * parallel_chunk + 123;
  std::mt19937 gen(5);
  std::normal_distribution<float> dist;
  std::vector<bf16> base(n), a(n), b(n);
  for (std::size_t i = 0; i < n; ++i) {
    base[i] = bf16(dist(gen));
    a[i] = bf16(static_cast<float>(base[i]) + 0.01f * dist(gen));
    b[i] = bf16(static_cast<float>(base[i]) + 0.01f * dist(gen));
  }
  std::vector<bf16> one(n), three(n);
  const breadcrumbs_options o1{.density = 0.2, .gamma = 0.05, .rescale = rescale_norm::l1, .exec = {1}};
  auto o3 = o1;
  o3.exec = {3};
  breadcrumbs_ties(base, {a, b}, {1, 0.5}, one, o1);
  breadcrumbs_ties(base, {a, b}, {1, 0.5}, three, o3);
  CHECK(std::memcmp(one.data(), three.data(), n * sizeof(bf16)) == 0);
  // The kept set of model 0 against the sort-based reference (task vectors in float).
  std::vector<float> delta(n);
  breadcrumbs(base, {a}, {1}, delta, {.density = 0.2, .gamma = 0.05, .output = merge_output::delta, .exec = {3}});
  std::vector<double> tau(n);
  for (std::size_t i = 0; i < n; ++i) tau[i] = static_cast<float>(a[i]) - static_cast<float>(base[i]);
  const auto expect = reference_band(tau, 0.2, 0.05);
  std::size_t mismatches = 0;
  for (std::size_t i = 0; i < n; ++i) mismatches += delta[i] != static_cast<float>(expect[i]);
  CHECK(mismatches == 0);
}

TEST_CASE("breadcrumbs on whole models: output dtypes and per-tensor rankings", "[methods][breadcrumbs]") {
  tensor_set base, a;
  base.add("x", std::vector<bf16>(4, bf16(0.f)), {4});
  a.add("x", std::vector<bf16>{bf16(1.f), bf16(-8.f), bf16(2.f), bf16(4.f)}, {4});
  // density 0.5, gamma 0.25: drop -8, keep 4, 2
  const tensor_set merged = breadcrumbs(base, {a}, {1}, {.density = 0.5, .gamma = 0.25});
  CHECK(merged.at("x").type() == dtype::bf16);
  const auto v = merged.at("x").values<bf16>();
  CHECK((static_cast<float>(v[0]) == 0 && static_cast<float>(v[1]) == 0 && static_cast<float>(v[2]) == 2 &&
         static_cast<float>(v[3]) == 4));
  CHECK(breadcrumbs_ties(base, {a}, {1}, {.promote_16bit = true}).at("x").type() == dtype::f32);
}

TEST_CASE("breadcrumbs: zero-length tensors", "[methods][breadcrumbs]") {
  std::vector<float> base, a, out;
  breadcrumbs(base, {a}, {1.0}, out, {.density = 0.5});
  breadcrumbs_ties(base, {a}, {1.0}, out, {.density = 0.5, .scope = breadcrumbs_scope::per_row});
  CHECK(out.empty());
}

// ---- bad input: one test per case -------------------------------------------------------

TEST_CASE("breadcrumbs: negative gamma", "[methods][breadcrumbs][errors]") {
  std::vector<float> base{0}, a{1}, out(1);
  REQUIRE_THROWS_MATCHES(breadcrumbs(base, {a}, {1}, out, {.density = 0.5, .gamma = -0.5}), error,
                         Catch::Predicate<error>([](const error& e) {
                           return has_code(e, errc::invalid_argument) &&
                                  std::string(e.what()) == "breadcrumbs: gamma of model 0 is -0.5, below 0";
                         }));
}

TEST_CASE("breadcrumbs: gamma + density above 1", "[methods][breadcrumbs][errors]") {
  std::vector<float> base{0}, a{1}, b{1}, out(1);
  REQUIRE_THROWS_MATCHES(breadcrumbs_ties(base, {a, b}, {1, 1}, out, {.densities = {0.5, 0.75}, .gamma = 0.5}), error,
                         Catch::Predicate<error>([](const error& e) {
                           return has_code(e, errc::invalid_argument) &&
                                  std::string(e.what()).find("gamma 0.5 + density 0.75 of model 1 exceed 1") !=
                                      std::string::npos;
                         }));
}

TEST_CASE("breadcrumbs: density outside (0, 1]", "[methods][breadcrumbs][errors]") {
  std::vector<float> base{0}, a{1}, out(1);
  for (double d : {0.0, -0.5, 1.5}) {
    REQUIRE_THROWS_MATCHES(breadcrumbs(base, {a}, {1}, out, {.density = d, .gamma = 0}), error,
                           Catch::Predicate<error>([](const error& e) {
                             return has_code(e, errc::invalid_argument) &&
                                    std::string(e.what()).find("density of model 0 is") != std::string::npos &&
                                    std::string(e.what()).find("outside (0, 1]") != std::string::npos;
                           }));
  }
}

TEST_CASE("breadcrumbs: non-finite gamma", "[methods][breadcrumbs][errors]") {
  std::vector<float> base{0}, a{1}, out(1);
  REQUIRE_THROWS_MATCHES(
      breadcrumbs(base, {a}, {1}, out, {.density = 0.5, .gamma = std::numeric_limits<double>::quiet_NaN()}), error,
      Catch::Predicate<error>([](const error& e) {
        return has_code(e, errc::non_finite) && std::string(e.what()).find("gamma of model 0") != std::string::npos;
      }));
}

TEST_CASE("breadcrumbs: per-model gamma count mismatch", "[methods][breadcrumbs][errors]") {
  std::vector<float> base{0}, a{1}, b{1}, out(1);
  REQUIRE_THROWS_WITH(breadcrumbs(base, {a, b}, {1, 1}, out, {.density = 0.5, .gammas = {0.1}}),
                      Catch::Contains("1 gamma values for 2 models"));
}

TEST_CASE("breadcrumbs: per-model density count mismatch", "[methods][breadcrumbs][errors]") {
  std::vector<float> base{0}, a{1}, b{1}, out(1);
  REQUIRE_THROWS_WITH(breadcrumbs(base, {a, b}, {1, 1}, out, {.densities = {0.5}}),
                      Catch::Contains("1 density values for 2 models"));
}

TEST_CASE("breadcrumbs: a row length that does not divide the tensor", "[methods][breadcrumbs][errors]") {
  std::vector<float> base(10, 0.f), a(10, 1.f), out(10);
  REQUIRE_THROWS_MATCHES(
      breadcrumbs(base, {a}, {1}, out, {.density = 0.5, .scope = breadcrumbs_scope::per_row, .row_length = 3}), error,
      Catch::Predicate<error>([](const error& e) {
        return has_code(e, errc::invalid_argument) &&
               std::string(e.what()).find("row_length 3 does not divide the tensor's 10 elements") != std::string::npos;
      }));
}

TEST_CASE("breadcrumbs: no peft preset", "[methods][breadcrumbs][errors]") {
  REQUIRE_THROWS_MATCHES(breadcrumbs_options::preset(preset::peft), error,
                         Catch::Predicate<error>([](const error& e) {
                           return has_code(e, errc::invalid_argument) &&
                                  std::string(e.what()).find("peft has no Model Breadcrumbs") != std::string::npos;
                         }));
}

TEST_CASE("breadcrumbs: weight count mismatch", "[methods][breadcrumbs][errors]") {
  std::vector<float> base{0}, a{1}, out(1);
  REQUIRE_THROWS_WITH(breadcrumbs(base, {a}, {1, 1}, out), Catch::Contains("2 weights for 1 models"));
}

TEST_CASE("breadcrumbs: non-finite lambda", "[methods][breadcrumbs][errors]") {
  std::vector<float> base{0}, a{1}, out(1);
  REQUIRE_THROWS_WITH(breadcrumbs_ties(base, {a}, {1}, out, {.lambda = std::numeric_limits<double>::infinity()}),
                      Catch::Contains("lambda is inf"));
}

TEST_CASE("breadcrumbs: shapes differ between models", "[methods][breadcrumbs][errors]") {
  tensor_set base, a;
  base.add("w", std::vector<float>{0, 0, 0, 0}, {2, 2});
  a.add("w", std::vector<float>{0, 0, 0, 0}, {4});
  REQUIRE_THROWS_MATCHES(breadcrumbs(base, {a}, {1}), error,
                         Catch::Predicate<error>([](const error& e) { return has_code(e, errc::shape_mismatch); }));
}

TEST_CASE("breadcrumbs: sizes differ between tensors", "[methods][breadcrumbs][errors]") {
  std::vector<float> base{0, 0}, a{1}, out(2);
  REQUIRE_THROWS_WITH(breadcrumbs_ties(base, {a}, {1}, out), Catch::Contains("model 0 has 1 elements"));
}

TEST_CASE("breadcrumbs: no models", "[methods][breadcrumbs][errors]") {
  std::vector<float> base{0}, out(1);
  std::vector<std::vector<float>> none;
  REQUIRE_THROWS_MATCHES(breadcrumbs(base, none, {}, out), error,
                         Catch::Predicate<error>([](const error& e) { return has_code(e, errc::empty_input); }));
}
