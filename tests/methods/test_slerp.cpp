#include <alloy/methods/slerp.hpp>

#include "support/storage_types.hpp"

#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <limits>
#include <map>

using namespace alloy;
using alloy_test::values;

namespace {
using scalars = std::tuple<float, double, bf16, fp16>;
const double pi = std::acos(-1.0);

bool has_code(const error& e, errc c) { return e.code() == c; }

template <class T>
std::vector<T> from(const std::vector<double>& v) {
  std::vector<T> out;
  for (double x : v) out.push_back(alloy_test::to_storage<T>(x));
  return out;
}

// mergekit's slerp in double, on the stored values.
std::vector<double> slerp_ref(double t, const std::vector<double>& v0, const std::vector<double>& v1) {
  double n0 = alloy_test::l2_norm(v0), n1 = alloy_test::l2_norm(v1);
  if (n0 <= 1e-8) n0 = 1;
  if (n1 <= 1e-8) n1 = 1;
  const double dot = alloy_test::dot(v0, v1) / n0 / n1;
  double a = 1 - t, b = t;
  if (std::abs(dot) <= 0.9995) {
    const double th = std::acos(dot);
    a = std::sin(th - th * t) / std::sin(th);
    b = std::sin(th * t) / std::sin(th);
  }
  std::vector<double> out(v0.size());
  for (std::size_t i = 0; i < out.size(); ++i) out[i] = a * v0[i] + b * v1[i];
  return out;
}

// The reduction kernel's documented sum, emulated in plain scalar code: element e of a block
// of 256 goes to lane e mod 16; each lane sums its 16 products of a block in float; the lane
// partials are added in double; the 16 lanes are folded as a tree.
double emulated_dot(const std::vector<float>& a, const std::vector<float>& b) {
  constexpr std::size_t lanes_n = 16, block = 256;
  static_assert(lanes_n == kernels::reduce_lanes && block == kernels::reduce_block);
  double lanes[lanes_n] = {};
  for (std::size_t s = 0; s < a.size(); s += block) {
    float part[lanes_n] = {};
    for (std::size_t e = s; e < std::min(a.size(), s + block); ++e) {
      const float p = a[e] * b[e];
      part[(e - s) % lanes_n] = part[(e - s) % lanes_n] + p;
    }
    for (std::size_t l = 0; l < lanes_n; ++l) lanes[l] += static_cast<double>(part[l]);
  }
  for (std::size_t w = lanes_n / 2; w >= 1; w /= 2)
    for (std::size_t l = 0; l < w; ++l) lanes[l] = lanes[l] + lanes[l + w];
  return lanes[0];
}
}  // namespace

TEMPLATE_LIST_TEST_CASE("slerp: worked examples on every storage type", "[methods][slerp]", alloy_test::storage_types) {
  const dtype dt = alloy_test::dtype_v<TestType>;
  const auto tol = alloy_test::tolerance_for(dt, 2);
  auto out = alloy_test::zeros<TestType>(4);
  {
    // Orthogonal unit vectors e0, e1 at t = 0.5: theta = pi/2, sin(theta) = 1, both
    // coefficients sin(pi/4) = sqrt(2)/2: the normalised sum (e0 + e1) / sqrt(2).
    auto e0 = alloy_test::make_tensor<TestType>({1, 0, 0, 0}), e1 = alloy_test::make_tensor<TestType>({0, 1, 0, 0});
    slerp(e0.get(), e1.get(), 0.5, out.get());
    const double h = std::sqrt(0.5);
    CHECK(alloy_test::mismatch(values(out), alloy_test::round_to(dt, {h, h, 0, 0}), tol) == "");
  }
  {
    // Orthogonal, not unit: v0 = (3, 0, 0, 0), v1 = (0, 4, 0, 0), t = 1/3. The raw tensors
    // are interpolated: a = sin(2/3 * pi/2) = sin(pi/3) = sqrt(3)/2, b = sin(pi/6) = 1/2,
    // so out = (3 sqrt(3)/2, 2, 0, 0) = (2.598.., 2, 0, 0).
    auto v0 = alloy_test::make_tensor<TestType>({3, 0, 0, 0}), v1 = alloy_test::make_tensor<TestType>({0, 4, 0, 0});
    slerp(v0.get(), v1.get(), 1.0 / 3.0, out.get());
    CHECK(alloy_test::mismatch(values(out), alloy_test::round_to(dt, {1.5 * std::sqrt(3.0), 2, 0, 0}), tol) == "");
  }
  {
    // At 60 degrees: v0 = (1, 0, 0, 0), v1 = (1, sqrt 3, 0, 0): norms 1 and 2, cos = 1/2,
    // theta = pi/3. t = 0.5: a = b = sin(pi/6) / sin(pi/3) = 1/sqrt(3), so
    // out = (v0 + v1) / sqrt 3 = (2, sqrt 3) / sqrt 3 = (2/sqrt 3, 1) = (1.1547.., 1).
    const double s3 = alloy_test::round_to(dt, std::sqrt(3.0));
    auto v0 = alloy_test::make_tensor<TestType>({1, 0, 0, 0}), v1 = alloy_test::make_tensor<TestType>({1, s3, 0, 0});
    slerp(v0.get(), v1.get(), 0.5, out.get());
    // The stored sqrt(3) moves the angle slightly: compare with the reference on the stored values.
    const auto want = slerp_ref(0.5, {1, 0, 0, 0}, {1, s3, 0, 0});
    CHECK(std::abs(want[0] - 2 / std::sqrt(3.0)) < 1e-2);
    CHECK(alloy_test::mismatch(values(out), alloy_test::round_to(dt, want), alloy_test::tolerance_for(dt, 4)) == "");
  }
  {
    // Colinear (v1 = 2 v0, cos = 1 > 0.9995): the linear path, (1 - t) v0 + t v1. t = 0.25:
    // 0.75 v0 + 0.5 v0 = 1.25 v0 = (1.25, 2.5, -1.25, 0.625), exact everywhere.
    auto v0 = alloy_test::make_tensor<TestType>({1, 2, -1, 0.5}), v1 = alloy_test::make_tensor<TestType>({2, 4, -2, 1});
    slerp(v0.get(), v1.get(), 0.25, out.get());
    CHECK(values(out) == std::vector<double>{1.25, 2.5, -1.25, 0.625});
  }
  {
    // Antiparallel (v1 = -v0, cos = -1): linear too. t = 0.25: 0.75 v0 - 0.25 v0 = 0.5 v0.
    auto v0 = alloy_test::make_tensor<TestType>({1, 2, -1, 0.5}), v1 = alloy_test::make_tensor<TestType>({-1, -2, 1, -0.5});
    slerp(v0.get(), v1.get(), 0.25, out.get());
    CHECK(values(out) == std::vector<double>{0.5, 1, -0.5, 0.25});
    slerp(v0.get(), v1.get(), 0.5, out.get());  // the midpoint is 0
    CHECK(values(out) == std::vector<double>{0, 0, 0, 0});
  }
}

TEMPLATE_LIST_TEST_CASE("slerp: t = 0 and t = 1 give the endpoints exactly", "[methods][slerp]", scalars) {
  // On the sine path, t = 0: a = sin(theta) / sin(theta) = 1 and b = sin(0) = 0; t = 1: a = 0, b = 1.
  const auto v0 = from<TestType>(alloy_test::random_values(1003, 1)), v1 = from<TestType>(alloy_test::random_values(1003, 2));
  std::vector<TestType> out(v0.size());
  slerp(v0, v1, 0.0, out);
  CHECK(values(out) == values(v0));
  slerp(v0, v1, 1.0, out);
  CHECK(values(out) == values(v1));
}

TEST_CASE("slerp: a zero tensor is not normalised: cos = 0 and the sine formula applies", "[methods][slerp]") {
  // v0 = 0, v1 = (1, 2): cos = 0, theta = pi/2; t = 1/3: a = sin(pi/3), b = sin(pi/6) = 1/2,
  // out = a * 0 + (1/2) v1 = (0.5, 1).
  std::vector<float> zero{0, 0}, v1{1, 2}, out(2);
  slerp(zero, v1, 1.0 / 3.0, out);
  CHECK(out == std::vector<float>{0.5f, 1.f});
  // Both zero: 0, not NaN.
  slerp(zero, zero, 0.5, out);
  CHECK(out == std::vector<float>{0, 0});
  // A tiny vector (norm 5e-9 <= 1e-8) is not normalised either: cos = 1e-9 * 3 / 3 ~ 1e-9.
  std::vector<double> tiny{3e-9, 4e-9}, w{3, 0}, od(2);
  slerp(tiny, w, 0.5, od);
  CHECK(alloy_test::mismatch(values(od), slerp_ref(0.5, {3e-9, 4e-9}, {3, 0}), {1e-12, 0}) == "");
}

TEMPLATE_LIST_TEST_CASE("slerp: agrees with a double reference on random tensors", "[methods][slerp]", scalars) {
  const dtype dt = dtype_of<TestType>;
  for (std::size_t n : {1u, 7u, 16u, 17u, 513u, 4099u, 70000u}) {
    const auto a = alloy_test::round_to(dt, alloy_test::random_values(n, 10 + n));
    auto b = alloy_test::round_to(dt, alloy_test::random_values(n, 20 + n));
    const auto va = from<TestType>(a), vb = from<TestType>(b);
    std::vector<TestType> out(n);
    for (double t : {0.1, 0.5, 0.8}) {
      slerp(va, vb, t, out);
      INFO("n = " << n << ", t = " << t);
      CHECK(alloy_test::mismatch(values(out), alloy_test::round_to(dt, slerp_ref(t, a, b)),
                                 {8 * alloy_test::unit_roundoff(dt), 1e-6}) == "");
    }
  }
}

TEST_CASE("slerp: identical bits for 1 and 3 threads", "[methods][slerp]") {
  const std::size_t n = 2 * parallel_chunk + 123;
  const auto a = from<bf16>(alloy_test::random_values(n, 3)), b = from<bf16>(alloy_test::random_values(n, 4));
  std::vector<bf16> one(n), three(n);
  slerp(a, b, 0.3, one, {.exec = {1}});
  slerp(a, b, 0.3, three, {.exec = {3}});
  CHECK(std::memcmp(one.data(), three.data(), n * sizeof(bf16)) == 0);
  const auto fa = from<float>(alloy_test::random_values(n, 5)), fb = from<float>(alloy_test::random_values(n, 6));
  std::vector<float> f1(n), f3(n);
  slerp(fa, fb, 0.7, f1, {.exec = {1}});
  slerp(fa, fb, 0.7, f3, {.exec = {3}});
  CHECK(std::memcmp(f1.data(), f3.data(), n * sizeof(float)) == 0);
}

TEST_CASE("slerp in place on the first model", "[methods][slerp]") {
  std::vector<float> a{1, 2, -1, 0.5}, b{2, 4, -2, 1};
  slerp(a, b, 0.25, a);  // colinear: 1.25 a
  CHECK(a == std::vector<float>{1.25, 2.5, -1.25, 0.625});
}

TEST_CASE("slerp: zero-length tensors", "[methods][slerp]") {
  std::vector<float> a, b, out;
  REQUIRE_NOTHROW(slerp(a, b, 0.5, out));
}

TEST_CASE("slerp on whole models: t per tensor, the first model's dtype", "[methods][slerp]") {
  tensor_set a, b;
  a.add("layers.0.w", std::vector<bf16>{bf16(1.f), bf16(0.f)}, {2});
  a.add("layers.1.w", std::vector<bf16>{bf16(1.f), bf16(2.f)}, {1, 2});
  b.add("layers.1.w", std::vector<float>{2, 4}, {1, 2});  // colinear: linear path
  b.add("layers.0.w", std::vector<float>{0, 1}, {2});     // orthogonal
  const std::map<std::string, double, std::less<>> t{{"layers.0.w", 0.5}, {"layers.1.w", 0.25}};
  const tensor_set m = slerp(a, b, [&](std::string_view name) { return t.find(name)->second; });
  REQUIRE(m.size() == 2);
  CHECK(m.begin()->name() == "layers.0.w");  // the first model's order
  CHECK(m.at("layers.0.w").type() == dtype::bf16);
  // sqrt(2)/2 = 0.7071.. rounds to 0.70703125 in bf16.
  CHECK(static_cast<float>(m.at("layers.0.w").values<bf16>()[0]) == 0.70703125f);
  CHECK(static_cast<float>(m.at("layers.1.w").values<bf16>()[1]) == 2.5f);  // 0.75 * 2 + 0.25 * 4
  CHECK(m.at("layers.1.w").shape() == std::vector<std::size_t>{1, 2});
  const tensor_set f = slerp(a, b, 0.5, {.out_dtype = dtype::f32});
  CHECK(f.at("layers.1.w").values<float>()[0] == 1.5f);
}

// ---- the reduction kernel ----------------------------------------------------------------

TEST_CASE("reduce: gram_accumulate is the documented 16-lane sum, whatever the SIMD width", "[kernels][reduce]") {
  // The emulation is plain scalar code, so this passing in the SIMD build and in a
  // ALLOY_FORCE_SCALAR build shows that both give the same bits.
  for (std::size_t n : {0u, 1u, 15u, 16u, 17u, 255u, 256u, 257u, 1000u, 4099u, 20000u}) {
    const auto a = from<float>(alloy_test::random_values(n, 100 + n)), b = from<float>(alloy_test::random_values(n, 200 + n));
    const float* rows[2] = {a.data(), b.data()};
    constexpr std::size_t L = kernels::reduce_lanes;
    std::vector<double> lanes(3 * L, 0.0);
    kernels::gram_accumulate(rows, 2, n, lanes.data());
    INFO("n = " << n);
    CHECK(kernels::lane_total(lanes.data() + kernels::gram_pair(0, 1, 2) * L) == emulated_dot(a, b));
    CHECK(kernels::lane_total(lanes.data() + kernels::gram_pair(0, 0, 2) * L) == emulated_dot(a, a));
    CHECK(kernels::lane_total(lanes.data() + kernels::gram_pair(1, 1, 2) * L) == emulated_dot(b, b));
    // And it is close to the exact dot product (float pairwise-summation accuracy).
    const auto da = values(a), db = values(b);
    double mag = 0;
    for (std::size_t i = 0; i < n; ++i) mag += std::abs(da[i] * db[i]);
    CHECK(std::abs(kernels::lane_total(lanes.data() + L) - alloy_test::dot(da, db)) <= 4e-7 * mag);
  }
}

TEST_CASE("reduce: chained calls at multiples of the block equal one call", "[kernels][reduce]") {
  const std::size_t n = 3 * kernels::reduce_block + 77;
  const auto a = from<float>(alloy_test::random_values(n, 7));
  const float* rows[1] = {a.data()};
  std::vector<double> one(kernels::reduce_lanes, 0.0), chained(kernels::reduce_lanes, 0.0);
  kernels::gram_accumulate(rows, 1, n, one.data());
  const float* first[1] = {a.data()};
  const float* rest[1] = {a.data() + 2 * kernels::reduce_block};
  kernels::gram_accumulate(first, 1, 2 * kernels::reduce_block, chained.data());
  kernels::gram_accumulate(rest, 1, n - 2 * kernels::reduce_block, chained.data());
  CHECK(one == chained);
}

TEST_CASE("reduce: the fused sweep (up to 3 rows) and the pairwise one give the same bits", "[kernels][reduce]") {
  const std::size_t n = 5 * kernels::reduce_block + 37;
  std::vector<std::vector<float>> x;
  for (unsigned i = 0; i < 5; ++i) x.push_back(from<float>(alloy_test::random_values(n, 300 + i)));
  const float* rows[5] = {x[0].data(), x[1].data(), x[2].data(), x[3].data(), x[4].data()};
  constexpr std::size_t L = kernels::reduce_lanes;
  std::vector<double> five(kernels::gram_pairs(5) * L, 0.0);
  kernels::gram_accumulate(rows, 5, n, five.data());  // pairwise
  for (std::size_t i = 0; i < 5; ++i)
    for (std::size_t j = i + 1; j < 5; ++j) {
      const float* two[2] = {rows[i], rows[j]};
      std::vector<double> g(3 * L, 0.0);
      kernels::gram_accumulate(two, 2, n, g.data());  // fused
      CHECK(kernels::lane_total(g.data() + L) == kernels::lane_total(five.data() + kernels::gram_pair(i, j, 5) * L));
      CHECK(kernels::lane_total(g.data()) == kernels::lane_total(five.data() + kernels::gram_pair(i, i, 5) * L));
    }
}

TEST_CASE("reduce: with a base, the Gram matrix of the task vectors formed in float", "[kernels][reduce]") {
  const std::size_t n = 3 * kernels::reduce_block + 11;
  const auto b = from<float>(alloy_test::random_values(n, 400));
  std::vector<std::vector<float>> x, tau;
  for (unsigned i = 0; i < 4; ++i) {
    x.push_back(from<float>(alloy_test::random_values(n, 401 + i)));
    tau.emplace_back(n);
    for (std::size_t e = 0; e < n; ++e) tau.back()[e] = x.back()[e] - b[e];
  }
  for (std::size_t k : {2u, 4u}) {  // fused and pairwise
    const float* xr[4] = {x[0].data(), x[1].data(), x[2].data(), x[3].data()};
    const float* tr[4] = {tau[0].data(), tau[1].data(), tau[2].data(), tau[3].data()};
    std::vector<double> with_base(kernels::gram_pairs(k) * kernels::reduce_lanes, 0.0), explicit_tau(with_base);
    kernels::gram_accumulate(xr, k, b.data(), n, with_base.data());
    kernels::gram_accumulate(tr, k, n, explicit_tau.data());
    CHECK(with_base == explicit_tau);
  }
}

TEST_CASE("reduce: pair indices enumerate (i <= j) row by row", "[kernels][reduce]") {
  CHECK(kernels::gram_pairs(3) == 6);
  CHECK(kernels::gram_pair(0, 0, 3) == 0);
  CHECK(kernels::gram_pair(0, 2, 3) == 2);
  CHECK(kernels::gram_pair(1, 1, 3) == 3);
  CHECK(kernels::gram_pair(2, 1, 3) == 4);
  CHECK(kernels::gram_pair(2, 2, 3) == 5);
}

// ---- bad input: one test per case -------------------------------------------------------

TEST_CASE("slerp: t below 0", "[methods][slerp][errors]") {
  std::vector<float> a{1}, b{2}, out(1);
  REQUIRE_THROWS_MATCHES(slerp(a, b, -0.1, out), error,
                         Catch::Predicate<error>([](const error& e) {
                           return has_code(e, errc::invalid_argument) &&
                                  std::string(e.what()).find("t = -0.10000000000000001 is outside [0, 1]") != std::string::npos;
                         }));
}

TEST_CASE("slerp: t above 1", "[methods][slerp][errors]") {
  std::vector<float> a{1}, b{2}, out(1);
  REQUIRE_THROWS_WITH(slerp(a, b, 1.5, out), Catch::Contains("t = 1.5 is outside [0, 1]"));
}

TEST_CASE("slerp: non-finite t", "[methods][slerp][errors]") {
  std::vector<float> a{1}, b{2}, out(1);
  REQUIRE_THROWS_MATCHES(slerp(a, b, std::numeric_limits<double>::quiet_NaN(), out), error,
                         Catch::Predicate<error>([](const error& e) { return has_code(e, errc::non_finite); }));
}

TEST_CASE("slerp on models: a tensor's t outside [0, 1] names the tensor", "[methods][slerp][errors]") {
  tensor_set a, b;
  a.add("w", std::vector<float>{1}, {1});
  b.add("w", std::vector<float>{2}, {1});
  REQUIRE_THROWS_WITH(slerp(a, b, [](std::string_view) { return 2.0; }),
                      Catch::Contains("t = 2 is outside [0, 1] (tensor 'w')"));
}

TEST_CASE("slerp: NaN in a tensor", "[methods][slerp][errors]") {
  std::vector<float> a{1, std::numeric_limits<float>::quiet_NaN()}, b{2, 1}, out{7, 7};
  REQUIRE_THROWS_MATCHES(slerp(a, b, 0.5, out), error, Catch::Predicate<error>([](const error& e) {
                           return has_code(e, errc::non_finite) &&
                                  std::string(e.what()).find("model 0 has NaN or Inf") != std::string::npos;
                         }));
  CHECK(out == std::vector<float>{7, 7});  // nothing written
}

TEST_CASE("slerp: sizes differ", "[methods][slerp][errors]") {
  std::vector<float> a{1, 2}, b{2}, out(2);
  REQUIRE_THROWS_MATCHES(slerp(a, b, 0.5, out), error,
                         Catch::Predicate<error>([](const error& e) { return has_code(e, errc::size_mismatch); }));
}

TEST_CASE("slerp: the output has the wrong size", "[methods][slerp][errors]") {
  std::vector<float> a{1, 2}, b{2, 1}, out(3);
  REQUIRE_THROWS_WITH(slerp(a, b, 0.5, out), Catch::Contains("the output has 3 elements, the inputs have 2"));
}

TEST_CASE("slerp: a non-floating input", "[methods][slerp][errors]") {
  std::vector<std::int8_t> raw{1, 2};
  std::vector<float> b{2, 1}, out(2);
  REQUIRE_THROWS_MATCHES(slerp(tensor_view(raw.data(), 2, dtype::i8), b, 0.5, out), error,
                         Catch::Predicate<error>([](const error& e) { return has_code(e, errc::dtype_mismatch); }));
}

TEST_CASE("slerp: the output overlapping an input", "[methods][slerp][errors]") {
  std::vector<float> buf{1, 2, 3, 4}, b{1, 1, 1};
  const std::span<const float> a(buf.data() + 1, 3);
  REQUIRE_THROWS_WITH(slerp(tensor_view(a), b, 0.5, std::span<float>(buf.data(), 3)), Catch::Contains("overlaps model 0"));
}

TEST_CASE("slerp on models: a tensor missing in the second model", "[methods][slerp][errors]") {
  tensor_set a, b;
  a.add("w", std::vector<float>{1}, {1});
  b.add("v", std::vector<float>{1}, {1});
  REQUIRE_THROWS_MATCHES(slerp(a, b, 0.5), error,
                         Catch::Predicate<error>([](const error& e) { return has_code(e, errc::missing_tensor); }));
}

TEST_CASE("slerp on models: shapes differ", "[methods][slerp][errors]") {
  tensor_set a, b;
  a.add("w", std::vector<float>{1, 2}, {2, 1});
  b.add("w", std::vector<float>{1, 2}, {1, 2});
  REQUIRE_THROWS_WITH(slerp(a, b, 0.5), Catch::Contains("tensor 'w' has shape [1, 2] in model 1 but [2, 1] in model 0"));
}

TEST_CASE("slerp on models: a non-floating output dtype", "[methods][slerp][errors]") {
  tensor_set a, b;
  a.add("w", std::vector<float>{1}, {1});
  b.add("w", std::vector<float>{1}, {1});
  REQUIRE_THROWS_MATCHES(slerp(a, b, 0.5, {.out_dtype = dtype::i32}), error,
                         Catch::Predicate<error>([](const error& e) { return has_code(e, errc::dtype_mismatch); }));
}
