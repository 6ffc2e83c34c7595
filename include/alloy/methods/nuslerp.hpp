// NuSLERP: mergekit's newer SLERP, with t from two weights, optional row- or column-wise
// interpolation and an optional base model.
//
//   t = w_1 / (w_0 + w_1)   (0.5 when |w_0 + w_1| < 1e-6, mergekit's guard)
//   v_i = x_i, or the task vector x_i - base with a base
//   per vector (the flattened tensor, or each row / column, see below):
//     cos = (v0 . v1) / (max(|v0|, 1e-7) max(|v1|, 1e-7)), clamped to [-1, 1]; theta = acos(cos)
//     sin(theta) < 1e-6 (parallel or antiparallel):  r = (1 - t) v0 + t v1
//     otherwise:  r = sin((1 - t) theta) / sin(theta) v0 + sin(t theta) / sin(theta) v1
//   out = r, or base + r with a base
//
// Vectors: `flatten` (default, mergekit's nuslerp_flatten: true) interpolates the whole
// tensor as one vector. Otherwise `row_wise` = false takes the vectors along the last
// dimension (each contiguous row of a row-major [R, C] tensor: R vectors of C), and
// `row_wise` = true those along the first dimension (each column of [R, C]: C vectors of R),
// as mergekit's nuslerp(dim = -1 / dim = 0) does; mergekit's docs call these column and row
// vectors. 0-D and 1-D tensors are one vector either way.
//
// Source: arcee-ai/mergekit, merge_methods/nuslerp.py; SLERP itself: Shoemake 1985.
// Complexity: two streaming passes (reduction, then the element-wise combination); O(n).
// Memory: no full-size temporary; one coefficient pair per vector. Precision: task vectors
// in the compute type (float; double for double data), the reduction accumulated into
// double (kernels/reduce.hpp), the coefficients in double rounded once; the output rounded
// once. Determinism: bit-identical for any thread count.
// Edge cases: a zero vector gives cos = 0 (theta = pi/2, no NaN); parallel and antiparallel
// vectors take the linear path; weights summing to ~0 give t = 0.5; t outside [0, 1] (from
// weights of mixed sign) extrapolates, as in mergekit; NaN or Inf in the data is
// errc::non_finite; zero-length tensors give zero-length results.
// Deviations: mergekit tests colinearity as sin(theta) < 1e-8 in float32, where an exactly
// antiparallel pair gets sin(float(pi)) = -8.7e-8 and divides by it (amplifying rounding
// noise ~1e7-fold, or worse); alloy computes in double and takes the linear path below
// 1e-6, where the two formulas agree to 1e-12 relative for parallel vectors.
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

struct nuslerp_options {
  bool flatten = true;    // interpolate each tensor as one vector (mergekit's nuslerp_flatten)
  bool row_wise = false;  // without flatten: vectors along dim 0 instead of the last dim
  std::vector<std::size_t> shape = {};  // tensor level: the shape giving rows and columns
  std::optional<dtype> out_dtype = {};  // model level: default the base's (or first model's) dtype
  execution exec = {};
};

namespace detail {

inline constexpr double nuslerp_norm_floor = 1e-7;
inline constexpr double nuslerp_colinear_sin = 1e-6;

inline double nuslerp_t(std::span<const double> w) {
  const double s = w[0] + w[1];
  return std::abs(s) < 1e-6 ? 0.5 : w[1] / s;
}

// (a, b) with r = a v0 + b v1, from the Gram (g00, g01, g11).
inline void nuslerp_coefficients(double t, const double* g, double* ab) {
  const double n0 = std::max(std::sqrt(g[0]), nuslerp_norm_floor);
  const double n1 = std::max(std::sqrt(g[2]), nuslerp_norm_floor);
  const double cos = std::clamp(g[1] / (n0 * n1), -1.0, 1.0);
  const double theta = std::acos(cos);
  const double s = std::sin(theta);
  if (s < nuslerp_colinear_sin) {
    ab[0] = 1 - t;
    ab[1] = t;
    return;
  }
  ab[0] = std::sin((1 - t) * theta) / s;
  ab[1] = std::sin(t * theta) / s;
}

inline vector_layout nuslerp_layout(const nuslerp_options& o, const geometric_job& j) {
  if (o.flatten) return whole(j.out.size);
  return o.row_wise ? columns_of(j.shape, j.out.size) : rows_of(j.shape, j.out.size);
}

inline void check_nuslerp(std::size_t models, std::span<const double> w) {
  check_model_count("nuslerp", models, 2, 2);
  check_weights("nuslerp", w, 2);
}

inline void nuslerp_jobs(std::span<const geometric_job> jobs, bool has_base, std::span<const double> w,
                         const nuslerp_options& o) {
  const char* method = "nuslerp";
  const double t = nuslerp_t(w);
  const auto gj = gram_jobs(jobs, has_base, [&](const geometric_job& j) { return nuslerp_layout(o, j); });
  const auto g = gram(gj, o.exec);
  const auto labels = model_labels(2, false);
  std::vector<coefficient_table> tables;
  tables.reserve(jobs.size());
  for (std::size_t j = 0; j < jobs.size(); ++j) {
    check_gram_finite(method, jobs[j].name, gj[j], g[j], labels);
    const std::size_t vectors = gj[j].layout.vectors();
    coefficient_table& c = tables.emplace_back(vectors, 2);
    for (std::size_t v = 0; v < vectors; ++v) nuslerp_coefficients(t, g[j].data() + v * 3, c.at(v));
    c.finish();
  }
  const auto mode = has_base ? kernels::combine_mode::task : kernels::combine_mode::sum;
  run_combination(mode, jobs, tables, layouts_of(gj), 2, o.exec);
}

inline void nuslerp_tensor(std::optional<tensor_view> base, std::span<const tensor_view> models,
                           std::span<const double> w, mutable_tensor_view out, std::vector<std::size_t> input_shape,
                           const nuslerp_options& o) {
  const char* method = "nuslerp";
  check_nuslerp(models.size(), w);
  std::vector<tensor_view> in;
  if (base) in.push_back(*base);
  in.insert(in.end(), models.begin(), models.end());
  const auto labels = model_labels(2, base.has_value());
  geometric_job job = tensor_job(method, std::move(in), labels, out, {});
  job.shape = tensor_shape(method, std::move(input_shape), o.shape, out.size);
  nuslerp_jobs(std::span(&job, 1), base.has_value(), w, o);
}

inline tensor_set nuslerp_sets(std::vector<std::vector<named_view>> sets, bool has_base, std::span<const double> w,
                               const nuslerp_options& o) {
  check_nuslerp(sets.size() - (has_base ? 1 : 0), w);
  tensor_set out;
  const auto jobs = set_jobs("nuslerp", sets, model_labels(2, has_base), o.out_dtype, out);
  nuslerp_jobs(jobs, has_base, w, o);
  return out;
}

}  // namespace detail

// nuslerp({a, b}, {w_a, w_b}, out [, options]) and nuslerp(base, {a, b}, {w_a, w_b}, out
// [, options]) for tensors; nuslerp(model_sets, weights [, options]) and nuslerp(base_set,
// model_sets, weights [, options]) -> tensor_set for whole models.
struct nuslerp_fn {
  // Without a base.
  void operator()(std::span<const tensor_view> models, const std::vector<double>& weights, mutable_tensor_view out,
                  const nuslerp_options& o = {}) const {
    detail::nuslerp_tensor(std::nullopt, models, weights, out, {}, o);
  }
  void operator()(std::initializer_list<tensor_view> models, const std::vector<double>& weights, mutable_tensor_view out,
                  const nuslerp_options& o = {}) const {
    (*this)(std::span(models.begin(), models.size()), weights, out, o);
  }
  template <std::ranges::input_range R>
    requires tensor_like<std::ranges::range_value_t<R>>
  void operator()(const R& models, const std::vector<double>& weights, mutable_tensor_view out,
                  const nuslerp_options& o = {}) const {
    std::vector<std::size_t> shape;
    if (std::ranges::begin(models) != std::ranges::end(models)) shape = shape_of(*std::ranges::begin(models));
    detail::nuslerp_tensor(std::nullopt, views_of(models), weights, out, std::move(shape), o);
  }
  // With a base (its shape, when it has one, gives the rows and columns).
  template <detail::tensor_or_view B>
  void operator()(const B& base, std::span<const tensor_view> models, const std::vector<double>& weights,
                  mutable_tensor_view out, const nuslerp_options& o = {}) const {
    detail::nuslerp_tensor(tensor_view(base), models, weights, out, detail::input_shape(base), o);
  }
  template <detail::tensor_or_view B>
  void operator()(const B& base, std::initializer_list<tensor_view> models, const std::vector<double>& weights,
                  mutable_tensor_view out, const nuslerp_options& o = {}) const {
    (*this)(base, std::span(models.begin(), models.size()), weights, out, o);
  }
  template <detail::tensor_or_view B, std::ranges::input_range R>
    requires tensor_like<std::ranges::range_value_t<R>>
  void operator()(const B& base, const R& models, const std::vector<double>& weights, mutable_tensor_view out,
                  const nuslerp_options& o = {}) const {
    (*this)(base, std::span<const tensor_view>(views_of(models)), weights, out, o);
  }
  // Whole models.
  template <detail::model_set_range R>
  tensor_set operator()(const R& models, const std::vector<double>& weights, const nuslerp_options& o = {}) const {
    return detail::nuslerp_sets(detail::named_views_of_each(models), false, weights, o);
  }
  tensor_set operator()(std::initializer_list<std::reference_wrapper<const tensor_set>> models,
                        const std::vector<double>& weights, const nuslerp_options& o = {}) const {
    return (*this)(std::span(models.begin(), models.size()), weights, o);
  }
  template <named_tensors B, detail::model_set_range R>
  tensor_set operator()(const B& base, const R& models, const std::vector<double>& weights,
                        const nuslerp_options& o = {}) const {
    std::vector<std::vector<named_view>> sets{named_views_of(base)};
    for (auto& m : detail::named_views_of_each(models)) sets.push_back(std::move(m));
    return detail::nuslerp_sets(std::move(sets), true, weights, o);
  }
  template <named_tensors B>
  tensor_set operator()(const B& base, std::initializer_list<std::reference_wrapper<const tensor_set>> models,
                        const std::vector<double>& weights, const nuslerp_options& o = {}) const {
    return (*this)(base, std::span(models.begin(), models.size()), weights, o);
  }
};
inline constexpr nuslerp_fn nuslerp{};

}  // namespace alloy
