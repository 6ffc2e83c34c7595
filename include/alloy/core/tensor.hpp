// What alloy accepts as a tensor, and the type-erased views methods work on.
//
// as_span(t) is the one customization point. It uses, in order:
//   1. an explicit tensor_traits<T> specialization (static data(t), size(t), and optionally
//      shape(t)); adapters/xtensor.hpp and adapters/eigen.hpp provide some;
//   2. a std::ranges::contiguous_range && sized_range whose value type is a storage_scalar.
// Nothing else. A type with only data() and size() may be strided (xtensor views, Eigen
// maps with strides) and is never read as contiguous. A view that is a contiguous range
// (xt::row(x, i), xt::view(x, i) of a row-major container: pointer iterators) is a tensor,
// read from its begin().
//
// tensor_like<T>: as_span accepts a const T. Models: std::vector<float>, std::array<bf16, 4>,
//   std::span<const double>, float[8], xt::xtensor<float, 2> (with the adapter).
//   Non-models: std::vector<int>, std::list<float>, xt::view(x, xt::range(0, 8, 2)),
//   Eigen::Map<Eigen::VectorXf, 0, Eigen::InnerStride<2>>.
// mutable_tensor_like<T>: as_span(declval<T&>()) gives non-const elements. Models:
//   std::vector<float>, std::span<bf16>. Non-models: const std::vector<float>,
//   std::span<const float>.
//
// tensor_view / mutable_tensor_view: pointer, element count and dtype. Methods are written
// once over these and dispatch on the dtype per tile, so a merge of bf16 inputs into a float
// output instantiates no more code than a float merge.
#pragma once

#include <alloy/core/dtype.hpp>

#include <concepts>
#include <cstddef>
#include <memory>
#include <ranges>
#include <span>
#include <type_traits>
#include <utility>
#include <vector>

namespace alloy {

// Specialize for tensor types that are contiguous but not contiguous ranges.
template <class T>
struct tensor_traits;

namespace detail {
template <class T>
concept has_tensor_traits = requires(T& t) {
  { tensor_traits<std::remove_cv_t<T>>::data(t) };
  { tensor_traits<std::remove_cv_t<T>>::size(t) } -> std::convertible_to<std::size_t>;
} && storage_scalar<std::remove_pointer_t<decltype(tensor_traits<std::remove_cv_t<T>>::data(std::declval<T&>()))>>;

template <class T>
concept storage_range = std::ranges::contiguous_range<T> && std::ranges::sized_range<T> &&
                        storage_scalar<std::ranges::range_value_t<T>>;
}  // namespace detail

struct as_span_fn {
  template <class T>
    requires detail::has_tensor_traits<T> || detail::storage_range<T&>
  constexpr auto operator()(T& t) const noexcept {
    if constexpr (detail::has_tensor_traits<T>) {
      using traits = tensor_traits<std::remove_cv_t<T>>;
      return std::span(traits::data(t), static_cast<std::size_t>(traits::size(t)));
    } else {
      // Not ranges::data: xtensor's contiguous views are ranges of pointers whose member
      // data() is their container's start, not theirs. A contiguous range starts at begin().
      return std::span(std::to_address(std::ranges::begin(t)), std::ranges::size(t));
    }
  }
};
inline constexpr as_span_fn as_span{};

template <class T>
concept tensor_like = requires(const std::remove_reference_t<T>& t) { as_span(t); };

template <class T>
concept mutable_tensor_like = requires(std::remove_reference_t<T>& t) {
  { as_span(t) };
} && !std::is_const_v<typename decltype(as_span(std::declval<std::remove_reference_t<T>&>()))::element_type>;

template <tensor_like T>
using tensor_scalar_t = std::remove_const_t<typename decltype(as_span(std::declval<const std::remove_reference_t<T>&>()))::element_type>;

// The shape tensor_traits reports, or the flat size.
template <tensor_like T>
std::vector<std::size_t> shape_of(const T& t) {
  using U = std::remove_cvref_t<T>;
  if constexpr (requires { tensor_traits<U>::shape(t); }) {
    const auto& s = tensor_traits<U>::shape(t);
    return std::vector<std::size_t>(s.begin(), s.end());
  } else {
    return {as_span(t).size()};
  }
}

struct tensor_view {
  const void* data = nullptr;
  std::size_t size = 0;
  dtype type = dtype::f32;

  constexpr tensor_view() = default;
  constexpr tensor_view(const void* d, std::size_t n, dtype t) noexcept : data(d), size(n), type(t) {}
  template <class T>
    requires tensor_like<T> && (!std::same_as<std::remove_cvref_t<T>, tensor_view>)
  constexpr tensor_view(const T& t) noexcept {  // NOLINT: implicit by design
    auto s = as_span(t);
    data = s.data();
    size = s.size();
    type = dtype_of<typename decltype(s)::element_type>;
  }
  std::size_t bytes() const noexcept { return size * dtype_size(type); }
};

struct mutable_tensor_view {
  void* data = nullptr;
  std::size_t size = 0;
  dtype type = dtype::f32;

  constexpr mutable_tensor_view() = default;
  constexpr mutable_tensor_view(void* d, std::size_t n, dtype t) noexcept : data(d), size(n), type(t) {}
  template <class T>
    requires mutable_tensor_like<T> && (!std::same_as<std::remove_cvref_t<T>, mutable_tensor_view>)
  constexpr mutable_tensor_view(T&& t) noexcept {  // NOLINT: implicit by design
    auto s = as_span(t);
    data = s.data();
    size = s.size();
    type = dtype_of<typename decltype(s)::element_type>;
  }
  constexpr operator tensor_view() const noexcept { return {data, size, type}; }
  std::size_t bytes() const noexcept { return size * dtype_size(type); }
};

// Collects a range of tensor_like models (or of views) into views.
template <std::ranges::input_range R>
  requires tensor_like<std::ranges::range_reference_t<R>> ||
           std::convertible_to<std::ranges::range_reference_t<R>, tensor_view>
std::vector<tensor_view> views_of(const R& models) {
  std::vector<tensor_view> v;
  if constexpr (std::ranges::sized_range<const R>) v.reserve(std::ranges::size(models));
  for (const auto& m : models) v.emplace_back(m);
  return v;
}

}  // namespace alloy
