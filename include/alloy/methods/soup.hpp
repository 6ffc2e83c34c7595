// Model soups: the uniform soup and the weighted average of N models.
//
//   uniform_soup:      theta = (1/N) sum_i theta_i
//   weighted_average:  theta = sum_i w_i theta_i, divided by sum_i w_i when `normalize`
//
// Papers: Wortsman et al., "Model soups", ICML 2022 (uniform soup); the weighted form is
// mergekit's `linear` method (normalize on by default, as there).
// Complexity: one streaming pass, N reads and one write per element; threads split each
// tensor into fixed chunks. Memory: no temporaries beyond a 64 KiB stack tile per thread.
// Precision: computed in float (double when any operand is double); 16-bit storage is
// widened on load and rounded to nearest even once, on store. Determinism: identical
// results for any thread count; the sum runs over models in order 0..N-1.
// Edge cases: zero-length tensors give a zero-length result; NaN/Inf in a model propagate
// as IEEE arithmetic says; normalize with sum_i w_i == 0 is an error (it would be 0/0),
// not a NaN; the output may be one of the inputs exactly (in place), not overlap one.
// Deviations: mergekit computes in the input dtype (bf16 arithmetic for bf16 models) unless
// `dtype: float32`; alloy always computes in float and rounds once (docs/methods/soup.md).
#pragma once

#include <alloy/core/execution.hpp>
#include <alloy/core/tensor.hpp>
#include <alloy/core/tensor_set.hpp>
#include <alloy/core/validate.hpp>
#include <alloy/kernels/linear_combination.hpp>
#include <alloy/methods/detail/elementwise.hpp>

#include <initializer_list>
#include <numeric>
#include <optional>
#include <span>
#include <vector>

namespace alloy {

struct weighted_average_options {
  bool normalize = true;               // divide by the sum of the weights
  std::optional<dtype> out_dtype = {};  // model level: default the first model's dtype
  execution exec = {};
};

struct soup_options {
  std::optional<dtype> out_dtype = {};  // model level: default the first model's dtype
  execution exec = {};
};

namespace detail {

// Validated weights as both compute types, and the divisor sum_i w_i summed in each compute
// type from index 0 up, as mergekit's `weights.sum()` in float32 does.
struct linear_weights {
  std::vector<float> f;
  std::vector<double> d;
  float divisor_f = 1;
  double divisor_d = 1;

  explicit linear_weights(std::span<const double> w)
      : f(w.begin(), w.end()), d(w.begin(), w.end()),
        divisor_f(std::accumulate(f.begin(), f.end(), 0.0f)), divisor_d(std::accumulate(d.begin(), d.end(), 0.0)) {}

  template <class C>
  std::span<const C> get() const noexcept {
    if constexpr (std::is_same_v<C, float>)
      return f;
    else
      return d;
  }
  template <class C>
  C divisor() const noexcept {
    if constexpr (std::is_same_v<C, float>)
      return divisor_f;
    else
      return divisor_d;
  }
};

inline linear_weights weighted_average_weights(const char* method, std::span<const double> w, std::size_t models,
                                               bool normalize) {
  check_model_count(method, models, 1, kernels::max_stream_inputs);
  check_weights(method, w, models);
  linear_weights lw(w);
  if (normalize && (lw.divisor_d == 0 || lw.divisor_f == 0))
    throw error(errc::invalid_argument, std::string(method) +
                                            ": the weights sum to 0, so they cannot be normalized (set normalize = false)");
  return lw;
}

template <class C>
kernels::linear_combination<C> average_kernel(const linear_weights& lw, bool normalize) {
  return {lw.get<C>(), false, normalize, lw.divisor<C>(), false, C(1)};
}

inline void weighted_average_tensor(const char* method, std::span<const tensor_view> models, std::span<const double> w,
                                    mutable_tensor_view out, bool normalize, const execution& ex) {
  const linear_weights lw = weighted_average_weights(method, w, models.size(), normalize);
  const auto labels = model_labels(models.size(), false);
  check_inputs(method, {}, models, labels, out);
  check_no_overlap(method, {}, models, labels, out);
  const elementwise_job job{{models.begin(), models.end()}, out};
  run_elementwise(std::span(&job, 1), ex, [&](std::size_t, auto tag) { return average_kernel<decltype(tag)>(lw, normalize); });
}

inline tensor_set weighted_average_sets(const char* method, const std::vector<std::vector<named_view>>& sets,
                                        std::span<const double> w, bool normalize, std::optional<dtype> out_dtype,
                                        const execution& ex) {
  const linear_weights lw = weighted_average_weights(method, w, sets.size(), normalize);
  return merge_sets(method, sets, model_labels(sets.size(), false), out_dtype, ex,
                    [&](std::size_t, auto tag) { return average_kernel<decltype(tag)>(lw, normalize); });
}

}  // namespace detail

// weighted_average(models, weights, out [, options]) for tensors;
// weighted_average(model_sets, weights [, options]) -> tensor_set for whole models.
struct weighted_average_fn {
  void operator()(std::span<const tensor_view> models, const std::vector<double>& weights, mutable_tensor_view out,
                  const weighted_average_options& o = {}) const {
    detail::weighted_average_tensor("weighted_average", models, weights, out, o.normalize, o.exec);
  }
  void operator()(std::initializer_list<tensor_view> models, const std::vector<double>& weights, mutable_tensor_view out,
                  const weighted_average_options& o = {}) const {
    (*this)(std::span(models.begin(), models.size()), weights, out, o);
  }
  template <std::ranges::input_range R>
    requires tensor_like<std::ranges::range_value_t<R>>
  void operator()(const R& models, const std::vector<double>& weights, mutable_tensor_view out,
                  const weighted_average_options& o = {}) const {
    (*this)(std::span<const tensor_view>(views_of(models)), weights, out, o);
  }
  template <detail::model_set_range R>
  tensor_set operator()(const R& models, const std::vector<double>& weights, const weighted_average_options& o = {}) const {
    return detail::weighted_average_sets("weighted_average", detail::named_views_of_each(models), weights, o.normalize,
                                         o.out_dtype, o.exec);
  }
  tensor_set operator()(std::initializer_list<std::reference_wrapper<const tensor_set>> models,
                        const std::vector<double>& weights, const weighted_average_options& o = {}) const {
    return (*this)(std::span(models.begin(), models.size()), weights, o);
  }
};
inline constexpr weighted_average_fn weighted_average{};

// uniform_soup(models, out [, options]) for tensors; uniform_soup(model_sets [, options])
// -> tensor_set for whole models. The mean of the models: weighted_average with w_i = 1.
struct uniform_soup_fn {
  void operator()(std::span<const tensor_view> models, mutable_tensor_view out, const soup_options& o = {}) const {
    detail::weighted_average_tensor("uniform_soup", models, std::vector<double>(models.size(), 1.0), out, true, o.exec);
  }
  void operator()(std::initializer_list<tensor_view> models, mutable_tensor_view out, const soup_options& o = {}) const {
    (*this)(std::span(models.begin(), models.size()), out, o);
  }
  template <std::ranges::input_range R>
    requires tensor_like<std::ranges::range_value_t<R>>
  void operator()(const R& models, mutable_tensor_view out, const soup_options& o = {}) const {
    (*this)(std::span<const tensor_view>(views_of(models)), out, o);
  }
  template <detail::model_set_range R>
  tensor_set operator()(const R& models, const soup_options& o = {}) const {
    auto sets = detail::named_views_of_each(models);
    const std::vector<double> ones(sets.size(), 1.0);
    return detail::weighted_average_sets("uniform_soup", sets, ones, true, o.out_dtype, o.exec);
  }
  tensor_set operator()(std::initializer_list<std::reference_wrapper<const tensor_set>> models,
                        const soup_options& o = {}) const {
    return (*this)(std::span(models.begin(), models.size()), o);
  }
};
inline constexpr uniform_soup_fn uniform_soup{};

}  // namespace alloy
