// Fisher merging: an element-wise average of N models weighted by their diagonal Fisher
// information, plus fisher_accumulator, which estimates that diagonal from per-example
// gradients streamed out of the user's framework.
//
//   theta = sum_i c_i F'_i theta_i / sum_i c_i F'_i      (element-wise)
//
//   F'_i = F_i + eps        epsilon_mode::add (default; FusionBench and MergeLM:
//                           `fisher + minimal_fisher_weight`, eps = 1e-6)
//   F'_i = max(F_i, eps)    epsilon_mode::floor (the authors' code, mmatena/model_merging:
//                           `tf.maximum(diag, fisher_floor)`, eps = 1e-6)
//   with `epsilon_target_only` the epsilon is applied to model 0 alone (the authors'
//   `favor_target_model`, on in their code), the other F'_i = F_i.
//   c_i = coefficients[i] (default all equal); with `normalize`, c_i is divided by model i's
//   Fisher norm ||F_i||_2 over every merged tensor (tensor level: over that tensor):
//   c_i / (||F_i|| + eps) in add mode (FusionBench), c_i / ||F_i|| in floor mode (the
//   authors' code). The c_i are then rescaled to sum to 1 (the result does not depend on a
//   common scale of the c_i).
//
// Paper: Matena & Raffel, "Merging Models with Fisher-Weighted Averaging", NeurIPS 2022.
// Presets: the default options are FusionBench's epsilon placement with normalize off (the
// paper's equation); {.normalize = true} is FusionBench's `fisher_merging` (up to rounding);
// fisher_options::preset(preset::paper) is the authors' code (floor, target only,
// normalize on). mergekit and peft have no Fisher merging: preset(mergekit|peft) throws.
//
// Complexity: one streaming pass reading 2N tensors and writing one, plus one pass over the
// N Fisher tensors first (validation and, with normalize, the norms; skip it with
// check_fisher = false when normalize is off). Memory: no temporaries beyond a 64 KiB stack
// tile per thread. Precision: computed in float (double when any operand is double), 16-bit
// storage widened on load and rounded once on store; norms: squares summed in short float
// partials, those in double (kernels::gram_accumulate; double data: all in double).
// Determinism: identical results for any thread count (sums over models in order 0..N-1;
// norm partial sums over fixed chunks, added in order).
// Edge cases: Fisher values must be finite and >= 0 (errc::non_finite / invalid_argument
// before any arithmetic); coefficients finite, >= 0, not all 0. Where the denominator
// sum_i c_i F'_i is 0 (every Fisher 0 there and eps = 0, or epsilon_target_only with
// c_0 = 0), the result is the coefficient-weighted average sum_i c_i theta_i, never NaN.
// With eps > 0 on every model an element whose Fisher is 0 in every model gets that
// average too, up to rounding (F'_i = eps for all i). NaN/Inf parameters propagate per IEEE.
// Zero-length tensors give zero-length results. The output may be one of the inputs
// exactly (in place), not overlap one otherwise.
#pragma once

#include <alloy/core/execution.hpp>
#include <alloy/core/preset.hpp>
#include <alloy/core/tensor.hpp>
#include <alloy/core/tensor_set.hpp>
#include <alloy/core/validate.hpp>
#include <alloy/kernels/reduce.hpp>
#include <alloy/methods/detail/elementwise.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <functional>
#include <initializer_list>
#include <limits>
#include <memory>
#include <numeric>
#include <optional>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

namespace alloy {

// Where the epsilon goes: F + eps (FusionBench, MergeLM) or max(F, eps) (the authors' code).
enum class fisher_epsilon { add, floor };

struct fisher_options {
  std::vector<double> coefficients = {};  // c_i >= 0, one per model; empty: all equal
  double epsilon = 1e-6;                  // >= 0
  fisher_epsilon epsilon_mode = fisher_epsilon::add;
  bool epsilon_target_only = false;  // epsilon on model 0 only (the authors' favor_target_model)
  bool normalize = false;            // divide c_i by model i's Fisher L2 norm (see above)
  bool check_fisher = true;          // validate every Fisher value (always done with normalize)
  std::optional<dtype> out_dtype = {};  // model level: default model 0's dtype per tensor
  execution exec = {};

  // paper: mmatena/model_merging's merging.py (fisher_floor 1e-6, favor_target_model,
  // normalize_fishers). mergekit and peft have no Fisher merging: errc::invalid_argument.
  static fisher_options preset(alloy::preset p) {
    if (p != alloy::preset::paper)
      throw error(errc::invalid_argument, "fisher_merge: " + std::string(preset_name(p)) +
                                              " has no Fisher merging (presets: paper; the defaults follow FusionBench)");
    fisher_options o;
    o.epsilon_mode = fisher_epsilon::floor;
    o.epsilon_target_only = true;
    o.normalize = true;
    return o;
  }
};

namespace kernels {

// Per-element functor of Fisher merging. Inputs: theta_0..theta_{n-1}, then F_0..F_{n-1}
// (n = coefficients.size()). Written once for batches and scalars (see kernels/simd.hpp).
template <class C>
struct fisher_average {
  std::span<const C> coefficients;  // c_i, summing to 1
  C epsilon = 0;
  bool floor = false;
  bool target_only = false;

  // Whether the denominator can vanish (epsilon 0 or on model 0 only): then the weighted
  // average is accumulated too, as the fallback. Otherwise sum_i c_i F'_i >= eps > 0.
  bool guard = true;

  template <class P>
  auto operator()(const P& x) const noexcept {
    using V = decltype(x[0]);
    const std::size_t n = coefficients.size();
    const V eps(epsilon);
    V num(C(0)), den(C(0));
    if (!guard) {
      for (std::size_t i = 0; i < n; ++i) {
        V f = x[n + i];
        f = floor ? kernels::select(f < eps, eps, f) : f + eps;
        const V t = V(coefficients[i]) * f;
        den = den + t;
        num = num + t * x[i];
      }
      return num / den;
    }
    V avg(C(0));
    for (std::size_t i = 0; i < n; ++i) {
      V f = x[n + i];
      if (!target_only || i == 0) f = floor ? kernels::select(f < eps, eps, f) : f + eps;
      const V c(coefficients[i]);
      const V t = c * f;
      den = den + t;
      num = num + t * x[i];
      avg = avg + c * x[i];
    }
    return kernels::select(den > V(C(0)), num / den, avg);
  }
};

}  // namespace kernels

namespace detail {

// ---- the Fisher scan: validation and sums of squares, deterministic ----------------------

inline constexpr std::size_t no_index = static_cast<std::size_t>(-1);

struct fisher_scan {
  double sum_squares = 0;
  std::size_t first_bad = no_index;  // first element that is negative or not finite
  double bad_value = 0;
};

// Whether every element of x[0, len) is finite and >= 0 (SIMD through kernels/simd.hpp).
template <class C>
bool fisher_tile_valid(const C* x, std::size_t len) noexcept {
  using V = kernels::vec<C>;
  constexpr std::size_t W = kernels::width<C>;
  const V zero(C(0)), one(C(1)), big(std::numeric_limits<C>::max());
  V bad = zero;
  std::size_t j = 0;
  for (; j + W <= len; j += W) {
    const V v = kernels::load(x + j);
    bad = bad + kernels::select((v >= zero) & (v <= big), zero, one);
  }
  alignas(64) C lanes[W];
  kernels::store(lanes, bad);
  bool ok = true;
  for (std::size_t l = 0; l < W; ++l) ok = ok && lanes[l] == C(0);
  for (; j < len; ++j) ok = ok && x[j] >= C(0) && x[j] <= std::numeric_limits<C>::max();
  return ok;
}

// For every tensor: the first invalid element (negative or not finite) and, when
// `squares`, the sum of squares (kernels::gram_accumulate with one row: short float
// partials summed in double, in an order fixed by element offsets; chunks at fixed offsets
// added in order). One read of each tensor; identical results for any thread count.
inline std::vector<fisher_scan> scan_fishers(std::span<const tensor_view> tensors, bool squares, const execution& ex) {
  std::vector<std::pair<std::size_t, std::size_t>> items;  // (tensor, first element)
  for (std::size_t t = 0; t < tensors.size(); ++t)
    for (std::size_t s = 0; s < tensors[t].size; s += parallel_chunk) items.emplace_back(t, s);
  std::vector<fisher_scan> partial(items.size());
  parallel_for(items.size(), ex, [&](std::size_t k) {
    const std::size_t t = items[k].first, first = items[k].second;
    const tensor_view& v = tensors[t];
    const std::size_t last = std::min(v.size, first + parallel_chunk);
    fisher_scan& out = partial[k];
    auto go = [&](auto tag) {
      using C = decltype(tag);
      constexpr std::size_t tile = 4096;  // a multiple of kernels::reduce_block
      static_assert(tile % kernels::reduce_block == 0 && parallel_chunk % tile == 0);
      alignas(64) C buf[tile];
      double lanes[kernels::reduce_lanes] = {};
      for (std::size_t pos = first; pos < last; pos += tile) {
        const std::size_t len = std::min(tile, last - pos);
        const C* x = buf;
        if (v.type == dtype_of<C>)
          x = static_cast<const C*>(v.data) + pos;
        else
          kernels::widen(kernels::source{v.data, v.type}, pos, buf, len);
        if (!fisher_tile_valid(x, len)) {
          for (std::size_t j = 0; j < len; ++j)
            if (!(x[j] >= C(0) && x[j] <= std::numeric_limits<C>::max())) {
              out.first_bad = pos + j;
              out.bad_value = static_cast<double>(x[j]);
              return;
            }
        }
        if (squares) kernels::gram_accumulate(&x, 1, len, lanes);
      }
      out.sum_squares = kernels::lane_total(lanes);
    };
    if (v.type == dtype::f64)
      go(double{});
    else
      go(float{});
  });
  std::vector<fisher_scan> result(tensors.size());
  for (std::size_t k = 0; k < items.size(); ++k) {
    fisher_scan& r = result[items[k].first];
    r.sum_squares += partial[k].sum_squares;
    if (r.first_bad == no_index && partial[k].first_bad != no_index) {
      r.first_bad = partial[k].first_bad;
      r.bad_value = partial[k].bad_value;
    }
  }
  return result;
}

// ---- validation and the coefficients -------------------------------------------------------

inline constexpr std::size_t fisher_max_models = kernels::max_stream_inputs / 2;

inline void check_fisher_options(std::size_t models, std::size_t fishers, const fisher_options& o) {
  const char* method = "fisher_merge";
  check_model_count(method, models, 1, fisher_max_models);
  if (fishers != models)
    throw error(errc::invalid_argument, std::string(method) + ": " + std::to_string(fishers) + " Fisher " +
                                            (fishers == 1 ? "diagonal" : "diagonals") + " for " +
                                            std::to_string(models) + " models");
  if (!o.coefficients.empty()) {
    if (o.coefficients.size() != models)
      throw error(errc::invalid_argument, std::string(method) + ": " + std::to_string(o.coefficients.size()) +
                                              " coefficients for " + std::to_string(models) + " models");
    for (std::size_t i = 0; i < models; ++i) {
      check_finite(method, "coefficient of model " + std::to_string(i), o.coefficients[i]);
      if (o.coefficients[i] < 0)
        throw error(errc::invalid_argument, std::string(method) + ": coefficient of model " + std::to_string(i) +
                                                " is " + fmt(o.coefficients[i]) + "; coefficients must be >= 0");
    }
    if (std::all_of(o.coefficients.begin(), o.coefficients.end(), [](double c) { return c == 0; }))
      throw error(errc::invalid_argument, std::string(method) + ": every coefficient is 0");
  }
  check_finite(method, "epsilon", o.epsilon);
  if (o.epsilon < 0)
    throw error(errc::invalid_argument, std::string(method) + ": epsilon is " + fmt(o.epsilon) + "; it must be >= 0");
}

// Effective coefficients (summing to 1) in both compute types.
struct fisher_coefficients {
  std::vector<float> f;
  std::vector<double> d;
  template <class C>
  std::span<const C> get() const noexcept {
    if constexpr (std::is_same_v<C, float>)
      return f;
    else
      return d;
  }
};

// scans[t * models + i] is the scan of tensor t of Fisher set i; names[t] names tensor t
// (empty at tensor level). Throws on invalid Fisher values, then computes the coefficients.
inline fisher_coefficients fisher_prepare(std::span<const fisher_scan> scans, std::size_t models,
                                          std::span<const std::string_view> names, const fisher_options& o) {
  const char* method = "fisher_merge";
  const std::size_t tensors = models == 0 ? 0 : scans.size() / models;
  for (std::size_t t = 0; t < tensors; ++t)
    for (std::size_t i = 0; i < models; ++i) {
      const fisher_scan& s = scans[t * models + i];
      if (s.first_bad == no_index) continue;
      const std::string where = "the Fisher of model " + std::to_string(i) + " is " + fmt(s.bad_value) +
                                " at element " + std::to_string(s.first_bad) + in_tensor(names[t]);
      if (std::isfinite(s.bad_value))
        throw error(errc::invalid_argument, std::string(method) + ": " + where + "; Fisher values must be >= 0");
      throw error(errc::non_finite, std::string(method) + ": " + where + ", not a finite number");
    }
  std::vector<double> c(models, 1.0);
  if (!o.coefficients.empty()) c = o.coefficients;
  if (o.normalize) {
    for (std::size_t i = 0; i < models; ++i) {
      double ss = 0;
      for (std::size_t t = 0; t < tensors; ++t) ss += scans[t * models + i].sum_squares;
      const double norm = std::sqrt(ss);
      if (!std::isfinite(norm))
        throw error(errc::non_finite, std::string(method) + ": the Fisher norm of model " + std::to_string(i) +
                                          " overflows (Fisher values beyond ~1e18 in float)");
      if (o.epsilon_mode == fisher_epsilon::add) {
        c[i] /= norm + o.epsilon;
      } else {
        if (norm == 0)
          throw error(errc::invalid_argument, std::string(method) + ": the Fisher of model " + std::to_string(i) +
                                                  " is 0 everywhere, so it cannot be normalized by its norm");
        c[i] /= norm;
      }
      if (!std::isfinite(c[i]))
        throw error(errc::non_finite, std::string(method) + ": the normalized coefficient of model " +
                                          std::to_string(i) + " is " + fmt(c[i]) + " (set epsilon > 0)");
    }
  }
  const double total = std::accumulate(c.begin(), c.end(), 0.0);
  fisher_coefficients out;
  for (double v : c) {
    out.d.push_back(v / total);
    out.f.push_back(static_cast<float>(v / total));
  }
  return out;
}

template <class C>
kernels::fisher_average<C> fisher_kernel(const fisher_coefficients& fc, const fisher_options& o) {
  // No guard needed when every F'_i >= eps > 0: then den >= c_max * eps (rounding is
  // monotone, every term is >= 0), which is positive unless it underflows.
  const C eps = static_cast<C>(o.epsilon);
  const C cmax = *std::max_element(fc.get<C>().begin(), fc.get<C>().end());
  const bool safe = !o.epsilon_target_only && eps > 0 && eps * cmax >= std::numeric_limits<C>::min();
  kernels::fisher_average<C> f{fc.get<C>(), eps, o.epsilon_mode == fisher_epsilon::floor, o.epsilon_target_only};
  f.guard = !safe;
  return f;
}

inline std::vector<std::string> fisher_labels(std::size_t models) {
  std::vector<std::string> l;
  for (std::size_t i = 0; i < models; ++i) l.push_back("model " + std::to_string(i));
  for (std::size_t i = 0; i < models; ++i) l.push_back("the Fisher of model " + std::to_string(i));
  return l;
}

// Runs the merge over jobs whose inputs are theta_0..theta_{N-1}, F_0..F_{N-1}.
inline void fisher_run(std::span<const elementwise_job> jobs, std::size_t models, std::span<const std::string_view> names,
                       const fisher_options& o) {
  std::vector<fisher_scan> scans;
  if (o.check_fisher || o.normalize) {
    std::vector<tensor_view> fishers;
    for (const auto& j : jobs) fishers.insert(fishers.end(), j.in.begin() + static_cast<std::ptrdiff_t>(models), j.in.end());
    scans = scan_fishers(fishers, o.normalize, o.exec);
  }
  const fisher_coefficients fc = fisher_prepare(scans, models, names, o);
  run_elementwise(jobs, o.exec, [&](std::size_t, auto tag) { return fisher_kernel<decltype(tag)>(fc, o); });
}

}  // namespace detail

// fisher_merge(models, fishers, out [, options]) for tensors;
// fisher_merge(model_sets, fisher_sets [, options]) -> tensor_set for whole models, where
// fisher_sets[i] names the same tensors as model_sets[i] (every tensor needs a Fisher).
struct fisher_merge_fn {
  void operator()(std::span<const tensor_view> models, std::span<const tensor_view> fishers, mutable_tensor_view out,
                  const fisher_options& o = {}) const {
    const char* method = "fisher_merge";
    detail::check_fisher_options(models.size(), fishers.size(), o);
    std::vector<tensor_view> in(models.begin(), models.end());
    in.insert(in.end(), fishers.begin(), fishers.end());
    const auto labels = detail::fisher_labels(models.size());
    detail::check_inputs(method, {}, in, labels, out);
    detail::check_no_overlap(method, {}, in, labels, out);
    const detail::elementwise_job job{std::move(in), out};
    const std::string_view name;
    detail::fisher_run(std::span(&job, 1), models.size(), std::span(&name, 1), o);
  }
  void operator()(std::initializer_list<tensor_view> models, std::initializer_list<tensor_view> fishers,
                  mutable_tensor_view out, const fisher_options& o = {}) const {
    (*this)(std::span(models.begin(), models.size()), std::span(fishers.begin(), fishers.size()), out, o);
  }
  template <std::ranges::input_range R, std::ranges::input_range F>
    requires tensor_like<std::ranges::range_value_t<R>> && tensor_like<std::ranges::range_value_t<F>>
  void operator()(const R& models, const F& fishers, mutable_tensor_view out, const fisher_options& o = {}) const {
    (*this)(std::span<const tensor_view>(views_of(models)), std::span<const tensor_view>(views_of(fishers)), out, o);
  }

  template <detail::model_set_range R, detail::model_set_range F>
  tensor_set operator()(const R& models, const F& fishers, const fisher_options& o = {}) const {
    const char* method = "fisher_merge";
    auto sets = detail::named_views_of_each(models);
    const std::size_t n = sets.size();
    auto fsets = detail::named_views_of_each(fishers);
    detail::check_fisher_options(n, fsets.size(), o);
    for (auto& f : fsets) sets.push_back(std::move(f));
    const auto labels = detail::fisher_labels(n);
    const auto matched = detail::match_sets(method, sets, labels);
    if (o.out_dtype) detail::check_floating(method, "the requested output", {}, *o.out_dtype);
    tensor_set out;
    std::vector<detail::elementwise_job> jobs;
    std::vector<std::string_view> names;
    jobs.reserve(matched.size());
    for (const auto& m : matched) {
      jobs.push_back({m.views, out.add(std::string(m.name), o.out_dtype.value_or(m.views[0].type), m.shape, no_init)});
      names.push_back(m.name);
    }
    detail::fisher_run(jobs, n, names, o);
    return out;
  }
  tensor_set operator()(std::initializer_list<std::reference_wrapper<const tensor_set>> models,
                        std::initializer_list<std::reference_wrapper<const tensor_set>> fishers,
                        const fisher_options& o = {}) const {
    return (*this)(std::span(models.begin(), models.size()), std::span(fishers.begin(), fishers.size()), o);
  }
};
inline constexpr fisher_merge_fn fisher_merge{};

// fisher_accumulator<A>: the diagonal empirical Fisher of one tensor, sum_k g_k^2 / K over
// per-example gradients g_1..g_K, accumulated in A (float, the default, as the reference
// implementations' float32 tensors; or double for long runs: a float sum of K similar terms
// has a relative error up to about K * 2^-24). Gradients may be any tensor_like of any
// storage type, of size() elements each.
//
//   fisher_accumulator<float> acc(n);
//   for (each example) acc.add(gradient);             // one example
//   acc.add_batch(per_example_gradients, rows);      // rows examples stored back to back
//   std::vector<float> f = acc.mean();               // sum / count, or acc.mean(out)
//
// Deterministic: each element sums its squares in the order add() was called, whatever the
// thread count (exec splits elements, never the sum). NaN/Inf gradients propagate into the
// sum; mean() then throws errc::non_finite naming the element (sum() still returns it).
// The squares use the gradient widened to A (so float gradients square in float).
template <class A = float>
  requires std::same_as<A, float> || std::same_as<A, double>
class fisher_accumulator {
 public:
  explicit fisher_accumulator(std::size_t size, execution exec = {}) : sum_(size, A(0)), exec_(exec) {}

  std::size_t size() const noexcept { return sum_.size(); }
  std::size_t count() const noexcept { return count_; }
  std::span<const A> sum() const noexcept { return sum_; }
  void reset() noexcept {
    std::fill(sum_.begin(), sum_.end(), A(0));
    count_ = 0;
  }

  // One example's gradient: sum += g * g, count += 1.
  void add(tensor_view gradient) { add_batch(gradient, 1); }
  template <tensor_like T>
  void add(const T& gradient) {
    add(tensor_view(gradient));
  }

  // `examples` gradients stored back to back (a row-major [examples, size()] block).
  void add_batch(tensor_view gradients, std::size_t examples) {
    detail::check_floating("fisher_accumulator", "the gradient", {}, gradients.type);
    if (examples == 0 ? gradients.size != 0 : gradients.size / examples != size() || gradients.size % examples != 0)
      throw error(errc::size_mismatch, "fisher_accumulator: " + std::to_string(gradients.size) +
                                           " gradient elements for " + std::to_string(examples) + " examples of " +
                                           std::to_string(size()) + " elements");
    const std::size_t n = size();
    std::vector<std::size_t> starts;
    for (std::size_t s = 0; s < n; s += parallel_chunk) starts.push_back(s);
    parallel_for(starts.size(), exec_, [&](std::size_t k) {
      const std::size_t first = starts[k], last = std::min(n, first + parallel_chunk);
      constexpr std::size_t tile = 4096;
      alignas(64) A buf[tile];
      for (std::size_t r = 0; r < examples; ++r)
        for (std::size_t pos = first; pos < last; pos += tile) {
          const std::size_t len = std::min(tile, last - pos);
          const A* g = buf;
          if (gradients.type == dtype_of<A>)
            g = static_cast<const A*>(gradients.data) + r * n + pos;
          else
            kernels::widen(kernels::source{gradients.data, gradients.type}, r * n + pos, buf, len);
          A* s = sum_.data() + pos;
          for (std::size_t j = 0; j < len; ++j) s[j] += g[j] * g[j];
        }
    });
    count_ += examples;
  }
  template <tensor_like T>
  void add_batch(const T& gradients, std::size_t examples) {
    add_batch(tensor_view(gradients), examples);
  }

  // The mean sum / count in A; throws errc::empty_input before any add, errc::non_finite
  // when an element is NaN or Inf.
  std::vector<A> mean() const {
    std::vector<A> out(size());
    mean(std::span<A>(out));
    return out;
  }
  // The mean, rounded once into any floating storage type.
  void mean(mutable_tensor_view out) const {
    const char* method = "fisher_accumulator";
    if (count_ == 0) throw error(errc::empty_input, std::string(method) + ": mean() before any gradient was added");
    detail::check_floating(method, "the output", {}, out.type);
    if (out.size != size())
      throw error(errc::size_mismatch, std::string(method) + ": the output has " + std::to_string(out.size) +
                                           " elements, the accumulator " + std::to_string(size()));
    for (std::size_t j = 0; j < size(); ++j)
      if (!std::isfinite(sum_[j]))
        throw error(errc::non_finite, std::string(method) + ": element " + std::to_string(j) + " is " +
                                          detail::fmt(static_cast<double>(sum_[j])) +
                                          " (a gradient held NaN or Inf, or the sum overflowed)");
    const A k = static_cast<A>(count_);
    const std::size_t n = size();
    std::vector<std::size_t> starts;
    for (std::size_t s = 0; s < n; s += parallel_chunk) starts.push_back(s);
    parallel_for(starts.size(), exec_, [&](std::size_t c) {
      const std::size_t first = starts[c], last = std::min(n, first + parallel_chunk);
      constexpr std::size_t tile = 4096;
      alignas(64) A buf[tile];
      for (std::size_t pos = first; pos < last; pos += tile) {
        const std::size_t len = std::min(tile, last - pos);
        for (std::size_t j = 0; j < len; ++j) buf[j] = sum_[pos + j] / k;
        kernels::narrow(buf, kernels::sink{out.data, out.type}, pos, len);
      }
    });
  }

 private:
  std::vector<A> sum_;
  std::size_t count_ = 0;
  execution exec_;
};

}  // namespace alloy
