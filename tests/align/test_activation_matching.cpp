// Activation matching: streamed statistics against two-pass references, recovery of a known
// permutation from a network's activations, errors.
#include <alloy/adapters/xtensor.hpp>
#include <alloy/align/activation_matching.hpp>
#include <alloy/align/apply.hpp>

#include "support/reference.hpp"

#include <catch2/catch.hpp>

#include <xtensor/xadapt.hpp>
#include <xtensor/xtensor.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <string>
#include <vector>

using namespace alloy;
using namespace alloy::align;

namespace {

template <class F>
std::string error_text(F&& f) {
  try {
    f();
  } catch (const error& e) {
    return e.what();
  }
  return "(no error)";
}
template <class F>
errc error_code(F&& f) {
  try {
    f();
  } catch (const error& e) {
    return e.code();
  }
  FAIL("no alloy::error thrown");
  return errc::invalid_argument;
}

std::vector<std::size_t> random_perm(std::size_t n, std::uint64_t seed) {
  std::vector<std::size_t> p(n);
  std::iota(p.begin(), p.end(), std::size_t{0});
  const auto r = alloy_test::random_values(n, seed, 0, 1);
  for (std::size_t i = n; i > 1; --i) std::swap(p[i - 1], p[static_cast<std::size_t>(r[i - 1] * static_cast<double>(i))]);
  return p;
}

// Columns of z (rows x n) in the order p: out[:, i] = z[:, p[i]].
std::vector<float> permute_columns(const std::vector<float>& z, std::size_t n, const std::vector<std::size_t>& p) {
  std::vector<float> out(z.size());
  for (std::size_t r = 0; r < z.size() / n; ++r)
    for (std::size_t i = 0; i < n; ++i) out[r * n + i] = z[r * n + p[i]];
  return out;
}

// Two-pass references in double.
std::vector<double> reference_correlation(const std::vector<float>& a, const std::vector<float>& b, std::size_t n) {
  const std::size_t rows = a.size() / n;
  std::vector<double> ma(n, 0), mb(n, 0);
  for (std::size_t r = 0; r < rows; ++r)
    for (std::size_t j = 0; j < n; ++j) ma[j] += a[r * n + j] / double(rows), mb[j] += b[r * n + j] / double(rows);
  std::vector<double> out(n * n);
  for (std::size_t i = 0; i < n; ++i)
    for (std::size_t j = 0; j < n; ++j) {
      double c = 0, va = 0, vb = 0;
      for (std::size_t r = 0; r < rows; ++r) {
        const double x = a[r * n + i] - ma[i], y = b[r * n + j] - mb[j];
        c += x * y, va += x * x, vb += y * y;
      }
      out[i * n + j] = (va > 0 && vb > 0) ? c / std::sqrt(va * vb) : 0.0;
    }
  return out;
}
std::vector<double> reference_inner(const std::vector<float>& a, const std::vector<float>& b, std::size_t n) {
  const std::size_t rows = a.size() / n;
  std::vector<double> out(n * n, 0);
  for (std::size_t i = 0; i < n; ++i)
    for (std::size_t j = 0; j < n; ++j) {
      for (std::size_t r = 0; r < rows; ++r) out[i * n + j] += double(a[r * n + i]) * double(b[r * n + j]);
      out[i * n + j] /= double(rows);
    }
  return out;
}

std::vector<float> floats(std::size_t n, std::uint64_t seed, double lo = -1, double hi = 1) {
  const auto v = alloy_test::random_values(n, seed, lo, hi);
  return {v.begin(), v.end()};
}

void check_close(const std::vector<double>& got, const std::vector<double>& want, double tol) {
  REQUIRE(got.size() == want.size());
  for (std::size_t i = 0; i < got.size(); ++i) REQUIRE(std::abs(got[i] - want[i]) <= tol);
}

}  // namespace

TEST_CASE("activation_matcher: streamed statistics equal the two-pass ones", "[align][activation_matching]") {
  const std::size_t n = 7, rows = 53;
  // Offsets far from 0 exercise the centring (a one-pass sum of products would cancel).
  auto a = floats(rows * n, 1, 100, 101), b = floats(rows * n, 2, -50, -49);
  for (std::size_t r = 0; r < rows; ++r) b[r * n + 3] = a[r * n + 5] - 150.f;  // a correlated pair
  for (const auto stat : {activation_statistic::correlation, activation_statistic::inner_product}) {
    activation_matcher whole({stat}), split({stat});
    whole.add("P", a, b, n);
    // batches of 1, 10, 20, 22 rows
    std::size_t r0 = 0;
    for (const std::size_t len : {1, 10, 20, 22}) {
      split.add("P", matrix_ref<const float>{a.data() + r0 * n, len, n, n}, matrix_ref<const float>{b.data() + r0 * n, len, n, n});
      r0 += len;
    }
    REQUIRE(r0 == rows);
    CHECK(split.samples("P") == rows);
    CHECK(split.units("P") == n);
    const auto want = stat == activation_statistic::correlation ? reference_correlation(a, b, n) : reference_inner(a, b, n);
    check_close(whole.statistic("P"), want, stat == activation_statistic::correlation ? 1e-9 : 1e-9 * 5000);
    check_close(split.statistic("P"), want, stat == activation_statistic::correlation ? 1e-9 : 1e-9 * 5000);
    if (stat == activation_statistic::correlation) CHECK(whole.statistic("P")[5 * n + 3] == Approx(1.0).epsilon(1e-9));
  }
}

TEST_CASE("activation_matcher: a permuted copy's activations give the inverse permutation", "[align][activation_matching]") {
  const std::size_t n = 40, rows = 64;
  const auto za = floats(rows * n, 3);
  const auto q = random_perm(n, 4);
  const auto zb = permute_columns(za, n, q);  // B's unit i is A's unit q[i]
  for (const auto stat : {activation_statistic::correlation, activation_statistic::inner_product}) {
    activation_matcher m({stat});
    for (std::size_t r = 0; r < rows; r += 16)
      m.add("P0", matrix_ref<const float>{za.data() + r * n, 16, n, n}, matrix_ref<const float>{zb.data() + r * n, 16, n, n});
    const auto res = m.solve();
    CHECK(res.perms.at("P0") == inverse_permutation(q));
    if (stat == activation_statistic::correlation) {
      CHECK(res.score.at("P0") == Approx(double(n)).epsilon(1e-9));
      CHECK(res.identity_score.at("P0") < 0.5 * double(n));
    }
  }
}

TEST_CASE("activation matching aligns an MLP from its hidden activations", "[align][activation_matching]") {
  // A: 6 -> 24 -> 16 -> 3 with ReLU; B = A with its hidden units permuted.
  const permutation_spec spec = mlp_permutation_spec({"layers.0", "layers.2", "layers.4"});
  tensor_set a;
  a.add("layers.0.weight", floats(24 * 6, 10), {24, 6});
  a.add("layers.0.bias", floats(24, 11), {24});
  a.add("layers.2.weight", floats(16 * 24, 12), {16, 24});
  a.add("layers.2.bias", floats(16, 13), {16});
  a.add("layers.4.weight", floats(3 * 16, 14), {3, 16});
  a.add("layers.4.bias", floats(3, 15), {3});
  const permutation_map q{{"P0", random_perm(24, 20)}, {"P1", random_perm(16, 21)}};
  const tensor_set b = apply_permutations(spec, a, q);
  auto hidden = [](const tensor_set& m, const std::vector<float>& x, std::size_t rows, const char* layer, std::size_t in,
                   std::size_t out) {
    const auto w = m.at(std::string(layer) + ".weight").values<float>();
    const auto bias = m.at(std::string(layer) + ".bias").values<float>();
    std::vector<float> h(rows * out);
    for (std::size_t r = 0; r < rows; ++r)
      for (std::size_t o = 0; o < out; ++o) {
        float s = bias[o];
        for (std::size_t i = 0; i < in; ++i) s += w[o * in + i] * x[r * in + i];
        h[r * out + o] = std::max(s, 0.f);
      }
    return h;
  };
  activation_matcher m;
  for (std::uint64_t batch = 0; batch < 4; ++batch) {
    const auto x = floats(32 * 6, 100 + batch);
    const auto ha0 = hidden(a, x, 32, "layers.0", 6, 24), hb0 = hidden(b, x, 32, "layers.0", 6, 24);
    const auto ha1 = hidden(a, ha0, 32, "layers.2", 24, 16), hb1 = hidden(b, hb0, 32, "layers.2", 24, 16);
    // xtensor 2-D batches for one group, flat vectors with a unit count for the other
    xt::xtensor<float, 2> xa = xt::adapt(ha0, {std::size_t{32}, std::size_t{24}});
    xt::xtensor<float, 2> xb = xt::adapt(hb0, {std::size_t{32}, std::size_t{24}});
    m.add("P0", xa, xb);
    m.add("P1", ha1, hb1, 16);
  }
  CHECK(m.groups() == std::vector<std::string>{"P0", "P1"});
  const auto r = m.solve(spec);
  CHECK(r.perms.at("P0") == inverse_permutation(q.at("P0")));
  CHECK(r.perms.at("P1") == inverse_permutation(q.at("P1")));
  const tensor_set aligned = apply_permutations(spec, b, r.perms);
  for (const auto& e : a) {
    const auto x = e.values<float>();
    const auto y = aligned.at(e.name()).values<float>();
    CHECK(std::equal(x.begin(), x.end(), y.begin(), y.end()));
  }
}

TEST_CASE("activation_matcher: dead and constant units correlate 0; 16-bit inputs", "[align][activation_matching]") {
  // unit 0 of A is dead (all 0), unit 1 of B constant 0.1; unit 1 of A matches unit 0 of B.
  const std::vector<bf16> a{bf16(0.f), bf16(1.f), bf16(0.f), bf16(2.f), bf16(0.f), bf16(4.f)};
  const std::vector<bf16> b{bf16(2.f), bf16(0.1f), bf16(4.f), bf16(0.1f), bf16(8.f), bf16(0.1f)};
  activation_matcher m;
  m.add("P", matrix_ref<const bf16>{a.data(), 3, 2, 2}, matrix_ref<const bf16>{b.data(), 3, 2, 2});
  const auto st = m.statistic("P");
  CHECK(st[0] == 0);
  CHECK(st[1] == 0);
  CHECK(st[2] == Approx(1.0).epsilon(1e-12));
  CHECK(st[3] == 0);
  CHECK(m.solve().perms.at("P") == std::vector<std::size_t>{1, 0});
}

TEST_CASE("activation_matcher: bad input", "[align][activation_matching][errors]") {
  activation_matcher m;
  const std::vector<float> a6(6, 1.f), b6(6, 2.f), b4(4, 1.f);
  CHECK(error_code([&] { m.solve(); }) == errc::empty_input);
  CHECK_THAT(error_text([&] { m.add("P", matrix_ref<const float>{a6.data(), 3, 2, 2}, matrix_ref<const float>{b6.data(), 2, 3, 3}); }),
             Catch::Contains("group 'P': model A's batch is 3 x 2, model B's 2 x 3"));
  CHECK(error_code([&] { m.add("P", a6, b4, 2); }) == errc::size_mismatch);
  CHECK(error_code([&] { m.add("", a6, b6, 2); }) == errc::invalid_argument);
  m.add("P", a6, b6, 2);
  CHECK_THAT(error_text([&] { m.add("P", a6, b6, 3); }), Catch::Contains("group 'P' has 2 units, this batch 3"));
  std::vector<float> nan = b6;
  nan[3] = std::numeric_limits<float>::quiet_NaN();
  CHECK_THAT(error_text([&] { m.add("P", a6, nan, 2); }),
             Catch::Contains("group 'P': model B's activation at row 1, unit 1 is nan"));
  CHECK(m.samples("P") == 3);  // the rejected batches left no trace
  CHECK(error_code([&] { m.statistic("Q"); }) == errc::invalid_argument);

  const permutation_spec spec = mlp_permutation_spec({"l0", "l1", "l2"});
  activation_matcher only0;
  only0.add("P0", a6, b6, 2);
  CHECK_THAT(error_text([&] { only0.solve(spec); }),
             Catch::Contains("no activations for group 'P1' (it permutes axis 0 of tensor 'l1.weight')"));
  activation_matcher extra;
  extra.add("P0", a6, b6, 2);
  extra.add("P1", a6, b6, 2);
  extra.add("X", a6, b6, 2);
  CHECK_THAT(error_text([&] { extra.solve(spec); }),
             Catch::Contains("activations were given for group 'X', which permutes no tensor of the spec"));
  activation_matcher empty_rows;
  empty_rows.add("P", std::vector<float>{}, std::vector<float>{}, 2);
  CHECK(error_code([&] { empty_rows.solve(); }) == errc::empty_input);
}
