// alloy/adapters/xtensor.hpp: xtensor containers as alloy tensors (opt-in).
//
// Include this header before the first use of an xtensor type with alloy (concept checks
// are cached per type: a check made before the specializations below are visible would
// stay "not a tensor" for the rest of the program, which is ill-formed).
//
// Rules. alloy reads a tensor as one contiguous block of elements in row-major (C) order:
// pointer, element count and (optionally) shape. An xtensor type is a tensor here exactly
// when that reading is correct for every object of the type, which the type itself must
// guarantee at compile time:
//
//   models (value_type float, double, alloy::bf16 or alloy::fp16; layout row_major):
//     xt::xtensor<T, N>          = xt::xtensor_container<EC, N, layout_type::row_major, Tag>
//     xt::xarray<T>              = xt::xarray_container<EC, layout_type::row_major, SC, Tag>
//     xt::xtensor_fixed<T, S>    = xt::xfixed_container<T, S, layout_type::row_major, ...>
//     xt::xtensor_adaptor<EC, N, layout_type::row_major, Tag> and
//     xt::xarray_adaptor<EC, layout_type::row_major, SC, Tag>: what xt::adapt returns for
//       xt::adapt(ptr, n, xt::no_ownership(), shape), xt::adapt(ptr, shape),
//       xt::adapt(std_vector, shape) and xt::adapt(std_vector) (default layout).
//       An adaptor over a `const T*` is tensor_like but not mutable_tensor_like.
//
//   contiguous views: xt::view(x, i), xt::view(x, i, xt::all()), xt::row(x, i),
//     xt::view(x, xt::range(a, b), xt::all()) of a row-major x, and generally every xt::xview
//     that xtensor itself iterates with a contiguous (pointer) iterator. xtensor decides
//     that at compile time (leading integers, at most one range, then all()s, over a
//     row-major container), so each such view type is contiguous row-major for every
//     object. They are std::ranges::contiguous_range, so the core contiguous-range rule
//     accepts them even without this header; the specialization here makes alloy read them
//     from their first element (std::ranges::data() of an xview is the *underlying*
//     container's data(), without the view's offset, so a row view read through it would
//     be row 0) and report the view's shape. xt::flatten, xt::ravel and xt::reshape_view of
//     row-major containers are contiguous ranges as well; their data() is correct, and
//     shape_of reports their element count.
//
//   non-models:
//     layout_type::column_major containers (memory order is not row-major);
//     layout_type::dynamic containers, including xt::adapt(ptr, n, ownership, shape,
//       strides) and xt::adapt(container, shape, strides): their strides are arbitrary;
//     strided or non-row-major views and expressions: xt::view with a stepped range
//       (xt::range(0, 8, 2)), a column (xt::view(x, xt::all(), j)), xt::newaxis,
//       xt::strided_view, xt::transpose, xt::squeeze, broadcasts and lazy
//       expressions (x + y). Copy into a container (xt::xtensor<float, 2> c = expr;), or
//       give alloy a std::span over memory you know to be contiguous;
//     containers of other value types (int, std::complex<float>, xtl::xoptional, ...).
//
// Why the adaptors are safe. A static row_major layout cannot be combined with custom
// strides: xtensor throws when such a container is constructed or resized with strides, or
// with a runtime layout other than its template layout. So its strides are always the
// row-major strides of its shape (0 for extents of 1), its data starts at data() (xtensor
// containers have no data offset), and its element count is storage().size(). The count
// alloy uses is t.size(), which for these layouts *is* storage().size(): the memory the
// adaptor actually refers to. The one way the shape can disagree with it is an adaptor
// holding a reference to a std::vector that was resized after xt::adapt; alloy then still
// reads only the vector's elements (memory-safe), and model-level functions that compare
// shapes (tensor_set::add, merges of named sets) report errc::shape_mismatch.
//
// shape(t) returns t.shape() (rank N, or the runtime rank of an xarray); shape_of converts
// it to std::vector<std::size_t>. A 0-d xtensor has shape {} and one element.
//
// Constness follows xtensor, which is deep-const for adaptors and views too: data(const
// T&) gives a const pointer, so a const adaptor or view is tensor_like but not mutable.
#pragma once

#include <alloy/core/tensor.hpp>

#include <cstddef>
#include <iterator>
#include <memory>
#include <ranges>
#include <type_traits>

#include <xtensor/xtensor_forward.hpp>

namespace alloy {

namespace detail {

// A data container (possibly held by reference, as xt::adapt(vector&) does) whose elements
// are a storage_scalar.
template <class EC>
concept xt_storage_container = storage_scalar<typename std::remove_cvref_t<EC>::value_type>;

// Shared implementation for row-major xtensor containers and adaptors.
struct xt_row_major_traits {
  template <class T>
  static auto* data(T& t) noexcept {
    return t.data();
  }
  template <class T>
  static std::size_t size(const T& t) noexcept {
    return static_cast<std::size_t>(t.size());
  }
  template <class T>
  static const auto& shape(const T& t) noexcept {
    return t.shape();
  }
};

// Contiguous views: the first element is where the iterator starts, not view.data().
struct xt_contiguous_view_traits {
  template <class T>
  static auto* data(T& t) noexcept {
    return std::to_address(std::ranges::begin(t));
  }
  template <class T>
  static std::size_t size(const T& t) noexcept {
    return static_cast<std::size_t>(std::ranges::size(t));
  }
  template <class T>
  static const auto& shape(const T& t) noexcept {
    return t.shape();
  }
};

}  // namespace detail

template <class EC, std::size_t N, class Tag>
  requires detail::xt_storage_container<EC>
struct tensor_traits<xt::xtensor_container<EC, N, xt::layout_type::row_major, Tag>> : detail::xt_row_major_traits {};

template <class EC, class SC, class Tag>
  requires detail::xt_storage_container<EC>
struct tensor_traits<xt::xarray_container<EC, xt::layout_type::row_major, SC, Tag>> : detail::xt_row_major_traits {};

template <class EC, std::size_t N, class Tag>
  requires detail::xt_storage_container<EC>
struct tensor_traits<xt::xtensor_adaptor<EC, N, xt::layout_type::row_major, Tag>> : detail::xt_row_major_traits {};

template <class EC, class SC, class Tag>
  requires detail::xt_storage_container<EC>
struct tensor_traits<xt::xarray_adaptor<EC, xt::layout_type::row_major, SC, Tag>> : detail::xt_row_major_traits {};

template <class ET, class S, bool Sharable, class Tag>
  requires storage_scalar<ET>
struct tensor_traits<xt::xfixed_container<ET, S, xt::layout_type::row_major, Sharable, Tag>>
    : detail::xt_row_major_traits {};

// Only views whose row-major iterator xtensor makes a pointer (see above); the const
// overload of begin() is checked too, so that a const view is read-only, not rejected.
template <class CT, class... S>
  requires std::ranges::contiguous_range<xt::xview<CT, S...>> &&
           std::ranges::contiguous_range<const xt::xview<CT, S...>> &&
           std::ranges::sized_range<const xt::xview<CT, S...>> &&
           storage_scalar<std::ranges::range_value_t<xt::xview<CT, S...>>>
struct tensor_traits<xt::xview<CT, S...>> : detail::xt_contiguous_view_traits {};

}  // namespace alloy
