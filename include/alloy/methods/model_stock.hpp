// Model Stock: interpolate between the average of N fine-tuned models and their common base,
// with a ratio set by the angle between their task vectors.
//
//   tau_i = theta_i - theta_base, flattened (or per row: filter_wise)
//   cos_ij = clamp(tau_i . tau_j / D_ij, -1, 1) for every pair i < j, where
//            D_ij = max(|tau_i| |tau_j|, 1e-6)       (guard clamp: mergekit)
//            D_ij = |tau_i| |tau_j| + 1e-8            (guard add: the paper's code)
//   cos    = mean_{i<j} cos_ij                         (average cosines: mergekit)
//          = cos(mean_{i<j} acos(cos_ij))              (average angles: the paper's code)
//   t      = N cos / (1 + (N - 1) cos + ratio_epsilon) (ratio_epsilon: 0 mergekit, 1e-8 paper)
//   out    = t * ((sum_i theta_i) / N) + (1 - t) * theta_base
//
// Paper: Jang, Yun, Han, "Model Stock: All we need is just a few fine-tuned models", ECCV 2024
// (arXiv 2403.19522); t = 2 cos / (1 + cos) for two models, N cos / (1 + (N - 1) cos) for N.
// Implementations: arcee-ai/mergekit merge_methods/model_stock.py (mean of pairwise cosines,
// optional filter_wise rows along the last dimension, 1-D tensors one row); the authors'
// notebook (naver-ai/model-stock, reproduced in FusionBench's model_stock.py) computes the
// angle of two task vectors per tensor, and FusionBench extends it to N models by averaging
// the pairwise angles. Presets: preset(mergekit) (the default), preset(paper); peft has no
// Model Stock (preset(peft) throws).
//
// Complexity: two streaming passes: the Gram matrix of the task vectors (N(N+1)/2 dot
// products per element, kernels/reduce.hpp), then the combination. Memory: no full-size
// temporary; one t per row with filter_wise. Precision: task vectors and the output in the
// compute type (float; double for double data), the Gram in double, cos and t in double
// rounded once; out computed in mergekit's order. Determinism: bit-identical for any thread
// count.
// Degenerate cases (never NaN):
//   - a zero task vector has cos 0 against every other (both guards), so two models one of
//     which equals the base give t = 0: the base; orthogonal task vectors give t = 0 too;
//   - identical task vectors give cos = 1, t = 1: the average of the models;
//   - t has a pole at cos = -1/(N - 1) (with mean cosines cos >= -1/(N - 1) always, equality
//     when the normalised task vectors sum to zero, e.g. two antiparallel ones): where
//     |1 + (N - 1) cos| <= 1e-6 alloy sets t = 0 and returns the base (mergekit returns
//     Inf/NaN there, the paper's code +-N cos / 1e-8 times the models); near the pole t is
//     large and the formula is followed;
//   - with mean angles cos may fall below -1/(N - 1) (e.g. a, -a, b, -b): t is then the
//     formula's value, as in the paper's code.
// Also: NaN or Inf in the data is errc::non_finite; fewer than 2 models errc::empty_input.
#pragma once

#include <alloy/core/preset.hpp>
#include <alloy/methods/detail/reductions.hpp>

#include <cmath>
#include <initializer_list>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace alloy {

enum class stock_average { cosines, angles };        // mean of pairwise cosines, or of angles
enum class stock_guard { clamp, add };                // D = max(|a||b|, eps), or |a||b| + eps

struct model_stock_options {
  bool filter_wise = false;  // one t per row (the last dimension) instead of per tensor
  stock_average average = stock_average::cosines;
  stock_guard guard = stock_guard::clamp;
  double epsilon = 1e-6;        // the guard's epsilon (mergekit 1e-6, paper 1e-8)
  double ratio_epsilon = 0;     // added to t's denominator (mergekit 0, paper 1e-8)
  std::vector<std::size_t> shape = {};  // tensor level: the shape giving the rows (default: the base's)
  std::optional<dtype> out_dtype = {};  // model level: default the base's dtype
  execution exec = {};

  static model_stock_options preset(alloy::preset p) {
    model_stock_options o;
    switch (p) {
      case alloy::preset::mergekit:
        break;
      case alloy::preset::paper:
        o.average = stock_average::angles;
        o.guard = stock_guard::add;
        o.epsilon = 1e-8;
        o.ratio_epsilon = 1e-8;
        break;
      case alloy::preset::peft:
        throw error(errc::invalid_argument,
                    "model_stock: peft has no Model Stock merge; use preset::mergekit or preset::paper");
    }
    return o;
  }
};

namespace detail {

inline constexpr double stock_pole = 1e-6;

inline void check_model_stock(std::size_t models, const model_stock_options& o) {
  const char* method = "model_stock";
  check_model_count(method, models, 2, kernels::max_stream_inputs - 1);
  check_finite(method, "epsilon", o.epsilon);
  check_finite(method, "ratio_epsilon", o.ratio_epsilon);
  if (o.epsilon < 0)
    throw error(errc::invalid_argument, std::string(method) + ": epsilon = " + fmt(o.epsilon) + " is negative");
  if (o.guard == stock_guard::clamp && o.epsilon == 0)
    throw error(errc::invalid_argument,
                std::string(method) + ": epsilon must be > 0 with guard clamp (it bounds the denominator of the cosine)");
}

// t from the Gram matrix of the N task vectors of one vector (row or tensor).
inline double stock_t(std::size_t n, const double* g, const model_stock_options& o) {
  std::vector<double> norm(n);
  for (std::size_t i = 0; i < n; ++i) norm[i] = std::sqrt(g[kernels::gram_pair(i, i, n)]);
  double sum = 0;
  for (std::size_t i = 0; i < n; ++i) {
    for (std::size_t j = i + 1; j < n; ++j) {
      const double prod = norm[i] * norm[j];
      const double d = o.guard == stock_guard::clamp ? std::max(prod, o.epsilon) : prod + o.epsilon;
      // d == 0 only with guard add, epsilon 0 and a zero vector: its cosine is 0.
      const double c = d > 0 ? std::clamp(g[kernels::gram_pair(i, j, n)] / d, -1.0, 1.0) : 0.0;
      sum += o.average == stock_average::cosines ? c : std::acos(c);
    }
  }
  const double pairs = static_cast<double>(n * (n - 1) / 2);
  const double cos = o.average == stock_average::cosines ? sum / pairs : std::cos(sum / pairs);
  const double nn = static_cast<double>(n);
  const double denom = 1 + (nn - 1) * cos;
  if (std::abs(denom) <= stock_pole) return 0;  // the pole: the base
  return nn * cos / (denom + o.ratio_epsilon);
}

inline void model_stock_jobs(std::span<const geometric_job> jobs, const model_stock_options& o) {
  const char* method = "model_stock";
  const std::size_t n = jobs.empty() ? 0 : jobs[0].in.size() - 1;
  const auto gj = gram_jobs(jobs, true, [&](const geometric_job& j) {
    return o.filter_wise ? rows_of(j.shape, j.out.size) : whole(j.out.size);
  });
  const auto g = gram(gj, o.exec);
  const auto labels = model_labels(n, false);
  const std::size_t pairs = kernels::gram_pairs(n);
  std::vector<coefficient_table> tables;
  tables.reserve(jobs.size());
  for (std::size_t j = 0; j < jobs.size(); ++j) {
    check_gram_finite(method, jobs[j].name, gj[j], g[j], labels);
    const std::size_t vectors = gj[j].layout.vectors();
    coefficient_table& c = tables.emplace_back(vectors, 1);
    for (std::size_t v = 0; v < vectors; ++v) c.d[v] = stock_t(n, g[j].data() + v * pairs, o);
    c.finish();
  }
  run_combination<kernels::combine_mode::stock>(jobs, tables, layouts_of(gj), n, o.exec);
}

}  // namespace detail

// model_stock(base, models, out [, options]) for tensors (rows for filter_wise from the
// base's shape or options.shape); model_stock(base_set, model_sets [, options]) -> tensor_set
// for whole models.
struct model_stock_fn {
  template <detail::tensor_or_view B>
  void operator()(const B& base, std::span<const tensor_view> models, mutable_tensor_view out,
                  const model_stock_options& o = {}) const {
    const char* method = "model_stock";
    detail::check_model_stock(models.size(), o);
    std::vector<tensor_view> in{tensor_view(base)};
    in.insert(in.end(), models.begin(), models.end());
    const auto labels = detail::model_labels(models.size(), true);
    detail::geometric_job job = detail::tensor_job(method, std::move(in), labels, out, {});
    job.shape = detail::tensor_shape(method, detail::input_shape(base), o.shape, out.size);
    detail::model_stock_jobs(std::span(&job, 1), o);
  }
  template <detail::tensor_or_view B>
  void operator()(const B& base, std::initializer_list<tensor_view> models, mutable_tensor_view out,
                  const model_stock_options& o = {}) const {
    (*this)(base, std::span(models.begin(), models.size()), out, o);
  }
  template <detail::tensor_or_view B, std::ranges::input_range R>
    requires tensor_like<std::ranges::range_value_t<R>>
  void operator()(const B& base, const R& models, mutable_tensor_view out, const model_stock_options& o = {}) const {
    (*this)(base, std::span<const tensor_view>(views_of(models)), out, o);
  }
  template <named_tensors B, detail::model_set_range R>
  tensor_set operator()(const B& base, const R& models, const model_stock_options& o = {}) const {
    std::vector<std::vector<named_view>> sets{named_views_of(base)};
    for (auto& m : detail::named_views_of_each(models)) sets.push_back(std::move(m));
    detail::check_model_stock(sets.size() - 1, o);
    tensor_set out;
    const auto jobs = detail::set_jobs("model_stock", sets, detail::model_labels(sets.size() - 1, true), o.out_dtype, out);
    detail::model_stock_jobs(jobs, o);
    return out;
  }
  template <named_tensors B>
  tensor_set operator()(const B& base, std::initializer_list<std::reference_wrapper<const tensor_set>> models,
                        const model_stock_options& o = {}) const {
    return (*this)(base, std::span(models.begin(), models.size()), o);
  }
};
inline constexpr model_stock_fn model_stock{};

}  // namespace alloy
