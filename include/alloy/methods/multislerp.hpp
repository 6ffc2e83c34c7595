// Multi-SLERP: a weighted spherical mean of N models (mergekit's `multislerp`).
//
//   v_i = x_i, or the task vector x_i - base with a base; each tensor flattened
//   w_i = weights / sum(weights) when normalize_weights (the default), else as given
//   n_i = |v_i|,  u_i = v_i / (n_i + eps)                   (eps = 1e-8)
//   m   = sum_i w_i u_i,  mhat = m / |m|                     (the tangent point)
//   T   = sum_i w_i (u_i - (u_i . mhat) mhat)                (the weighted mean in the tangent space)
//   r   = (cos|T| mhat + sin|T| T / |T|) * sum_i w_i n_i     (back on the sphere, rescaled)
//   out = r, or base + r
//
// T is identically zero: sum_i w_i (u_i . mhat) = m . mhat = |m|, so T = m - |m| mhat = 0 for
// any weights. mergekit computes it anyway (its |T| is rounding noise plus eps, giving cos = 1
// and sin|T| / |T| = 1 in float32), so its result is mhat * sum_i w_i n_i up to rounding, and
// so is alloy's, computed directly:
//   out = [base +] (sum_i w_i n_i / |m|) * sum_i (w_i / (n_i + eps)) v_i
// For two models this is the SLERP midpoint direction only at equal weights; in general it is
// the normalised weighted mean of the unit vectors (the projected, "extrinsic" spherical mean),
// scaled to the weighted mean norm.
//
// Source: arcee-ai/mergekit merge_methods/multislerp.py (after goddard.blog, "multislerp").
// Complexity: two streaming passes: the Gram matrix of the N (task) vectors (N(N+1)/2 dot
// products per element, kernels/reduce.hpp), then the weighted sum. Memory: no full-size
// temporary. Precision: task vectors and the output sum in the compute type (float; double
// for double data), the Gram accumulated into double, |m| and the coefficients in double and
// rounded once. Determinism: bit-identical for any thread count.
// Edge cases: one model returns it, copied (mergekit: tensors[0], the base ignored); a zero vector
// has u_i = 0 but its norm 0 still counts in the mean norm; when |m| < eps and either N = 2
// or every n_i <= eps (all task vectors zero: a frozen tensor), the result is the linear
// combination [base +] sum_i w_i v_i (mergekit's two-model fallback; for zero vectors: the
// base); when |m| < eps otherwise (vectors that cancel, like a, -a, b, -b at equal weights)
// errc::invalid_argument, as mergekit's ValueError; weights summing to less than 1e-8 in
// magnitude with normalize_weights are errc::invalid_argument (mergekit divides by them);
// NaN or Inf in the data is errc::non_finite.
// Deviations: with three or more all-zero (task) vectors mergekit raises, alloy returns the
// base (or zeros); mergekit normalises weights and sums in the tensors' dtype.
#pragma once

#include <alloy/methods/detail/reductions.hpp>

#include <cmath>
#include <initializer_list>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace alloy {

struct multislerp_options {
  bool normalize_weights = true;  // divide the weights by their sum
  double epsilon = 1e-8;          // added to each norm before normalising (> 0)
  std::optional<dtype> out_dtype = {};  // model level: default the base's (or first model's) dtype
  execution exec = {};
};

namespace detail {

inline std::vector<double> multislerp_weights(std::size_t models, bool has_base, std::span<const double> w,
                                              const multislerp_options& o) {
  const char* method = "multislerp";
  check_model_count(method, models, 1, kernels::max_stream_inputs - (has_base ? 1 : 0));
  check_weights(method, w, models);
  check_finite(method, "epsilon", o.epsilon);
  if (!(o.epsilon > 0))
    throw error(errc::invalid_argument, std::string(method) + ": epsilon = " + fmt(o.epsilon) + " must be > 0");
  std::vector<double> out(w.begin(), w.end());
  if (o.normalize_weights) {
    double s = 0;
    for (double x : w) s += x;
    if (std::abs(s) < 1e-8)
      throw error(errc::invalid_argument, std::string(method) + ": the weights sum to " + fmt(s) +
                                              ", so they cannot be normalized (set normalize_weights = false)");
    for (double& x : out) x /= s;
  }
  return out;
}

// Coefficients of the N (task) vectors from their Gram matrix; throws on cancellation.
inline void multislerp_coefficients(std::string_view tensor, std::span<const double> w, double eps,
                                    const double* g, double* c) {
  const std::size_t n = w.size();
  std::vector<double> norm(n), d(n);
  bool all_small = true;
  double mean_norm = 0;
  for (std::size_t i = 0; i < n; ++i) {
    norm[i] = std::sqrt(g[kernels::gram_pair(i, i, n)]);
    d[i] = norm[i] + eps;
    all_small = all_small && norm[i] <= eps;
    mean_norm += w[i] * norm[i];
  }
  double m2 = 0;
  for (std::size_t i = 0; i < n; ++i)
    for (std::size_t j = 0; j < n; ++j) m2 += w[i] * w[j] * g[kernels::gram_pair(i, j, n)] / (d[i] * d[j]);
  const double m = std::sqrt(std::max(m2, 0.0));
  if (m < eps) {
    if (n == 2 || all_small) {
      for (std::size_t i = 0; i < n; ++i) c[i] = w[i];
      return;
    }
    throw error(errc::invalid_argument,
                "multislerp: the weighted mean of the normalised vectors is zero" + in_tensor(tensor) +
                    ": antipodal vectors, or sets of vectors, whose weights balance out; change the weights");
  }
  for (std::size_t i = 0; i < n; ++i) c[i] = mean_norm / m * w[i] / d[i];
}

inline void multislerp_jobs(std::span<const geometric_job> jobs, bool has_base, std::span<const double> w,
                            const multislerp_options& o) {
  const char* method = "multislerp";
  const std::size_t n = w.size();
  std::vector<coefficient_table> tables;
  tables.reserve(jobs.size());
  if (n == 1) {  // the model itself; with a base, 0 * base + 1 * model (exact)
    for (std::size_t j = 0; j < jobs.size(); ++j) {
      coefficient_table& c = tables.emplace_back(1, jobs[j].in.size());
      c.d.back() = 1;
      c.finish();
    }
    run_combination<kernels::combine_mode::sum>(jobs, tables, whole_layouts(jobs), jobs.empty() ? 0 : jobs[0].in.size(),
                                                o.exec);
    return;
  }
  const auto gj = gram_jobs(jobs, has_base, [](const geometric_job& j) { return whole(j.out.size); });
  const auto g = gram(gj, o.exec);
  const auto labels = model_labels(n, false);
  for (std::size_t j = 0; j < jobs.size(); ++j) {
    check_gram_finite(method, jobs[j].name, gj[j], g[j], labels);
    coefficient_table& c = tables.emplace_back(1, n);
    multislerp_coefficients(jobs[j].name, w, o.epsilon, g[j].data(), c.at(0));
    c.finish();
  }
  const auto mode = has_base ? kernels::combine_mode::task : kernels::combine_mode::sum;
  run_combination(mode, jobs, tables, layouts_of(gj), n, o.exec);
}

inline void multislerp_tensor(std::optional<tensor_view> base, std::span<const tensor_view> models,
                              std::span<const double> weights, mutable_tensor_view out, const multislerp_options& o) {
  const auto w = multislerp_weights(models.size(), base.has_value(), weights, o);
  std::vector<tensor_view> in;
  if (base) in.push_back(*base);
  in.insert(in.end(), models.begin(), models.end());
  const auto labels = model_labels(models.size(), base.has_value());
  const geometric_job job = tensor_job("multislerp", std::move(in), labels, out, {});
  multislerp_jobs(std::span(&job, 1), base.has_value(), w, o);
}

inline tensor_set multislerp_sets(const std::vector<std::vector<named_view>>& sets, bool has_base,
                                  std::span<const double> weights, const multislerp_options& o) {
  const std::size_t n = sets.size() - (has_base ? 1 : 0);
  const auto w = multislerp_weights(n, has_base, weights, o);
  tensor_set out;
  const auto jobs = set_jobs("multislerp", sets, model_labels(n, has_base), o.out_dtype, out);
  multislerp_jobs(jobs, has_base, w, o);
  return out;
}

}  // namespace detail

// multislerp(models, weights, out [, options]) and multislerp(base, models, weights, out
// [, options]) for tensors; multislerp(model_sets, weights [, options]) and
// multislerp(base_set, model_sets, weights [, options]) -> tensor_set for whole models.
struct multislerp_fn {
  void operator()(std::span<const tensor_view> models, const std::vector<double>& weights, mutable_tensor_view out,
                  const multislerp_options& o = {}) const {
    detail::multislerp_tensor(std::nullopt, models, weights, out, o);
  }
  void operator()(std::initializer_list<tensor_view> models, const std::vector<double>& weights,
                  mutable_tensor_view out, const multislerp_options& o = {}) const {
    (*this)(std::span(models.begin(), models.size()), weights, out, o);
  }
  template <std::ranges::input_range R>
    requires tensor_like<std::ranges::range_value_t<R>>
  void operator()(const R& models, const std::vector<double>& weights, mutable_tensor_view out,
                  const multislerp_options& o = {}) const {
    (*this)(std::span<const tensor_view>(views_of(models)), weights, out, o);
  }
  void operator()(tensor_view base, std::span<const tensor_view> models, const std::vector<double>& weights,
                  mutable_tensor_view out, const multislerp_options& o = {}) const {
    detail::multislerp_tensor(base, models, weights, out, o);
  }
  void operator()(tensor_view base, std::initializer_list<tensor_view> models, const std::vector<double>& weights,
                  mutable_tensor_view out, const multislerp_options& o = {}) const {
    (*this)(base, std::span(models.begin(), models.size()), weights, out, o);
  }
  template <std::ranges::input_range R>
    requires tensor_like<std::ranges::range_value_t<R>>
  void operator()(tensor_view base, const R& models, const std::vector<double>& weights, mutable_tensor_view out,
                  const multislerp_options& o = {}) const {
    (*this)(base, std::span<const tensor_view>(views_of(models)), weights, out, o);
  }
  template <detail::model_set_range R>
  tensor_set operator()(const R& models, const std::vector<double>& weights, const multislerp_options& o = {}) const {
    return detail::multislerp_sets(detail::named_views_of_each(models), false, weights, o);
  }
  tensor_set operator()(std::initializer_list<std::reference_wrapper<const tensor_set>> models,
                        const std::vector<double>& weights, const multislerp_options& o = {}) const {
    return (*this)(std::span(models.begin(), models.size()), weights, o);
  }
  template <named_tensors B, detail::model_set_range R>
  tensor_set operator()(const B& base, const R& models, const std::vector<double>& weights,
                        const multislerp_options& o = {}) const {
    std::vector<std::vector<named_view>> sets{named_views_of(base)};
    for (auto& m : detail::named_views_of_each(models)) sets.push_back(std::move(m));
    return detail::multislerp_sets(sets, true, weights, o);
  }
  template <named_tensors B>
  tensor_set operator()(const B& base, std::initializer_list<std::reference_wrapper<const tensor_set>> models,
                        const std::vector<double>& weights, const multislerp_options& o = {}) const {
    return (*this)(base, std::span(models.begin(), models.size()), weights, o);
  }
};
inline constexpr multislerp_fn multislerp{};

}  // namespace alloy
