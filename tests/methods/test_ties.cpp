#include <alloy/methods/ties.hpp>

#include "support/storage_types.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>

using namespace alloy;
using alloy_test::values;

namespace {

bool has_code(const error& e, errc c) { return e.code() == c; }

// The worked example used below. base = 1 everywhere; models = base + tau:
//   tau_A = [ 4, -1,  2, 0, -3]
//   tau_B = [-2,  3, -1, 1,  1]
//   tau_C = [ 1,  1, -4, 2,  2]
// density 0.4 of 5 entries: k = floor(2.0) = 2 (exact_k).
//   t_A = [4, 0, 0, 0, -3]    top-2 |.|: 4 (i0), 3 (i4)
//   t_B = [-2, 3, 0, 0, 0]    3 (i1), 2 (i0)
//   t_C = [0, 0, -4, 2, 0]    4 (i2), then 2 at i3 and i4 tie: the lower index i3 is kept
const std::vector<double> base5{1, 1, 1, 1, 1};
const std::vector<double> a5{5, 0, 3, 1, -2}, b5{-1, 4, 0, 2, 2}, c5{2, 2, -3, 3, 3};

// A scalar reference of TIES with sort-based trimming, written independently of the
// library: exact_k with lower-index-first ties, vote, disjoint merge. Per tensor.
std::vector<double> reference_ties(const std::vector<double>& base, const std::vector<std::vector<double>>& models,
                                   const std::vector<double>& w, double density, bool weighted_vote,
                                   ties_denominator denom, bool count_vote) {
  const std::size_t n = base.size(), m = models.size();
  std::vector<std::vector<double>> t(m, std::vector<double>(n, 0.0));
  const std::size_t k = static_cast<std::size_t>(density * static_cast<double>(n));
  for (std::size_t i = 0; i < m; ++i) {
    std::vector<double> tau(n);
    for (std::size_t j = 0; j < n; ++j) tau[j] = static_cast<double>(static_cast<float>(models[i][j] - base[j]));
    std::vector<std::size_t> order(n);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(),
                     [&](std::size_t x, std::size_t y) { return std::abs(tau[x]) > std::abs(tau[y]); });
    for (std::size_t r = 0; r < (density >= 1 ? n : k); ++r) t[i][order[r]] = tau[order[r]];
  }
  std::vector<double> out(n);
  for (std::size_t j = 0; j < n; ++j) {
    double vote = 0;
    for (std::size_t i = 0; i < m; ++i) {
      const double u = weighted_vote ? w[i] * t[i][j] : t[i][j];
      vote += count_vote ? double((u > 0) - (u < 0)) : u;
    }
    double mixed = 0, d = 0;
    for (std::size_t i = 0; i < m; ++i) {
      const double u = weighted_vote ? w[i] * t[i][j] : t[i][j];
      const bool agree = vote >= 0 ? u > 0 : u < 0;
      if (agree) {
        mixed += w[i] * t[i][j];
        d += denom == ties_denominator::count ? 1 : w[i];
      }
    }
    if (denom != ties_denominator::none) mixed /= d == 0 ? 1 : d;
    out[j] = base[j] + mixed;
  }
  return out;
}

}  // namespace

TEMPLATE_LIST_TEST_CASE("ties (mergekit): worked example on every storage type", "[methods][ties]",
                        alloy_test::storage_types) {
  using namespace alloy_test;
  auto base = make_tensor<TestType>(base5), a = make_tensor<TestType>(a5), b = make_tensor<TestType>(b5),
       c = make_tensor<TestType>(c5);
  auto out = zeros<TestType>(5);
  // votes (weights 1): i0 4-2=2 +, i1 3 +, i2 -4 -, i3 2 +, i4 -3 -; agreeing entries:
  // i0 A 4, i1 B 3, i2 C -4, i3 C 2, i4 A -3, each alone: divided by weight 1.
  ties(base.get(), {a.get(), b.get(), c.get()}, {1, 1, 1}, out.get(), {.density = 0.4});
  CHECK(values(out) == std::vector<double>{5, 4, -3, 3, -2});
  // weights {1, 3, 1} applied before the vote (mergekit): weighted t_B = [-6, 9, 0, 0, 0].
  // i0: 4 - 6 = -2 elects -, only B agrees: -6 / 3 = -2; i1: 9 / 3 = 3; the rest as above.
  ties(base.get(), {a.get(), b.get(), c.get()}, {1, 3, 1}, out.get(), {.density = 0.4});
  CHECK(values(out) == std::vector<double>{-1, 4, -3, 3, -2});
}

TEMPLATE_LIST_TEST_CASE("ties (peft): worked example on every storage type", "[methods][ties]",
                        alloy_test::storage_types) {
  using namespace alloy_test;
  auto base = make_tensor<TestType>(base5), a = make_tensor<TestType>(a5), b = make_tensor<TestType>(b5),
       c = make_tensor<TestType>(c5);
  auto out = zeros<TestType>(5);
  auto o = ties_options::preset(preset::peft);
  o.density = 0.4;
  // weights {1, 3, 1} after the vote: i0 votes 4 - 2 = 2, +, A agrees: 4 * 1 / 1 = 4;
  // i1: B: 3 * 3 / 1 = 9; i2: -4; i3: 2; i4: -3. peft returns the merged task vector.
  ties(base.get(), {a.get(), b.get(), c.get()}, {1, 3, 1}, out.get(), o);
  CHECK(values(out) == std::vector<double>{4, 9, -4, 2, -3});
}

TEMPLATE_LIST_TEST_CASE("ties (paper): worked example on every storage type", "[methods][ties]",
                        alloy_test::storage_types) {
  using namespace alloy_test;
  auto base = make_tensor<TestType>(base5), a = make_tensor<TestType>(a5), b = make_tensor<TestType>(b5),
       c = make_tensor<TestType>(c5);
  auto out = zeros<TestType>(5);
  auto o = ties_options::preset(preset::paper);
  o.density = 0.4;
  // The paper keeps every entry >= the (floor(0.4 * 5) + 1) = 3rd largest magnitude:
  //   t_A = [4, 0, 2, 0, -3] (3rd largest 2), t_B = all of tau_B (3rd largest 1),
  //   t_C = [0, 0, -4, 2, 2] (3rd largest 2, both 2s kept).
  // votes: i0 2 +, i1 3 +, i2 2-1-4 = -3 -, i3 1+2 = 3 +, i4 -3+1+2 = 0: a zero vote takes
  // the model's majority sign: signs +, +, -, +, 0 sum to 2 > 0, so +.
  // disjoint means: i0 4, i1 3, i2 (-1-4)/2 = -2.5, i3 (1+2)/2 = 1.5, i4 (1+2)/2 = 1.5.
  ties(base.get(), {a.get(), b.get(), c.get()}, {1, 1, 1}, out.get(), o);
  CHECK(values(out) == std::vector<double>{5, 4, -1.5, 2.5, 2.5});
  // lambda scales the merged task vector: 1 + 0.5 * [4, 3, -2.5, 1.5, 1.5]
  o.lambda = 0.5;
  ties(base.get(), {a.get(), b.get(), c.get()}, {1, 1, 1}, out.get(), o);
  CHECK(values(out) == std::vector<double>{3, 2.5, -0.25, 1.75, 1.75});
}

TEST_CASE("ties: the issue's example, +0.3 -0.1 +0.2 elect + and average the agreeing", "[methods][ties]") {
  // Exact binary stand-ins: +0.75, -0.25, +0.5 around base 1: sum 1 > 0 elects +, the
  // agreeing entries average to (0.75 + 0.5) / 2 = 0.625.
  std::vector<float> base{1}, a{1.75f}, b{0.75f}, c{1.5f}, out(1);
  ties(base, {a, b, c}, {1, 1, 1}, out);
  CHECK(out[0] == 1.625f);
}

TEST_CASE("ties: consensus by count versus by mass", "[methods][ties]") {
  // t = {+1, +1, -5}: the mass -3 elects -, so only -5 survives; the count 2 - 1 = 1 elects +,
  // so (1 + 1) / 2 = 1 survives.
  std::vector<float> base{0}, a{1}, b{1}, c{-5}, out(1);
  ties(base, {a, b, c}, {1, 1, 1}, out);
  CHECK(out[0] == -5.f);
  ties(base, {a, b, c}, {1, 1, 1}, out, {.consensus_method = consensus::count});
  CHECK(out[0] == 1.f);
}

TEST_CASE("ties: an exact cancellation (zero vote) elects +", "[methods][ties]") {
  // t = {+2, -2}: the vote is 0, + is elected: 2 / 1 = 2
  std::vector<float> base{0}, a{2}, b{-2}, out(1);
  ties(base, {a, b}, {1, 1}, out);
  CHECK(out[0] == 2.f);
}

TEST_CASE("ties: the zero-vote rules", "[methods][ties]") {
  // t = {+2, -2}: the vote is 0. positive elects +: 2 / 1 = 2; negative elects -: -2 / 1 = -2.
  // model_majority takes the sign most entries of the whole input voted for: with a second
  // entry t = {-1, -3} (vote -4 < 0) the balance is 0 + (-1) < 0, so - again.
  std::vector<float> base{0, 0}, a{2, -1}, b{-2, -3}, out(2);
  ties(base, {a, b}, {1, 1}, out, {.zero = zero_vote::positive});
  CHECK(out[0] == 2.f);
  ties(base, {a, b}, {1, 1}, out, {.zero = zero_vote::negative});
  CHECK(out[0] == -2.f);
  CHECK(out[1] == -2.f);  // (-1 - 3) / 2: every agreeing weight counts
  ties(base, {a, b}, {1, 1}, out, {.zero = zero_vote::model_majority});
  CHECK(out[0] == -2.f);
  // Flipping the second entry's signs makes the balance +1: + is elected at the zero vote.
  std::vector<float> a2{2, 1}, b2{-2, 3};
  ties(base, {a2, b2}, {1, 1}, out, {.zero = zero_vote::model_majority});
  CHECK(out[0] == 2.f);
}

TEST_CASE("ties: zero entries never agree, and count no weight", "[methods][ties]") {
  // t = {0, +1, 0} with weights {5, 1, 7}: + elected; only model 1 agrees: 1 * 1 / 1 = 1
  std::vector<float> base{0}, a{0}, b{1}, c{0}, out(1);
  ties(base, {a, b, c}, {5, 1, 7}, out);
  CHECK(out[0] == 1.f);
}

TEST_CASE("ties: no agreeing model leaves the base", "[methods][ties]") {
  std::vector<float> base{3}, a{3}, b{3}, out(1);
  ties(base, {a, b}, {1, 1}, out);
  CHECK(out[0] == 3.f);
}

TEST_CASE("ties: a negative weight flips the vote only when weights come before it", "[methods][ties]") {
  // t = {+1, +0.5}, w = {-1, 1}.
  // mergekit: weighted {-1, +0.5}, vote -0.5 elects -, model 0 agrees: -1 / (sum of agreeing
  //   weights -1) = 1.
  // peft: vote on t: 1.5 elects +, both agree: (-1 * 1 + 1 * 0.5) / 2 = -0.25.
  std::vector<float> base{0}, a{1}, b{0.5f}, out(1);
  ties(base, {a, b}, {-1, 1}, out);
  CHECK(out[0] == 1.f);
  ties(base, {a, b}, {-1, 1}, out, ties_options::preset(preset::peft));
  CHECK(out[0] == -0.25f);
}

TEST_CASE("ties: denominators", "[methods][ties]") {
  // t = {2, 4}, w = {1, 3}: weighted {2, 12}; sum 14 / weight sum 4 = 3.5; / count 2 = 7; none: 14
  std::vector<float> base{0}, a{2}, b{4}, out(1);
  ties(base, {a, b}, {1, 3}, out);
  CHECK(out[0] == 3.5f);
  ties(base, {a, b}, {1, 3}, out, {.denominator = ties_denominator::count});
  CHECK(out[0] == 7.f);
  ties(base, {a, b}, {1, 3}, out, {.denominator = ties_denominator::none});
  CHECK(out[0] == 14.f);
}

TEST_CASE("ties: density 1 keeps everything; k is floor of a double product", "[methods][ties]") {
  // density 0.29 of 100 entries: 0.29 * 100 = 28.999999999999996 keeps 28, not 29.
  std::vector<float> base(100, 0.f), a(100), out(100);
  for (int i = 0; i < 100; ++i) a[i] = static_cast<float>(100 - i);  // distinct magnitudes
  ties(base, {a}, {1}, out, {.density = 0.29});
  CHECK(std::count_if(out.begin(), out.end(), [](float v) { return v != 0; }) == 28);
  CHECK(out[27] == 73.f);
  CHECK(out[28] == 0.f);
  ties(base, {a}, {1}, out, {.density = 1.0});
  CHECK(std::count_if(out.begin(), out.end(), [](float v) { return v != 0; }) == 100);
}

TEST_CASE("ties: tie groups at the cut keep the lower index; away from the cut all survive", "[methods][ties]") {
  // |tau| = [1, 3, 3, 3, 2, 3, 1, 5]: k = floor(0.5 * 8) = 4: 5 (i7), then the 3s at i1, i2, i3
  // (i5 loses the tie); with density 0.75, k = 6: 5, all four 3s, and 2 (i4).
  std::vector<float> base(8, 0.f), a{1, -3, 3, 3, 2, -3, 1, 5}, out(8);
  ties(base, {a}, {1}, out, {.density = 0.5});
  CHECK(out == std::vector<float>{0, -3, 3, 3, 0, 0, 0, 5});
  ties(base, {a}, {1}, out, {.density = 0.75});
  CHECK(out == std::vector<float>{0, -3, 3, 3, 2, -3, 0, 5});
}

TEST_CASE("ties: a density that keeps nothing follows the preset", "[methods][ties]") {
  std::vector<float> base{0, 0, 0}, a{1, 2, 3}, out{9, 9, 9};
  // mergekit raises (k = floor(0.2 * 3) = 0)
  REQUIRE_THROWS_WITH(ties(base, {a}, {1}, out, {.density = 0.2}),
                      Catch::Contains("density 0.2") && Catch::Contains("keeps no entry"));
  CHECK(out == std::vector<float>{9, 9, 9});  // nothing written
  // peft keeps nothing: the merged task vector is 0
  auto o = ties_options::preset(preset::peft);
  o.density = 0.2;
  ties(base, {a}, {1}, out, o);
  CHECK(out == std::vector<float>{0, 0, 0});
}

TEST_CASE("ties (peft): task vectors are formed in the storage type", "[methods][ties]") {
  // bf16 base 1, model 2^-9: the exact difference -(1 - 2^-9) lies halfway between the bf16
  // values -(1 - 2^-8) and -1, and rounds to even: -1. peft sees -1; mergekit -0.998046875.
  std::vector<bf16> base{bf16(1.0f)}, a{bf16(0x1p-9f)};
  std::vector<float> out(1);
  ties(base, {a}, {1}, out, ties_options::preset(preset::peft));
  CHECK(out[0] == -1.0f);
  ties(base, {a}, {1}, out, {.output = merge_output::delta});
  CHECK(out[0] == -0.998046875f);
}

TEST_CASE("ties: agrees with a sort-based reference on random inputs", "[methods][ties]") {
  std::mt19937 gen(42);
  for (int round = 0; round < 40; ++round) {
    const std::size_t n = 1 + gen() % 700, m = 2 + gen() % 3;
    std::uniform_int_distribution<int> small(-6, 6);  // many ties and zeros
    std::vector<double> base(n);
    for (auto& v : base) v = small(gen) * 0.5;
    std::vector<std::vector<double>> models(m, std::vector<double>(n));
    for (auto& mm : models)
      for (std::size_t j = 0; j < n; ++j) mm[j] = base[j] + small(gen) * 0.25;
    std::vector<double> w(m);
    for (auto& x : w) x = small(gen) == 0 ? 0.5 : small(gen) * 0.5;
    const double density = static_cast<double>(1 + gen() % 10) / 10.0;
    for (bool weighted : {true, false})
      for (auto denom : {ties_denominator::weight_sum, ties_denominator::count, ties_denominator::none})
        for (bool count : {false, true}) {
          ties_options o;
          o.density = density;
          o.weights_before_vote = weighted;
          o.denominator = denom;
          o.consensus_method = count ? consensus::count : consensus::sum;
          o.on_empty = empty_trim::zeros;
          std::vector<double> out(n);
          ties(base, models, w, out, o);
          const auto expect = reference_ties(base, models, w, density, weighted, denom, count);
          INFO("round " << round << " n " << n << " density " << density);
          if (static_cast<std::size_t>(density * static_cast<double>(n)) == 0) continue;  // zeros: trivially base
          for (std::size_t j = 0; j < n; ++j) REQUIRE(out[j] == Approx(expect[j]).margin(1e-12));
        }
  }
}

TEST_CASE("ties: identical bits for any thread count", "[methods][ties]") {
  const std::size_t n = 2 * parallel_chunk + 123;
  std::mt19937 gen(5);
  std::normal_distribution<float> dist;
  std::vector<bf16> base(n), a(n), b(n), c(n);
  for (std::size_t i = 0; i < n; ++i) {
    base[i] = bf16(dist(gen));
    a[i] = bf16(static_cast<float>(base[i]) + 0.01f * dist(gen));
    b[i] = bf16(static_cast<float>(base[i]) + 0.01f * dist(gen));
    c[i] = bf16(static_cast<float>(base[i]) + 0.01f * dist(gen));
  }
  std::vector<bf16> one(n), three(n);
  ties(base, {a, b, c}, {1, 0.5, 0.7}, one, {.density = 0.2, .exec = {1}});
  ties(base, {a, b, c}, {1, 0.5, 0.7}, three, {.density = 0.2, .exec = {3}});
  CHECK(std::memcmp(one.data(), three.data(), n * sizeof(bf16)) == 0);
  auto paper = ties_options::preset(preset::paper);
  paper.density = 0.2;
  paper.exec = {1};
  ties(base, {a, b, c}, {1, 1, 1}, one, paper);
  paper.exec = {2};
  ties(base, {a, b, c}, {1, 1, 1}, three, paper);
  CHECK(std::memcmp(one.data(), three.data(), n * sizeof(bf16)) == 0);
}

TEST_CASE("ties on whole models: per-tensor and whole-model trimming", "[methods][ties]") {
  // Model A's task vector: tensor x = [8, 1], tensor y = [2, 4]; density 0.5.
  // per tensor: k = 1 in each: x keeps 8, y keeps 4 -> [8, 0], [0, 4]
  // whole model: k = 2 over [8, 1, 2, 4]: 8 and 4 -> the same here; with density 0.25 whole
  // model keeps only 8 (k = 1) while per tensor keeps floor(0.5) = 0 per tensor: an error.
  tensor_set base, a;
  base.add("x", std::vector<float>{0, 0}, {2});
  base.add("y", std::vector<float>{0, 0}, {2});
  a.add("x", std::vector<float>{8, 1}, {2});
  a.add("y", std::vector<float>{2, 4}, {2});
  const tensor_set per = ties(base, {a}, {1}, {.density = 0.5});
  CHECK(per.at("x").values<float>()[0] == 8.f);
  CHECK(per.at("x").values<float>()[1] == 0.f);
  CHECK(per.at("y").values<float>()[1] == 4.f);
  const tensor_set whole = ties(base, {a}, {1}, {.density = 0.25, .scope = trim_scope::whole_model});
  CHECK(whole.at("x").values<float>()[0] == 8.f);
  CHECK(whole.at("y").values<float>()[1] == 0.f);
  REQUIRE_THROWS_WITH(ties(base, {a}, {1}, {.density = 0.25}), Catch::Contains("tensor 'x'"));
  // peft promotes 16-bit tensors to float32 at the model level
  tensor_set b16, a16;
  b16.add("x", std::vector<bf16>{bf16(0.f)}, {1});
  a16.add("x", std::vector<bf16>{bf16(2.f)}, {1});
  CHECK(ties(b16, {a16}, {1}, ties_options::preset(preset::peft)).at("x").type() == dtype::f32);
  CHECK(ties(b16, {a16}, {1}).at("x").type() == dtype::bf16);
}

// ---- bad input: one test per case -------------------------------------------------------

TEST_CASE("ties: density outside (0, 1]", "[methods][ties][errors]") {
  std::vector<float> base{0}, a{1}, out(1);
  for (double d : {0.0, -0.5, 1.5}) {
    REQUIRE_THROWS_MATCHES(ties(base, {a}, {1}, out, {.density = d}), error,
                           Catch::Predicate<error>([](const error& e) {
                             return has_code(e, errc::invalid_argument) &&
                                    std::string(e.what()).find("outside (0, 1]") != std::string::npos;
                           }));
  }
}

TEST_CASE("ties: non-finite density", "[methods][ties][errors]") {
  std::vector<float> base{0}, a{1}, out(1);
  REQUIRE_THROWS_MATCHES(ties(base, {a}, {1}, out, {.density = std::numeric_limits<double>::quiet_NaN()}), error,
                         Catch::Predicate<error>([](const error& e) { return has_code(e, errc::non_finite); }));
}

TEST_CASE("ties: per-model density count mismatch", "[methods][ties][errors]") {
  std::vector<float> base{0}, a{1}, b{1}, out(1);
  REQUIRE_THROWS_WITH(ties(base, {a, b}, {1, 1}, out, {.densities = {0.5}}),
                      Catch::Contains("1 density values for 2 models"));
}

TEST_CASE("ties: weight count mismatch", "[methods][ties][errors]") {
  std::vector<float> base{0}, a{1}, out(1);
  REQUIRE_THROWS_WITH(ties(base, {a}, {1, 1}, out), Catch::Contains("2 weights for 1 models"));
}

TEST_CASE("ties: non-finite lambda", "[methods][ties][errors]") {
  std::vector<float> base{0}, a{1}, out(1);
  REQUIRE_THROWS_WITH(ties(base, {a}, {1}, out, {.lambda = std::numeric_limits<double>::infinity()}),
                      Catch::Contains("lambda is inf"));
}

TEST_CASE("ties: shapes differ between models", "[methods][ties][errors]") {
  tensor_set base, a;
  base.add("w", std::vector<float>{0, 0, 0, 0}, {2, 2});
  a.add("w", std::vector<float>{0, 0, 0, 0}, {4});
  REQUIRE_THROWS_MATCHES(ties(base, {a}, {1}), error,
                         Catch::Predicate<error>([](const error& e) { return has_code(e, errc::shape_mismatch); }));
}

TEST_CASE("ties: sizes differ between tensors", "[methods][ties][errors]") {
  std::vector<float> base{0, 0}, a{1}, out(2);
  REQUIRE_THROWS_WITH(ties(base, {a}, {1}, out), Catch::Contains("model 0 has 1 elements"));
}

TEST_CASE("ties: no models", "[methods][ties][errors]") {
  std::vector<float> base{0}, out(1);
  std::vector<std::vector<float>> none;
  REQUIRE_THROWS_MATCHES(ties(base, none, {}, out), error,
                         Catch::Predicate<error>([](const error& e) { return has_code(e, errc::empty_input); }));
}

TEST_CASE("ties: negative weights, and agreeing weights that sum to 0", "[methods][ties]") {
  // mergekit votes on u_i = w_i t_i. Element 0: t = {+1, -1}, w = {1, -1}: u = {+1, +1},
  // both agree with +, the sum of their weights is 1 - 1 = 0, which divides as 1:
  // (1 * 1 + (-1) * (-1)) / 1 = 2. Element 1: t = {+2, +2}: u = {+2, -2}, the vote 0 elects
  // +, only model 0 agrees: 2 / 1 = 2. Element 2: t = {-4, +3}: u = {-4, -3} elects -, both
  // agree: (-4 + -3) / 0 -> / 1 = -7. Every row is long enough (64Ki + 5 entries, the
  // rest 0) to go through the fused pass with its SIMD batches, and the 3 entries are
  // repeated at the end to run the scalar tail too; density 1 keeps every entry.
  const std::size_t n = (std::size_t{1} << 16) + 5;
  std::vector<float> base(n, 0.f), a(n, 0.f), b(n, 0.f), out(n);
  const float ta[3] = {1, 2, -4}, tb[3] = {-1, 2, 3};
  for (std::size_t j = 0; j < 3; ++j) {
    a[j] = a[n - 3 + j] = ta[j];
    b[j] = b[n - 3 + j] = tb[j];
  }
  ties(base, {a, b}, {1, -1}, out);
  for (const std::size_t at : {std::size_t{0}, n - 3}) {
    CAPTURE(at);
    CHECK(out[at] == 2.f);
    CHECK(out[at + 1] == 2.f);
    CHECK(out[at + 2] == -7.f);
  }
  CHECK(out[3] == 0.f);
  CHECK(!std::signbit(out[3]));  // an element with no kept entry stays at the base, +0
}
