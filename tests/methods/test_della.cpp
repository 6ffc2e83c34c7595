#include <alloy/methods/della.hpp>

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

// The worked example. Base 1 everywhere; one row of five entries (a 1-D tensor):
//   tau_A = [0.5, -2,  1,   -0.25, 4]    ascending |tau| ranks q: i3 0, i0 1, i2 2, i1 3, i4 4
//   tau_B = [-1,   3, -0.5,  2,   -2]    q: i2 0, i0 1, i3 2, i4 3 (the tie 2 = |-2|: lower index
//                                        first), i1 4
// density 0.5, epsilon 0.2: p_q = 0.3 + 0.4 * q / 4 = 0.3, 0.4, 0.5, 0.6, 0.7, so by index
//   p_A = [0.4, 0.6, 0.5, 0.3, 0.7],  p_B = [0.4, 0.7, 0.3, 0.5, 0.6].
// Seed 11, tensor name "" (tensor level), so u_ij = counter_rng(11, stream_id("", i)).uniform(j):
//   u_A = [0.216231, 0.833290, 0.517120, 0.692276, 0.533888]: kept i0 (< 0.4) and i4 (< 0.7);
//         i2 (0.517 >= 0.5) is dropped. A flat p = 0.5 (DARE) would drop i4 as well.
//   u_B = [0.737329, 0.146220, 0.943990, 0.771705, 0.424161]: kept i1 (< 0.7) and i4 (< 0.6).
// So the masked task vectors (rescale none) are t_A = [0.5, 0, 0, 0, 4], t_B = [0, 3, 0, 0, -2].
const std::vector<double> base5{1, 1, 1, 1, 1};
const std::vector<double> a5{1.5, -1, 2, 0.75, 5}, b5{0, 4, 0.5, 3, -1};
constexpr std::uint64_t seed5 = 11;

della_options example_options(della_rescale r = della_rescale::none) {
  della_options o;
  o.density = 0.5;
  o.epsilon = 0.2;
  o.seed = seed5;
  o.rescale = r;
  return o;
}

// ---- an independent reference, written from the formula --------------------------------

// One model's DELLA'd task vector. Rows: `length` entries `stride` apart in blocks of
// length * stride; ranks by stable sort of the float magnitudes; p_q = (d - e) + 2e * q /
// (L - 1) (L = 1: d - e + e); keep iff uniform(flat index) < p_q.
std::vector<double> ref_della(const std::vector<double>& tau, std::size_t length, std::size_t stride, double d,
                              double e, std::uint64_t seed, std::uint64_t stream, della_rescale r) {
  const std::size_t n = tau.size();
  std::vector<double> out(n, 0.0);
  if (d >= 1) return tau;
  const counter_rng rng(seed, stream);
  for (std::size_t o = 0; o < n; o += length * stride)
    for (std::size_t k = 0; k < stride; ++k) {
      std::vector<std::size_t> idx(length);
      for (std::size_t q = 0; q < length; ++q) idx[q] = o + q * stride + k;
      std::stable_sort(idx.begin(), idx.end(), [&](std::size_t x, std::size_t y) {
        return std::abs(static_cast<float>(tau[x])) < std::abs(static_cast<float>(tau[y]));
      });
      for (std::size_t q = 0; q < length; ++q) {
        const double p = length == 1 ? (d - e) + 2 * e / 2
                                     : (d - e) + 2 * e * (static_cast<double>(q) / static_cast<double>(length - 1));
        const std::size_t j = idx[q];
        if (rng.uniform(j) < p) out[j] = r == della_rescale::inverse_probability ? tau[j] / p : tau[j];
      }
    }
  if (r == della_rescale::l1) {
    double before = 0, after = 0;
    for (std::size_t j = 0; j < n; ++j) {
      before += std::abs(tau[j]);
      after += std::abs(out[j]);
    }
    if (before >= 1e-7 && after >= 1e-7)
      for (auto& v : out) v *= before / after;
  }
  return out;
}

// della (TIES vote, mergekit defaults: weights before the vote, sum of agreeing weights) or
// della_linear over the reference masks; the merged delta.
std::vector<double> ref_merge(const std::vector<std::vector<double>>& t, const std::vector<double>& w, bool ties) {
  const std::size_t n = t[0].size();
  std::vector<double> out(n, 0.0);
  for (std::size_t j = 0; j < n; ++j) {
    if (!ties) {
      for (std::size_t i = 0; i < t.size(); ++i) out[j] += w[i] * t[i][j];
      continue;
    }
    double vote = 0, mixed = 0, den = 0;
    for (std::size_t i = 0; i < t.size(); ++i) vote += w[i] * t[i][j];
    for (std::size_t i = 0; i < t.size(); ++i) {
      const double u = w[i] * t[i][j];
      if (vote >= 0 ? u > 0 : u < 0) {
        mixed += u;
        den += w[i];
      }
    }
    out[j] = mixed / (den == 0 ? 1 : den);
  }
  return out;
}

// Multiples of 0.25 in [-range/4, range/4] (many ties and zeros), or, for range 0, normal
// values rounded to float (every magnitude distinct in practice: all key bits vary).
std::vector<double> small_ints(std::size_t n, std::mt19937& gen, int range) {
  std::vector<double> v(n);
  if (range == 0) {
    std::normal_distribution<float> dist;
    for (auto& x : v) x = dist(gen);
    return v;
  }
  std::uniform_int_distribution<int> dist(-range, range);
  for (auto& x : v) x = dist(gen) * 0.25;
  return v;
}

std::vector<float> vec(std::span<const float> s) { return {s.begin(), s.end()}; }

double sum_abs(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += std::abs(x);
  return s;
}

}  // namespace

// ---- worked examples -------------------------------------------------------------------

TEMPLATE_LIST_TEST_CASE("della_linear: worked example on every storage type", "[methods][della]",
                        alloy_test::storage_types) {
  using namespace alloy_test;
  auto base = make_tensor<TestType>(base5), a = make_tensor<TestType>(a5), b = make_tensor<TestType>(b5);
  auto out = zeros<TestType>(5);
  // One model: base + t_A = [1.5, 1, 1, 1, 5].
  della_linear(base.get(), {a.get()}, {1}, out.get(), example_options());
  CHECK(values(out) == std::vector<double>{1.5, 1, 1, 1, 5});
  // Two models, weights {1, 3}: base + t_A + 3 t_B = 1 + [0.5, 9, 0, 0, 4 - 6].
  della_linear(base.get(), {a.get(), b.get()}, {1, 3}, out.get(), example_options());
  CHECK(values(out) == std::vector<double>{1.5, 10, 1, 1, -1});
  // normalize divides by 1 + 3 = 4; lambda 0.5 then halves: 1 + [0.5, 9, 0, 0, -2] / 8.
  auto o = example_options();
  o.normalize = true;
  o.lambda = 0.5;
  della_linear(base.get(), {a.get(), b.get()}, {1, 3}, out.get(), o);
  CHECK(values(out) == std::vector<double>{1.0625, 2.125, 1, 1, 0.75});
}

TEMPLATE_LIST_TEST_CASE("della: worked example on every storage type", "[methods][della]", alloy_test::storage_types) {
  using namespace alloy_test;
  auto base = make_tensor<TestType>(base5), a = make_tensor<TestType>(a5), b = make_tensor<TestType>(b5);
  auto out = zeros<TestType>(5);
  // t_A = [0.5, 0, 0, 0, 4], t_B = [0, 3, 0, 0, -2], weights 1: votes 0.5, 3, 0, 0, 2 elect +
  // (a zero vote elects +, and no zero entry agrees): i0 A alone 0.5, i1 B 3, i4 A 4.
  della(base.get(), {a.get(), b.get()}, {1, 1}, out.get(), example_options());
  CHECK(values(out) == std::vector<double>{1.5, 4, 1, 1, 5});
  // weights {1, 3} before the vote: w t_B = [0, 9, 0, 0, -6]; i4 votes 4 - 6 = -2: -, B alone
  // agrees: -6 / 3 = -2; i1: 9 / 3 = 3.
  della(base.get(), {a.get(), b.get()}, {1, 3}, out.get(), example_options());
  CHECK(values(out) == std::vector<double>{1.5, 4, 1, 1, -1});
  // The merged task vector alone, scaled by lambda 2.
  auto o = example_options();
  o.output = merge_output::delta;
  o.lambda = 2;
  della(base.get(), {a.get(), b.get()}, {1, 3}, out.get(), o);
  CHECK(values(out) == std::vector<double>{1, 6, 0, 0, -4});
}

TEST_CASE("della_linear: the three rescales on the worked example", "[methods][della]") {
  std::vector<double> base = base5, a = a5, out(5);
  auto o = example_options(della_rescale::inverse_probability);
  o.output = merge_output::delta;
  // 1/p: i0 0.5 / 0.4 = 1.25, i4 4 / 0.7.
  della_linear(base, {a}, {1}, out, o);
  CHECK(out[0] == Approx(1.25).epsilon(1e-15));
  CHECK(out[4] == Approx(4 / 0.7).epsilon(1e-15));
  CHECK((out[1] == 0 && out[2] == 0 && out[3] == 0));
  // L1: ||tau_A||_1 = 7.75, kept 0.5 + 4 = 4.5: both scaled by 7.75 / 4.5.
  o.rescale = della_rescale::l1;
  della_linear(base, {a}, {1}, out, o);
  CHECK(out[0] == Approx(0.5 * 7.75 / 4.5).epsilon(1e-15));
  CHECK(out[4] == Approx(4 * 7.75 / 4.5).epsilon(1e-15));
  // L2: sqrt(0.25 + 4 + 1 + 0.0625 + 16) / sqrt(0.25 + 16); Linf: 4 / 4 = 1.
  o.rescale = della_rescale::l2;
  della_linear(base, {a}, {1}, out, o);
  CHECK(out[4] == Approx(4 * std::sqrt(21.3125) / std::sqrt(16.25)).epsilon(1e-15));
  o.rescale = della_rescale::linf;
  della_linear(base, {a}, {1}, out, o);
  CHECK(out == std::vector<double>{0.5, 0, 0, 0, 4});
  // float storage: the same within float rounding.
  std::vector<float> bf(base.begin(), base.end()), af(a.begin(), a.end()), of(5);
  o.rescale = della_rescale::inverse_probability;
  della_linear(bf, {af}, {1}, of, o);
  CHECK(of[4] == Approx(4 / 0.7).epsilon(1e-6));
}

TEST_CASE("della: the presets on the worked example", "[methods][della]") {
  std::vector<float> base(base5.begin(), base5.end()), a(a5.begin(), a5.end()), b(b5.begin(), b5.end()), out(5);
  // mergekit: L1. t_A scaled by 7.75 / 4.5; t_B: ||tau_B||_1 = 8.5, kept 3 + 2 = 5: by 1.7.
  // i4 votes 4 * 7.75 / 4.5 - 2 * 1.7 > 0: A alone.
  auto o = della_options::preset(preset::mergekit);
  o.density = 0.5;
  o.epsilon = 0.2;
  o.seed = seed5;
  della(base, {a, b}, {1, 1}, out, o);
  CHECK(out[0] == Approx(1 + 0.5 * 7.75 / 4.5));
  CHECK(out[1] == Approx(1 + 3 * 1.7));
  CHECK(out[4] == Approx(1 + 4 * 7.75 / 4.5));
  CHECK((out[2] == 1 && out[3] == 1));
  // paper: 1/p per entry: i1 3 / 0.7; i4 votes 4 / 0.7 - 2 / 0.6 > 0: 4 / 0.7.
  auto p = della_options::preset(preset::paper);
  CHECK(p.rescale == della_rescale::inverse_probability);
  p.density = 0.5;
  p.epsilon = 0.2;
  p.seed = seed5;
  della(base, {a, b}, {1, 1}, out, p);
  CHECK(out[0] == Approx(1 + 0.5 / 0.4));
  CHECK(out[1] == Approx(1 + 3 / 0.7));
  CHECK(out[4] == Approx(1 + 4 / 0.7));
  // mergekit's defaults: epsilon 0.15, L1, della's denominator the sum of agreeing weights,
  // della_linear's normalize off, weights before the vote.
  const della_options m = della_options::preset(preset::mergekit);
  CHECK(m.epsilon == 0.15);
  CHECK(m.rescale == della_rescale::l1);
  CHECK(m.denominator == ties_denominator::weight_sum);
  CHECK(!m.normalize);
  CHECK(m.weights_before_vote);
  CHECK(m.zero == zero_vote::positive);
}

TEST_CASE("della: preset(peft) throws, since peft has no DELLA", "[methods][della][errors]") {
  REQUIRE_THROWS_MATCHES(della_options::preset(preset::peft), error, Catch::Predicate<error>([](const error& e) {
                           return has_code(e, errc::invalid_argument) &&
                                  std::string(e.what()).find("peft has no DELLA") != std::string::npos;
                         }));
}

TEST_CASE("della: density 1 drops nothing, whatever epsilon", "[methods][della]") {
  // TIES with density 1: t = {2, 4}, w = {1, 3}: (2 + 12) / (1 + 3) = 3.5; della_linear: 14.
  std::vector<float> base{0}, a{2}, b{4}, out(1);
  della(base, {a, b}, {1, 3}, out, {.density = 1.0, .epsilon = 0.15});
  CHECK(out[0] == 3.5f);
  della(base, {a, b}, {1, 3}, out, {.denominator = ties_denominator::count});
  CHECK(out[0] == 7.f);
  della_linear(base, {a, b}, {1, 3}, out);
  CHECK(out[0] == 14.f);
  // one model pruned, one not: the other's epsilon is not checked
  std::vector<float> base2(10, 0.f), c(10, 1.f), out2(10);
  della_linear(base2, {c, c}, {1, 1}, out2,
               {.densities = {1.0, 0.5}, .epsilons = {0.9, 0.1}, .rescale = della_rescale::none});
  for (float v : out2) CHECK((v == 1.f || v == 2.f));
}

// ---- agreement with the reference --------------------------------------------------------

TEST_CASE("della: agrees with a sort-based reference (rows, 1-D, 3-D, ties, long rows)", "[methods][della]") {
  std::mt19937 gen(7);
  struct shape_case {
    std::vector<std::size_t> shape;
    std::size_t length, stride;
  };
  const std::vector<shape_case> cases{
      {{40, 7}, 7, 1},       // short rows: many rows per tile
      {{3, 3000}, 3000, 1},  // rows longer than a tile: radix-sorted
      {{5000}, 5000, 1},     // 1-D: one row
      {{1}, 1, 1},           // one entry
      {{50, 1}, 1, 1},       // rows of one entry: p = density
      {{2, 3, 4}, 3, 4},     // 3-D: rows along dim 1 (mergekit), stride 4
      {{3, 200, 2}, 200, 2}, // 3-D with long strided rows
      {{1031, 1}, 1, 1},
      {{2, 0}, 0, 1},        // empty
  };
  for (const auto& sc : cases) {
    std::size_t n = 1;
    for (auto d : sc.shape) n *= d;
    for (int range : {2, 40, 0}) {  // few distinct magnitudes (many ties), more, or continuous
      std::vector<double> base = small_ints(n, gen, 8);
      std::vector<std::vector<double>> models, tau;
      for (int i = 0; i < 3; ++i) {
        tau.push_back(small_ints(n, gen, range));
        models.push_back(base);
        for (std::size_t j = 0; j < n; ++j) models.back()[j] += tau.back()[j];
      }
      const std::vector<double> w{1, 0.5, -0.75};
      for (auto r : {della_rescale::none, della_rescale::inverse_probability, della_rescale::l1})
        for (bool ties_vote : {false, true}) {
          della_options o;
          o.densities = {0.5, 0.3, 0.7};
          o.epsilons = {0.2, 0.1, 0.25};
          o.seed = 99;
          o.rescale = r;
          o.shape = sc.shape;
          o.tensor_name = "t";
          o.output = merge_output::delta;
          std::vector<std::vector<double>> t;
          for (std::size_t i = 0; i < 3; ++i)
            t.push_back(n == 0 ? std::vector<double>{}
                               : ref_della(tau[i], sc.length, sc.stride, o.densities[i], o.epsilons[i], o.seed,
                                           stream_id("t", i), r));
          const auto expect = n == 0 ? std::vector<double>{} : ref_merge(t, w, ties_vote);
          std::vector<double> out(n, 42.0);
          if (ties_vote)
            della(base, models, w, out, o);
          else
            della_linear(base, models, w, out, o);
          INFO("shape " << shape_string(sc.shape) << " range " << range << " rescale " << static_cast<int>(r)
                        << " ties " << ties_vote);
          for (std::size_t j = 0; j < n; ++j) REQUIRE(out[j] == Approx(expect[j]).epsilon(1e-12).margin(1e-12));
        }
    }
  }
}

TEST_CASE("della: many models with distinct densities, and rows longer than 65536", "[methods][della]") {
  std::mt19937 gen(11);
  // 20 models, each its own density and epsilon (more than the 16 cached probability tables).
  const std::size_t n = 30 * 50, m = 20;
  const std::vector<double> base = small_ints(n, gen, 8);
  std::vector<std::vector<double>> models, tau;
  della_options o;
  o.seed = 3;
  o.shape = {30, 50};
  o.rescale = della_rescale::inverse_probability;
  o.output = merge_output::delta;
  for (std::size_t i = 0; i < m; ++i) {
    tau.push_back(small_ints(n, gen, 0));
    models.push_back(base);
    for (std::size_t j = 0; j < n; ++j) models.back()[j] += tau.back()[j];
    o.densities.push_back(0.3 + 0.02 * static_cast<double>(i));
    o.epsilons.push_back(0.01 * static_cast<double>(i % 7));
  }
  const std::vector<double> w(m, 1.0);
  std::vector<std::vector<double>> t;
  for (std::size_t i = 0; i < m; ++i)
    t.push_back(ref_della(tau[i], 50, 1, o.densities[i], o.epsilons[i], o.seed, stream_id("", i), o.rescale));
  const auto expect = ref_merge(t, w, false);
  std::vector<double> out(n);
  della_linear(base, models, w, out, o);
  for (std::size_t j = 0; j < n; ++j) REQUIRE(out[j] == Approx(expect[j]).epsilon(1e-12).margin(1e-12));
  // One 1-D row of 70000 entries: p computed per entry instead of from a table.
  const std::size_t big = 70000;
  const auto tb = small_ints(big, gen, 0), zb = std::vector<double>(big, 0.0);
  della_options ob;
  ob.density = 0.4;
  ob.epsilon = 0.3;
  ob.seed = 1;
  ob.rescale = della_rescale::inverse_probability;
  ob.output = merge_output::delta;
  std::vector<double> outb(big);
  della_linear(zb, {tb}, {1}, outb, ob);
  const auto eb = ref_della(tb, big, 1, 0.4, 0.3, 1, stream_id("", 0), ob.rescale);
  for (std::size_t j = 0; j < big; ++j) REQUIRE(outb[j] == Approx(eb[j]).epsilon(1e-12).margin(1e-12));
}

TEST_CASE("della: a tensor merged alone gets the mask it gets inside its model", "[methods][della]") {
  std::mt19937 gen(3);
  tensor_set base, a, b;
  const auto bw = small_ints(60, gen, 20), aw = small_ints(60, gen, 20), bbw = small_ints(60, gen, 20);
  const auto bv = small_ints(7, gen, 20), av = small_ints(7, gen, 20), bbv = small_ints(7, gen, 20);
  base.add("w", std::vector<float>(bw.begin(), bw.end()), {6, 10});
  a.add("w", std::vector<float>(aw.begin(), aw.end()), {6, 10});
  b.add("w", std::vector<float>(bbw.begin(), bbw.end()), {6, 10});
  base.add("v", std::vector<float>(bv.begin(), bv.end()), {7});
  a.add("v", std::vector<float>(av.begin(), av.end()), {7});
  b.add("v", std::vector<float>(bbv.begin(), bbv.end()), {7});
  della_options o;
  o.density = 0.4;
  o.seed = 5;
  const tensor_set merged = della(base, {a, b}, {1, 2}, o);
  // tensor level: name and shape given as options
  std::vector<float> out(60);
  o.tensor_name = "w";
  o.shape = {6, 10};
  della(std::vector<float>(bw.begin(), bw.end()),
        {std::vector<float>(aw.begin(), aw.end()), std::vector<float>(bbw.begin(), bbw.end())}, {1, 2}, out, o);
  CHECK(out == vec(merged.at("w").values<float>()));
  // an xtensor base brings its shape: no shape option needed
  xt::xtensor<float, 2> xb = xt::xtensor<float, 2>::from_shape({6, 10}), xa = xb, xbb = xb;
  std::copy(bw.begin(), bw.end(), xb.begin());
  std::copy(aw.begin(), aw.end(), xa.begin());
  std::copy(bbw.begin(), bbw.end(), xbb.begin());
  o.shape = {};
  std::vector<float> out2(60);
  della(xb, {xa, xbb}, {1, 2}, out2, o);
  CHECK(out2 == out);
  // without the name, the stream (so the mask) differs
  o.tensor_name = "";
  della(xb, {xa, xbb}, {1, 2}, out2, o);
  CHECK(out2 != out);
  // a 1-D view of the same data ranks the whole tensor as one row: another mask
  o.tensor_name = "w";
  della(tensor_view(xb.data(), 60, dtype::f32), {tensor_view(xa.data(), 60, dtype::f32), tensor_view(xbb.data(), 60, dtype::f32)},
        {1, 2}, out2, o);
  CHECK(out2 != out);
  CHECK(merged.at("v").values<float>().size() == 7);
}

// ---- statistical properties ---------------------------------------------------------------

TEST_CASE("della: keep probability rises by rank as (density - eps) + 2 eps q / (L - 1)", "[methods][della][stats]") {
  // 20000 rows of 5 distinct magnitudes 1..5 in a random order and sign; density 0.5,
  // epsilon 0.2: rank q (= magnitude - 1) is kept with p = 0.3, 0.4, 0.5, 0.6, 0.7.
  const std::size_t rows = 20000, cols = 5;
  std::mt19937 gen(1);
  std::vector<float> base(rows * cols, 0.f), a(rows * cols), out(rows * cols);
  std::array<float, 5> mags{1, 2, 3, 4, 5};
  for (std::size_t r = 0; r < rows; ++r) {
    std::shuffle(mags.begin(), mags.end(), gen);
    for (std::size_t c = 0; c < cols; ++c) a[r * cols + c] = gen() % 2 ? mags[c] : -mags[c];
  }
  della_options o;
  o.density = 0.5;
  o.epsilon = 0.2;
  o.seed = 2024;
  o.rescale = della_rescale::none;
  o.shape = {rows, cols};
  o.output = merge_output::delta;
  della_linear(base, {a}, {1}, out, o);
  std::array<double, 5> kept{};
  double total = 0;
  for (std::size_t j = 0; j < a.size(); ++j) {
    if (out[j] == 0) continue;
    REQUIRE(out[j] == a[j]);
    kept[static_cast<std::size_t>(std::abs(a[j])) - 1] += 1;
    total += 1;
  }
  const double n = static_cast<double>(rows);
  for (std::size_t q = 0; q < 5; ++q) {
    const double p = 0.3 + 0.1 * static_cast<double>(q);
    INFO("rank " << q << " kept " << kept[q] << " of " << rows << ", p " << p);
    CHECK(std::abs(kept[q] - n * p) <= 5 * std::sqrt(n * p * (1 - p)));
  }
  // the kept fraction: mean p = density; variance sum p (1 - p)
  const double var = n * (0.21 + 0.24 + 0.25 + 0.24 + 0.21);
  CHECK(std::abs(total - 0.5 * static_cast<double>(a.size())) <= 5 * std::sqrt(var));
}

TEST_CASE("della: ties in a row rank by index, so p rises along the row", "[methods][della][stats]") {
  // every entry 1: ranks are the column indices: p = 0.3, 0.4, 0.5, 0.6, 0.7 by column.
  const std::size_t rows = 20000, cols = 5;
  std::vector<float> base(rows * cols, 0.f), a(rows * cols, 1.f), out(rows * cols);
  della_options o;
  o.density = 0.5;
  o.epsilon = 0.2;
  o.seed = 77;
  o.rescale = della_rescale::none;
  o.shape = {rows, cols};
  della_linear(base, {a}, {1}, out, o);
  std::array<double, 5> kept{};
  for (std::size_t j = 0; j < out.size(); ++j) kept[j % cols] += out[j];
  const double n = static_cast<double>(rows);
  for (std::size_t c = 0; c < 5; ++c) {
    const double p = 0.3 + 0.1 * static_cast<double>(c);
    INFO("column " << c << " kept " << kept[c]);
    CHECK(std::abs(kept[c] - n * p) <= 5 * std::sqrt(n * p * (1 - p)));
  }
}

TEST_CASE("della: 1/p rescaling is unbiased; L1 rescaling keeps the L1 norm", "[methods][della][stats]") {
  const std::size_t rows = 250, cols = 400, n = rows * cols;
  std::mt19937 gen(9);
  std::uniform_real_distribution<double> mag(0.5, 1.5);
  std::vector<double> base(n, 0.0), a(n), out(n);
  for (auto& v : a) v = gen() % 2 ? mag(gen) : -mag(gen);
  della_options o;
  o.density = 0.3;
  o.epsilon = 0.15;
  o.seed = 4;
  o.rescale = della_rescale::inverse_probability;
  o.shape = {rows, cols};
  o.output = merge_output::delta;
  della_linear(base, {a}, {1}, out, o);
  // E[sum t] = sum tau; Var = sum tau_j^2 (1 - p_j) / p_j, p_j from the rank of |tau_j|.
  double sum_t = 0, sum_tau = 0, var = 0, kept = 0, mean_p = 0;
  for (std::size_t r = 0; r < rows; ++r) {
    std::vector<std::size_t> idx(cols);
    std::iota(idx.begin(), idx.end(), r * cols);
    std::stable_sort(idx.begin(), idx.end(), [&](std::size_t x, std::size_t y) { return std::abs(a[x]) < std::abs(a[y]); });
    for (std::size_t q = 0; q < cols; ++q) {
      const double p = 0.15 + 0.3 * static_cast<double>(q) / static_cast<double>(cols - 1);
      const std::size_t j = idx[q];
      var += a[j] * a[j] * (1 - p) / p;
      mean_p += p * (1 - p);
      if (out[j] != 0) {
        REQUIRE(out[j] == Approx(a[j] / p).epsilon(1e-14));
        kept += 1;
      }
    }
  }
  for (std::size_t j = 0; j < n; ++j) {
    sum_t += out[j];
    sum_tau += a[j];
  }
  CHECK(std::abs(sum_t - sum_tau) <= 5 * std::sqrt(var));
  CHECK(std::abs(kept - 0.3 * static_cast<double>(n)) <= 5 * std::sqrt(mean_p));
  // L1: the kept entries scaled so that ||t||_1 = ||tau||_1 (per tensor).
  o.rescale = della_rescale::l1;
  della_linear(base, {a}, {1}, out, o);
  CHECK(sum_abs(out) == Approx(sum_abs(a)).epsilon(1e-12));
}

TEST_CASE("della: rows of one entry keep it with probability density", "[methods][della][stats]") {
  // shape [20000, 1]: each row has L = 1 (torch would make p NaN); alloy uses p = density.
  const std::size_t rows = 20000;
  std::vector<double> base(rows, 0.0), a(rows, 2.0), out(rows);
  della_options o;
  o.density = 0.4;
  o.epsilon = 0.3;
  o.seed = 8;
  o.rescale = della_rescale::inverse_probability;
  o.shape = {rows, 1};
  o.output = merge_output::delta;
  della_linear(base, {a}, {1}, out, o);
  double kept = 0;
  for (double v : out) {
    if (v == 0) continue;
    REQUIRE(v == Approx(2.0 / 0.4).epsilon(1e-15));
    kept += 1;
  }
  const double n = static_cast<double>(rows);
  CHECK(std::abs(kept - 0.4 * n) <= 5 * std::sqrt(n * 0.4 * 0.6));
  // a one-element tensor: the same rule
  std::vector<double> b1{0}, a1{3}, o1{7};
  o.shape = {};
  della_linear(b1, {a1}, {1}, o1, o);
  CHECK((o1[0] == 0 || o1[0] == Approx(3.0 / 0.4)));
}

TEST_CASE("della: identical bits for 1, 2 and 3 threads", "[methods][della]") {
  // Model level, bf16: a [300, 1000] tensor (two work items of whole rows), a 1-D tensor, a
  // 3-D tensor and a column.
  std::mt19937 gen(5);
  std::normal_distribution<float> dist;
  auto fill = [&](std::size_t n, float s) {
    std::vector<bf16> v(n);
    for (auto& x : v) x = bf16(s * dist(gen));
    return v;
  };
  tensor_set base;
  std::vector<tensor_set> models(3);
  const std::vector<std::pair<std::string, std::vector<std::size_t>>> specs{
      {"big", {300, 1000}}, {"bias", {5000}}, {"conv", {4, 3, 5}}, {"col", {257, 1}}};
  for (const auto& [name, shape] : specs) {
    std::size_t n = 1;
    for (auto d : shape) n *= d;
    auto b = fill(n, 1.f);
    base.add(name, b, shape);
    for (auto& m : models) {
      auto v = b;
      for (std::size_t j = 0; j < n; ++j) v[j] = bf16(static_cast<float>(v[j]) + 0.01f * dist(gen));
      m.add(name, v, shape);
    }
  }
  auto bytes_of = [](const tensor_set& s) {
    std::vector<std::vector<unsigned char>> out;
    for (const char* name : {"big", "bias", "conv", "col"}) {
      const tensor_view v = s.at(name).view();
      const auto* p = static_cast<const unsigned char*>(v.data);
      out.emplace_back(p, p + v.bytes());
    }
    return out;
  };
  for (auto preset : {preset::mergekit, preset::paper}) {
    for (bool ties_vote : {true, false}) {
      auto o = della_options::preset(preset);
      o.density = 0.3;
      o.seed = 17;
      o.zero = ties_vote ? zero_vote::model_majority : zero_vote::positive;
      std::vector<std::vector<std::vector<unsigned char>>> results;
      for (unsigned threads : {1u, 2u, 3u}) {
        o.exec = {threads};
        results.push_back(bytes_of(ties_vote ? della(base, models, {1, 0.5, 0.7}, o)
                                             : della_linear(base, models, {1, 0.5, 0.7}, o)));
      }
      CHECK(results[0] == results[1]);
      CHECK(results[0] == results[2]);
    }
  }
}

TEST_CASE("della: a NaN ranks above every magnitude; a dropped NaN becomes 0", "[methods][della]") {
  // row [NaN, 1, 2, 3, 4] with density 0.5, epsilon 0.2: NaN takes p 0.7, 1..4 take 0.3..0.6.
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> base(5, 0.f), a{nan, 1, 2, 3, 4}, out(5);
  for (std::uint64_t seed = 0; seed < 8; ++seed) {
    della_options o;
    o.density = 0.5;
    o.epsilon = 0.2;
    o.seed = seed;
    o.rescale = della_rescale::none;
    della_linear(base, {a}, {1}, out, o);
    const counter_rng rng(seed, stream_id("", 0));
    CHECK((rng.uniform(0) < 0.7 ? std::isnan(out[0]) : out[0] == 0.f));
    for (std::size_t j = 1; j < 5; ++j) CHECK(out[j] == (rng.uniform(j) < 0.3 + 0.1 * double(j - 1) ? a[j] : 0.f));
  }
}

TEST_CASE("della: zero-length tensors", "[methods][della]") {
  std::vector<float> base, a, out;
  della(base, {a}, {1}, out, {.density = 0.5});
  della_linear(base, {a}, {1}, out, {.density = 0.5});
  tensor_set bs, as;
  bs.add("e", std::vector<float>{}, {0, 4});
  as.add("e", std::vector<float>{}, {0, 4});
  CHECK(della(bs, {as}, {1}, {.density = 0.5}).at("e").view().size == 0);
}

// ---- bad input: one test per case -------------------------------------------------------

TEST_CASE("della: density - epsilon must stay above 0", "[methods][della][errors]") {
  std::vector<float> base{0, 0}, a{1, 2}, out{9, 9};
  REQUIRE_THROWS_MATCHES(della(base, {a}, {1}, out, {.density = 0.1, .epsilon = 0.15}), error,
                         Catch::Predicate<error>([](const error& e) {
                           const std::string m = e.what();
                           return has_code(e, errc::invalid_argument) && m.find("model 0") != std::string::npos &&
                                  m.find("density 0.1 ") != std::string::npos &&
                                  m.find("epsilon 0.15") != std::string::npos && m.find("(0, 1)") != std::string::npos;
                         }));
  CHECK(out == std::vector<float>{9, 9});  // nothing written
  // exactly 0 is out too (mergekit: density - epsilon <= 0 raises)
  REQUIRE_THROWS_AS(della_linear(base, {a}, {1}, out, {.density = 0.25, .epsilon = 0.25}), error);
}

TEST_CASE("della: density + epsilon must stay below 1", "[methods][della][errors]") {
  std::vector<float> base{0}, a{1}, b{1}, out(1);
  REQUIRE_THROWS_WITH(della(base, {a, b}, {1, 1}, out, {.densities = {0.5, 0.9}, .epsilon = 0.15}),
                      Catch::Contains("model 1 has density 0.9") && Catch::Contains("epsilon 0.15"));
  REQUIRE_THROWS_AS(della(base, {a}, {1}, out, {.density = 0.75, .epsilon = 0.25}), error);
}

TEST_CASE("della: negative or non-finite epsilon", "[methods][della][errors]") {
  std::vector<float> base{0}, a{1}, out(1);
  REQUIRE_THROWS_WITH(della(base, {a}, {1}, out, {.density = 0.5, .epsilon = -0.1}),
                      Catch::Contains("epsilon of model 0 is -0.1"));
  REQUIRE_THROWS_MATCHES(della(base, {a}, {1}, out, {.density = 0.5, .epsilon = std::nan("")}), error,
                         Catch::Predicate<error>([](const error& e) { return has_code(e, errc::non_finite); }));
}

TEST_CASE("della: per-model epsilon count mismatch", "[methods][della][errors]") {
  std::vector<float> base{0}, a{1}, b{1}, out(1);
  REQUIRE_THROWS_WITH(della(base, {a, b}, {1, 1}, out, {.density = 0.5, .epsilons = {0.1, 0.1, 0.1}}),
                      Catch::Contains("3 epsilon values for 2 models"));
}

TEST_CASE("della: density outside (0, 1]", "[methods][della][errors]") {
  std::vector<float> base{0}, a{1}, out(1);
  for (double d : {0.0, -0.5, 1.5})
    REQUIRE_THROWS_WITH(della_linear(base, {a}, {1}, out, {.density = d}), Catch::Contains("outside (0, 1]"));
}

TEST_CASE("della: weight count mismatch", "[methods][della][errors]") {
  std::vector<float> base{0}, a{1}, out(1);
  REQUIRE_THROWS_WITH(della(base, {a}, {1, 1}, out, {.density = 0.5}), Catch::Contains("2 weights for 1 models"));
}

TEST_CASE("della: non-finite lambda", "[methods][della][errors]") {
  std::vector<float> base{0}, a{1}, out(1);
  REQUIRE_THROWS_WITH(della(base, {a}, {1}, out, {.lambda = std::numeric_limits<double>::infinity()}),
                      Catch::Contains("lambda is inf"));
}

TEST_CASE("della: a shape option that does not hold the tensor", "[methods][della][errors]") {
  std::vector<float> base(6, 0.f), a(6, 1.f), out(6);
  REQUIRE_THROWS_MATCHES(della(base, {a}, {1}, out, {.density = 0.5, .shape = {4, 2}}), error,
                         Catch::Predicate<error>([](const error& e) {
                           return has_code(e, errc::shape_mismatch) &&
                                  std::string(e.what()).find("[4, 2] holds 8 elements") != std::string::npos;
                         }));
}

TEST_CASE("della: sizes and shapes differ", "[methods][della][errors]") {
  std::vector<float> base{0, 0}, a{1}, out(2);
  REQUIRE_THROWS_WITH(della(base, {a}, {1}, out), Catch::Contains("model 0 has 1 elements"));
  tensor_set bs, as;
  bs.add("w", std::vector<float>{0, 0, 0, 0}, {2, 2});
  as.add("w", std::vector<float>{0, 0, 0, 0}, {4});
  REQUIRE_THROWS_MATCHES(della_linear(bs, {as}, {1}), error,
                         Catch::Predicate<error>([](const error& e) { return has_code(e, errc::shape_mismatch); }));
}

TEST_CASE("della: no models", "[methods][della][errors]") {
  std::vector<float> base{0}, out(1);
  std::vector<std::vector<float>> none;
  REQUIRE_THROWS_MATCHES(della(base, none, {}, out), error,
                         Catch::Predicate<error>([](const error& e) { return has_code(e, errc::empty_input); }));
}
