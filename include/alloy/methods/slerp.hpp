// SLERP: spherical linear interpolation between two models, per tensor.
//
//   v0, v1  the two tensors, flattened;  n_i = ||v_i||,  u_i = v_i / n_i if n_i > 1e-8 else v_i
//   cos = u0 . u1
//   |cos| > 0.9995 (parallel or antiparallel):  out = (1 - t) v0 + t v1
//   otherwise, theta = acos(cos):               out = sin((1 - t) theta) / sin(theta) v0
//                                                   + sin(t theta) / sin(theta) v1
// The interpolation runs on the raw tensors: only the angle comes from the normalised ones.
// t = 0 gives v0, t = 1 gives v1 (exactly on the linear path; within rounding of the sines
// otherwise). mergekit's `slerp` (the base model is v0).
//
// Paper: Shoemake, "Animating rotation with quaternion curves", SIGGRAPH 1985; for model
// merging as in mergekit (after a gist by dvschultz). Complexity: two streaming passes: one
// reduction (v0 . v1, |v0|^2, |v1|^2; kernels/reduce.hpp: detail::slerp_tables), one
// element-wise pass; O(n).
// Memory: no full-size temporary. Precision: the reduction accumulates float partials of 16
// products per lane into double (float32 pairwise-summation accuracy); the angle and the two
// coefficients are computed in double and rounded once to the compute type (float, double
// for double data); out = a v0 + b v1 in the compute type, rounded once to the output.
// Determinism: bit-identical for any thread count (and any SIMD width).
// Edge cases: a tensor with norm <= 1e-8 (zero) is not normalised, so cos = 0 against it and
// the sine formula applies (no NaN): out = sin((1 - t) pi/2) v0 + sin(t pi/2) v1; antiparallel
// tensors take the linear path; t outside [0, 1] or non-finite is errc::invalid_argument /
// errc::non_finite; NaN or Inf in a tensor is errc::non_finite (the angle would be NaN);
// zero-length tensors give a zero-length result; the output may be one input exactly.
// Deviations: mergekit computes norms and the dot product in float32 (numpy), alloy in the
// double-accumulated reduction above, so a cos within ~1e-6 of 0.9995 may take the other
// branch; mergekit returns tensors in v0's dtype, as alloy's model-level default does.
#pragma once

#include <alloy/methods/detail/reductions.hpp>

#include <cmath>
#include <concepts>
#include <functional>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

namespace alloy {

struct slerp_options {
  std::optional<dtype> out_dtype = {};  // model level: default the first model's dtype
  execution exec = {};
};

// A per-tensor t for model-level merges: called with each tensor's name.
template <class F>
concept tensor_parameter = std::invocable<const F&, std::string_view> &&
                           std::convertible_to<std::invoke_result_t<const F&, std::string_view>, double>;

namespace detail {

inline constexpr double slerp_norm_eps = 1e-8;
inline constexpr double slerp_dot_threshold = 0.9995;

inline void check_slerp_t(std::string_view method, std::string_view tensor, double t) {
  check_finite(method, "t" + in_tensor(tensor), t);
  if (t < 0 || t > 1)
    throw error(errc::invalid_argument,
                std::string(method) + ": t = " + fmt(t) + " is outside [0, 1]" + in_tensor(tensor));
}

// (a, b) with out = a v0 + b v1, from the Gram (g00, g01, g11) of v0 and v1.
inline void slerp_coefficients(double t, const double* g, double* ab) {
  const double n0 = std::sqrt(g[0]), n1 = std::sqrt(g[2]);
  const double d0 = n0 > slerp_norm_eps ? n0 : 1.0;
  const double d1 = n1 > slerp_norm_eps ? n1 : 1.0;
  const double dot = g[1] / d0 / d1;
  if (std::abs(dot) > slerp_dot_threshold) {
    ab[0] = 1 - t;
    ab[1] = t;
    return;
  }
  const double theta0 = std::acos(dot);
  const double sin0 = std::sin(theta0);
  const double theta_t = theta0 * t;
  ab[0] = std::sin(theta0 - theta_t) / sin0;
  ab[1] = std::sin(theta_t) / sin0;
}

// The first pass over validated jobs, each with inputs {v0, v1}: the reduction, its checks
// and each job's (a, b), one coefficient row for the whole tensor.
inline std::vector<coefficient_table> slerp_tables(std::span<const geometric_job> jobs, std::span<const double> ts,
                                                   const execution& ex) {
  const char* method = "slerp";
  const auto gj = gram_jobs(jobs, false, [](const geometric_job& j) { return whole(j.out.size); });
  const auto g = gram(gj, ex);
  const auto labels = model_labels(2, false);
  std::vector<coefficient_table> tables;
  tables.reserve(jobs.size());
  for (std::size_t j = 0; j < jobs.size(); ++j) {
    check_gram_finite(method, jobs[j].name, gj[j], g[j], labels);
    coefficient_table& c = tables.emplace_back(1, 2);
    slerp_coefficients(ts[j], g[j].data(), c.at(0));
    c.finish();
  }
  return tables;
}

// Both passes; the second, out = a v0 + b v1, is element-wise, so the streaming engine runs
// it in chunks of a tensor after slerp_tables.
inline void slerp_jobs(std::span<const geometric_job> jobs, std::span<const double> ts, const execution& ex) {
  run_combination<kernels::combine_mode::sum>(jobs, slerp_tables(jobs, ts, ex), whole_layouts(jobs), 2, ex);
}

template <class TOf>
tensor_set slerp_sets(const std::vector<std::vector<named_view>>& sets, const TOf& t_of, const slerp_options& o) {
  const char* method = "slerp";
  tensor_set out;
  auto jobs = set_jobs(method, sets, model_labels(2, false), o.out_dtype, out);
  std::vector<double> ts;
  ts.reserve(jobs.size());
  for (const auto& j : jobs) {
    ts.push_back(static_cast<double>(t_of(j.name)));
    check_slerp_t(method, j.name, ts.back());
  }
  slerp_jobs(jobs, ts, o.exec);
  return out;
}

}  // namespace detail

// slerp(v0, v1, t, out [, options]) for tensors;
// slerp(set0, set1, t, [, options]) -> tensor_set for whole models, with t a number or a
// callable giving each tensor's t from its name (mergekit's per-layer t lists).
struct slerp_fn {
  void operator()(tensor_view v0, tensor_view v1, double t, mutable_tensor_view out, const slerp_options& o = {}) const {
    const char* method = "slerp";
    detail::check_slerp_t(method, {}, t);
    const auto labels = detail::model_labels(2, false);
    const detail::geometric_job job = detail::tensor_job(method, {v0, v1}, labels, out, {});
    detail::slerp_jobs(std::span(&job, 1), std::span(&t, 1), o.exec);
  }
  template <named_tensors A, named_tensors B>
  tensor_set operator()(const A& set0, const B& set1, double t, const slerp_options& o = {}) const {
    detail::check_slerp_t("slerp", {}, t);
    return detail::slerp_sets({named_views_of(set0), named_views_of(set1)}, [t](std::string_view) { return t; }, o);
  }
  template <named_tensors A, named_tensors B, tensor_parameter F>
  tensor_set operator()(const A& set0, const B& set1, const F& t_of, const slerp_options& o = {}) const {
    return detail::slerp_sets({named_views_of(set0), named_views_of(set1)}, t_of, o);
  }
};
inline constexpr slerp_fn slerp{};

}  // namespace alloy
