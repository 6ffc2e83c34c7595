#include <alloy/methods/greedy_soup.hpp>
#include <alloy/methods/soup.hpp>

#include "support/storage_types.hpp"

#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <stdexcept>
#include <utility>

using namespace alloy;
using alloy_test::values;

namespace {
auto code_is(errc c) {
  return Catch::Predicate<error>([c](const error& e) { return e.code() == c; }, "error code");
}

// The one value of a one-element tensor "x" of a soup, whatever its dtype.
double x_of(const tensor_set& s) {
  const auto& e = s.at("x");
  double v = 0;
  visit_floating(e.type(), [&](auto tag) {
    using T = decltype(tag);
    v = alloy_test::to_double(e.values<T>()[0]);
  });
  return v;
}

tensor_set one(double x, dtype t = dtype::f32) {
  tensor_set s;
  visit_floating(t, [&](auto tag) {
    using T = decltype(tag);
    s.add("x", std::vector<T>{alloy_test::to_storage<T>(x)}, {1});
  });
  return s;
}

// Negative squared distance of x to 3: the soup should approach 3.
double near_three(const tensor_set& s) {
  const double d = x_of(s) - 3;
  return -d * d;
}
}  // namespace

TEMPLATE_LIST_TEST_CASE("greedy_soup: worked example on every storage type", "[methods][greedy_soup]",
                        alloy_test::storage_types) {
  // Candidates x = 0, 4, 10, 2; score = -(x - 3)^2: individual scores -9, -1, -49, -1.
  // Ranking (descending, ties by index): 1 (4), 3 (2), 0 (0), 2 (10).
  //   soup {4}: score -1
  //   + candidate 3: (4 + 2) / 2 = 3   -> 0 > -1: accepted
  //   + candidate 0: (6 + 0) / 3 = 2   -> -1 < 0: rejected
  //   + candidate 2: (6 + 10) / 3 = 16/3 -> -(7/3)^2 = -49/9: rejected
  std::vector<alloy_test::tensor_holder<TestType>> holders;
  for (double x : {0.0, 4.0, 10.0, 2.0}) holders.push_back(alloy_test::make_tensor<TestType>({x}));
  std::vector<std::vector<std::pair<std::string, TestType>>> cands;
  for (auto& h : holders) cands.push_back({{"x", h.get()}});
  const greedy_soup_result r = greedy_soup(cands, near_three);
  CHECK(r.ranking == std::vector<std::size_t>{1, 3, 0, 2});
  CHECK(r.individual_scores == std::vector<double>{-9, -1, -49, -1});
  CHECK(r.ingredients == std::vector<std::size_t>{1, 3});
  // The trial 16/3 is rounded to the storage type before it is scored.
  const double t3 = alloy_test::round_to(alloy_test::dtype_v<TestType>, 16.0 / 3);
  CHECK(r.trial_scores == std::vector<double>{-1, 0, -1, -(t3 - 3) * (t3 - 3)});
  CHECK(r.score == 0);
  CHECK(x_of(r.soup) == 3);
  CHECK(r.soup.at("x").type() == alloy_test::dtype_v<TestType>);
  CHECK(r.evaluations == 4 + 3);
}

TEST_CASE("greedy_soup: strict improvement (default) or not worse (the paper)", "[methods][greedy_soup]") {
  // score = -max(|x - 3|, 1): every soup within 1 of 3 scores -1.
  // Candidates 3.5 (-1), 2 (-1), 10 (-7); ranking 0, 1, 2.
  //   soup {3.5}: -1; + candidate 1: (3.5 + 2) / 2 = 2.75 -> -1, equal:
  //     improves rejects it; not_worse accepts it (soup 2.75);
  //   + candidate 2: 6.75 -> -3.75 (improves) or (5.5 + 10) / 3 -> -2.17 (not_worse): rejected.
  auto flat = [](const tensor_set& s) { return -std::max(std::abs(x_of(s) - 3), 1.0); };
  const tensor_set a = one(3.5), b = one(2), c = one(10);
  const greedy_soup_result strict = greedy_soup({a, b, c}, flat);
  CHECK(strict.ingredients == std::vector<std::size_t>{0});
  CHECK(x_of(strict.soup) == 3.5);
  CHECK(strict.score == -1);
  const greedy_soup_result paper = greedy_soup({a, b, c}, flat, {.acceptance = greedy_acceptance::not_worse});
  CHECK(paper.ingredients == std::vector<std::size_t>{0, 1});
  CHECK(x_of(paper.soup) == 2.75);
  CHECK(paper.trial_scores[2] == Approx(-(15.5 / 3 - 3)));
}

TEST_CASE("greedy_soup: never below its best ingredient; the soup is the one scored", "[methods][greedy_soup]") {
  // Random candidates with three tensors; the score is a fixed smooth function of the soup.
  std::vector<tensor_set> cands(9);
  for (std::size_t i = 0; i < cands.size(); ++i) {
    cands[i].add("a", alloy_test::random_values(300, 10 + i), {300});
    std::vector<bf16> b;
    for (double v : alloy_test::random_values(200, 40 + i)) b.push_back(bf16(static_cast<float>(v)));
    cands[i].add("b", b, {10, 20});
    cands[i].add("c", std::vector<float>{static_cast<float>(i)}, {1});
  }
  const auto target = alloy_test::random_values(300, 99, -0.2, 0.2);
  auto score = [&](const tensor_set& s) {
    const auto a = s.at("a").values<double>();
    double d = 0;
    for (std::size_t j = 0; j < a.size(); ++j) d += (a[j] - target[j]) * (a[j] - target[j]);
    return -d;
  };
  for (auto acc : {greedy_acceptance::improves, greedy_acceptance::not_worse}) {
    const greedy_soup_result r = greedy_soup(cands, score, {.acceptance = acc});
    const double best = *std::max_element(r.individual_scores.begin(), r.individual_scores.end());
    CHECK(r.score >= best);
    CHECK(score(r.soup) == r.score);  // bit-identical to the trial that earned the score
    CHECK(r.ingredients.size() >= 2);  // averaging random vectors moves towards 0 ~ target
    // The soup is the uniform soup of its ingredients (same rounding up to the sum order).
    std::vector<std::reference_wrapper<const tensor_set>> ing;
    for (auto i : r.ingredients) ing.push_back(cands[i]);
    const tensor_set u = uniform_soup(ing);
    CHECK(alloy_test::mismatch(values(r.soup.at("a").values<double>()), values(u.at("a").values<double>()),
                               {1e-15, 1e-15}) == "");
    CHECK(values(r.soup.at("c").values<float>())[0] ==
          Approx(values(u.at("c").values<float>())[0]).epsilon(1e-6));
  }
}

TEST_CASE("greedy_soup: precomputed individual scores", "[methods][greedy_soup]") {
  // The given scores rank the candidates (here against the score function: 10 first); the
  // callable is only called on trials. Soup {10}: score given as 5 (not re-evaluated);
  // + 4: 7 -> -16 < 5 rejected; + 0: 5 -> -4 < 5 rejected.
  const tensor_set a = one(0), b = one(4), c = one(10);
  std::size_t calls = 0;
  auto counted = [&](const tensor_set& s) {
    ++calls;
    return near_three(s);
  };
  const greedy_soup_result r = greedy_soup({a, b, c}, {1.0, 2.0, 5.0}, counted);
  CHECK(calls == 2);
  CHECK(r.evaluations == 2);
  CHECK(r.ranking == std::vector<std::size_t>{2, 1, 0});
  CHECK(r.ingredients == std::vector<std::size_t>{2});
  CHECK(r.score == 5);
  CHECK(x_of(r.soup) == 10);
}

TEST_CASE("greedy_soup: one candidate, output dtype, named-tensor ranges", "[methods][greedy_soup]") {
  const tensor_set a = one(1.5, dtype::bf16);
  const greedy_soup_result r = greedy_soup({a}, near_three);
  CHECK(r.ingredients == std::vector<std::size_t>{0});
  CHECK(r.soup.at("x").type() == dtype::bf16);
  CHECK(x_of(r.soup) == 1.5);
  CHECK(r.evaluations == 1);
  // out_dtype, and candidates given as maps (scored through a tensor_set copy).
  const std::vector<std::map<std::string, std::vector<double>>> maps{{{"x", {2.0}}}, {{"x", {4.0}}}};
  const greedy_soup_result m = greedy_soup(maps, near_three, {.out_dtype = dtype::f16});
  CHECK(m.individual_scores == std::vector<double>{-1, -1});
  CHECK(m.soup.at("x").type() == dtype::f16);
  CHECK(x_of(m.soup) == 3);
  // Candidates by pointer.
  const tensor_set b = one(4.5);
  const std::vector<const tensor_set*> ptrs{&a, &b};
  CHECK(greedy_soup(ptrs, near_three).ingredients == std::vector<std::size_t>{0, 1});  // 3 scores 0
}

TEST_CASE("greedy_soup: a rejected last trial leaves the accepted soup", "[methods][greedy_soup]") {
  // Ranking 2 (3.25), 0 (2.5), 1 (9): {3.25} -> + 2.5: 2.875 (-0.015625 > -0.0625) accepted;
  // + 9: rejected. The trial buffer last held (5.75 + 9) / 3; the soup must be 2.875.
  const tensor_set a = one(2.5), b = one(9), c = one(3.25);
  const greedy_soup_result r = greedy_soup({a, b, c}, near_three);
  CHECK(r.ingredients == std::vector<std::size_t>{2, 0});
  CHECK(x_of(r.soup) == 2.875);
  CHECK(r.score == -0.015625);
}

TEST_CASE("greedy_soup: identical bits for any thread count", "[methods][greedy_soup]") {
  const std::size_t n = parallel_chunk + 333;
  std::vector<tensor_set> cands(4);
  for (std::size_t i = 0; i < cands.size(); ++i) {
    std::vector<bf16> v;
    for (double x : alloy_test::random_values(n, 7 + i)) v.push_back(bf16(static_cast<float>(x)));
    cands[i].add("w", v, {n});
  }
  // Accept everything: the score grows with the number of calls.
  double counter = 0;
  auto grows = [&](const tensor_set&) { return counter += 1; };
  const greedy_soup_result one_t = greedy_soup(cands, grows, {.exec = {1}});
  counter = 0;
  const greedy_soup_result two_t = greedy_soup(cands, grows, {.exec = {2}});
  CHECK(one_t.ingredients.size() == 4);
  CHECK(std::memcmp(one_t.soup.at("w").view().data, two_t.soup.at("w").view().data, n * sizeof(bf16)) == 0);
}

TEST_CASE("greedy_soup: an exception from the score propagates", "[methods][greedy_soup]") {
  const tensor_set a = one(1), b = one(2), c = one(3);
  int calls = 0;
  auto throws = [&](const tensor_set& s) -> double {
    if (++calls == 5) throw std::runtime_error("evaluation failed");
    return near_three(s);
  };
  REQUIRE_THROWS_WITH(greedy_soup({a, b, c}, throws), "evaluation failed");
  CHECK(calls == 5);
}

TEST_CASE("greedy_soup: a NaN trial score rejects the candidate", "[methods][greedy_soup]") {
  const tensor_set a = one(3), b = one(4);
  auto nan_on_trials = [](const tensor_set& s) {
    return x_of(s) == 3.5 ? std::numeric_limits<double>::quiet_NaN() : near_three(s);
  };
  const greedy_soup_result r = greedy_soup({a, b}, nan_on_trials, {.acceptance = greedy_acceptance::not_worse});
  CHECK(r.ingredients == std::vector<std::size_t>{0});
  CHECK(std::isnan(r.trial_scores[1]));
  CHECK(x_of(r.soup) == 3);
}

// ---- bad input: one test per case -------------------------------------------------------

TEST_CASE("greedy_soup: no candidates", "[methods][greedy_soup][errors]") {
  const std::vector<tensor_set> none;
  REQUIRE_THROWS_MATCHES(greedy_soup(none, near_three), error, code_is(errc::empty_input));
}

TEST_CASE("greedy_soup: score count mismatch", "[methods][greedy_soup][errors]") {
  const tensor_set a = one(1), b = one(2);
  REQUIRE_THROWS_WITH(greedy_soup({a, b}, {1.0}, near_three), Catch::Contains("1 individual scores for 2 candidates"));
}

TEST_CASE("greedy_soup: a NaN individual score", "[methods][greedy_soup][errors]") {
  const tensor_set a = one(1), b = one(2);
  REQUIRE_THROWS_WITH(greedy_soup({a, b}, {1.0, std::numeric_limits<double>::quiet_NaN()}, near_three),
                      Catch::Contains("individual score of candidate 1 is nan"));
}

TEST_CASE("greedy_soup: candidates with different tensors", "[methods][greedy_soup][errors]") {
  tensor_set a = one(1), b;
  b.add("y", std::vector<float>{1}, {1});
  int calls = 0;
  auto counted = [&](const tensor_set& s) {
    ++calls;
    return near_three(s);
  };
  REQUIRE_THROWS_MATCHES(greedy_soup({a, b}, counted), error, code_is(errc::missing_tensor));
  CHECK(calls == 0);  // validated before any evaluation
}

TEST_CASE("greedy_soup: candidates with different shapes", "[methods][greedy_soup][errors]") {
  tensor_set a, b;
  a.add("x", std::vector<float>{1, 2}, {2});
  b.add("x", std::vector<float>{1, 2}, {2, 1});
  REQUIRE_THROWS_MATCHES(greedy_soup({a, b}, near_three), error, code_is(errc::shape_mismatch));
}

TEST_CASE("greedy_soup: a non-floating output dtype", "[methods][greedy_soup][errors]") {
  const tensor_set a = one(1);
  REQUIRE_THROWS_MATCHES(greedy_soup({a}, near_three, {.out_dtype = dtype::i32}), error, code_is(errc::dtype_mismatch));
}
