// Model Breadcrumbs: per task vector, drop the largest entries (outliers) and the smallest
// ones (noise), keep the band between, then merge: by a weighted sum (breadcrumbs) or by
// TIES' sign vote and disjoint merge (breadcrumbs_ties).
//
//   tau_i = theta_i - theta_base, n entries;  target = floor(density_i n),
//   n_top = floor(gamma_i n), and n_top = n - target when n_top + target > n (mergekit)
//   rank the entries by |tau| (descending; equal magnitudes: lower flat index first)
//   t_i = tau_i on ranks [n_top, n_top + target), 0 elsewhere  (optionally norm-rescaled)
//   breadcrumbs:      d = sum_i w_i t_i  (/ sum_i w_i with `normalize`; |sum| < 1e-8 as 1)
//   breadcrumbs_ties: d = TIES vote and disjoint merge of the t_i (the vote options of ties.hpp)
//   theta = theta_base + lambda d
//
// Paper: Davari and Belilovsky, "Model Breadcrumbs: Scaling Multi-Task Model Merging with
// Sparse Masks", 2023 (arXiv:2312.06795; code: rezazzr/breadcrumbs, TaskVectorMiddleKeep).
// The selection is exact: two top-k cuts per task vector (the n_top + target and the n_top
// largest magnitudes, methods/detail/sampled_topk.hpp and topk.hpp), so exactly `target`
// entries are kept, whatever the ties.
//
// Scope: per tensor (mergekit), or per row of the last dimension (the paper's code, which
// ranks torch.topk(|tau|, k) along the last dimension and leaves 0-d tensors unmasked).
// Complexity: per tensor of at least 64Ki entries one sampled pass for the cuts of every
// model (up to three radix passes for a cut whose sample misses or that has massive ties);
// smaller tensors up to three radix passes per cut, one in-cache pass at most 4096 entries;
// then one pass for a norm rescale, and one merge pass. Memory: the sample (n / 256 keys)
// and band entries of the sampled selection, or per-thread 256 KiB histograms, and (N + 2)
// tiles of 2048 elements per thread; per-row scope adds a few words per row of the tensor
// in flight. Precision: computed in float
// (double for double data), rounded once at the output. Determinism: the kept set is unique,
// so results are bit-identical for any thread count.
// Edge cases: density 1 keeps the whole task vector (gamma unused, as mergekit returns it
// unchanged); target 0 keeps nothing (no error: mergekit returns zeros); n_top 0 keeps the
// `target` largest (mergekit's `indices[n_bot:-0]` is empty there and zeroes the tensor:
// see docs/methods/breadcrumbs.md); NaN magnitudes rank above Inf, so NaNs are the first
// outliers dropped; zero-length tensors give empty results.
// Deviations between implementations (docs/methods/breadcrumbs.md) are options with presets.
#pragma once

#include <alloy/core/preset.hpp>
#include <alloy/kernels/task_vector_combine.hpp>
#include <alloy/methods/detail/sparse_front.hpp>
#include <alloy/methods/detail/trim.hpp>
#include <alloy/methods/task_arithmetic.hpp>
#include <alloy/methods/ties.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

namespace alloy {

// The norm a sparsified task vector is rescaled to match (none, l1, l2, linf).

// Which entries one Breadcrumbs ranking runs over.
//   per_tensor  the whole tensor (mergekit)
//   per_row     each row of the last dimension (the paper's code); 0-d tensors are kept
//               whole. Tensor level: rows of `row_length` elements (0: one row).
enum class breadcrumbs_scope { per_tensor, per_row };

struct breadcrumbs_options {
  double density = 1.0;                // fraction kept per task vector, (0, 1]; 1: no sparsification
  std::vector<double> densities = {};  // per model, overriding `density` when given
  double gamma = 0.01;                 // fraction of largest entries dropped, >= 0, gamma + density <= 1
  std::vector<double> gammas = {};     // per model, overriding `gamma` when given
  rescale_norm rescale = rescale_norm::none;  // mergekit's `rescale: true` is l1
  breadcrumbs_scope scope = breadcrumbs_scope::per_tensor;
  std::size_t row_length = 0;  // per_row at tensor level: the row length (0: the whole tensor)
  // breadcrumbs: divide the weighted sum by sum_i w_i (|sum| < 1e-8 counts as 1).
  bool normalize = false;
  // breadcrumbs_ties: the vote (as ties_options).
  consensus consensus_method = consensus::sum;
  bool weights_before_vote = true;
  ties_denominator denominator = ties_denominator::none;  // mergekit breadcrumbs_ties: normalize off
  zero_vote zero = zero_vote::positive;
  // Both.
  double lambda = 1.0;
  bool storage_precision = false;  // task vectors rounded to the input storage type
  bool promote_16bit = false;      // model-level outputs of 16-bit tensors are float32
  merge_output output = merge_output::merged;
  std::optional<dtype> out_dtype = {};
  execution exec = {};

  // mergekit: breadcrumbs / breadcrumbs_ties with their defaults (gamma 0.01, rescale and
  //           normalize off), per tensor.
  // paper:    rezazzr/breadcrumbs (TaskVectorMiddleKeep, top_k_keep = density,
  //           top_k_remove = gamma): per row; the sum of task vectors times a scaling
  //           coefficient (lambda; weights 1). Its code has no TIES variant: the vote options
  //           follow the TIES paper's code (unweighted vote, count, majority zero vote).
  // peft has no Model Breadcrumbs: preset::peft throws alloy::error (invalid_argument).
  static breadcrumbs_options preset(alloy::preset p) {
    breadcrumbs_options o;
    switch (p) {
      case alloy::preset::mergekit:
        break;
      case alloy::preset::peft:
        throw error(errc::invalid_argument,
                    "breadcrumbs: peft has no Model Breadcrumbs merge, so there is no peft preset "
                    "(use preset::mergekit or preset::paper)");
      case alloy::preset::paper:
        o.scope = breadcrumbs_scope::per_row;
        o.weights_before_vote = false;
        o.denominator = ties_denominator::count;
        o.zero = zero_vote::model_majority;
        break;
    }
    return o;
  }
};

}  // namespace alloy

namespace alloy::detail {

// The band of one ranking of n entries: ranks [drop, keep) are kept.
struct breadcrumbs_band {
  std::size_t drop = 0;  // n_top: the largest entries removed
  std::size_t keep = 0;  // n_top + target
};

// target = floor(density n), n_top = floor(gamma n) (double products truncated, as mergekit
// computes them); when they overlap (n_top + target > n) n_top shrinks to n - target
// (mergekit's rule; the public functions reject gamma + density > 1, so only this function
// meets it).
inline breadcrumbs_band breadcrumbs_counts(double density, double gamma, std::size_t n) noexcept {
  const std::size_t target = kept_count(density, n);
  std::size_t top = kept_count(gamma, n);
  if (top > n - target) top = n - target;
  return {top, top + target};
}

inline void check_gammas(std::string_view method, std::span<const double> gammas, std::span<const double> densities) {
  for (std::size_t i = 0; i < gammas.size(); ++i) {
    check_finite(method, "gamma of model " + std::to_string(i), gammas[i]);
    if (gammas[i] < 0)
      throw error(errc::invalid_argument,
                  std::string(method) + ": gamma of model " + std::to_string(i) + " is " + fmt(gammas[i]) + ", below 0");
    if (densities[i] < 1 && gammas[i] + densities[i] > 1)
      throw error(errc::invalid_argument, std::string(method) + ": gamma " + fmt(gammas[i]) + " + density " +
                                              fmt(densities[i]) + " of model " + std::to_string(i) +
                                              " exceed 1 (the outliers and the kept band would overlap)");
  }
}

// Sets job.masks (one ranking per model). The cuts of every model, both the n_top + target
// and the n_top largest, come from one tensor_cuts call: one sampled pass over the tensor
// for all of them when it is large enough (methods/detail/sampled_topk.hpp), the exact radix
// selection otherwise; the same kept set either way.
inline void breadcrumbs_job_masks(sparse_job& job, std::span<const double> densities, std::span<const double> gammas,
                                  bool storage_precision, const execution& ex) {
  const std::size_t n = job.out.size, n_models = densities.size();
  job.masks.assign(n_models, tv_mask{});
  sparse_job cuts{job.name, job.base, {}, job.out, {}};  // model i once per cut it needs
  std::vector<std::size_t> ks, slot;                     // slot: 2 i (keep cut), 2 i + 1 (drop cut)
  std::vector<breadcrumbs_band> bands(n_models);
  for (std::size_t i = 0; i < n_models; ++i) {
    if (densities[i] >= 1 || n == 0) continue;  // kind::all
    const breadcrumbs_band b = bands[i] = breadcrumbs_counts(densities[i], gammas[i], n);
    if (b.keep == b.drop) {  // target 0
      job.masks[i].type = tv_mask::kind::none;
      continue;
    }
    for (std::size_t c = 0; c < 2; ++c) {
      const std::size_t k = c == 0 ? b.keep : b.drop;
      if (k == 0) continue;
      ks.push_back(k);
      slot.push_back(2 * i + c);
      cuts.models.push_back(job.models[i]);
    }
  }
  if (ks.empty()) return;
  const std::vector<topk_rule> rules = tensor_cuts(cuts, ks, storage_precision, ex);
  for (std::size_t w = 0; w < ks.size(); ++w) {
    const std::size_t i = slot[w] / 2;
    tv_mask& m = job.masks[i];
    if (slot[w] % 2 == 0) {
      m.keep = rules[w];
      m.type = bands[i].drop != 0 ? tv_mask::kind::band : bands[i].keep == n ? tv_mask::kind::all : tv_mask::kind::topk;
    } else {
      m.drop = rules[w];
    }
  }
}

// Sets every job's masks. whole[j]: job j is kept unmasked (a 0-d tensor under per_row).
// Tensors of at most topk_tile entries (one pass each, in cache) run in parallel across
// jobs; larger ones one at a time, each selection parallel inside.
inline void build_breadcrumbs_masks(std::span<sparse_job> jobs, const std::vector<char>& whole,
                                    std::span<const double> densities, std::span<const double> gammas,
                                    bool storage_precision, const execution& ex) {
  std::vector<std::size_t> small, large;
  for (std::size_t j = 0; j < jobs.size(); ++j) {
    if (!whole.empty() && whole[j]) {
      jobs[j].masks.assign(densities.size(), tv_mask{});
      continue;
    }
    (jobs[j].out.size <= topk_tile ? small : large).push_back(j);
  }
  parallel_for(small.size(), ex, [&](std::size_t k) {
    breadcrumbs_job_masks(jobs[small[k]], densities, gammas, storage_precision, execution{1});
  });
  for (std::size_t j : large) breadcrumbs_job_masks(jobs[j], densities, gammas, storage_precision, ex);
}

// The rows of one tensor's job as jobs of `row` elements each.
inline std::vector<sparse_job> row_jobs(const sparse_job& job, std::size_t row) {
  std::vector<sparse_job> rows;
  if (row == 0 || job.out.size == 0) return rows;
  auto at = [](auto view, std::size_t offset, std::size_t len) {
    using P = std::conditional_t<std::is_same_v<decltype(view), tensor_view>, const unsigned char*, unsigned char*>;
    // (out.data is null in a vote-balance pass, which writes nothing.)
    if (view.data != nullptr) view.data = static_cast<P>(view.data) + offset * dtype_size(view.type);
    view.size = len;
    return view;
  };
  rows.reserve(job.out.size / row);
  for (std::size_t s = 0; s < job.out.size; s += row) {
    sparse_job r{job.name, at(job.base, s, row), {}, at(job.out, s, row), {}};
    r.models.reserve(job.models.size());
    for (const auto& m : job.models) r.models.push_back(at(m, s, row));
    rows.push_back(std::move(r));
  }
  return rows;
}

// The checked densities and gammas, one per model.
struct breadcrumbs_parameters {
  std::vector<double> densities, gammas;
};
inline breadcrumbs_parameters check_breadcrumbs(const char* method, std::size_t n, const std::vector<double>& weights,
                                                const breadcrumbs_options& o) {
  check_weights(method, weights, n);
  check_finite(method, "lambda", o.lambda);
  breadcrumbs_parameters p{per_model(method, "density", o.density, o.densities, n), {}};
  check_densities(method, p.densities, n);
  p.gammas = per_model(method, "gamma", o.gamma, o.gammas, n);
  check_gammas(method, p.gammas, p.densities);
  return p;
}

// Sets a group of jobs' masks and rescales their norms.
inline void prepare_breadcrumbs(std::span<sparse_job> group, const std::vector<char>& whole,
                                const breadcrumbs_parameters& p, const breadcrumbs_options& o) {
  build_breadcrumbs_masks(group, whole, p.densities, p.gammas, o.storage_precision, o.exec);
  match_norms(group, o.rescale, o.storage_precision, o.exec);
}

// Per row: fn(group) for one tensor's rows at a time, prepared, so the bookkeeping stays
// bounded by the largest tensor's row count. rows[j]: job j's row length; 0 for a 0-d
// tensor, one job kept whole.
template <class Fn>
void for_each_breadcrumbs_tensor(std::span<const sparse_job> jobs, std::span<const std::size_t> rows,
                                 const breadcrumbs_parameters& p, const breadcrumbs_options& o, const Fn& fn) {
  for (std::size_t j = 0; j < jobs.size(); ++j) {
    if (rows[j] == 0) {
      std::vector<sparse_job> one{jobs[j]};
      prepare_breadcrumbs(one, std::vector<char>{1}, p, o);
      fn(std::span<const sparse_job>(one));
      continue;
    }
    std::vector<sparse_job> r = row_jobs(jobs[j], rows[j]);
    prepare_breadcrumbs(r, {}, p, o);
    fn(std::span<const sparse_job>(r));
  }
}

// These jobs' share of breadcrumbs_ties' model-wide vote (as dare_vote_balance in dare.hpp):
// sum over their entries of sign(vote) on the masked task vectors. rows as breadcrumbs_jobs.
inline std::int64_t breadcrumbs_vote_balance(std::span<sparse_job> jobs, std::span<const std::size_t> rows,
                                             const std::vector<double>& weights, const breadcrumbs_options& o) {
  const char* method = "breadcrumbs_ties";
  const auto p = check_breadcrumbs(method, jobs.empty() ? weights.size() : jobs[0].models.size(), weights, o);
  const linear_weights lw(weights);
  const ties_options t = vote_options_of(o);
  if (o.scope == breadcrumbs_scope::per_tensor) {
    prepare_breadcrumbs(jobs, {}, p, o);
    return vote_balance(jobs, lw, t);
  }
  std::int64_t balance = 0;
  for_each_breadcrumbs_tensor(jobs, rows, p, o,
                              [&](std::span<const sparse_job> group) { balance += vote_balance(group, lw, t); });
  return balance;
}

// rows[j] (per_row only): job j's row length; 0 for a 0-d tensor (kept whole).
inline void breadcrumbs_jobs(const char* method, std::span<sparse_job> jobs, std::span<const std::size_t> rows,
                             const std::vector<double>& weights, const breadcrumbs_options& o, bool ties_vote) {
  const auto p = check_breadcrumbs(method, jobs.empty() ? weights.size() : jobs[0].models.size(), weights, o);
  const linear_weights lw(weights);
  const ties_options t = vote_options_of(o);
  auto merge = [&](std::span<const sparse_job> group, bool majority) {
    sum_or_vote_merge(group, weights, o, ties_vote, majority);
  };
  const bool need_majority = ties_vote && o.zero == zero_vote::model_majority;
  if (o.scope == breadcrumbs_scope::per_tensor) {
    prepare_breadcrumbs(jobs, {}, p, o);
    merge(jobs, need_majority && vote_balance(jobs, lw, t) > 0);
    return;
  }
  // Per row the groups are prepared twice with the majority vote: once for the balance.
  const bool majority = need_majority && breadcrumbs_vote_balance(jobs, rows, weights, o) > 0;
  for_each_breadcrumbs_tensor(jobs, rows, p, o, [&](std::span<const sparse_job> group) { merge(group, majority); });
}

// The row length of a tensor-level call over n elements: row_length, or the whole tensor.
inline std::size_t tensor_row_length(const char* method, const breadcrumbs_options& o, std::size_t n) {
  const std::size_t row = o.row_length == 0 ? n : o.row_length;
  if (o.scope == breadcrumbs_scope::per_row && row != 0 && n % row != 0)
    throw error(errc::invalid_argument, std::string(method) + ": row_length " + std::to_string(o.row_length) +
                                            " does not divide the tensor's " + std::to_string(n) + " elements");
  return row == 0 ? 1 : row;  // a zero-length tensor: no rows either way
}

// The niebloid behind breadcrumbs and breadcrumbs_ties.
template <bool Ties>
struct breadcrumbs_fn {
  static constexpr const char* method = Ties ? "breadcrumbs_ties" : "breadcrumbs";

  void operator()(tensor_view base, std::span<const tensor_view> models, const std::vector<double>& weights,
                  mutable_tensor_view out, const breadcrumbs_options& o = {}) const {
    sparse_job job = tensor_job(method, base, models, out);
    const std::size_t rows[] = {tensor_row_length(method, o, out.size)};
    breadcrumbs_jobs(method, std::span(&job, 1), rows, weights, o, Ties);
  }
  void operator()(tensor_view base, std::initializer_list<tensor_view> models, const std::vector<double>& weights,
                  mutable_tensor_view out, const breadcrumbs_options& o = {}) const {
    (*this)(base, std::span(models.begin(), models.size()), weights, out, o);
  }
  template <std::ranges::input_range R>
    requires tensor_like<std::ranges::range_value_t<R>>
  void operator()(tensor_view base, const R& models, const std::vector<double>& weights, mutable_tensor_view out,
                  const breadcrumbs_options& o = {}) const {
    (*this)(base, std::span<const tensor_view>(views_of(models)), weights, out, o);
  }
  template <named_tensors B, model_set_range R>
  tensor_set operator()(const B& base, const R& models, const std::vector<double>& weights,
                        const breadcrumbs_options& o = {}) const {
    const auto sets = base_and_models(base, models);
    tensor_set out;
    auto jobs = set_jobs(method, sets, o.out_dtype, o.promote_16bit, out);
    // Row lengths from the base's shapes (set_jobs keeps the base's tensor order).
    std::vector<std::size_t> rows(jobs.size());
    for (std::size_t j = 0; j < jobs.size(); ++j) {
      const auto& shape = sets[0][j].shape;
      rows[j] = shape.empty() ? 0 : shape.back();
    }
    breadcrumbs_jobs(method, jobs, rows, weights, o, Ties);
    return out;
  }
  template <named_tensors B>
  tensor_set operator()(const B& base, std::initializer_list<std::reference_wrapper<const tensor_set>> models,
                        const std::vector<double>& weights, const breadcrumbs_options& o = {}) const {
    return (*this)(base, std::span(models.begin(), models.size()), weights, o);
  }
};

}  // namespace alloy::detail

namespace alloy {

// breadcrumbs(base, models, weights, out [, options]) for tensors;
// breadcrumbs(base_set, model_sets, weights [, options]) -> tensor_set for whole models.
// The weighted sum of the Breadcrumbs-masked task vectors.
inline constexpr detail::breadcrumbs_fn<false> breadcrumbs{};

// breadcrumbs_ties(base, models, weights, out [, options]) for tensors;
// breadcrumbs_ties(base_set, model_sets, weights [, options]) -> tensor_set for whole models.
// TIES' sign vote and disjoint merge over the Breadcrumbs-masked task vectors.
inline constexpr detail::breadcrumbs_fn<true> breadcrumbs_ties{};

}  // namespace alloy
