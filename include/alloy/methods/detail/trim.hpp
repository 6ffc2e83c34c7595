// Magnitude trimming of task vectors: the "keep the top-k |tau|" step shared by TIES,
// magnitude pruning and Breadcrumbs, built on the exact radix selection (topk.hpp).
#pragma once

#include <alloy/core/validate.hpp>
#include <alloy/methods/detail/sampled_topk.hpp>
#include <alloy/methods/detail/sparse_merge.hpp>
#include <alloy/methods/detail/topk.hpp>

#include <cstddef>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace alloy {

// Over which entries one top-k runs: each tensor on its own (mergekit, peft), or all
// tensors of a model at once (the TIES paper's code and FusionBench flatten the model).
enum class trim_scope { per_tensor, whole_model };

// How many entries a density keeps, and which ones at a tie.
//   exact_k: k = floor(density * n) (double product, truncated, as mergekit and peft
//            compute it: 0.29 of 100 keeps 28); ties at the cut keep lower indices first.
//   paper:   every entry whose magnitude is >= the (floor(density * n) + 1)-th largest (the
//            paper's kthvalue(n - floor(density * n)) and >=: one more entry than exact_k,
//            plus every tie of the cut).
enum class trim_rule { exact_k, paper };

// What a density that keeps no entry (floor(density * n) == 0) does: an error (mergekit
// asserts k > 0) or an all-zero task vector (peft's topk with k = 0).
enum class empty_trim { error, zeros };

}  // namespace alloy

namespace alloy::detail {

// k = floor(density * n), computed in double like the reference implementations.
inline std::size_t kept_count(double density, std::size_t n) noexcept {
  const double k = density * static_cast<double>(n);
  return k >= static_cast<double>(n) ? n : static_cast<std::size_t>(k);
}

inline void check_densities(std::string_view method, std::span<const double> densities, std::size_t models) {
  if (densities.size() != models)
    throw error(errc::invalid_argument, std::string(method) + ": " + std::to_string(densities.size()) +
                                            " densities for " + std::to_string(models) + " models");
  for (std::size_t i = 0; i < densities.size(); ++i) {
    check_finite(method, "density of model " + std::to_string(i), densities[i]);
    if (!(densities[i] > 0 && densities[i] <= 1))
      throw error(errc::invalid_argument, std::string(method) + ": density of model " + std::to_string(i) + " is " +
                                              fmt(densities[i]) + ", outside (0, 1]");
  }
}

// Sets jobs[*].masks[i] to model i's top-k trim at densities[i]. after_read (whole-model
// scope): see read_hook.
inline void build_trim_masks(std::string_view method, std::span<sparse_job> jobs, std::span<const double> densities,
                             trim_scope scope, trim_rule rule, empty_trim on_empty, bool storage_precision,
                             const execution& ex, const read_hook* after_read = nullptr) {
  const std::size_t n_models = densities.size();
  for (auto& j : jobs) j.masks.assign(n_models, tv_mask{});
  // The entries model i keeps of a group of n entries (0: nothing), or nullopt for all.
  auto count = [&](std::size_t i, std::size_t n, std::string_view what) -> std::optional<std::size_t> {
    if (densities[i] >= 1 || n == 0) return std::nullopt;  // no trimming
    std::size_t k = kept_count(densities[i], n);
    if (k == 0 && rule == trim_rule::exact_k) {
      if (on_empty == empty_trim::error)
        throw error(errc::invalid_argument, std::string(method) + ": density " + fmt(densities[i]) + " keeps no entry of " +
                                                std::string(what) + " (" + std::to_string(n) + " entries) of model " +
                                                std::to_string(i));
      return 0;
    }
    return rule == trim_rule::paper ? std::min(n, k + 1) : k;
  };
  auto set = [&](tv_mask& m, std::size_t k, topk_rule r) {
    if (k == 0) {
      m.type = tv_mask::kind::none;
      return;
    }
    m.type = tv_mask::kind::topk;
    m.keep = r;
    if (rule == trim_rule::paper) m.keep.tie_end = std::numeric_limits<std::size_t>::max();
  };
  if (scope == trim_scope::whole_model) {
    std::vector<std::size_t> sizes;
    std::size_t n = 0;
    for (const auto& j : jobs) {
      sizes.push_back(j.out.size);
      n += j.out.size;
    }
    for (std::size_t i = 0; i < n_models; ++i) {
      const auto k = count(i, n, "the model");
      if (!k) continue;
      const topk_cut cut = *k == 0 ? topk_cut{} : topk_select(sizes, *k, task_vector_producer{jobs, i, storage_precision, after_read}, ex);
      for (std::size_t s = 0; s < jobs.size(); ++s) set(jobs[s].masks[i], *k, cut.rule(s));
    }
    return;
  }
  for (auto& job : jobs) {
    const std::string what = "tensor '" + std::string(job.name) + "'";
    std::vector<std::size_t> ks, which;
    for (std::size_t i = 0; i < n_models; ++i) {
      const auto k = count(i, job.out.size, what);
      if (!k) continue;
      if (*k == 0) {
        set(job.masks[i], 0, {});
        continue;
      }
      ks.push_back(*k);
      which.push_back(i);
    }
    if (ks.empty()) continue;
    std::vector<sparse_job> one{job};  // the cut reads models by position: keep only those trimmed
    one[0].models.clear();
    for (std::size_t i : which) one[0].models.push_back(job.models[i]);
    const auto rules = tensor_cuts(one[0], ks, storage_precision, ex);
    for (std::size_t w = 0; w < which.size(); ++w) set(job.masks[which[w]], ks[w], rules[w]);
  }
}

}  // namespace alloy::detail
