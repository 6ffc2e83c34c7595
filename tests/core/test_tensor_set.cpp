// Tests for alloy/core/tensor_set.hpp (tensor_set, named_views_of, shape helpers) and
// alloy/core/matrix_ref.hpp (matrix_ref, as_matrix).
#include <catch2/catch.hpp>

#include "support/storage_types.hpp"

#include <alloy/adapters/xtensor.hpp>
#include <alloy/core/matrix_ref.hpp>
#include <alloy/core/tensor_set.hpp>

#include <array>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <map>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include <xtensor/xtensor.hpp>

namespace {

using alloy::bf16;
using alloy::dtype;
using alloy::errc;
using alloy::fp16;
using alloy::tensor_set;
using shape_t = std::vector<std::size_t>;

// Runs f, which must throw alloy::error with code `code`; returns the message.
template <class F>
std::string error_of(F&& f, errc code) {
  try {
    f();
  } catch (const alloy::error& e) {
    CHECK(e.code() == code);
    return e.what();
  } catch (...) {
    FAIL("threw something other than alloy::error");
  }
  FAIL("did not throw");
  return {};
}

std::vector<std::string> names(const tensor_set& s) {
  std::vector<std::string> out;
  for (const auto& e : s) out.push_back(e.name());
  return out;
}

bool aligned64(const void* p) { return reinterpret_cast<std::uintptr_t>(p) % 64 == 0; }

}  // namespace

TEST_CASE("tensor_set keeps insertion order", "[tensor_set]") {
  tensor_set s;
  CHECK(s.empty());
  CHECK(s.size() == 0);
  s.add("z.weight", std::vector<float>{1, 2});
  s.add("a.bias", std::vector<double>{3});
  s.add("m.scale", std::vector<bf16>{bf16(0.5f)});
  s.add("b", dtype::f16, {2, 2});
  CHECK_FALSE(s.empty());
  CHECK(s.size() == 4);
  CHECK(names(s) == std::vector<std::string>{"z.weight", "a.bias", "m.scale", "b"});

  // Also through the mutable iterators, and through named_views_of.
  std::vector<std::string> seen;
  for (auto& e : s) seen.push_back(e.name());
  CHECK(seen == names(s));
  const auto views = alloy::named_views_of(s);
  REQUIRE(views.size() == 4);
  CHECK(views[0].name == "z.weight");
  CHECK(views[3].name == "b");
  CHECK(views[3].shape == shape_t{2, 2});
  CHECK(views[2].view.type == dtype::bf16);
}

TEST_CASE("tensor_set add, find, at and contains", "[tensor_set]") {
  tensor_set s;
  s.add("w", std::vector<float>{1, 2, 3, 4, 5, 6}, {2, 3});
  s.add("b", std::vector<double>{7, 8});

  CHECK(s.contains("w"));
  CHECK(s.contains("b"));
  CHECK_FALSE(s.contains("x"));
  CHECK_FALSE(s.contains(""));
  CHECK_FALSE(s.contains("W"));  // names are case-sensitive

  const auto* w = s.find("w");
  REQUIRE(w != nullptr);
  CHECK(w->name() == "w");
  CHECK(w->type() == dtype::f32);
  CHECK(w->shape() == shape_t{2, 3});
  CHECK(w->size() == 6);
  CHECK(w->bytes() == 24);
  CHECK(s.find("x") == nullptr);

  const auto& b = s.at("b");
  CHECK(b.type() == dtype::f64);
  CHECK(b.shape() == shape_t{2});  // default shape: shape_of the source
  CHECK(alloy_test::values(b.values<double>()) == std::vector<double>{7, 8});

  // The data is a copy, and writable through the entry.
  auto wv = s.at("w").values<float>();
  CHECK(std::vector<float>(wv.begin(), wv.end()) == std::vector<float>{1, 2, 3, 4, 5, 6});
  wv[0] = 10;
  CHECK(s.at("w").values<float>()[0] == 10);
  const tensor_set& cs = s;
  STATIC_REQUIRE(std::is_same_v<decltype(cs.at("w").values<float>()), std::span<const float>>);
  STATIC_REQUIRE(std::is_same_v<decltype(cs.at("w").view()), alloy::tensor_view>);
  STATIC_REQUIRE(std::is_same_v<decltype(s.at("w").view()), alloy::mutable_tensor_view>);
  CHECK(cs.at("w").view().data == wv.data());
  CHECK(cs.at("w").view().size == 6);

  // add(name, dtype, shape) zero-fills and returns a view to fill.
  auto v = s.add("z", dtype::bf16, {3});
  CHECK(v.type == dtype::bf16);
  CHECK(v.size == 3);
  CHECK(alloy_test::values(s.at("z").values<bf16>()) == std::vector<double>{0, 0, 0});
  static_cast<bf16*>(v.data)[1] = bf16(2.0f);
  CHECK(alloy_test::values(s.at("z").values<bf16>()) == std::vector<double>{0, 2, 0});

  // no_init: the contents are the caller's to write.
  auto u = s.add("u", dtype::f32, {4}, alloy::no_init);
  CHECK(u.size == 4);
  CHECK(s.at("u").shape() == shape_t{4});
}

TEST_CASE("tensor_set add from each storage type keeps dtype and values", "[tensor_set]") {
  tensor_set s;
  s.add("f32", std::vector<float>{1.5f});
  s.add("f64", std::array<double, 2>{1, 2});
  s.add("bf16", std::vector<bf16>{bf16(3.0f)});
  s.add("f16", std::vector<fp16>{fp16(-4.0f)});
  xt::xtensor<float, 2> x = {{1, 2, 3}, {4, 5, 6}};
  s.add("xt", x);
  CHECK(s.at("f32").type() == dtype::f32);
  CHECK(s.at("f64").type() == dtype::f64);
  CHECK(s.at("bf16").type() == dtype::bf16);
  CHECK(s.at("f16").type() == dtype::f16);
  CHECK(s.at("xt").type() == dtype::f32);
  CHECK(s.at("xt").shape() == shape_t{2, 3});  // shape_of an xtensor
  CHECK(alloy_test::values(s.at("f16").values<fp16>()) == std::vector<double>{-4});
  CHECK(alloy_test::values(s.at("xt").values<float>()) == std::vector<double>{1, 2, 3, 4, 5, 6});
  // An explicit shape overrides the source's, if the element count agrees.
  s.add("xt_flat", x, {6});
  CHECK(s.at("xt_flat").shape() == shape_t{6});
  s.add("xt_3d", x, {3, 1, 2});
  CHECK(s.at("xt_3d").shape() == shape_t{3, 1, 2});
}

TEST_CASE("tensor_set errors", "[tensor_set]") {
  tensor_set s;
  s.add("w", std::vector<float>{1, 2});

  SECTION("duplicate name") {
    auto msg = error_of([&] { s.add("w", std::vector<float>{3}); }, errc::duplicate_name);
    CHECK_THAT(msg, Catch::Contains("'w'"));
    error_of([&] { s.add("w", dtype::f64, {1}); }, errc::duplicate_name);
    error_of([&] { s.add("w", dtype::f64, {1}, alloy::no_init); }, errc::duplicate_name);
    CHECK(s.size() == 1);  // nothing was added
    CHECK(s.at("w").type() == dtype::f32);
  }
  SECTION("at() of a missing name") {
    auto msg = error_of([&] { (void)s.at("missing"); }, errc::missing_tensor);
    CHECK_THAT(msg, Catch::Contains("'missing'"));
    const tensor_set& cs = s;
    error_of([&] { (void)cs.at("missing"); }, errc::missing_tensor);
    error_of([&] { (void)tensor_set{}.at(""); }, errc::missing_tensor);
  }
  SECTION("values<T>() with the wrong T") {
    auto msg = error_of([&] { (void)s.at("w").values<double>(); }, errc::dtype_mismatch);
    CHECK_THAT(msg, Catch::Contains("F32") && Catch::Contains("F64") && Catch::Contains("'w'"));
    error_of([&] { (void)s.at("w").values<bf16>(); }, errc::dtype_mismatch);
    const tensor_set& cs = s;
    error_of([&] { (void)cs.at("w").values<fp16>(); }, errc::dtype_mismatch);
  }
  SECTION("a shape that does not hold the tensor's elements") {
    auto msg = error_of([&] { s.add("x", std::vector<float>{1, 2, 3}, {2, 2}); }, errc::shape_mismatch);
    CHECK_THAT(msg, Catch::Contains("[2, 2]") && Catch::Contains("3 elements") && Catch::Contains("'x'"));
    error_of([&] { s.add("x", std::vector<float>{1, 2, 3}, {0}); }, errc::shape_mismatch);
    error_of([&] { s.add("x", std::vector<float>{}, {1}); }, errc::shape_mismatch);
    CHECK_FALSE(s.contains("x"));
  }
  SECTION("a shape whose element count overflows") {
    const std::size_t big = std::size_t{1} << (std::numeric_limits<std::size_t>::digits / 2 + 1);
    error_of([&] { s.add("x", dtype::f32, {big, big}); }, errc::invalid_argument);
    error_of([&] { s.add("x", std::vector<float>{1}, {big, big}); }, errc::invalid_argument);
    error_of([&] { (void)alloy::shape_elements({big, big}, "x"); }, errc::invalid_argument);
    // Elements fit, bytes do not.
    const std::size_t max = std::numeric_limits<std::size_t>::max();
    error_of([&] { s.add("x", dtype::f64, {max / 4}); }, errc::invalid_argument);
    CHECK_FALSE(s.contains("x"));
    // A zero extent makes the product 0, whatever the others are.
    CHECK(alloy::shape_elements({big, 0, big}) == 0);
  }
}

TEST_CASE("tensor_set shape helpers", "[tensor_set]") {
  CHECK(alloy::shape_elements({}) == 1);  // a scalar
  CHECK(alloy::shape_elements({0}) == 0);
  CHECK(alloy::shape_elements({2, 3, 4}) == 24);
  CHECK(alloy::shape_string({}) == "[]");
  CHECK(alloy::shape_string({2, 3}) == "[2, 3]");
}

TEST_CASE("tensor_set zero-size tensors", "[tensor_set]") {
  tensor_set s;
  s.add("empty", std::vector<float>{});
  s.add("zero_rows", dtype::bf16, {0, 4});
  s.add("from_shape", std::vector<double>{}, {3, 0});
  for (const auto& e : s) {
    CHECK(e.size() == 0);
    CHECK(e.bytes() == 0);
    CHECK(e.view().data != nullptr);  // a distinct allocation, still aligned
    CHECK(aligned64(e.view().data));
  }
  CHECK(s.at("empty").shape() == shape_t{0});
  CHECK(s.at("zero_rows").shape() == shape_t{0, 4});
  CHECK(s.at("from_shape").shape() == shape_t{3, 0});
  CHECK(s.at("zero_rows").values<bf16>().empty());
  // A 0-d tensor has one element.
  s.add("scalar", dtype::f32, {});
  CHECK(s.at("scalar").size() == 1);
  tensor_set copy = s;
  CHECK(names(copy) == names(s));
}

TEST_CASE("tensor_set copy and move", "[tensor_set]") {
  tensor_set s;
  s.add("a", std::vector<float>{1, 2, 3});
  s.add("b", std::vector<bf16>{bf16(4.0f)}, {1, 1});

  tensor_set c = s;  // deep copy
  REQUIRE(names(c) == names(s));
  CHECK(c.at("b").shape() == shape_t{1, 1});
  CHECK(c.at("b").type() == dtype::bf16);
  CHECK(c.at("a").view().data != s.at("a").view().data);
  c.at("a").values<float>()[0] = 100;
  CHECK(s.at("a").values<float>()[0] == 1);
  CHECK(c.at("a").values<float>()[0] == 100);
  c.add("c", dtype::f32, {1});
  CHECK_FALSE(s.contains("c"));  // the name index is copied too, not shared

  tensor_set assigned;
  assigned.add("old", dtype::f32, {1});
  assigned = s;
  CHECK(names(assigned) == names(s));
  CHECK_FALSE(assigned.contains("old"));
  const tensor_set& self = assigned;
  assigned = self;  // self-assignment keeps the contents
  CHECK(names(assigned) == names(s));
  CHECK(assigned.at("a").values<float>()[2] == 3);

  // Moves keep the buffers: views taken before a move stay valid.
  const void* data = s.at("a").view().data;
  tensor_set m = std::move(s);
  CHECK(m.at("a").view().data == data);
  CHECK(names(m) == std::vector<std::string>{"a", "b"});
  tensor_set m2;
  m2 = std::move(m);
  CHECK(m2.at("a").view().data == data);
  CHECK(m2.contains("b"));
  STATIC_REQUIRE(std::is_nothrow_move_constructible_v<tensor_set>);
  STATIC_REQUIRE(std::is_nothrow_move_assignable_v<tensor_set>);
}

TEST_CASE("tensor_set data is 64-byte aligned", "[tensor_set]") {
  tensor_set s;
  for (std::size_t n : {1u, 3u, 17u, 64u, 1000u}) {
    s.add("f" + std::to_string(n), dtype::f32, {n});
    s.add("h" + std::to_string(n), dtype::bf16, {n});
  }
  // A source at an odd address is copied into aligned storage.
  std::vector<float> src(9, 1.0f);
  s.add("offset", std::span<const float>(src).subspan(1));
  for (const auto& e : s) {
    INFO(e.name());
    CHECK(aligned64(e.view().data));
  }
  const tensor_set c = s;
  for (const auto& e : c) CHECK(aligned64(e.view().data));
  CHECK(alloy_test::values(c.at("offset").values<float>()) == std::vector<double>(8, 1.0));
}

TEST_CASE("tensor_set named_views_of a std::map and a vector of pairs", "[tensor_set]") {
  std::map<std::string, std::vector<float>> m{{"b", {1, 2}}, {"a", {3}}};
  const auto mv = alloy::named_views_of(m);
  REQUIRE(mv.size() == 2);
  CHECK(mv[0].name == "a");  // a std::map iterates in key order
  CHECK(mv[1].name == "b");
  CHECK(mv[1].view.data == m["b"].data());
  CHECK(mv[1].view.size == 2);
  CHECK(mv[1].shape == shape_t{2});

  std::vector<std::pair<std::string, xt::xtensor<float, 2>>> v;
  v.emplace_back("w2", xt::xtensor<float, 2>{{1, 2, 3}, {4, 5, 6}});
  v.emplace_back("w1", xt::xtensor<float, 2>{{1}, {2}});
  const auto vv = alloy::named_views_of(v);
  REQUIRE(vv.size() == 2);
  CHECK(vv[0].name == "w2");  // iteration order
  CHECK(vv[0].shape == shape_t{2, 3});
  CHECK(vv[1].shape == shape_t{2, 1});
  CHECK(vv[0].view.type == dtype::f32);

  std::vector<std::pair<std::string, std::vector<bf16>>> dup{{"x", {}}, {"y", {}}, {"x", {}}};
  auto msg = error_of([&] { (void)alloy::named_views_of(dup); }, errc::duplicate_name);
  CHECK_THAT(msg, Catch::Contains("'x'"));

  std::vector<std::pair<std::string, std::vector<float>>> none;
  CHECK(alloy::named_views_of(none).empty());
}

TEST_CASE("tensor_set matrix_ref: as_matrix views a contiguous tensor as rows x cols", "[matrix_ref]") {
  std::vector<float> v{1, 2, 3, 4, 5, 6};
  auto m = alloy::as_matrix(v, 2, 3);
  STATIC_REQUIRE(std::is_same_v<decltype(m), alloy::matrix_ref<float>>);
  CHECK(m.data == v.data());
  CHECK(m.rows == 2);
  CHECK(m.cols == 3);
  CHECK(m.row_stride == 3);
  CHECK(m(1, 0) == 4);
  CHECK(m(0, 2) == 3);
  CHECK(m.row(1).size() == 3);
  CHECK(m.row(1)[2] == 6);
  m(1, 1) = 50;
  CHECK(v[4] == 50);

  const std::vector<bf16> cb{bf16(1.0f), bf16(2.0f)};
  auto cm = alloy::as_matrix(cb, 2, 1);
  STATIC_REQUIRE(std::is_same_v<decltype(cm), alloy::matrix_ref<const bf16>>);
  CHECK(static_cast<float>(cm(1, 0)) == 2.0f);
  alloy::matrix_ref<const float> converted = m;
  CHECK(converted(1, 1) == 50);

  // A sub-block through the row stride: the right 2 columns.
  alloy::matrix_ref<float> block{v.data() + 1, 2, 2, 3};
  CHECK(block(0, 0) == 2);
  CHECK(block(1, 1) == 6);

  xt::xtensor<double, 2> x = {{1, 2}, {3, 4}};
  CHECK(alloy::as_matrix(x, 2, 2)(1, 0) == 3.0);
  CHECK(alloy::as_matrix(x, 4, 1)(3, 0) == 4.0);

  // Empty tensors: any shape with 0 elements.
  std::vector<float> e;
  CHECK(alloy::as_matrix(e, 0, 5).rows == 0);
  CHECK(alloy::as_matrix(e, 3, 0).cols == 0);
}

TEST_CASE("tensor_set matrix_ref: as_matrix size mismatch", "[matrix_ref]") {
  std::vector<float> v(6);
  auto msg = error_of([&] { (void)alloy::as_matrix(v, 4, 2); }, errc::size_mismatch);
  CHECK_THAT(msg, Catch::Contains("6 elements") && Catch::Contains("4 x 2"));
  error_of([&] { (void)alloy::as_matrix(v, 2, 2); }, errc::size_mismatch);
  error_of([&] { (void)alloy::as_matrix(v, 4, 1); }, errc::size_mismatch);  // 6 % 4 != 0
  error_of([&] { (void)alloy::as_matrix(v, 0, 6); }, errc::size_mismatch);
  std::vector<float> e;
  error_of([&] { (void)alloy::as_matrix(e, 1, 1); }, errc::size_mismatch);
  std::vector<float> one(1);
  error_of([&] { (void)alloy::as_matrix(one, 0, 1); }, errc::size_mismatch);  // 0 rows hold nothing
}
