// Weight matching: recovering known permutations, convergence, determinism, errors.
#include <alloy/align/weight_matching.hpp>

#include "support/reference.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <string>
#include <vector>

using namespace alloy;
using namespace alloy::align;

namespace {

const std::optional<std::string> none = std::nullopt;

template <class T = float>
void add_random(tensor_set& m, const std::string& name, std::vector<std::size_t> shape, std::uint64_t seed) {
  const auto v = alloy_test::random_values(shape_elements(shape), seed, -1, 1);
  std::vector<T> t;
  for (double x : v) t.push_back(static_cast<T>(static_cast<float>(x)));
  m.add(name, t, std::move(shape));
}

// An MLP in -> h0 -> h1 -> out in PyTorch layout, layers.0 / layers.2 / layers.4.
template <class T = float>
tensor_set random_mlp(std::uint64_t seed, std::size_t in = 10, std::size_t h0 = 16, std::size_t h1 = 12,
                      std::size_t out = 5) {
  tensor_set m;
  add_random<T>(m, "layers.0.weight", {h0, in}, seed * 10 + 1);
  add_random<T>(m, "layers.0.bias", {h0}, seed * 10 + 2);
  add_random<T>(m, "layers.2.weight", {h1, h0}, seed * 10 + 3);
  add_random<T>(m, "layers.2.bias", {h1}, seed * 10 + 4);
  add_random<T>(m, "layers.4.weight", {out, h1}, seed * 10 + 5);
  add_random<T>(m, "layers.4.bias", {out}, seed * 10 + 6);
  return m;
}

const permutation_spec& mlp_spec() {
  static const permutation_spec s = mlp_permutation_spec({"layers.0", "layers.2", "layers.4"});
  return s;
}

std::vector<std::size_t> random_perm(std::size_t n, std::uint64_t seed) {
  std::vector<std::size_t> p(n);
  std::iota(p.begin(), p.end(), std::size_t{0});
  const auto r = alloy_test::random_values(n, seed, 0, 1);
  for (std::size_t i = n; i > 1; --i) std::swap(p[i - 1], p[static_cast<std::size_t>(r[i - 1] * static_cast<double>(i))]);
  return p;
}

permutation_map random_perms(const group_size_map& sizes, std::uint64_t seed) {
  permutation_map p;
  for (const auto& [g, n] : sizes) p[g] = random_perm(n, seed++);
  return p;
}

permutation_map inverse(const permutation_map& p) {
  permutation_map q;
  for (const auto& [g, v] : p) q[g] = inverse_permutation(v);
  return q;
}

double sum_of_squares(const tensor_set& m, const permutation_spec& s) {
  double j = 0;
  for (const auto& t : s.tensors()) {
    const auto& e = m.at(t);
    for (std::size_t i = 0; i < e.size(); ++i) {
      const double x = e.type() == dtype::f64 ? e.values<double>()[i]
                       : e.type() == dtype::bf16 ? static_cast<double>(static_cast<float>(e.values<bf16>()[i]))
                                                 : static_cast<double>(e.values<float>()[i]);
      j += x * x;
    }
  }
  return j;
}

bool same_bytes(const tensor_set& a, const tensor_set& b) {
  if (a.size() != b.size()) return false;
  for (const auto& e : a) {
    const auto& f = b.at(e.name());
    if (e.bytes() != f.bytes() || std::memcmp(e.view().data, f.view().data, e.bytes()) != 0) return false;
  }
  return true;
}

bool nondecreasing(const std::vector<double>& v) {
  for (std::size_t i = 1; i < v.size(); ++i)
    if (v[i] < v[i - 1] * (1 + 1e-12) - 1e-9) return false;
  return true;
}

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

}  // namespace

TEST_CASE("weight_matching recovers the permutation of a permuted copy", "[align][weight_matching]") {
  const tensor_set a = random_mlp(1, 10, 32, 24, 5);
  const group_size_map sizes = mlp_spec().group_sizes(a);
  const permutation_map q = random_perms(sizes, 77);
  const tensor_set b = apply_permutations(mlp_spec(), a, q);
  REQUIRE_FALSE(same_bytes(a, b));

  const weight_matching_result r = weight_matching(mlp_spec(), a, b);
  CHECK(r.perms == inverse(q));
  CHECK(same_bytes(apply_permutations(mlp_spec(), b, r.perms), a));
  // The objective reaches the unpermuted one, <A, A>.
  const double aa = sum_of_squares(a, mlp_spec());
  CHECK(r.objective.back() == Approx(aa).epsilon(1e-6));
  CHECK(alignment_objective(mlp_spec(), a, a, permutation_spec::identity(sizes)) == Approx(aa).epsilon(1e-6));
  CHECK(r.objective.front() == Approx(alignment_objective(mlp_spec(), a, b, permutation_spec::identity(sizes))));
  CHECK(r.objective.front() < 0.5 * aa);
  CHECK(r.converged);
  CHECK(r.iterations == r.objective.size() - 1);
  CHECK(nondecreasing(r.objective));
}

TEST_CASE("weight_matching: double and bf16 models", "[align][weight_matching]") {
  SECTION("double") {
    const tensor_set a = random_mlp<double>(2);
    const permutation_map q = random_perms(mlp_spec().group_sizes(a), 5);
    const tensor_set b = apply_permutations(mlp_spec(), a, q);
    const auto r = weight_matching(mlp_spec(), a, b);
    CHECK(r.perms == inverse(q));
    CHECK(r.objective.back() == Approx(sum_of_squares(a, mlp_spec())).epsilon(1e-12));
  }
  SECTION("bf16") {
    const tensor_set a = random_mlp<bf16>(3);
    const permutation_map q = random_perms(mlp_spec().group_sizes(a), 9);
    const tensor_set b = apply_permutations(mlp_spec(), a, q);
    const auto r = weight_matching(mlp_spec(), a, b);
    CHECK(r.perms == inverse(q));
    CHECK(r.objective.back() == Approx(sum_of_squares(a, mlp_spec())).epsilon(1e-6));
  }
}

TEST_CASE("weight_matching: a conv net (middle axes) and a residual stream", "[align][weight_matching]") {
  SECTION("conv net") {
    const permutation_spec s = conv_net_permutation_spec({"conv1", "conv2"}, {"fc"}, {"bn1", ""});
    tensor_set a;
    add_random(a, "conv1.weight", {8, 3, 3, 3}, 1);
    add_random(a, "conv1.bias", {8}, 2);
    add_random(a, "bn1.weight", {8}, 3);
    add_random(a, "bn1.bias", {8}, 4);
    add_random(a, "bn1.running_mean", {8}, 5);
    add_random(a, "bn1.running_var", {8}, 6);
    add_random(a, "conv2.weight", {6, 8, 3, 3}, 7);
    add_random(a, "conv2.bias", {6}, 8);
    add_random(a, "fc.weight", {4, 6}, 9);
    add_random(a, "fc.bias", {4}, 10);
    const permutation_map q = random_perms(s.group_sizes(a), 21);
    const tensor_set b = apply_permutations(s, a, q);
    const auto r = weight_matching(s, a, b, {.seed = 3});
    CHECK(r.perms == inverse(q));
    CHECK(same_bytes(apply_permutations(s, b, r.perms), a));
  }
  SECTION("residual MLP") {
    const permutation_spec s = residual_mlp_permutation_spec(
        "embed", {{"b0.norm", "b0.up", "b0.down"}, {"b1.norm", "b1.up", "b1.down"}}, "head");
    tensor_set a;
    add_random(a, "embed.weight", {12, 7}, 1);
    add_random(a, "embed.bias", {12}, 2);
    for (int k = 0; k < 2; ++k) {
      const std::string b = "b" + std::to_string(k);
      add_random(a, b + ".norm.weight", {12}, 10 + 10 * k);
      add_random(a, b + ".norm.bias", {12}, 11 + 10 * k);
      add_random(a, b + ".up.weight", {20, 12}, 12 + 10 * k);
      add_random(a, b + ".up.bias", {20}, 13 + 10 * k);
      add_random(a, b + ".down.weight", {12, 20}, 14 + 10 * k);
      add_random(a, b + ".down.bias", {12}, 15 + 10 * k);
    }
    add_random(a, "head.weight", {3, 12}, 50);
    add_random(a, "head.bias", {3}, 51);
    const permutation_map q = random_perms(s.group_sizes(a), 31);
    const tensor_set b = apply_permutations(s, a, q);
    const auto r = weight_matching(s, a, b);
    CHECK(r.perms == inverse(q));
  }
}

TEST_CASE("weight_matching: one hidden layer reaches the brute-force optimum", "[align][weight_matching]") {
  // With one group, J is linear in P: one assignment finds the global optimum.
  const permutation_spec s = mlp_permutation_spec({"l0", "l1"});
  tensor_set a, b;
  add_random(a, "l0.weight", {6, 3}, 1);
  add_random(a, "l0.bias", {6}, 2);
  add_random(a, "l1.weight", {2, 6}, 3);
  add_random(a, "l1.bias", {2}, 4);
  add_random(b, "l0.weight", {6, 3}, 5);
  add_random(b, "l0.bias", {6}, 6);
  add_random(b, "l1.weight", {2, 6}, 7);
  add_random(b, "l1.bias", {2}, 8);
  const auto r = weight_matching(s, a, b);
  std::vector<std::size_t> p{0, 1, 2, 3, 4, 5};
  double best = -std::numeric_limits<double>::infinity();
  do {
    best = std::max(best, alignment_objective(s, a, b, permutation_map{{"P0", p}}));
  } while (std::next_permutation(p.begin(), p.end()));
  CHECK(r.objective.back() == Approx(best).epsilon(1e-9));
  CHECK(r.converged);
  CHECK(r.iterations <= 2);  // one step, then one iteration that confirms it
}

TEST_CASE("weight_matching on unrelated models: monotone, converges, consistent objective", "[align][weight_matching]") {
  const tensor_set a = random_mlp(4, 10, 24, 24, 5), b = random_mlp(5, 10, 24, 24, 5);
  std::vector<std::string> steps;
  const auto r = weight_matching(mlp_spec(), a, b, {.seed = 11, .on_step = [&](const weight_matching_step& st) {
                                                     steps.push_back(std::string(st.group));
                                                     CHECK(st.new_value >= st.old_value - 1e-9 * std::abs(st.old_value));
                                                   }});
  CHECK(r.converged);
  CHECK(nondecreasing(r.objective));
  CHECK(r.objective.back() > r.objective.front());
  CHECK(steps.size() == 2 * r.iterations);
  CHECK(r.objective.back() == Approx(alignment_objective(mlp_spec(), a, b, r.perms)).epsilon(1e-12));
  // max_iter bounds the iterations
  const auto one = weight_matching(mlp_spec(), a, b, {.seed = 11, .max_iter = 1});
  CHECK(one.iterations == 1);
  CHECK(one.objective.size() == 2);
  // starting at the result: no step is taken
  const auto again = weight_matching(mlp_spec(), a, b, {.seed = 11, .init = r.perms});
  CHECK(again.perms == r.perms);
  CHECK(again.iterations == 1);
  CHECK(again.converged);
}

TEST_CASE("weight_matching is deterministic by seed", "[align][weight_matching]") {
  const tensor_set a = random_mlp(6, 8, 20, 20, 4), b = random_mlp(7, 8, 20, 20, 4);
  const auto r1 = weight_matching(mlp_spec(), a, b, {.seed = 42});
  const auto r2 = weight_matching(mlp_spec(), a, b, {.seed = 42});
  CHECK(r1.perms == r2.perms);
  CHECK(r1.objective == r2.objective);
  // The group order: a permutation, fixed by (seed, iteration), varying with both.
  const auto o = alloy::align::detail::group_order(42, 0, 10);
  CHECK(o == alloy::align::detail::group_order(42, 0, 10));
  auto sorted = o;
  std::sort(sorted.begin(), sorted.end());
  CHECK(sorted == std::vector<std::size_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9});
  CHECK(o != alloy::align::detail::group_order(43, 0, 10));
  CHECK(o != alloy::align::detail::group_order(42, 1, 10));
}

TEST_CASE("weight_matching: identical models give the identity", "[align][weight_matching]") {
  tensor_set a = random_mlp(8);
  // A dead unit (all-zero row and column) ties with nothing, but zeros tie with each other.
  const auto r = weight_matching(mlp_spec(), a, a);
  CHECK(r.perms == permutation_spec::identity(mlp_spec().group_sizes(a)));
  CHECK(r.iterations == 1);
  tensor_set z;
  z.add("layers.0.weight", std::vector<float>(6, 0.f), {3, 2});
  z.add("layers.0.bias", std::vector<float>(3, 0.f), {3});
  z.add("layers.2.weight", std::vector<float>(3, 0.f), {1, 3});
  z.add("layers.2.bias", std::vector<float>(1, 0.f), {1});
  const permutation_spec s = mlp_permutation_spec({"layers.0", "layers.2"});
  const auto rz = weight_matching(s, z, z);
  CHECK(rz.perms.at("P0") == std::vector<std::size_t>{0, 1, 2});
  CHECK(rz.objective == std::vector<double>{0, 0});
}

TEST_CASE("weight_matching: a group on two axes of one tensor", "[align][weight_matching]") {
  // An RNN-like square weight h [n, n] permuted by P on both axes, plus an input layer.
  permutation_spec s;
  s.add("in.weight", {"P", none}).add("h.weight", {"P", "P"}).add("out.weight", {none, "P"});
  tensor_set a;
  add_random(a, "in.weight", {10, 6}, 1);
  add_random(a, "h.weight", {10, 10}, 2);
  add_random(a, "out.weight", {3, 10}, 3);
  const permutation_map q = random_perms(s.group_sizes(a), 4);
  const tensor_set b = apply_permutations(s, a, q);
  const auto r = weight_matching(s, a, b);
  CHECK(r.perms == inverse(q));
  CHECK(r.objective.back() == Approx(sum_of_squares(a, s)).epsilon(1e-6));

  // Unrelated models: J is quadratic in P; the descent still never decreases J and stops
  // (the linearised step alone cycles between two permutations on such inputs).
  int improved = 0;
  for (std::uint64_t seed = 0; seed < 4; ++seed) {
    tensor_set c, d;
    add_random(c, "h.weight", {24, 24}, 100 + seed);
    add_random(d, "h.weight", {24, 24}, 200 + seed);
    permutation_spec hs;
    hs.add("h.weight", {"P", "P"});
    const auto rq = weight_matching(hs, c, d, {.seed = seed});
    CHECK(rq.converged);
    CHECK(nondecreasing(rq.objective));
    improved += rq.objective.back() > rq.objective.front();
  }
  CHECK(improved > 0);  // a local method: some starts find no improving linearised step
}

// ---- bad input --------------------------------------------------------------------------

TEST_CASE("weight_matching: shapes that differ between A and B", "[align][weight_matching][errors]") {
  const tensor_set a = random_mlp(1);
  tensor_set b = random_mlp(1, 10, 16, 12, 5);
  tensor_set c;
  for (const auto& e : b) {
    if (e.name() == "layers.4.bias")
      c.add("layers.4.bias", std::vector<float>(5, 0.f), {1, 5});
    else
      c.add(e.name(), e.values<float>(), e.shape());
  }
  CHECK(error_code([&] { weight_matching(mlp_spec(), a, c); }) == errc::shape_mismatch);
  tensor_set wide = random_mlp(1, 10, 17, 12, 5);
  CHECK_THAT(error_text([&] { weight_matching(mlp_spec(), a, wide); }),
             Catch::Contains("tensor 'layers.0.weight' has shape [16, 10] in model A but [17, 10] in model B"));
  tensor_set in11 = random_mlp(1, 11, 16, 12, 5);
  CHECK_THAT(error_text([&] { weight_matching(mlp_spec(), a, in11); }),
             Catch::Contains("tensor 'layers.0.weight' has shape [16, 10] in model A but [16, 11] in model B"));
}

TEST_CASE("weight_matching: NaN in a model names the tensor and axis", "[align][weight_matching][errors]") {
  const tensor_set a = random_mlp(1);
  tensor_set b = random_mlp(2);
  b.at("layers.2.weight").values<float>()[5] = std::numeric_limits<float>::quiet_NaN();
  CHECK(error_code([&] { weight_matching(mlp_spec(), a, b); }) == errc::non_finite);
  CHECK_THAT(error_text([&] { weight_matching(mlp_spec(), a, b); }),
             Catch::Contains("tensor 'layers.2.weight' of model B holds nan at element 5 (permuted: axis 0 by group "
                             "'P1', axis 1 by group 'P0')"));
  tensor_set a_inf = random_mlp(1);
  a_inf.at("layers.0.bias").values<float>()[0] = std::numeric_limits<float>::infinity();
  CHECK_THAT(error_text([&] { weight_matching(mlp_spec(), a_inf, b); }),
             Catch::Contains("tensor 'layers.0.bias' of model A holds inf"));
}

TEST_CASE("weight_matching: spec problems", "[align][weight_matching][errors]") {
  const tensor_set a = random_mlp(1), b = random_mlp(2);
  CHECK(error_code([&] { weight_matching(permutation_spec{}, a, b); }) == errc::empty_input);
  tensor_set partial;
  for (const auto& e : b)
    if (e.name() != "layers.2.bias") partial.add(e.name(), e.values<float>(), e.shape());
  CHECK_THAT(error_text([&] { weight_matching(mlp_spec(), a, partial); }),
             Catch::Contains("tensor 'layers.2.bias' (axis 0 in group 'P1') is not in model B"));
  permutation_spec bad;
  bad.add("layers.0.weight", {"P0", none}).add("layers.2.weight", {"P0", none});
  CHECK_THAT(error_text([&] { weight_matching(bad, a, b); }),
             Catch::Contains("group 'P0' permutes axis 0 of tensor 'layers.0.weight' (size 16) and axis 0 of tensor "
                             "'layers.2.weight' (size 12) in model A"));
  tensor_set ints = random_mlp(2);
  tensor_set with_int;
  for (const auto& e : ints) {
    if (e.name() == "layers.4.bias") {
      with_int.add("layers.4.bias", dtype::i32, {5});
    } else {
      with_int.add(e.name(), e.values<float>(), e.shape());
    }
  }
  CHECK(error_code([&] { weight_matching(mlp_spec(), a, with_int); }) == errc::dtype_mismatch);
}

TEST_CASE("weight_matching: bad options", "[align][weight_matching][errors]") {
  const tensor_set a = random_mlp(1), b = random_mlp(2);
  CHECK(error_code([&] { weight_matching(mlp_spec(), a, b, {.max_iter = 0}); }) == errc::invalid_argument);
  CHECK(error_code([&] { weight_matching(mlp_spec(), a, b, {.tolerance = -1}); }) == errc::invalid_argument);
  CHECK(error_code([&] { weight_matching(mlp_spec(), a, b, {.tolerance = std::nan("")}); }) == errc::invalid_argument);
  permutation_map init{{"P0", std::vector<std::size_t>(16, 0)}, {"P1", random_perm(12, 1)}};
  CHECK_THAT(error_text([&] { weight_matching(mlp_spec(), a, b, {.init = init}); }),
             Catch::Contains("weight_matching: the permutation of group 'P0' is not a permutation"));
  init = {{"P0", random_perm(16, 1)}};
  CHECK_THAT(error_text([&] { weight_matching(mlp_spec(), a, b, {.init = init}); }),
             Catch::Contains("no permutation for group 'P1'"));
  init = {{"P0", random_perm(16, 1)}, {"P1", random_perm(12, 1)}, {"Q", {0}}};
  CHECK_THAT(error_text([&] { weight_matching(mlp_spec(), a, b, {.init = init}); }),
             Catch::Contains("group 'Q', which permutes no tensor of the spec"));
}
