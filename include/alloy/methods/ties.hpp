// TIES-merging: trim each task vector to its largest entries, elect a sign per element,
// merge only the entries that agree with it (a disjoint mean).
//
//   tau_i = theta_i - theta_base;  t_i = trim(tau_i, density_i)  (top-k by magnitude)
//   vote  s = sum_i u_i  (or sum_i sign(u_i)),  u_i = w_i t_i (mergekit) or t_i (peft, paper)
//   sign  + when s > 0 or s == 0 (or, paper: s == 0 takes the model's majority sign)
//   merge d = sum_{i agrees} w_i t_i / D,  D = sum of agreeing w_i (mergekit), their count
//         (peft, paper) or 1;  theta = theta_base + lambda d  (peft: d alone)
//
// Paper: Yadav et al., "TIES-Merging: Resolving Interference When Merging Models", NeurIPS
// 2023. Complexity: for tensors of 64Ki entries or more, one streaming pass selects every
// model's exact top-k at once (methods/detail/sampled_topk.hpp; the radix selection of
// kernels/radix_select.hpp, two or three passes per model, when the sampled band misses), one
// more pass for the paper's zero-vote rule, then one fused merge pass; O(n) time. Memory:
// the sample and band entries (a few % of n keys at most, capped), per-thread 256 KiB
// histograms when the radix selection runs, and (N + 2) tiles of 2048 elements; no
// full-size temporary. Precision: computed in float (double for double data),
// rounded once at the output. Determinism: the kept set is exact (ties at the cut: lower
// index first) and every reduction is ordered, so results are bit-identical for any thread
// count. Edge cases: density 1 keeps everything; a density keeping no entry is an error
// (mergekit) or keeps nothing (peft); a zero entry never agrees with the elected sign; an
// element where no model agrees is left at the base; NaN magnitudes rank above Inf.
// Deviations between implementations (docs/methods/ties.md) are options with presets.
#pragma once

#include <alloy/core/preset.hpp>
#include <alloy/kernels/task_vector_combine.hpp>
#include <alloy/methods/detail/sparse_front.hpp>
#include <alloy/methods/detail/trim.hpp>
#include <alloy/methods/task_arithmetic.hpp>

#include <cmath>
#include <cstdint>
#include <optional>
#include <vector>

namespace alloy {

enum class consensus { sum, count };                    // sign vote by mass or by count
enum class ties_denominator { weight_sum, count, none };  // what the agreeing sum is divided by
// The sign elected by a vote of exactly 0: +, -, or the sign most elements of the whole
// model voted for (the paper; model_majority resolves to positive or negative, and a caller
// that merges tensor by tensor, like alloy merge, resolves it once and passes the result).
enum class zero_vote { positive, model_majority, negative };

struct ties_options {
  double density = 1.0;                // fraction kept per task vector (0, 1]
  std::vector<double> densities = {};  // per model, overriding `density` when given
  consensus consensus_method = consensus::sum;
  bool weights_before_vote = true;  // mergekit: vote on w_i t_i; peft, paper: on t_i
  ties_denominator denominator = ties_denominator::weight_sum;
  double lambda = 1.0;
  trim_scope scope = trim_scope::per_tensor;
  trim_rule rule = trim_rule::exact_k;
  empty_trim on_empty = empty_trim::error;
  zero_vote zero = zero_vote::positive;
  bool storage_precision = false;  // peft: task vectors rounded to the input storage type
  bool promote_16bit = false;      // peft: model-level outputs of 16-bit tensors are float32
  merge_output output = merge_output::merged;
  std::optional<dtype> out_dtype = {};
  execution exec = {};

  static ties_options preset(alloy::preset p) {
    ties_options o;
    switch (p) {
      case alloy::preset::mergekit:
        break;
      case alloy::preset::peft:
        o.weights_before_vote = false;
        o.denominator = ties_denominator::count;
        o.on_empty = empty_trim::zeros;
        o.storage_precision = true;
        o.promote_16bit = true;
        o.output = merge_output::delta;
        break;
      case alloy::preset::paper:
        o.weights_before_vote = false;
        o.denominator = ties_denominator::count;
        o.scope = trim_scope::whole_model;
        o.rule = trim_rule::paper;
        o.zero = zero_vote::model_majority;
        break;
    }
    return o;
  }
};

namespace detail {

template <class C>
kernels::task_vector_combine<C> ties_kernel(std::span<const C> w, const ties_options& o, bool majority_positive) {
  kernels::task_vector_combine<C> f;
  f.weights = w;
  f.kind = kernels::combine_kind::ties;
  f.weighted_vote = o.weights_before_vote;
  f.count_vote = o.consensus_method == consensus::count;
  f.zero_vote_positive = o.zero == zero_vote::positive || (o.zero == zero_vote::model_majority && majority_positive);
  f.denominator = o.denominator == ties_denominator::count ? kernels::vote_denominator::count
                                                           : kernels::vote_denominator::weight_sum;
  f.divide = o.denominator != ties_denominator::none;
  f.scale = o.lambda != 1.0;
  f.lambda = static_cast<C>(o.lambda);
  f.add_base = o.output == merge_output::merged;
  return f;
}

// sum over every element of sign(vote): the paper's zero-vote rule takes its sign over the
// whole model (more elements voting + than -). One extra pass; per-item sums in item order.
inline std::int64_t vote_balance(std::span<const sparse_job> jobs, const linear_weights& lw, const ties_options& o) {
  std::vector<std::int64_t> per_item(task_vector_items(jobs), 0);
  for_each_task_vector_tile(jobs, o.storage_precision, o.exec,
                            [&](std::size_t, std::size_t item, auto tag, auto rows, std::size_t, std::size_t len) {
                              using C = decltype(tag);
                              const auto w = lw.get<C>();
                              std::int64_t sum = 0;
                              for (std::size_t j = 0; j < len; ++j) {
                                C vote = 0;
                                for (std::size_t i = 0; i < w.size(); ++i) {
                                  const C u = o.weights_before_vote ? rows[1 + i][j] * w[i] : rows[1 + i][j];
                                  vote = vote + (o.consensus_method == consensus::count ? C((u > 0) - (u < 0)) : u);
                                }
                                sum += (vote > 0) - (vote < 0);
                              }
                              per_item[item] += sum;
                            });
  std::int64_t total = 0;
  for (auto v : per_item) total += v;
  return total;
}

inline bool majority_vote_positive(std::span<const sparse_job> jobs, const linear_weights& lw, const ties_options& o) {
  return vote_balance(jobs, lw, o) > 0;
}

// The vote part of any TIES-style options (dare_ties, breadcrumbs_ties, della share the fields).
template <class O>
ties_options vote_options_of(const O& o) {
  ties_options t;
  t.consensus_method = o.consensus_method;
  t.weights_before_vote = o.weights_before_vote;
  t.denominator = o.denominator;
  t.lambda = o.lambda;
  t.zero = o.zero;
  t.storage_precision = o.storage_precision;
  t.output = o.output;
  t.exec = o.exec;
  return t;
}

// The weighted-sum combine of the linear variants (options with normalize, lambda, output).
template <class C, class O>
kernels::task_vector_combine<C> linear_kernel(const linear_weights& lw, const O& o) {
  kernels::task_vector_combine<C> f;
  f.weights = lw.get<C>();
  f.kind = kernels::combine_kind::linear;
  f.divide = o.normalize;
  f.linear_divisor = lw.divisor<C>();
  f.scale = o.lambda != 1.0;
  f.lambda = static_cast<C>(o.lambda);
  f.add_base = o.output == merge_output::merged;
  return f;
}

// ties' whole-tensor part: the checks, then every job's trim masks (each model's top-k cut)
// and the sign a zero vote takes. With the masks set, the rest (ties_merge) is element-wise:
// the streaming engine merges a tensor in chunks (slice_job) after this.
inline bool ties_prepare(std::span<sparse_job> jobs, const std::vector<double>& weights, const ties_options& o) {
  const char* method = "ties";
  const std::size_t n = jobs.empty() ? weights.size() : jobs[0].models.size();
  check_weights(method, weights, n);
  check_finite(method, "lambda", o.lambda);
  const auto densities = per_model(method, "density", o.density, o.densities, n);
  check_densities(method, densities, n);
  build_trim_masks(method, jobs, densities, o.scope, o.rule, o.on_empty, o.storage_precision, o.exec);
  return o.zero == zero_vote::model_majority && majority_vote_positive(jobs, linear_weights(weights), o);
}

// The merge of jobs whose masks are set (ties_prepare, or a whole-model plan), with the zero
// vote's sign under zero_vote::model_majority.
inline void ties_merge(std::span<const sparse_job> jobs, const std::vector<double>& weights, const ties_options& o,
                       bool majority_positive) {
  const linear_weights lw(weights);
  run_sparse_merge(jobs, o.storage_precision, o.exec, [&](std::size_t, auto tag) {
    return ties_kernel<decltype(tag)>(lw.get<decltype(tag)>(), o, majority_positive);
  });
}

// The merge of sparsified jobs (masks set) in the two forms of dare, breadcrumbs and della:
// (ties_vote) the TIES vote and disjoint merge, whose zero vote under
// zero_vote::model_majority takes majority_positive, or the weighted sum, with mergekit's
// guard against dividing by a (near) zero sum of weights. Options without vote fields
// (magnitude_prune's) always take the sum.
template <class O>
void sum_or_vote_merge(std::span<const sparse_job> jobs, const std::vector<double>& weights, const O& o,
                       bool ties_vote, bool majority_positive) {
  if constexpr (requires { o.consensus_method; }) {
    if (ties_vote) {
      ties_merge(jobs, weights, vote_options_of(o), majority_positive);
      return;
    }
  }
  linear_weights lw(weights);
  if (std::abs(lw.divisor_f) < 1e-8f) lw.divisor_f = 1;
  if (std::abs(lw.divisor_d) < 1e-8) lw.divisor_d = 1;
  run_sparse_merge(jobs, o.storage_precision, o.exec,
                   [&](std::size_t, auto tag) { return linear_kernel<decltype(tag)>(lw, o); });
}

inline void ties_jobs(std::span<sparse_job> jobs, const std::vector<double>& weights, const ties_options& o) {
  const bool majority = ties_prepare(jobs, weights, o);
  ties_merge(jobs, weights, o, majority);
}

}  // namespace detail

// ties(base, models, weights, out [, options]) for tensors;
// ties(base_set, model_sets, weights [, options]) -> tensor_set for whole models.
struct ties_fn {
  void operator()(tensor_view base, std::span<const tensor_view> models, const std::vector<double>& weights,
                  mutable_tensor_view out, const ties_options& o = {}) const {
    detail::sparse_job job = detail::tensor_job("ties", base, models, out);
    detail::ties_jobs(std::span(&job, 1), weights, o);
  }
  void operator()(tensor_view base, std::initializer_list<tensor_view> models, const std::vector<double>& weights,
                  mutable_tensor_view out, const ties_options& o = {}) const {
    (*this)(base, std::span(models.begin(), models.size()), weights, out, o);
  }
  template <std::ranges::input_range R>
    requires tensor_like<std::ranges::range_value_t<R>>
  void operator()(tensor_view base, const R& models, const std::vector<double>& weights, mutable_tensor_view out,
                  const ties_options& o = {}) const {
    (*this)(base, std::span<const tensor_view>(views_of(models)), weights, out, o);
  }
  template <named_tensors B, detail::model_set_range R>
  tensor_set operator()(const B& base, const R& models, const std::vector<double>& weights,
                        const ties_options& o = {}) const {
    const auto sets = detail::base_and_models(base, models);
    tensor_set out;
    auto jobs = detail::set_jobs("ties", sets, o.out_dtype, o.promote_16bit, out);
    detail::ties_jobs(jobs, weights, o);
    return out;
  }
  template <named_tensors B>
  tensor_set operator()(const B& base, std::initializer_list<std::reference_wrapper<const tensor_set>> models,
                        const std::vector<double>& weights, const ties_options& o = {}) const {
    return (*this)(base, std::span(models.begin(), models.size()), weights, o);
  }
};
inline constexpr ties_fn ties{};

}  // namespace alloy
