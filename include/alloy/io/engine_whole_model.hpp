// TIES over the whole model in the streaming engine (`merge_method: ties` with
// `alloy.preset: paper`): the paper's code trims each task vector with one top-k over all of
// a model's tensors and breaks zero votes by the sign of the model-wide vote. Both need every
// tensor before the first one is merged, so the engine's constructor runs a planning pass:
//
//   1. per model, the whole-model top-k (methods/detail/trim.hpp's whole_model scope, the
//      same radix selection as the library's model-level ties: up to 3 reads of the model's
//      and the base's tensors), releasing each range of the maps once read;
//   2. the model-wide vote balance, one tensor at a time (an integer sum, so the order of the
//      tensors does not change it), releasing each tensor's maps after it;
//
// then each tensor is merged with its precomputed masks and the majority sign. The result is
// bit-identical to alloy::ties on the whole models with preset paper. Memory: the jobs and
// masks (a few hundred bytes per tensor) plus what is in flight, independent of the model
// size. Weights and densities must then be the same for every tensor (a gradient or a filter
// is a recipe_error naming the parameter); inputs must be aligned in their files (the
// selection reads every tensor in place).
#pragma once

#include <alloy/io/engine_plan.hpp>
#include <alloy/io/recipe.hpp>
#include <alloy/methods/ties.hpp>

#include <cstddef>
#include <string>
#include <vector>

namespace alloy::io::detail {

struct whole_model_ties {
  bool active = false;
  bool majority_positive = false;  // with the model-majority zero vote only
  std::vector<std::vector<alloy::detail::tv_mask>> masks;  // per plan tensor (merged ones), per model
};

inline bool needs_whole_model_ties(const recipe& r) {
  if (r.method != merge_method_id::ties) return false;
  const auto o = ties_options::preset(r.preset);
  return o.scope == trim_scope::whole_model || o.zero == zero_vote::model_majority;
}

// The value of a per-model parameter, which must be the same for every merged tensor.
template <class Get>
std::vector<double> uniform_parameter(const recipe& r, const merge_plan& plan, const char* name, const Get& get) {
  std::vector<double> first;
  const planned_tensor* where = nullptr;
  for (const auto& t : plan.tensors) {
    if (t.action != tensor_action::merge) continue;
    std::vector<double> v;
    for (const auto& m : t.parameters.models) v.push_back(get(m));
    if (!where) {
      first = v;
      where = &t;
    } else if (v != first) {
      throw recipe_error(r.label() + ": " + name + " differs between tensor '" + where->name + "' and tensor '" +
                         t.name + "': ties with preset paper trims over the whole model and needs one " + name +
                         " per model for all tensors");
    }
  }
  return first;
}

// The planning pass above; `release` drops the mapped pages of tensor t's inputs over
// [first, first + count).
template <class Release>
void plan_whole_model_ties(const recipe& r, const merge_plan& plan, whole_model_ties& st, const execution& ex,
                           const Release& release) {
  if (!needs_whole_model_ties(r)) return;
  st.active = true;
  const std::size_t n = r.merged.size();
  const auto weights = uniform_parameter(r, plan, "weight", [](const auto& m) { return m.weight.value_or(1.0); });
  const auto densities = uniform_parameter(r, plan, "density", [](const auto& m) { return m.density.value_or(1.0); });
  ties_options o = ties_options::preset(r.preset);
  o.exec = ex;
  const char* method = "ties";
  alloy::detail::check_weights(method, weights, n);
  alloy::detail::check_densities(method, densities, n);

  // One job per merged tensor, reading the maps in place.
  std::vector<alloy::detail::sparse_job> jobs;
  std::vector<std::size_t> tensor_of;  // job -> plan tensor
  for (std::size_t j = 0; j < plan.tensors.size(); ++j) {
    const auto& t = plan.tensors[j];
    if (t.action != tensor_action::merge) continue;
    for (const auto* s : t.sources)
      if (!s->is_aligned())
        throw recipe_error(r.label() + ": tensor '" + t.name + "' is not aligned to its element size in its file; " +
                           "ties with preset paper reads every tensor in place and needs aligned inputs");
    alloy::detail::sparse_job job;
    job.name = t.name;
    job.base = t.sources[0]->view();
    for (std::size_t i = 1; i <= n; ++i) job.models.push_back(t.sources[i]->view());
    job.out = {nullptr, t.elements, t.out_type};
    jobs.push_back(std::move(job));
    tensor_of.push_back(j);
  }
  const alloy::detail::read_hook after_read = [&](std::size_t job, std::size_t first, std::size_t count) {
    release(plan.tensors[tensor_of[job]], first, count);
  };
  alloy::detail::build_trim_masks(method, jobs, densities, o.scope, o.rule, o.on_empty, o.storage_precision, ex,
                                  &after_read);
  if (o.zero == zero_vote::model_majority) {
    // The library reads with the recipe's vote settings (consensus_method, normalize) as
    // merge_tensor sets them; they must be uniform too for one model-wide vote.
    const auto& p = plan.tensors[tensor_of.empty() ? 0 : tensor_of[0]].parameters;
    o.consensus_method = p.consensus_method && *p.consensus_method == "count" ? consensus::count : consensus::sum;
    const alloy::detail::linear_weights lw(weights);
    std::int64_t balance = 0;
    for (std::size_t j = 0; j < jobs.size(); ++j) {
      const auto& t = plan.tensors[tensor_of[j]];
      if (t.parameters.consensus_method != p.consensus_method)
        throw recipe_error(r.label() + ": consensus_method differs between tensors; ties with preset paper takes " +
                           "one model-wide vote");
      balance += alloy::detail::vote_balance(std::span(&jobs[j], 1), lw, o);
      release(t, 0, t.elements);
    }
    st.majority_positive = balance > 0;
  }
  st.masks.resize(plan.tensors.size());
  for (std::size_t j = 0; j < jobs.size(); ++j) st.masks[tensor_of[j]] = std::move(jobs[j].masks);
}

// Merges tensor t (inputs in, whole) with its planned masks: alloy::ties' last step.
inline void merge_whole_model_ties(const whole_model_ties& st, std::size_t tensor_index, ties_options o,
                                   tensor_view base, std::span<const tensor_view> models,
                                   const std::vector<double>& weights, mutable_tensor_view out) {
  alloy::detail::sparse_job job = alloy::detail::tensor_job("ties", base, models, out);
  job.masks = st.masks.at(tensor_index);
  alloy::detail::ties_merge(std::span(&job, 1), weights, o, st.majority_positive);
}

}  // namespace alloy::io::detail
