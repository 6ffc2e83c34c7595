// Task arithmetic: theta = theta_base + lambda * sum_i w_i (theta_i - theta_base),
// the weighted task-vector sum divided by sum_i w_i first when `normalize` is on.
//
// Paper: Ilharco et al., "Editing Models with Task Arithmetic", ICLR 2023. Negative weights
// subtract a task vector (task negation, for forgetting); lambda = 0 returns the base.
// Options follow mergekit's `task_arithmetic`: `normalize` (default off) divides by
// sum_i w_i, with |sum| < 1e-8 treated as 1 (mergekit's guard), and `lambda` scales the
// merged task vector (default 1).
// Complexity: one streaming pass, N + 1 reads and one write per element. Memory: no
// temporaries beyond a 64 KiB stack tile per thread (the task vectors are never stored).
// Precision: computed in float (double when any operand is double), in mergekit's order
// (sum over models 0..N-1, divide, scale, add the base); 16-bit storage rounds once, on
// store. Determinism: identical results for any thread count.
// Edge cases: zero-length tensors give a zero-length result; NaN/Inf propagate per IEEE;
// the output may be the base or a model exactly (in place), not overlap one otherwise.
// Deviations: mergekit forms task vectors in the input dtype (bf16 arithmetic for bf16
// models) unless `dtype: float32`; alloy always computes in float and rounds once.
#pragma once

#include <alloy/methods/soup.hpp>

namespace alloy {

// What a task-vector merge writes: the merged model, or the merged task vector alone
// (theta - theta_base, as peft's merge utilities return it).
enum class merge_output { merged, delta };

struct task_arithmetic_options {
  double lambda = 1.0;                  // scales the merged task vector
  bool normalize = false;               // divide by sum_i w_i (|sum| < 1e-8 counts as 1)
  merge_output output = merge_output::merged;
  std::optional<dtype> out_dtype = {};  // model level: default the base model's dtype
  execution exec = {};
};

namespace detail {

inline linear_weights task_arithmetic_weights(std::span<const double> w, std::size_t models,
                                              const task_arithmetic_options& o) {
  const char* method = "task_arithmetic";
  check_model_count(method, models, 1, kernels::max_stream_inputs - 1);
  check_weights(method, w, models);
  check_finite(method, "lambda", o.lambda);
  linear_weights lw(w);
  // mergekit's guard against dividing by a (near) zero sum.
  if (std::abs(lw.divisor_f) < 1e-8f) lw.divisor_f = 1;
  if (std::abs(lw.divisor_d) < 1e-8) lw.divisor_d = 1;
  return lw;
}

template <class C>
kernels::linear_combination<C> task_kernel(const linear_weights& lw, const task_arithmetic_options& o) {
  return {lw.get<C>(), true, o.normalize, lw.divisor<C>(), o.lambda != 1.0, static_cast<C>(o.lambda),
          o.output == merge_output::merged};
}

}  // namespace detail

// task_arithmetic(base, models, weights, out [, options]) for tensors;
// task_arithmetic(base_set, model_sets, weights [, options]) -> tensor_set for whole models.
struct task_arithmetic_fn {
  void operator()(tensor_view base, std::span<const tensor_view> models, const std::vector<double>& weights,
                  mutable_tensor_view out, const task_arithmetic_options& o = {}) const {
    const auto lw = detail::task_arithmetic_weights(weights, models.size(), o);
    std::vector<tensor_view> in{base};
    in.insert(in.end(), models.begin(), models.end());
    const auto labels = detail::model_labels(models.size(), true);
    detail::check_inputs("task_arithmetic", {}, in, labels, out);
    detail::check_no_overlap("task_arithmetic", {}, in, labels, out);
    const detail::elementwise_job job{std::move(in), out};
    detail::run_elementwise(std::span(&job, 1), o.exec,
                            [&](std::size_t, auto tag) { return detail::task_kernel<decltype(tag)>(lw, o); });
  }
  void operator()(tensor_view base, std::initializer_list<tensor_view> models, const std::vector<double>& weights,
                  mutable_tensor_view out, const task_arithmetic_options& o = {}) const {
    (*this)(base, std::span(models.begin(), models.size()), weights, out, o);
  }
  template <std::ranges::input_range R>
    requires tensor_like<std::ranges::range_value_t<R>>
  void operator()(tensor_view base, const R& models, const std::vector<double>& weights, mutable_tensor_view out,
                  const task_arithmetic_options& o = {}) const {
    (*this)(base, std::span<const tensor_view>(views_of(models)), weights, out, o);
  }
  template <named_tensors B, detail::model_set_range R>
  tensor_set operator()(const B& base, const R& models, const std::vector<double>& weights,
                        const task_arithmetic_options& o = {}) const {
    std::vector<std::vector<named_view>> sets{named_views_of(base)};
    for (auto& m : detail::named_views_of_each(models)) sets.push_back(std::move(m));
    const auto lw = detail::task_arithmetic_weights(weights, sets.size() - 1, o);
    return detail::merge_sets("task_arithmetic", sets, detail::model_labels(sets.size() - 1, true), o.out_dtype, o.exec,
                              [&](std::size_t, auto tag) { return detail::task_kernel<decltype(tag)>(lw, o); });
  }
  template <named_tensors B>
  tensor_set operator()(const B& base, std::initializer_list<std::reference_wrapper<const tensor_set>> models,
                        const std::vector<double>& weights, const task_arithmetic_options& o = {}) const {
    return (*this)(base, std::span(models.begin(), models.size()), weights, o);
  }
};
inline constexpr task_arithmetic_fn task_arithmetic{};

}  // namespace alloy
