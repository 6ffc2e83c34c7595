#include <alloy/methods/soup.hpp>

#include "support/storage_types.hpp"

#include <catch2/catch.hpp>

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
using scalars = std::tuple<float, double, bf16, fp16>;
}  // namespace

TEMPLATE_LIST_TEST_CASE("uniform_soup and weighted_average: worked example on every storage type", "[methods][soup]",
                        alloy_test::storage_types) {
  // a = {1, 2, 3}, b = {3, 4, 5}, c = {5, 6, 10}: every value and every result below is exact
  // in all four storage types.
  auto a = alloy_test::make_tensor<TestType>({1, 2, 3}), b = alloy_test::make_tensor<TestType>({3, 4, 5}), c = alloy_test::make_tensor<TestType>({5, 6, 10});
  auto out = alloy_test::zeros<TestType>(3);
  // mean: (1+3+5)/3 = 3, (2+4+6)/3 = 4, (3+5+10)/3 = 6
  uniform_soup({a.get(), b.get(), c.get()}, out.get());
  CHECK(values(out) == std::vector<double>{3, 4, 6});
  // weights {2, 1, 1}, normalized: (2a + b + c) / 4 = {10/4, 14/4, 21/4} = {2.5, 3.5, 5.25}
  weighted_average({a.get(), b.get(), c.get()}, {2, 1, 1}, out.get());
  CHECK(values(out) == std::vector<double>{2.5, 3.5, 5.25});
  // not normalized: 2a + b + c = {10, 14, 21}
  weighted_average({a.get(), b.get(), c.get()}, {2, 1, 1}, out.get(), {.normalize = false});
  CHECK(values(out) == std::vector<double>{10, 14, 21});
}

TEMPLATE_LIST_TEST_CASE("uniform_soup: every output type from every input type", "[methods][soup]", scalars) {
  // (0.5 + 1.25) / 2 = 0.875 and (-3 + 7) / 2 = 2: exact everywhere.
  const auto a = vec<TestType>({0.5, -3}), b = vec<TestType>({1.25, 7});
  std::vector<float> of(2);
  std::vector<double> od(2);
  std::vector<bf16> ob(2);
  std::vector<fp16> oh(2);
  uniform_soup({a, b}, of);
  uniform_soup({a, b}, od);
  uniform_soup({a, b}, ob);
  uniform_soup({a, b}, oh);
  const std::vector<double> expect{0.875, 2};
  CHECK(dbl(of) == expect);
  CHECK(od == expect);
  CHECK(dbl(ob) == expect);
  CHECK(dbl(oh) == expect);
}

TEMPLATE_LIST_TEST_CASE("uniform_soup of identical models is that model", "[methods][soup]", scalars) {
  std::mt19937 gen(7);
  std::normal_distribution<float> dist(0.f, 3.f);
  std::vector<TestType> x(1001);
  for (auto& v : x) v = static_cast<TestType>(dist(gen));
  std::vector<TestType> out(x.size());
  // N = 2 and 4: the sum N x and the division by N are exact in any binary format.
  uniform_soup({x, x}, out);
  CHECK(dbl(out) == dbl(x));
  uniform_soup({x, x, x, x}, out);
  CHECK(dbl(out) == dbl(x));
  if constexpr (sizeof(TestType) == 2) {  // widened to float, 3x is exact too
    uniform_soup({x, x, x}, out);
    CHECK(dbl(out) == dbl(x));
  }
}

TEST_CASE("weighted_average rounds like mergekit's float32 linear merge", "[methods][soup]") {
  // mergekit: res = (w * x).sum(0) / w.sum(0), all in float32, summed from model 0 up.
  std::mt19937 gen(1);
  std::uniform_real_distribution<float> dist(-1.f, 1.f);
  const std::size_t n = 4099;
  std::vector<std::vector<float>> m(3, std::vector<float>(n));
  for (auto& v : m)
    for (auto& x : v) x = dist(gen);
  const std::vector<double> w{0.1, 0.2, 0.3};
  std::vector<float> out(n);
  weighted_average(m, w, out);
  const float wf[3] = {0.1f, 0.2f, 0.3f};
  const float d = (wf[0] + wf[1]) + wf[2];
  for (std::size_t i = 0; i < n; ++i) {
    const float expect = ((m[0][i] * wf[0] + m[1][i] * wf[1]) + m[2][i] * wf[2]) / d;
    REQUIRE(out[i] == expect);
  }
}

TEST_CASE("uniform_soup: identical bits for any thread count", "[methods][soup]") {
  const std::size_t n = 2 * parallel_chunk + 12345;  // three work items, the last ragged
  std::mt19937 gen(3);
  std::normal_distribution<float> dist;
  std::vector<std::vector<bf16>> m(3, std::vector<bf16>(n));
  for (auto& v : m)
    for (auto& x : v) x = bf16(dist(gen));
  std::vector<bf16> one(n), two(n), three(n);
  uniform_soup(m, one, {.exec = {1}});
  uniform_soup(m, two, {.exec = {2}});
  uniform_soup(m, three, {.exec = {3}});
  CHECK(std::memcmp(one.data(), two.data(), n * 2) == 0);
  CHECK(std::memcmp(one.data(), three.data(), n * 2) == 0);
}

TEST_CASE("uniform_soup in place: the output may be one of the models", "[methods][soup]") {
  std::vector<float> a{1, 2, 3}, b{3, 4, 7};
  uniform_soup({a, b}, a);
  CHECK(a == std::vector<float>{2, 3, 5});
}

TEST_CASE("uniform_soup: zero-length tensors give a zero-length result", "[methods][soup]") {
  std::vector<float> a, b, out;
  REQUIRE_NOTHROW(uniform_soup({a, b}, out));
}

TEST_CASE("uniform_soup: NaN and Inf propagate", "[methods][soup]") {
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<float> a{std::numeric_limits<float>::quiet_NaN(), inf, inf}, b{1, 1, -inf}, out(3);
  uniform_soup({a, b}, out);
  CHECK(std::isnan(out[0]));
  CHECK(out[1] == inf);
  CHECK(std::isnan(out[2]));  // inf + -inf
}

TEST_CASE("uniform_soup and weighted_average on whole models", "[methods][soup]") {
  tensor_set a, b;
  a.add("layer.weight", std::vector<float>{1, 2, 3, 4}, {2, 2});
  a.add("layer.bias", std::vector<bf16>{bf16(1.f), bf16(3.f)}, {2});
  b.add("layer.bias", std::vector<bf16>{bf16(3.f), bf16(5.f)}, {2});  // other order: matched by name
  b.add("layer.weight", std::vector<float>{3, 4, 5, 6}, {2, 2});
  const tensor_set soup = uniform_soup({a, b});
  REQUIRE(soup.size() == 2);
  CHECK(soup.begin()->name() == "layer.weight");  // the first model gives the order
  CHECK(soup.at("layer.weight").shape() == std::vector<std::size_t>{2, 2});
  CHECK(dbl(std::vector<float>(soup.at("layer.weight").values<float>().begin(),
                               soup.at("layer.weight").values<float>().end())) == std::vector<double>{2, 3, 4, 5});
  CHECK(soup.at("layer.bias").type() == dtype::bf16);  // default: the first model's dtype
  CHECK(static_cast<float>(soup.at("layer.bias").values<bf16>()[1]) == 4.f);

  // std::map models, weights {3, 1} normalized, output as double: (3*1 + 3)/4 = 1.5, (3*3 + 5)/4 = 3.5
  std::map<std::string, std::vector<float>> ma{{"b", {1, 3}}}, mb{{"b", {3, 5}}};
  const std::vector<std::map<std::string, std::vector<float>>> maps{ma, mb};
  const tensor_set avg = weighted_average(maps, {3, 1}, {.out_dtype = dtype::f64});
  CHECK(avg.at("b").type() == dtype::f64);
  CHECK(avg.at("b").values<double>()[0] == 1.5);
  CHECK(avg.at("b").values<double>()[1] == 3.5);
}

// ---- bad input: one test per case -------------------------------------------------------

TEST_CASE("uniform_soup: no models", "[methods][soup][errors]") {
  std::vector<std::vector<float>> none;
  std::vector<float> out;
  REQUIRE_THROWS_MATCHES(uniform_soup(none, out), error,
                         Catch::Predicate<error>([](const error& e) { return e.code() == errc::empty_input; }));
  REQUIRE_THROWS_WITH(uniform_soup(none, out), Catch::Contains("at least 1 model"));
}

TEST_CASE("weighted_average: weight count mismatch", "[methods][soup][errors]") {
  std::vector<float> a{1}, b{2}, out(1);
  REQUIRE_THROWS_WITH(weighted_average({a, b}, {1.0}, out), Catch::Contains("1 weights for 2 models"));
}

TEST_CASE("weighted_average: non-finite weight", "[methods][soup][errors]") {
  std::vector<float> a{1}, b{2}, out(1);
  REQUIRE_THROWS_WITH(weighted_average({a, b}, {1.0, std::numeric_limits<double>::quiet_NaN()}, out),
                      Catch::Contains("weight of model 1") && Catch::Contains("nan"));
}

TEST_CASE("weighted_average: weights summing to zero with normalize", "[methods][soup][errors]") {
  std::vector<float> a{1}, b{2}, out(1);
  REQUIRE_THROWS_WITH(weighted_average({a, b}, {1.0, -1.0}, out), Catch::Contains("sum to 0"));
  REQUIRE_NOTHROW(weighted_average({a, b}, {1.0, -1.0}, out, {.normalize = false}));
  CHECK(out[0] == -1.f);
}

TEST_CASE("uniform_soup: model size mismatch", "[methods][soup][errors]") {
  std::vector<float> a{1, 2}, b{2, 3, 4}, out(2);
  REQUIRE_THROWS_WITH(uniform_soup({a, b}, out), Catch::Contains("model 1 has 3 elements, model 0 has 2"));
}

TEST_CASE("uniform_soup: output size mismatch", "[methods][soup][errors]") {
  std::vector<float> a{1, 2}, b{2, 3}, out(3);
  REQUIRE_THROWS_WITH(uniform_soup({a, b}, out), Catch::Contains("the output has 3 elements"));
}

TEST_CASE("uniform_soup: output overlapping an input", "[methods][soup][errors]") {
  std::vector<float> buf{1, 2, 3, 4, 5}, b{1, 1, 1, 1};
  const std::span<const float> a(buf.data(), 4);
  const std::span<float> out(buf.data() + 1, 4);
  REQUIRE_THROWS_MATCHES(uniform_soup({tensor_view(a), tensor_view(b)}, out), error,
                         Catch::Predicate<error>([](const error& e) { return e.code() == errc::aliasing; }));
  CHECK(buf == std::vector<float>{1, 2, 3, 4, 5});  // nothing was written
}

TEST_CASE("uniform_soup: a dtype that cannot be merged", "[methods][soup][errors]") {
  std::vector<int> ints{1, 2};
  std::vector<float> f{1, 2}, out(2);
  REQUIRE_THROWS_WITH(uniform_soup({tensor_view(ints.data(), 2, dtype::i32), tensor_view(f)}, out),
                      Catch::Contains("model 0 has dtype I32"));
}

TEST_CASE("uniform_soup on models: a tensor missing in one model", "[methods][soup][errors]") {
  tensor_set a, b;
  a.add("w", std::vector<float>{1}, {1});
  a.add("v", std::vector<float>{1}, {1});
  b.add("w", std::vector<float>{1}, {1});
  b.add("u", std::vector<float>{1}, {1});
  REQUIRE_THROWS_WITH(uniform_soup({a, b}), Catch::Contains("model 1 has no tensor 'v'"));
}

TEST_CASE("uniform_soup on models: an extra tensor in one model", "[methods][soup][errors]") {
  tensor_set a, b;
  a.add("w", std::vector<float>{1}, {1});
  b.add("w", std::vector<float>{1}, {1});
  b.add("extra", std::vector<float>{1}, {1});
  REQUIRE_THROWS_WITH(uniform_soup({a, b}), Catch::Contains("model 1 has tensor 'extra' that model 0 lacks"));
}

TEST_CASE("uniform_soup on models: shape mismatch", "[methods][soup][errors]") {
  tensor_set a, b;
  a.add("w", std::vector<float>{1, 2, 3, 4, 5, 6}, {2, 3});
  b.add("w", std::vector<float>{1, 2, 3, 4, 5, 6}, {3, 2});
  REQUIRE_THROWS_MATCHES(uniform_soup({a, b}), error, Catch::Predicate<error>([](const error& e) {
                           return e.code() == errc::shape_mismatch &&
                                  std::string(e.what()).find("'w' has shape [3, 2] in model 1 but [2, 3] in model 0") !=
                                      std::string::npos;
                         }));
}

TEST_CASE("uniform_soup on models: an empty model", "[methods][soup][errors]") {
  tensor_set a, b;
  REQUIRE_THROWS_MATCHES(uniform_soup({a, b}), error,
                         Catch::Predicate<error>([](const error& e) { return e.code() == errc::empty_input; }));
}
