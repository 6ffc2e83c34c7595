// Linear sum assignment: for a rows x cols cost matrix C, choose k = min(rows, cols) pairs
// (row_ind[t], col_ind[t]), no row and no column used twice, that minimise (or maximise)
// sum_t C(row_ind[t], col_ind[t]).
//
//   auto a = alloy::align::linear_sum_assignment(alloy::matrix_ref<const float>{p, r, c, c});
//   auto b = alloy::align::linear_sum_assignment(p, r, c, /*maximize=*/true);
//   auto d = alloy::align::linear_sum_assignment(std::vector<double>(...), r, c);
//   if (a.ok()) for (std::size_t t = 0; t < a.size(); ++t) use(a.row_ind[t], a.col_ind[t]);
//
// Algorithm: the shortest augmenting path method of Crouse, "On implementing 2D rectangular
// assignment algorithms", IEEE Trans. Aerospace and Electronic Systems 52(4):1679-1696, 2016,
// as SciPy's scipy.optimize.linear_sum_assignment implements it (rectangular_lsap.cpp): one
// Dijkstra-like search per row over reduced costs C(i, j) - u_i - v_j, then a dual update and
// an augmentation along the path found. Tall matrices (rows > cols) are solved transposed and
// maximisation as minimisation of -C, as SciPy does.
// Result: SciPy's result, index for index: row_ind ascending, col_ind the matching columns.
// The same arithmetic (in double, in SciPy's order of operations) and the same tie rule
// give the same assignment on every input, ties included; a constant matrix gives row t ->
// column t. See docs/methods/alignment.md for the tie rule in full.
// Complexity: O(rows * cols * min(rows, cols)) in the worst case; on uniform random costs
// each row's search scans about 17 rows (512 x 512) to 32 rows (2048 x 2048). Memory: O(rows + cols) workspace,
// allocated once per call, plus, for tall matrices only, a transposed copy of the costs in
// their own type (rows * cols * sizeof(T)); maximisation and float inputs need no copy.
// Precision: costs are widened to double as they are read (float -> double is exact), and
// the duals and path lengths are double, as in SciPy (which converts its input to float64):
// a float matrix gives exactly SciPy's result for that matrix cast to float64. `cost` is
// the sum of C(row_ind[t], col_ind[t]) in double, added for t = 0, 1, ...
// Infeasible input is a status, not an exception: assignment_status::infeasible for NaN
// anywhere, -inf when minimising, +inf when maximising (SciPy's "invalid numeric entries"),
// and for matrices with no complete assignment of finite cost (+inf marks a forbidden pair
// when minimising, -inf when maximising; SciPy's "cost matrix is infeasible").
// Errors (alloy::error, errc::invalid_argument): a null data pointer with rows * cols > 0,
// a row stride smaller than cols (rows > 1), an element count that overflows std::size_t;
// errc::size_mismatch when a tensor's size is not rows * cols. A 0 x n or n x 0 matrix gives
// an empty assignment with status ok and cost 0.
// Deviations from SciPy: none in the assignment. SciPy raises ValueError where alloy returns
// infeasible, accepts any numeric dtype (converted to float64) where alloy takes float and
// double, and leaves the total to NumPy's pairwise sum where alloy adds in order.
#pragma once

#include <alloy/core/matrix_ref.hpp>
#include <alloy/core/tensor.hpp>
#include <alloy/error.hpp>

#include <algorithm>
#include <bit>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace alloy::align {

// The cost element types: float and double. Non-models: alloy::bf16, alloy::fp16, int.
template <class T>
concept assignment_scalar = std::same_as<T, float> || std::same_as<T, double>;

enum class assignment_status {
  ok,          // row_ind / col_ind hold an optimal assignment
  infeasible,  // NaN, an infinity of the wrong sign, or no complete assignment of finite cost
};

struct assignment {
  static constexpr std::size_t unassigned = static_cast<std::size_t>(-1);

  assignment_status status = assignment_status::ok;
  std::size_t rows = 0;                // the shape of the cost matrix solved
  std::size_t cols = 0;
  std::vector<std::size_t> row_ind;    // min(rows, cols) rows, ascending (empty unless ok)
  std::vector<std::size_t> col_ind;    // col_ind[t] is the column assigned to row_ind[t]
  double cost = 0.0;                   // sum_t C(row_ind[t], col_ind[t]); NaN unless ok

  bool ok() const noexcept { return status == assignment_status::ok; }
  explicit operator bool() const noexcept { return ok(); }
  std::size_t size() const noexcept { return row_ind.size(); }

  // The column of each row (size rows), `unassigned` for rows left out (rows > cols).
  std::vector<std::size_t> col_for_row() const {
    std::vector<std::size_t> out(ok() ? rows : 0, unassigned);
    for (std::size_t t = 0; t < row_ind.size(); ++t) out[row_ind[t]] = col_ind[t];
    return out;
  }
  // The row of each column (size cols), `unassigned` for columns left out (cols > rows).
  std::vector<std::size_t> row_for_col() const {
    std::vector<std::size_t> out(ok() ? cols : 0, unassigned);
    for (std::size_t t = 0; t < row_ind.size(); ++t) out[col_ind[t]] = row_ind[t];
    return out;
  }
};

namespace detail {

inline constexpr std::size_t lsap_none = static_cast<std::size_t>(-1);
inline constexpr double lsap_inf = std::numeric_limits<double>::infinity();
// Columns per block: the scan keeps each block's minimum so that the tie search after it
// reads one block, not the whole row.
inline constexpr std::size_t lsap_block = 64;
// How far ahead (in elements) the scan prefetches the cost row. The next row to scan is
// only known when a scan ends, so the hardware prefetcher starts cold on every row; a
// software prefetch this far ahead cut the time of cache-missing scans by about 40% (AVX-512
// machine, 2048-column rows).
inline constexpr std::size_t lsap_prefetch_ahead = 512;

inline void prefetch(const void* p) noexcept {
#if defined(__GNUC__) || defined(__clang__)
  __builtin_prefetch(p);
#else
  (void)p;
#endif
}

// An order-preserving map from doubles (not NaN) to int64: a < b implies key(a) < key(b),
// and key(-0) < key(+0). The scan reduces its minimum over these keys because compilers
// vectorize an integer min reduction without -ffast-math, and not a floating-point one.
inline std::int64_t order_key(double x) noexcept {
  const auto b = std::bit_cast<std::int64_t>(x);
  return b ^ ((b >> 63) & std::numeric_limits<std::int64_t>::max());
}
inline double from_order_key(std::int64_t k) noexcept {
  return std::bit_cast<double>(k ^ ((k >> 63) & std::numeric_limits<std::int64_t>::max()));
}

// Relaxes n columns (see lsap_scan) and returns the order key of their minimum. A separate
// function, not a lambda, so that the __restrict qualifiers reach the vectorizer (Clang drops
// them on lambda captures). lsap_scan calls it with n == lsap_block for every full block: a
// constant trip count.
template <bool Maximize, bool First, class T>
inline std::int64_t lsap_relax(const T* __restrict c, const double* __restrict v, double* __restrict spc,
                               std::uint32_t* __restrict path, std::size_t n, double min_val, double u_i,
                               std::uint32_t row) noexcept {
  std::int64_t blk = std::numeric_limits<std::int64_t>::max();
  for (std::size_t j = 0; j < n; ++j) {
    const double cj = static_cast<double>(c[j]);
    const double r = Maximize ? ((min_val - cj) - u_i) - v[j] : ((min_val + cj) - u_i) - v[j];
    const double s = First ? lsap_inf : spc[j];
    const bool better = r < s;
    const double ns = better ? r : s;
    spc[j] = ns;
    path[j] = better ? row : path[j];
    const std::int64_t key = order_key(ns);
    blk = key < blk ? key : blk;
  }
  return blk;
}

// One step of the shortest-path search: row `row` (its costs c, dual u_i, reached at path
// length min_val) relaxes every column j:
//   r = ((min_val + c[j]) - u_i) - v[j]      (min_val - c[j] when maximising: SciPy negates
//                                            the matrix, and x + (-c) == x - c exactly)
//   if (r < spc[j]) { spc[j] = r; path[j] = row; }
// and returns min_j spc[j]; block_min[b] gets the minimum over block b. The scan is dense:
// columns already in the search tree are masked arithmetically, not skipped (they carry
// v = -inf and spc = +inf, so r = +inf never replaces spc, and +inf never wins the minimum).
// SciPy visits only the remaining columns, in its `remaining` order; the order matters only
// for ties, which lsap_solver::select resolves as SciPy's loop would. First: spc is taken as
// +inf everywhere (the first scan of a search), so it need not be reset beforehand.
template <bool Maximize, bool First, class T>
double lsap_scan(const T* c, const double* v, double* spc, std::uint32_t* path, double* block_min, std::size_t n,
                 double min_val, double u_i, std::uint32_t row) noexcept {
  auto relax = [&](std::size_t j0, std::size_t len) noexcept {
    return lsap_relax<Maximize, First>(c + j0, v + j0, spc + j0, path + j0, len, min_val, u_i, row);
  };
  constexpr std::size_t line = 64 / sizeof(T);  // elements per cache line
  for (std::size_t q = 0; q < std::min(n, lsap_prefetch_ahead); q += line) prefetch(c + q);
  std::int64_t all = std::numeric_limits<std::int64_t>::max();
  const std::size_t full = n / lsap_block;
  for (std::size_t b = 0; b < full; ++b) {
    const std::size_t j0 = b * lsap_block;
    const std::size_t p0 = j0 + lsap_prefetch_ahead, p1 = std::min(n, p0 + lsap_block);
    for (std::size_t q = p0; q < p1; q += line) prefetch(c + q);
    const std::int64_t blk = relax(j0, lsap_block);
    block_min[b] = from_order_key(blk);
    all = blk < all ? blk : all;
  }
  if (const std::size_t rest = n - full * lsap_block; rest != 0) {
    const std::int64_t blk = relax(full * lsap_block, rest);
    block_min[full] = from_order_key(blk);
    all = blk < all ? blk : all;
  }
  return from_order_key(all);
}

// The solver proper, on an nr x nc problem with 1 <= nr <= nc, rows at `stride` elements,
// every entry free of NaN and of the infinity of the wrong sign (checked by the caller).
template <class T, bool Maximize>
class lsap_solver {
 public:
  lsap_solver(const T* cost, std::size_t stride, std::size_t nr, std::size_t nc)
      : cost_(cost), stride_(stride), nr_(nr), nc_(nc), u_(nr, 0.0), v_(nc, 0.0), spc_(nc, lsap_inf),
        path_(nc, 0), block_min_((nc + lsap_block - 1) / lsap_block, lsap_inf), col4row_(nr, lsap_none),
        row4col_(nc, lsap_none), remaining_(nc), pos_(nc) {
    tree_.reserve(nr + 1);
    touched_.reserve(2 * (nr + 1));
    // SciPy fills `remaining` in reverse, nc-1 .. 0, so that a constant matrix gives the
    // identity (scipy issue 11602); pos_ is its inverse.
    for (std::size_t p = 0; p < nc; ++p) {
      remaining_[p] = nc - 1 - p;
      pos_[nc - 1 - p] = p;
    }
  }

  // False when no complete assignment of finite cost exists.
  bool run() {
    for (std::size_t cur = 0; cur < nr_; ++cur)
      if (!augment(cur)) return false;
    return true;
  }

  // The column assigned to each problem row.
  const std::vector<std::size_t>& col4row() const noexcept { return col4row_; }

 private:
  struct tree_column {
    std::size_t col;
    double dist;   // its shortest path length (spc when it joined the tree)
    double v_old;  // its dual before this search (v is -inf while it is in the tree)
  };

  // Crouse's step for row `cur`: the shortest augmenting path, the dual update, the
  // augmentation. SciPy's augmenting_path() and the body of its solve() loop.
  bool augment(std::size_t cur) {
    double min_val = 0.0;
    std::size_t i = cur;
    std::size_t num_remaining = nc_;
    std::size_t sink = lsap_none;
    tree_.clear();
    touched_.clear();
    bool first = true;
    while (sink == lsap_none) {
      const T* row = cost_ + i * stride_;
      const auto r32 = static_cast<std::uint32_t>(i);
      const double m = first ? lsap_scan<Maximize, true>(row, v_.data(), spc_.data(), path_.data(), block_min_.data(),
                                                          nc_, min_val, u_[i], r32)
                             : lsap_scan<Maximize, false>(row, v_.data(), spc_.data(), path_.data(),
                                                          block_min_.data(), nc_, min_val, u_[i], r32);
      first = false;
      if (!(m < lsap_inf)) {  // every remaining column unreachable at finite cost
        restore_tree_columns(min_val);
        return false;
      }
      const std::size_t j = select(m);
      min_val = spc_[j];
      tree_.push_back({j, min_val, v_[j]});
      spc_[j] = lsap_inf;
      v_[j] = -lsap_inf;
      // SciPy's removal from `remaining`: the last entry moves into the hole.
      const std::size_t index = pos_[j];
      const std::size_t last = remaining_[--num_remaining];
      remaining_[index] = last;
      pos_[last] = index;
      touched_.push_back(index);
      touched_.push_back(num_remaining);
      if (row4col_[j] == lsap_none)
        sink = j;
      else
        i = row4col_[j];
    }

    // Dual update, as SciPy: u[cur] += minVal; u[i] += minVal - spc[col4row[i]] for the other
    // rows of the tree (each reached through its assigned column, a non-sink tree column);
    // v[j] -= minVal - spc[j] for every tree column.
    u_[cur] += min_val;
    for (const tree_column& t : tree_)
      if (t.col != sink) u_[row4col_[t.col]] += min_val - t.dist;
    restore_tree_columns(min_val);
    // Back to SciPy's initial `remaining` order for the next search: only the positions a
    // removal wrote to differ from it.
    for (const std::size_t p : touched_) {
      remaining_[p] = nc_ - 1 - p;
      pos_[nc_ - 1 - p] = p;
    }

    // Augment along the path.
    std::size_t j = sink;
    for (;;) {
      const std::size_t r = path_[j];
      row4col_[j] = r;
      std::swap(col4row_[r], j);
      if (r == cur) break;
    }
    return true;
  }

  // v for the tree columns: v_old - (min_val - dist), SciPy's `v[j] -= minVal - spc[j]`.
  void restore_tree_columns(double min_val) {
    for (const tree_column& t : tree_) v_[t.col] = t.v_old - (min_val - t.dist);
  }

  // The column SciPy's loop `if (spc[j] < lowest || (spc[j] == lowest && row4col[j] == -1))`
  // picks, scanning `remaining` in order: among the columns with spc == m, the unassigned one
  // latest in `remaining` if there is one, else the assigned one earliest in `remaining`.
  std::size_t select(double m) const {
    std::size_t free_col = lsap_none, free_pos = 0;
    std::size_t taken_col = lsap_none, taken_pos = 0;
    for (std::size_t b = 0; b < block_min_.size(); ++b) {
      if (block_min_[b] != m) continue;
      const std::size_t j1 = std::min(nc_, (b + 1) * lsap_block);
      for (std::size_t j = b * lsap_block; j < j1; ++j) {
        if (spc_[j] != m) continue;
        const std::size_t p = pos_[j];
        if (row4col_[j] == lsap_none) {
          if (free_col == lsap_none || p > free_pos) free_col = j, free_pos = p;
        } else if (taken_col == lsap_none || p < taken_pos) {
          taken_col = j, taken_pos = p;
        }
      }
    }
    return free_col != lsap_none ? free_col : taken_col;
  }

  const T* cost_;
  std::size_t stride_, nr_, nc_;
  std::vector<double> u_, v_, spc_;
  std::vector<std::uint32_t> path_;  // row indices < nr <= 2^32 - 1 (nr * nc fits size_t)
  std::vector<double> block_min_;
  std::vector<std::size_t> col4row_, row4col_;
  std::vector<std::size_t> remaining_, pos_;  // SciPy's `remaining` and its inverse
  std::vector<tree_column> tree_;
  std::vector<std::size_t> touched_;
};

// True when an entry is NaN or the infinity that SciPy rejects: -inf when minimising
// (+inf after negation when maximising).
template <bool Maximize, class T>
bool has_invalid_entry(const T* data, std::size_t rows, std::size_t cols, std::size_t stride) noexcept {
  const T bad = Maximize ? std::numeric_limits<T>::infinity() : -std::numeric_limits<T>::infinity();
  for (std::size_t i = 0; i < rows; ++i) {
    const T* row = data + i * stride;
    bool any = false;
    for (std::size_t j = 0; j < cols; ++j) any |= (row[j] != row[j]) | (row[j] == bad);
    if (any) return true;
  }
  return false;
}

// The transpose of a rows x cols block (rows at `stride`) as a dense cols x rows matrix,
// in tiles, writing contiguously; no zero fill before (the pages are touched once).
template <class T>
std::unique_ptr<T[]> transposed(const T* data, std::size_t rows, std::size_t cols, std::size_t stride) {
  constexpr std::size_t tile = 16;
  auto out = std::make_unique_for_overwrite<T[]>(rows * cols);
  for (std::size_t i0 = 0; i0 < rows; i0 += tile)
    for (std::size_t j0 = 0; j0 < cols; j0 += tile) {
      const std::size_t i1 = std::min(rows, i0 + tile), j1 = std::min(cols, j0 + tile);
      for (std::size_t j = j0; j < j1; ++j)
        for (std::size_t i = i0; i < i1; ++i) out[j * rows + i] = data[i * stride + j];
    }
  return out;
}

inline void check_cost_matrix(const void* data, std::size_t rows, std::size_t cols, std::size_t stride) {
  const std::string shape = std::to_string(rows) + " x " + std::to_string(cols);
  if (cols != 0 && rows > std::numeric_limits<std::size_t>::max() / cols)
    throw error(errc::invalid_argument,
                "linear_sum_assignment: a " + shape + " cost matrix has more elements than std::size_t counts");
  if (rows == 0 || cols == 0) return;
  if (data == nullptr)
    throw error(errc::invalid_argument, "linear_sum_assignment: null data for a " + shape + " cost matrix");
  if (rows > 1 && stride < cols)
    throw error(errc::invalid_argument, "linear_sum_assignment: row stride " + std::to_string(stride) +
                                            " is smaller than the " + std::to_string(cols) + " columns of a " +
                                            shape + " cost matrix");
  if (rows > 1 && (stride > (std::numeric_limits<std::size_t>::max() - cols) / (rows - 1)))
    throw error(errc::invalid_argument, "linear_sum_assignment: row stride " + std::to_string(stride) +
                                            " of a " + shape + " cost matrix overflows std::size_t");
}

template <bool Maximize, class T>
assignment solve_lsap(const T* data, std::size_t rows, std::size_t cols, std::size_t stride) {
  assignment out;
  out.rows = rows;
  out.cols = cols;
  if (rows == 0 || cols == 0) return out;
  auto infeasible = [&out] {
    out.status = assignment_status::infeasible;
    out.cost = std::numeric_limits<double>::quiet_NaN();
    return out;
  };
  const std::size_t k = std::min(rows, cols);
  out.row_ind.reserve(k);
  out.col_ind.reserve(k);
  if (rows <= cols) {
    if (has_invalid_entry<Maximize>(data, rows, cols, stride)) return infeasible();
    lsap_solver<T, Maximize> s(data, stride, rows, cols);
    if (!s.run()) return infeasible();
    for (std::size_t i = 0; i < rows; ++i) {
      out.row_ind.push_back(i);
      out.col_ind.push_back(s.col4row()[i]);
    }
  } else {
    // Tall: solve the transpose (cols problem rows over rows problem columns), rows
    // contiguous so that the scan streams them, as SciPy does.
    const std::unique_ptr<T[]> t = transposed(data, rows, cols, stride);
    if (has_invalid_entry<Maximize>(t.get(), cols, rows, rows)) return infeasible();
    lsap_solver<T, Maximize> s(t.get(), rows, cols, rows);
    if (!s.run()) return infeasible();
    std::vector<std::size_t> col_of_row(rows, lsap_none);
    for (std::size_t j = 0; j < cols; ++j) col_of_row[s.col4row()[j]] = j;
    for (std::size_t i = 0; i < rows; ++i)
      if (col_of_row[i] != lsap_none) {
        out.row_ind.push_back(i);
        out.col_ind.push_back(col_of_row[i]);
      }
  }
  double total = 0.0;
  for (std::size_t t = 0; t < k; ++t) total += static_cast<double>(data[out.row_ind[t] * stride + out.col_ind[t]]);
  out.cost = total;
  return out;
}

}  // namespace detail

// linear_sum_assignment(cost, maximize = false): see the top of this file.
//   (matrix_ref<const T> or matrix_ref<T>, maximize)
//   (const T* data, rows, cols, maximize)          row-major, row stride = cols
//   (const Tensor& t, rows, cols, maximize)        any contiguous tensor_like of float or
//                                                  double holding rows * cols elements
struct linear_sum_assignment_fn {
  template <assignment_scalar T>
  assignment operator()(matrix_ref<const T> cost, bool maximize = false) const {
    detail::check_cost_matrix(cost.data, cost.rows, cost.cols, cost.row_stride);
    return maximize ? detail::solve_lsap<true>(cost.data, cost.rows, cost.cols, cost.row_stride)
                    : detail::solve_lsap<false>(cost.data, cost.rows, cost.cols, cost.row_stride);
  }

  template <assignment_scalar T>
  assignment operator()(matrix_ref<T> cost, bool maximize = false) const {
    return (*this)(matrix_ref<const T>(cost), maximize);
  }

  template <assignment_scalar T>
  assignment operator()(const T* data, std::size_t rows, std::size_t cols, bool maximize = false) const {
    return (*this)(matrix_ref<const T>{data, rows, cols, cols}, maximize);
  }

  template <class C>
    requires tensor_like<C> && assignment_scalar<tensor_scalar_t<C>>
  assignment operator()(const C& cost, std::size_t rows, std::size_t cols, bool maximize = false) const {
    const auto m = as_matrix(cost, rows, cols);  // errc::size_mismatch unless rows * cols fit
    return (*this)(matrix_ref<const tensor_scalar_t<C>>{m.data, m.rows, m.cols, m.row_stride}, maximize);
  }
};

inline constexpr linear_sum_assignment_fn linear_sum_assignment{};

}  // namespace alloy::align
