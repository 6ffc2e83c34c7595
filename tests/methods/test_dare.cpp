#include <alloy/methods/dare.hpp>

#include "support/storage_types.hpp"

#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>

using namespace alloy;
using alloy_test::values;

namespace {

bool has_code(const error& e, errc c) { return e.code() == c; }

// Whether DARE keeps element j of model i: the documented rule, written out independently.
bool kept(std::uint64_t seed, std::string_view name, std::uint64_t model, std::uint64_t j, float p) {
  return counter_rng(seed, stream_id(name, model)).uniform(j) < p;
}

// The masks of the worked examples below: seed 1, tensor name "" (the tensor-level
// default), density 0.5 (keep iff u < 0.5):
//   model 0: u = 0.3345, 0.1627, 0.7858, 0.5953, 0.1779  -> keeps elements 0, 1, 4
//   model 1: u = 0.9934, 0.0456, 0.1778, 0.8646, 0.1053  -> keeps elements 1, 2, 4
const std::vector<bool> mask0{true, true, false, false, true}, mask1{false, true, true, false, true};

// base = 1 everywhere; tau_A = [3, -1, 2, 2], tau_B = [1, 2, -2, 1] (the first four
// elements of the masks above):
//   A keeps [3, -1, 0, 0]: L1 8 -> 4, ratio 2;    1/density: [6, -2, 0, 0]
//   B keeps [0, 2, -2, 0]: L1 6 -> 4, ratio 1.5;  1/density: [0, 4, -4, 0]
const std::vector<double> base4{1, 1, 1, 1}, a4{4, 0, 3, 3}, b4{2, 3, -1, 2};

std::vector<float> random_floats(std::size_t n, unsigned seed, float mean = 0.f) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(mean, 1.f);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(gen);
  return v;
}

}  // namespace

TEST_CASE("dare: the masks of the worked examples", "[methods][dare]") {
  for (std::size_t j = 0; j < 5; ++j) {
    CHECK(kept(1, "", 0, j, 0.5f) == mask0[j]);
    CHECK(kept(1, "", 1, j, 0.5f) == mask1[j]);
  }
}

TEMPLATE_LIST_TEST_CASE("dare (mergekit): worked example on every storage type", "[methods][dare]",
                        alloy_test::storage_types) {
  using namespace alloy_test;
  auto base = make_tensor<TestType>(base4), a = make_tensor<TestType>(a4), b = make_tensor<TestType>(b4);
  auto out = zeros<TestType>(4);
  dare_options o;  // mergekit: L1 rescale, normalize off, weighted vote, no denominator
  o.density = 0.5;
  o.seed = 1;
  // t_A = 2 * [3, -1, 0, 0] = [6, -2, 0, 0], t_B = 1.5 * [0, 2, -2, 0] = [0, 3, -3, 0]
  // dare_linear, w = {1, 0.5}: [6, -2 + 1.5, -1.5, 0] = [6, -0.5, -1.5, 0]; + base
  dare_linear(base.get(), {a.get(), b.get()}, {1, 0.5}, out.get(), o);
  CHECK(values(out) == std::vector<double>{7, 0.5, -0.5, 1});
  // dare_ties, w = {1, 3}: weighted t_B = [0, 9, -9, 0]; votes 6 +, -2 + 9 = 7 +, -9 -, 0 (+);
  // agreeing: i0 A 6, i1 B 9, i2 B -9, i3 none; no denominator (normalize off): + base
  dare_ties(base.get(), {a.get(), b.get()}, {1, 3}, out.get(), o);
  CHECK(values(out) == std::vector<double>{7, 10, -8, 1});
  // normalize (dare_ties: the sum of agreeing weights): i1 9 / 3 = 3, i2 -9 / 3 = -3
  o.denominator = ties_denominator::weight_sum;
  dare_ties(base.get(), {a.get(), b.get()}, {1, 3}, out.get(), o);
  CHECK(values(out) == std::vector<double>{7, 4, -2, 1});
}

TEMPLATE_LIST_TEST_CASE("dare (peft): worked example on every storage type", "[methods][dare]",
                        alloy_test::storage_types) {
  using namespace alloy_test;
  auto base = make_tensor<TestType>(base4), a = make_tensor<TestType>(a4), b = make_tensor<TestType>(b4);
  auto out = zeros<TestType>(4);
  auto o = dare_options::preset(preset::peft);
  o.density = 0.5;
  o.seed = 1;
  // 1/density: t_A = [6, -2, 0, 0], t_B = [0, 4, -4, 0]; peft returns the merged task vector.
  // dare_linear, w = {1, 0.5}: [6, -2 + 2, -2, 0]
  dare_linear(base.get(), {a.get(), b.get()}, {1, 0.5}, out.get(), o);
  CHECK(values(out) == std::vector<double>{6, 0, -2, 0});
  // dare_ties, w = {1, 3}, the vote on unweighted t: i1 -2 + 4 = 2 elects +, B agrees:
  // 3 * 4 / (count 1) = 12; i2 -4 elects -, B: 3 * -4 = -12; i0 6; i3 0
  dare_ties(base.get(), {a.get(), b.get()}, {1, 3}, out.get(), o);
  CHECK(values(out) == std::vector<double>{6, 12, -12, 0});
}

TEMPLATE_LIST_TEST_CASE("dare (paper): worked example on every storage type", "[methods][dare]",
                        alloy_test::storage_types) {
  using namespace alloy_test;
  // tau_A = [3, -1, 2, 2, -1], tau_B = [1, 1, -2, 1, -1] around base 1, masks as above:
  //   t_A = 2 * [3, -1, 0, 0, -1] = [6, -2, 0, 0, -2],  t_B = 2 * [0, 1, -2, 0, -1] = [0, 2, -4, 0, -2]
  auto base = make_tensor<TestType>({1, 1, 1, 1, 1}), a = make_tensor<TestType>({4, 0, 3, 3, 0}),
       b = make_tensor<TestType>({2, 2, -1, 2, 0});
  auto out = zeros<TestType>(5);
  auto o = dare_options::preset(preset::paper);
  o.density = 0.5;
  o.seed = 1;
  o.lambda = 0.5;
  // task arithmetic over the DARE'd vectors: base + 0.5 * [6, 0, -4, 0, -4]
  dare_linear(base.get(), {a.get(), b.get()}, {1, 1}, out.get(), o);
  CHECK(values(out) == std::vector<double>{4, 1, -1, 1, -1});
  // TIES: votes 6, 0, -4, 0, -4 -> signs +, 0, -, 0, -: the model's majority is -, so the
  // zero votes (i1, i3) elect -. i1: A's -2 agrees (count 1) -> -2; i3: nobody -> 0;
  // i4: (-2 - 2) / 2 = -2. merged [6, -2, -4, 0, -2]; base + 0.5 * merged:
  dare_ties(base.get(), {a.get(), b.get()}, {1, 1}, out.get(), o);
  CHECK(values(out) == std::vector<double>{4, 0, -1, 1, 0});
  // A zero vote electing + instead (mergekit, peft): i1 takes B's 2 -> 1 + 0.5 * 2 = 2
  o.zero = zero_vote::positive;
  dare_ties(base.get(), {a.get(), b.get()}, {1, 1}, out.get(), o);
  CHECK(values(out) == std::vector<double>{4, 2, -1, 1, 0});
}

TEST_CASE("dare: the mask is u(j) < density, identical for any chunking and thread count", "[methods][dare]") {
  // A tensor of 2 * parallel_chunk + 123 elements spans three work items and a partial tile.
  const std::size_t n = 2 * parallel_chunk + 123;
  const auto tau = random_floats(n, 3);
  const std::vector<float> base(n, 0.f);
  const double density = 0.3;
  const float scale = static_cast<float>(1 / density);
  std::vector<float> one(n), three(n);
  dare_options o;
  o.density = density;
  o.seed = 77;
  o.tensor_name = "layers.0.w";
  o.rescale = dare_rescale::inverse_density;
  o.output = merge_output::delta;
  o.exec = {1};
  dare_linear(base, {tau}, {1.0}, one, o);
  o.exec = {3};
  dare_linear(base, {tau}, {1.0}, three, o);
  CHECK(std::memcmp(one.data(), three.data(), n * sizeof(float)) == 0);
  // Element j: tau_j * float(1 / density) when u_j < float(density), else 0.
  const counter_rng rng(77, stream_id("layers.0.w", 0));
  std::size_t mismatches = 0;
  for (std::size_t j = 0; j < n; ++j) {
    const float expect = rng.uniform(j) < static_cast<float>(density) ? tau[j] * scale : 0.f;
    mismatches += one[j] != expect;
  }
  CHECK(mismatches == 0);
}

TEST_CASE("dare: identical bits for 1 and 2 threads (bf16, L1 rescale, ties vote)", "[methods][dare]") {
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
  std::vector<bf16> one(n), two(n);
  dare_ties(base, {a, b, c}, {1, 0.5, 0.7}, one, {.density = 0.2, .seed = 3, .exec = {1}});
  dare_ties(base, {a, b, c}, {1, 0.5, 0.7}, two, {.density = 0.2, .seed = 3, .exec = {2}});
  CHECK(std::memcmp(one.data(), two.data(), n * sizeof(bf16)) == 0);
  auto paper = dare_options::preset(preset::paper);
  paper.density = 0.2;
  paper.exec = {1};
  dare_linear(base, {a, b, c}, {1, 1, 1}, one, paper);
  paper.exec = {2};
  dare_linear(base, {a, b, c}, {1, 1, 1}, two, paper);
  CHECK(std::memcmp(one.data(), two.data(), n * sizeof(bf16)) == 0);
}

TEST_CASE("dare: the kept fraction is within 5 sigma of density", "[methods][dare]") {
  const std::size_t n = 1000000;
  const std::vector<float> base(n, 0.f), ones(n, 1.f);
  std::vector<float> out(n);
  for (double density : {0.1, 0.3, 0.9}) {
    dare_linear(base, {ones}, {1.0}, out, {.density = density, .seed = 11, .rescale = dare_rescale::none});
    std::size_t k = 0;
    for (float v : out) k += v != 0;
    const double sigma = std::sqrt(static_cast<double>(n) * density * (1 - density));
    INFO("density " << density << " kept " << k);
    CHECK(std::abs(static_cast<double>(k) - density * static_cast<double>(n)) < 5 * sigma);
  }
}

TEST_CASE("dare: with 1/density rescale the merged vector is unbiased", "[methods][dare]") {
  // E[sum_j t_j] = sum_j tau_j; Var = sum_j tau_j^2 (1 - d) / d.
  const std::size_t n = 1000000;
  const double d = 0.3;
  std::vector<float> base(n, 0.f), tau(n), out(n);
  double sum = 0, var = 0;
  for (std::size_t j = 0; j < n; ++j) {
    tau[j] = 0.5f + 0.25f * static_cast<float>(j % 7);
    sum += tau[j];
    var += static_cast<double>(tau[j]) * tau[j] * (1 - d) / d;
  }
  dare_linear(base, {tau}, {1.0}, out, {.density = d, .seed = 12, .rescale = dare_rescale::inverse_density});
  double got = 0;
  for (float v : out) got += v;
  INFO("sum " << sum << " got " << got << " sigma " << std::sqrt(var));
  CHECK(std::abs(got - sum) < 5 * std::sqrt(var));
}

TEST_CASE("dare: seeds, tensor names and model indices give different masks", "[methods][dare]") {
  const std::size_t n = 4096;
  const std::vector<float> base(n, 0.f), ones(n, 1.f);
  auto mask = [&](std::uint64_t seed, std::string name, std::vector<double> w) {
    std::vector<float> out(n);
    // The same model twice: the weights pick which model index's mask is seen.
    dare_linear(base, {ones, ones}, w, out,
                {.density = 0.5, .seed = seed, .tensor_name = name, .rescale = dare_rescale::none});
    std::vector<bool> m(n);
    for (std::size_t j = 0; j < n; ++j) m[j] = out[j] != 0;
    return m;
  };
  auto differing = [](const std::vector<bool>& x, const std::vector<bool>& y) {
    std::size_t c = 0;
    for (std::size_t j = 0; j < x.size(); ++j) c += x[j] != y[j];
    return c;
  };
  const auto ref = mask(1, "w", {1, 0});
  CHECK(ref == mask(1, "w", {1, 0}));              // deterministic
  CHECK(differing(ref, mask(2, "w", {1, 0})) > n / 4);  // another seed: about half differ
  CHECK(differing(ref, mask(1, "v", {1, 0})) > n / 4);  // another tensor name
  CHECK(differing(ref, mask(1, "w", {0, 1})) > n / 4);  // another model index
  for (std::size_t j = 0; j < n; ++j) REQUIRE(ref[j] == kept(1, "w", 0, j, 0.5f));
}

TEST_CASE("dare on whole models: each tensor's stream is keyed by its name", "[methods][dare]") {
  const std::size_t n = 1000;
  const auto x = random_floats(n, 1), y = x;  // the same values under two names
  tensor_set base, m;
  base.add("x", std::vector<float>(n, 0.f), {n});
  base.add("y", std::vector<float>(n, 0.f), {n});
  m.add("x", x, {n});
  m.add("y", y, {n});
  const tensor_set merged = dare_linear(base, {m}, {1.0}, {.density = 0.5, .seed = 4});
  const auto mx = merged.at("x").values<float>(), my = merged.at("y").values<float>();
  std::size_t differ = 0;
  for (std::size_t j = 0; j < n; ++j) differ += (mx[j] != 0) != (my[j] != 0);
  CHECK(differ > n / 4);
  // A tensor merged alone with tensor_name = its name gets the same result.
  std::vector<float> alone(n);
  dare_linear(std::vector<float>(n, 0.f), {x}, {1.0}, alone, {.density = 0.5, .seed = 4, .tensor_name = "x"});
  CHECK(std::memcmp(alone.data(), mx.data(), n * sizeof(float)) == 0);
}

TEST_CASE("dare: norm rescales match the norm of the task vector", "[methods][dare]") {
  const std::size_t n = 100003;
  const auto tau = random_floats(n, 8, 0.1f);
  const std::vector<float> base(n, 0.f);
  std::vector<float> out(n);
  auto norm = [](const std::vector<float>& v, int p) {
    double s = 0;
    for (float x : v) s = p == 1 ? s + std::abs(x) : p == 2 ? s + double(x) * x : std::max(s, double(std::abs(x)));
    return p == 2 ? std::sqrt(s) : s;
  };
  const std::pair<dare_rescale, int> cases[] = {{dare_rescale::l1, 1}, {dare_rescale::l2, 2}, {dare_rescale::linf, 3}};
  for (auto [rescale, p] : cases) {
    dare_linear(base, {tau}, {1.0}, out,
                {.density = 0.4, .seed = 2, .rescale = rescale, .output = merge_output::delta});
    INFO("norm " << p);
    CHECK(norm(out, p) == Approx(norm(tau, p)).epsilon(1e-6));
  }
  // Without a rescale the L1 norm shrinks to about density times it.
  dare_linear(base, {tau}, {1.0}, out, {.density = 0.4, .seed = 2, .rescale = dare_rescale::none});
  CHECK(norm(out, 1) == Approx(0.4 * norm(tau, 1)).epsilon(0.02));
}

TEST_CASE("dare: a norm below 1e-7 is not rescaled", "[methods][dare]") {
  // tau = 1e-9 on 10 elements: ||tau||_1 = 1e-8 < 1e-7, so the kept entries stay 1e-9.
  const std::vector<float> base(10, 0.f), tau(10, 1e-9f);
  std::vector<float> out(10);
  dare_linear(base, {tau}, {1.0}, out, {.density = 0.5, .seed = 1});
  for (float v : out) CHECK((v == 0.f || v == 1e-9f));
}

TEST_CASE("dare: density 1 drops nothing and is task arithmetic", "[methods][dare]") {
  const std::size_t n = 5001;
  const auto base = random_floats(n, 1), a = random_floats(n, 2), b = random_floats(n, 3);
  std::vector<float> out(n), expect(n);
  task_arithmetic(base, {a, b}, {0.3, 0.9}, expect, {.lambda = 0.7});
  for (auto rescale : {dare_rescale::l1, dare_rescale::inverse_density, dare_rescale::none}) {
    dare_linear(base, {a, b}, {0.3, 0.9}, out, {.density = 1.0, .rescale = rescale, .lambda = 0.7});
    CHECK(out == expect);
  }
}

TEST_CASE("dare_linear: normalize divides by the sum of the weights", "[methods][dare]") {
  // density 1: tau_A = 2, tau_B = 6 around base 0; w = {1, 3}: (2 + 18) / 4 = 5
  std::vector<float> base{0}, a{2}, b{6}, out(1);
  dare_linear(base, {a, b}, {1, 3}, out, {.normalize = true});
  CHECK(out[0] == 5.f);
  // weights summing to 0 divide by 1 (mergekit's guard): 2 - 6 = -4
  dare_linear(base, {a, b}, {1, -1}, out, {.normalize = true});
  CHECK(out[0] == -4.f);
}

TEST_CASE("dare: a dropped NaN becomes 0, a kept one propagates", "[methods][dare]") {
  // Model 0's mask (seed 1, density 0.5) keeps elements 0 and 1 and drops 2 and 3.
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> base{0, 0, 0, 0}, a{1, nan, nan, 1}, out(4);
  dare_linear(base, {a}, {1.0}, out, {.density = 0.5, .seed = 1, .rescale = dare_rescale::inverse_density});
  CHECK(out[0] == 2.f);
  CHECK(std::isnan(out[1]));
  CHECK(out[2] == 0.f);
  CHECK(out[3] == 0.f);
}

TEST_CASE("dare: zero-length tensors", "[methods][dare]") {
  std::vector<float> base, a, out;
  dare_linear(base, {a}, {1.0}, out, {.density = 0.5});
  dare_ties(base, {a}, {1.0}, out, {.density = 0.5});
  CHECK(out.empty());
}

TEST_CASE("dare (peft): the keep probability and task vectors in the storage type", "[methods][dare]") {
  // bf16 models: the keep probability is bf16(0.3) = 0.30078125, as torch.bernoulli on a
  // bf16 tensor filled with 0.3 draws. Elements with 0.3 <= u < 0.30078125 tell them apart.
  const std::size_t n = 20000;
  std::vector<bf16> base(n, bf16(0.f)), a(n, bf16(1.f));
  std::vector<float> out(n);
  auto o = dare_options::preset(preset::peft);
  o.density = 0.3;
  o.seed = 9;
  o.tensor_name = "w";
  dare_linear(base, {a}, {1.0}, out, o);
  std::size_t in_gap = 0, mismatches = 0;
  for (std::size_t j = 0; j < n; ++j) {
    const float u = counter_rng(9, stream_id("w", 0)).uniform(j);
    in_gap += u >= 0.3f && u < 0.30078125f;
    mismatches += (out[j] != 0) != (u < 0.30078125f);
  }
  CHECK(in_gap > 0);
  CHECK(mismatches == 0);
  // Task vectors in bf16 (as peft's caller gets them): base 1, model 2^-9: the exact
  // difference -(1 - 2^-9) rounds to -1 in bf16; in float it stays -0.998046875.
  std::vector<bf16> b1{bf16(1.0f)}, m1{bf16(0x1p-9f)};
  std::vector<float> o1(1);
  dare_linear(b1, {m1}, {1.0}, o1, dare_options::preset(preset::peft));
  CHECK(o1[0] == -1.0f);
  dare_linear(b1, {m1}, {1.0}, o1, {.output = merge_output::delta});
  CHECK(o1[0] == -0.998046875f);
}

TEST_CASE("dare on whole models: output dtypes", "[methods][dare]") {
  tensor_set base, a;
  base.add("x", std::vector<bf16>{bf16(0.f), bf16(1.f)}, {2});
  a.add("x", std::vector<bf16>{bf16(2.f), bf16(3.f)}, {2});
  CHECK(dare_ties(base, {a}, {1}, dare_options::preset(preset::peft)).at("x").type() == dtype::f32);
  const tensor_set merged = dare_ties(base, {a}, {1});
  CHECK(merged.at("x").type() == dtype::bf16);
  // density 1: base + tau = the model
  CHECK(static_cast<float>(merged.at("x").values<bf16>()[1]) == 3.f);
}

// ---- bad input: one test per case -------------------------------------------------------

TEST_CASE("dare: density outside (0, 1]", "[methods][dare][errors]") {
  std::vector<float> base{0}, a{1}, out(1);
  for (double d : {0.0, -0.5, 1.5}) {
    REQUIRE_THROWS_MATCHES(dare_linear(base, {a}, {1}, out, {.density = d}), error,
                           Catch::Predicate<error>([](const error& e) {
                             return has_code(e, errc::invalid_argument) &&
                                    std::string(e.what()).find("density of model 0 is") != std::string::npos &&
                                    std::string(e.what()).find("outside (0, 1]") != std::string::npos;
                           }));
  }
  REQUIRE_THROWS_WITH(dare_ties(base, {a, a}, {1, 1}, out, {.densities = {0.5, 0}}),
                      Catch::Contains("dare_ties: density of model 1 is 0, outside (0, 1]"));
}

TEST_CASE("dare: non-finite density", "[methods][dare][errors]") {
  std::vector<float> base{0}, a{1}, out(1);
  REQUIRE_THROWS_MATCHES(dare_ties(base, {a}, {1}, out, {.density = std::numeric_limits<double>::quiet_NaN()}),
                         error, Catch::Predicate<error>([](const error& e) { return has_code(e, errc::non_finite); }));
}

TEST_CASE("dare: per-model density count mismatch", "[methods][dare][errors]") {
  std::vector<float> base{0}, a{1}, b{1}, out(1);
  REQUIRE_THROWS_WITH(dare_linear(base, {a, b}, {1, 1}, out, {.densities = {0.5}}),
                      Catch::Contains("1 density values for 2 models"));
}

TEST_CASE("dare: weight count mismatch", "[methods][dare][errors]") {
  std::vector<float> base{0}, a{1}, out(1);
  REQUIRE_THROWS_WITH(dare_ties(base, {a}, {1, 1}, out), Catch::Contains("2 weights for 1 models"));
}

TEST_CASE("dare: non-finite weight", "[methods][dare][errors]") {
  std::vector<float> base{0}, a{1}, out(1);
  REQUIRE_THROWS_WITH(dare_linear(base, {a}, {std::numeric_limits<double>::infinity()}, out),
                      Catch::Contains("weight of model 0 is inf"));
}

TEST_CASE("dare: non-finite lambda", "[methods][dare][errors]") {
  std::vector<float> base{0}, a{1}, out(1);
  REQUIRE_THROWS_WITH(dare_linear(base, {a}, {1}, out, {.lambda = -std::numeric_limits<double>::infinity()}),
                      Catch::Contains("lambda is -inf"));
}

TEST_CASE("dare: sizes differ between tensors", "[methods][dare][errors]") {
  std::vector<float> base{0, 0}, a{1}, out(2);
  REQUIRE_THROWS_WITH(dare_ties(base, {a}, {1}, out), Catch::Contains("model 0 has 1 elements"));
}

TEST_CASE("dare: shapes differ between models", "[methods][dare][errors]") {
  tensor_set base, a;
  base.add("w", std::vector<float>{0, 0, 0, 0}, {2, 2});
  a.add("w", std::vector<float>{0, 0, 0, 0}, {4});
  REQUIRE_THROWS_MATCHES(dare_linear(base, {a}, {1}), error,
                         Catch::Predicate<error>([](const error& e) { return has_code(e, errc::shape_mismatch); }));
}

TEST_CASE("dare: no models", "[methods][dare][errors]") {
  std::vector<float> base{0}, out(1);
  std::vector<std::vector<float>> none;
  REQUIRE_THROWS_MATCHES(dare_ties(base, none, {}, out), error,
                         Catch::Predicate<error>([](const error& e) { return has_code(e, errc::empty_input); }));
}

TEST_CASE("dare: the output overlapping a model", "[methods][dare][errors]") {
  std::vector<float> base{1, 1, 1}, buf{1, 2, 3, 4};
  const std::span<const float> m(buf.data() + 1, 3);
  const std::span<float> out(buf.data(), 3);
  REQUIRE_THROWS_MATCHES(dare_linear(base, {tensor_view(m)}, {1}, out), error,
                         Catch::Predicate<error>([](const error& e) { return has_code(e, errc::aliasing); }));
}
