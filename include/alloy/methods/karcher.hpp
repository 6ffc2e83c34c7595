// Karcher mean: the weighted Riemannian (Frechet) mean of N models' directions on the unit
// sphere, rescaled to their mean norm (mergekit's `karcher`).
//
//   each tensor flattened; n_i = |x_i|, e_i = x_i / n_i; the valid models are those with
//   n_i > tol; a_i = alpha_i / sum_{valid} alpha_j (alpha = the weights, normalised to sum 1)
//   u   = sum_valid a_i e_i, normalised (or e_first_valid when |u| < tol)
//   repeat max_iter times:
//     theta_i = acos(clamp(u . e_i, -1, 1))
//     T = sum_{valid, theta_i >= tol} a_i theta_i / sin(theta_i) (e_i - (u . e_i) u)  (the log maps)
//     stop when |T| < tol
//     u = cos|T| u + sin|T| T / |T|   (the exponential map), renormalised when |u| > tol
//   out = (sum_i alpha_i n_i) u       (every model's norm, the invalid ones' included)
//
// Weights: mergekit's karcher ignores per-model `weight` parameters and always uses
// alpha_i = 1/N; alloy does the same by default (empty `weights`), and accepts weights >= 0,
// normalised to sum 1 (with equal weights the two agree).
//
// Computed in the span of the e_i: u and T are kept as coefficients over the e_i and every
// dot product comes from the N x N Gram matrix of the models, so any number of iterations
// costs two streaming passes (the Gram matrix, then out = sum_i c_i x_i), not two per
// iteration. Exact in exact arithmetic; in double the coefficient arithmetic is as accurate as
// mergekit's float32 tensor arithmetic or more.
//
// Reference: Karcher, "Riemannian center of mass and mollifier smoothing", CPAM 1977; the
// fixed-point iteration as in arcee-ai/mergekit merge_methods/karcher.py. Complexity: two
// streaming passes with N(N+1)/2 dot products per element, plus O(max_iter N^2) scalar work per
// tensor. Memory: no full-size temporary. Precision: Gram in double (kernels/reduce.hpp),
// iteration in double, coefficients rounded once to the compute type (float; double for
// double data), the sum rounded once to the output. Determinism: bit-identical for any
// thread count. Edge cases: one model returns it (copied); models with n_i <= tol do not
// steer the direction but count (as 0) in the norm; when every model is that small the
// result is zeros (mergekit's zeros_like); a model antipodal to the current mean (its log
// map undefined: sin(theta) < 1e-6 with theta near pi) is skipped for that step (mergekit
// divides by sin(float(pi)) = -8.7e-8 there); identical models return that model; NaN or Inf
// in the data is errc::non_finite; negative or non-finite weights, weights summing to 0, a
// negative or non-finite tol are errc::invalid_argument / errc::non_finite.
// Deviations: mergekit stores unit vectors and iterates in the tensors' dtype (bf16 for bf16
// models) and clamps dot products of float32 sums; alloy's results agree to rounding.
#pragma once

#include <alloy/methods/detail/reductions.hpp>

#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace alloy {

struct karcher_options {
  std::vector<double> weights = {};  // per model, >= 0, normalised; empty: 1/N (as mergekit)
  std::size_t max_iter = 10;         // fixed-point iterations at most (mergekit's default)
  double tol = 1e-5;                 // convergence and validity threshold (mergekit's default)
  std::optional<dtype> out_dtype = {};  // model level: default the first model's dtype
  execution exec = {};
};

namespace detail {

inline std::vector<double> karcher_alphas(std::size_t models, const karcher_options& o) {
  const char* method = "karcher";
  check_model_count(method, models, 1, kernels::max_stream_inputs);
  check_finite(method, "tol", o.tol);
  if (o.tol < 0) throw error(errc::invalid_argument, std::string(method) + ": tol = " + fmt(o.tol) + " is negative");
  if (o.weights.empty()) return std::vector<double>(models, 1.0 / static_cast<double>(models));
  check_weights(method, o.weights, models);
  double s = 0;
  for (std::size_t i = 0; i < models; ++i) {
    if (o.weights[i] < 0)
      throw error(errc::invalid_argument, std::string(method) + ": weight of model " + std::to_string(i) + " is " +
                                              fmt(o.weights[i]) + "; a Karcher mean needs weights >= 0");
    s += o.weights[i];
  }
  if (!(s > 0)) throw error(errc::invalid_argument, std::string(method) + ": the weights sum to 0");
  std::vector<double> a(o.weights);
  for (double& x : a) x /= s;
  return a;
}

// Coefficients c with out = sum_i c_i x_i, from the Gram matrix g of the models.
inline void karcher_coefficients(std::span<const double> alpha, const karcher_options& o, const double* g, double* c) {
  const std::size_t n = alpha.size();
  const double tol = o.tol;
  std::vector<double> norm(n);
  for (std::size_t i = 0; i < n; ++i) norm[i] = std::sqrt(g[kernels::gram_pair(i, i, n)]);
  std::vector<std::size_t> valid;
  for (std::size_t i = 0; i < n; ++i)
    if (norm[i] > tol) valid.push_back(i);
  std::fill(c, c + n, 0.0);
  if (valid.empty()) return;  // zeros
  double alpha_sum = 0;
  for (std::size_t i : valid) alpha_sum += alpha[i];
  std::vector<double> a(n, 0.0);
  for (std::size_t i : valid) a[i] = alpha_sum > 0 ? alpha[i] / alpha_sum : 0.0;
  // H = the Gram matrix of the unit vectors e_i (valid ones).
  std::vector<double> h(n * n, 0.0);
  for (std::size_t i : valid)
    for (std::size_t j : valid) h[i * n + j] = g[kernels::gram_pair(i, j, n)] / (norm[i] * norm[j]);
  auto hdot = [&](const std::vector<double>& x, const std::vector<double>& y) {
    double s = 0;
    for (std::size_t i : valid) {
      double r = 0;
      for (std::size_t j : valid) r += h[i * n + j] * y[j];
      s += x[i] * r;
    }
    return s;
  };
  std::vector<double> beta(a);  // u = sum_i beta_i e_i
  const double u0 = std::sqrt(std::max(hdot(beta, beta), 0.0));
  if (u0 < tol) {
    std::fill(beta.begin(), beta.end(), 0.0);
    beta[valid[0]] = 1;
  } else {
    for (double& b : beta) b /= u0;
  }
  const double pi = std::acos(-1.0);
  std::vector<double> tangent(n);
  for (std::size_t it = 0; it < o.max_iter; ++it) {
    std::fill(tangent.begin(), tangent.end(), 0.0);
    double along = 0;  // sum_i f_i (u . e_i): the u component removed from the log maps
    for (std::size_t i : valid) {
      double d = 0;
      for (std::size_t j : valid) d += h[i * n + j] * beta[j];
      d = std::clamp(d, -1.0, 1.0);
      const double theta = std::acos(d);
      if (theta < tol) continue;
      const double s = std::sin(theta);
      if (theta > pi / 2 && s < 1e-6) continue;  // antipodal: the log map is undefined
      const double f = a[i] * theta / s;
      tangent[i] += f;
      along += f * d;
    }
    for (std::size_t j : valid) tangent[j] -= along * beta[j];
    const double tn = std::sqrt(std::max(hdot(tangent, tangent), 0.0));
    if (tn < tol) break;
    const double cs = std::cos(tn), sn = std::sin(tn) / tn;
    for (std::size_t j : valid) beta[j] = cs * beta[j] + sn * tangent[j];
    const double un = std::sqrt(std::max(hdot(beta, beta), 0.0));
    if (un > tol)
      for (std::size_t j : valid) beta[j] /= un;
  }
  double scale = 0;
  for (std::size_t i = 0; i < n; ++i) scale += alpha[i] * norm[i];
  for (std::size_t i : valid) c[i] = scale * beta[i] / norm[i];
}

inline void karcher_jobs(std::span<const geometric_job> jobs, std::span<const double> alpha, const karcher_options& o) {
  const char* method = "karcher";
  const std::size_t n = alpha.size();
  std::vector<coefficient_table> tables;
  tables.reserve(jobs.size());
  if (n == 1) {  // the model itself
    for (std::size_t j = 0; j < jobs.size(); ++j) {
      coefficient_table& c = tables.emplace_back(1, 1);
      c.d[0] = 1;
      c.finish();
    }
  } else {
    const auto gj = gram_jobs(jobs, false, [](const geometric_job& j) { return whole(j.out.size); });
    const auto g = gram(gj, o.exec);
    const auto labels = model_labels(n, false);
    for (std::size_t j = 0; j < jobs.size(); ++j) {
      check_gram_finite(method, jobs[j].name, gj[j], g[j], labels);
      coefficient_table& c = tables.emplace_back(1, n);
      karcher_coefficients(alpha, o, g[j].data(), c.at(0));
      c.finish();
    }
  }
  run_combination<kernels::combine_mode::sum>(jobs, tables, whole_layouts(jobs), n, o.exec);
}

}  // namespace detail

// karcher(models, out [, options]) for tensors; karcher(model_sets [, options]) -> tensor_set
// for whole models.
struct karcher_fn {
  void operator()(std::span<const tensor_view> models, mutable_tensor_view out, const karcher_options& o = {}) const {
    const auto alpha = detail::karcher_alphas(models.size(), o);
    const auto labels = detail::model_labels(models.size(), false);
    const detail::geometric_job job =
        detail::tensor_job("karcher", std::vector<tensor_view>(models.begin(), models.end()), labels, out, {});
    detail::karcher_jobs(std::span(&job, 1), alpha, o);
  }
  void operator()(std::initializer_list<tensor_view> models, mutable_tensor_view out, const karcher_options& o = {}) const {
    (*this)(std::span(models.begin(), models.size()), out, o);
  }
  template <std::ranges::input_range R>
    requires tensor_like<std::ranges::range_value_t<R>>
  void operator()(const R& models, mutable_tensor_view out, const karcher_options& o = {}) const {
    (*this)(std::span<const tensor_view>(views_of(models)), out, o);
  }
  template <detail::model_set_range R>
  tensor_set operator()(const R& models, const karcher_options& o = {}) const {
    const auto sets = detail::named_views_of_each(models);
    const auto alpha = detail::karcher_alphas(sets.size(), o);
    tensor_set out;
    const auto jobs = detail::set_jobs("karcher", sets, detail::model_labels(sets.size(), false), o.out_dtype, out);
    detail::karcher_jobs(jobs, alpha, o);
    return out;
  }
  tensor_set operator()(std::initializer_list<std::reference_wrapper<const tensor_set>> models,
                        const karcher_options& o = {}) const {
    return (*this)(std::span(models.begin(), models.size()), o);
  }
};
inline constexpr karcher_fn karcher{};

}  // namespace alloy
