// tests/support/storage_types.hpp: the storage types every method test runs over, and
// helpers to build a tensor of any of them from doubles and read it back.
//
//   alloy_test::storage_types   a std::tuple for Catch2's TEMPLATE_LIST_TEST_CASE:
//       std::vector<float>, std::vector<double>, std::vector<alloy::bf16>,
//       std::vector<alloy::fp16>, std::span<float>, std::span<alloy::bf16>,
//       xt::xtensor<float, 1>, xt::xtensor<alloy::bf16, 1>, and Eigen::VectorXf when
//       ALLOY_TEST_HAVE_EIGEN (tests/CMakeLists.txt defines it when Eigen3 is found).
//   alloy_test::scalar_types    std::tuple<float, double, alloy::bf16, alloy::fp16>.
//
//   make_tensor<T>(values [, shape]) -> tensor_holder<T>
//       A T holding `values` (in memory order), each rounded to T's scalar as storing it
//       does (round_to in reference.hpp). The shape, when given, is alloy's row-major
//       shape of the result and must hold values.size() elements (default {n}); flat types
//       (std::vector, std::span, std::array) only check it. xt::xtensor<E, N> needs rank N;
//       a column-major Eigen matrix of shape {a, b} has b rows and a columns (see
//       adapters/eigen.hpp). Throws std::invalid_argument for a shape that does not fit.
//   zeros<T>(n), zeros<T>(shape) -> tensor_holder<T> of zeros: an output to write into.
//
//   tensor_holder<T> owns the memory. holder.get() is the T to give alloy:
//       a T& for owning types (std::vector, xt::xtensor, Eigen, ...), and a T by value for
//       std::span<E> (a fresh span over the holder's std::vector<E>: use it inline, or keep
//       it with `decltype(auto)` / `auto`, never `auto&`). On a const holder get() is a
//       const T& (or a std::span<const E>). Holders copy and move like values: a copy owns
//       a copy of the elements, and spans always point at their own holder's memory.
//
//   values(holder), values(tensor) -> std::vector<double>: the elements, widened exactly.
//   scalar_t<T>: T's element type (float for std::span<float>); dtype_v<T>: its dtype.
//
// Usage:
//
//   TEMPLATE_LIST_TEST_CASE("uniform soup of two models", "[soup]", alloy_test::storage_types) {
//     using namespace alloy_test;
//     auto a = make_tensor<TestType>({1.0, 2.0, 3.0});
//     auto b = make_tensor<TestType>({3.0, 4.0, 6.0});
//     auto out = zeros<TestType>(3);
//     alloy::uniform_soup({a.get(), b.get()}, out.get());
//     CHECK(values(out) == round_to(dtype_v<TestType>, {2.0, 3.0, 4.5}));
//   }
//
// Add a type here by giving detail::storage_factory a specialization (storage, get, make).
#pragma once

#include "reference.hpp"

#include <alloy/adapters/xtensor.hpp>
#include <alloy/core/tensor.hpp>

#if ALLOY_TEST_HAVE_EIGEN
#include <alloy/adapters/eigen.hpp>
#endif

#include <algorithm>
#include <array>
#include <cstddef>
#include <span>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include <xtensor/xarray.hpp>
#include <xtensor/xtensor.hpp>

namespace alloy_test {

using storage_types = std::tuple<std::vector<float>, std::vector<double>, std::vector<alloy::bf16>,
                                 std::vector<alloy::fp16>, std::span<float>, std::span<alloy::bf16>,
                                 xt::xtensor<float, 1>, xt::xtensor<alloy::bf16, 1>
#if ALLOY_TEST_HAVE_EIGEN
                                 ,
                                 Eigen::VectorXf
#endif
                                 >;

using scalar_types = std::tuple<float, double, alloy::bf16, alloy::fp16>;

template <class T>
using scalar_t = alloy::tensor_scalar_t<T>;

template <class T>
inline constexpr alloy::dtype dtype_v = alloy::dtype_of<scalar_t<T>>;

using shape_t = std::vector<std::size_t>;

namespace detail {

inline std::size_t elements(const shape_t& s) {
  std::size_t n = 1;
  for (std::size_t d : s) n *= d;
  return n;
}

inline std::string shape_text(const shape_t& s) {
  std::string r = "{";
  for (std::size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "}";
}

[[noreturn]] inline void bad_shape(const char* type, const shape_t& s, std::size_t n) {
  throw std::invalid_argument(std::string("make_tensor<") + type + ">: shape " + shape_text(s) +
                              " does not fit " + std::to_string(n) + " values");
}

// Fills a contiguous E range from doubles, rounding once.
template <class E>
void fill(E* dst, const std::vector<double>& v) {
  for (std::size_t i = 0; i < v.size(); ++i) dst[i] = to_storage<E>(v[i]);
}

// storage: what a holder keeps; get(storage&) / get(const storage&): the tensor to use;
// make(values, shape): a filled storage (shape already checked to hold values.size()).
template <class T>
struct storage_factory;

template <alloy::storage_scalar E, class A>
struct storage_factory<std::vector<E, A>> {
  using storage = std::vector<E, A>;
  static storage& get(storage& s) noexcept { return s; }
  static const storage& get(const storage& s) noexcept { return s; }
  static storage make(const std::vector<double>& v, const shape_t&) {
    storage s(v.size());
    fill(s.data(), v);
    return s;
  }
};

template <alloy::storage_scalar E>
  requires(!std::is_const_v<E>)
struct storage_factory<std::span<E>> {
  using storage = std::vector<E>;
  static std::span<E> get(storage& s) noexcept { return s; }
  static std::span<const E> get(const storage& s) noexcept { return s; }
  static storage make(const std::vector<double>& v, const shape_t& sh) {
    return storage_factory<std::vector<E>>::make(v, sh);
  }
};

template <alloy::storage_scalar E, std::size_t N>
struct storage_factory<std::array<E, N>> {
  using storage = std::array<E, N>;
  static storage& get(storage& s) noexcept { return s; }
  static const storage& get(const storage& s) noexcept { return s; }
  static storage make(const std::vector<double>& v, const shape_t& sh) {
    if (v.size() != N) bad_shape("std::array", sh, v.size());
    storage s{};
    fill(s.data(), v);
    return s;
  }
};

template <class EC, std::size_t N, class Tag>
struct storage_factory<xt::xtensor_container<EC, N, xt::layout_type::row_major, Tag>> {
  using storage = xt::xtensor_container<EC, N, xt::layout_type::row_major, Tag>;
  static storage& get(storage& s) noexcept { return s; }
  static const storage& get(const storage& s) noexcept { return s; }
  static storage make(const std::vector<double>& v, const shape_t& sh) {
    if (sh.size() != N) bad_shape("xt::xtensor", sh, v.size());
    std::array<std::size_t, N> shape{};
    std::copy(sh.begin(), sh.end(), shape.begin());
    storage s = storage::from_shape(shape);
    fill(s.data(), v);
    return s;
  }
};

template <class EC, class SC, class Tag>
struct storage_factory<xt::xarray_container<EC, xt::layout_type::row_major, SC, Tag>> {
  using storage = xt::xarray_container<EC, xt::layout_type::row_major, SC, Tag>;
  static storage& get(storage& s) noexcept { return s; }
  static const storage& get(const storage& s) noexcept { return s; }
  static storage make(const std::vector<double>& v, const shape_t& sh) {
    storage s = storage::from_shape(sh);
    fill(s.data(), v);
    return s;
  }
};

#if ALLOY_TEST_HAVE_EIGEN
template <class P>
struct eigen_factory {
  using storage = P;
  static storage& get(storage& s) noexcept { return s; }
  static const storage& get(const storage& s) noexcept { return s; }
  static storage make(const std::vector<double>& v, const shape_t& sh) {
    storage s;
    const auto n = static_cast<Eigen::Index>(v.size());
    if constexpr (P::IsVectorAtCompileTime) {
      if (sh.size() != 1) bad_shape("Eigen vector", sh, v.size());
      if constexpr (P::RowsAtCompileTime == 1)
        s.resize(1, n);
      else
        s.resize(n, 1);
    } else {
      if (sh.size() != 1 && sh.size() != 2) bad_shape("Eigen matrix", sh, v.size());
      // alloy's shape is {outer, inner} in memory order; a rank-1 shape is one outer row.
      const auto outer = static_cast<Eigen::Index>(sh.size() == 2 ? sh[0] : 1);
      const auto inner = static_cast<Eigen::Index>(sh.size() == 2 ? sh[1] : sh[0]);
      if constexpr (P::IsRowMajor)
        s.resize(outer, inner);
      else
        s.resize(inner, outer);
    }
    fill(s.data(), v);
    return s;
  }
};
template <class S, int R, int C, int O, int MR, int MC>
struct storage_factory<Eigen::Matrix<S, R, C, O, MR, MC>> : eigen_factory<Eigen::Matrix<S, R, C, O, MR, MC>> {};
template <class S, int R, int C, int O, int MR, int MC>
struct storage_factory<Eigen::Array<S, R, C, O, MR, MC>> : eigen_factory<Eigen::Array<S, R, C, O, MR, MC>> {};
#endif

}  // namespace detail

template <class T>
class tensor_holder {
  using factory = detail::storage_factory<T>;

 public:
  using tensor_type = T;
  using storage_type = typename factory::storage;
  using scalar_type = scalar_t<T>;

  explicit tensor_holder(storage_type s) : storage_(std::move(s)) {}

  decltype(auto) get() noexcept { return factory::get(storage_); }
  decltype(auto) get() const noexcept { return factory::get(storage_); }
  // The elements. (get() may be a prvalue span, which as_span does not take: bind it first.)
  std::span<scalar_type> span() noexcept {
    auto&& t = get();
    return alloy::as_span(t);
  }
  std::span<const scalar_type> span() const noexcept {
    auto&& t = get();
    return alloy::as_span(t);
  }
  std::size_t size() const noexcept { return span().size(); }

 private:
  storage_type storage_;
};

template <class T>
tensor_holder<T> make_tensor(const std::vector<double>& values, shape_t shape = {}) {
  if (shape.empty()) shape = {values.size()};
  if (detail::elements(shape) != values.size()) detail::bad_shape("T", shape, values.size());
  return tensor_holder<T>(detail::storage_factory<T>::make(values, shape));
}

template <class T>
tensor_holder<T> zeros(shape_t shape) {
  const std::size_t n = detail::elements(shape);
  return make_tensor<T>(std::vector<double>(n, 0.0), std::move(shape));
}

template <class T>
tensor_holder<T> zeros(std::size_t n) {
  return zeros<T>(shape_t{n});
}

template <alloy::tensor_like X>
std::vector<double> values(const X& x) {
  const auto s = alloy::as_span(x);
  std::vector<double> out(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) out[i] = to_double(s[i]);
  return out;
}

template <class T>
std::vector<double> values(const tensor_holder<T>& h) {
  return values(h.get());
}

}  // namespace alloy_test
