// Magnitude pruning: task arithmetic over task vectors trimmed to their largest entries.
//
//   theta = theta_base + lambda * sum_i w_i trim(tau_i, density_i) / D
//
// with trim the exact top-k of |tau_i| (k = floor(density * n), ties at the cut keep the
// lower index; see ties.hpp and detail/trim.hpp), optional norm matching of each trimmed
// vector (L1, L2 or L-infinity: mergekit's `rescale`), and D = sum_i w_i when `normalize`
// (|D| < 1e-8 counts as 1). It is TIES without the sign election: peft's
// `magnitude_prune`, and mergekit's generalized task arithmetic with magnitude
// sparsification and no consensus. Complexity, memory, precision and determinism as TIES:
// two or three selection passes per model, one merge pass, no full-size temporary,
// bit-identical for any thread count. Edge cases: density 1 is task arithmetic; a density
// keeping no entry is an error (mergekit) or a zero task vector (peft).
#pragma once

#include <alloy/core/preset.hpp>
#include <alloy/kernels/task_vector_combine.hpp>
#include <alloy/methods/detail/sparse_front.hpp>
#include <alloy/methods/detail/trim.hpp>
#include <alloy/methods/task_arithmetic.hpp>
#include <alloy/methods/ties.hpp>

#include <optional>
#include <vector>

namespace alloy {


struct magnitude_prune_options {
  double density = 1.0;
  std::vector<double> densities = {};  // per model, overriding `density`
  rescale_norm rescale = rescale_norm::none;
  bool normalize = false;
  double lambda = 1.0;
  trim_scope scope = trim_scope::per_tensor;
  trim_rule rule = trim_rule::exact_k;
  empty_trim on_empty = empty_trim::error;
  bool storage_precision = false;
  bool promote_16bit = false;
  merge_output output = merge_output::merged;
  std::optional<dtype> out_dtype = {};
  execution exec = {};

  // mergekit: the defaults. peft: zero task vector for k = 0, storage precision, float32
  // outputs, the delta alone. paper: as mergekit (the method has no paper of its own).
  static magnitude_prune_options preset(alloy::preset p) {
    magnitude_prune_options o;
    if (p == alloy::preset::peft) {
      o.on_empty = empty_trim::zeros;
      o.storage_precision = true;
      o.promote_16bit = true;
      o.output = merge_output::delta;
    }
    return o;
  }
};

namespace detail {

// The whole-tensor part: the checks, the trim masks and their norm-matching factors. The
// merge (sum_or_vote_merge, a weighted sum) is then element-wise, as for ties (ties_prepare).
inline void magnitude_prune_prepare(std::span<sparse_job> jobs, const std::vector<double>& weights,
                                    const magnitude_prune_options& o) {
  const char* method = "magnitude_prune";
  const std::size_t n = jobs.empty() ? weights.size() : jobs[0].models.size();
  check_weights(method, weights, n);
  check_finite(method, "lambda", o.lambda);
  const auto densities = per_model(method, "density", o.density, o.densities, n);
  check_densities(method, densities, n);
  build_trim_masks(method, jobs, densities, o.scope, o.rule, o.on_empty, o.storage_precision, o.exec);
  match_norms(jobs, o.rescale, o.storage_precision, o.exec);
}

inline void magnitude_prune_jobs(std::span<sparse_job> jobs, const std::vector<double>& weights,
                                 const magnitude_prune_options& o) {
  magnitude_prune_prepare(jobs, weights, o);
  sum_or_vote_merge(jobs, weights, o, false, false);
}

}  // namespace detail

// magnitude_prune(base, models, weights, out [, options]) for tensors;
// magnitude_prune(base_set, model_sets, weights [, options]) -> tensor_set for whole models.
struct magnitude_prune_fn {
  void operator()(tensor_view base, std::span<const tensor_view> models, const std::vector<double>& weights,
                  mutable_tensor_view out, const magnitude_prune_options& o = {}) const {
    detail::sparse_job job = detail::tensor_job("magnitude_prune", base, models, out);
    detail::magnitude_prune_jobs(std::span(&job, 1), weights, o);
  }
  void operator()(tensor_view base, std::initializer_list<tensor_view> models, const std::vector<double>& weights,
                  mutable_tensor_view out, const magnitude_prune_options& o = {}) const {
    (*this)(base, std::span(models.begin(), models.size()), weights, out, o);
  }
  template <std::ranges::input_range R>
    requires tensor_like<std::ranges::range_value_t<R>>
  void operator()(tensor_view base, const R& models, const std::vector<double>& weights, mutable_tensor_view out,
                  const magnitude_prune_options& o = {}) const {
    (*this)(base, std::span<const tensor_view>(views_of(models)), weights, out, o);
  }
  template <named_tensors B, detail::model_set_range R>
  tensor_set operator()(const B& base, const R& models, const std::vector<double>& weights,
                        const magnitude_prune_options& o = {}) const {
    const auto sets = detail::base_and_models(base, models);
    tensor_set out;
    auto jobs = detail::set_jobs("magnitude_prune", sets, o.out_dtype, o.promote_16bit, out);
    detail::magnitude_prune_jobs(jobs, weights, o);
    return out;
  }
  template <named_tensors B>
  tensor_set operator()(const B& base, std::initializer_list<std::reference_wrapper<const tensor_set>> models,
                        const std::vector<double>& weights, const magnitude_prune_options& o = {}) const {
    return (*this)(base, std::span(models.begin(), models.size()), weights, o);
  }
};
inline constexpr magnitude_prune_fn magnitude_prune{};

}  // namespace alloy
