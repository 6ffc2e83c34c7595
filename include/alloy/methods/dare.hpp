// DARE (Drop And REscale): drop each task-vector entry at random, rescale what survives,
// then merge: by a weighted sum (dare_linear) or by TIES' sign vote and disjoint merge
// (dare_ties).
//
//   tau_i = theta_i - theta_base
//   m_ij ~ Bernoulli(p_i) independently, p_i = density_i      (keep with probability p_i)
//   t_i  = s_i * m_i * tau_i,  s_i = 1/p_i (inverse_density: peft, the paper),
//          ||tau_i|| / ||m_i * tau_i|| per tensor in L1 (mergekit), L2 or Linf, or 1 (none)
//   dare_linear: d = sum_i w_i t_i  (/ sum_i w_i with `normalize`; |sum| < 1e-8 counts as 1)
//   dare_ties:   d = TIES vote and disjoint merge of the t_i (the vote options of ties.hpp)
//   theta = theta_base + lambda d  (peft: d alone)
//
// Paper: Yu, Yu, Yu, Huang, Li, "Language Models are Super Mario: Absorbing Abilities from
// Homologous Models as a Free Lunch", ICML 2024 (code: yule-BUAA/MergeLM). With 1/p
// rescaling, E[t_i] = tau_i: the drop is unbiased.
//
// Randomness: m_ij = [u_ij < p_i] with u_ij = counter_rng(seed, stream_id(tensor name,
// i)).uniform(j) (core/random.hpp: Philox4x32-10, counter = element index j, uniforms on a
// 2^-24 grid). So the mask is a pure function of (seed, tensor name, model index, element
// index): the same bits for every thread count, SIMD width and chunking, and a tensor
// merged alone (tensor level, options.tensor_name) gets the mask it gets inside its model.
// alloy cannot reproduce the bits of PyTorch's torch.bernoulli (a different generator):
// presets reproduce each implementation's semantics and distributions, not its draws.
//
// Complexity: inverse_density / none: one streaming pass (N + 1 reads, one write per
// element, one Philox call per 4 elements per model, 16 calls per AVX-512 step); a norm
// rescale adds one pass to measure the norms (the draws are made again there: no mask is
// stored), whose per-item double accumulators run in element order. Memory: (N + 2) tiles of 2048 elements per thread; no full-size
// temporary. Precision: computed in float (double for double data), rounded once at the
// output; norms accumulated in double. Edge cases: density 1 keeps everything (no draw);
// a density outside (0, 1] is an error; a dropped entry becomes 0 (a dropped NaN too); a
// kept NaN/Inf propagates, and makes a norm ratio non-finite (as in mergekit); a norm below
// 1e-7 (before or after the drop) skips the rescale; zero-length tensors give empty results.
// Deviations between implementations (docs/methods/dare.md) are options with presets.
#pragma once

#include <alloy/core/bf16.hpp>
#include <alloy/core/fp16.hpp>
#include <alloy/core/preset.hpp>
#include <alloy/core/random.hpp>
#include <alloy/kernels/task_vector_combine.hpp>
#include <alloy/methods/detail/sparse_front.hpp>
#include <alloy/methods/detail/trim.hpp>
#include <alloy/methods/task_arithmetic.hpp>
#include <alloy/methods/ties.hpp>

#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace alloy {

// What multiplies the kept entries of a DARE'd task vector.
//   none              nothing (the expectation shrinks by density)
//   inverse_density   1 / density (peft, the paper: E[t] = tau)
//   l1, l2, linf      ||tau|| / ||kept||, per tensor and model, in that norm (mergekit's
//                     `rescale: true` is l1); skipped when either norm is below 1e-7
enum class dare_rescale { none, inverse_density, l1, l2, linf };

struct dare_options {
  double density = 1.0;                // keep probability per entry, in (0, 1]; 1 drops nothing
  std::vector<double> densities = {};  // per model, overriding `density` when given
  std::uint64_t seed = 0;              // the random stream's key
  std::string tensor_name = {};        // tensor level: the name keying the stream (model level: each tensor's name)
  dare_rescale rescale = dare_rescale::l1;
  // The keep probability rounded to each model's 16-bit storage type (bf16(density) for a
  // bf16 model), as torch.bernoulli(torch.full_like(tau, density)) on a 16-bit tau draws.
  bool probability_in_storage = false;
  // dare_linear: divide the weighted sum by sum_i w_i (|sum| < 1e-8 counts as 1).
  bool normalize = false;
  // dare_ties: the vote (as ties_options).
  consensus consensus_method = consensus::sum;
  bool weights_before_vote = true;                          // mergekit: vote on w_i t_i
  ties_denominator denominator = ties_denominator::none;    // mergekit dare_ties: normalize off
  zero_vote zero = zero_vote::positive;
  // Both.
  double lambda = 1.0;             // scales the merged task vector
  bool storage_precision = false;  // peft: task vectors rounded to the input storage type
  bool promote_16bit = false;      // peft: model-level outputs of 16-bit tensors are float32
  merge_output output = merge_output::merged;
  std::optional<dtype> out_dtype = {};
  execution exec = {};

  // mergekit: dare_linear / dare_ties with their defaults (rescale: true = L1, normalize off).
  // peft:     merge_utils.dare_linear / dare_ties: 1/density, the vote on unweighted t_i,
  //           disjoint mean by count, task vectors and keep probability in the storage
  //           type, float32 results for 16-bit inputs, the merged task vector alone.
  // paper:    yule-BUAA/MergeLM: 1/density, base + lambda * merged; its TIES (for
  //           dare_ties) votes on unweighted t_i, divides by the count and breaks a zero
  //           vote by the model's majority sign.
  static dare_options preset(alloy::preset p) {
    dare_options o;
    switch (p) {
      case alloy::preset::mergekit:
        break;
      case alloy::preset::peft:
        o.rescale = dare_rescale::inverse_density;
        o.probability_in_storage = true;
        o.weights_before_vote = false;
        o.denominator = ties_denominator::count;
        o.storage_precision = true;
        o.promote_16bit = true;
        o.output = merge_output::delta;
        break;
      case alloy::preset::paper:
        o.rescale = dare_rescale::inverse_density;
        o.weights_before_vote = false;
        o.denominator = ties_denominator::count;
        o.zero = zero_vote::model_majority;
        break;
    }
    return o;
  }
};

namespace detail {

// The keep probability of model i (float, compared with the 2^-24-grid uniforms).
inline float dare_keep_probability(double density, dtype model_type, bool in_storage) noexcept {
  const float p = static_cast<float>(density);
  if (in_storage && model_type == dtype::bf16) return static_cast<float>(bf16(p));
  if (in_storage && model_type == dtype::f16) return static_cast<float>(fp16(p));
  return p;
}

// Sets every job's masks to DARE's random masks (and rescale factors).
inline void build_dare_masks(std::span<sparse_job> jobs, std::span<const double> densities, const dare_options& o) {
  const std::size_t n_models = densities.size();
  bool dropping = false;
  for (auto& j : jobs) {
    j.masks.assign(n_models, tv_mask{});
    for (std::size_t i = 0; i < n_models; ++i) {
      if (densities[i] >= 1) continue;  // keeps everything: no draw, no rescale
      tv_mask& m = j.masks[i];
      m.type = tv_mask::kind::random;
      m.keep_probability = dare_keep_probability(densities[i], j.models[i].type, o.probability_in_storage);
      m.seed = o.seed;
      m.stream = stream_id(j.name, i);
      if (o.rescale == dare_rescale::inverse_density) m.scale = 1.0 / densities[i];
      dropping = dropping || j.out.size != 0;
    }
  }
  if (!dropping) return;
  const rescale_norm norm = o.rescale == dare_rescale::l1   ? rescale_norm::l1
                            : o.rescale == dare_rescale::l2 ? rescale_norm::l2
                            : o.rescale == dare_rescale::linf ? rescale_norm::linf
                                                              : rescale_norm::none;
  match_norms(jobs, norm, o.storage_precision, o.exec);
}



// Checks the parameters and sets every job's masks (and rescale factors).
inline void dare_prepare(const char* method, std::span<sparse_job> jobs, const std::vector<double>& weights,
                         const dare_options& o) {
  const std::size_t n = jobs.empty() ? weights.size() : jobs[0].models.size();
  check_weights(method, weights, n);
  check_finite(method, "lambda", o.lambda);
  const auto densities = per_model(method, "density", o.density, o.densities, n);
  check_densities(method, densities, n);
  build_dare_masks(jobs, densities, o);
}

// These jobs' share of dare_ties' model-wide vote: sum over their entries of sign(vote) on
// the masked task vectors. zero_vote::model_majority elects + when the sum over the whole
// model is > 0; a caller merging tensor by tensor (alloy merge's planning pass) adds it up
// over the tensors and passes zero_vote::positive or negative to each tensor's merge.
inline std::int64_t dare_vote_balance(std::span<sparse_job> jobs, const std::vector<double>& weights,
                                      const dare_options& o) {
  dare_prepare("dare_ties", jobs, weights, o);
  return vote_balance(jobs, linear_weights(weights), vote_options_of(o));
}

inline void dare_jobs(const char* method, std::span<sparse_job> jobs, const std::vector<double>& weights,
                      const dare_options& o, bool ties_vote) {
  dare_prepare(method, jobs, weights, o);
  const ties_options t = vote_options_of(o);
  const bool majority =
      ties_vote && t.zero == zero_vote::model_majority && majority_vote_positive(jobs, linear_weights(weights), t);
  sum_or_vote_merge(jobs, weights, o, ties_vote, majority);
}

// The niebloid behind dare_linear and dare_ties.
template <bool Ties>
struct dare_fn {
  static constexpr const char* method = Ties ? "dare_ties" : "dare_linear";

  void operator()(tensor_view base, std::span<const tensor_view> models, const std::vector<double>& weights,
                  mutable_tensor_view out, const dare_options& o = {}) const {
    sparse_job job = tensor_job(method, base, models, out);
    job.name = o.tensor_name;
    dare_jobs(method, std::span(&job, 1), weights, o, Ties);
  }
  void operator()(tensor_view base, std::initializer_list<tensor_view> models, const std::vector<double>& weights,
                  mutable_tensor_view out, const dare_options& o = {}) const {
    (*this)(base, std::span(models.begin(), models.size()), weights, out, o);
  }
  template <std::ranges::input_range R>
    requires tensor_like<std::ranges::range_value_t<R>>
  void operator()(tensor_view base, const R& models, const std::vector<double>& weights, mutable_tensor_view out,
                  const dare_options& o = {}) const {
    (*this)(base, std::span<const tensor_view>(views_of(models)), weights, out, o);
  }
  template <named_tensors B, model_set_range R>
  tensor_set operator()(const B& base, const R& models, const std::vector<double>& weights,
                        const dare_options& o = {}) const {
    const auto sets = base_and_models(base, models);
    tensor_set out;
    auto jobs = set_jobs(method, sets, o.out_dtype, o.promote_16bit, out);
    dare_jobs(method, jobs, weights, o, Ties);
    return out;
  }
  template <named_tensors B>
  tensor_set operator()(const B& base, std::initializer_list<std::reference_wrapper<const tensor_set>> models,
                        const std::vector<double>& weights, const dare_options& o = {}) const {
    return (*this)(base, std::span(models.begin(), models.size()), weights, o);
  }
};

}  // namespace detail

// dare_linear(base, models, weights, out [, options]) for tensors;
// dare_linear(base_set, model_sets, weights [, options]) -> tensor_set for whole models.
// The weighted sum of the DARE'd task vectors.
inline constexpr detail::dare_fn<false> dare_linear{};

// dare_ties(base, models, weights, out [, options]) for tensors;
// dare_ties(base_set, model_sets, weights [, options]) -> tensor_set for whole models.
// TIES' sign vote and disjoint merge over the DARE'd task vectors.
inline constexpr detail::dare_fn<true> dare_ties{};

}  // namespace alloy
