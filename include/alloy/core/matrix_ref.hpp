// matrix_ref<T>: a row-major view of a 2-D block (data, rows, cols, row stride in elements),
// for algorithms that need two dimensions (per-row DELLA, RegMean, alignment). T may be
// const. Rows are contiguous; the stride lets a matrix_ref address a sub-block.
#pragma once

#include <alloy/core/tensor.hpp>
#include <alloy/error.hpp>

#include <cstddef>
#include <span>
#include <string>

namespace alloy {

template <class T>
  requires storage_scalar<T>
struct matrix_ref {
  T* data = nullptr;
  std::size_t rows = 0;
  std::size_t cols = 0;
  std::size_t row_stride = 0;

  constexpr T& operator()(std::size_t r, std::size_t c) const noexcept { return data[r * row_stride + c]; }
  constexpr std::span<T> row(std::size_t r) const noexcept { return {data + r * row_stride, cols}; }
  constexpr operator matrix_ref<const T>() const noexcept
    requires(!std::is_const_v<T>)
  {
    return {data, rows, cols, row_stride};
  }
};

// A contiguous tensor seen as rows x cols; throws errc::size_mismatch unless sizes agree.
template <class T>
  requires tensor_like<T>
auto as_matrix(T& t, std::size_t rows, std::size_t cols) {
  auto s = as_span(t);
  using E = typename decltype(s)::element_type;
  const bool fits = rows == 0 ? s.size() == 0 : s.size() % rows == 0 && s.size() / rows == cols;
  if (!fits)
    throw error(errc::size_mismatch, "as_matrix: a tensor of " + std::to_string(s.size()) +
                                         " elements cannot be viewed as " + std::to_string(rows) +
                                         " x " + std::to_string(cols));
  return matrix_ref<E>{s.data(), rows, cols, cols};
}

}  // namespace alloy
