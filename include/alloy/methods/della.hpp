// DELLA (Drop and rEscale via sampLing with magnitude): drop task-vector entries at random
// with a keep probability that rises with the entry's magnitude rank in its row, rescale
// what survives, then merge: by TIES' sign vote and disjoint merge (della) or by a weighted
// sum (della_linear).
//
//   tau_i = theta_i - theta_base, viewed as rows (a 2-D [R, C] tensor: R rows of C; 1-D and
//           0-D: one row; more dims: rows along dim 1, as mergekit ranks them)
//   q     = the 0-based rank of |tau_ij| among the L entries of its row (ascending; equal
//           magnitudes: lower flat index first)
//   p_ij  = (density_i - epsilon_i) + 2 epsilon_i * q / (L - 1)        (L = 1: density_i)
//   m_ij  = [u_ij < p_ij],  u_ij = counter_rng(seed, stream_id(tensor name, i)).uniform(j)
//   t_i   = s_ij * m_ij * tau_ij,  s_ij = 1 / p_ij (inverse_probability: the paper),
//           ||tau_i|| / ||m_i * tau_i|| per tensor in L1 (mergekit), L2 or Linf, or 1 (none)
//   della:        d = TIES vote and disjoint merge of the t_i (the vote options of ties.hpp)
//   della_linear: d = sum_i w_i t_i  (/ sum_i w_i with `normalize`; |sum| < 1e-8 counts as 1)
//   theta = theta_base + lambda d
//
// Paper: Deep, Bhardwaj, Poria, "DELLA-Merging: Reducing Interference in Model Merging
// through Magnitude-Based Sampling", 2024 (arXiv 2406.11617; code declare-lab/della, a
// mergekit fork). The paper's p is the drop probability and its rescale 1 / (1 - p); here p
// is the keep probability. The keep probabilities of a row average to density, so about
// density * n entries survive; with 1/p rescaling E[t_i] = tau_i.
//
// Randomness: a pure function of (seed, tensor name, model index, element index), as DARE's
// (core/random.hpp): the same bits for every thread count, SIMD width and chunking, and a
// tensor merged alone (tensor level, options.tensor_name and its shape) gets the mask it gets
// inside its model. PyTorch's torch.bernoulli draws differ: presets reproduce semantics and
// distributions, not draws.
//
// Complexity: per tile of whole rows and per model, an LSD radix sort of the row's 32-bit
// magnitude keys (O(L); std::sort below 129 entries) and one Philox call per 4 entries, in
// the merge pass. An L1/L2/Linf rescale ranks and draws in its norm pass instead and records
// the keep decisions as bits, which the merge pass (and a zero-vote majority's pass,
// zero_vote::model_majority) reads: one ranking either way (before the bits, the merge ranked
// again: 0.57B bf16 `alloy merge` of three models, 15.0-16.4 -> 10.2-12.6 s). For f32 and
// bf16 inputs that merge is the fused pass ties takes (9.7-11.3 -> 8.9-9.1 s). Memory per
// thread: (N + 2) tiles of max(2048, one block of rows) elements plus 16 bytes per row entry
// of sort scratch; with an L1/L2/Linf rescale, n / 8 bytes per model for the keep bits; no
// other full-size temporary, except that a 1-D tensor is one row (its tiles are the whole
// tensor).
// Precision: computed in float (double for double data), rounded once at the output;
// p and 1/p in double; norms accumulated in double. Ranks use the float magnitude key
// (double task vectors are ranked by their float rounding; equal floats are ties).
// Edge cases: density 1 keeps everything (no draw, no epsilon check); otherwise density -
// epsilon and density + epsilon must lie inside (0, 1) (mergekit's ValueError) and epsilon
// must be >= 0; epsilon 0 is DARE with p = density; a row of one entry keeps it with p =
// density (torch makes its p NaN: a CPU RuntimeError in mergekit); a dropped entry becomes 0
// (a dropped NaN too); NaN magnitudes rank above Inf; a norm below 1e-7 skips the L1/L2/Linf
// rescale; zero-length tensors give empty results.
// Deviations between implementations (docs/methods/della.md) are options with presets;
// peft has no DELLA, and preset(peft) throws.
#pragma once

#include <alloy/core/preset.hpp>
#include <alloy/core/random.hpp>
#include <alloy/kernels/task_vector_combine.hpp>
#include <alloy/methods/detail/sparse_front.hpp>
#include <alloy/methods/task_arithmetic.hpp>
#include <alloy/methods/ties.hpp>

#include <charconv>
#include <cmath>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace alloy {

// What multiplies the kept entries of a DELLA'd task vector.
//   none                 nothing (the expectation of entry j shrinks by p_j)
//   inverse_probability  1 / p_j per entry (the paper: E[t] = tau)
//   l1, l2, linf         ||tau|| / ||kept||, per tensor and model, in that norm (mergekit's
//                        `rescale: true` is l1); skipped when either norm is below 1e-7
enum class della_rescale { none, inverse_probability, l1, l2, linf };

struct della_options {
  double density = 1.0;                // mean keep probability, in (0, 1]; 1 drops nothing
  std::vector<double> densities = {};  // per model, overriding `density` when given
  double epsilon = 0.15;               // half the spread of the keep probabilities, >= 0
  std::vector<double> epsilons = {};   // per model, overriding `epsilon` when given
  della_rescale rescale = della_rescale::l1;
  std::uint64_t seed = 0;                // the random stream's key
  std::string tensor_name = {};          // tensor level: the name keying the stream (model level: each tensor's)
  std::vector<std::size_t> shape = {};   // tensor level: the shape giving the rows (default: the base's)
  // della_linear: divide the weighted sum by sum_i w_i (|sum| < 1e-8 counts as 1).
  bool normalize = false;
  // della: the vote (as ties_options).
  consensus consensus_method = consensus::sum;
  bool weights_before_vote = true;                             // mergekit, paper: vote on w_i t_i
  ties_denominator denominator = ties_denominator::weight_sum;  // mergekit della: normalize on
  zero_vote zero = zero_vote::positive;
  // Both.
  double lambda = 1.0;             // scales the merged task vector
  bool storage_precision = false;  // task vectors rounded to the input storage type first
  bool promote_16bit = false;      // model-level outputs of 16-bit tensors are float32
  merge_output output = merge_output::merged;
  std::optional<dtype> out_dtype = {};
  execution exec = {};

  // mergekit: della / della_linear with their defaults (rescale: true = L1; della normalize
  //           on = the sum of agreeing weights, della_linear normalize off; lambda 1).
  // paper:    declare-lab/della (a mergekit fork): the same vote and denominators, each kept
  //           entry rescaled by 1 / p (its `rescale: 1`).
  // peft:     has no DELLA: throws alloy::error (errc::invalid_argument).
  static della_options preset(alloy::preset p) {
    della_options o;
    switch (p) {
      case alloy::preset::mergekit:
        break;
      case alloy::preset::paper:
        o.rescale = della_rescale::inverse_probability;
        break;
      case alloy::preset::peft:
        throw error(errc::invalid_argument,
                    "della: peft has no DELLA merge (its merge utilities offer task_arithmetic, ties, dare_linear, "
                    "dare_ties and magnitude_prune); use preset::mergekit or preset::paper");
    }
    return o;
  }
};

namespace detail {

// The shortest decimal that reads back as v ("0.15", not fmt's 17 digits).
inline std::string della_fmt(double v) {
  char buf[32];
  const auto r = std::to_chars(buf, buf + sizeof(buf), v);
  return std::string(buf, r.ptr);
}

// The rows DELLA ranks within, for a tensor of `shape` holding `size` elements: a 0-D or
// 1-D tensor is one row; otherwise rows run along dim 1, entries row_stride apart.
struct della_rows {
  std::size_t length = 0, stride = 1;
};

inline della_rows della_rows_of(std::span<const std::size_t> shape, std::size_t size) noexcept {
  if (shape.size() <= 1) return {size, 1};
  std::size_t stride = 1;
  for (std::size_t d = 2; d < shape.size(); ++d) stride *= shape[d];
  return {shape[1], stride};
}

// mergekit's check (ValueError "Epsilon must be chosen such that density +/- epsilon is in
// (0, 1)"), for every model that drops anything; and epsilon >= 0.
inline void check_della_bounds(std::string_view method, std::span<const double> densities,
                               std::span<const double> epsilons) {
  for (std::size_t i = 0; i < densities.size(); ++i) {
    const double d = densities[i], e = epsilons[i];
    check_finite(method, "epsilon of model " + std::to_string(i), e);
    if (e < 0)
      throw error(errc::invalid_argument, std::string(method) + ": epsilon of model " + std::to_string(i) + " is " +
                                              della_fmt(e) + ", negative (the keep probability must rise with magnitude)");
    if (d >= 1) continue;  // no pruning: epsilon unused
    if (!(d - e > 0) || !(d + e < 1))
      throw error(errc::invalid_argument,
                  std::string(method) + ": model " + std::to_string(i) + " has density " + della_fmt(d) + " and epsilon " +
                      della_fmt(e) + ": the keep probabilities range from density - epsilon = " + della_fmt(d - e) +
                      " to density + epsilon = " + della_fmt(d + e) + ", which must both lie inside (0, 1)");
  }
}

// The tensor-level shape: options.shape when given (it must hold the tensor's elements),
// else the base's.
inline std::vector<std::size_t> della_tensor_shape(std::string_view method, std::vector<std::size_t> from_base,
                                                   std::span<const std::size_t> option, std::size_t size) {
  auto elements = [](std::span<const std::size_t> s) {
    std::size_t n = 1;
    for (std::size_t d : s) n *= d;
    return n;
  };
  if (option.empty()) {
    if (elements(from_base) != size) return {size};
    return from_base;
  }
  if (elements(option) != size)
    throw error(errc::shape_mismatch, std::string(method) + ": the shape option " + shape_string(std::vector<std::size_t>(option.begin(), option.end())) +
                                          " holds " + std::to_string(elements(option)) + " elements, the tensors have " +
                                          std::to_string(size));
  return {option.begin(), option.end()};
}

// Sets every job's masks to DELLA's row-ranked random masks, after every check. With an
// L1/L2/Linf rescale, the norm pass records the keep decisions in keep_bits (match_norms),
// which must outlive the merge.
inline void build_della_masks(std::string_view method, std::span<sparse_job> jobs,
                              const std::vector<std::vector<std::size_t>>& shapes, std::span<const double> densities,
                              std::span<const double> epsilons, const della_options& o,
                              std::vector<std::vector<std::uint64_t>>& keep_bits) {
  const std::size_t n_models = densities.size();
  std::vector<della_rows> rows(jobs.size());
  for (std::size_t j = 0; j < jobs.size(); ++j) {
    rows[j] = della_rows_of(shapes[j], jobs[j].out.size);
    if (rows[j].length > std::numeric_limits<std::uint32_t>::max())
      throw error(errc::invalid_argument, std::string(method) + ": rows of " + std::to_string(rows[j].length) +
                                              " entries are longer than the 2^32 - 1 DELLA can rank" +
                                              in_tensor(jobs[j].name));
  }
  bool dropping = false;
  for (std::size_t j = 0; j < jobs.size(); ++j) {
    sparse_job& job = jobs[j];
    job.masks.assign(n_models, tv_mask{});
    if (job.out.size == 0) continue;
    for (std::size_t i = 0; i < n_models; ++i) {
      if (densities[i] >= 1) continue;  // keeps everything: no draw, no rescale
      tv_mask& m = job.masks[i];
      m.type = tv_mask::kind::della;
      m.seed = o.seed;
      m.stream = stream_id(job.name, i);
      m.row_length = rows[j].length;
      m.row_stride = rows[j].stride;
      m.p_low = densities[i] - epsilons[i];
      m.p_width = 2 * epsilons[i];
      m.inverse_probability = o.rescale == della_rescale::inverse_probability;
      dropping = true;
    }
  }
  if (!dropping) return;
  const rescale_norm norm = o.rescale == della_rescale::l1     ? rescale_norm::l1
                            : o.rescale == della_rescale::l2   ? rescale_norm::l2
                            : o.rescale == della_rescale::linf ? rescale_norm::linf
                                                               : rescale_norm::none;
  match_norms(jobs, norm, o.storage_precision, o.exec, &keep_bits);
}


// della's whole-tensor part: the checks, every job's masks (and, with an L1/L2/Linf rescale,
// its norm pass, which leaves the keep decisions in keep_bits: the masks become kind::bits),
// then the sign a zero vote takes. The rest is sum_or_vote_merge, which the streaming engine
// runs in chunks (slice_job: any chunk with bits, whole rows where the masks still rank).
inline bool della_prepare(const char* method, std::span<sparse_job> jobs,
                          const std::vector<std::vector<std::size_t>>& shapes, const std::vector<double>& weights,
                          const della_options& o, bool ties_vote, std::vector<std::vector<std::uint64_t>>& keep_bits) {
  const std::size_t n = jobs.empty() ? weights.size() : jobs[0].models.size();
  check_weights(method, weights, n);
  check_finite(method, "lambda", o.lambda);
  const auto densities = per_model(method, "density", o.density, o.densities, n);
  check_densities(method, densities, n);
  const auto epsilons = per_model(method, "epsilon", o.epsilon, o.epsilons, n);
  check_della_bounds(method, densities, epsilons);
  build_della_masks(method, jobs, shapes, densities, epsilons, o, keep_bits);
  const ties_options t = vote_options_of(o);
  return ties_vote && t.zero == zero_vote::model_majority && majority_vote_positive(jobs, linear_weights(weights), t);
}

inline void della_jobs(const char* method, std::span<sparse_job> jobs,
                       const std::vector<std::vector<std::size_t>>& shapes, const std::vector<double>& weights,
                       const della_options& o, bool ties_vote) {
  std::vector<std::vector<std::uint64_t>> keep_bits;
  const bool majority = della_prepare(method, jobs, shapes, weights, o, ties_vote, keep_bits);
  sum_or_vote_merge(jobs, weights, o, ties_vote, majority);
}

// A tensor-level base: a tensor_like (its shape gives the rows) or a view (one row).
template <class B>
concept della_base = tensor_like<B> || std::convertible_to<const B&, tensor_view>;

template <class B>
std::vector<std::size_t> base_shape(const B& base) {
  if constexpr (tensor_like<B>)
    return shape_of(base);
  else
    return {tensor_view(base).size};
}

// The niebloid behind della and della_linear.
template <bool Ties>
struct della_fn {
  static constexpr const char* method = Ties ? "della" : "della_linear";

  template <della_base B>
  void operator()(const B& base, std::span<const tensor_view> models, const std::vector<double>& weights,
                  mutable_tensor_view out, const della_options& o = {}) const {
    const tensor_view b(base);
    sparse_job job = tensor_job(method, b, models, out);
    job.name = o.tensor_name;
    const std::vector<std::vector<std::size_t>> shapes{della_tensor_shape(method, base_shape(base), o.shape, b.size)};
    della_jobs(method, std::span(&job, 1), shapes, weights, o, Ties);
  }
  template <della_base B>
  void operator()(const B& base, std::initializer_list<tensor_view> models, const std::vector<double>& weights,
                  mutable_tensor_view out, const della_options& o = {}) const {
    (*this)(base, std::span(models.begin(), models.size()), weights, out, o);
  }
  template <della_base B, std::ranges::input_range R>
    requires tensor_like<std::ranges::range_value_t<R>>
  void operator()(const B& base, const R& models, const std::vector<double>& weights, mutable_tensor_view out,
                  const della_options& o = {}) const {
    (*this)(base, std::span<const tensor_view>(views_of(models)), weights, out, o);
  }
  template <named_tensors B, model_set_range R>
  tensor_set operator()(const B& base, const R& models, const std::vector<double>& weights,
                        const della_options& o = {}) const {
    const auto sets = base_and_models(base, models);
    tensor_set out;
    auto jobs = set_jobs(method, sets, o.out_dtype, o.promote_16bit, out);
    // set_jobs keeps the base's order: job j is tensor j of the base.
    std::vector<std::vector<std::size_t>> shapes;
    shapes.reserve(jobs.size());
    for (std::size_t j = 0; j < jobs.size(); ++j) shapes.push_back(sets[0][j].shape);
    della_jobs(method, jobs, shapes, weights, o, Ties);
    return out;
  }
  template <named_tensors B>
  tensor_set operator()(const B& base, std::initializer_list<std::reference_wrapper<const tensor_set>> models,
                        const std::vector<double>& weights, const della_options& o = {}) const {
    return (*this)(base, std::span(models.begin(), models.size()), weights, o);
  }
};

}  // namespace detail

// della(base, models, weights, out [, options]) for tensors (rows from the base's shape or
// options.shape); della(base_set, model_sets, weights [, options]) -> tensor_set for whole
// models. TIES' sign vote and disjoint merge over the DELLA'd task vectors.
inline constexpr detail::della_fn<true> della{};

// della_linear(base, models, weights, out [, options]) for tensors;
// della_linear(base_set, model_sets, weights [, options]) -> tensor_set for whole models.
// The weighted sum of the DELLA'd task vectors.
inline constexpr detail::della_fn<false> della_linear{};

}  // namespace alloy
