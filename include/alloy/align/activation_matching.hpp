// Activation matching (Ainsworth et al., "Git Re-Basin", ICLR 2023, section 3.1; Li et al.,
// "Convergent learning", ICLR 2016, for the correlation form): run both models on the same
// inputs, and for each permutation group match model B's units to model A's by the
// similarity of their activations, one linear assignment per group.
//
//   alloy::align::activation_matcher m;                     // correlation by default
//   for (each batch of inputs) {
//     m.add("P0", acts_a0, acts_b0);   // matrix_ref (rows = samples, cols = units) of A and B
//     m.add("P1", acts_a1, acts_b1);
//   }
//   alloy::align::activation_matching_result r = m.solve(spec);
//   alloy::tensor_set b_aligned = alloy::align::apply_permutations(spec, model_b, r.perms);
//
// Statistics, accumulated over every row added (Z_A, Z_B: N x n activations of one group):
//   correlation (default):  corr_ij = cov(Z_A[:, i], Z_B[:, j]) / (sd(Z_A[:, i]) sd(Z_B[:, j])),
//                           0 where either standard deviation is 0 (a dead unit);
//   inner_product:          E[Z_A[:, i] Z_B[:, j]] = (1/N) sum_s Z_A[s, i] Z_B[s, j], the
//                           statistic git-re-basin's activation matching code maximises.
// solve() maximises sum_i stat(i, perm[i]) by linear_sum_assignment, per group; perms[g][i] is
// the unit of B that becomes unit i (numpy.take convention, as everywhere in align/).
//
// Accumulation: in double, numerically stable: each batch's means and centred cross-products
// (one cblas_dgemm, Z_A^T Z_B on the centred batch) are merged into the running ones by
// Chan, Golub and LeVeque's pairwise update (co-moment += batch co-moment + n_old n_batch / n
// delta_A delta_B^T, one cblas_dger). The result does not depend on how the inputs are split
// into batches beyond rounding. Memory: n x n doubles per group plus O(rows x n) per add().
// Inputs: any storage scalar (float, double, bf16, fp16) through matrix_ref, or tensor_like
// values with an explicit unit count, or 2-D tensors with shape (xt::xtensor<float, 2>).
// Errors (alloy::error): an empty group name (invalid_argument); A and B batches with
// different shapes, or a batch whose unit count differs from the group's first batch
// (size_mismatch, naming the group); NaN or an infinity in a batch (non_finite, naming the
// group, the model, the row and the column); solve() with no activations (empty_input);
// solve(spec) when a group of the spec has no activations or activations were given for a
// group that permutes no tensor of the spec (invalid_argument). A group whose rows number 0
// cannot be solved (its statistic is undefined): empty_input, naming it.
// Needs a CBLAS (#include <cblas.h>; link OpenBLAS).
#pragma once

#include <alloy/align/linear_assignment.hpp>
#include <alloy/align/permutation_spec.hpp>
#include <alloy/core/matrix_ref.hpp>
#include <alloy/core/tensor.hpp>
#include <alloy/core/validate.hpp>
#include <alloy/error.hpp>

#include <cblas.h>

#include <climits>
#include <cmath>
#include <cstddef>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace alloy::align {

enum class activation_statistic {
  correlation,    // Pearson cross-correlation
  inner_product,  // raw E[a_i b_j]
};

struct activation_matching_options {
  activation_statistic statistic = activation_statistic::correlation;
};

struct activation_matching_result {
  permutation_map perms;                                 // one per group
  std::map<std::string, double, std::less<>> score;      // sum_i stat(i, perms[g][i])
  std::map<std::string, double, std::less<>> identity_score;  // sum_i stat(i, i)
};

class activation_matcher {
 public:
  explicit activation_matcher(activation_matching_options o = {}) : options_(o) {}

  const activation_matching_options& options() const noexcept { return options_; }

  // One batch of group `group`: a and b are rows x n activations (rows = samples, the same
  // inputs in the same order for both models).
  template <class T>
    requires storage_scalar<T>
  void add(std::string_view group, matrix_ref<const T> a, matrix_ref<const T> b) {
    add_impl(group, a, b);
  }
  template <class T>
    requires storage_scalar<T>
  void add(std::string_view group, matrix_ref<T> a, matrix_ref<T> b) {
    add_impl(group, matrix_ref<const T>(a), matrix_ref<const T>(b));
  }
  // Contiguous tensors of rows x units elements, row-major.
  template <tensor_like TA, tensor_like TB>
  void add(std::string_view group, const TA& a, const TB& b, std::size_t units) {
    const auto sa = as_span(a);
    const auto sb = as_span(b);
    if (units == 0 || sa.size() % units != 0 || sb.size() != sa.size())
      throw error(errc::size_mismatch, "activation_matcher: group '" + std::string(group) + "': activations of " +
                                           std::to_string(sa.size()) + " (model A) and " + std::to_string(sb.size()) +
                                           " (model B) elements are not rows of " + std::to_string(units) + " units");
    const std::size_t rows = sa.size() / units;
    using EA = std::remove_const_t<typename decltype(sa)::element_type>;
    using EB = std::remove_const_t<typename decltype(sb)::element_type>;
    add_impl(group, matrix_ref<const EA>{sa.data(), rows, units, units}, matrix_ref<const EB>{sb.data(), rows, units, units});
  }
  // 2-D tensors whose shape tensor_traits reports (xt::xtensor<float, 2>): rows x units.
  template <tensor_like TA, tensor_like TB>
  void add(std::string_view group, const TA& a, const TB& b) {
    const auto shape_a = shape_of(a), shape_b = shape_of(b);
    if (shape_a.size() != 2 || shape_a != shape_b)
      throw error(errc::size_mismatch, "activation_matcher: group '" + std::string(group) +
                                           "': expected two 2-D activation tensors (samples x units) of one shape, got " +
                                           shape_string(shape_a) + " and " + shape_string(shape_b) +
                                           " (give the unit count for flat tensors)");
    add(group, a, b, shape_a[1]);
  }

  // The groups seen, in order of first add().
  const std::vector<std::string>& groups() const noexcept { return order_; }
  // Rows accumulated for a group (0 when never seen).
  std::size_t samples(std::string_view group) const {
    auto it = stats_.find(group);
    return it == stats_.end() ? 0 : it->second.count;
  }
  std::size_t units(std::string_view group) const {
    auto it = stats_.find(group);
    return it == stats_.end() ? 0 : it->second.n;
  }

  // The n x n statistic of a group, row-major: entry (i, j) compares unit i of A with unit
  // j of B. errc::invalid_argument for an unknown group, empty_input when it has no rows.
  std::vector<double> statistic(std::string_view group) const {
    auto it = stats_.find(group);
    if (it == stats_.end())
      throw error(errc::invalid_argument, "activation_matcher: no activations for group '" + std::string(group) + "'");
    return statistic_of(it->first, it->second);
  }

  // One assignment per group seen.
  activation_matching_result solve() const {
    if (order_.empty()) throw error(errc::empty_input, "activation_matcher: solve() before any activations");
    activation_matching_result r;
    for (const auto& g : order_) {
      const group_stats& s = stats_.find(g)->second;
      const std::vector<double> st = statistic_of(g, s);
      const assignment a = linear_sum_assignment(st.data(), s.n, s.n, true);
      if (!a.ok())
        throw error(errc::non_finite, "activation_matcher: the statistic of group '" + g +
                                          "' is not finite (activations too large for double products)");
      double score = 0, id = 0;
      for (std::size_t i = 0; i < s.n; ++i) {
        score += st[i * s.n + a.col_ind[i]];
        id += st[i * s.n + i];
      }
      r.perms.emplace(g, a.col_ind);
      r.score.emplace(g, score);
      r.identity_score.emplace(g, id);
    }
    return r;
  }

  // solve(), checking the groups against a spec: every group of the spec has activations,
  // and every group with activations permutes a tensor of the spec.
  activation_matching_result solve(const permutation_spec& spec) const {
    for (const auto& g : order_)
      if (!spec.has_group(g))
        throw error(errc::invalid_argument, "activation_matcher: activations were given for group '" + g +
                                                "', which permutes no tensor of the spec");
    for (const auto& g : spec.groups())
      if (!stats_.count(g)) {
        const auto& first = spec.group_axes(g).front();
        throw error(errc::invalid_argument, "activation_matcher: no activations for group '" + g + "' (it permutes axis " +
                                                std::to_string(first.axis) + " of tensor '" + first.tensor + "')");
      }
    return solve();
  }

 private:
  struct group_stats {
    std::size_t n = 0, count = 0;
    std::vector<double> mean_a, mean_b, m2_a, m2_b, comoment;  // comoment: n x n, sum (a_i - mean)(b_j - mean)
  };

  template <class TA, class TB>
  void add_impl(std::string_view group, matrix_ref<const TA> a, matrix_ref<const TB> b) {
    const std::string g(group);
    if (g.empty()) throw error(errc::invalid_argument, "activation_matcher: an empty group name");
    if (a.rows != b.rows || a.cols != b.cols)
      throw error(errc::size_mismatch, "activation_matcher: group '" + g + "': model A's batch is " +
                                           std::to_string(a.rows) + " x " + std::to_string(a.cols) + ", model B's " +
                                           std::to_string(b.rows) + " x " + std::to_string(b.cols) +
                                           " (rows are samples, columns units)");
    if ((a.rows > 0 && a.cols > 0) && (a.data == nullptr || b.data == nullptr))
      throw error(errc::invalid_argument, "activation_matcher: group '" + g + "': null activation data");
    auto it = stats_.find(g);
    if (it != stats_.end() && it->second.n != a.cols)
      throw error(errc::size_mismatch, "activation_matcher: group '" + g + "' has " + std::to_string(it->second.n) +
                                           " units, this batch " + std::to_string(a.cols));
    const std::size_t rows = a.rows, n = a.cols;
    if (n > static_cast<std::size_t>(INT_MAX) || rows > static_cast<std::size_t>(INT_MAX))
      throw error(errc::invalid_argument, "activation_matcher: group '" + g + "': a batch too large for the BLAS");
    // Convert (and check) before touching the statistics.
    std::vector<double> za(rows * n), zb(rows * n);
    load(g, "model A", a, za);
    load(g, "model B", b, zb);
    if (it == stats_.end()) {
      group_stats s;
      s.n = n;
      s.mean_a.assign(n, 0);
      s.mean_b.assign(n, 0);
      s.m2_a.assign(n, 0);
      s.m2_b.assign(n, 0);
      s.comoment.assign(n * n, 0);
      it = stats_.emplace(g, std::move(s)).first;
      order_.push_back(g);
    }
    if (rows == 0 || n == 0) {
      it->second.count += rows;
      return;
    }
    group_stats& s = it->second;
    // Batch means, centring.
    std::vector<double> ma(n, 0), mb(n, 0);
    for (std::size_t r = 0; r < rows; ++r)
      for (std::size_t j = 0; j < n; ++j) {
        ma[j] += za[r * n + j];
        mb[j] += zb[r * n + j];
      }
    const double inv = 1.0 / static_cast<double>(rows);
    for (std::size_t j = 0; j < n; ++j) {
      ma[j] *= inv;
      mb[j] *= inv;
    }
    std::vector<double> m2a(n, 0), m2b(n, 0);
    for (std::size_t r = 0; r < rows; ++r)
      for (std::size_t j = 0; j < n; ++j) {
        const double da = za[r * n + j] -= ma[j];
        const double db = zb[r * n + j] -= mb[j];
        m2a[j] += da * da;
        m2b[j] += db * db;
      }
    // Merge (Chan et al.): delta = batch mean - running mean.
    const double n_old = static_cast<double>(s.count), n_b = static_cast<double>(rows), n_new = n_old + n_b;
    const double f = n_old * n_b / n_new;
    std::vector<double> da(n), db(n);
    for (std::size_t j = 0; j < n; ++j) {
      da[j] = ma[j] - s.mean_a[j];
      db[j] = mb[j] - s.mean_b[j];
    }
    const int ni = static_cast<int>(n), ri = static_cast<int>(rows);
    // comoment += Za^T Zb (centred batch)
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, ni, ni, ri, 1.0, za.data(), ni, zb.data(), ni, 1.0,
                s.comoment.data(), ni);
    // comoment += f * da db^T
    if (s.count > 0) cblas_dger(CblasRowMajor, ni, ni, f, da.data(), 1, db.data(), 1, s.comoment.data(), ni);
    for (std::size_t j = 0; j < n; ++j) {
      s.m2_a[j] += m2a[j] + f * da[j] * da[j];
      s.m2_b[j] += m2b[j] + f * db[j] * db[j];
      s.mean_a[j] += da[j] * (n_b / n_new);
      s.mean_b[j] += db[j] * (n_b / n_new);
    }
    s.count += rows;
  }

  template <class T>
  static void load(const std::string& g, const char* model, matrix_ref<const T> m, std::vector<double>& out) {
    for (std::size_t r = 0; r < m.rows; ++r)
      for (std::size_t c = 0; c < m.cols; ++c) {
        const double v = static_cast<double>(static_cast<std::conditional_t<std::is_same_v<T, double>, double, float>>(m(r, c)));
        if (!std::isfinite(v))
          throw error(errc::non_finite, "activation_matcher: group '" + g + "': " + model + "'s activation at row " +
                                            std::to_string(r) + ", unit " + std::to_string(c) + " is " +
                                            alloy::detail::fmt(v));
        out[r * m.cols + c] = v;
      }
  }

  std::vector<double> statistic_of(const std::string& g, const group_stats& s) const {
    if (s.count == 0)
      throw error(errc::empty_input, "activation_matcher: group '" + g + "' has no rows of activations");
    const std::size_t n = s.n;
    std::vector<double> st(n * n);
    const double N = static_cast<double>(s.count);
    if (options_.statistic == activation_statistic::inner_product) {
      for (std::size_t i = 0; i < n; ++i)
        for (std::size_t j = 0; j < n; ++j) st[i * n + j] = s.comoment[i * n + j] / N + s.mean_a[i] * s.mean_b[j];
    } else {
      // A unit whose variance is zero, or below rounding of its mean (a constant unit whose
      // centring left residues), correlates 0 with everything.
      auto sd = [N](double m2, double mean) { return m2 <= 1e-24 * N * mean * mean ? 0.0 : std::sqrt(m2); };
      std::vector<double> sd_b(n);
      for (std::size_t j = 0; j < n; ++j) sd_b[j] = sd(s.m2_b[j], s.mean_b[j]);
      for (std::size_t i = 0; i < n; ++i) {
        const double sd_a = sd(s.m2_a[i], s.mean_a[i]);
        for (std::size_t j = 0; j < n; ++j) {
          const double d = sd_a * sd_b[j];
          st[i * n + j] = d > 0 ? s.comoment[i * n + j] / d : 0.0;
        }
      }
    }
    return st;
  }

  activation_matching_options options_;
  std::map<std::string, group_stats, std::less<>> stats_;
  std::vector<std::string> order_;
};

}  // namespace alloy::align
