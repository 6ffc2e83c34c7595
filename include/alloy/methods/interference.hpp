// The interference analysis of TIES (Yadav et al. 2023, "TIES-Merging", section 3 and
// figure 2): how the task vectors tau_i = theta_i - theta_base of one tensor disagree, before
// and after trimming each to its largest entries.
//
//   abs_sum[i]        sum_j |tau_i[j]|          (mean |tau_i| = abs_sum[i] / elements)
//   nonzero[i]        #{j : tau_i[j] != 0}
//   conflicts_before  #{j : some tau_i[j] > 0 and some tau_k[j] < 0}
//   conflicts_after   the same for trim(tau_i, density_i), the exact top-k of |tau_i| that
//                     ties and magnitude_prune keep (k = floor(density * n), ties at the cut
//                     keep the lower index; detail/trim.hpp); density 1 keeps everything,
//                     a density keeping no entry keeps nothing
//
// It is not a merge: `alloy analyze` prints it to help choose a density and a method.
// tau is computed as the merges compute it (in float, in double for f64 inputs).
// Complexity: the top-k selection of each trimmed model (as ties) and one pass over the
// inputs. Memory: the selection's sample and band entries and a few tiles per thread; no
// full-size temporary. Determinism: counts are exact; abs_sum adds |tau| in double, within
// each tile of sparse_tile elements into eight partial sums (entry j into sum j mod 8), then
// those and the tiles' sums in order, so every thread count gives the same bits.
#pragma once

#include <alloy/core/execution.hpp>
#include <alloy/core/validate.hpp>
#include <alloy/methods/detail/sparse_merge.hpp>
#include <alloy/methods/detail/trim.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <span>
#include <vector>

namespace alloy {

struct interference {
  std::size_t elements = 0;
  std::vector<double> abs_sum;       // per model
  std::vector<std::size_t> nonzero;  // per model
  std::size_t conflicts_before = 0, conflicts_after = 0;
};

namespace detail {

// Per work item: the counts of one item of for_each_task_vector_tile.
struct interference_item {
  std::vector<double> abs_sum;
  std::vector<std::size_t> nonzero;
  std::size_t before = 0, after = 0;
};

// Adds one tile to `item`: rows[1 + i] is model i's task vector (not trimmed); `trim[i]` its
// trim mask, applied to a copy.
template <class C>
void add_interference_tile(std::span<const C* const> rows, std::span<const tv_mask> trim, std::size_t begin,
                           std::size_t len, interference_item& item) {
  // Bits 0/1: some model positive / negative; bits 2/3: the same after trimming.
  unsigned char sign[sparse_tile] = {};
  C trimmed[sparse_tile];
  float u[sparse_tile];  // apply_mask's scratch (random masks only: unused here)
  for (std::size_t i = 0; i < trim.size(); ++i) {
    const C* t = rows[1 + i];
    // Eight partial sums (entry j into acc[j % 8]), added in order at the end: one chain
    // of double additions waits on each add's latency (alloy analyze of the 0.57B benchmark
    // set: 2.7 s with one chain, 1.5 s with eight).
    double acc[8] = {};
    std::size_t j = 0;
    for (; j + 8 <= len; j += 8)
      for (std::size_t l = 0; l < 8; ++l) acc[l] += std::fabs(static_cast<double>(t[j + l]));
    for (; j < len; ++j) acc[j % 8] += std::fabs(static_cast<double>(t[j]));
    std::size_t nonzero = 0;
    for (j = 0; j < len; ++j) nonzero += t[j] != 0;
    for (j = 0; j < len; ++j) sign[j] |= static_cast<unsigned char>((t[j] > 0) | (t[j] < 0) << 1);
    double abs_sum = 0;
    for (const double a : acc) abs_sum += a;
    item.abs_sum[i] += abs_sum;
    item.nonzero[i] += nonzero;
    std::copy(t, t + len, trimmed);
    apply_mask(trim[i], trimmed, begin, len, u);
    for (j = 0; j < len; ++j) sign[j] |= static_cast<unsigned char>((trimmed[j] > 0) << 2 | (trimmed[j] < 0) << 3);
  }
  for (std::size_t k = 0; k < len; ++k) {
    item.before += (sign[k] & 3) == 3;
    item.after += (sign[k] & 12) == 12;
  }
}

}  // namespace detail

// task_vector_interference(base, models, densities [, exec]): the statistics above for one
// tensor; one density per model, each in (0, 1]. Throws alloy::error for no model or more
// than 254, non-floating or mismatched inputs and densities outside (0, 1].
struct task_vector_interference_fn {
  interference operator()(tensor_view base, std::span<const tensor_view> models, std::span<const double> densities,
                          const execution& ex = {}) const {
    constexpr const char* method = "task_vector_interference";
    detail::check_model_count(method, models.size(), 1, kernels::max_stream_inputs - 1);
    detail::check_densities(method, densities, models.size());
    std::vector<tensor_view> in{base};
    in.insert(in.end(), models.begin(), models.end());
    // The job's output is only its size (for the work items): nothing is written.
    const mutable_tensor_view none{nullptr, base.size, dtype::f32};
    detail::check_inputs(method, {}, in, detail::model_labels(models.size(), true), none);
    detail::sparse_job job{{}, base, {models.begin(), models.end()}, none, {}};
    const std::span<detail::sparse_job> jobs(&job, 1);
    detail::build_trim_masks(method, jobs, densities, trim_scope::per_tensor, trim_rule::exact_k,
                             empty_trim::zeros, false, ex);
    const std::vector<detail::tv_mask> trim = std::move(job.masks);
    job.masks.assign(models.size(), detail::tv_mask{});  // the tiles: task vectors as they are

    std::vector<detail::interference_item> items(detail::task_vector_items(jobs));
    for (auto& it : items) {
      it.abs_sum.assign(models.size(), 0);
      it.nonzero.assign(models.size(), 0);
    }
    detail::for_each_task_vector_tile(jobs, false, ex, [&](std::size_t, std::size_t k, auto tag, auto rows,
                                                           std::size_t begin, std::size_t len) {
      detail::add_interference_tile<decltype(tag)>(rows, trim, begin, len, items[k]);
    });
    interference r;
    r.elements = base.size;
    r.abs_sum.assign(models.size(), 0);
    r.nonzero.assign(models.size(), 0);
    for (const auto& it : items) {  // in item order: the same sums for any thread count
      for (std::size_t i = 0; i < models.size(); ++i) {
        r.abs_sum[i] += it.abs_sum[i];
        r.nonzero[i] += it.nonzero[i];
      }
      r.conflicts_before += it.before;
      r.conflicts_after += it.after;
    }
    return r;
  }
  interference operator()(tensor_view base, std::initializer_list<tensor_view> models,
                          std::initializer_list<double> densities, const execution& ex = {}) const {
    return (*this)(base, std::span(models.begin(), models.size()), std::span(densities.begin(), densities.size()), ex);
  }
};
inline constexpr task_vector_interference_fn task_vector_interference{};

}  // namespace alloy
