// LMC probes: barrier definitions on hand-computed curves, the interpolation path and its
// buffer, metrics along a grid.
#include <alloy/lmc/barrier.hpp>
#include <alloy/lmc/interpolation.hpp>

#include <catch2/catch.hpp>

#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

using namespace alloy;
using namespace alloy::lmc;

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

const std::vector<double> grid5{0, 0.25, 0.5, 0.75, 1};

}  // namespace

TEST_CASE("barrier: the two definitions on hand-computed curves", "[lmc][barrier]") {
  SECTION("equal endpoints: the definitions agree") {
    // L = {1, 2, 4, 3, 1}: baseline 1 everywhere; rises {0, 1, 3, 2, 0}: 3 at a = 0.5.
    const std::vector<double> l{1, 2, 4, 3, 1};
    for (auto d : {barrier_definition::linear, barrier_definition::endpoint_mean}) {
      const auto b = barrier(grid5, l, d);
      CHECK(b.height == 3);
      CHECK(b.alpha == 0.5);
      CHECK(b.index == 2);
    }
  }
  SECTION("different endpoints: the definitions differ") {
    // L = {1, 1.5, 2.5, 3.5, 3}.
    // linear: baseline 1 + 2a = {1, 1.5, 2, 2.5, 3}; rises {0, 0, 0.5, 1, 0}: 1 at a = 0.75.
    // endpoint_mean: baseline (1 + 3) / 2 = 2; rises {-1, -0.5, 0.5, 1.5, 1}: 1.5 at a = 0.75.
    const std::vector<double> l{1, 1.5, 2.5, 3.5, 3};
    const auto lin = barrier(grid5, l, barrier_definition::linear);
    CHECK(lin.height == 1);
    CHECK(lin.alpha == 0.75);
    const auto mean = barrier(grid5, l, barrier_definition::endpoint_mean);
    CHECK(mean.height == 1.5);
    CHECK(mean.alpha == 0.75);
  }
  SECTION("a straight line: linear 0, endpoint_mean half the endpoint gap") {
    const std::vector<double> l{1, 1.5, 2, 2.5, 3};
    const auto lin = barrier(grid5, l, barrier_definition::linear);
    CHECK(lin.height == 0);
    CHECK(lin.alpha == 0);  // the first maximum
    const auto mean = barrier(grid5, l, barrier_definition::endpoint_mean);
    CHECK(mean.height == 1);
    CHECK(mean.alpha == 1);
  }
  SECTION("a convex curve has no barrier under the linear definition") {
    const std::vector<double> l{2, 1, 0.5, 1, 2};
    CHECK(barrier(grid5, l, barrier_definition::linear).height == 0);
    CHECK(barrier(grid5, l, barrier_definition::endpoint_mean).height == 0);
  }
  SECTION("higher is better (accuracy): the drop below the baseline") {
    // acc = {1, 0.75, 0.25, 0.5, 0.5}
    // linear: baseline 1 - a/2 = {1, 0.875, 0.75, 0.625, 0.5}; drops {0, 0.125, 0.5, 0.125, 0}: 0.5 at 0.5
    // endpoint_mean: baseline 0.75, drops {-0.25, 0, 0.5, 0.25, 0.25}: 0.5 at 0.5
    const std::vector<double> acc{1, 0.75, 0.25, 0.5, 0.5};
    const auto lin = barrier(grid5, acc, barrier_definition::linear, metric_sense::higher_is_better);
    CHECK(lin.height == 0.5);
    CHECK(lin.alpha == 0.5);
    const std::vector<double> acc2{1, 0.75, 0.5, 0.25, 0.5};
    // endpoint_mean: 0.75 - min = 0.5 at 0.75; linear: baseline at 0.75 is 0.625: drop 0.375
    CHECK(barrier(grid5, acc2, barrier_definition::endpoint_mean, metric_sense::higher_is_better).height == 0.5);
    CHECK(barrier(grid5, acc2, barrier_definition::linear, metric_sense::higher_is_better).height == 0.375);
  }
  SECTION("points outside [0, 1] are ignored; any grid order") {
    const std::vector<double> a{-0.5, 1, 0.5, 0, 1.5};
    const std::vector<double> l{100, 2, 3, 2, 100};
    const auto b = barrier(a, l, barrier_definition::linear);
    CHECK(b.height == 1);
    CHECK(b.alpha == 0.5);
    CHECK(b.index == 2);
  }
  SECTION("NaN in [0, 1] gives NaN; infinity gives infinity") {
    const std::vector<double> l{1, std::nan(""), 2, 2, 1};
    CHECK(std::isnan(barrier(grid5, l, barrier_definition::linear).height));
    const std::vector<double> inf{1, 2, std::numeric_limits<double>::infinity(), 2, 1};
    CHECK(barrier(grid5, inf, barrier_definition::endpoint_mean).height == std::numeric_limits<double>::infinity());
  }
}

TEST_CASE("barrier: bad grids", "[lmc][barrier][errors]") {
  const std::vector<double> l{1, 2, 3};
  CHECK_THAT(error_text([&] { barrier(std::vector<double>{0, 0.5}, l, barrier_definition::linear); }),
             Catch::Contains("2 alphas but 3 values"));
  CHECK_THAT(error_text([&] { barrier(std::vector<double>{0.1, 0.5, 1}, l, barrier_definition::linear); }),
             Catch::Contains("no point at alpha = 0"));
  CHECK_THAT(error_text([&] { barrier(std::vector<double>{0, 0.5, 0.9}, l, barrier_definition::linear); }),
             Catch::Contains("no point at alpha = 1"));
  CHECK(error_code([&] { barrier(std::vector<double>{0, std::nan(""), 1}, l, barrier_definition::linear); }) ==
        errc::invalid_argument);
}

TEST_CASE("linspace", "[lmc]") {
  CHECK(linspace(5) == grid5);
  const auto g = linspace(25);
  CHECK(g.size() == 25);
  CHECK(g.front() == 0);
  CHECK(g.back() == 1);
  CHECK(g[12] == 0.5);
  CHECK(linspace(1, 0.5) == std::vector<double>{0.5});
  CHECK(linspace(3, -1, 2) == std::vector<double>{-1, 0.5, 2});
}

TEST_CASE("interpolation_path: values, exact endpoints, one buffer", "[lmc][interpolation]") {
  tensor_set a, b;
  a.add("w", std::vector<float>{0, 2, 4, 0.1f}, {2, 2});
  b.add("w", std::vector<float>{4, 2, 0, 0.7f}, {2, 2});
  a.add("h", std::vector<bf16>{bf16(1.f), bf16(-3.f)}, {2});
  b.add("h", std::vector<bf16>{bf16(3.f), bf16(5.f)}, {2});
  const mutable_tensor_view sa = a.add("steps", dtype::i64, {1}), sb = b.add("steps", dtype::i64, {1});
  const std::int64_t s1 = 10, s2 = 20;
  std::memcpy(sa.data, &s1, 8);
  std::memcpy(sb.data, &s2, 8);

  interpolation_path path(a, b);
  CHECK(std::isnan(path.alpha()));
  const tensor_set& t0 = path.at(0);
  const void* data = t0.at("w").view().data;
  CHECK(std::vector<float>(t0.at("w").values<float>().begin(), t0.at("w").values<float>().end()) ==
        std::vector<float>{0, 2, 4, 0.1f});
  const tensor_set& t1 = path.at(1);
  CHECK(&t1 == &t0);
  CHECK(t1.at("w").view().data == data);  // the same buffer, rewritten
  CHECK(t1.at("w").values<float>()[3] == 0.7f);
  const tensor_set& q = path.at(0.25);
  CHECK(path.alpha() == 0.25);
  // (0.75) {0, 2, 4} + (0.25) {4, 2, 0} = {1, 2, 3}; bf16: 0.75 {1, -3} + 0.25 {3, 5} = {1.5, -1}
  CHECK(q.at("w").values<float>()[0] == 1);
  CHECK(q.at("w").values<float>()[1] == 2);
  CHECK(q.at("w").values<float>()[2] == 3);
  CHECK(q.at("h").type() == dtype::bf16);
  CHECK(static_cast<float>(q.at("h").values<bf16>()[0]) == 1.5f);
  CHECK(static_cast<float>(q.at("h").values<bf16>()[1]) == -1.f);
  std::int64_t steps = 0;
  std::memcpy(&steps, q.at("steps").view().data, 8);
  CHECK(steps == 10);  // non-floating tensors: model A's
  // extrapolation
  CHECK(path.at(2).at("w").values<float>()[0] == 8);
  CHECK(path.at(-1).at("w").values<float>()[2] == 8);
  // a double buffer
  interpolation_path d(a, b, {.out_dtype = dtype::f64});
  CHECK(d.at(0.5).at("h").type() == dtype::f64);
  CHECK(d.at(0.5).at("h").values<double>()[1] == 1);
  CHECK(error_code([&] { path.at(std::numeric_limits<double>::infinity()); }) == errc::non_finite);
}

TEST_CASE("interpolate: a metric along the grid, barriers of the curve", "[lmc][interpolation]") {
  // theta(a) = (1 - a) {1, 0} + a {0, 1} = {1 - a, a}; ||theta||^2 = 1 - 2a + 2a^2, a convex
  // curve; the metric -||theta||^2 is concave with a barrier: at a = 0.5, -0.5 vs -1: 0.5.
  tensor_set a, b;
  a.add("x", std::vector<double>{1, 0}, {2});
  b.add("x", std::vector<double>{0, 1}, {2});
  auto neg_sq = [](const tensor_set& t) {
    const auto v = t.at("x").values<double>();
    return -(v[0] * v[0] + v[1] * v[1]);
  };
  const interpolation_curve c = interpolate(a, b, 5, neg_sq);
  CHECK(c.alpha == grid5);
  CHECK(c.metrics() == 1);
  CHECK(c.values[0] == std::vector<double>{-1, -0.625, -0.5, -0.625, -1});
  CHECK(c.barrier(barrier_definition::linear).height == 0.5);
  CHECK(c.barrier(barrier_definition::endpoint_mean).height == 0.5);
  CHECK(c.barrier(barrier_definition::linear).alpha == 0.5);

  // Several metrics per point, and the (theta, alpha) signature.
  std::vector<double> seen;
  const auto two = interpolate(a, b, std::vector<double>{0, 0.5, 1}, [&](const tensor_set& t, double alpha) {
    seen.push_back(alpha);
    return std::array<double, 2>{t.at("x").values<double>()[0], alpha * 10};
  });
  CHECK(seen == std::vector<double>{0, 0.5, 1});
  CHECK(two.metrics() == 2);
  CHECK(two.values[0] == std::vector<double>{1, 0.5, 0});
  CHECK(two.metric(1)[2] == 10);
  // The metric as accuracy: a dip of 0.25 below the straight line at 0.5
  const auto acc = interpolate(a, b, std::vector<double>{0, 0.5, 1},
                               [](const tensor_set& t) { return 0.75 + std::abs(t.at("x").values<double>()[0] - 0.5) / 2; });
  CHECK(acc.barrier(barrier_definition::linear, 0, metric_sense::higher_is_better).height == 0.25);
  CHECK(error_code([&] { (void)acc.metric(1); }) == errc::invalid_argument);
}

TEST_CASE("interpolate: bad input", "[lmc][interpolation][errors]") {
  tensor_set a, b, c, d, e, empty;
  a.add("w", std::vector<float>{1, 2}, {2});
  b.add("w", std::vector<float>{1, 2}, {1, 2});
  c.add("v", std::vector<float>{1, 2}, {2});
  d.add("w", dtype::i32, {2});
  e.add("w", std::vector<float>{1, 2}, {2});
  e.add("extra", std::vector<float>{1}, {1});
  auto one = [](const tensor_set&) { return 1.0; };
  CHECK_THAT(error_text([&] { interpolation_path(a, b); }),
             Catch::Contains("tensor 'w' has shape [2] in model A but [1, 2] in model B"));
  CHECK_THAT(error_text([&] { interpolation_path(a, c); }), Catch::Contains("model B has no tensor 'w'"));
  CHECK_THAT(error_text([&] { interpolation_path(a, e); }), Catch::Contains("model B has tensor 'extra' that model A lacks"));
  CHECK(error_code([&] { interpolation_path(a, d); }) == errc::dtype_mismatch);
  CHECK(error_code([&] { interpolation_path(empty, empty); }) == errc::empty_input);
  CHECK(error_code([&] { interpolation_path(a, a, {.out_dtype = dtype::i8}); }) == errc::dtype_mismatch);
  CHECK(error_code([&] { interpolate(a, a, std::vector<double>{}, one); }) == errc::empty_input);
  CHECK(error_code([&] { interpolate(a, a, std::vector<double>{0, std::nan("")}, one); }) == errc::non_finite);
  int calls = 0;
  CHECK_THAT(error_text([&] {
               interpolate(a, a, 3, [&](const tensor_set&) { return std::vector<double>(++calls == 2 ? 1 : 2, 0.0); });
             }),
             Catch::Contains("the metric returned 1 values at point 1 but 2 at point 0"));
}
