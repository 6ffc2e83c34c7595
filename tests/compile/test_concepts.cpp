// The concept rules of alloy/core/tensor.hpp, tensor_set.hpp and the adapters, proved with
// static_asserts (models and non-models), plus runtime checks that the adapters point at
// the right memory with the right shape and dtype, and that tests/support/storage_types.hpp
// builds and reads back every storage type.
#include <catch2/catch.hpp>

#include "support/storage_types.hpp"

#include <alloy/adapters/xtensor.hpp>
#if ALLOY_TEST_HAVE_EIGEN
#include <alloy/adapters/eigen.hpp>
#endif
#include <alloy/alloy.hpp>

#include <array>
#include <cstddef>
#include <list>
#include <map>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include <xtensor/xadapt.hpp>
#include <xtensor/xarray.hpp>
#include <xtensor/xfixed.hpp>
#include <xtensor/xstrided_view.hpp>
#include <xtensor/xtensor.hpp>
#include <xtensor/xview.hpp>

namespace {

using alloy::bf16;
using alloy::fp16;
using alloy::mutable_tensor_like;
using alloy::named_tensors;
using alloy::tensor_like;

// A model of tensor_like (and of mutable_tensor_like unless Mutable is false) whose scalar
// is E.
template <class T, class E, bool Mutable = true>
constexpr bool models_tensor =
    tensor_like<T> && mutable_tensor_like<T> == Mutable && std::same_as<alloy::tensor_scalar_t<T>, E>;

// ------------------------------------------------------------------ standard containers

static_assert(models_tensor<std::vector<float>, float>);
static_assert(models_tensor<std::vector<double>, double>);
static_assert(models_tensor<std::vector<bf16>, bf16>);
static_assert(models_tensor<std::vector<fp16>, fp16>);
static_assert(models_tensor<std::vector<float>&, float>);  // references are looked through

// Element types that are not storage scalars.
static_assert(!tensor_like<std::vector<int>>);
static_assert(!tensor_like<std::vector<long double>>);
static_assert(!tensor_like<std::vector<std::uint16_t>>);  // raw bits: wrap them as bf16/fp16
// Not contiguous.
static_assert(!tensor_like<std::list<float>>);
// Not a range of scalars.
static_assert(!tensor_like<std::vector<std::vector<float>>>);
static_assert(!tensor_like<float>);
static_assert(!tensor_like<float*>);  // a pointer has no size

static_assert(models_tensor<std::array<bf16, 4>, bf16>);
static_assert(models_tensor<std::array<double, 0>, double>);

// Built-in arrays are contiguous sized ranges, so as_span accepts them (with their static
// extent as the size). Pointers that decayed from them are not accepted.
static_assert(models_tensor<float[8], float>);
static_assert(models_tensor<bf16[3], bf16>);
static_assert(models_tensor<const float[8], float, false>);

// std::span: mutability comes from the element type, not from the span's own constness
// (a span is a view, like a pointer).
static_assert(models_tensor<std::span<float>, float>);
static_assert(models_tensor<const std::span<float>, float>);
static_assert(models_tensor<std::span<bf16, 4>, bf16>);
static_assert(models_tensor<std::span<const float>, float, false>);
static_assert(models_tensor<std::span<const fp16>, fp16, false>);

// A const container is readable, not writable.
static_assert(models_tensor<const std::vector<float>, float, false>);
static_assert(models_tensor<const std::vector<float>&, float, false>);
static_assert(models_tensor<const std::array<bf16, 4>, bf16, false>);

// alloy's own views are what methods take; they are not tensor_like themselves (they are
// built from tensor_like objects, and a view of a view would be ambiguous).
static_assert(!tensor_like<alloy::tensor_view>);
static_assert(!tensor_like<alloy::mutable_tensor_view>);
static_assert(std::is_convertible_v<const std::vector<float>&, alloy::tensor_view>);
static_assert(std::is_convertible_v<std::vector<float>&, alloy::mutable_tensor_view>);
static_assert(!std::is_convertible_v<const std::vector<float>&, alloy::mutable_tensor_view>);
static_assert(!std::is_convertible_v<std::span<const float>, alloy::mutable_tensor_view>);
static_assert(std::is_convertible_v<std::span<float>, alloy::mutable_tensor_view>);
static_assert(!std::is_convertible_v<std::vector<int>&, alloy::tensor_view>);

// matrix_ref keeps constness.
static_assert(std::same_as<decltype(alloy::as_matrix(std::declval<std::vector<float>&>(), 1, 1)),
                           alloy::matrix_ref<float>>);
static_assert(std::same_as<decltype(alloy::as_matrix(std::declval<const std::vector<bf16>&>(), 1, 1)),
                           alloy::matrix_ref<const bf16>>);
static_assert(std::is_convertible_v<alloy::matrix_ref<float>, alloy::matrix_ref<const float>>);
static_assert(!std::is_convertible_v<alloy::matrix_ref<const float>, alloy::matrix_ref<float>>);

// --------------------------------------------------------------------------- xtensor

static_assert(models_tensor<xt::xtensor<float, 1>, float>);
static_assert(models_tensor<xt::xtensor<float, 2>, float>);
static_assert(models_tensor<xt::xtensor<bf16, 3>, bf16>);
static_assert(models_tensor<xt::xtensor<fp16, 0>, fp16>);
static_assert(models_tensor<const xt::xtensor<float, 2>, float, false>);
static_assert(models_tensor<xt::xarray<float>, float>);
static_assert(models_tensor<xt::xarray<double>, double>);
static_assert(models_tensor<xt::xtensor_fixed<float, xt::xshape<2, 3>>, float>);

// Layouts other than row-major.
static_assert(!tensor_like<xt::xtensor<float, 2, xt::layout_type::column_major>>);
static_assert(!tensor_like<xt::xtensor<float, 2, xt::layout_type::dynamic>>);
static_assert(!tensor_like<xt::xarray<float, xt::layout_type::column_major>>);
static_assert(!tensor_like<xt::xarray<float, xt::layout_type::dynamic>>);
static_assert(!tensor_like<xt::xtensor_fixed<float, xt::xshape<2, 3>, xt::layout_type::column_major>>);
// Other value types.
static_assert(!tensor_like<xt::xtensor<int, 1>>);
static_assert(!tensor_like<xt::xarray<long double>>);

// Adaptors: what xt::adapt returns.
using float_buffer = xt::xbuffer_adaptor<float*, xt::no_ownership, std::allocator<float>>;
using const_float_buffer = xt::xbuffer_adaptor<const float*, xt::no_ownership, std::allocator<float>>;
using adapt_ptr_shape_t = decltype(xt::adapt(std::declval<float*>(), std::size_t{6}, xt::no_ownership(),
                                             std::declval<const std::vector<std::size_t>&>()));
using adapt_const_ptr_t = decltype(xt::adapt(std::declval<const float*>(), std::size_t{6}, xt::no_ownership(),
                                             std::declval<const std::array<std::size_t, 2>&>()));
using adapt_vector_t = decltype(xt::adapt(std::declval<std::vector<float>&>(),
                                          std::declval<const std::vector<std::size_t>&>()));
using adapt_strided_t = decltype(xt::adapt(std::declval<float*>(), std::size_t{6}, xt::no_ownership(),
                                           std::declval<std::vector<std::size_t>>(),
                                           std::declval<std::vector<std::size_t>>()));
using adapt_column_major_t =
    decltype(xt::adapt<xt::layout_type::column_major>(std::declval<float*>(), std::size_t{6}, xt::no_ownership(),
                                                      std::declval<const std::vector<std::size_t>&>()));
static_assert(models_tensor<adapt_ptr_shape_t, float>);
static_assert(models_tensor<adapt_const_ptr_t, float, false>);  // over const memory
static_assert(models_tensor<adapt_vector_t, float>);
static_assert(models_tensor<xt::xtensor_adaptor<float_buffer, 2>, float>);
static_assert(models_tensor<xt::xarray_adaptor<const_float_buffer>, float, false>);
static_assert(!tensor_like<adapt_strided_t>);       // layout_type::dynamic: any strides
static_assert(!tensor_like<adapt_column_major_t>);  // column-major memory

// Views. The ones xtensor makes contiguous at compile time (row-major container; leading
// integers, at most one range, then all()s) iterate with pointers: they are contiguous
// ranges, and the adapter reads them from their first element with their own shape.
using xt2 = xt::xtensor<float, 2>;
using row_view_t = decltype(xt::view(std::declval<xt2&>(), 0, xt::all()));
using rows_view_t = decltype(xt::view(std::declval<xt2&>(), xt::range(0, 1), xt::all()));
using const_row_view_t = decltype(xt::view(std::declval<const xt2&>(), 0));
using all_view_t = decltype(xt::view(std::declval<xt2&>(), xt::all(), xt::all()));
static_assert(models_tensor<row_view_t, float>);
static_assert(models_tensor<rows_view_t, float>);
static_assert(models_tensor<all_view_t, float>);
static_assert(models_tensor<const_row_view_t, float, false>);  // a view of a const tensor
static_assert(models_tensor<const row_view_t, float, false>);  // xtensor views are deep-const
// Strided, column-major or lazy: never tensors.
using stepped_view_t = decltype(xt::view(std::declval<xt::xtensor<float, 1>&>(), xt::range(0, 8, 2)));
using column_view_t = decltype(xt::view(std::declval<xt2&>(), xt::all(), 0));
using two_ranges_view_t = decltype(xt::view(std::declval<xt2&>(), xt::range(0, 1), xt::range(0, 2)));
using newaxis_view_t = decltype(xt::view(std::declval<xt2&>(), 0, xt::newaxis(), xt::all()));
using cm_column_view_t = decltype(xt::view(std::declval<xt::xtensor<float, 2, xt::layout_type::column_major>&>(),
                                           xt::all(), 0));
using strided_view_t = decltype(xt::strided_view(std::declval<xt2&>(), {xt::range(0, 4, 2), xt::all()}));
using transpose_t = decltype(xt::transpose(std::declval<xt2&>()));
using sum_expr_t = decltype(std::declval<xt2&>() + std::declval<xt2&>());
static_assert(!tensor_like<stepped_view_t>);
static_assert(!tensor_like<column_view_t>);
static_assert(!tensor_like<two_ranges_view_t>);
static_assert(!tensor_like<newaxis_view_t>);
static_assert(!tensor_like<cm_column_view_t>);
static_assert(!tensor_like<strided_view_t>);
static_assert(!tensor_like<transpose_t>);
static_assert(!tensor_like<sum_expr_t>);

// ----------------------------------------------------------------------------- Eigen

#if ALLOY_TEST_HAVE_EIGEN
static_assert(models_tensor<Eigen::VectorXf, float>);
static_assert(models_tensor<Eigen::RowVectorXd, double>);
static_assert(models_tensor<Eigen::MatrixXf, float>);
static_assert(models_tensor<Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>, float>);
static_assert(models_tensor<Eigen::Matrix4d, double>);
static_assert(models_tensor<Eigen::ArrayXf, float>);
static_assert(models_tensor<Eigen::ArrayXXd, double>);
static_assert(models_tensor<const Eigen::VectorXf, float, false>);
static_assert(models_tensor<Eigen::Map<Eigen::VectorXf>, float>);
static_assert(models_tensor<Eigen::Map<Eigen::MatrixXd, Eigen::Aligned16>, double>);
static_assert(models_tensor<Eigen::Map<const Eigen::VectorXf>, float, false>);
static_assert(models_tensor<Eigen::Map<Eigen::ArrayXf>, float>);

static_assert(!tensor_like<Eigen::VectorXi>);
static_assert(!tensor_like<Eigen::VectorXcf>);
static_assert(!tensor_like<Eigen::Map<Eigen::VectorXf, 0, Eigen::InnerStride<2>>>);
static_assert(!tensor_like<Eigen::Map<Eigen::VectorXf, 0, Eigen::InnerStride<1>>>);  // only the default stride
static_assert(!tensor_like<Eigen::Map<Eigen::MatrixXf, 0, Eigen::OuterStride<>>>);
static_assert(!tensor_like<Eigen::Map<Eigen::MatrixXf, 0, Eigen::Stride<Eigen::Dynamic, Eigen::Dynamic>>>);
static_assert(!tensor_like<Eigen::Block<Eigen::MatrixXf>>);
static_assert(!tensor_like<decltype(std::declval<Eigen::VectorXf&>().head(3))>);
static_assert(!tensor_like<decltype(std::declval<Eigen::MatrixXf&>().col(0))>);
static_assert(!tensor_like<Eigen::Ref<Eigen::VectorXf>>);
static_assert(!tensor_like<decltype(std::declval<Eigen::MatrixXf&>().transpose())>);
static_assert(!tensor_like<decltype(std::declval<Eigen::VectorXf&>() + std::declval<Eigen::VectorXf&>())>);
// Eigen 3.4's iterators are random-access, not contiguous: the traits are the only way in.
static_assert(!std::ranges::contiguous_range<Eigen::VectorXf>);
#endif

// -------------------------------------------------------------------- named tensor sets

static_assert(named_tensors<alloy::tensor_set>);
static_assert(named_tensors<const alloy::tensor_set>);
static_assert(named_tensors<std::map<std::string, std::vector<float>>>);
static_assert(named_tensors<std::map<std::string, std::span<const bf16>>>);
static_assert(named_tensors<std::vector<std::pair<std::string, xt::xtensor<float, 2>>>>);
static_assert(named_tensors<std::vector<std::pair<std::string_view, std::vector<double>>>>);
static_assert(named_tensors<std::vector<std::tuple<const char*, std::array<fp16, 2>>>>);
#if ALLOY_TEST_HAVE_EIGEN
static_assert(named_tensors<std::map<std::string, Eigen::MatrixXf>>);
#endif

static_assert(!named_tensors<std::vector<std::vector<float>>>);     // no names
static_assert(!named_tensors<std::map<int, std::vector<float>>>);   // names are not strings
static_assert(!named_tensors<std::map<std::string, std::vector<int>>>);  // not tensors
static_assert(!named_tensors<std::map<std::string, std::list<float>>>);
static_assert(!named_tensors<std::vector<std::pair<std::string, xt::xtensor<float, 2, xt::layout_type::column_major>>>>);
static_assert(!named_tensors<std::vector<float>>);

// --------------------------------------------------------- tests/support/storage_types.hpp

#if ALLOY_TEST_HAVE_EIGEN
static_assert(std::tuple_size_v<alloy_test::storage_types> == 9);
#else
static_assert(std::tuple_size_v<alloy_test::storage_types> == 8);
#endif
static_assert(std::same_as<alloy_test::scalar_t<std::span<bf16>>, bf16>);
static_assert(alloy_test::dtype_v<xt::xtensor<bf16, 1>> == alloy::dtype::bf16);
static_assert(std::same_as<decltype(std::declval<alloy_test::tensor_holder<std::span<float>>&>().get()), std::span<float>>);
static_assert(std::same_as<decltype(std::declval<const alloy_test::tensor_holder<std::span<float>>&>().get()),
                           std::span<const float>>);
static_assert(std::same_as<decltype(std::declval<alloy_test::tensor_holder<std::vector<float>>&>().get()),
                           std::vector<float>&>);

}  // namespace

// ============================================================================ runtime

TEST_CASE("as_span of an xtensor points at its storage", "[concepts][xtensor]") {
  xt::xtensor<float, 2> x = {{1.f, 2.f, 3.f}, {4.f, 5.f, 6.f}};
  auto s = alloy::as_span(x);
  STATIC_REQUIRE(std::same_as<decltype(s), std::span<float>>);
  CHECK(s.data() == x.data());
  CHECK(s.data() == x.storage().data());
  CHECK(s.size() == 6);
  CHECK(s[4] == 5.f);  // row-major: element (1, 1)

  const auto& cx = x;
  auto cs = alloy::as_span(cx);
  STATIC_REQUIRE(std::same_as<decltype(cs), std::span<const float>>);
  CHECK(cs.data() == x.data());

  xt::xarray<double> a = xt::zeros<double>({2, 2, 2});
  CHECK(alloy::as_span(a).data() == a.data());
  CHECK(alloy::as_span(a).size() == 8);

  xt::xtensor<float, 1> empty = xt::xtensor<float, 1>::from_shape({0});
  CHECK(alloy::as_span(empty).empty());
}

TEST_CASE("contiguous xtensor views are read from their first element", "[concepts][xtensor]") {
  xt::xtensor<float, 3> x = xt::xtensor<float, 3>::from_shape({2, 3, 4});
  for (std::size_t i = 0; i < x.size(); ++i) x.data()[i] = static_cast<float>(i);

  auto row = xt::view(x, 1, 2);  // x[1, 2, :]: elements 20..23
  auto s = alloy::as_span(row);
  CHECK(s.data() == x.data() + 20);  // not row.data(), which is x.data()
  CHECK(s.size() == 4);
  CHECK(alloy::shape_of(row) == std::vector<std::size_t>{4});

  auto block = xt::view(x, 1, xt::range(1, 3));  // x[1, 1:3, :]: elements 16..23
  CHECK(alloy::as_span(block).data() == x.data() + 16);
  CHECK(alloy::shape_of(block) == std::vector<std::size_t>{2, 4});
  CHECK(alloy_test::values(block) == std::vector<double>{16, 17, 18, 19, 20, 21, 22, 23});

  // Merging rows of two layers into a row of a third.
  xt::xtensor<float, 2> a = {{1, 2}, {3, 4}};
  xt::xtensor<float, 2> b = {{5, 6}, {7, 8}};
  xt::xtensor<float, 2> out = xt::zeros<float>({2, 2});
  alloy::uniform_soup({xt::view(a, 1), xt::view(b, 1)}, xt::view(out, 1));
  CHECK(alloy_test::values(out) == std::vector<double>{0, 0, 5, 6});
}

TEST_CASE("as_span of xt::adapt results spans exactly the adapted memory", "[concepts][xtensor]") {
  std::vector<float> buf{1, 2, 3, 4, 5, 6};
  const std::vector<std::size_t> shape{2, 3};

  auto a = xt::adapt(buf.data(), buf.size(), xt::no_ownership(), shape);
  CHECK(alloy::as_span(a).data() == buf.data());
  CHECK(alloy::as_span(a).size() == 6);
  CHECK(alloy::shape_of(a) == std::vector<std::size_t>{2, 3});

  auto v = xt::adapt(buf, shape);
  CHECK(alloy::as_span(v).data() == buf.data());
  CHECK(alloy::shape_of(v) == std::vector<std::size_t>{2, 3});

  const float* cp = buf.data();
  auto c = xt::adapt(cp, std::size_t{6}, xt::no_ownership(), std::array<std::size_t, 2>{3, 2});
  STATIC_REQUIRE(std::same_as<decltype(alloy::as_span(c)), std::span<const float>>);
  CHECK(alloy::as_span(c).data() == buf.data());

  // Writing through an adaptor writes the buffer: a merge into caller-owned memory.
  std::vector<float> out(6);
  auto o = xt::adapt(out.data(), out.size(), xt::no_ownership(), shape);
  alloy::uniform_soup({a, c}, o);
  CHECK(out == buf);

  // A static row-major adaptor cannot be given other strides or another layout.
  CHECK_THROWS(xt::adapt(buf.data(), buf.size(), xt::no_ownership(), shape, xt::layout_type::column_major));
}

TEST_CASE("shape_of an xtensor is its shape", "[concepts][xtensor]") {
  CHECK(alloy::shape_of(xt::xtensor<float, 3>::from_shape({2, 3, 4})) == std::vector<std::size_t>{2, 3, 4});
  CHECK(alloy::shape_of(xt::xarray<float>::from_shape({5})) == std::vector<std::size_t>{5});
  CHECK(alloy::shape_of(xt::xtensor<float, 0>()) == std::vector<std::size_t>{});
  xt::xtensor<float, 0> scalar;
  CHECK(alloy::as_span(scalar).size() == 1);
  CHECK(alloy::shape_of(xt::xtensor_fixed<float, xt::xshape<2, 3>>()) == std::vector<std::size_t>{2, 3});
  // Types without a shape report their element count.
  CHECK(alloy::shape_of(std::vector<float>(7)) == std::vector<std::size_t>{7});
  CHECK(alloy::shape_of(std::array<bf16, 4>{}) == std::vector<std::size_t>{4});
}

#if ALLOY_TEST_HAVE_EIGEN
TEST_CASE("Eigen objects: storage and shape in both storage orders", "[concepts][eigen]") {
  // Column-major (Eigen's default): memory is the row-major layout of the transpose.
  Eigen::MatrixXf cm(2, 3);
  cm << 1, 2, 3, 4, 5, 6;
  CHECK(alloy::as_span(cm).data() == cm.data());
  CHECK(alloy::as_span(cm).size() == 6);
  CHECK(alloy::shape_of(cm) == std::vector<std::size_t>{3, 2});
  CHECK(alloy_test::values(cm) == std::vector<double>{1, 4, 2, 5, 3, 6});

  using row_major = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  row_major rm(2, 3);
  rm << 1, 2, 3, 4, 5, 6;
  CHECK(alloy::shape_of(rm) == std::vector<std::size_t>{2, 3});
  CHECK(alloy_test::values(rm) == std::vector<double>{1, 2, 3, 4, 5, 6});

  // Vectors are one-dimensional whatever their orientation; a one-column MatrixXf is not.
  CHECK(alloy::shape_of(Eigen::VectorXd(4)) == std::vector<std::size_t>{4});
  CHECK(alloy::shape_of(Eigen::RowVectorXf(4)) == std::vector<std::size_t>{4});
  CHECK(alloy::shape_of(Eigen::MatrixXf(4, 1)) == std::vector<std::size_t>{1, 4});
  CHECK(alloy::shape_of(Eigen::Matrix<double, 2, 3, Eigen::RowMajor>()) == std::vector<std::size_t>{2, 3});
  CHECK(alloy::shape_of(Eigen::Array33f()) == std::vector<std::size_t>{3, 3});

  // Maps point at the mapped memory.
  std::vector<float> buf{1, 2, 3, 4};
  Eigen::Map<Eigen::VectorXf> m(buf.data(), 4);
  CHECK(alloy::as_span(m).data() == buf.data());
  Eigen::Map<const Eigen::MatrixXf> cmap(buf.data(), 2, 2);
  STATIC_REQUIRE(std::same_as<decltype(alloy::as_span(cmap)), std::span<const float>>);
  CHECK(alloy::shape_of(cmap) == std::vector<std::size_t>{2, 2});

  // Merging into an Eigen vector.
  Eigen::VectorXf a(3), b(3), out(3);
  a << 1, 2, 3;
  b << 3, 4, 5;
  alloy::uniform_soup({a, b}, out);
  CHECK(alloy_test::values(out) == std::vector<double>{2, 3, 4});
}
#endif

TEST_CASE("tensor_view from each type has its dtype", "[concepts]") {
  CHECK(alloy::tensor_view(std::vector<float>(2)).type == alloy::dtype::f32);
  CHECK(alloy::tensor_view(std::vector<double>(2)).type == alloy::dtype::f64);
  CHECK(alloy::tensor_view(std::vector<bf16>(2)).type == alloy::dtype::bf16);
  CHECK(alloy::tensor_view(std::vector<fp16>(2)).type == alloy::dtype::f16);
  CHECK(alloy::tensor_view(std::array<bf16, 3>{}).type == alloy::dtype::bf16);
  float raw[8] = {};
  CHECK(alloy::tensor_view(raw).type == alloy::dtype::f32);
  CHECK(alloy::tensor_view(raw).size == 8);
  std::vector<fp16> h(5);
  CHECK(alloy::tensor_view(std::span<const fp16>(h)).type == alloy::dtype::f16);
  CHECK(alloy::mutable_tensor_view(std::span<fp16>(h)).type == alloy::dtype::f16);
  CHECK(alloy::tensor_view(xt::xtensor<bf16, 2>::from_shape({2, 2})).type == alloy::dtype::bf16);
  CHECK(alloy::tensor_view(xt::xarray<double>::from_shape({3})).type == alloy::dtype::f64);
  const xt::xtensor<fp16, 1> xh = xt::xtensor<fp16, 1>::from_shape({4});
  const alloy::tensor_view v = xh;
  CHECK(v.type == alloy::dtype::f16);
  CHECK(v.data == xh.data());
  CHECK(v.size == 4);
  CHECK(v.bytes() == 8);
#if ALLOY_TEST_HAVE_EIGEN
  CHECK(alloy::tensor_view(Eigen::VectorXf(3)).type == alloy::dtype::f32);
  CHECK(alloy::tensor_view(Eigen::MatrixXd(2, 2)).type == alloy::dtype::f64);
  CHECK(alloy::tensor_view(Eigen::ArrayXf(2)).type == alloy::dtype::f32);
#endif
}

TEMPLATE_LIST_TEST_CASE("storage_types: make_tensor and values round-trip", "[support]", alloy_test::storage_types) {
  using namespace alloy_test;
  using E = scalar_t<TestType>;
  const std::vector<double> in{1.0, -2.5, 0.1, 3.0e4, 0.0};
  auto t = make_tensor<TestType>(in);
  CHECK(t.size() == in.size());
  CHECK(alloy::tensor_view(t.get()).type == dtype_v<TestType>);
  CHECK(values(t) == round_to(dtype_v<TestType>, in));
  CHECK(values(t)[3] == round_to<E>(3.0e4));
  // get() is the tensor itself (or, for std::span, a span over the holder's memory).
  decltype(auto) tensor = t.get();
  CHECK(alloy::as_span(tensor).data() == t.span().data());

  // Copies own their elements.
  auto copy = t;
  CHECK(copy.span().data() != t.span().data());
  t.span()[0] = to_storage<E>(7.0);
  CHECK(values(copy)[0] == 1.0);
  CHECK(values(t)[0] == 7.0);

  auto z = zeros<TestType>(4);
  CHECK(values(z) == std::vector<double>(4, 0.0));
  CHECK(zeros<TestType>(0).size() == 0);
  CHECK_THROWS_AS(make_tensor<TestType>({1.0, 2.0}, {3}), std::invalid_argument);
}

TEMPLATE_LIST_TEST_CASE("storage_types: a soup through the holders", "[support]", alloy_test::storage_types) {
  using namespace alloy_test;
  auto a = make_tensor<TestType>({1.0, 2.0, 3.0});
  auto b = make_tensor<TestType>({3.0, 4.0, 6.0});
  auto out = zeros<TestType>(3);
  alloy::uniform_soup({a.get(), b.get()}, out.get());
  CHECK(values(out) == round_to(dtype_v<TestType>, {2.0, 3.0, 4.5}));

  const auto& ca = a;  // a const holder gives read-only tensors
  alloy::task_arithmetic(ca.get(), {b.get()}, {-1.0}, out.get());
  CHECK(values(out) == round_to(dtype_v<TestType>, {-1.0, 0.0, 0.0}));
}

TEST_CASE("storage_types: shapes for multi-dimensional types", "[support]") {
  using namespace alloy_test;
  auto x = make_tensor<xt::xtensor<float, 2>>({1, 2, 3, 4, 5, 6}, {2, 3});
  CHECK(alloy::shape_of(x.get()) == shape_t{2, 3});
  CHECK(x.get()(1, 0) == 4.f);
  CHECK_THROWS_AS((make_tensor<xt::xtensor<float, 2>>({1, 2, 3})), std::invalid_argument);  // rank 1 for rank 2
  auto xa = make_tensor<xt::xarray<double>>({1, 2, 3, 4}, {2, 1, 2});
  CHECK(alloy::shape_of(xa.get()) == shape_t{2, 1, 2});
  auto arr = make_tensor<std::array<bf16, 2>>({0.5, 1.5});
  CHECK(values(arr) == std::vector<double>{0.5, 1.5});
  CHECK_THROWS_AS((make_tensor<std::array<bf16, 2>>({0.5})), std::invalid_argument);
#if ALLOY_TEST_HAVE_EIGEN
  auto cm = make_tensor<Eigen::MatrixXf>({1, 2, 3, 4, 5, 6}, {3, 2});  // alloy shape {cols, rows}
  CHECK(cm.get().rows() == 2);
  CHECK(cm.get().cols() == 3);
  CHECK(cm.get()(0, 1) == 3.f);
  CHECK(alloy::shape_of(cm.get()) == shape_t{3, 2});
  auto rm = make_tensor<Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>({1, 2, 3, 4, 5, 6}, {3, 2});
  CHECK(rm.get().rows() == 3);
  CHECK(rm.get()(0, 1) == 2.0);
#endif
}

TEST_CASE("reference helpers", "[support]") {
  using namespace alloy_test;
  CHECK(round_to<bf16>(1.0 + 0x1p-8) == 1.0);  // tie to even
  CHECK(round_to<bf16>(1.0 + 0x1p-7) == 1.0 + 0x1p-7);
  CHECK(round_to<fp16>(65520.0) == std::numeric_limits<double>::infinity());
  CHECK(round_to(alloy::dtype::f32, 0.1) == static_cast<double>(0.1f));
  CHECK(round_to(alloy::dtype::f64, 0.1) == 0.1);
  CHECK(random_values(5, 42) == random_values(5, 42));
  CHECK(random_values(5, 42) != random_values(5, 43));
  for (double x : random_values(1000, 1, 2.0, 3.0)) {
    CHECK(x >= 2.0);
    CHECK(x < 3.0);
  }
  CHECK(mismatch({1.0, 2.0}, {1.0, 2.0}) == "");
  CHECK(mismatch({1.0, 2.001}, {1.0, 2.0}, tolerance_for(alloy::dtype::bf16)) == "");
  CHECK(mismatch({1.0, 2.1}, {1.0, 2.0}, tolerance_for(alloy::dtype::bf16)) != "");
  CHECK(mismatch({std::nan("")}, {std::nan("")}) == "");
  CHECK(weighted_average({{1, 2}, {3, 6}}, {1, 3}) == values_t{2.5, 5});
  CHECK(task_arithmetic({1, 1}, {{2, 3}, {0, 1}}, {1, 1}, 0.5) == values_t{1, 2});
  CHECK(task_arithmetic({1, 1}, {{2, 3}, {0, 1}}, {1, 3}, 1.0, true) == values_t{0.5, 1.5});
}
