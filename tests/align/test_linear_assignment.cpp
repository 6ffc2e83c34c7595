// Tests of alloy::align::linear_sum_assignment (include/alloy/align/linear_assignment.hpp).
//
// Three kinds of reference:
//   - brute force: every injection of the smaller side into the larger, for every shape up
//     to 7 x 7, on integer-valued costs (many ties: the optimal total must match exactly) and
//     on real costs (the optimum is unique: the assignment itself must match);
//   - SciPy itself: outputs of scipy.optimize.linear_sum_assignment (SciPy 1.10.1) written
//     below, on tie-heavy integer matrices and on real ones, made from random_values() so
//     that Python rebuilds the same matrices (the generator is splitmix64, see
//     tests/support/reference.hpp);
//   - scipy_port(): a plain transcription of SciPy's rectangular_lsap.cpp loop (remaining
//     list, swap removal, its tie rule), which alloy must match index for index on about 750
//     random matrices: alloy scans densely and resolves ties afterwards, so this is the
//     test of its tie rule.
#include <alloy/align/linear_assignment.hpp>

#include "support/reference.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <numeric>
#include <span>
#include <string>
#include <vector>

using alloy::align::assignment;
using alloy::align::assignment_status;
using alloy::align::linear_sum_assignment;

namespace {

constexpr double inf = std::numeric_limits<double>::infinity();
constexpr double qnan = std::numeric_limits<double>::quiet_NaN();
constexpr std::size_t none = static_cast<std::size_t>(-1);

template <class T>
std::vector<T> as(const std::vector<double>& v) {
  std::vector<T> out(v.size());
  for (std::size_t k = 0; k < v.size(); ++k) out[k] = static_cast<T>(v[k]);
  return out;
}

template <class T>
std::vector<double> widen(const std::vector<T>& v) {
  return std::vector<double>(v.begin(), v.end());
}

// Integer-valued costs in [lo, hi): floor of random_values.
std::vector<double> random_integers(std::size_t n, std::uint64_t seed, double lo, double hi) {
  std::vector<double> v = alloy_test::random_values(n, seed, lo, hi);
  for (double& x : v) x = std::floor(x);
  return v;
}

// Structural checks every ok result must pass: min(rows, cols) pairs, rows ascending and in
// range, columns distinct and in range, and `cost` the in-order sum of the chosen entries.
template <class T>
void check_structure(const assignment& a, const std::vector<T>& c, std::size_t rows, std::size_t cols) {
  REQUIRE(a.ok());
  CHECK(a.rows == rows);
  CHECK(a.cols == cols);
  const std::size_t k = std::min(rows, cols);
  REQUIRE(a.row_ind.size() == k);
  REQUIRE(a.col_ind.size() == k);
  std::vector<bool> used(cols, false);
  double total = 0;
  for (std::size_t t = 0; t < k; ++t) {
    REQUIRE(a.row_ind[t] < rows);
    REQUIRE(a.col_ind[t] < cols);
    if (t > 0) CHECK(a.row_ind[t] > a.row_ind[t - 1]);
    CHECK(!used[a.col_ind[t]]);
    used[a.col_ind[t]] = true;
    total += static_cast<double>(c[a.row_ind[t] * cols + a.col_ind[t]]);
  }
  CHECK(a.cost == total);
}

// The best total over every injection of the smaller side into the larger (summed in row
// order), the runner-up total (of a different assignment) and the column of each row in
// the first best assignment found.
struct brute_result {
  double best;
  double second;
  std::vector<std::size_t> col_for_row;
};

brute_result brute_force(const std::vector<double>& c, std::size_t rows, std::size_t cols, bool maximize) {
  const double sign = maximize ? -1.0 : 1.0;
  brute_result res{inf, inf, {}};
  std::vector<std::size_t> cfr(rows, none);
  std::vector<bool> used(std::max(rows, cols), false);
  auto finish = [&] {
    double total = 0;
    for (std::size_t i = 0; i < rows; ++i)
      if (cfr[i] != none) total += c[i * cols + cfr[i]];
    const double key = sign * total;
    if (key < res.best) {
      res.second = res.best;
      res.best = key;
      res.col_for_row = cfr;
    } else if (key < res.second) {
      res.second = key;
    }
  };
  // Wide (or square): each row takes a distinct column. Tall: each column a distinct row.
  auto rec = [&](auto&& self, std::size_t d) -> void {
    if (rows <= cols) {
      if (d == rows) return finish();
      for (std::size_t j = 0; j < cols; ++j)
        if (!used[j]) {
          used[j] = true;
          cfr[d] = j;
          self(self, d + 1);
          cfr[d] = none;
          used[j] = false;
        }
    } else {
      if (d == cols) return finish();
      for (std::size_t i = 0; i < rows; ++i)
        if (!used[i]) {
          used[i] = true;
          cfr[i] = d;
          self(self, d + 1);
          cfr[i] = none;
          used[i] = false;
        }
    }
  };
  rec(rec, 0);
  res.best *= sign;
  res.second *= sign;
  return res;
}

// SciPy's algorithm transcribed as plainly as possible (rectangular_lsap.cpp, SciPy >= 1.6):
// transpose when tall, negate when maximising, reject NaN and -inf, then per row the
// shortest augmenting path over the `remaining` list (filled nc-1 .. 0, swap removal), the
// dual update and the augmentation; a tall result is sorted by row.
struct port_result {
  bool ok = true;
  std::vector<std::size_t> rows, cols;
};

port_result scipy_port(std::vector<double> c, std::size_t nr, std::size_t nc, bool maximize) {
  port_result out;
  if (nr == 0 || nc == 0) return out;
  const bool transpose = nc < nr;
  if (transpose) {
    std::vector<double> t(nr * nc);
    for (std::size_t i = 0; i < nr; ++i)
      for (std::size_t j = 0; j < nc; ++j) t[j * nr + i] = c[i * nc + j];
    c = t;
    std::swap(nr, nc);
  }
  if (maximize)
    for (double& x : c) x = -x;
  for (double x : c)
    if (std::isnan(x) || x == -inf) return {false, {}, {}};
  std::vector<double> u(nr, 0), v(nc, 0), spc(nc);
  std::vector<std::ptrdiff_t> path(nc, -1), col4row(nr, -1), row4col(nc, -1);
  std::vector<bool> SR(nr), SC(nc);
  std::vector<std::size_t> remaining(nc);
  for (std::size_t cur = 0; cur < nr; ++cur) {
    double minVal = 0;
    std::size_t i = cur, num = nc;
    for (std::size_t it = 0; it < nc; ++it) remaining[it] = nc - it - 1;
    std::fill(SR.begin(), SR.end(), false);
    std::fill(SC.begin(), SC.end(), false);
    std::fill(spc.begin(), spc.end(), inf);
    std::ptrdiff_t sink = -1;
    while (sink == -1) {
      std::ptrdiff_t index = -1;
      double lowest = inf;
      SR[i] = true;
      for (std::size_t it = 0; it < num; ++it) {
        const std::size_t j = remaining[it];
        const double r = minVal + c[i * nc + j] - u[i] - v[j];
        if (r < spc[j]) {
          path[j] = static_cast<std::ptrdiff_t>(i);
          spc[j] = r;
        }
        if (spc[j] < lowest || (spc[j] == lowest && row4col[j] == -1)) {
          lowest = spc[j];
          index = static_cast<std::ptrdiff_t>(it);
        }
      }
      minVal = lowest;
      if (minVal == inf) return {false, {}, {}};
      const std::size_t j = remaining[static_cast<std::size_t>(index)];
      if (row4col[j] == -1)
        sink = static_cast<std::ptrdiff_t>(j);
      else
        i = static_cast<std::size_t>(row4col[j]);
      SC[j] = true;
      remaining[static_cast<std::size_t>(index)] = remaining[--num];
    }
    u[cur] += minVal;
    for (std::size_t r = 0; r < nr; ++r)
      if (SR[r] && r != cur) u[r] += minVal - spc[static_cast<std::size_t>(col4row[r])];
    for (std::size_t j = 0; j < nc; ++j)
      if (SC[j]) v[j] -= minVal - spc[j];
    std::ptrdiff_t j = sink;
    for (;;) {
      const std::ptrdiff_t r = path[static_cast<std::size_t>(j)];
      row4col[static_cast<std::size_t>(j)] = r;
      std::swap(col4row[static_cast<std::size_t>(r)], j);
      if (static_cast<std::size_t>(r) == cur) break;
    }
  }
  if (transpose) {
    std::vector<std::size_t> order(nr);
    std::iota(order.begin(), order.end(), std::size_t{0});
    std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return col4row[a] < col4row[b]; });
    for (std::size_t k : order) {
      out.rows.push_back(static_cast<std::size_t>(col4row[k]));
      out.cols.push_back(k);
    }
  } else {
    for (std::size_t i = 0; i < nr; ++i) {
      out.rows.push_back(i);
      out.cols.push_back(static_cast<std::size_t>(col4row[i]));
    }
  }
  return out;
}

std::string shape_info(std::size_t rows, std::size_t cols, std::uint64_t seed, bool maximize) {
  return std::to_string(rows) + " x " + std::to_string(cols) + ", seed " + std::to_string(seed) +
         (maximize ? ", maximize" : ", minimize");
}

}  // namespace

// ------------------------------------------------------------------------------------------
// Hand-written cases

TEST_CASE("linear_sum_assignment: SciPy's documented example, minimise and maximise", "[align][lsap]") {
  // SciPy's docstring: cost = [[4, 1, 3], [2, 0, 5], [3, 2, 2]] -> row_ind [0, 1, 2],
  // col_ind [1, 0, 2], total 1 + 2 + 2 = 5. Every other permutation costs more: the
  // identity 4 + 0 + 2 = 6, [2, 0, 1] 3 + 2 + 2 = 7, ... Maximising: [0, 2, 1], 4 + 5 + 2 = 11.
  const std::vector<double> c{4, 1, 3, 2, 0, 5, 3, 2, 2};
  const assignment a = linear_sum_assignment(c.data(), 3, 3);
  CHECK(a.status == assignment_status::ok);
  CHECK(a.row_ind == std::vector<std::size_t>{0, 1, 2});
  CHECK(a.col_ind == std::vector<std::size_t>{1, 0, 2});
  CHECK(a.cost == 5.0);
  const assignment m = linear_sum_assignment(c.data(), 3, 3, true);
  CHECK(m.col_ind == std::vector<std::size_t>{0, 2, 1});
  CHECK(m.cost == 11.0);
}

TEST_CASE("linear_sum_assignment: small worked matrices, square and rectangular (checked with SciPy 1.10.1)", "[align][lsap]") {
  // [[400, 150, 400], [400, 450, 600], [300, 225, 300]]: min [1, 0, 2] = 150 + 400 + 300 = 850
  // (every permutation sums to 850 or more); max [0, 2, 1] = 400 + 600 + 225 = 1225.
  const std::vector<double> sq{400, 150, 400, 400, 450, 600, 300, 225, 300};
  CHECK(linear_sum_assignment(sq.data(), 3, 3).col_ind == std::vector<std::size_t>{1, 0, 2});
  CHECK(linear_sum_assignment(sq.data(), 3, 3).cost == 850.0);
  CHECK(linear_sum_assignment(sq.data(), 3, 3, true).col_ind == std::vector<std::size_t>{0, 2, 1});
  // The same with a fourth column [1, 2, 3]: min 150 + 2 + 300 = 452, where row 2 may take
  // column 0 or column 2 (both 300). SciPy 1.10.1 answers [1, 3, 2]: the tie goes to the
  // column latest in its `remaining` order.
  const std::vector<double> wide{400, 150, 400, 1, 400, 450, 600, 2, 300, 225, 300, 3};
  const assignment w = linear_sum_assignment(wide.data(), 3, 4);
  CHECK(w.row_ind == std::vector<std::size_t>{0, 1, 2});
  CHECK(w.col_ind == std::vector<std::size_t>{1, 3, 2});
  CHECK(w.cost == 452.0);
  // Its transpose (4 x 3): SciPy gives rows [1, 2, 3], cols [0, 2, 1], also 452.
  std::vector<double> tall(12);
  for (std::size_t i = 0; i < 3; ++i)
    for (std::size_t j = 0; j < 4; ++j) tall[j * 3 + i] = wide[i * 4 + j];
  const assignment t = linear_sum_assignment(tall.data(), 4, 3);
  CHECK(t.row_ind == std::vector<std::size_t>{1, 2, 3});
  CHECK(t.col_ind == std::vector<std::size_t>{0, 2, 1});
  CHECK(t.cost == 452.0);
  // [[10, 10, 8, 11], [9, 8, 1, 1], [9, 7, 4, 10]]: min [1, 3, 2] = 10 + 1 + 4 = 15;
  // max [1, 0, 3] = 10 + 9 + 10 = 29 (SciPy 1.10.1 for both).
  const std::vector<double> w2{10, 10, 8, 11, 9, 8, 1, 1, 9, 7, 4, 10};
  CHECK(linear_sum_assignment(w2.data(), 3, 4).col_ind == std::vector<std::size_t>{1, 3, 2});
  CHECK(linear_sum_assignment(w2.data(), 3, 4, true).col_ind == std::vector<std::size_t>{1, 0, 3});
  CHECK(linear_sum_assignment(w2.data(), 3, 4, true).cost == 29.0);
}

TEST_CASE("linear_sum_assignment: +inf marks forbidden pairs when minimising", "[align][lsap]") {
  // [[10, inf, inf], [inf, inf, 1], [inf, 7, inf]]: the only finite assignment is
  // [0, 2, 1] = 10 + 1 + 7 = 18 (SciPy 1.10.1 agrees).
  const std::vector<double> c{10, inf, inf, inf, inf, 1, inf, 7, inf};
  const assignment a = linear_sum_assignment(c.data(), 3, 3);
  REQUIRE(a.ok());
  CHECK(a.col_ind == std::vector<std::size_t>{0, 2, 1});
  CHECK(a.cost == 18.0);
  // [[inf, 1], [1, inf]]: the anti-diagonal, 2.
  const std::vector<double> d{inf, 1, 1, inf};
  CHECK(linear_sum_assignment(d.data(), 2, 2).col_ind == std::vector<std::size_t>{1, 0});
  // Maximising, -inf plays that role: [[-inf, 1], [1, -inf]] -> [1, 0], total 2.
  const std::vector<double> e{-inf, 1, 1, -inf};
  const assignment m = linear_sum_assignment(e.data(), 2, 2, true);
  REQUIRE(m.ok());
  CHECK(m.col_ind == std::vector<std::size_t>{1, 0});
  CHECK(m.cost == 2.0);
  // A wide matrix may hold a column of +inf: that column is simply left out.
  const std::vector<double> f{inf, 3, 1, inf, 2, 5};
  const assignment w = linear_sum_assignment(f.data(), 2, 3);
  REQUIRE(w.ok());
  CHECK(w.col_ind == std::vector<std::size_t>{2, 1});
}

TEST_CASE("linear_sum_assignment: 1 x n and n x 1 pick the best entry, the lowest index on ties", "[align][lsap]") {
  // [3, 1, 2, 1]: minimum 1 at columns 1 and 3. SciPy scans `remaining` = [3, 2, 1, 0] and
  // keeps the last unassigned column of lowest cost: column 1. Maximum 3 at column 0.
  const std::vector<double> c{3, 1, 2, 1};
  const assignment row = linear_sum_assignment(c.data(), 1, 4);
  CHECK(row.row_ind == std::vector<std::size_t>{0});
  CHECK(row.col_ind == std::vector<std::size_t>{1});
  CHECK(row.cost == 1.0);
  CHECK(linear_sum_assignment(c.data(), 1, 4, true).col_ind == std::vector<std::size_t>{0});
  // As a column (4 x 1) the problem is solved transposed: row 1, column 0.
  const assignment col = linear_sum_assignment(c.data(), 4, 1);
  CHECK(col.row_ind == std::vector<std::size_t>{1});
  CHECK(col.col_ind == std::vector<std::size_t>{0});
  CHECK(col.cost == 1.0);
  CHECK(linear_sum_assignment(c.data(), 4, 1, true).row_ind == std::vector<std::size_t>{0});
  // 1 x 1.
  const double one = -2.5;
  const assignment s = linear_sum_assignment(&one, 1, 1);
  CHECK(s.col_ind == std::vector<std::size_t>{0});
  CHECK(s.cost == -2.5);
}

TEMPLATE_TEST_CASE("linear_sum_assignment: constant matrices give the identity, as in SciPy", "[align][lsap]", float,
                   double) {
  // SciPy fills `remaining` in reverse so that a constant matrix gives row t -> column t
  // (scipy issue 11602); wide and tall matrices too (rows 0..k-1 to columns 0..k-1).
  for (const double value : {0.0, 1.0, -3.5}) {
    for (const auto& [rows, cols] : std::vector<std::pair<std::size_t, std::size_t>>{
             {1, 1}, {2, 2}, {3, 3}, {5, 5}, {8, 8}, {64, 64}, {65, 65}, {200, 200}, {3, 7}, {7, 3}, {1, 9},
             {9, 1}, {40, 130}, {130, 40}}) {
      for (const bool maximize : {false, true}) {
        INFO(shape_info(rows, cols, 0, maximize) << ", value " << value);
        const std::vector<TestType> c(rows * cols, static_cast<TestType>(value));
        const assignment a = linear_sum_assignment(c.data(), rows, cols, maximize);
        check_structure(a, c, rows, cols);
        const std::size_t k = std::min(rows, cols);
        std::vector<std::size_t> id(k);
        std::iota(id.begin(), id.end(), std::size_t{0});
        CHECK(a.row_ind == id);
        CHECK(a.col_ind == id);
        CHECK(a.cost == value * static_cast<double>(k));
      }
    }
  }
}

// ------------------------------------------------------------------------------------------
// SciPy's own outputs

TEST_CASE("linear_sum_assignment: SciPy 1.10.1 outputs on tie-heavy integer matrices", "[align][lsap]") {
  // cost = floor(random_values(rows * cols, seed, 0, 3)), row-major: entries in {0, 1, 2},
  // so most of these problems have many optimal assignments and the answer is decided by
  // SciPy's tie rule. Expected values: scipy.optimize.linear_sum_assignment on the same
  // matrices (rebuilt in Python with the same splitmix64).
  struct scipy_case {
    std::size_t rows, cols;
    std::uint64_t seed;
    bool maximize;
    std::vector<std::size_t> row_ind, col_ind;
    double total;
  };
  const std::vector<scipy_case> cases{
      {3, 3, 100, false, {0, 1, 2}, {1, 0, 2}, 0},
      {3, 3, 100, true, {0, 1, 2}, {2, 1, 0}, 4},
      {4, 4, 101, false, {0, 1, 2, 3}, {2, 3, 0, 1}, 0},
      {4, 4, 101, true, {0, 1, 2, 3}, {0, 2, 3, 1}, 6},
      {5, 5, 102, false, {0, 1, 2, 3, 4}, {3, 2, 4, 0, 1}, 1},
      {5, 5, 102, true, {0, 1, 2, 3, 4}, {1, 0, 2, 3, 4}, 8},
      {6, 6, 103, false, {0, 1, 2, 3, 4, 5}, {4, 0, 3, 2, 1, 5}, 0},
      {6, 6, 103, true, {0, 1, 2, 3, 4, 5}, {5, 4, 0, 1, 2, 3}, 10},
      {7, 7, 104, false, {0, 1, 2, 3, 4, 5, 6}, {0, 6, 3, 2, 1, 4, 5}, 1},
      {7, 7, 104, true, {0, 1, 2, 3, 4, 5, 6}, {2, 3, 1, 4, 5, 6, 0}, 14},
      {8, 8, 105, false, {0, 1, 2, 3, 4, 5, 6, 7}, {1, 5, 7, 6, 2, 4, 3, 0}, 1},
      {8, 8, 105, true, {0, 1, 2, 3, 4, 5, 6, 7}, {0, 1, 2, 3, 5, 6, 4, 7}, 15},
      {3, 5, 106, false, {0, 1, 2}, {0, 4, 2}, 0},
      {3, 5, 106, true, {0, 1, 2}, {3, 2, 1}, 6},
      {5, 3, 107, false, {0, 2, 4}, {0, 2, 1}, 1},
      {5, 3, 107, true, {1, 2, 3}, {2, 1, 0}, 6},
      {2, 6, 108, false, {0, 1}, {2, 0}, 0},
      {2, 6, 108, true, {0, 1}, {0, 3}, 4},
      {6, 2, 109, false, {2, 4}, {0, 1}, 0},
      {6, 2, 109, true, {0, 3}, {0, 1}, 4},
      {4, 7, 110, false, {0, 1, 2, 3}, {1, 5, 2, 0}, 0},
      {4, 7, 110, true, {0, 1, 2, 3}, {5, 1, 0, 2}, 8},
      {7, 4, 111, false, {0, 1, 2, 5}, {2, 1, 0, 3}, 0},
      {7, 4, 111, true, {0, 1, 2, 6}, {0, 2, 1, 3}, 8},
      {1, 5, 112, false, {0}, {0}, 1},
      {1, 5, 112, true, {0}, {1}, 2},
      {5, 1, 113, false, {2}, {0}, 1},
      {5, 1, 113, true, {0}, {0}, 2},
      {9, 12, 114, false, {0, 1, 2, 3, 4, 5, 6, 7, 8}, {2, 4, 5, 0, 9, 3, 7, 8, 11}, 0},
      {9, 12, 114, true, {0, 1, 2, 3, 4, 5, 6, 7, 8}, {3, 1, 9, 2, 5, 4, 10, 0, 6}, 18},
      {12, 9, 115, false, {0, 1, 2, 3, 4, 5, 7, 8, 10}, {0, 2, 4, 1, 6, 5, 7, 8, 3}, 0},
      {12, 9, 115, true, {0, 1, 2, 3, 4, 6, 8, 9, 11}, {4, 1, 3, 6, 5, 7, 2, 8, 0}, 18},
  };
  for (const scipy_case& sc : cases) {
    INFO(shape_info(sc.rows, sc.cols, sc.seed, sc.maximize));
    const std::vector<double> c = random_integers(sc.rows * sc.cols, sc.seed, 0, 3);
    const assignment a = linear_sum_assignment(c.data(), sc.rows, sc.cols, sc.maximize);
    check_structure(a, c, sc.rows, sc.cols);
    CHECK(a.row_ind == sc.row_ind);
    CHECK(a.col_ind == sc.col_ind);
    CHECK(a.cost == sc.total);
    const std::vector<float> f = as<float>(c);
    const assignment b = linear_sum_assignment(f.data(), sc.rows, sc.cols, sc.maximize);
    CHECK(b.row_ind == sc.row_ind);
    CHECK(b.col_ind == sc.col_ind);
  }
}

TEST_CASE("linear_sum_assignment: SciPy 1.10.1 outputs on real matrices", "[align][lsap]") {
  // 30 x 30, random_values(900, 7), minimise (SciPy: total -26.784574965854748).
  {
    const std::vector<double> c = alloy_test::random_values(900, 7);
    const assignment a = linear_sum_assignment(c.data(), 30, 30);
    check_structure(a, c, 30, 30);
    CHECK(a.col_ind == std::vector<std::size_t>{26, 13, 24, 1,  25, 22, 18, 2, 17, 6,  4,  21, 27, 8,  29,
                                                3,  23, 19, 28, 10, 11, 7,  9, 0,  20, 15, 5,  12, 14, 16});
    CHECK(a.cost == Approx(-26.784574965854748).epsilon(1e-14));
  }
  // 20 x 35, random_values(700, 8), maximise (SciPy: total 19.023971294291936).
  {
    const std::vector<double> c = alloy_test::random_values(700, 8);
    const assignment a = linear_sum_assignment(c.data(), 20, 35, true);
    check_structure(a, c, 20, 35);
    CHECK(a.col_ind ==
          std::vector<std::size_t>{24, 5, 8, 6, 26, 16, 2, 27, 3, 34, 25, 4, 32, 15, 10, 19, 22, 13, 28, 29});
    CHECK(a.cost == Approx(19.023971294291936).epsilon(1e-14));
  }
  // 35 x 20 float32: random_values(700, 9) rounded to float, minimise (SciPy on the float32
  // array, which it converts to float64: total -19.087784767150879).
  {
    const std::vector<float> c = as<float>(alloy_test::random_values(700, 9));
    const assignment a = linear_sum_assignment(c.data(), 35, 20);
    check_structure(a, c, 35, 20);
    CHECK(a.row_ind == std::vector<std::size_t>{1, 3, 4, 6, 7, 8, 11, 12, 13, 15, 16, 21, 22, 23, 24, 30, 31, 32,
                                                33, 34});
    CHECK(a.col_ind ==
          std::vector<std::size_t>{11, 6, 2, 5, 19, 8, 1, 7, 12, 16, 3, 17, 4, 18, 10, 13, 14, 9, 0, 15});
    CHECK(a.cost == Approx(-19.087784767150879).epsilon(1e-14));
  }
}

// ------------------------------------------------------------------------------------------
// Brute force, every shape up to 7 x 7

TEMPLATE_TEST_CASE("linear_sum_assignment: brute force on every shape up to 7 x 7", "[align][lsap]", float, double) {
  for (std::size_t rows = 1; rows <= 7; ++rows)
    for (std::size_t cols = 1; cols <= 7; ++cols)
      for (const bool maximize : {false, true}) {
        // Integer-valued costs, narrow ranges (many ties) and a wider one with negatives:
        // the optimal total is exact, so it must equal the brute-force optimum exactly.
        for (std::uint64_t seed = 1; seed <= 4; ++seed) {
          INFO("integers, " << shape_info(rows, cols, seed, maximize));
          const double hi = seed <= 2 ? 3.0 : 20.0, lo = seed <= 2 ? 0.0 : -10.0;
          const std::vector<TestType> c = as<TestType>(random_integers(rows * cols, 1000 * rows + 10 * cols + seed, lo, hi));
          const assignment a = linear_sum_assignment(c.data(), rows, cols, maximize);
          check_structure(a, c, rows, cols);
          CHECK(a.cost == brute_force(widen(c), rows, cols, maximize).best);
        }
        // Real costs: the optimum is unique (checked: the runner-up is worse by a margin),
        // so the assignment itself must be the brute-force one.
        for (std::uint64_t seed = 1; seed <= 4; ++seed) {
          INFO("reals, " << shape_info(rows, cols, seed, maximize));
          const std::vector<TestType> c =
              as<TestType>(alloy_test::random_values(rows * cols, 5000 + 1000 * rows + 10 * cols + seed, -1, 1));
          const assignment a = linear_sum_assignment(c.data(), rows, cols, maximize);
          check_structure(a, c, rows, cols);
          const brute_result bf = brute_force(widen(c), rows, cols, maximize);
          CHECK(a.cost == Approx(bf.best).epsilon(0).margin(1e-12));
          if (std::abs(bf.second - bf.best) > 1e-9) CHECK(a.col_for_row() == bf.col_for_row);
        }
      }
}

// ------------------------------------------------------------------------------------------
// Index-for-index agreement with SciPy's loop

TEMPLATE_TEST_CASE("linear_sum_assignment: the same indices as SciPy's loop on random matrices", "[align][lsap]", float,
                   double) {
  // Shapes cross the 64-column block of the scan; integer costs make ties everywhere.
  const std::vector<std::pair<std::size_t, std::size_t>> shapes{
      {2, 2}, {5, 5}, {8, 13}, {13, 8}, {16, 16}, {31, 33}, {33, 31}, {20, 64}, {64, 20}, {65, 65}, {40, 150}, {150, 40}, {100, 100}};
  for (const auto& [rows, cols] : shapes)
    for (std::uint64_t seed = 1; seed <= 6; ++seed)
      for (const bool maximize : {false, true}) {
        INFO(shape_info(rows, cols, seed, maximize));
        std::vector<double> values;
        switch (seed % 3) {
          case 0: values = random_integers(rows * cols, seed, 0, 2); break;   // {0, 1}
          case 1: values = random_integers(rows * cols, seed, -4, 5); break;  // -4 .. 4
          default: values = alloy_test::random_values(rows * cols, seed); break;
        }
        const std::vector<TestType> c = as<TestType>(values);
        const assignment a = linear_sum_assignment(c.data(), rows, cols, maximize);
        check_structure(a, c, rows, cols);
        const port_result ref = scipy_port(widen(c), rows, cols, maximize);
        REQUIRE(ref.ok);
        CHECK(a.row_ind == ref.rows);
        CHECK(a.col_ind == ref.cols);
      }
}

TEST_CASE("linear_sum_assignment: the same indices as SciPy's loop with forbidden (+inf) pairs", "[align][lsap]") {
  // About a third of the entries +inf (minimise) or -inf (maximise); when SciPy finds no
  // finite assignment, alloy reports infeasible.
  std::size_t feasible = 0, infeasible = 0;
  for (std::size_t n = 2; n <= 12; ++n)
    for (std::uint64_t seed = 1; seed <= 20; ++seed)
      for (const bool maximize : {false, true}) {
        const std::size_t rows = n, cols = n + seed % 3;
        INFO(shape_info(rows, cols, seed, maximize));
        std::vector<double> c = random_integers(rows * cols, 77 * n + seed, 0, 6);
        const std::vector<double> mask = alloy_test::random_values(rows * cols, 99 * n + seed, 0, 1);
        for (std::size_t k = 0; k < c.size(); ++k)
          if (mask[k] < 0.35) c[k] = maximize ? -inf : inf;
        const assignment a = linear_sum_assignment(c.data(), rows, cols, maximize);
        const port_result ref = scipy_port(c, rows, cols, maximize);
        if (!ref.ok) {
          ++infeasible;
          CHECK(a.status == assignment_status::infeasible);
          continue;
        }
        ++feasible;
        check_structure(a, c, rows, cols);
        CHECK(a.col_ind == ref.cols);
        CHECK(std::isfinite(a.cost));
      }
  CHECK(feasible > 50);
  CHECK(infeasible > 5);
}

TEST_CASE("linear_sum_assignment: permuting the columns permutes the answer", "[align][lsap]") {
  // The alignment property: B = A with its columns shuffled by a permutation p (B(i, p[j]) =
  // A(i, j)). With real costs the optimum is unique, so the assignment of B is p applied to
  // the assignment of A.
  const std::size_t n = 300;
  const std::vector<double> a_cost = alloy_test::random_values(n * n, 42);
  std::vector<std::size_t> p(n);
  std::iota(p.begin(), p.end(), std::size_t{0});
  const std::vector<double> keys = alloy_test::random_values(n, 43);
  std::sort(p.begin(), p.end(), [&](std::size_t x, std::size_t y) { return keys[x] < keys[y]; });
  std::vector<double> b_cost(n * n);
  for (std::size_t i = 0; i < n; ++i)
    for (std::size_t j = 0; j < n; ++j) b_cost[i * n + p[j]] = a_cost[i * n + j];
  const assignment a = linear_sum_assignment(a_cost.data(), n, n);
  const assignment b = linear_sum_assignment(b_cost.data(), n, n);
  REQUIRE(a.ok());
  REQUIRE(b.ok());
  for (std::size_t i = 0; i < n; ++i) CHECK(b.col_ind[i] == p[a.col_ind[i]]);
  CHECK(b.cost == Approx(a.cost).epsilon(1e-13));
  // A permutation matrix hidden in noise is recovered: cost(i, j) = -1 where j = p[i].
  std::vector<double> c = alloy_test::random_values(n * n, 44, 0, 0.5);
  for (std::size_t i = 0; i < n; ++i) c[i * n + p[i]] = -1.0;
  const assignment r = linear_sum_assignment(c.data(), n, n);
  REQUIRE(r.ok());
  CHECK(r.col_ind == p);
}

TEMPLATE_TEST_CASE("linear_sum_assignment: maximising C is minimising -C", "[align][lsap]", float, double) {
  for (std::uint64_t seed = 1; seed <= 10; ++seed) {
    const std::size_t rows = 10 + seed, cols = 25 - seed;
    const std::vector<TestType> c = as<TestType>(random_integers(rows * cols, seed, -5, 5));
    std::vector<TestType> neg(c.size());
    for (std::size_t k = 0; k < c.size(); ++k) neg[k] = -c[k];
    const assignment mx = linear_sum_assignment(c.data(), rows, cols, true);
    const assignment mn = linear_sum_assignment(neg.data(), rows, cols, false);
    CHECK(mx.row_ind == mn.row_ind);
    CHECK(mx.col_ind == mn.col_ind);
    CHECK(mx.cost == -mn.cost);
  }
}

// ------------------------------------------------------------------------------------------
// Infeasible input: a status, never an exception

TEMPLATE_TEST_CASE("linear_sum_assignment: infeasible input is a status", "[align][lsap]", float, double) {
  using T = TestType;
  const T t_inf = std::numeric_limits<T>::infinity();
  auto check_infeasible = [](const assignment& a, std::size_t rows, std::size_t cols) {
    CHECK(a.status == assignment_status::infeasible);
    CHECK(!a.ok());
    CHECK(!static_cast<bool>(a));
    CHECK(a.rows == rows);
    CHECK(a.cols == cols);
    CHECK(a.row_ind.empty());
    CHECK(a.col_ind.empty());
    CHECK(std::isnan(a.cost));
    CHECK(a.col_for_row().empty());
  };
  const std::vector<T> base = as<T>({4, 1, 3, 2, 0, 5, 3, 2, 2, 7, 1, 6});  // 3 x 4 (or 4 x 3)

  SECTION("NaN anywhere, minimising or maximising, wide or tall") {
    for (std::size_t k = 0; k < base.size(); ++k)
      for (const bool maximize : {false, true}) {
        std::vector<T> c = base;
        c[k] = static_cast<T>(qnan);
        INFO("NaN at " << k << (maximize ? ", maximize" : ""));
        check_infeasible(linear_sum_assignment(c.data(), 3, 4, maximize), 3, 4);
        check_infeasible(linear_sum_assignment(c.data(), 4, 3, maximize), 4, 3);
      }
  }
  SECTION("-inf when minimising, +inf when maximising, anywhere") {
    for (std::size_t k = 0; k < base.size(); ++k) {
      std::vector<T> c = base;
      c[k] = -t_inf;
      check_infeasible(linear_sum_assignment(c.data(), 3, 4), 3, 4);
      check_infeasible(linear_sum_assignment(c.data(), 4, 3), 4, 3);
      c[k] = t_inf;
      check_infeasible(linear_sum_assignment(c.data(), 3, 4, true), 3, 4);
      check_infeasible(linear_sum_assignment(c.data(), 4, 3, true), 4, 3);
    }
  }
  SECTION("a row of +inf (minimising) or -inf (maximising) leaves no finite assignment") {
    for (std::size_t r = 0; r < 3; ++r) {
      std::vector<T> c = base;
      for (std::size_t j = 0; j < 4; ++j) c[r * 4 + j] = t_inf;
      check_infeasible(linear_sum_assignment(c.data(), 3, 4), 3, 4);
      for (std::size_t j = 0; j < 4; ++j) c[r * 4 + j] = -t_inf;
      check_infeasible(linear_sum_assignment(c.data(), 3, 4, true), 3, 4);
    }
  }
  SECTION("a tall matrix with a column of +inf: every column must be assigned") {
    std::vector<T> c = base;  // 4 x 3
    for (std::size_t i = 0; i < 4; ++i) c[i * 3 + 1] = t_inf;
    check_infeasible(linear_sum_assignment(c.data(), 4, 3), 4, 3);
  }
  SECTION("two rows that can only use the same column") {
    // [[1, inf, inf], [2, inf, inf], [3, 4, 5]]: rows 0 and 1 both need column 0.
    const std::vector<T> c = as<T>({1, inf, inf, 2, inf, inf, 3, 4, 5});
    check_infeasible(linear_sum_assignment(c.data(), 3, 3), 3, 3);
  }
  SECTION("all +inf") {
    const std::vector<T> c(6, t_inf);
    check_infeasible(linear_sum_assignment(c.data(), 2, 3), 2, 3);
    check_infeasible(linear_sum_assignment(c.data(), 3, 2), 3, 2);
  }
}

// ------------------------------------------------------------------------------------------
// Shapes, overloads, errors

TEST_CASE("linear_sum_assignment: empty matrices give an empty assignment", "[align][lsap]") {
  const std::vector<double> none_data;
  for (const auto& [rows, cols] : std::vector<std::pair<std::size_t, std::size_t>>{{0, 0}, {0, 5}, {5, 0}}) {
    for (const bool maximize : {false, true}) {
      const assignment a = linear_sum_assignment(static_cast<const double*>(nullptr), rows, cols, maximize);
      CHECK(a.status == assignment_status::ok);
      CHECK(a.rows == rows);
      CHECK(a.cols == cols);
      CHECK(a.row_ind.empty());
      CHECK(a.col_ind.empty());
      CHECK(a.cost == 0.0);
      CHECK(a.col_for_row() == std::vector<std::size_t>(rows, assignment::unassigned));
      CHECK(a.row_for_col() == std::vector<std::size_t>(cols, assignment::unassigned));
      CHECK(linear_sum_assignment(none_data, rows, cols, maximize).ok());
    }
  }
}

TEST_CASE("linear_sum_assignment: matrix_ref with a row stride reads only its block", "[align][lsap]") {
  // A 6 x 10 buffer; the 4 x 7 block at row 1, column 2 (and the 7 x 4 block in the
  // transposed buffer) must give what a dense copy of the block gives. The entries outside
  // the block are NaN: reading one would make the result infeasible.
  const std::size_t R = 6, C = 10;
  for (const auto& [rows, cols] : std::vector<std::pair<std::size_t, std::size_t>>{{4, 7}, {5, 3}, {1, 8}}) {
    std::vector<double> buf(R * C, qnan);
    const std::vector<double> block = random_integers(rows * cols, rows * 31 + cols, 0, 4);
    for (std::size_t i = 0; i < rows; ++i)
      for (std::size_t j = 0; j < cols; ++j) buf[(i + 1) * C + (j + 2)] = block[i * cols + j];
    const alloy::matrix_ref<const double> view{buf.data() + C + 2, rows, cols, C};
    for (const bool maximize : {false, true}) {
      const assignment a = linear_sum_assignment(view, maximize);
      const assignment d = linear_sum_assignment(block.data(), rows, cols, maximize);
      REQUIRE(a.ok());
      CHECK(a.row_ind == d.row_ind);
      CHECK(a.col_ind == d.col_ind);
      CHECK(a.cost == d.cost);
    }
  }
  // Non-const matrix_ref and as_matrix over a std::vector<float>.
  std::vector<float> f{4, 1, 3, 2, 0, 5, 3, 2, 2};
  const alloy::matrix_ref<float> m = alloy::as_matrix(f, 3, 3);
  CHECK(linear_sum_assignment(m).col_ind == std::vector<std::size_t>{1, 0, 2});
}

TEST_CASE("linear_sum_assignment: tensor overload and the result's helpers", "[align][lsap]") {
  const std::vector<double> c{400, 150, 400, 1, 400, 450, 600, 2, 300, 225, 300, 3};  // 3 x 4
  const assignment a = linear_sum_assignment(c, 3, 4);
  CHECK(a.col_ind == std::vector<std::size_t>{1, 3, 2});
  CHECK(a.size() == 3);
  CHECK(static_cast<bool>(a));
  CHECK(a.col_for_row() == std::vector<std::size_t>{1, 3, 2});
  CHECK(a.row_for_col() == std::vector<std::size_t>{assignment::unassigned, 0, 2, 1});
  // Its transpose, through a std::span: rows [1, 2, 3], cols [0, 2, 1] (SciPy 1.10.1).
  const std::vector<double> ct{400, 400, 300, 150, 450, 225, 400, 600, 300, 1, 2, 3};  // 4 x 3
  const std::span<const double> s(ct);
  const assignment t = linear_sum_assignment(s, 4, 3);
  CHECK(t.row_ind == std::vector<std::size_t>{1, 2, 3});
  CHECK(t.col_ind == std::vector<std::size_t>{0, 2, 1});
  CHECK(t.col_for_row() == std::vector<std::size_t>{assignment::unassigned, 0, 2, 1});
  CHECK(t.row_for_col() == std::vector<std::size_t>{1, 3, 2});
}

TEST_CASE("linear_sum_assignment: bad shapes are alloy::error", "[align][lsap]") {
  auto code_of = [](auto&& f) {
    try {
      f();
    } catch (const alloy::error& e) {
      return e.code();
    }
    FAIL("no alloy::error thrown");
    return alloy::errc::io_error;
  };
  const std::vector<double> c(12, 1.0);
  // A null pointer with elements.
  CHECK(code_of([] { linear_sum_assignment(static_cast<const double*>(nullptr), 2, 3); }) ==
        alloy::errc::invalid_argument);
  CHECK(code_of([] { linear_sum_assignment(alloy::matrix_ref<const float>{nullptr, 1, 1, 1}); }) ==
        alloy::errc::invalid_argument);
  // A row stride smaller than the row.
  CHECK(code_of([&] { linear_sum_assignment(alloy::matrix_ref<const double>{c.data(), 3, 4, 3}); }) ==
        alloy::errc::invalid_argument);
  // A tensor whose size is not rows * cols.
  CHECK(code_of([&] { linear_sum_assignment(c, 3, 5); }) == alloy::errc::size_mismatch);
  CHECK(code_of([&] { linear_sum_assignment(c, 0, 5); }) == alloy::errc::size_mismatch);
  // rows * cols overflowing std::size_t, and a stride that would.
  const std::size_t big = std::size_t{1} << (std::numeric_limits<std::size_t>::digits / 2 + 1);
  CHECK(code_of([&] { linear_sum_assignment(c.data(), big, big); }) == alloy::errc::invalid_argument);
  CHECK(code_of([&] {
          linear_sum_assignment(alloy::matrix_ref<const double>{c.data(), 4, 3, std::numeric_limits<std::size_t>::max() / 2});
        }) == alloy::errc::invalid_argument);
  // The message names the function and the shape.
  try {
    linear_sum_assignment(static_cast<const double*>(nullptr), 2, 3);
  } catch (const alloy::error& e) {
    CHECK(std::string(e.what()).find("linear_sum_assignment") != std::string::npos);
    CHECK(std::string(e.what()).find("2 x 3") != std::string::npos);
  }
  // A one-row matrix needs no stride.
  CHECK(linear_sum_assignment(alloy::matrix_ref<const double>{c.data(), 1, 4, 0}).col_ind ==
        std::vector<std::size_t>{0});
}
