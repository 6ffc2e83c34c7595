// alloy/adapters/eigen.hpp: Eigen dense objects as alloy tensors (opt-in).
//
// Include this header before the first use of an Eigen type with alloy (concept checks are
// cached per type: a check made before the specializations below are visible would stay
// "not a tensor" for the rest of the program, which is ill-formed).
//
// Rules. alloy reads a tensor as one contiguous block of elements: pointer, element count
// and (optionally) shape. An Eigen type is a tensor here exactly when that is correct for
// every object of the type, which the type must guarantee at compile time:
//
//   models (Scalar float, double, alloy::bf16 or alloy::fp16):
//     Eigen::Matrix<S, Rows, Cols, Options, MaxRows, MaxCols>   (VectorXf, MatrixXd, ...)
//     Eigen::Array<S, Rows, Cols, Options, MaxRows, MaxCols>    (ArrayXf, ArrayXXd, ...)
//       plain objects are always one contiguous block;
//     Eigen::Map<P, MapOptions, Eigen::Stride<0, 0>> for P a Matrix or Array above (or a
//       const one): the default stride means "the layout of P", i.e. contiguous.
//       A Map of a const P is tensor_like but not mutable_tensor_like.
//
//   non-models:
//     Maps with any other stride type (Eigen::InnerStride<K>, Eigen::OuterStride<K>,
//       Eigen::Stride<O, I>, even when the runtime strides happen to be contiguous);
//     blocks, segments, rows, columns (v.head(3), m.block(...), m.col(0), ...), Eigen::Ref,
//     transposes, reshaped views and every expression template. Copy into a plain object,
//     or Map the memory you know to be contiguous.
//
// Eigen's begin()/end() (Eigen 3.4) are random-access, not contiguous iterators, so Eigen
// types never match alloy's contiguous-range rule: these traits are the only way in, and no
// type is accepted two ways (as_span tries traits first anyway).
//
// shape(t) and storage order. alloy's shapes describe memory in row-major order:
//   - a vector at compile time (RowsAtCompileTime == 1 or ColsAtCompileTime == 1):
//     {size};
//   - a row-major matrix (Eigen::RowMajor): {rows, cols};
//   - a column-major matrix (Eigen's default): {cols, rows}. Its memory is the row-major
//     layout of its transpose, and that is the shape alloy reports. A 2 x 3 MatrixXf has
//     shape {3, 2}; merged with a row-major tensor of shape {2, 3} it is a shape mismatch
//     at model level (and element i of one is not element i of the other at tensor level,
//     which only compares element counts). To exchange a column-major matrix with row-major
//     tensors, use Eigen::Matrix<S, R, C, Eigen::RowMajor> or transpose explicitly.
//   A matrix that is a vector only at runtime (a MatrixXf with one column) keeps its
//   two-dimensional shape: {1, rows} when column-major.
//
// Constness follows Eigen: data(const T&) gives a const pointer (Eigen's const Map is
// deep-const too).
#pragma once

#include <alloy/core/tensor.hpp>

#include <array>
#include <cstddef>
#include <type_traits>

#include <Eigen/Core>

namespace alloy {

namespace detail {

template <class T>
struct is_eigen_plain : std::false_type {};
template <class S, int R, int C, int O, int MR, int MC>
struct is_eigen_plain<Eigen::Matrix<S, R, C, O, MR, MC>> : std::true_type {};
template <class S, int R, int C, int O, int MR, int MC>
struct is_eigen_plain<Eigen::Array<S, R, C, O, MR, MC>> : std::true_type {};

// A plain Matrix or Array (possibly const) with a storage_scalar Scalar.
template <class P>
concept eigen_plain_storage =
    is_eigen_plain<std::remove_const_t<P>>::value && storage_scalar<typename std::remove_const_t<P>::Scalar>;

// Shared implementation; T is a plain object or a default-stride Map of one.
struct eigen_contiguous_traits {
  template <class T>
  static auto* data(T& t) noexcept {
    return t.data();
  }
  template <class T>
  static std::size_t size(const T& t) noexcept {
    return static_cast<std::size_t>(t.size());
  }
  template <class T>
  static auto shape(const T& t) noexcept {
    if constexpr (T::IsVectorAtCompileTime) {
      return std::array<std::size_t, 1>{static_cast<std::size_t>(t.size())};
    } else if constexpr (T::IsRowMajor) {
      return std::array<std::size_t, 2>{static_cast<std::size_t>(t.rows()), static_cast<std::size_t>(t.cols())};
    } else {
      // Column-major: memory is the row-major layout of the transpose.
      return std::array<std::size_t, 2>{static_cast<std::size_t>(t.cols()), static_cast<std::size_t>(t.rows())};
    }
  }
};

}  // namespace detail

template <class S, int R, int C, int O, int MR, int MC>
  requires storage_scalar<S>
struct tensor_traits<Eigen::Matrix<S, R, C, O, MR, MC>> : detail::eigen_contiguous_traits {};

template <class S, int R, int C, int O, int MR, int MC>
  requires storage_scalar<S>
struct tensor_traits<Eigen::Array<S, R, C, O, MR, MC>> : detail::eigen_contiguous_traits {};

template <class P, int MapOptions>
  requires detail::eigen_plain_storage<P>
struct tensor_traits<Eigen::Map<P, MapOptions, Eigen::Stride<0, 0>>> : detail::eigen_contiguous_traits {};

}  // namespace alloy
