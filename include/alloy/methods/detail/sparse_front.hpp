// Input handling shared by the sparsifying merges: validation and job building for one
// tensor (base, models, out) or for whole models (base set, model sets -> tensor_set).
#pragma once

#include <alloy/core/tensor_set.hpp>
#include <alloy/core/validate.hpp>
#include <alloy/methods/detail/elementwise.hpp>
#include <alloy/methods/detail/sparse_merge.hpp>

#include <optional>
#include <span>
#include <string>
#include <vector>

namespace alloy::detail {

inline sparse_job tensor_job(std::string_view method, tensor_view base, std::span<const tensor_view> models,
                             mutable_tensor_view out) {
  check_model_count(method, models.size(), 1, kernels::max_stream_inputs - 1);
  std::vector<tensor_view> in{base};
  in.insert(in.end(), models.begin(), models.end());
  const auto labels = model_labels(models.size(), true);
  check_inputs(method, {}, in, labels, out);
  check_no_overlap(method, {}, in, labels, out);
  return {{}, base, {models.begin(), models.end()}, out, {}};
}

// Whole models: tensors matched by name to the base (which gives the order and, unless
// out_dtype or promote_16bit says otherwise, each output dtype). promote_16bit: bf16/fp16
// tensors are written as float32 (peft's promotion).
inline std::vector<sparse_job> set_jobs(std::string_view method, const std::vector<std::vector<named_view>>& sets,
                                        std::optional<dtype> out_dtype, bool promote_16bit, tensor_set& out) {
  check_model_count(method, sets.size() - 1, 1, kernels::max_stream_inputs - 1);
  const auto labels = model_labels(sets.size() - 1, true);
  const auto matched = match_sets(method, sets, labels);
  if (out_dtype) check_floating(method, "the requested output", {}, *out_dtype);
  std::vector<sparse_job> jobs;
  jobs.reserve(matched.size());
  for (const auto& m : matched) {
    dtype t = out_dtype.value_or(m.views[0].type);
    if (!out_dtype && promote_16bit && (t == dtype::bf16 || t == dtype::f16)) t = dtype::f32;
    mutable_tensor_view o = out.add(std::string(m.name), t, m.shape, no_init);
    jobs.push_back({m.name, m.views[0], {m.views.begin() + 1, m.views.end()}, o, {}});
  }
  return jobs;
}

template <named_tensors B, model_set_range R>
std::vector<std::vector<named_view>> base_and_models(const B& base, const R& models) {
  std::vector<std::vector<named_view>> sets{named_views_of(base)};
  for (auto& m : named_views_of_each(models)) sets.push_back(std::move(m));
  return sets;
}

// A per-model parameter: one value for all, or one per model.
inline std::vector<double> per_model(std::string_view method, std::string_view what, double all,
                                     std::span<const double> each, std::size_t models) {
  if (each.empty()) return std::vector<double>(models, all);
  if (each.size() != models)
    throw error(errc::invalid_argument, std::string(method) + ": " + std::to_string(each.size()) + " " +
                                            std::string(what) + " values for " + std::to_string(models) + " models");
  return {each.begin(), each.end()};
}

}  // namespace alloy::detail
